/* luagate.core's side of observability: label ids for routes and upstreams, the route of the
 * request being handled, the series of gw.metrics (lua/luagate/metrics.lua updates them through
 * LuaJIT's FFI, straight in the worker's metrics slot), and the ids of gw.trace. */
#include <string.h>

#include "metrics_shm.h"
#include "runtime_internal.h"

/* core.route_id(pattern) -> id: at registration, so that a request costs no look-up. */
static int l_route_id(lua_State *L) {
    lua_pushinteger(L, observe_route_id(runtime_of(L)->obs, luaL_checkstring(L, 1)));
    return 1;
}

/* core.upstream_id(name) -> id */
static int l_upstream_id(lua_State *L) {
    lua_pushinteger(L, observe_upstream_id(runtime_of(L)->obs, luaL_checkstring(L, 1)));
    return 1;
}

/* core.route_cell() -> the address (for ffi.cast) where the router writes the id of the route it
 * matched: a store the JIT compiles, where a C call would cut the router's trace. task_resume takes
 * it for the task that ran. */
static int l_route_cell(lua_State *L) {
    lua_pushlightuserdata(L, &runtime_of(L)->route_cell);
    return 1;
}

/* core.metric(kind, name, help, labels, bounds) -> values (a pointer for ffi.cast) | nil when this
 * process has no metrics slot (the caller keeps its own values) | error */
static int l_metric(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    static const char *const kinds[] = {"", "counter", "gauge", "histogram", NULL};
    int type = luaL_checkoption(L, 1, NULL, kinds);
    const char *name = luaL_checkstring(L, 2);
    const char *help = luaL_optstring(L, 3, "");
    const char *labels = luaL_optstring(L, 4, "");
    double bounds[MS_USER_BUCKETS + 1];
    int nb = lua_istable(L, 5) ? (int)lua_objlen(L, 5) : 0;
    if (rt->current) return luaL_error(L, "gw.metrics: declare metrics when a script loads, not in a handler");
    if (nb > MS_USER_BUCKETS) return luaL_error(L, "gw.metrics: %s: at most %d buckets", name, MS_USER_BUCKETS);
    for (int i = 0; i < nb; i++) {
        lua_rawgeti(L, 5, i + 1);
        bounds[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    const char *err;
    double *values = observe_user_series(rt->obs, type, name, help, labels, bounds, nb, &err);
    if (err) return luaL_error(L, "gw.metrics: %s: %s", name, err);
    if (!values) return 0;
    lua_pushlightuserdata(L, values);
    return 1;
}

/* core.trace() -> trace_id, span_id, parent_id | false, sampled, traceparent (of this request's
 * span), or nothing outside a request */
static int l_trace(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    const gw_trace *tr = rt->current ? observe_trace(rt->obs, &rt->current->obs) : NULL;
    if (!tr) return 0;
    char hex[33], tp[TRACEPARENT_LEN + 1];
    trace_hex64(tr->trace_hi, hex);
    trace_hex64(tr->trace_lo, hex + 16);
    lua_pushlstring(L, hex, 32);
    trace_hex64(tr->span, hex);
    lua_pushlstring(L, hex, 16);
    if (tr->parent) {
        trace_hex64(tr->parent, hex);
        lua_pushlstring(L, hex, 16);
    } else {
        lua_pushboolean(L, 0);
    }
    lua_pushboolean(L, tr->flags & 1);
    trace_format(tr, tr->span, tp);
    lua_pushlstring(L, tp, TRACEPARENT_LEN);
    return 5;
}

void metrics_register(lua_State *L, gw_runtime *rt) {
    static const luaL_Reg fns[] = {{"route_id", l_route_id}, {"upstream_id", l_upstream_id}, {"route_cell", l_route_cell},
                                   {"metric", l_metric},     {"trace", l_trace},             {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}
