/* luagate.core's upstream calls: upstream handles, fetch ops, and the streams of answers read in
 * pieces or sent on to the client as they arrive (a pipe).
 *
 * A buffered call resumes its task once with the whole answer. A streamed call resumes it at the
 * answer's head; its body then goes into the stream, where a reader (core.read) or a pipe
 * (core.pipe) takes it. A stream holds at most STREAM_BUFFER bytes nobody took yet: past that the
 * transfer pauses, so a slow client or reader costs the gateway a bounded amount of memory and
 * the upstream waits. Streams belong to their task: when it ends, those it still holds are
 * cancelled. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "budget.h"
#include "http_headers.h"
#include "log.h"
#include "runtime_internal.h"

#define STREAM_BUFFER (64u << 10)
#define UPSTREAM_MT "luagate.upstream"

/* ---- upstreams ---- */

typedef struct upstream_ud {
    gw_upstream *up;
    bool forwarded; /* its calls carry X-Forwarded-*: only then is the client looked at for them */
} upstream_ud;

static uint32_t ms_field(lua_State *L, int idx) {
    double s = lua_tonumber(L, idx);
    if (!(s > 0)) return 0;          /* NaN too */
    if (s > 4294967) s = 4294967;    /* the most milliseconds 32 bits hold: 49 days */
    return (uint32_t)(s * 1000 + 0.5);
}

/* core.upstream(name, url, lines, userpwd, bearer, connect_timeout, timeout, read_timeout,
 *               keepalive, retries, client, max_body, first_byte_timeout, forwarded)
 *   -> handle | nil, err */
static int l_upstream(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    gw_upstream_config c = {0};
    c.name = luaL_checkstring(L, 1);
    c.url = luaL_checkstring(L, 2);
    size_t n = lua_istable(L, 3) ? lua_objlen(L, 3) : 0;
    const char **lines = n ? malloc(n * sizeof *lines) : NULL;
    if (n && !lines) return luaL_error(L, "upstream: out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (int)i + 1);
        lines[i] = lua_tostring(L, -1); /* the table keeps the strings alive */
        lua_pop(L, 1);
        if (!lines[i]) {
            free(lines);
            return luaL_error(L, "upstream: header lines are strings");
        }
    }
    c.header_lines = lines;
    c.nheader_lines = n;
    c.userpwd = lua_tostring(L, 4);
    c.bearer = lua_tostring(L, 5);
    c.deadlines.connect = ms_field(L, 6);
    c.deadlines.total = ms_field(L, 7);
    c.deadlines.idle = ms_field(L, 8);
    c.keepalive = lua_isnumber(L, 9) ? (long)lua_tointeger(L, 9) : -1;
    c.retries = (int)lua_tointeger(L, 10);
    c.backend = lua_type(L, 11) == LUA_TSTRING && strcmp(lua_tostring(L, 11), "curl") == 0 ? FETCH_CURL : FETCH_AUTO;
    c.max_body = (size_t)luaL_optnumber(L, 12, 64 << 20);
    c.deadlines.first_byte = ms_field(L, 13);
    c.forwarded = lua_isnone(L, 14) || lua_toboolean(L, 14);
    upstream_ud *ud = lua_newuserdata(L, sizeof *ud);
    ud->up = NULL;
    ud->forwarded = c.forwarded;
    luaL_getmetatable(L, UPSTREAM_MT);
    lua_setmetatable(L, -2);
    const char *err;
    int r = fetch_upstream_new(rt->fetch, &c, &ud->up, &err);
    free(lines);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "upstream '%s': %s", c.name, err);
        return 2;
    }
    return 1;
}

static int upstream_gc(lua_State *L) {
    upstream_ud *ud = luaL_checkudata(L, 1, UPSTREAM_MT);
    fetch_upstream_release(ud->up);
    ud->up = NULL;
    return 0;
}

/* ---- streams ---- */

struct upstream_stream {
    upstream_stream *prev, *next; /* the task's */
    gw_task *task;
    lua_Integer id;
    gw_transfer *xfer;   /* NULL once it ended, failed or was cancelled */
    struct fetch_op *head_op; /* the fetch waiting for the head */
    gw_op *reader;       /* a core.read waiting for bytes */
    gw_op *pipe_op;      /* a core.pipe sending the body on */
    gw_buf buf;          /* body bytes nobody took yet */
    size_t off;
    gw_buf head;         /* the answer's header block, for a pipe to pass its headers on */
    int64_t length;      /* the bytes of body to come when known, else -1 */
    int64_t declared;    /* the length its head declared (what a HEAD answer repeats), else -1 */
    bool ended;
    bool paused;
    char *error;         /* "kind: detail" when it failed */
    gw_call_obs call;    /* for metrics and the log */
};

/* The call ended (err: it failed; else answered whole). */
static void call_end(gw_task *t, gw_call_obs *c, const gw_fetch_error *err) {
    observe_call_end(t->rt->obs, &t->obs, c, err, t->id);
}

/* We stopped it, before its end: cancelled, even when its head had come (nothing if it ended). */
static void call_cancel(gw_task *t, gw_call_obs *c) {
    c->status = 0;
    call_end(t, c, NULL);
}

static void stream_free(upstream_stream *s) {
    gw_task *t = s->task;
    gw_runtime *rt = t->rt;
    if (s->prev) s->prev->next = s->next;
    else t->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    if (t->pipe == s) t->pipe = NULL;
    call_cancel(t, &s->call);
    if (s->xfer) fetch_cancel(s->xfer);
    buf_free(&s->buf);
    buf_free(&s->head);
    free(s->error);
    small_free(rt, s);
}

static upstream_stream *stream_find(gw_task *t, lua_Integer id) {
    for (upstream_stream *s = t->streams; s; s = s->next)
        if (s->id == id) return s;
    return NULL;
}

void streams_close(gw_task *t) {
    while (t->streams) stream_free(t->streams);
}

static size_t stream_avail(const upstream_stream *s) {
    return s->buf.len - s->off;
}

/* ---- fetch ops ---- */

/* A fetch waiting for its answer (buffered) or for its head (streamed). */
typedef struct fetch_op {
    gw_op op;
    gw_transfer *xfer;       /* buffered: the transfer, until it ends */
    upstream_stream *stream; /* streamed: the stream it resumes with */
    int status;
    char *error;
    gw_buf head;    /* the header block */
    size_t ctype_off, ctype_len;
    bool has_ctype;
    gw_fetch_body body; /* a buffered answer, taken over from the transfer */
    gw_call_obs call;
} fetch_op;

/* The head, kept in into (the op's for a buffered call, the stream's for a streamed one). */
static void fetch_op_head(fetch_op *f, const gw_fetch_head *h, gw_buf *into) {
    f->status = h->status;
    into->len = 0;
    buf_append(into, h->block, h->block_len);
    f->has_ctype = h->content_type != NULL;
    if (f->has_ctype) {
        f->ctype_off = (size_t)(h->content_type - h->block);
        f->ctype_len = h->content_type_len;
    }
}

static void fetch_op_fail(fetch_op *f, const gw_fetch_error *e) {
    size_t n = strlen(fetch_error_name(e->kind)) + strlen(e->detail) + 3;
    f->error = malloc(n);
    if (f->error) snprintf(f->error, n, "%s: %s", fetch_error_name(e->kind), e->detail);
    op_complete(&f->op);
}

/* Buffered calls: the answer whole. */
static void buffered_on_head(void *data, const gw_fetch_head *h) {
    fetch_op *f = data;
    f->call.status = (int16_t)h->status;
    fetch_op_head(f, h, &f->head);
}

static bool buffered_on_body(void *data, const char *chunk, size_t len) {
    (void)data, (void)chunk, (void)len; /* the facade buffers: never called */
    return false;
}

static void buffered_on_end(void *data, gw_fetch_body *body) {
    fetch_op *f = data;
    f->xfer = NULL;
    call_end(f->op.task, &f->call, NULL);
    f->body = *body; /* no copy: an answer may be tens of megabytes */
    *body = (gw_fetch_body){0};
    op_complete(&f->op);
}

static void buffered_on_error(void *data, const gw_fetch_error *e) {
    fetch_op *f = data;
    f->xfer = NULL;
    call_end(f->op.task, &f->call, e);
    fetch_op_fail(f, e);
}

static const gw_fetch_events buffered_events = {buffered_on_head, buffered_on_body, buffered_on_end, buffered_on_error};

/* Resumes with (status, body | stream id, header_block, content_type), or (nil, err): plain values,
 * which Lua turns into a response with a constant-key constructor. */
static int fetch_deliver(gw_op *op, lua_State *co) {
    fetch_op *f = (fetch_op *)op;
    if (f->error || f->status == 0) {
        lua_pushnil(co);
        lua_pushstring(co, f->error ? f->error : "upstream error: out of memory");
        return 2;
    }
    lua_pushinteger(co, f->status);
    if (f->stream) lua_pushinteger(co, f->stream->id);
    else {
        lua_pushlstring(co, f->body.data.data ? f->body.data.data : "", f->body.data.len);
        buf_free(&f->body.data); /* Lua has its copy */
        budget_release(&f->body.charged);
    }
    const gw_buf *head = f->stream ? &f->stream->head : &f->head; /* the stream outlives the op */
    lua_pushlstring(co, head->data ? head->data : "", head->len);
    if (f->has_ctype) lua_pushlstring(co, head->data + f->ctype_off, f->ctype_len);
    else lua_pushnil(co);
    return 4;
}

static void fetch_op_cancel(gw_op *op) {
    fetch_op *f = (fetch_op *)op;
    call_cancel(op->task, &f->call);
    if (f->xfer) fetch_cancel(f->xfer);
    f->xfer = NULL;
    if (f->stream) stream_free(f->stream); /* the head never came: nobody will read it */
    f->stream = NULL;
}

static void fetch_op_release(gw_op *op) {
    fetch_op *f = (fetch_op *)op;
    if (f->stream) f->stream->head_op = NULL;
    free(f->error);
    buf_free(&f->head);
    buf_free(&f->body.data);
    budget_release(&f->body.charged);
    op_free(op);
}

static const gw_op_kind fetch_kind = {fetch_deliver, fetch_op_cancel, fetch_op_release};
_Static_assert(sizeof(fetch_op) <= SMALL_BLOCK, "a fetch op fits a small block");
_Static_assert(sizeof(upstream_stream) <= SMALL_BLOCK, "a stream fits a small block");

/* ---- what a stream hears from its transfer ---- */

static void reader_wake(upstream_stream *s);
static void pipe_flush(upstream_stream *s);
static void pipe_finish(upstream_stream *s, bool client_gone);

static void stream_on_head(void *data, const gw_fetch_head *h) {
    upstream_stream *s = data;
    fetch_op *f = s->head_op;
    s->declared = h->content_length;
    s->length = h->no_body ? 0 : h->content_length;
    s->call.status = (int16_t)h->status;
    s->head_op = NULL; /* from here on the stream outlives the op: the task holds it */
    fetch_op_head(f, h, &s->head);
    op_complete(&f->op);
}

static bool stream_on_body(void *data, const char *chunk, size_t len) {
    upstream_stream *s = data;
    gw_task *t = s->task;
    if (s->pipe_op && stream_avail(s) == 0) { /* straight to the client: no copy when it keeps up */
        int r = server_write_body(t->req, chunk, len);
        if (r < 0) {
            pipe_finish(s, true);
            return true;
        }
        return s->paused = r == 1;
    }
    if (buf_append(&s->buf, chunk, len)) {
        /* Out of memory: the stream cannot go on; the transfer is cancelled when it is freed. */
        s->error = strdup("upstream error: out of memory");
        s->ended = true;
    }
    if (s->pipe_op) pipe_flush(s); /* pauses the transfer itself when the client is behind */
    else reader_wake(s);
    if (stream_avail(s) >= STREAM_BUFFER) s->paused = true;
    return s->paused;
}

static void stream_on_end(void *data, gw_fetch_body *body) {
    (void)body;
    upstream_stream *s = data;
    s->xfer = NULL;
    s->ended = true;
    call_end(s->task, &s->call, NULL);
    if (s->pipe_op) pipe_flush(s);
    else reader_wake(s);
}

static void stream_on_error(void *data, const gw_fetch_error *e) {
    upstream_stream *s = data;
    s->xfer = NULL;
    s->ended = true;
    call_end(s->task, &s->call, e);
    size_t n = strlen(fetch_error_name(e->kind)) + strlen(e->detail) + 3;
    if ((s->error = malloc(n))) snprintf(s->error, n, "%s: %s", fetch_error_name(e->kind), e->detail);
    if (s->head_op) { /* before the head: the fetch itself fails */
        fetch_op *f = s->head_op;
        s->head_op = NULL;
        f->stream = NULL;
        fetch_op_fail(f, e);
        stream_free(s);
        return;
    }
    if (s->pipe_op) pipe_flush(s);
    else reader_wake(s);
}

static const gw_fetch_events stream_events = {stream_on_head, stream_on_body, stream_on_end, stream_on_error};

/* ---- core.fetch ---- */

typedef struct call_args {
    gw_fetch_request r;
    const char *lines[64];
    const char **more; /* past 64 lines */
} call_args;

static const char *call_lines(lua_State *L, int idx, call_args *a) {
    if (!lua_istable(L, idx)) return NULL;
    size_t n = lua_objlen(L, idx);
    const char **lines = a->lines;
    if (n > 64 && !(lines = a->more = malloc(n * sizeof *lines))) return "out of memory";
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (int)i + 1);
        /* Only strings: converting a number would make a string nothing keeps alive. */
        lines[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1);
        if (!lines[i]) return "header lines are strings";
    }
    a->r.header_lines = lines;
    a->r.nheader_lines = n;
    return NULL;
}

/* core.fetch(upstream | nil, method, target, lines, body | true, stream, timeout, connect_timeout,
 *            retries, auth_set, userpwd, bearer, upstream_id) -> id | nil, err */
static int l_fetch(lua_State *L) {
    gw_task *t = op_owner(L, "fetch");
    gw_runtime *rt = runtime_of(L);
    call_args a = {0};
    gw_fetch_request *r = &a.r;
    upstream_ud *ud = lua_isnil(L, 1) ? NULL : luaL_checkudata(L, 1, UPSTREAM_MT);
    r->upstream = ud ? ud->up : NULL;
    r->method = luaL_checkstring(L, 2);
    r->target = luaL_checkstring(L, 3);
    const char *err = call_lines(L, 4, &a);
    if (lua_type(L, 5) == LUA_TSTRING) r->body = lua_tolstring(L, 5, &r->body_len);
    else if (lua_toboolean(L, 5)) r->source = t->req ? http_body_source(t) : NULL;
    r->stream = lua_toboolean(L, 6);
    r->timeout_ms = ms_field(L, 7);
    r->connect_timeout_ms = ms_field(L, 8);
    r->retries = lua_isnumber(L, 9) ? (int)lua_tointeger(L, 9) : -1;
    r->auth_set = lua_toboolean(L, 10);
    r->userpwd = lua_tostring(L, 11);
    r->bearer = lua_tostring(L, 12);
    r->request_id = t->id;
    gw_forwarded fw;
    if (ud && ud->forwarded && t->req) { /* a configured upstream is told who the client is; a URL is not */
        forwarded_of(t->req, &rt->trusted, &fw);
        r->forwarded = &fw;
    }
    char traceparent[TRACEPARENT_LEN + 1];
    observe_traceparent(rt->obs, &t->obs, traceparent);
    r->traceparent = traceparent[0] ? traceparent : NULL;
    if (err) {
        free(a.more);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid request: %s", err);
        return 2;
    }
    fetch_op *f = (fetch_op *)op_new(t, &fetch_kind, sizeof *f);
    upstream_stream *s = r->stream ? small_alloc(rt, sizeof *s) : NULL;
    if (!f || (r->stream && !s)) {
        free(a.more);
        if (s) small_free(rt, s);
        if (f) op_discard(&f->op);
        return luaL_error(L, "fetch: out of memory");
    }
    gw_transfer *xfer;
    int rc;
    if (s) {
        *s = (upstream_stream){.task = t, .id = f->op.id, .head_op = f, .length = -1, .next = t->streams};
        rc = fetch_start(rt->fetch, r, &stream_events, s, &xfer, &err);
        if (rc == 0) {
            s->xfer = xfer;
            if (t->streams) t->streams->prev = s;
            t->streams = s;
            f->stream = s;
        } else {
            small_free(rt, s);
        }
    } else {
        rc = fetch_start(rt->fetch, r, &buffered_events, f, &xfer, &err);
        if (rc == 0) f->xfer = xfer;
    }
    free(a.more);
    if (rc < 0) {
        op_discard(&f->op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    observe_call_begin(rt->obs, &t->obs, s ? &s->call : &f->call, (int)lua_tointeger(L, 13));
    lua_pushinteger(L, f->op.id);
    return 1;
}

/* core.set_trusted_proxies({ "10.0.0.0/8", ... }) -> true | nil, err: the proxies whose
 * X-Forwarded-* headers are passed on (appended to) rather than replaced. */
static int l_set_trusted_proxies(lua_State *L) {
    gw_runtime *rt = runtime_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    gw_trusted next = {0};
    for (int i = 1;; i++) {
        lua_rawgeti(L, 1, i);
        const char *cidr = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (!cidr) break;
        if (trusted_add(&next, cidr)) {
            trusted_clear(&next);
            lua_pushnil(L);
            lua_pushfstring(L, "trusted_proxies: %s is not an IP address or network (such as 10.0.0.0/8)", cidr);
            return 2;
        }
    }
    trusted_clear(&rt->trusted);
    rt->trusted = next;
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- core.read: a stream's next bytes ---- */

typedef struct read_op {
    gw_op op;
    upstream_stream *s;
} read_op;

static int read_deliver(gw_op *op, lua_State *co) {
    upstream_stream *s = ((read_op *)op)->s;
    s->reader = NULL;
    size_t n = stream_avail(s);
    if (n > 0) {
        lua_pushlstring(co, s->buf.data + s->off, n);
        s->buf.len = s->off = 0;
        if (s->paused && s->xfer) {
            s->paused = false;
            fetch_resume(s->xfer);
        }
        return 1;
    }
    lua_pushnil(co);
    if (!s->error) return 1; /* the end */
    lua_pushstring(co, s->error);
    return 2;
}

static void read_cancel(gw_op *op) {
    ((read_op *)op)->s->reader = NULL;
}

static const gw_op_kind read_kind = {read_deliver, read_cancel, op_free};

static void reader_wake(upstream_stream *s) {
    if (s->reader && (stream_avail(s) > 0 || s->ended)) {
        gw_op *op = s->reader;
        op_complete(op);
    }
}

static upstream_stream *check_stream(lua_State *L, gw_task *t) {
    upstream_stream *s = stream_find(t, luaL_checkinteger(L, 1));
    if (!s) luaL_error(L, "this response's body is no longer there (read it in the handler that fetched it)");
    if (s->reader || s->pipe_op) luaL_error(L, "this response's body is being read already");
    return s;
}

/* core.read(stream) -> id: resumes with (chunk) | (nil) at the end | (nil, err) */
static int l_read(lua_State *L) {
    gw_task *t = op_owner(L, "read");
    upstream_stream *s = check_stream(L, t);
    read_op *r = (read_op *)op_new(t, &read_kind, sizeof *r);
    if (!r) return luaL_error(L, "read: out of memory");
    r->s = s;
    s->reader = &r->op;
    reader_wake(s);
    lua_pushinteger(L, r->op.id);
    return 1;
}

/* core.close_stream(stream): the rest of the body is not wanted. */
static int l_close_stream(lua_State *L) {
    gw_task *t = runtime_of(L)->current;
    upstream_stream *s = t ? stream_find(t, luaL_checkinteger(L, 1)) : NULL;
    if (s && !s->pipe_op) {
        if (s->reader) op_cancel(s->reader);
        stream_free(s);
    }
    return 0;
}

/* ---- core.pipe: the body on to the client as it arrives ---- */

typedef struct pipe_op {
    gw_op op;
    upstream_stream *s;
    char *error;
    bool ok;
} pipe_op;

static int pipe_deliver(gw_op *op, lua_State *co) {
    pipe_op *p = (pipe_op *)op;
    if (p->ok) {
        lua_pushboolean(co, 1);
        return 1;
    }
    lua_pushnil(co);
    lua_pushstring(co, p->error ? p->error : "client closed the connection");
    return 2;
}

static void pipe_cancel(gw_op *op) {
    pipe_op *p = (pipe_op *)op;
    if (p->s) p->s->pipe_op = NULL;
}

static void pipe_release(gw_op *op) {
    free(((pipe_op *)op)->error);
    op_free(op);
}

static const gw_op_kind pipe_kind = {pipe_deliver, pipe_cancel, pipe_release};

/* The answer is complete, or cannot be: tell the client's side and the waiting handler. */
static void pipe_finish(upstream_stream *s, bool client_gone) {
    pipe_op *p = (pipe_op *)s->pipe_op;
    gw_task *t = s->task;
    s->pipe_op = NULL;
    p->s = NULL;
    if (client_gone) {
        log_info("request %s: client closed the connection mid-answer; the upstream transfer is stopped", t->id);
        p->error = strdup("client closed the connection");
    } else if (s->error) {
        /* Never a truncated body in valid framing: the client must see the cut. */
        log_warn("request %s: upstream failed mid-answer (%s); closing the client's connection", t->id, s->error);
        server_abort_body(t->req);
        task_release_request(t);
        p->error = strdup(s->error);
    } else {
        server_end_body(t->req);
        task_release_request(t);
        p->ok = true;
    }
    op_complete(&p->op);
    stream_free(s);
}

/* Send what the stream holds; finish at its end. */
static void pipe_flush(upstream_stream *s) {
    gw_task *t = s->task;
    size_t n = stream_avail(s);
    if (n > 0) {
        int r = server_write_body(t->req, s->buf.data + s->off, n);
        s->buf.len = s->off = 0;
        if (r < 0) {
            pipe_finish(s, true);
            return;
        }
        if (r == 1) { /* the client is behind: the upstream waits (stream_on_writable resumes) */
            if (s->xfer && !s->paused) fetch_pause(s->xfer);
            s->paused = true;
            return;
        }
    }
    if (s->ended) {
        pipe_finish(s, false);
        return;
    }
    if (s->paused && s->xfer) {
        s->paused = false;
        fetch_resume(s->xfer);
    }
}

void stream_on_writable(gw_task *t) {
    if (t->pipe && t->pipe->pipe_op) pipe_flush(t->pipe);
}

static bool header_given(const gw_buf *scratch, const char *name, size_t len) {
    const gw_header *h = (const gw_header *)scratch->data;
    for (size_t i = 0, n = scratch->len / sizeof *h; i < n; i++)
        if (h[i].name_len == len && strncasecmp(h[i].name, name, len) == 0) return true;
    return false;
}

/* Drop from the headers added since `from` those a Connection header of the answer named. */
static void drop_connection_named(gw_buf *scratch, size_t from, const char *list, size_t list_len) {
    gw_header *h = (gw_header *)scratch->data;
    size_t n = scratch->len / sizeof *h, kept = from / sizeof *h;
    for (size_t i = kept; i < n; i++)
        if (!header_list_has(list, list_len, h[i].name, h[i].name_len)) h[kept++] = h[i];
    scratch->len = kept * sizeof *h;
}

/* Add the upstream's headers to those the handler gave (rt->scratch), unless it gave one of the
 * same name; hop-by-hop ones (and those a Connection header names) and those the server writes
 * itself are never passed on. The content type is the handler's, else the upstream's. */
static void pass_headers(gw_runtime *rt, const gw_buf *block, gw_response *resp) {
    size_t given = rt->scratch.len;
    const char *p = block->data, *end = p + block->len;
    const char *eol = p ? memchr(p, '\n', block->len) : NULL; /* after the status line */
    gw_header connection[4]; /* Connection headers: what they name is dropped at the end */
    int nconnection = 0;
    for (p = eol ? eol + 1 : end; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p) continue;
        gw_header h = {.name = p, .name_len = (size_t)(colon - p), .value = colon + 1};
        while (h.value < eol && (*h.value == ' ' || *h.value == '\t')) h.value++;
        const char *ve = eol[-1] == '\r' ? eol - 1 : eol;
        h.value_len = ve > h.value ? (size_t)(ve - h.value) : 0;
        if (h.name_len == 12 && strncasecmp(h.name, "content-type", 12) == 0) {
            if (!resp->content_type) resp->content_type = h.value, resp->content_type_len = h.value_len;
            continue;
        }
        if (h.name_len == 10 && strncasecmp(h.name, "connection", 10) == 0 && nconnection < 4)
            connection[nconnection++] = h;
        gw_buf mine = {rt->scratch.data, given, given};
        if (runtime_header_skipped(h.name, h.name_len) || header_given(&mine, h.name, h.name_len)) continue;
        buf_append(&rt->scratch, &h, sizeof h);
    }
    for (int i = 0; i < nconnection; i++)
        drop_connection_named(&rt->scratch, given, connection[i].value, connection[i].value_len);
}

/* core.pipe(stream, status, content_type, headers) -> true when the whole answer went out at once,
 * else id: resumes with (true) once the client has the whole body, or (nil, err) */
static int l_pipe(lua_State *L) {
    gw_task *t = op_owner(L, "pipe");
    gw_runtime *rt = runtime_of(L);
    upstream_stream *s = check_stream(L, t);
    if (!t->req || t->answered) return luaL_error(L, "pipe: this request has been answered already");
    gw_response resp = {.status = (int)luaL_checkinteger(L, 2)};
    resp.content_type = lua_tolstring(L, 3, &resp.content_type_len);
    const char *bad = "?";
    if (runtime_collect_headers(rt, L, 4, &bad)) return luaL_error(L, "response header '%s': values must be strings without CR, LF or NUL", bad);
    pass_headers(rt, &s->head, &resp);
    resp.headers = (const gw_header *)rt->scratch.data;
    resp.nheaders = rt->scratch.len / sizeof(gw_header);
    pipe_op *p = (pipe_op *)op_new(t, &pipe_kind, sizeof *p);
    if (!p) return luaL_error(L, "pipe: out of memory");
    p->s = s;
    s->pipe_op = &p->op;
    t->pipe = s;
    t->answered = true;
    if (s->ended && !s->error && !t->req->is_head) {
        /* All of it is here already (a small answer): one write, head and body, and the handler
         * goes on at once instead of waiting to be resumed. */
        resp.body = s->buf.data ? s->buf.data + s->off : "";
        resp.body_len = stream_avail(s);
        server_respond(t->req, &resp);
        task_release_request(t);
        s->pipe_op = NULL;
        op_discard(&p->op);
        stream_free(s);
        lua_pushboolean(L, 1);
        return 1;
    } else if (server_respond_head(t->req, &resp, t->req->is_head ? s->declared : s->length) < 0) {
        pipe_finish(s, true);
    } else {
        pipe_flush(s);
    }
    lua_pushinteger(L, p->op.id);
    return 1;
}

void fetch_register(lua_State *L, gw_runtime *rt) {
    luaL_newmetatable(L, UPSTREAM_MT);
    lua_pushcfunction(L, upstream_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"upstream", l_upstream}, {"fetch", l_fetch}, {"read", l_read},
        {"close_stream", l_close_stream}, {"pipe", l_pipe}, {"set_trusted_proxies", l_set_trusted_proxies},
        {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}
