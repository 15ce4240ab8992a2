/* luagate.path: the server's path normalisation (path.c) for Lua, so that specs build requests
 * whose req.path is what the server would have made of the same target. */
#include <lauxlib.h>
#include <stdlib.h>

#include "path.h"
#include "runtime_internal.h"

/* path.normalize(path) -> normalised path | nil, reason */
static int l_normalize(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    char small[256];
    char *out = len < sizeof small ? small : malloc(len + 1);
    if (!out) return luaL_error(L, "normalize: out of memory");
    size_t n;
    enum path_error e = path_normalize(path, len, out, &n);
    if (e) {
        lua_pushnil(L);
        lua_pushstring(L, path_error_reason(e));
    } else {
        lua_pushlstring(L, out, n);
    }
    if (out != small) free(out);
    return e ? 2 : 1;
}

int luaopen_luagate_path(lua_State *L) {
    lua_newtable(L);
    lua_pushcfunction(L, l_normalize);
    lua_setfield(L, -2, "normalize");
    return 1;
}
