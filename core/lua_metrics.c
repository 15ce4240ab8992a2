/* luagate.core's side of observability: label ids for routes and upstreams, the route of the
 * request being handled, the series of gw.metrics (lua/luagate/metrics.lua updates them through
 * LuaJIT's FFI, straight in the worker's metrics slot), and the ids of gw.trace. */
#include <string.h>

#include "log.h"
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

/* ---- the log phase ---- */

/* core.log_phase(fn): fn(req, info) runs after each request's end (init.lua's run_logs). */
static int l_log_phase(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, rt->log_ref);
    lua_pushvalue(L, 1);
    rt->log_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* core.keep_request(req): the request being handled keeps its table for the log phase. */
static int l_keep_request(lua_State *L) {
    gw_task *t = runtime_of(L)->current;
    if (!t || t->req_ref) return 0;
    lua_pushvalue(L, 1);
    t->req_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A request's end, waiting for the loop to run the log phase: never inside the call that ended it. */
typedef struct log_item {
    gw_ready_item ready;
    gw_runtime *rt;
    int req_ref;
    int status;
    uint64_t body_bytes, duration_ns;
    uint8_t ncalls;
    struct {
        uint16_t up;
        int16_t status;
        uint32_t us;
    } calls[OBS_CALLS];
} log_item;
_Static_assert(sizeof(log_item) <= SMALL_BLOCK, "a log item fits a small block");

static void on_log_ready(gw_ready_item *it) {
    log_item *li = (log_item *)((char *)it - offsetof(log_item, ready));
    gw_runtime *rt = li->rt;
    lua_State *L = rt->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->log_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, li->req_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, li->req_ref);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, li->status);
    lua_setfield(L, -2, "status");
    lua_pushnumber(L, (double)li->body_bytes);
    lua_setfield(L, -2, "bytes_sent");
    lua_pushnumber(L, (double)li->duration_ns / 1e9);
    lua_setfield(L, -2, "duration");
    lua_createtable(L, li->ncalls, 0);
    for (int i = 0; i < li->ncalls; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, observe_upstream_name(rt->obs, li->calls[i].up));
        lua_setfield(L, -2, "name");
        int st = li->calls[i].status;
        if (st > 0) lua_pushinteger(L, st);
        else lua_pushstring(L, observe_call_error_name((int16_t)st));
        lua_setfield(L, -2, st > 0 ? "status" : "error");
        lua_pushnumber(L, (double)li->calls[i].us / 1e6);
        lua_setfield(L, -2, "time");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "upstreams");
    small_free(rt, li);
    if (lua_pcall(L, 2, 0, 0)) { /* run_logs catches each log function's errors: this is its own */
        log_msg(GW_LOG_ERROR, "log phase: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

void log_phase_queue(gw_task *t, const gw_request_end *end) {
    gw_runtime *rt = t->rt;
    if (rt->log_ref == LUA_NOREF || !t->req_ref) return;
    log_item *li = small_alloc(rt, sizeof *li);
    if (!li) return;
    li->rt = rt;
    li->req_ref = t->req_ref;
    t->req_ref = 0; /* the item has it now */
    li->status = end->status ? end->status : 499;
    li->body_bytes = end->body_bytes;
    li->duration_ns = end->duration_ns;
    li->ncalls = t->obs.ncalls;
    for (int i = 0; i < li->ncalls; i++) {
        li->calls[i].up = t->obs.calls[i].up;
        observe_call_result(&t->obs, i, &li->calls[i].status, &li->calls[i].us);
    }
    ready_push(&rt->ready, &li->ready, on_log_ready);
}

void metrics_register(lua_State *L, gw_runtime *rt) {
    static const luaL_Reg fns[] = {{"route_id", l_route_id}, {"upstream_id", l_upstream_id}, {"route_cell", l_route_cell},
                                   {"metric", l_metric},     {"trace", l_trace},             {"log_phase", l_log_phase},
                                   {"keep_request", l_keep_request}, {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}
