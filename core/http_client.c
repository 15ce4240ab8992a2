/* The native HTTP/1.1 client, for plain http:// upstreams: llhttp in response mode over the
 * transport the server uses, with a keep-alive pool per upstream.
 *
 * What it takes from nginx's upstream keepalive, Node's Agent and Go's Transport:
 * - An idle pooled connection stays under read_start: an EOF, a reset or a stray byte evicts it
 *   from the loop, for free; taking it again costs no syscall.
 * - A connection goes back to the pool only after a complete exchange: the whole request written,
 *   an answer that was complete and not delimited by EOF, nothing read past it; and only under a
 *   request-count and age cap, and before the server's own Keep-Alive timeout.
 * - The pool keeps at most `keepalive` idle connections per upstream and upstream_keepalive over
 *   all (the oldest idle one goes first), most recently used taken first.
 * - A reused connection that dies before the first byte of its answer is reported as such: the
 *   facade then tries once more on a fresh connection when the request may be sent again.
 * Answers are parsed by response_parser.c (llhttp behind the strict scanner): HEAD, 204 and 304
 * answers have no body, 1xx answers are skipped, an EOF-delimited body ends at the close. Names
 * are resolved in libuv's thread pool (dns.c), never on the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "fetch_internal.h"
#include "log.h"
#include "response_parser.h"
#include "transport.h"

#define MAX_REQUESTS 1000          /* per connection, as nginx's keepalive_requests */
#define MAX_AGE_MS (3600 * 1000)   /* per connection, as nginx's keepalive_time */
#define IDLE_MS (60 * 1000)        /* an idle pooled connection, as nginx's keepalive_timeout */
#define SERVER_TIMEOUT_MARGIN_MS 1000 /* stop using a connection this long before the server's */
#define DNS_TTL_MS (30 * 1000)
#define MAX_HEAD (64u << 10)       /* an answer's status line and headers */
#define SEND_HIGH (64u << 10)      /* a streamed body: queued bytes before waiting for the socket */
#define MAX_SPARE 256

typedef struct hc_backend hc_backend;
typedef struct hc_conn hc_conn;
typedef struct hc_exchange hc_exchange;

struct hc_backend {
    fetch_backend base;
    gw_fetch *f;
    uv_loop_t *loop;
    gw_dns *dns;
    hc_conn *conns;       /* every connection, for the stop */
    hc_conn *lru_oldest;  /* idle connections over all pools, oldest first */
    hc_conn *lru_newest;
    size_t idle;
    uv_timer_t sweep;     /* closes idle connections past their time */
    hc_exchange *spare;
    size_t nspare;
    char *slab;
    size_t slab_len;
    int open_conns;    /* connections whose handle is not closed yet */
    bool closing;
    bool sweep_closed;
};

enum conn_state { CONN_CONNECTING, CONN_BUSY, CONN_IDLE, CONN_CLOSING };

struct hc_conn {
    gw_tcp tcp;
    hc_backend *b;
    fetch_pool *pool;
    char *address;         /* "host:port": an upstream whose URL changed does not take it */
    hc_conn *prev, *next;  /* all connections */
    hc_conn *pool_prev, *pool_next; /* the pool's idle list */
    hc_conn *lru_prev, *lru_next;
    hc_exchange *ex;
    response_parser parser; /* the answer of the exchange in progress */
    enum conn_state state;
    uint64_t created, idle_since, server_deadline; /* server_deadline: its Keep-Alive timeout */
    unsigned requests, server_max;
    gw_buf out;            /* the request head being written */
};

/* One attempt of a transfer: the request on a connection, the answer being parsed. */
struct hc_exchange {
    hc_backend *b;
    gw_transfer *t;
    hc_conn *conn;
    gw_dns_query *query;
    hc_exchange *spare_next;
    bool reused;           /* the connection served an earlier exchange */
    bool got_bytes;        /* a byte of an answer came */
    bool sent;             /* the whole request is handed to the connection */
    bool sending_body;     /* a streamed body: pulling from its source */
    bool chunked_body;
    bool waiting_source;
    bool read_paused;
    bool in_parse;
    bool starting;         /* inside hc_start: failures are reported from the loop */
};

static void conn_close(hc_conn *c);
static void exchange_send_body(hc_exchange *ex);

/* ---- exchanges ---- */

static hc_exchange *exchange_get(hc_backend *b) {
    hc_exchange *ex = b->spare;
    if (ex) {
        b->spare = ex->spare_next;
        b->nspare--;
    } else if (!(ex = calloc(1, sizeof *ex))) {
        return NULL;
    }
    *ex = (hc_exchange){.b = b};
    return ex;
}

static void exchange_put(hc_exchange *ex) {
    hc_backend *b = ex->b;
    if (ex->query) dns_cancel(ex->query);
    if (b->nspare >= MAX_SPARE || b->closing) {
        free(ex);
        return;
    }
    ex->spare_next = b->spare;
    b->spare = ex;
    b->nspare++;
}

/* The attempt is over: the transfer forgets it, the connection too. */
static void exchange_detach(hc_exchange *ex) {
    if (ex->t) ex->t->attempt = NULL;
    ex->t = NULL;
    if (ex->conn) ex->conn->ex = NULL;
    ex->conn = NULL;
}

static int error_kind(int status) {
    switch (status) {
    case UV_ECONNREFUSED:
    case UV_EHOSTUNREACH:
    case UV_ENETUNREACH:
    case UV_EADDRNOTAVAIL: return FETCH_ERR_REFUSED;
    case UV_ETIMEDOUT: return FETCH_ERR_TIMEOUT;
    case UV_EMFILE:
    case UV_ENFILE: return FETCH_ERR_NO_FDS;
    case UV_EAI_NONAME:
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL:
    case UV_EAI_NODATA: return FETCH_ERR_RESOLVE;
    default: return FETCH_ERR_RESET;
    }
}

/* Report a failed attempt and let go of it. */
static void exchange_fail(hc_exchange *ex, int kind, const char *detail) {
    gw_transfer *t = ex->t;
    bool reused = ex->reused, before = !ex->got_bytes, starting = ex->starting;
    if (ex->conn) conn_close(ex->conn);
    exchange_detach(ex);
    exchange_put(ex);
    if (!t) return;
    if (starting) fetch_failed_later(t, kind, detail, reused, before);
    else fetch_failed(t, kind, detail, reused, before);
}

/* ---- the idle pool ---- */

static void lru_unlink(hc_conn *c) {
    hc_backend *b = c->b;
    if (c->lru_prev) c->lru_prev->lru_next = c->lru_next;
    else b->lru_oldest = c->lru_next;
    if (c->lru_next) c->lru_next->lru_prev = c->lru_prev;
    else b->lru_newest = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

/* Out of the idle lists (it is being taken, or closed). */
static void idle_remove(hc_conn *c) {
    if (c->state != CONN_IDLE) return;
    fetch_pool *p = c->pool;
    if (c->pool_prev) c->pool_prev->pool_next = c->pool_next;
    else p->idle_list = c->pool_next;
    if (c->pool_next) c->pool_next->pool_prev = c->pool_prev;
    c->pool_prev = c->pool_next = NULL;
    lru_unlink(c);
    p->idle--;
    c->b->idle--;
}

static void on_sweep(uv_timer_t *timer);

static void idle_add(hc_conn *c) {
    hc_backend *b = c->b;
    fetch_pool *p = c->pool;
    c->state = CONN_IDLE;
    c->idle_since = uv_now(b->loop);
    c->pool_next = p->idle_list;
    if (p->idle_list) p->idle_list->pool_prev = c;
    p->idle_list = c;
    c->lru_prev = b->lru_newest;
    if (b->lru_newest) b->lru_newest->lru_next = c;
    else b->lru_oldest = c;
    b->lru_newest = c;
    p->idle++;
    b->idle++;
    if (!uv_is_active((uv_handle_t *)&b->sweep)) uv_timer_start(&b->sweep, on_sweep, IDLE_MS / 4, IDLE_MS / 4);
}

/* Within its caps: requests served, age, and the server's own Keep-Alive timeout. */
static bool conn_usable(const hc_conn *c, uint64_t now) {
    return c->requests < MAX_REQUESTS && (!c->server_max || c->requests < c->server_max) &&
           now - c->created < MAX_AGE_MS &&
           (!c->server_deadline || now + SERVER_TIMEOUT_MARGIN_MS < c->server_deadline);
}

static bool idle_usable(const hc_conn *c, uint64_t now) {
    return conn_usable(c, now) && now - c->idle_since < IDLE_MS;
}

/* An idle connection to the upstream's address, most recent first; stale ones are closed on the
 * way (their upstream moved, or they are past their time). */
static hc_conn *pool_take(hc_backend *b, fetch_pool *p, const char *address) {
    uint64_t now = uv_now(b->loop);
    hc_conn *c = p->idle_list;
    while (c) {
        hc_conn *next = c->pool_next;
        if (strcmp(c->address, address) == 0 && idle_usable(c, now)) {
            idle_remove(c);
            c->state = CONN_BUSY;
            return c;
        }
        conn_close(c);
        c = next;
    }
    return NULL;
}

static void on_sweep(uv_timer_t *timer) {
    hc_backend *b = timer->data;
    uint64_t now = uv_now(b->loop);
    for (hc_conn *c = b->lru_oldest, *next; c; c = next) {
        next = c->lru_next;
        if (!idle_usable(c, now)) conn_close(c);
    }
    if (b->idle == 0) uv_timer_stop(&b->sweep);
}

/* ---- connections ---- */

static void backend_free(hc_backend *b);

static void on_conn_closed(gw_transport *t) {
    hc_conn *c = t->data;
    hc_backend *b = c->b;
    gw_fetch *f = b->f;
    b->open_conns--;
    if (c->prev) c->prev->next = c->next;
    else b->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->pool->open--;
    fetch_pool_release(f, c->pool);
    buf_free(&c->out);
    free(c->address);
    response_parser_free(&c->parser);
    free(c);
    if (b->closing && b->sweep_closed && b->open_conns == 0) backend_free(b);
    fetch_handle_closed(f);
}

static void conn_close(hc_conn *c) {
    if (c->state == CONN_CLOSING) return;
    idle_remove(c);
    c->state = CONN_CLOSING;
    if (c->ex) c->ex->conn = NULL;
    c->ex = NULL;
    transport_close(&c->tcp.base);
}

/* Room in the pools for one more idle connection: within its upstream's keepalive, and within
 * upstream_keepalive over all (making room by closing the oldest idle connection). */
static bool pool_room(hc_backend *b, fetch_pool *p) {
    long all = fetch_keepalive(b->f);
    long mine = p->keepalive >= 0 && p->keepalive < all ? p->keepalive : all;
    if ((long)p->idle >= mine) return false;
    if ((long)b->idle >= all && b->lru_oldest) conn_close(b->lru_oldest);
    return true;
}

/* The server's "Keep-Alive: timeout=5, max=100" (RFC 2068 19.7.1): stop before it does. */
static void read_keepalive(hc_conn *c, const char *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (n - i > 8 && strncasecmp(v + i, "timeout=", 8) == 0)
            c->server_deadline = uv_now(c->b->loop) + (uint64_t)strtoul(v + i + 8, NULL, 10) * 1000;
        if (n - i > 4 && strncasecmp(v + i, "max=", 4) == 0)
            c->server_max = c->requests + (unsigned)strtoul(v + i + 4, NULL, 10);
    }
}

/* ---- the answer ---- */

/* The final head: to the facade. Nonzero stops the parse (the transfer is gone). */
static int on_answer_head(void *owner, response_parser *p) {
    hc_conn *c = owner;
    hc_exchange *ex = c->ex;
    if (!ex || !ex->t) return -1;
    if (p->keepalive_len) read_keepalive(c, p->head.data + p->keepalive_off, p->keepalive_len);
    gw_fetch_head h = {
        .status = p->status,
        .http_minor = p->http_minor,
        .block = p->head.data,
        .block_len = p->head.len,
        .content_type = p->ctype_len ? p->head.data + p->ctype_off : NULL,
        .content_type_len = p->ctype_len,
        .content_length = p->content_length,
        .no_body = p->no_content || p->status == 204 || p->status == 304,
    };
    if (!fetch_head(ex->t, &h)) {
        ex->t = NULL; /* it is gone: the facade detached us */
        return -1;
    }
    return 0;
}

static int on_answer_body(void *owner, const char *at, size_t len) {
    hc_conn *c = owner;
    hc_exchange *ex = c->ex;
    if (!ex || !ex->t) return -1;
    bool pause;
    if (!fetch_body(ex->t, at, len, &pause)) {
        ex->t = NULL;
        return -1;
    }
    if (pause && !ex->read_paused) {
        /* What this read holds is still parsed and handed on (one read buffer at most); then the
         * socket waits. */
        ex->read_paused = true;
        transport_read_stop(&c->tcp.base);
    }
    return 0;
}

static const response_parser_events answer_events = {on_answer_head, on_answer_body};

/* The answer is complete: the connection goes back to the pool or is closed, then the facade
 * hears of it. */
static void exchange_finish(hc_exchange *ex, bool leftover, bool at_eof) {
    hc_conn *c = ex->conn;
    gw_transfer *t = ex->t;
    hc_backend *b = ex->b;
    bool reusable = c && !at_eof && !leftover && ex->sent && !b->closing && response_parser_keep_alive(&c->parser);
    exchange_detach(ex);
    exchange_put(ex);
    if (c) {
        c->requests++;
        if (reusable && conn_usable(c, uv_now(b->loop)) && pool_room(b, c->pool)) {
            idle_add(c);
        } else {
            conn_close(c);
        }
    }
    fetch_done(t);
}

/* What the parser made of the bytes. */
static void exchange_parsed(hc_exchange *ex, enum rp_outcome o, size_t used, size_t len) {
    hc_conn *c = ex->conn;
    if (o == RP_MORE) return;
    if (o == RP_DONE && ex->t) {
        exchange_finish(ex, used < len, false);
        return;
    }
    if (!ex->t) { /* cancelled or ended from an event: the connection cannot be trusted */
        if (c) conn_close(c);
        exchange_detach(ex);
        exchange_put(ex);
        return;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "invalid HTTP from the upstream: %s", c->parser.error);
    exchange_fail(ex, FETCH_ERR_BAD_RESPONSE, detail);
}

static void on_conn_read(gw_transport *tr, const char *data, size_t len) {
    hc_conn *c = tr->data;
    hc_exchange *ex = c->ex;
    if (!ex) { /* idle: the server closed it, or sent what nobody asked for */
        conn_close(c);
        return;
    }
    ex->got_bytes = true;
    fetch_progress(ex->t);
    ex->in_parse = true;
    size_t used = 0;
    enum rp_outcome o = response_parser_execute(&c->parser, data, len, &used);
    ex->in_parse = false;
    exchange_parsed(ex, o, used, len);
}

static void on_conn_read_end(gw_transport *tr, int status) {
    hc_conn *c = tr->data;
    hc_exchange *ex = c->ex;
    if (!ex) {
        conn_close(c);
        return;
    }
    /* An answer whose body runs to the end of the connection ends here. */
    if (status == UV_EOF) {
        ex->in_parse = true;
        enum rp_outcome o = response_parser_eof(&c->parser);
        ex->in_parse = false;
        if (o == RP_STOPPED || !ex->t) { /* cancelled from the last event */
            exchange_detach(ex);
            exchange_put(ex);
            conn_close(c);
            return;
        }
        if (o == RP_DONE) {
            exchange_finish(ex, false, true);
            return;
        }
    }
    char detail[96];
    int kind = ex->got_bytes ? FETCH_ERR_RESET : FETCH_ERR_EMPTY;
    if (status == UV_EOF)
        snprintf(detail, sizeof detail, ex->got_bytes ? "the upstream closed the connection mid-answer"
                                                      : "the upstream closed the connection without an answer");
    else
        snprintf(detail, sizeof detail, "%s", uv_strerror(status));
    exchange_fail(ex, kind, detail);
}

/* ---- the request ---- */

/* The request head: the upstream's lines, then the call's, then the framing of the body; sized
 * first, then copied once. */
static int request_head(hc_exchange *ex, gw_buf *out) {
    gw_transfer *t = ex->t;
    gw_upstream *u = t->up;
    const char *target = t->target.len ? t->target.data : "/";
    size_t mlen = strlen(t->method), tlen = t->target.len ? t->target.len : 1, hlen = strlen(u->hostport);
    char framing[64];
    int flen = 0;
    if (t->source) {
        ex->chunked_body = t->source->length < 0;
        flen = ex->chunked_body ? snprintf(framing, sizeof framing, "Transfer-Encoding: chunked\r\n")
                                : snprintf(framing, sizeof framing, "Content-Length: %lld\r\n", (long long)t->source->length);
    } else if (t->has_body || strcmp(t->method, "POST") == 0 || strcmp(t->method, "PUT") == 0) {
        flen = snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", t->req_body.len);
    }
    out->len = 0;
    if (buf_reserve(out, mlen + tlen + hlen + u->lines_block.len + t->lines.len + (size_t)flen + 32)) return UV_ENOMEM;
    char *p = out->data;
#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
    PUT(t->method, mlen);
    *p++ = ' ';
    PUT(target, tlen);
    if (t->host_given) { /* the upstream's or the call's lines have it */
        PUT(" HTTP/1.1\r\n", 11);
    } else {
        PUT(" HTTP/1.1\r\nHost: ", 17);
        PUT(u->hostport, hlen);
        PUT("\r\n", 2);
    }
    if (u->lines_block.len) PUT(u->lines_block.data, u->lines_block.len);
    if (t->lines.len) PUT(t->lines.data, t->lines.len);
    if (flen) PUT(framing, (size_t)flen);
    PUT("\r\n", 2);
#undef PUT
    out->len = (size_t)(p - out->data);
    return 0;
}

static void exchange_send(hc_exchange *ex) {
    hc_conn *c = ex->conn;
    gw_transfer *t = ex->t;
    fetch_connected(t);
    c->ex = ex;
    response_parser_start(&c->parser, strcmp(t->method, "HEAD") == 0);
    int r = request_head(ex, &c->out);
    if (r == 0) {
        uv_buf_t bufs[2] = {uv_buf_init(c->out.data, (unsigned)c->out.len),
                            uv_buf_init(t->req_body.data, (unsigned)t->req_body.len)};
        r = transport_write(&c->tcp.base, bufs, t->has_body && t->req_body.len ? 2 : 1);
    }
    if (c->out.cap > 16384) buf_free(&c->out);
    if (r < 0) { /* on a reused connection the server closed meanwhile, the facade retries */
        exchange_fail(ex, error_kind(r), uv_strerror(r));
        return;
    }
    if (t->source) {
        ex->sending_body = true;
        exchange_send_body(ex);
        return;
    }
    ex->sent = true;
    fetch_sent(t);
}

static void on_source_ready(void *arg) {
    hc_exchange *ex = arg;
    ex->waiting_source = false;
    if (ex->t && ex->conn) exchange_send_body(ex);
}

/* Pull a streamed body from its source while the socket takes it: at most SEND_HIGH queued. */
static void exchange_send_body(hc_exchange *ex) {
    hc_conn *c = ex->conn;
    gw_body_source *src = ex->t->source;
    while (ex->sending_body && transport_queued(&c->tcp.base) < SEND_HIGH) {
        const char *data;
        bool ended = false;
        long n = src->peek(src, &data, &ended);
        int r = 0;
        if (n < 0) {
            exchange_fail(ex, FETCH_ERR_BODY, "the request body could not be read (the client left?)");
            return;
        }
        if (n == 0 && !ended) {
            if (!ex->waiting_source) {
                ex->waiting_source = true;
                src->want(src, on_source_ready, ex);
            }
            return;
        }
        if (n == 0) { /* the end */
            ex->sending_body = false;
            if (ex->chunked_body) {
                uv_buf_t last = uv_buf_init("0\r\n\r\n", 5);
                r = transport_write(&c->tcp.base, &last, 1);
            }
        } else if (ex->chunked_body) {
            char size[24];
            uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)snprintf(size, sizeof size, "%lx\r\n", (unsigned long)n)),
                                uv_buf_init((char *)data, (unsigned)n), uv_buf_init("\r\n", 2)};
            r = transport_write(&c->tcp.base, bufs, 3);
        } else {
            uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
            r = transport_write(&c->tcp.base, &b, 1);
        }
        if (r < 0) {
            exchange_fail(ex, error_kind(r), uv_strerror(r));
            return;
        }
        if (n > 0) {
            src->consume(src, (size_t)n);
            fetch_progress(ex->t);
        }
    }
    if (!ex->sending_body && !ex->sent) {
        ex->sent = true;
        fetch_sent(ex->t);
    }
}

static void on_conn_write_done(gw_transport *tr, int status) {
    hc_conn *c = tr->data;
    hc_exchange *ex = c->ex;
    if (!ex) return;
    if (status < 0) {
        exchange_fail(ex, error_kind(status), uv_strerror(status));
        return;
    }
    if (ex->sending_body && !ex->waiting_source) exchange_send_body(ex);
}

static void on_conn_shutdown(gw_transport *tr, int status) {
    (void)tr, (void)status; /* never shut down: a connection is closed whole */
}

static const gw_transport_events conn_events = {
    .on_read = on_conn_read,
    .on_read_end = on_conn_read_end,
    .on_write_done = on_conn_write_done,
    .on_shutdown = on_conn_shutdown,
    .on_closed = on_conn_closed,
};

/* ---- connecting ---- */

static void on_connected(gw_tcp *tcp, int status) {
    hc_conn *c = tcp->base.data;
    hc_exchange *ex = c->ex;
    if (!ex) return; /* cancelled: conn_close is under way */
    if (status < 0) {
        char detail[96];
        snprintf(detail, sizeof detail, "connect: %s", uv_strerror(status));
        exchange_fail(ex, error_kind(status), detail);
        return;
    }
    c->state = CONN_BUSY;
    transport_read_start(&c->tcp.base);
    exchange_send(ex);
}

static int conn_open(hc_exchange *ex, const struct sockaddr *addr) {
    hc_backend *b = ex->b;
    gw_transfer *t = ex->t;
    hc_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->address = strdup(t->up->hostport))) {
        free(c);
        return UV_ENOMEM;
    }
    c->b = b;
    c->pool = t->up->pool;
    c->pool->refs++;
    c->pool->open++;
    c->created = uv_now(b->loop);
    c->state = CONN_CONNECTING;
    response_parser_init(&c->parser, &answer_events, c, MAX_HEAD);
    tcp_init(&c->tcp, b->loop, &conn_events, c, b->slab, b->slab_len);
    fetch_handle_opened(b->f);
    b->open_conns++;
    c->next = b->conns;
    if (b->conns) b->conns->prev = c;
    b->conns = c;
    c->ex = ex;
    ex->conn = c;
    int r = tcp_connect(&c->tcp, addr, on_connected);
    if (r < 0) {
        c->ex = NULL;
        ex->conn = NULL;
        conn_close(c);
        return r;
    }
    fetch_count_connection(b->f);
    return 0;
}

static void on_resolved(gw_dns_query *q, int status, const struct sockaddr *addr, void *data) {
    (void)q;
    hc_exchange *ex = data;
    ex->query = NULL;
    if (status < 0) {
        char detail[96];
        snprintf(detail, sizeof detail, "%s: %s", ex->t->up->host, uv_strerror(status));
        exchange_fail(ex, error_kind(status), detail);
        return;
    }
    int r = conn_open(ex, addr);
    if (r < 0) exchange_fail(ex, error_kind(r), uv_strerror(r));
}

/* ---- the backend's ops ---- */

static int hc_start(gw_transfer *t, bool fresh) {
    hc_backend *b = (hc_backend *)t->backend;
    if (b->closing) return UV_ECANCELED;
    hc_exchange *ex = exchange_get(b);
    if (!ex) return UV_ENOMEM;
    ex->t = t;
    t->attempt = ex;
    gw_upstream *u = t->up;
    hc_conn *c = fresh ? NULL : pool_take(b, u->pool, u->hostport);
    if (c) {
        ex->reused = true;
        ex->conn = c;
        ex->starting = true;
        exchange_send(ex);
        ex->starting = false; /* ex may be back among the spares: only the flag is touched */
        return 0;
    }
    struct sockaddr_storage sa;
    int r = dns_lookup(b->dns, u->host, u->port, &sa);
    if (r == UV_EAGAIN) {
        ex->query = dns_resolve(b->dns, u->host, u->port, on_resolved, ex);
        r = ex->query ? 0 : UV_ENOMEM;
    } else if (r == 0) {
        r = conn_open(ex, (struct sockaddr *)&sa);
    } else {
        /* A name that failed a moment ago: fails again, from the loop. */
        char detail[96];
        snprintf(detail, sizeof detail, "%s: %s", u->host, uv_strerror(r));
        exchange_detach(ex);
        exchange_put(ex);
        fetch_failed_later(t, FETCH_ERR_RESOLVE, detail, false, true);
        return 0;
    }
    if (r < 0) {
        exchange_detach(ex);
        exchange_put(ex);
    }
    return r;
}

static void hc_pause(gw_transfer *t) {
    hc_exchange *ex = t->attempt;
    if (ex->read_paused || !ex->conn) return;
    ex->read_paused = true;
    transport_read_stop(&ex->conn->tcp.base);
}

static void hc_resume(gw_transfer *t) {
    hc_exchange *ex = t->attempt;
    if (!ex->read_paused) return;
    ex->read_paused = false;
    if (ex->conn) transport_read_start(&ex->conn->tcp.base);
}

static void hc_cancel(gw_transfer *t) {
    hc_exchange *ex = t->attempt;
    hc_conn *c = ex->conn;
    if (c) conn_close(c); /* mid-exchange: what it would read next is not ours */
    exchange_detach(ex);
    /* Inside the parser the exchange is still on the stack: exchange_parsed frees it. */
    if (!ex->in_parse) exchange_put(ex);
}

/* Once the sweep timer and every connection have closed. */
static void backend_free(hc_backend *b) {
    while (b->spare) {
        hc_exchange *ex = b->spare;
        b->spare = ex->spare_next;
        free(ex);
    }
    free(b);
}

static void on_sweep_closed(uv_handle_t *h) {
    hc_backend *b = h->data;
    gw_fetch *f = b->f;
    b->sweep_closed = true;
    if (b->open_conns == 0) backend_free(b);
    fetch_handle_closed(f);
}

static void hc_close(fetch_backend *base) {
    hc_backend *b = (hc_backend *)base;
    b->closing = true;
    for (hc_conn *c = b->conns; c; c = c->next) conn_close(c);
    dns_close(b->dns);
    uv_close((uv_handle_t *)&b->sweep, on_sweep_closed);
}

static const fetch_backend_ops hc_ops = {
    .start = hc_start,
    .pause = hc_pause,
    .resume = hc_resume,
    .cancel = hc_cancel,
    .close = hc_close,
};

int http_client_new(gw_fetch *f, fetch_backend **out) {
    hc_backend *b = calloc(1, sizeof *b);
    if (!b) return UV_ENOMEM;
    b->base.ops = &hc_ops;
    b->f = f;
    b->loop = fetch_loop(f);
    b->slab = fetch_slab(f, &b->slab_len);
    int r = dns_new(&b->dns, b->loop, DNS_TTL_MS);
    if (r < 0) {
        free(b);
        return r;
    }
    uv_timer_init(b->loop, &b->sweep);
    b->sweep.data = b;
    uv_unref((uv_handle_t *)&b->sweep);
    fetch_handle_opened(f);
    *out = &b->base;
    return 0;
}
