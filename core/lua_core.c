/* luagate.core: the few C functions the Lua library is built on. Route scripts use the library
 * (lua/luagate/init.lua), never this module directly.
 *
 * Ops (fetch, sleep) start work and return an id at once; the Lua side then yields core.WAIT and
 * the loop resumes the coroutine with (id, results...) when the op completes. Ops may only be
 * started by the running handler's own coroutine, and only where it can yield. */
#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime_internal.h"

typedef struct lua_server {
    struct lua_server *next;
    gw_runtime *rt;
    gw_server *srv;
    gw_lua_app *app;
    int id;
} lua_server;

static gw_runtime *runtime_of(lua_State *L) {
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* The task that may start an op from L, or a Lua error saying why not. */
static gw_task *op_owner(lua_State *L, const char *what) {
    gw_runtime *rt = runtime_of(L);
    gw_task *t = rt->current;
    if (!t || t->co != L)
        luaL_error(L, "%s: only inside a request handler's own coroutine (not at a script's top level, "
                      "not in a coroutine you created)", what);
    if (!lua_isyieldable(L))
        luaL_error(L, "%s: cannot wait here: a C function is on the call stack (string.gsub or table.sort "
                      "callbacks, require, a metamethod called from C); call it from plain Lua code", what);
    return t;
}

static long ms_of(lua_State *L, int idx) {
    double s = luaL_optnumber(L, idx, 0);
    if (s < 0) s = 0;
    return (long)(s * 1000 + 0.5);
}

/* ---- fetch ---- */

/* The header block of a response as a table: lower-case names; a repeated header becomes a list
 * of its values (Set-Cookie, say). */
static void push_response_headers(lua_State *L, const char *p, size_t len) {
    lua_newtable(L);
    const char *end = p + len;
    const char *line = memchr(p, '\n', len); /* skip the status line */
    p = line ? line + 1 : end;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!eol) eol = end;
        if (eol > p && eol[-1] == '\r') eol--;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon && colon > p) {
            char name[256];
            size_t nlen = (size_t)(colon - p) < sizeof name ? (size_t)(colon - p) : sizeof name;
            for (size_t i = 0; i < nlen; i++) name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            lua_pushlstring(L, name, nlen);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_rawset(L, -3);
            } else if (lua_istable(L, -1)) {
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
                lua_pop(L, 2);
            } else {
                lua_createtable(L, 2, 0);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_rawseti(L, -2, 2);
                lua_rawset(L, -3);
            }
        }
        p = next;
    }
}

/* core.parse_headers(block) -> table: a response's headers, parsed when a script first asks. */
static int l_parse_headers(lua_State *L) {
    size_t len;
    const char *block = luaL_checklstring(L, 1, &len);
    push_response_headers(L, block, len);
    return 1;
}

/* A fetch waiting for its transfer; the result is kept until the task is resumed with it. */
typedef struct fetch_op {
    gw_op op;
    gw_runtime *rt;
    gw_transfer *xfer;
    long status;
    char *error;
    gw_buf body, head;
    char *content_type;
} fetch_op;

static void on_fetch_done(const gw_fetch_result *res, void *data) {
    fetch_op *f = data;
    f->xfer = NULL;
    f->status = res->status;
    if (res->error) {
        f->error = strdup(res->error);
    } else {
        buf_append(&f->body, res->body, res->body_len);
        buf_append(&f->head, res->headers, res->headers_len);
        if (res->content_type) f->content_type = strdup(res->content_type);
    }
    op_complete(&f->op);
}

/* Resumes with (status, body, header_block, content_type), or (nil, err): plain values, which
 * Lua turns into a response with a constant-key constructor. */
static int fetch_deliver(gw_op *op, lua_State *co) {
    fetch_op *f = (fetch_op *)op;
    if (f->error || f->status == 0) {
        lua_pushnil(co);
        lua_pushstring(co, f->error ? f->error : "upstream error: out of memory");
        return 2;
    }
    lua_pushinteger(co, f->status);
    lua_pushlstring(co, f->body.data ? f->body.data : "", f->body.len);
    lua_pushlstring(co, f->head.data ? f->head.data : "", f->head.len);
    if (f->content_type) lua_pushstring(co, f->content_type);
    else lua_pushnil(co);
    return 4;
}

static void fetch_op_cancel(gw_op *op) {
    fetch_op *f = (fetch_op *)op;
    if (f->xfer) fetch_cancel(f->rt->fetch, f->xfer);
    f->xfer = NULL;
}

static void fetch_op_release(gw_op *op) {
    fetch_op *f = (fetch_op *)op;
    free(f->error);
    free(f->content_type);
    buf_free(&f->body);
    buf_free(&f->head);
    free(f);
}

static const gw_op_kind fetch_kind = {fetch_deliver, fetch_op_cancel, fetch_op_release};

/* core.fetch(method, url, header_lines, body, timeout_s, connect_timeout_s, userpwd, pool, pool_size)
 *   -> id | nil, err */
static int l_fetch(lua_State *L) {
    gw_task *t = op_owner(L, "fetch");
    gw_runtime *rt = runtime_of(L);
    gw_fetch_request r = {0};
    r.method = luaL_checkstring(L, 1);
    r.url = luaL_checkstring(L, 2);
    if (!lua_isnil(L, 4)) r.body = luaL_checklstring(L, 4, &r.body_len);
    r.timeout_ms = ms_of(L, 5);
    r.connect_timeout_ms = ms_of(L, 6);
    r.userpwd = luaL_optstring(L, 7, NULL);
    r.pool = (int)luaL_optinteger(L, 8, 0);
    r.pool_size = (long)luaL_optinteger(L, 9, -1);

    const char *lines[65];
    size_t n = 0;
    if (lua_istable(L, 3)) {
        n = lua_objlen(L, 3);
        if (n > 64) n = 64;
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, 3, (int)i + 1);
            /* Only strings: converting a number would make a string nothing keeps alive. */
            lines[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            lua_pop(L, 1);
            if (!lines[i] || strpbrk(lines[i], "\r\n")) {
                lua_pushnil(L);
                lua_pushstring(L, "invalid request header: values may not contain CR or LF");
                return 2;
            }
        }
    }
    char id_line[96];
    if (t->id[0]) { /* the request id travels with every call the request makes */
        snprintf(id_line, sizeof id_line, "X-Request-Id: %s", t->id);
        lines[n++] = id_line;
    }
    r.headers = lines;
    r.nheaders = n;
    fetch_op *f = (fetch_op *)op_new(t, &fetch_kind, sizeof *f);
    if (!f) return luaL_error(L, "fetch: out of memory");
    f->rt = rt;
    const char *err = NULL;
    f->xfer = fetch_start(rt->fetch, &r, on_fetch_done, f, &err);
    if (!f->xfer) {
        op_discard(&f->op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, f->op.id);
    return 1;
}

/* ---- sleep, cancel ---- */

typedef struct sleep_op {
    gw_op op;
    uv_timer_t timer;
} sleep_op;

static void on_sleep_done(uv_timer_t *timer) {
    op_complete(timer->data);
}

static int sleep_deliver(gw_op *op, lua_State *co) {
    (void)op;
    lua_pushboolean(co, 1);
    return 1;
}

static void sleep_cancel(gw_op *op) {
    uv_timer_stop(&((sleep_op *)op)->timer);
}

static void on_sleep_timer_closed(uv_handle_t *h) {
    free(h->data);
}

static void sleep_release(gw_op *op) {
    uv_close((uv_handle_t *)&((sleep_op *)op)->timer, on_sleep_timer_closed);
}

static const gw_op_kind sleep_kind = {sleep_deliver, sleep_cancel, sleep_release};

static int l_sleep(lua_State *L) {
    gw_task *t = op_owner(L, "sleep");
    gw_runtime *rt = runtime_of(L);
    long ms = ms_of(L, 1);
    sleep_op *s = (sleep_op *)op_new(t, &sleep_kind, sizeof *s);
    if (!s) return luaL_error(L, "sleep: out of memory");
    uv_timer_init(rt->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_sleep_done, (uint64_t)ms, 0);
    lua_pushinteger(L, s->op.id);
    return 1;
}

static int l_cancel(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    lua_Integer id = luaL_checkinteger(L, 1);
    gw_task *t = rt->current;
    if (!t) return 0;
    for (gw_op *op = t->ops; op; op = op->next) {
        if (op->id == id) {
            op_cancel(op);
            break;
        }
    }
    return 0;
}

/* ---- small services ---- */

static int l_now(lua_State *L) {
    uv_update_time(runtime_of(L)->loop);
    lua_pushnumber(L, (double)uv_now(runtime_of(L)->loop) / 1000.0);
    return 1;
}

static int l_log(lua_State *L) {
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    if (!log_enabled(level)) return 0;
    gw_task *t = runtime_of(L)->current;
    if (t && t->id[0]) log_msg(level, "request %s: %s", t->id, luaL_checkstring(L, 2));
    else log_msg(level, "%s", luaL_checkstring(L, 2));
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.list_dir(path) -> sorted array of entry names (no dot files) | nil, err */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) break;
            names = p;
        }
        names[n] = strdup(e->d_name);
        if (names[n]) n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (int)i + 1);
        free(names[i]);
    }
    free(names);
    return 1;
}

/* core.stats() -> { handlers, upstream_active, upstream_connections_opened, worker, pid }: counters
 * kept anyway, read only when asked, so that they cost the request path nothing. */
static int l_stats(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, rt->worker_id);
    lua_setfield(L, -2, "worker");
    lua_pushinteger(L, uv_os_getpid());
    lua_setfield(L, -2, "pid");
    lua_pushnumber(L, (double)rt->ntasks);
    lua_setfield(L, -2, "handlers");
    lua_pushnumber(L, (double)fetch_active(rt->fetch));
    lua_setfield(L, -2, "upstream_active");
    lua_pushnumber(L, (double)fetch_connections_opened(rt->fetch));
    lua_setfield(L, -2, "upstream_connections_opened");
    return 1;
}

/* ---- in-process servers and runs, for specs (`luagate busted`) ---- */

static lua_server **servers_of(gw_runtime *rt) {
    return &rt->servers;
}

static void on_lua_server_closed(void *arg) {
    lua_server *s = arg;
    runtime_app_free(s->app);
    free(s);
}

static void lua_server_stop(lua_server *s) {
    lua_server **pp = servers_of(s->rt);
    while (*pp && *pp != s) pp = &(*pp)->next;
    if (*pp) *pp = s->next;
    server_shutdown(s->srv, on_lua_server_closed, s);
    server_close_all(s->srv);
}

/* core.listen(host, port, dispatch) -> id, port | nil, err */
static int l_listen(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_server *s = calloc(1, sizeof *s);
    if (!s) return luaL_error(L, "listen: out of memory");
    lua_pushvalue(L, 3);
    gw_app app;
    s->app = runtime_app_new(rt, &app);
    if (!s->app) {
        free(s);
        return luaL_error(L, "listen: out of memory");
    }
    s->rt = rt;
    gw_limits limits = {.max_header_size = 65536,
                        .max_body_size = 16 << 20,
                        .keepalive_timeout_ms = 60000,
                        .read_timeout_ms = 60000,
                        .backlog = 511};
    gw_listen where = {.host = host, .port = port};
    int r = server_start(&s->srv, rt->loop, &where, &limits, &app);
    if (r < 0) {
        runtime_app_free(s->app);
        free(s);
        lua_pushnil(L);
        lua_pushfstring(L, "listen %s:%d: %s", host, port, uv_strerror(r));
        return 2;
    }
    s->id = ++rt->next_server_id;
    s->next = *servers_of(rt);
    *servers_of(rt) = s;
    lua_pushinteger(L, s->id);
    lua_pushinteger(L, server_port(s->srv));
    return 2;
}

static int l_close_server(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    int id = (int)luaL_checkinteger(L, 1);
    for (lua_server *s = *servers_of(rt); s; s = s->next) {
        if (s->id == id) {
            lua_server_stop(s);
            break;
        }
    }
    return 0;
}

void runtime_close_servers(gw_runtime *rt) {
    while (*servers_of(rt)) lua_server_stop(*servers_of(rt));
}

static void on_run_deadline(uv_timer_t *timer) {
    gw_runtime *rt = timer->data;
    rt->run_timed_out = true;
}

/* core.run(timeout_s, request_id, fn, ...) -> true, results... | false, error with traceback
 * Runs fn in a task coroutine (so it may fetch and sleep) and turns the loop until it returns. */
static int l_run(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    double timeout = luaL_checknumber(L, 1);
    const char *id = luaL_optstring(L, 2, "");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (rt->in_run || rt->current) return luaL_error(L, "run: cannot be nested or called from a handler");
    int nargs = lua_gettop(L) - 3;
    gw_task *t = task_new(rt, L);
    if (!t) return luaL_error(L, "run: out of memory");
    snprintf(t->id, sizeof t->id, "%s", id);
    lua_xmove(L, t->co, nargs + 1);
    rt->in_run = true;
    rt->run_timed_out = false;
    uv_timer_start(&rt->run_timer, on_run_deadline, (uint64_t)(timeout * 1000), 0);
    task_resume(t, nargs);
    while (!t->finished && !rt->run_timed_out) uv_run(rt->loop, UV_RUN_ONCE);
    uv_timer_stop(&rt->run_timer);
    rt->in_run = false;
    if (!t->finished) {
        task_free(t);
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "timed out after %f s", timeout);
        return 2;
    }
    if (t->status != 0) {
        const char *msg = lua_tostring(t->co, -1);
        luaL_traceback(L, t->co, msg ? msg : "(error object is not a string)", 0);
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        task_free(t);
        return 2;
    }
    int n = lua_gettop(t->co);
    lua_pushboolean(L, 1);
    lua_xmove(t->co, L, n);
    task_free(t);
    return n + 1;
}

int luaopen_luagate_core(lua_State *L) {
    gw_runtime *rt = lua_touserdata(L, lua_upvalueindex(1));
    static const luaL_Reg fns[] = {
        {"fetch", l_fetch},         {"sleep", l_sleep},   {"cancel", l_cancel},
        {"now", l_now},             {"log", l_log},       {"list_dir", l_list_dir},
        {"stats", l_stats},         {"parse_headers", l_parse_headers},             {"listen", l_listen},
        {"close_server", l_close_server},                 {"run", l_run},
        {NULL, NULL}};
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_pushlightuserdata(L, &runtime_wait_token);
    lua_setfield(L, -2, "WAIT");
    lua_pushstring(L, LUAGATE_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
