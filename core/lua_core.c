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
#include "lua_limit.h"
#include "lua_redis.h"
#include "runtime_internal.h"

typedef struct lua_server {
    struct lua_server *next;
    gw_runtime *rt;
    gw_server *srv;
    gw_lua_app *app;
    int id;
} lua_server;

gw_runtime *runtime_of(lua_State *L) {
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* The task that may start an op from L, or a Lua error saying why not. */
gw_task *op_owner(lua_State *L, const char *what) {
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

long ms_of(lua_State *L, int idx) {
    double s = luaL_optnumber(L, idx, 0);
    if (!(s > 0)) return 0;   /* NaN too */
    if (s > 1e9) s = 1e9;     /* 31 years: never, for a deadline; within a long */
    return (long)(s * 1000 + 0.5);
}

/* ---- headers ---- */

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

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Push s[0..n) query-unescaped: "+" is a space, %XX a byte (anything else stays as it is). */
static void push_unescaped(lua_State *L, const char *s, size_t n, char *tmp) {
    if (!memchr(s, '%', n) && !memchr(s, '+', n)) {
        lua_pushlstring(L, s, n);
        return;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '+') tmp[o++] = ' ';
        else if (s[i] == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
                 (lo = hex_digit(s[i + 2])) >= 0)
            tmp[o++] = (char)(hi * 16 + lo), i += 2;
        else tmp[o++] = s[i];
    }
    lua_pushlstring(L, tmp, o);
}

/* core.parse_query(raw) -> { key = value | { value, ... } }: a repeated key keeps every value, in
 * order. In C: it runs for most requests that read req.query. */
static int l_parse_query(lua_State *L) {
    size_t len;
    const char *raw = luaL_checklstring(L, 1, &len);
    char small[512];
    char *tmp = len <= sizeof small ? small : lua_newuserdata(L, len);
    int pairs = 1; /* sized once: a table that grows is rehashed whole */
    for (const char *a = memchr(raw, '&', len); a; a = memchr(a + 1, '&', len - (size_t)(a + 1 - raw))) pairs++;
    lua_createtable(L, 0, pairs);
    int t = lua_gettop(L);
    for (const char *p = raw, *end = raw + len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            push_unescaped(L, p, (size_t)((eq ? eq : stop) - p), tmp);
            if (eq) push_unescaped(L, eq + 1, (size_t)(stop - eq - 1), tmp);
            else lua_pushliteral(L, "");
            lua_pushvalue(L, -2);
            lua_rawget(L, t);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_rawset(L, t);
            } else if (lua_istable(L, -1)) { /* a third value or more */
                lua_insert(L, -2);
                lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
                lua_pop(L, 2);
            } else { /* the second: the value becomes a list */
                lua_createtable(L, 2, 0);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 2);
                lua_rawset(L, t);
            }
        }
        p = stop + 1;
    }
    lua_pushvalue(L, t);
    return 1;
}

/* UTF-8 as RFC 3629 has it: no overlong forms (which lenient decoders take for ASCII: "%c0%ae" for
 * "."), no surrogates, nothing past U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (len == 0 || i + len > n) return false; /* a stray continuation byte, C0/C1, F5-FF */
        if (len > 1) {
            unsigned lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;      /* overlong */
            else if (c == 0xED) hi = 0x9F; /* surrogates */
            else if (c == 0xF0) lo = 0x90; /* overlong */
            else if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
            if (s[i + 1] < lo || s[i + 1] > hi) return false;
            for (size_t k = i + 2; k < i + len; k++)
                if (s[k] < 0x80 || s[k] > 0xBF) return false;
        }
        i += len;
    }
    return true;
}

/* The path part (before "?") of p once percent-decoded: no control character, backslash or "..",
 * and valid UTF-8. The escapes are known to be well formed. */
static bool decoded_path_safe(const char *p, size_t n) {
    unsigned char small[1024];
    unsigned char *d = n <= sizeof small ? small : malloc(n);
    if (!d) return false;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            d[m++] = (unsigned char)(hex_digit(p[i + 1]) * 16 + hex_digit(p[i + 2]));
            i += 2;
        } else {
            d[m++] = (unsigned char)p[i];
        }
    }
    bool ok = valid_utf8(d, m);
    for (size_t i = 0; ok && i < m; i++)
        if (d[i] < 0x20 || d[i] == 127 || d[i] == '\\' || (d[i] == '.' && i + 1 < m && d[i + 1] == '.')) ok = false;
    if (d != small) free(d);
    return ok;
}

/* core.safe_path(path) -> whether path stays on the upstream's host: it starts with one "/"; it
 * holds no "..", backslash, "#", whitespace or control character; every "%" starts an escape of
 * two hex digits ("%u002e" and a lone "%" are refused), never an encoded dot ("%2e", which an
 * upstream may decode into "..") or percent ("%25", which can hide one from a single decoding);
 * and its path part, decoded, is safe too (decoded_path_safe). One pass in C, a second only for
 * paths with escapes or bytes over 127: every proxied call checks it, often twice. */
static int l_safe_path(lua_State *L) {
    size_t n = 0;
    const char *p = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    bool ok = p && n >= 1 && p[0] == '/' && (n < 2 || p[1] != '/');
    bool decode = false;
    size_t part = n; /* where the query starts */
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= ' ' || c == 127 || c == '\\' || c == '#') ok = false;
        else if (c == '.' && i + 1 < n && p[i + 1] == '.') ok = false;
        else if (c == '?' && part == n) part = i;
        else if (c >= 0x80) decode = true;
        else if (c == '%') {
            decode = true;
            ok = i + 2 < n && hex_digit(p[i + 1]) >= 0 && hex_digit(p[i + 2]) >= 0 &&
                 !(p[i + 1] == '2' && ((p[i + 2] | 0x20) == 'e' || p[i + 2] == '5'));
        }
    }
    lua_pushboolean(L, ok && (!decode || decoded_path_safe(p, part)));
    return 1;
}

/* core.parse_headers(block) -> table: a response's headers, parsed when a script first asks. */
static int l_parse_headers(lua_State *L) {
    size_t len;
    const char *block = luaL_checklstring(L, 1, &len);
    push_response_headers(L, block, len);
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
    op_free(h->data);
}

static void sleep_release(gw_op *op) {
    uv_close((uv_handle_t *)&((sleep_op *)op)->timer, on_sleep_timer_closed);
}

static const gw_op_kind sleep_kind = {sleep_deliver, sleep_cancel, sleep_release};
_Static_assert(sizeof(sleep_op) <= SMALL_BLOCK, "a sleep op fits a small block");

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

/* core.request_id() -> the id of the request being handled, or nil */
static int l_request_id(lua_State *L) {
    gw_task *t = runtime_of(L)->current;
    if (t && t->id[0]) lua_pushstring(L, t->id);
    else lua_pushnil(L);
    return 1;
}

/* core.request_headers() -> the headers of the request being handled, as a new table | nil */
static int l_request_headers(lua_State *L) {
    gw_task *t = runtime_of(L)->current;
    if (!t || !t->req) return 0;
    runtime_push_headers(L, t->req);
    return 1;
}

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
    gw_fetch_stats fs;
    fetch_stats(rt->fetch, &fs);
    lua_pushnumber(L, (double)fs.active);
    lua_setfield(L, -2, "upstream_active");
    lua_pushnumber(L, (double)fs.connections_opened);
    lua_setfield(L, -2, "upstream_connections_opened");
    lua_pushnumber(L, (double)fs.idle);
    lua_setfield(L, -2, "upstream_idle");
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
    if (L != rt->L) lua_xmove(L, rt->L, 1); /* runtime_app_new takes it from the runtime's state */
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
                        .header_timeout_ms = 60000,
                        .body_timeout_ms = 60000,
                        .handler_timeout_ms = 60000,
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
    long timeout_ms = ms_of(L, 1);
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
    uv_timer_start(&rt->run_timer, on_run_deadline, (uint64_t)timeout_ms, 0);
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
        {"sleep", l_sleep},   {"cancel", l_cancel},   {"request_id", l_request_id}, {"request_headers", l_request_headers},
        {"now", l_now},             {"log", l_log},       {"list_dir", l_list_dir},
        {"stats", l_stats},         {"parse_headers", l_parse_headers}, {"parse_query", l_parse_query}, {"safe_path", l_safe_path},
        {"listen", l_listen},
        {"close_server", l_close_server},                 {"run", l_run},
        {NULL, NULL}};
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    fetch_register(L, rt);
    http_register(L, rt);
    lua_redis_register(L, rt);
    lua_limit_register(L);
    metrics_register(L, rt);
    lua_pushlightuserdata(L, &runtime_wait_token);
    lua_setfield(L, -2, "WAIT");
    lua_pushstring(L, LUAGATE_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
