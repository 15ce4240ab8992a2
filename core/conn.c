/* One client connection: reading, llhttp parsing, pipelining, writing responses, closing.
 *
 * States: idle or receiving a request; a request in flight (owned by the app); lingering (our last
 * response is handed to the socket: we FIN once it is all sent, then wait for the peer's FIN before
 * closing so that unread input cannot turn into a RST that destroys the response); closing
 * (uv_close issued, memory freed when both handles report closed). A connection whose output is
 * still queued is never idle: ending it (graceful stop, the peer's FIN) goes through lingering,
 * which lets the queue drain; only a send timeout, an error, a reset or a forced stop cuts it.
 * Requests are answered one at a time in order: bytes that arrive while a request is in flight
 * (pipelining) wait in `pending` and are parsed after the response is written. We keep reading
 * while in flight to notice a client that hangs up, so its request can be aborted. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "server_internal.h"

#define MAX_HEADERS 100
#define LINGER_MS 2000
#define KEEP_BUF 16384 /* buffers larger than this are freed after the request */
#define MAX_QUEUED_OUTPUT (1u << 20) /* unsent response bytes before we stop taking requests */

typedef struct span {
    size_t name_off, name_len, val_off, val_len;
} span;

struct gw_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    llhttp_t parser;
    gw_server *srv;
    gw_conn *prev, *next;
    gw_buf head;    /* URL, header names and values of the request being parsed */
    gw_buf spans;   /* span[]: where each header sits in head */
    gw_buf headers; /* gw_header[] for the app, built when the request is complete */
    gw_buf body;
    gw_buf pending; /* read but not parsed yet, while a request is in flight */
    size_t pending_off;
    gw_buf out; /* the response head being written */
    gw_request req;
    size_t url_len;
    int error_status; /* set by a parser callback that rejects the request */
    int open_handles;
    bool field_open;
    bool in_trailers; /* chunked trailer fields: not headers, never seen by the app */
    bool in_message;
    bool in_flight;
    bool processing;
    bool lingering;
    bool closing;
    bool close_after; /* draining, or after an Upgrade: the last response on this connection */
    bool read_stopped;
    bool write_blocked; /* too much unsent output: parsing waits until it drains */
    bool peer_eof;      /* the client sent FIN while our last response was still going out */
    size_t queued_at_timer; /* write_queue_size when the send timer was armed: progress check */
    uint64_t deadline;      /* when the current timeout expires (loop time, ms); 0: none */
    uint64_t timer_due;     /* when the uv timer fires: never after deadline */
    uint64_t idle_since;    /* when it last became idle: a drain lets it be for a minimum grace */
    char id[65]; /* the request id: the client's (up to 64 characters) or a generated one */
    char remote[64];
};

typedef struct write_req {
    uv_write_t req;
    char data[];
} write_req;

enum parse_outcome { PARSE_MORE, PARSE_REQUEST, PARSE_FAILED };

static void conn_process(gw_conn *c);
static void conn_start_reading(gw_conn *c);
static void conn_linger(gw_conn *c);
static void conn_fail(gw_conn *c, int status, const char *message);

/* ---- small helpers ---- */

static void timer_set(gw_conn *c, uint64_t ms);

static void on_timeout(uv_timer_t *t) {
    gw_conn *c = t->data;
    if (c->deadline == 0 || c->in_flight) return; /* nothing due: the app's deadline, not ours */
    uint64_t now = uv_now(c->srv->loop);
    if (now < c->deadline) { /* moved later since the timer was armed */
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timeout, c->deadline - now, 0);
        return;
    }
    size_t queued = c->tcp.write_queue_size;
    if (queued > 0 && queued != c->queued_at_timer) {
        /* Still sending, and the client took some since last time: give it another period. */
        c->queued_at_timer = queued;
        timer_set(c, c->srv->limits.read_timeout_ms);
        return;
    }
    if (c->lingering && queued == 0) log_debug("%s: peer did not close after the last response", c->remote);
    else if (queued) log_info("%s: client stopped reading; closing", c->remote);
    conn_close(c);
}

/* Timeouts move on every request; the uv timer (a heap entry) is only re-armed when the new
 * deadline comes before it fires. A later deadline is found by on_timeout, which re-arms. */
static void timer_set(gw_conn *c, uint64_t ms) {
    if (ms == 0) {
        c->deadline = 0;
        return;
    }
    c->deadline = uv_now(c->srv->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->deadline < c->timer_due) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timeout, ms, 0);
    }
}

static void on_handle_closed(uv_handle_t *h) {
    gw_conn *c = h->data;
    if (--c->open_handles > 0) return;
    buf_free(&c->head);
    buf_free(&c->spans);
    buf_free(&c->headers);
    buf_free(&c->body);
    buf_free(&c->pending);
    buf_free(&c->out);
    gw_server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
    server_conn_freed(srv);
}

/* The app lets go of the request in flight: its answer would have nowhere to go. */
static void conn_abort_request(gw_conn *c) {
    if (!c->in_flight) return;
    c->in_flight = false;
    c->srv->app.on_abort(&c->req, c->srv->app.data);
}

void conn_close(gw_conn *c) {
    if (c->closing) return;
    c->closing = true;
    conn_abort_request(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

gw_conn *conn_next(gw_conn *c) {
    return c->next;
}

/* No more requests on this connection: close it, but only once what it was sent has gone out.
 * uv_close would drop the unsent queue, cutting an answer the client is still reading. */
static void conn_end(gw_conn *c) {
    if (c->lingering || c->closing) return; /* already on its way out */
    if (c->tcp.write_queue_size > 0) conn_linger(c);
    else conn_close(c);
}

/* Nothing to receive, answer or send: wait for the next request for keepalive_timeout. */
static void conn_set_idle(gw_conn *c) {
    c->idle_since = uv_now(c->srv->loop);
    timer_set(c, c->srv->limits.keepalive_timeout_ms);
}

void conn_drain(gw_conn *c, uint64_t min_idle_ms) {
    c->close_after = true;
    /* A request being received or answered finishes first: its answer says Connection: close and
     * ends the connection. Requests pipelined behind are not parsed any more (close_after), so they
     * do not keep it open. */
    if (c->in_flight || c->in_message || c->lingering || c->closing) return;
    uint64_t idle = uv_now(c->srv->loop) - c->idle_since;
    if (c->tcp.write_queue_size > 0 || idle >= min_idle_ms) {
        conn_end(c);
        return;
    }
    /* Just used: its client may have sent the next request already. One that arrives in the grace
     * is answered (with Connection: close); on_timeout closes the connection if none does. */
    timer_set(c, min_idle_ms - idle);
}

/* ---- writing ---- */

static void on_write_done(uv_write_t *w, int status) {
    gw_conn *c = w->handle->data;
    free(w);
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* The answer is out: a send timeout becomes the keep-alive idle timeout again. */
    if (c->tcp.write_queue_size == 0 && !c->in_flight && !c->in_message && !c->lingering) conn_set_idle(c);
    if (c->write_blocked && c->tcp.write_queue_size < MAX_QUEUED_OUTPUT / 2) {
        c->write_blocked = false;
        if (c->read_stopped) {
            c->read_stopped = false;
            conn_start_reading(c);
        }
        if (!c->processing) conn_process(c);
    }
}

/* Write bufs in order: synchronously when the socket takes it all (the common case, no copy),
 * else copy what is left and queue it behind earlier writes. */
static int conn_write(gw_conn *c, uv_buf_t *bufs, unsigned n) {
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
    if (r < 0) return r;
    size_t done = (size_t)r;
    if (done == total) return 0;
    write_req *w = malloc(sizeof *w + total - done);
    if (!w) return UV_ENOMEM;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t skip = done < bufs[i].len ? done : bufs[i].len;
        done -= skip;
        memcpy(w->data + len, bufs[i].base + skip, bufs[i].len - skip);
        len += bufs[i].len - skip;
    }
    uv_buf_t rest = uv_buf_init(w->data, (unsigned)len);
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &rest, 1, on_write_done);
    if (r < 0) free(w);
    return r;
}

static void conn_send(gw_conn *c, const gw_response *resp, bool keep_alive) {
    gw_server *srv = c->srv;
    http_date_update(&srv->date, time(NULL));
    c->out.len = 0;
    const char *id = c->req.id ? c->req.id : c->id;
    if (response_format_head(&c->out, resp, srv->date.text, id, keep_alive, c->req.http_minor)) {
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->out.data, (unsigned)c->out.len),
                        uv_buf_init((char *)resp->body, (unsigned)resp->body_len)};
    bool no_body = c->req.is_head || resp->status < 200 || resp->status == 204 || resp->status == 304;
    unsigned n = (no_body || resp->body_len == 0) ? 1 : 2;
    if (conn_write(c, bufs, n) < 0) {
        conn_close(c);
        return;
    }
    if (c->out.cap > KEEP_BUF) buf_free(&c->out);
    /* A client that does not read its answers must not make us buffer without end. */
    if (c->tcp.write_queue_size > MAX_QUEUED_OUTPUT) c->write_blocked = true;
    if (!keep_alive) conn_linger(c);
}

void server_respond(gw_request *req, const gw_response *resp) {
    gw_conn *c = (gw_conn *)((char *)req - offsetof(gw_conn, req));
    if (!c->in_flight || c->closing) return;
    c->in_flight = false;
    bool keep_alive = req->keep_alive && !c->close_after;
    conn_send(c, resp, keep_alive);
    if (c->closing || c->lingering) return;
    buf_reset(&c->head, KEEP_BUF);
    buf_reset(&c->body, KEEP_BUF);
    /* While the answer is still going out, the timer is a send timeout; then keep-alive. */
    c->queued_at_timer = c->tcp.write_queue_size;
    if (c->queued_at_timer) timer_set(c, c->srv->limits.read_timeout_ms);
    else conn_set_idle(c);
    if (c->read_stopped && !c->write_blocked) {
        c->read_stopped = false;
        conn_start_reading(c);
    }
    if (!c->processing) conn_process(c);
}

/* A response made by the server itself (errors found before the app saw the request). */
static void conn_fail(gw_conn *c, int status, const char *message) {
    if (c->req.id == NULL) server_new_request_id(c->srv, c->id);
    const char *id = c->req.id ? c->req.id : c->id;
    char body[RESPONSE_ERROR_BUF];
    gw_response r = response_error(status, message, id, body);
    log_info("%s: %d %s", c->remote, status, message);
    c->req.http_minor = 1;
    c->req.is_head = false;
    conn_send(c, &r, false);
}

/* Stop taking requests: FIN our side, then wait briefly for the peer to close. */
static void on_shutdown_done(uv_shutdown_t *s, int status) {
    gw_conn *c = s->data;
    if (c->closing) return;
    /* Everything is sent: wait briefly for the peer's FIN (or have it already). */
    if (status < 0 || c->peer_eof) conn_close(c);
    else timer_set(c, LINGER_MS);
}

static void conn_linger(gw_conn *c) {
    if (c->lingering || c->closing) return;
    c->lingering = true;
    c->queued_at_timer = c->tcp.write_queue_size;
    timer_set(c, c->queued_at_timer ? c->srv->limits.read_timeout_ms : LINGER_MS);
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown_done) < 0) conn_close(c);
}

/* ---- parsing ---- */

static gw_conn *conn_of(llhttp_t *p) {
    return (gw_conn *)p->data;
}

static int head_append(gw_conn *c, const char *at, size_t len) {
    if (c->head.len + len > c->srv->limits.max_header_size) {
        c->error_status = 431;
        return -1;
    }
    if (buf_append(&c->head, at, len)) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p) {
    gw_conn *c = conn_of(p);
    c->head.len = c->spans.len = c->body.len = 0;
    c->url_len = 0;
    c->field_open = false;
    c->in_trailers = false;
    c->in_message = true;
    memset(&c->req, 0, sizeof c->req);
    timer_set(c, c->srv->limits.read_timeout_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    gw_conn *c = conn_of(p);
    c->url_len += len;
    return head_append(c, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    gw_conn *c = conn_of(p);
    if (c->in_trailers) return 0;
    if (!c->field_open) {
        if (c->spans.len / sizeof(span) >= MAX_HEADERS) {
            c->error_status = 431;
            return -1;
        }
        span s = {.name_off = c->head.len};
        if (buf_append(&c->spans, &s, sizeof s)) {
            c->error_status = 500;
            return -1;
        }
        c->field_open = true;
    }
    ((span *)(c->spans.data + c->spans.len))[-1].name_len += len;
    return head_append(c, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
    gw_conn *c = conn_of(p);
    if (c->in_trailers) return 0;
    span *s = (span *)(c->spans.data + c->spans.len) - 1;
    s->val_off = c->head.len;
    c->field_open = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    gw_conn *c = conn_of(p);
    if (c->in_trailers) return 0;
    ((span *)(c->spans.data + c->spans.len))[-1].val_len += len;
    return head_append(c, at, len);
}

static bool span_is(const gw_conn *c, const span *s, const char *name) {
    size_t n = strlen(name);
    return s->name_len == n && strncasecmp(c->head.data + s->name_off, name, n) == 0;
}

static int on_headers_complete(llhttp_t *p) {
    gw_conn *c = conn_of(p);
    c->in_trailers = true; /* what follows a chunked body comes through the same callbacks */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->limits.max_body_size) {
        c->error_status = 413;
        return -1;
    }
    /* A client that waits for "100 Continue" before sending its body (curl does for large ones). */
    if (p->http_minor >= 1 && (p->flags & (F_CONTENT_LENGTH | F_CHUNKED))) {
        size_t n = c->spans.len / sizeof(span);
        for (size_t i = 0; i < n; i++) {
            const span *s = (const span *)c->spans.data + i;
            if (span_is(c, s, "expect") && s->val_len == 12 &&
                strncasecmp(c->head.data + s->val_off, "100-continue", 12) == 0) {
                static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
                if (conn_write(c, &b, 1) < 0) return -1;
            }
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    gw_conn *c = conn_of(p);
    if (c->body.len + len > c->srv->limits.max_body_size) {
        c->error_status = 413;
        return -1;
    }
    if (buf_append(&c->body, at, len)) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    /* An Upgrade (or CONNECT) is answered as plain HTTP, then the connection closes: llhttp
     * parses nothing after it. */
    if (p->upgrade) conn_of(p)->close_after = true;
    return HPE_PAUSED; /* one request at a time: the rest waits until this one is answered */
}

void conn_init_settings(llhttp_settings_t *s) {
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_field_complete = on_header_field_complete;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* Percent-decode the path into head (after everything else). -1 on a malformed escape or %00. */
static int decode_path(gw_conn *c, const char *path, size_t len, size_t *off) {
    if (buf_reserve(&c->head, len + 1)) return -1;
    *off = c->head.len;
    char *out = c->head.data + c->head.len;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '%') {
            out[n++] = path[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(path[i + 1]) : -1, lo = hi >= 0 ? hex_value(path[i + 2]) : -1;
        if (lo < 0 || (hi == 0 && lo == 0)) return -1;
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    c->head.len += n + 1;
    return (int)n;
}

static bool valid_request_id(const char *s, size_t n) {
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.:", s[i])) return false;
    return true;
}

/* Turn the parsed spans into the gw_request the app sees. Returns 0, or an HTTP status to fail with. */
static int conn_build_request(gw_conn *c) {
    gw_request *r = &c->req;
    llhttp_t *p = &c->parser;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->http_minor = p->http_major == 1 ? p->http_minor : 1;
    r->keep_alive = llhttp_should_keep_alive(p);
    r->is_head = p->method == HTTP_HEAD;
    r->remote = c->remote;

    /* Room for the decoded path now: pointers into head must not move under us below. */
    if (buf_reserve(&c->head, c->url_len + 2)) return 500;
    /* Split the target: absolute-form "http://host/path?q" is reduced to its path. */
    const char *url = c->head.data;
    size_t url_len = c->url_len, start = 0;
    if (url_len && url[0] != '/' && url[0] != '*') {
        const char *scheme = memchr(url, ':', url_len);
        if (!scheme || (size_t)(scheme - url) + 3 > url_len || scheme[1] != '/' || scheme[2] != '/') return 400;
        const char *slash = memchr(scheme + 3, '/', url_len - (size_t)(scheme + 3 - url));
        start = slash ? (size_t)(slash - url) : url_len;
    }
    const char *q = memchr(url + start, '?', url_len - start);
    size_t path_end = q ? (size_t)(q - url) : url_len;
    size_t target_off = start, query_off = q ? path_end + 1 : url_len;

    size_t nspans = c->spans.len / sizeof(span);
    c->headers.len = 0;
    if (buf_reserve(&c->headers, nspans * sizeof(gw_header) + 1)) return 500;
    size_t path_off;
    int path_len = decode_path(c, url + start, path_end - start, &path_off);
    if (path_len < 0) return 400;
    if (path_len == 0) {
        /* "GET http://host HTTP/1.1" or "OPTIONS *": the path is "/" */
        if (buf_append(&c->head, "/", 2)) return 500;
        path_off = c->head.len - 2;
        path_len = 1;
    }
    /* head is final now: pointers into it stay valid until the next request begins. */
    char *h = c->head.data;
    r->path = h + path_off;
    r->path_len = (size_t)path_len;
    r->target = h + target_off;
    r->target_len = url_len - target_off;
    r->query = q ? h + query_off : "";
    r->query_len = q ? url_len - query_off : 0;

    gw_header *hs = (gw_header *)c->headers.data;
    int hosts = 0;
    for (size_t i = 0; i < nspans; i++) {
        const span *s = (const span *)c->spans.data + i;
        char *name = h + s->name_off;
        for (size_t k = 0; k < s->name_len; k++) name[k] = (char)tolower((unsigned char)name[k]);
        hs[i] = (gw_header){name, s->name_len, h + s->val_off, s->val_len};
        if (s->name_len == 4 && memcmp(name, "host", 4) == 0) hosts++;
    }
    r->headers = hs;
    r->nheaders = nspans;
    r->body = c->body.data ? c->body.data : "";
    r->body_len = c->body.len;
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; any request has at most one. */
    if (hosts > 1 || (p->http_major == 1 && p->http_minor == 1 && hosts == 0)) return 400;

    /* The request id: the client's X-Request-Id when it is sane, else a fresh one. */
    for (size_t i = 0; i < nspans; i++) {
        if (hs[i].name_len == 12 && memcmp(hs[i].name, "x-request-id", 12) == 0 &&
            valid_request_id(hs[i].value, hs[i].value_len) && hs[i].value_len < sizeof c->id) {
            memcpy(c->id, hs[i].value, hs[i].value_len);
            c->id[hs[i].value_len] = '\0';
            r->id = c->id;
        }
    }
    if (!r->id) {
        server_new_request_id(c->srv, c->id);
        r->id = c->id;
    }
    return 0;
}

/* Feed bytes to llhttp. *used: how many it consumed (up to the end of a complete request). */
static enum parse_outcome conn_parse(gw_conn *c, const char *data, size_t len, size_t *used) {
    enum llhttp_errno err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) {
        *used = len;
        return PARSE_MORE;
    }
    if (err == HPE_PAUSED_UPGRADE) { /* bytes after an upgrade request: not HTTP for us */
        *used = len;
        conn_close(c);
        return PARSE_FAILED;
    }
    if (err == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        llhttp_resume(&c->parser);
        c->in_message = false;
        int status = conn_build_request(c);
        if (status) {
            conn_fail(c, status, status == 400 ? "bad request" : "out of memory");
            return PARSE_FAILED;
        }
        return PARSE_REQUEST;
    }
    *used = len;
    c->in_message = false;
    switch (c->error_status) {
    case 413: conn_fail(c, 413, "request body too large"); break;
    case 431: conn_fail(c, 431, "request header fields too large"); break;
    case 500: conn_fail(c, 500, "out of memory"); break;
    default:
        log_debug("%s: bad request: %s", c->remote, llhttp_get_error_reason(&c->parser));
        conn_fail(c, 400, "bad request");
    }
    return PARSE_FAILED;
}

static void conn_dispatch(gw_conn *c) {
    timer_set(c, 0);
    c->in_flight = true;
    c->srv->app.on_request(&c->req, c->srv->app.data);
}

/* Parse and dispatch what is pending, one request at a time, until a request is in flight. */
static void conn_process(gw_conn *c) {
    c->processing = true;
    while (!c->in_flight && !c->closing && !c->lingering && !c->write_blocked && !c->close_after &&
           c->pending_off < c->pending.len) {
        size_t used = 0;
        enum parse_outcome o = conn_parse(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, &used);
        c->pending_off += used;
        if (o == PARSE_REQUEST) conn_dispatch(c);
        if (o != PARSE_REQUEST) break;
    }
    if (c->pending_off == c->pending.len) {
        c->pending_off = 0;
        buf_reset(&c->pending, KEEP_BUF);
    }
    if (c->close_after && !c->in_flight && !c->in_message) conn_end(c);
    c->processing = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)suggested;
    gw_conn *c = h->data;
    b->base = c->srv->read_slab;
    b->len = sizeof c->srv->read_slab;
}

/* The client sent FIN while answers are still queued for it: it may well still be reading them
 * (a half-close), so they go out whole before we close. It sends nothing more: a request in flight
 * is aborted as for any client that hangs up, and one not parsed yet or half received is dropped. */
static void on_peer_half_close(gw_conn *c) {
    c->peer_eof = true; /* the FIN lingering waits for is here: on_shutdown_done closes at once */
    uv_read_stop((uv_stream_t *)&c->tcp);
    conn_abort_request(c);
    conn_linger(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    gw_conn *c = s->data;
    if (n < 0) {
        if (n == UV_EOF && c->tcp.write_queue_size > 0) {
            on_peer_half_close(c);
            return;
        }
        if (n != UV_EOF) log_debug("%s: read: %s", c->remote, uv_strerror((int)n));
        conn_close(c); /* a request in flight is aborted: the client is gone */
        return;
    }
    if (n == 0 || c->lingering || c->closing) return;

    if (c->in_flight || c->write_blocked || c->pending_off < c->pending.len) {
        if (buf_append(&c->pending, b->base, (size_t)n)) {
            conn_close(c);
            return;
        }
        /* A client far ahead of us: stop reading until we catch up. */
        const gw_limits *l = &c->srv->limits;
        if (c->write_blocked || c->pending.len > l->max_header_size + l->max_body_size + sizeof c->srv->read_slab) {
            uv_read_stop(s);
            c->read_stopped = true;
        }
        if (!c->in_flight && !c->write_blocked) conn_process(c);
        return;
    }

    /* The common case: parse straight from the read buffer, keep only what follows a request. */
    c->processing = true;
    if (c->in_message) timer_set(c, c->srv->limits.read_timeout_ms);
    size_t used = 0;
    enum parse_outcome o = conn_parse(c, b->base, (size_t)n, &used);
    if (o == PARSE_REQUEST) {
        if (used < (size_t)n && buf_append(&c->pending, b->base + used, (size_t)n - used)) {
            c->processing = false;
            conn_close(c);
            return;
        }
        conn_dispatch(c);
    }
    c->processing = false;
    if (o == PARSE_REQUEST) conn_process(c);
}

static void conn_start_reading(gw_conn *c) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

bool conn_accept(gw_server *srv) {
    gw_conn *c = calloc(1, sizeof *c);
    if (!c) return false;
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp) < 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return true;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;

    struct sockaddr_storage sa;
    int salen = sizeof sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
    }
    snprintf(c->remote, sizeof c->remote, "%s:%d", ip, port);
    conn_set_idle(c);
    conn_start_reading(c);
    return true;
}
