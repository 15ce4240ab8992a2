/* core.limit_shared(name, key, limit, period_s) -> admitted, count, reset_s | nil, err
 *
 * One decision of a fixed-window limiter whose counters all the workers of this host share
 * (limit_shared.c, in the region of shm.c); lua/luagate/ratelimit.lua makes the policy of it. */
#include <lauxlib.h>
#include <uv.h>

#include "limit_shared.h"
#include "lua_limit.h"
#include "shm.h"

static int l_limit_shared(lua_State *L) {
    size_t name_len, key_len;
    const char *name = luaL_checklstring(L, 1, &name_len);
    const char *key = luaL_checklstring(L, 2, &key_len);
    lua_Integer limit = luaL_checkinteger(L, 3);
    double period = luaL_checknumber(L, 4);
    if (limit < 1 || limit > LIMIT_SHARED_MAX || !(period >= 0.001 && period <= 1e9))
        return luaL_error(L, "limit_shared: limit 1..%d and period 0.001..1e9 s", (int)LIMIT_SHARED_MAX);
    size_t size;
    void *region = shm_region(&size);
    if (!region) {
        lua_pushnil(L);
        lua_pushliteral(L, "no shared memory");
        return 2;
    }
    gw_limit_result r;
    int rc = limit_shared_take(region, size, name, name_len, key, key_len, (uint32_t)limit,
                               (uint64_t)(period * 1000 + 0.5), &r);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, rc == UV_ENOSPC ? "shared table full: too many keys in use at once" : "shared table busy");
        return 2;
    }
    lua_pushboolean(L, r.admitted);
    lua_pushinteger(L, r.count);
    lua_pushnumber(L, (double)r.reset_ms / 1000);
    return 3;
}

void lua_limit_register(lua_State *L) {
    lua_pushcfunction(L, l_limit_shared);
    lua_setfield(L, -2, "limit_shared");
}
