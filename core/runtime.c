/* Tasks: one coroutine per request, resumed from the loop. And the marshalling between a
 * gw_request / gw_response and Lua values.
 *
 * A task is owned by whoever started it: a request task by its request (freed when the handler
 * returns, or when the server aborts the request because the client left), a core.run task by
 * core.run. Its ops (transfers, timers) are owned by the task: freeing the task cancels them. */
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_headers.h"
#include "log.h"
#include "runtime_internal.h"

char runtime_wait_token;

struct gw_lua_app {
    gw_runtime *rt;
    int dispatch_ref;
};

/* ---- tasks ---- */

#define MAX_SPARE_TASKS 256
#define MAX_SMALL 4096

void *small_alloc(gw_runtime *rt, size_t size) {
    void *p = rt->small;
    if (!p) return calloc(1, SMALL_BLOCK);
    rt->small = *(void **)p;
    rt->nsmall--;
    memset(p, 0, size);
    return p;
}

void small_free(gw_runtime *rt, void *p) {
    if (rt->nsmall >= MAX_SMALL) {
        free(p);
        return;
    }
    *(void **)p = rt->small;
    rt->small = p;
    rt->nsmall++;
}

gw_task *task_new(gw_runtime *rt, lua_State *host) {
    gw_task *t = rt->spare_tasks;
    if (t) {
        rt->spare_tasks = *(gw_task **)t;
        rt->nspare_tasks--;
        memset(t, 0, sizeof *t);
    } else if (!(t = calloc(1, sizeof *t))) {
        return NULL;
    }
    t->rt = rt;
    if (rt->nspare) {
        struct spare_thread *s = &rt->spare[--rt->nspare];
        t->co = s->co;
        t->co_ref = s->ref;
    } else {
        t->co = lua_newthread(host);
        t->co_ref = luaL_ref(host, LUA_REGISTRYINDEX); /* keeps the coroutine alive while it waits */
    }
    rt->ntasks++;
    return t;
}

void task_free(gw_task *t) {
    gw_runtime *rt = t->rt;
    observe_request_drop(rt->obs, &t->obs); /* its answer could not be sent: the end comes later */
    if (t->req_ref) luaL_unref(rt->L, LUA_REGISTRYINDEX, t->req_ref);
    while (t->ops) op_cancel(t->ops);
    streams_close(t);
    /* A coroutine that returned can run another function; one that failed or still waits cannot. */
    if (t->finished && t->status == 0 && rt->nspare < sizeof rt->spare / sizeof rt->spare[0]) {
        lua_settop(t->co, 0);
        rt->spare[rt->nspare++] = (struct spare_thread){t->co, t->co_ref};
    } else {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, t->co_ref);
    }
    rt->ntasks--;
    if (rt->nspare_tasks < MAX_SPARE_TASKS) {
        *(gw_task **)t = rt->spare_tasks;
        rt->spare_tasks = t;
        rt->nspare_tasks++;
    } else {
        free(t);
    }
}

static const char *request_label(const gw_task *t) {
    return t->for_request ? t->id : "core.run";
}

static void respond_error(gw_task *t, int status, const char *message) {
    char body[RESPONSE_ERROR_BUF];
    gw_response r = response_error(status, message, t->req->id, body);
    server_respond(t->req, &r);
}

bool runtime_header_skipped(const char *name, size_t len) {
    /* The server writes these itself, from the body it sends and the request; and hop-by-hop
     * headers belong to one connection. Found by length first: this runs for every header of
     * every answer passed on. */
    switch (len) {
    case 4: return strncasecmp(name, "date", 4) == 0;
    case 12: return strncasecmp(name, "x-request-id", 12) == 0 || strncasecmp(name, "content-type", 12) == 0;
    case 14: return strncasecmp(name, "content-length", 14) == 0;
    default: return header_hop_by_hop(name, len);
    }
}

static int add_header(gw_runtime *rt, const char *name, size_t nlen, lua_State *co, int idx) {
    if (lua_type(co, idx) != LUA_TSTRING) return -1;
    gw_header h = {.name = name, .name_len = nlen};
    h.value = lua_tolstring(co, idx, &h.value_len);
    if (response_header_invalid(&h)) return -1;
    if (runtime_header_skipped(name, nlen)) return 0;
    return buf_append(&rt->scratch, &h, sizeof h);
}

/* Collect the headers table at idx into rt->scratch: name -> string | { string, ... }. The strings
 * stay referenced by the table, so their pointers stay valid while it is on the stack. */
int runtime_collect_headers(gw_runtime *rt, lua_State *co, int idx, const char **bad) {
    rt->scratch.len = 0;
    if (lua_isnil(co, idx)) return 0;
    if (!lua_istable(co, idx)) return -1;
    lua_pushnil(co);
    while (lua_next(co, idx)) {
        size_t nlen;
        if (lua_type(co, -2) != LUA_TSTRING) goto fail;
        const char *name = lua_tolstring(co, -2, &nlen);
        *bad = name;
        if (lua_istable(co, -1)) {
            for (int i = 1;; i++) {
                lua_rawgeti(co, -1, i);
                if (lua_isnil(co, -1)) {
                    lua_pop(co, 1);
                    break;
                }
                int r = add_header(rt, name, nlen, co, lua_gettop(co));
                lua_pop(co, 1);
                if (r) goto fail;
            }
        } else if (add_header(rt, name, nlen, co, lua_gettop(co))) {
            goto fail;
        }
        lua_pop(co, 1);
    }
    return 0;
fail:
    lua_settop(co, idx);
    return -1;
}

/* The handler returned: status, body, content_type, headers (normalised by the Lua dispatcher). */
static void task_respond(gw_task *t) {
    lua_State *co = t->co;
    gw_response r = {0};
    r.status = (int)lua_tointeger(co, 1);
    if (r.status < 200 || r.status > 999) { /* 1xx would need a protocol switch or a final answer */
        log_error("request %s %s %.*s: handler returned an invalid status %d", t->req->id, t->req->method,
                  (int)t->req->path_len, t->req->path, r.status);
        respond_error(t, 500, "internal server error");
        return;
    }
    r.body = lua_tolstring(co, 2, &r.body_len);
    if (!r.body) r.body = "", r.body_len = 0;
    r.content_type = lua_tolstring(co, 3, &r.content_type_len);
    const char *bad = "?";
    if (r.content_type && !response_value_valid(r.content_type, r.content_type_len)) {
        log_error("request %s: refused Content-Type with CR, LF or NUL", request_label(t));
        respond_error(t, 500, "internal server error");
        return;
    }
    if (lua_gettop(co) >= 4 && runtime_collect_headers(t->rt, co, 4, &bad)) {
        log_error("request %s: refused response header '%s': values must be strings without CR, LF or NUL",
                  request_label(t), bad);
        respond_error(t, 500, "internal server error");
        return;
    }
    r.headers = (const gw_header *)t->rt->scratch.data;
    r.nheaders = t->rt->scratch.len / sizeof(gw_header);
    server_respond(t->req, &r);
}

static void task_log_error(gw_task *t, const char *what) {
    lua_State *co = t->co;
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(co, co, msg ? msg : "(error object is not a string)", 0);
    if (t->req)
        log_error("request %s %s %.*s: %s: %s", t->req->id, t->req->method, (int)t->req->path_len, t->req->path,
                  what, lua_tostring(co, -1));
    else if (t->for_request)
        log_error("request %s: %s: %s", t->id, what, lua_tostring(co, -1));
    else
        log_error("%s: %s", what, lua_tostring(co, -1));
    lua_pop(co, 1);
}

void task_resume(gw_task *t, int nargs) {
    gw_runtime *rt = t->rt;
    gw_task *prev = rt->current;
    rt->current = t;
    t->running = true;
    int st = lua_resume(t->co, nargs);
    t->running = false;
    rt->current = prev;
    if (rt->route_cell) { /* the router ran in this resume */
        t->obs.route = (uint16_t)rt->route_cell;
        rt->route_cell = 0;
    }

    if (st == LUA_YIELD) {
        if (lua_gettop(t->co) == 1 && lua_touserdata(t->co, 1) == &runtime_wait_token && !t->aborted) {
            lua_settop(t->co, 0);
            return; /* waiting on an op: the loop resumes us */
        }
        lua_settop(t->co, 0);
        lua_pushstring(t->co, "handler yielded outside luagate's API (a bare coroutine.yield?)");
        st = LUA_ERRRUN;
    }
    t->finished = true;
    t->status = st;
    while (t->ops) op_cancel(t->ops); /* nothing may resume a finished coroutine */
    streams_close(t);
    if (!t->for_request) {
        if (t->aborted) task_free(t);
        return; /* a core.run task: its runner reads the results and frees it */
    }
    if (st != 0) task_log_error(t, "Lua error");
    gw_request *req = t->req;
    if (!req) { /* answered already, or the client left */
        task_free(t);
        return;
    }
    /* Detach first: answering may dispatch the connection's next pipelined request, whose task
     * takes the same gw_request. */
    req->app_data = NULL;
    if (t->answered) {
        /* The answer went out in pieces: a handler that failed in the middle cuts it; one that
         * returned without ending it, too (the Lua side ends what it completes). */
        server_abort_body(req);
    } else if (st != 0) {
        respond_error(t, 500, "internal server error");
    } else {
        task_respond(t);
    }
    task_free(t);
}

void task_release_request(gw_task *t) {
    if (!t->req) return;
    t->req->app_data = NULL;
    t->req = NULL;
}

/* ---- ops ---- */

gw_op *op_new(gw_task *t, const gw_op_kind *kind, size_t size) {
    gw_op *op = small_alloc(t->rt, size);
    if (!op) return NULL;
    op->rt = t->rt;
    op->task = t;
    op->kind = kind;
    op->id = ++t->next_op_id;
    op->next = t->ops;
    if (t->ops) t->ops->prev = op;
    t->ops = op;
    return op;
}

static void op_unlink(gw_op *op) {
    gw_task *t = op->task;
    if (op->prev) op->prev->next = op->next;
    else t->ops = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void on_op_ready(gw_ready_item *it) {
    gw_op *op = (gw_op *)((char *)it - offsetof(gw_op, ready));
    gw_task *t = op->task;
    op_unlink(op);
    lua_pushinteger(t->co, op->id);
    int n = op->kind->deliver(op, t->co);
    op->kind->release(op);
    task_resume(t, n + 1);
}

void op_free(gw_op *op) {
    small_free(op->rt, op);
}

void op_complete(gw_op *op) {
    op->completed = true;
    ready_push(&op->task->rt->ready, &op->ready, on_op_ready);
}

void op_discard(gw_op *op) {
    op_unlink(op);
    op->kind->release(op);
}

void op_cancel(gw_op *op) {
    ready_cancel(&op->task->rt->ready, &op->ready);
    op_unlink(op);
    if (!op->completed) op->kind->cancel(op);
    op->kind->release(op);
}

/* ---- requests ---- */

/* Same name as an earlier header? Requests carry few headers: a scan beats a table look-up. */
static bool repeated_name(const gw_request *r, size_t i) {
    const gw_header *h = &r->headers[i];
    for (size_t j = 0; j < i; j++)
        if (r->headers[j].name_len == h->name_len && memcmp(r->headers[j].name, h->name, h->name_len) == 0)
            return true;
    return false;
}

/* The request's headers as a table: names are lower-case already; repeated headers are joined as
 * RFC 9110 5.3 allows (cookies with "; "). Built only when a handler first asks (req.headers). */
void runtime_push_headers(lua_State *co, const gw_request *r) {
    lua_createtable(co, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        const gw_header *h = &r->headers[i];
        lua_pushlstring(co, h->name, h->name_len);
        if (repeated_name(r, i)) {
            lua_pushvalue(co, -1);
            lua_rawget(co, -3);
            bool cookie = h->name_len == 6 && memcmp(h->name, "cookie", 6) == 0;
            lua_pushstring(co, cookie ? "; " : ", ");
            lua_pushlstring(co, h->value, h->value_len);
            lua_concat(co, 3);
        } else {
            lua_pushlstring(co, h->value, h->value_len);
        }
        lua_rawset(co, -3);
    }
}

/* Push the request's parts as the arguments of the Lua entry point (luagate's serve): method,
 * path, raw_query, target, body, remote_addr, http_version. Returns their count. The id and the
 * headers are fetched when a handler asks for them: most never do, and each costs a new string or
 * table per request. */
static int push_request(lua_State *co, const gw_request *r) {
    lua_pushstring(co, r->method);
    lua_pushlstring(co, r->path, r->path_len);
    lua_pushlstring(co, r->query, r->query_len);
    lua_pushlstring(co, r->target, r->target_len);
    if (r->body_complete && !r->body_too_large) lua_pushlstring(co, r->body, r->body_len);
    else lua_pushboolean(co, 0); /* arriving, or too large to take whole: the route chooses */
    lua_pushstring(co, r->remote);
    lua_pushlstring(co, r->http_minor == 0 ? "1.0" : "1.1", 3);
    return 7;
}

static void on_request(gw_request *req, void *data) {
    gw_lua_app *a = data;
    gw_runtime *rt = a->rt;
    gw_task *t = task_new(rt, rt->L);
    if (!t) {
        gw_response r = {.status = 503, .body = "", .body_len = 0};
        server_respond(req, &r);
        return;
    }
    t->req = req;
    t->for_request = true;
    req->app_data = t;
    size_t id_len = strlen(req->id); /* at most 64: conn.c checks */
    memcpy(t->id, req->id, id_len + 1);
    observe_request_begin(rt->obs, &t->obs, req);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, a->dispatch_ref);
    task_resume(t, push_request(t->co, req));
}

static void on_body(gw_request *req, void *data) {
    (void)data;
    gw_task *t = req->app_data;
    if (t) http_on_body(t);
}

static void on_writable(gw_request *req, void *data) {
    (void)data;
    gw_task *t = req->app_data;
    if (t) http_on_writable(t);
}

static void on_complete(gw_request *req, const gw_request_end *end, void *data) {
    gw_lua_app *a = data;
    gw_req_obs *r = req->obs;
    if (r && r->begun && !r->ended) log_phase_queue((gw_task *)((char *)r - offsetof(gw_task, obs)), end);
    observe_request_end(a->rt->obs, req, end);
}

static void on_abort(gw_request *req, void *data) {
    gw_lua_app *a = data;
    gw_task *t = req->app_data;
    if (!t) return;
    observe_request_drop(a->rt->obs, &t->obs);
    req->app_data = NULL;
    t->req = NULL;
    log_debug("request %s: client closed the connection before the response; handler stopped", req->id);
    if (t->running) {
        t->aborted = true; /* freed when its resume returns */
        return;
    }
    task_free(t);
}

gw_lua_app *runtime_app_new(gw_runtime *rt, gw_app *app_out) {
    gw_lua_app *a = calloc(1, sizeof *a);
    if (!a) {
        lua_pop(rt->L, 1); /* the dispatch function is taken either way */
        return NULL;
    }
    a->rt = rt;
    a->dispatch_ref = luaL_ref(rt->L, LUA_REGISTRYINDEX);
    *app_out = (gw_app){.on_request = on_request, .on_abort = on_abort, .on_body = on_body,
                        .on_writable = on_writable, .on_complete = on_complete, .data = a};
    return a;
}

void runtime_app_free(gw_lua_app *a) {
    luaL_unref(a->rt->L, LUA_REGISTRYINDEX, a->dispatch_ref);
    free(a);
}

/* ---- the runtime ---- */

int runtime_new(gw_runtime **out, uv_loop_t *loop, const char *lua_dir, long upstream_keepalive) {
    gw_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return UV_ENOMEM;
    rt->loop = loop;
    rt->log_ref = LUA_NOREF;
    int r = fetch_init(&rt->fetch, loop, upstream_keepalive);
    if (r < 0) {
        free(rt);
        return r;
    }
    rt->L = luaL_newstate();
    if (!rt->L) {
        fetch_close(rt->fetch);
        free(rt);
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &rt->run_timer);
    rt->run_timer.data = rt;
    ready_init(&rt->ready, loop);
    lua_State *L = rt->L;
    luaL_openlibs(L);

    /* package.path: the gateway's library first, then the system's (busted, cjson, ...). */
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lua_dir, lua_dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, luaopen_luagate_core, 1);
    lua_setfield(L, -2, "luagate.core");
    lua_pushcfunction(L, luaopen_luagate_path);
    lua_setfield(L, -2, "luagate.path");
    lua_pop(L, 2);
    *out = rt;
    return 0;
}

void runtime_set_upstream_keepalive(gw_runtime *rt, long n) {
    fetch_set_keepalive(rt->fetch, n);
}

void runtime_set_worker_id(gw_runtime *rt, int id) {
    rt->worker_id = id;
}

void runtime_set_observe(gw_runtime *rt, gw_observe *o) {
    rt->obs = o;
    observe_set_fetch(o, rt->fetch);
}

lua_State *runtime_lua(gw_runtime *rt) {
    return rt->L;
}

static void on_ready_closed(gw_ready *r) {
    gw_runtime *rt = (gw_runtime *)((char *)r - offsetof(gw_runtime, ready));
    buf_free(&rt->scratch);
    while (rt->spare_tasks) {
        gw_task *t = rt->spare_tasks;
        rt->spare_tasks = *(gw_task **)t;
        free(t);
    }
    while (rt->small) {
        void *p = rt->small;
        rt->small = *(void **)p;
        free(p);
    }
    free(rt);
}

static void on_run_timer_closed(uv_handle_t *h) {
    gw_runtime *rt = h->data;
    ready_close(&rt->ready, on_ready_closed);
}

void runtime_close(gw_runtime *rt) {
    lua_close(rt->L); /* collects every coroutine; no task is left once the servers are closed */
    fetch_close(rt->fetch);
    trusted_clear(&rt->trusted);
    uv_close((uv_handle_t *)&rt->run_timer, on_run_timer_closed);
}
