/* The config loader: gateway.conf text through config_load (lua/luagate/config.lua run in its
 * sandbox, then the C side reading the checked table), in one Lua state reused across inputs. A
 * count hook stops a config that loops, as a person would stop `luagate -t` that never returns. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "runtime.h"

static uv_loop_t loop;
static gw_runtime *rt;
static char path[64];

static void on_count(lua_State *L, lua_Debug *ar) {
    (void)ar;
    luaL_error(L, "fuzz: too many instructions");
}

/* Close the Lua state at exit: what C modules (cjson) hold is freed by their finalisers, not
 * reported as leaks. And the config file goes. */
static void close_runtime(void) {
    runtime_close(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    log_set_level_name("error");
    uv_loop_init(&loop);
    if (runtime_new(&rt, &loop, LUAGATE_LUA_DIR, 0)) abort();
    atexit(close_runtime);
    snprintf(path, sizeof path, "/tmp/luagate-fuzz-config-%d.conf", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    lua_State *L = runtime_lua(rt);
    int top = lua_gettop(L);
    lua_sethook(L, on_count, LUA_MASKCOUNT, 1000000);
    gw_config cfg;
    char err[2048];
    if (config_load(L, path, &cfg, err, sizeof err) == 0) {
        /* A config that loads is one luagate would serve: its values are sane. */
        if (cfg.nlisten < 1 || cfg.limits.max_header_size < 256 || cfg.workers < 1) abort();
        for (int i = 0; i < cfg.nlisten; i++)
            if (cfg.listen[i].port < 0 || cfg.listen[i].port > 65535) abort();
        lua_pop(L, 1);
    }
    lua_sethook(L, NULL, 0, 0);
    if (lua_gettop(L) != top) abort(); /* config_load leaves nothing behind */
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
