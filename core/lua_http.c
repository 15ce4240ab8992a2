/* luagate.core's side of the request being handled: its body while it arrives (waited for whole,
 * read in pieces, or sent on upstream as a body source), and an answer written in pieces by the
 * handler (a generator body). */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime_internal.h"

static gw_task *request_task(lua_State *L, const char *what) {
    gw_task *t = op_owner(L, what);
    if (!t->req) luaL_error(L, "%s: only while handling a request", what);
    return t;
}

/* ---- the body ---- */

/* Waiting for the body: whole (buffered) or the next piece (streamed). */
typedef struct body_op {
    gw_op op;
    bool whole;
} body_op;

static int body_deliver(gw_op *op, lua_State *co) {
    gw_task *t = op->task;
    bool whole = ((body_op *)op)->whole;
    t->body_op = NULL;
    gw_request *req = t->req;
    if (!req) {
        lua_pushnil(co);
        lua_pushstring(co, "client closed the connection");
        return 2;
    }
    if (whole) {
        lua_pushlstring(co, req->body, req->body_len);
        return 1;
    }
    const char *data;
    bool ended;
    long n = server_body_peek(req, &data, &ended);
    if (n > 0) {
        lua_pushlstring(co, data, (size_t)n);
        server_body_consume(req, (size_t)n);
        t->body_consumed = true;
        return 1;
    }
    lua_pushnil(co);
    if (n == 0) return 1; /* the end */
    lua_pushstring(co, "the request body could not be read");
    return 2;
}

static void body_cancel(gw_op *op) {
    op->task->body_op = NULL;
}

static void body_release(gw_op *op) {
    op_free(op);
}

static const gw_op_kind body_kind = {body_deliver, body_cancel, body_release};

static bool body_ready(gw_task *t, bool whole) {
    gw_request *req = t->req;
    if (!req) return true;
    if (whole) return req->body_complete;
    const char *data;
    bool ended;
    return server_body_peek(req, &data, &ended) != 0 || ended;
}

/* More of the body arrived: a waiting reader, or an upstream sending it on, goes on. */
void http_on_body(gw_task *t) {
    if (t->body_op && body_ready(t, ((body_op *)t->body_op)->whole)) op_complete(t->body_op);
    if (t->source_wake) {
        void (*wake)(void *) = t->source_wake;
        t->source_wake = NULL;
        wake(t->source_arg);
    }
}

static int body_wait(lua_State *L, bool whole) {
    gw_task *t = request_task(L, "body");
    if (t->body_op) return luaL_error(L, "the request body is being read already");
    body_op *b = (body_op *)op_new(t, &body_kind, sizeof *b);
    if (!b) return luaL_error(L, "body: out of memory");
    b->whole = whole;
    t->body_op = &b->op;
    if (body_ready(t, whole)) op_complete(&b->op);
    lua_pushinteger(L, b->op.id);
    return 1;
}

/* core.body() -> id: resumes with the whole body, once it has arrived | nil, "too large" when its
 * length is over max_body_size (it is not read) */
static int l_body(lua_State *L) {
    gw_task *t = request_task(L, "body");
    if (server_body_too_large(t->req)) {
        lua_pushnil(L);
        lua_pushliteral(L, "too large");
        return 2;
    }
    server_body_want(t->req);
    return body_wait(L, true);
}

/* core.body_stream(): this request's body is read in pieces (or sent on upstream). */
static int l_body_stream(lua_State *L) {
    gw_task *t = request_task(L, "body_stream");
    server_body_stream(t->req);
    return 0;
}

/* core.body_read() -> id: resumes with the next piece, nil at the end, or nil, err */
static int l_body_read(lua_State *L) {
    return body_wait(L, false);
}

/* The body as a source an upstream call pulls from. */
static long source_peek(gw_body_source *s, const char **data, bool *ended) {
    gw_task *t = (gw_task *)((char *)s - offsetof(gw_task, source));
    if (!t->req) return UV_ECANCELED;
    return server_body_peek(t->req, data, ended);
}

static void source_consume(gw_body_source *s, size_t n) {
    gw_task *t = (gw_task *)((char *)s - offsetof(gw_task, source));
    if (t->req) server_body_consume(t->req, n);
}

static void source_want(gw_body_source *s, void (*wake)(void *arg), void *arg) {
    gw_task *t = (gw_task *)((char *)s - offsetof(gw_task, source));
    t->source_wake = wake;
    t->source_arg = arg;
}

gw_body_source *http_body_source(gw_task *t) {
    gw_request *req = t->req;
    server_body_stream(req);
    const char *data;
    bool ended;
    long ready = server_body_peek(req, &data, &ended);
    /* Its length is known when the client gave it and none was read yet, or when it is all here;
     * else it goes chunked. */
    int64_t length = -1;
    if (!t->body_consumed) length = req->body_complete && ready >= 0 ? ready : req->content_length;
    t->source = (gw_body_source){.peek = source_peek, .consume = source_consume, .want = source_want, .length = length};
    return &t->source;
}

/* ---- an answer in pieces ---- */

typedef struct writable_op {
    gw_op op;
} writable_op;

static int writable_deliver(gw_op *op, lua_State *co) {
    gw_task *t = op->task;
    t->writable_op = NULL;
    if (!t->req) {
        lua_pushnil(co);
        lua_pushstring(co, "client closed the connection");
        return 2;
    }
    lua_pushboolean(co, 1);
    return 1;
}

static void writable_cancel(gw_op *op) {
    op->task->writable_op = NULL;
}

static const gw_op_kind writable_kind = {writable_deliver, writable_cancel, body_release};

void http_on_writable(gw_task *t) {
    if (t->writable_op) op_complete(t->writable_op);
    stream_on_writable(t);
}

/* core.respond_head(status, content_type, headers): the head of an answer whose body the handler
 * writes in pieces (chunked, or until the close for HTTP/1.0). */
static int l_respond_head(lua_State *L) {
    gw_task *t = request_task(L, "respond_head");
    gw_runtime *rt = runtime_of(L);
    if (t->answered) return luaL_error(L, "this request has been answered already");
    gw_response resp = {.status = (int)luaL_checkinteger(L, 1)};
    resp.content_type = lua_tolstring(L, 2, &resp.content_type_len);
    const char *bad = "?";
    if (runtime_collect_headers(rt, L, 3, &bad))
        return luaL_error(L, "response header '%s': values must be strings without CR, LF or NUL", bad);
    resp.headers = (const gw_header *)rt->scratch.data;
    resp.nheaders = rt->scratch.len / sizeof(gw_header);
    t->answered = true;
    if (server_respond_head(t->req, &resp, -1) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "client closed the connection");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.write(chunk) -> true | id (wait: the client is behind) | nil, err */
static int l_write(lua_State *L) {
    gw_task *t = request_task(L, "write");
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    if (!t->answered) return luaL_error(L, "write: the answer's head was not sent");
    int r = server_write_body(t->req, data, len);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "client closed the connection");
        return 2;
    }
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    writable_op *w = (writable_op *)op_new(t, &writable_kind, sizeof *w);
    if (!w) return luaL_error(L, "write: out of memory");
    t->writable_op = &w->op;
    lua_pushinteger(L, w->op.id);
    return 1;
}

/* core.respond_end(ok): the body is complete (ok), or cannot be (the connection is cut). */
static int l_respond_end(lua_State *L) {
    gw_task *t = op_owner(L, "respond_end");
    if (!t->answered || !t->req) return 0; /* not begun, or the client left */
    if (lua_toboolean(L, 1)) server_end_body(t->req);
    else server_abort_body(t->req);
    task_release_request(t);
    return 0;
}

/* core.set_timeout(seconds): the request's answer is due within seconds from now (a route's
 * timeout, in place of handler_timeout); past it the server answers 504. */
static int l_set_timeout(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    gw_task *t = rt->current;
    long ms = ms_of(L, 1);
    if (t && t->req && ms > 0) server_set_answer_timeout(t->req, (uint64_t)ms);
    return 0;
}

void http_register(lua_State *L, gw_runtime *rt) {
    static const luaL_Reg fns[] = {
        {"body", l_body}, {"body_stream", l_body_stream}, {"body_read", l_body_read},
        {"respond_head", l_respond_head}, {"write", l_write}, {"respond_end", l_respond_end},
        {"set_timeout", l_set_timeout},
        {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}
