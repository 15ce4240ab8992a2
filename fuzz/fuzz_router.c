/* The router and the path checks, in Lua as routes use them: the input's lines are route patterns
 * (registered with luagate.router; a refused pattern is fine), then paths that are normalised
 * (luagate.path), checked with gw.is_safe_path and matched. Invariants, checked in Lua (an
 * assertion is a crash here):
 *   - a normalised path starts with "/" and has no "//", "/./" or "/../" left;
 *   - a path that is_safe_path takes holds no ".." and does not start with "//";
 *   - a matched route's params are substrings of the path and never hold "/" (for ":name"). */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>

#include "log.h"
#include "runtime.h"

static uv_loop_t loop;
static gw_runtime *rt;
static int check_ref;

static const char check_src[] =
    "local router = require 'luagate.router'\n"
    "local gw = require 'luagate'\n"
    "local normalize = require('luagate.path').normalize\n"
    "return function(input)\n"
    "  local r = router.new()\n"
    "  local routes, paths = input:match('^(.-)\\n\\n(.*)$')\n"
    "  routes, paths = routes or '', paths or input\n"
    "  local n = 0\n"
    "  for line in routes:gmatch('[^\\n]+') do\n"
    "    n = n + 1\n"
    "    local method, pattern = line:match('^(%u+) (.*)$')\n"
    "    if method then pcall(r.add, r, method, pattern, function() end, 'fuzz:' .. n) end\n"
    "  end\n"
    "  for p in paths:gmatch('[^\\n]+') do\n"
    "    local np = normalize(p)\n"
    "    if np and np ~= '*' then\n"
    "      assert(np:sub(1, 1) == '/', np)\n"
    "      assert(not np:find('//', 1, true) and not np:find('/./', 1, true) and not np:find('/../', 1, true), np)\n"
    "      assert(not np:find('/%.%.?$'), np)\n"
    "    end\n"
    "    if gw.is_safe_path(p) then\n"
    "      assert(not p:find('..', 1, true) and p:sub(1, 2) ~= '//', p)\n"
    "    end\n"
    "    for _, m in ipairs { 'GET', 'POST', 'HEAD' } do\n"
    "      local h, params = r:match(m, np or p)\n"
    "      if h then for k, v in pairs(params) do assert((np or p):find(v, 1, true), v) end end\n"
    "    end\n"
    "  end\n"
    "end\n";

/* Close the Lua state at exit: what C modules (cjson) hold is freed by their finalisers, not
 * reported as leaks. */
static void close_runtime(void) {
    runtime_close(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    log_set_level_name("error");
    uv_loop_init(&loop);
    if (runtime_new(&rt, &loop, LUAGATE_LUA_DIR, 0)) abort();
    atexit(close_runtime);
    lua_State *L = runtime_lua(rt);
    if (luaL_loadstring(L, check_src) || lua_pcall(L, 0, 1, 0)) abort();
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = runtime_lua(rt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0)) {
        fprintf(stderr, "invariant broken: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
