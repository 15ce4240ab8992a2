/* One client connection: its I/O state machine. Reading and parsing (through request_parser.c),
 * handing complete requests to the app one at a time, writing answers, timeouts, closing.
 *
 * States: idle or receiving a request; a request in flight (owned by the app); lingering (our last
 * response is handed to the transport: we FIN once it is all sent, then wait for the peer's FIN
 * before closing so that unread input cannot turn into a RST that destroys the response); closing
 * (close issued, memory freed when both handles report closed). A connection whose output is
 * still queued is never idle: ending it (graceful stop, the peer's FIN) goes through lingering,
 * which lets the queue drain; only a send timeout, an error, a reset or a forced stop cuts it.
 * Requests are answered one at a time in order: bytes that arrive while a request is in flight
 * (pipelining) wait in `pending`, and are parsed from the server's ready list once the answer is
 * written, never on the stack of the code that answered. We keep reading while in flight to
 * notice a client that hangs up, so its request can be aborted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "request_parser.h"
#include "server_internal.h"

#define LINGER_MS 2000
#define KEEP_BUF 16384 /* buffers larger than this are freed after the request */
#define MAX_QUEUED_OUTPUT (1u << 20) /* unsent response bytes before we stop taking requests */
#define STREAM_HIGH (256u << 10) /* a streamed answer: queued bytes before its source waits */
#define STREAM_LOW (64u << 10)   /* ... and when it goes on */
#define BODY_HIGH (256u << 10)   /* a streamed request body: unread bytes before we stop reading */
#define BUDGET_FREE_BODY (16u << 10) /* an answer's body this small is never refused for the budget */
#define STALLED_MIN (16u << 10)  /* when the budget runs short, a client holding this much queued... */
#define STALLED_MS 1000          /* ... and reading none of it for this long is cut */

struct gw_conn {
    gw_tcp tcp;
    uv_timer_t timer;
    request_parser rp;
    gw_server *srv;
    gw_conn *prev, *next;
    gw_ready_item ready; /* queued to parse what is pending */
    gw_buf pending; /* read but not parsed yet, while a request is in flight */
    size_t pending_off;
    gw_buf out; /* the response head being written */
    gw_request req;
    int open_handles;
    bool in_flight;
    bool lingering;
    bool closing;
    bool close_after; /* draining, or after an Upgrade: the last response on this connection */
    bool read_stopped;
    bool write_blocked; /* too much unsent output: parsing waits until it drains */
    bool peer_eof;      /* the client sent FIN while our last response was still going out */
    bool nothing_more;  /* the client's last request, all of it read: close once the answer is out */
    bool early;         /* the request in flight was handed over before its body arrived */
    bool body_paused;   /* a streamed request body: reading stopped until the app takes some */
    bool streaming;     /* an answer going out in pieces */
    bool chunked_out;   /* ... in chunked framing */
    bool discard_body;  /* ... with no body allowed (HEAD, 204, 304): pieces are dropped */
    bool stream_keep_alive;
    bool want_writable; /* the app waits for the queue to go down */
    bool continue_sent; /* "100 Continue" went out for the request in flight */
    bool refused;       /* taken past max_connections, only to be answered 503 */
    /* Deadlines and progress, in loop time (ms); a deadline of 0 is none. Which one holds follows
     * from the state (conn_deadline); the uv timer is armed for the nearest. */
    uint64_t timer_due;       /* when the uv timer fires */
    uint64_t idle_since;      /* when it last became idle: keep-alive, and a drain's grace */
    uint64_t last_read;       /* the last bytes of the request being received */
    uint64_t head_deadline;   /* its head must be whole by then (header_timeout) */
    uint64_t body_deadline;   /* a body being buffered must be whole by then (body_timeout) */
    uint64_t answer_deadline; /* the app must begin its answer by then (handler_timeout, a route's) */
    uint64_t grace_deadline;  /* a drain lets an idle connection be until then */
    uint64_t linger_deadline; /* after our FIN, the peer's is awaited until then */
    uint64_t send_progress;   /* when the queued output was last seen to shrink */
    size_t queued_seen;       /* ... and how much was queued then (0: nothing queued) */
    unsigned requests;        /* requests begun on this connection */
    char id[65]; /* the request id: the client's (up to 64 characters) or a generated one */
    char remote[64];
    /* For the log phase (app.on_complete): what the request in progress was sent, since when. */
    uint64_t started_ns, head_sent, body_sent;
    int sent_status;
    bool unlogged; /* handed to the app, or answered by conn_fail, and not completed yet */
};

static void conn_process(gw_conn *c);
static void conn_linger(gw_conn *c);

static gw_transport *tr(gw_conn *c) {
    return &c->tcp.base;
}

static size_t queued(gw_conn *c) {
    return transport_queued(tr(c));
}

/* ---- timeouts ---- */

enum deadline_kind { DL_NONE, DL_IDLE, DL_GRACE, DL_HEAD, DL_READ, DL_BODY, DL_ANSWER, DL_SEND, DL_LINGER };

static void conn_fail(gw_conn *c, int status, const char *message);
static void conn_abort_request(gw_conn *c);
static void conn_end(gw_conn *c);
static void conn_complete(gw_conn *c, enum gw_end_how how);

static uint64_t now_ms(const gw_conn *c) {
    return uv_now(c->srv->loop);
}

/* The deadline that holds in the connection's state, and which it is:
 * - output queued for a client: it must take some within read_timeout (a send deadline measured
 *   by progress, as nginx's send_timeout);
 * - lingering after our FIN: the peer's FIN, briefly;
 * - a request being received: read_timeout between reads, and its head whole within
 *   header_timeout of its first byte (of the accept, for a connection's first request), and a
 *   buffered body whole within body_timeout (a streamed one only moves or times out);
 * - a request with the app: its answer begun within handler_timeout (or its route's timeout);
 * - idle between requests: keepalive_timeout (header_timeout before a first request), or a
 *   drain's grace. */
static uint64_t conn_deadline(gw_conn *c, int *why) {
    const gw_limits *l = &c->srv->limits;
    uint64_t d = UINT64_MAX;
    *why = DL_NONE;
#define CAP(t, w)                          \
    do {                                   \
        uint64_t t_ = (t);                 \
        if (t_ && t_ < d) d = t_, *why = (w); \
    } while (0)
    if (c->queued_seen) CAP(c->send_progress + l->read_timeout_ms, DL_SEND);
    if (c->lingering) {
        CAP(c->linger_deadline, DL_LINGER);
    } else if (c->in_flight) {
        if (!c->streaming) CAP(c->answer_deadline, DL_ANSWER);
        if (c->early && c->rp.in_message) {
            CAP(c->last_read + l->read_timeout_ms, DL_READ);
            if (!c->rp.stream_body) CAP(c->body_deadline, DL_BODY);
        }
    } else if (c->rp.in_message) {
        CAP(c->last_read + l->read_timeout_ms, DL_READ);
        if (!c->rp.head_done) CAP(c->head_deadline, DL_HEAD);
        else if (!c->rp.stream_body) CAP(c->body_deadline, DL_BODY);
    } else if (!c->queued_seen) {
        CAP(c->grace_deadline, DL_GRACE);
        CAP(c->requests ? c->idle_since + l->keepalive_timeout_ms : c->head_deadline, DL_IDLE);
    }
#undef CAP
    return d;
}

static void on_timeout(uv_timer_t *t);

/* Arm the timer for the deadline that holds now. It moves only when the deadline comes sooner
 * than the timer fires: a later one is found when it fires, so that progress (a read, a write)
 * costs no timer operation. */
static void conn_arm(gw_conn *c) {
    if (c->closing) return;
    size_t q = queued(c);
    if (q == 0) c->queued_seen = 0;
    else if (!c->queued_seen) c->queued_seen = q, c->send_progress = now_ms(c);
    int why;
    uint64_t d = conn_deadline(c, &why);
    if (why == DL_NONE) return;
    if (!uv_is_active((uv_handle_t *)&c->timer) || d < c->timer_due) {
        uint64_t now = now_ms(c);
        c->timer_due = d;
        uv_timer_start(&c->timer, on_timeout, d > now ? d - now : 0, 0);
    }
}

static void on_timeout(uv_timer_t *t) {
    gw_conn *c = t->data;
    uint64_t now = now_ms(c);
    size_t q = queued(c);
    if (c->queued_seen && q < c->queued_seen) { /* the client took some: progress */
        c->queued_seen = q ? q : 0;
        c->send_progress = now;
    }
    int why;
    uint64_t d = conn_deadline(c, &why);
    if (why == DL_NONE) return;
    if (now < d) { /* moved later since the timer was armed */
        c->timer_due = d;
        uv_timer_start(&c->timer, on_timeout, d - now, 0);
        return;
    }
    switch (why) {
    case DL_SEND: log_debug("%s: client stopped reading; closing", c->remote); conn_close(c); return;
    case DL_LINGER: log_debug("%s: peer did not close after the last response", c->remote); conn_close(c); return;
    case DL_IDLE:
    case DL_GRACE: conn_end(c); return;
    case DL_HEAD: conn_fail(c, 408, "request head timed out"); return;
    case DL_READ:
    case DL_BODY:
        conn_abort_request(c); /* one handed over early lets go first */
        conn_fail(c, 408, c->rp.head_done ? "request body timed out" : "request head timed out");
        return;
    case DL_ANSWER:
        log_warn("request %s %s %.*s: no answer within its deadline (handler_timeout or the route's timeout); 504",
                 c->req.id, c->req.method, (int)c->req.path_len, c->req.path);
        conn_abort_request(c);
        conn_fail(c, 504, "handler timed out");
        return;
    }
}

/* ---- closing ---- */

static void conn_free(gw_conn *c) {
    if (c->ready.queued) {
        ready_cancel(&c->srv->ready, &c->ready);
        conn_complete(c, GW_END_GONE);
        conn_abort_request(c);
    }
    request_parser_free(&c->rp);
    buf_free(&c->pending);
    buf_free(&c->out);
    gw_server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    bool refused = c->refused;
    free(c);
    server_conn_freed(srv, refused);
}

static void on_timer_closed(uv_handle_t *h) {
    gw_conn *c = h->data;
    if (--c->open_handles == 0) conn_free(c);
}

static void on_transport_closed(gw_transport *t) {
    gw_conn *c = t->data;
    if (--c->open_handles == 0) conn_free(c);
}

/* The request's end, once, for the app's log phase. */
static void conn_complete(gw_conn *c, enum gw_end_how how) {
    if (!c->unlogged) return;
    c->unlogged = false;
    if (!c->srv->app.on_complete) return;
    gw_request_end e = {.status = c->sent_status, .how = how, .head_bytes = c->head_sent, .body_bytes = c->body_sent,
                        .duration_ns = uv_hrtime() - c->started_ns};
    c->srv->app.on_complete(&c->req, &e, c->srv->app.data);
}

/* The app lets go of the request in flight: its answer would have nowhere to go. */
static void conn_abort_request(gw_conn *c) {
    if (!c->in_flight) return;
    c->in_flight = false;
    c->streaming = false;
    c->srv->app.on_abort(&c->req, c->srv->app.data);
}

static void on_abort_ready(gw_ready_item *it) {
    gw_conn *c = (gw_conn *)((char *)it - offsetof(gw_conn, ready));
    conn_complete(c, GW_END_GONE);
    conn_abort_request(c);
}

/* The app hears that its request is gone from the loop: never inside one of its own calls that
 * failed (a write to a client that left), and always before the memory goes, as the ready list
 * runs before libuv's close callbacks (conn_free makes sure of it all the same). */
void conn_close(gw_conn *c) {
    if (c->closing) return;
    c->closing = true;
    ready_cancel(&c->srv->ready, &c->ready);
    if (c->in_flight) ready_push(&c->srv->ready, &c->ready, on_abort_ready);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    transport_close(tr(c));
}

gw_conn *conn_next(gw_conn *c) {
    return c->next;
}

/* No more requests on this connection: close it, but only once what it was sent has gone out.
 * Closing at once would drop the unsent queue, cutting an answer the client is still reading. */
static void conn_end(gw_conn *c) {
    if (c->lingering || c->closing) return; /* already on its way out */
    if (queued(c) > 0) conn_linger(c);
    else conn_close(c);
}

/* Nothing to receive, answer or send: wait for the next request for keepalive_timeout. */
static void conn_set_idle(gw_conn *c) {
    c->idle_since = now_ms(c);
    conn_arm(c);
}

void conn_drain(gw_conn *c, uint64_t min_idle_ms) {
    c->close_after = true;
    /* A request being received or answered finishes first: its answer says Connection: close and
     * ends the connection. Requests pipelined behind are not parsed any more (close_after), so they
     * do not keep it open. */
    if (c->in_flight || c->rp.in_message || c->lingering || c->closing) return;
    uint64_t idle = uv_now(c->srv->loop) - c->idle_since;
    if (queued(c) > 0 || idle >= min_idle_ms) {
        conn_end(c);
        return;
    }
    /* Just used: its client may have sent the next request already. One that arrives in the grace
     * is answered (with Connection: close); on_timeout closes the connection if none does. */
    c->grace_deadline = c->idle_since + min_idle_ms;
    conn_arm(c);
}

static void on_shutdown(gw_transport *t, int status) {
    gw_conn *c = t->data;
    if (c->closing) return;
    /* Everything is sent: wait briefly for the peer's FIN, unless it has come or nothing more can. */
    if (status < 0 || c->peer_eof || c->nothing_more) {
        conn_close(c);
        return;
    }
    c->linger_deadline = now_ms(c) + LINGER_MS;
    conn_arm(c);
}

/* Stop taking requests: FIN our side once the output is out, then wait briefly for the peer. */
static void conn_linger(gw_conn *c) {
    if (c->lingering || c->closing) return;
    c->lingering = true;
    if (!queued(c)) c->linger_deadline = now_ms(c) + LINGER_MS; /* else once the FIN is out */
    conn_arm(c);
    if (transport_shutdown(tr(c)) < 0) conn_close(c);
}

/* ---- writing ---- */

static void conn_start_reading(gw_conn *c) {
    c->read_stopped = false;
    transport_read_start(tr(c));
}

/* Parse what is pending from the loop, not from the caller's stack. */
static void on_ready(gw_ready_item *it) {
    gw_conn *c = (gw_conn *)((char *)it - offsetof(gw_conn, ready));
    conn_process(c);
}

static void conn_schedule(gw_conn *c) {
    if (c->pending_off < c->pending.len || c->close_after) ready_push(&c->srv->ready, &c->ready, on_ready);
}

static void on_write_done(gw_transport *t, int status) {
    gw_conn *c = t->data;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* The answer is out: a send timeout becomes the keep-alive idle timeout again (while an answer
     * streams, there is nothing to wait for until its next piece). */
    if (queued(c) == 0 && !c->in_flight && !c->rp.in_message && !c->lingering) conn_set_idle(c);
    else conn_arm(c);
    if (c->want_writable && queued(c) < STREAM_LOW) {
        c->want_writable = false;
        c->srv->app.on_writable(&c->req, c->srv->app.data);
        if (c->closing) return;
    }
    if (c->write_blocked && queued(c) < MAX_QUEUED_OUTPUT / 2) {
        c->write_blocked = false;
        if (c->read_stopped) conn_start_reading(c);
        conn_schedule(c);
    }
}

/* Format and write an answer's head (and its body, when it has one whole). */
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
    unsigned n = (no_body || !resp->body || resp->body_len == 0) ? 1 : 2;
    c->sent_status = resp->status;
    c->head_sent += c->out.len;
    if (n == 2) c->body_sent += resp->body_len;
    if (transport_write(tr(c), bufs, n) < 0) {
        conn_close(c);
        return;
    }
    if (c->out.cap > KEEP_BUF) buf_free(&c->out);
    /* A client that does not read its answers must not make us buffer without end. */
    if (queued(c) > MAX_QUEUED_OUTPUT) c->write_blocked = true;
}

static gw_conn *conn_of_request(gw_request *req) {
    return (gw_conn *)((char *)req - offsetof(gw_conn, req));
}

/* Whether the answer about to go out may leave the connection open: not when a body the app did
 * not wait for is still arriving (we would have to read it all first), nor after one refused. */
static bool answer_keeps_alive(gw_conn *c) {
    /* A body still arriving, or one refused for its size (413, as nginx closes after it). */
    if (c->rp.in_message || (!c->rp.stream_body && request_parser_body_too_large(&c->rp))) c->close_after = true;
    return c->req.keep_alive && !c->close_after;
}

/* The answer is all handed to the transport: on to the next request, or out. */
static void request_finished(gw_conn *c, bool keep_alive) {
    conn_complete(c, GW_END_DONE);
    c->in_flight = c->streaming = c->early = c->want_writable = false;
    if (c->closing) return;
    if (c->body_paused) { /* the rest of a streamed body that was not read: the connection ends */
        c->body_paused = false;
        conn_start_reading(c);
    }
    if (!keep_alive) {
        /* The client said this request was its last and all of it is read: no input can turn our
         * close into a reset, so there is no FIN to wait for (nginx lingers only when input may
         * follow too), and a burst of one-request clients holds no descriptor past its answer.
         * When we chose to close (a drain, a body left unread), input may follow: we linger. */
        c->nothing_more = !c->req.keep_alive && !c->rp.in_message && c->pending.len == c->pending_off;
        conn_linger(c);
        return;
    }
    request_parser_trim(&c->rp);
    /* While the answer is still going out, the deadline is the send's; then keep-alive. */
    conn_set_idle(c);
    if (c->read_stopped && !c->write_blocked) conn_start_reading(c);
    conn_schedule(c);
}

void server_respond(gw_request *req, const gw_response *resp) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || c->closing || c->streaming) return;
    char busy_body[RESPONSE_ERROR_BUF];
    gw_response busy;
    if (resp->body_len > BUDGET_FREE_BODY && !budget_allows(resp->body_len)) {
        /* Were the client slow, all of it could wait in memory: not past the worker's budget. */
        busy = response_error(503, "server busy", c->req.id, busy_body);
        resp = &busy;
    }
    bool keep_alive = answer_keeps_alive(c);
    conn_send(c, resp, keep_alive);
    request_finished(c, keep_alive);
}

void server_set_answer_timeout(gw_request *req, uint64_t ms) {
    gw_conn *c = conn_of_request(req);
    c->answer_deadline = ms ? now_ms(c) + ms : 0;
    conn_arm(c);
}

/* ---- streamed answers ---- */

int server_respond_head(gw_request *req, const gw_response *resp, int64_t body_length) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || c->closing || c->streaming) return UV_ECANCELED;
    gw_response head = *resp;
    head.body = NULL;
    head.body_len = body_length >= 0 ? (size_t)body_length : 0;
    bool keep_alive = answer_keeps_alive(c);
    c->discard_body = req->is_head || resp->status < 200 || resp->status == 204 || resp->status == 304;
    if (body_length >= 0) head.framing = FRAME_LENGTH;
    else if (req->http_minor >= 1) head.framing = FRAME_CHUNKED;
    else head.framing = FRAME_CLOSE, keep_alive = false; /* HTTP/1.0: the end of the body is the close */
    c->chunked_out = head.framing == FRAME_CHUNKED && !c->discard_body;
    c->stream_keep_alive = keep_alive;
    c->streaming = true;
    conn_send(c, &head, keep_alive);
    if (c->closing) return UV_ECONNRESET;
    return 0;
}

static int stream_queue_state(gw_conn *c) {
    conn_arm(c); /* a send deadline while the client is behind */
    if (queued(c) < STREAM_HIGH) return 0;
    c->want_writable = true;
    return 1;
}

int server_write_body(gw_request *req, const char *data, size_t len) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || !c->streaming || c->closing) return UV_ECANCELED;
    if (c->discard_body || len == 0) return 0;
    c->body_sent += len;
    int r;
    if (c->chunked_out) {
        char size[20];
        uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)snprintf(size, sizeof size, "%zx\r\n", len)),
                            uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
        r = transport_write(tr(c), bufs, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        r = transport_write(tr(c), &b, 1);
    }
    if (r < 0) {
        conn_close(c); /* the app hears of it by the return value, and by on_abort from the loop */
        return r;
    }
    return stream_queue_state(c);
}

void server_end_body(gw_request *req) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || !c->streaming || c->closing) return;
    if (c->chunked_out) {
        uv_buf_t last = uv_buf_init("0\r\n\r\n", 5);
        if (transport_write(tr(c), &last, 1) < 0) {
            conn_close(c);
            return;
        }
    }
    request_finished(c, c->stream_keep_alive);
}

void server_abort_body(gw_request *req) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || c->closing) return;
    conn_complete(c, GW_END_CUT);
    c->in_flight = false;
    log_info("request %s: the answer could not be completed; closing the connection", c->req.id);
    conn_close(c);
}

/* ---- request bodies still arriving ---- */

/* A client that waits for "100 Continue" before sending its body (curl does for large ones) gets
 * it once the app wants the body: never for a request answered without it (401, 413). */
void server_body_want(gw_request *req) {
    gw_conn *c = conn_of_request(req);
    c->rp.undecided = false; /* buffered, within max_body_size from now on */
    if (!c->rp.expect_continue || c->continue_sent || !c->rp.in_message || c->closing) return;
    c->continue_sent = true;
    static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
    if (transport_write(tr(c), &b, 1) < 0) conn_close(c);
}

void server_body_stream(gw_request *req) {
    gw_conn *c = conn_of_request(req);
    c->rp.stream_body = true;
    budget_release(&c->rp.body_charged); /* read in pieces, within BODY_HIGH: not the budget's */
    server_body_want(req);
}

bool server_body_too_large(gw_request *req) {
    return request_parser_body_too_large(&conn_of_request(req)->rp);
}

long server_body_peek(gw_request *req, const char **data, bool *ended) {
    gw_conn *c = conn_of_request(req);
    if (!c->in_flight || c->closing) return UV_ECANCELED;
    request_parser *rp = &c->rp;
    size_t avail = rp->body.len - rp->body_off;
    *data = rp->body.data + rp->body_off;
    *ended = avail == 0 && (req->body_complete || !c->early);
    return (long)avail;
}

void server_body_consume(gw_request *req, size_t n) {
    gw_conn *c = conn_of_request(req);
    request_parser *rp = &c->rp;
    rp->body_off += n;
    if (rp->body_off == rp->body.len) rp->body.len = rp->body_off = 0;
    else if (rp->body_off > BODY_HIGH) { /* keep the buffer from creeping */
        buf_consume(&rp->body, rp->body_off);
        rp->body_off = 0;
    }
    if (c->body_paused && rp->body.len - rp->body_off < BODY_HIGH / 2 && !c->closing) {
        c->body_paused = false;
        conn_start_reading(c);
    }
}

/* A response made by the server itself (errors found before the app saw the request). */
static void conn_fail(gw_conn *c, int status, const char *message) {
    if (c->req.id == NULL) server_new_request_id(c->srv, c->id);
    const char *id = c->req.id ? c->req.id : c->id;
    char body[RESPONSE_ERROR_BUF];
    gw_response r = response_error(status, message, id, body);
    log_debug("%s: %d %s", c->remote, status, message); /* client-caused: not worth a line each at info */
    c->req.http_minor = 1;
    c->req.is_head = false;
    c->req.remote = c->remote;
    c->req.id = id;
    c->unlogged = true;
    conn_send(c, &r, false);
    conn_complete(c, GW_END_DONE);
    conn_linger(c);
}

/* ---- parsing ---- */

/* The first byte of a request: its head is due within header_timeout (a connection's first, of
 * the accept), a buffered body within body_timeout of it. */
static void on_request_begin(void *owner) {
    gw_conn *c = owner;
    const gw_limits *l = &c->srv->limits;
    memset(&c->req, 0, sizeof c->req);
    c->started_ns = uv_hrtime();
    c->head_sent = c->body_sent = 0;
    c->sent_status = 0;
    c->last_read = now_ms(c);
    if (c->requests++ > 0) c->head_deadline = l->header_timeout_ms ? c->last_read + l->header_timeout_ms : 0;
    c->body_deadline = l->body_timeout_ms ? c->last_read + l->body_timeout_ms : 0;
    c->grace_deadline = 0;
    conn_arm(c);
}

static const request_parser_events parser_events = {
    .on_begin = on_request_begin,
};

/* The gw_request the app gets, from what the parser holds. false: it was refused (answered). */
static bool conn_build(gw_conn *c) {
    if (c->rp.upgrade) c->close_after = true;
    c->req.remote = c->remote;
    int status = request_parser_build(&c->rp, &c->req, c->id);
    if (!c->id[0]) server_new_request_id(c->srv, c->id);
    c->req.id = c->id;
    if (status) conn_fail(c, status, status == 400 ? "bad request" : "out of memory");
    return status == 0;
}

/* Feed bytes to the parser. A request is built once it is complete, or once its head is and its
 * body is still to come (PARSE_HEAD): waiting for a large body before the app sees the request
 * would hold it all in memory, and a route that streams its uploads must see it at once. For a
 * request handed over early, the bytes are its body (PARSE_REQUEST: it is complete). */
static int conn_parse(gw_conn *c, const char *data, size_t len, size_t *used) {
    enum parse_outcome o = request_parser_execute(&c->rp, data, len, used);
    if (o == PARSE_CLOSE) {
        conn_close(c);
        return PARSE_FAILED;
    }
    if (o == PARSE_FAILED) {
        const char *message;
        int status = request_parser_status(&c->rp, &message);
        conn_abort_request(c); /* one handed over early lets go before the error answer */
        conn_fail(c, status, message);
        return PARSE_FAILED;
    }
    if (c->in_flight) return o;
    bool head_only = o == PARSE_MORE && request_parser_expects_body(&c->rp);
    if (o != PARSE_REQUEST && !head_only) return o;
    if (!conn_build(c)) return PARSE_FAILED;
    c->req.body_complete = !head_only;
    return head_only ? PARSE_HEAD : PARSE_REQUEST;
}

static void conn_dispatch(gw_conn *c, bool early) {
    c->in_flight = true;
    c->unlogged = true;
    c->early = early;
    c->continue_sent = false;
    uint64_t ms = c->srv->limits.handler_timeout_ms;
    c->answer_deadline = ms ? now_ms(c) + ms : 0;
    conn_arm(c);
    c->srv->app.on_request(&c->req, c->srv->app.data);
}

/* Body bytes of a request handed over early. */
static void conn_body_bytes(gw_conn *c, const char *data, size_t n) {
    request_parser *rp = &c->rp;
    c->last_read = now_ms(c);
    size_t used = 0;
    int o = conn_parse(c, data, n, &used);
    if (o == PARSE_FAILED) return;
    if (o == PARSE_REQUEST) { /* the body is complete: what follows is the next request */
        c->req.body = rp->body.data ? rp->body.data + rp->body_off : "";
        c->req.body_len = rp->body.len - rp->body_off;
        c->req.body_complete = true;
        conn_arm(c);
        if (used < n && buf_append(&c->pending, data + used, n - used)) {
            conn_close(c);
            return;
        }
    } else if (!rp->stream_body) {
        return; /* buffered: the app hears of it once it is complete */
    }
    if (rp->stream_body && rp->body.len - rp->body_off > BODY_HIGH && !c->body_paused) {
        c->body_paused = true; /* the app reads slower than the client sends */
        transport_read_stop(tr(c));
    }
    c->srv->app.on_body(&c->req, c->srv->app.data);
}

/* Parse and dispatch what is pending: one request, then the next from the ready list once it is
 * answered. */
static void conn_process(gw_conn *c) {
    if (!c->in_flight && !c->closing && !c->lingering && !c->write_blocked && !c->close_after &&
        c->pending_off < c->pending.len) {
        size_t used = 0;
        int o = conn_parse(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, &used);
        c->pending_off += used;
        if (c->pending_off == c->pending.len) {
            c->pending_off = 0;
            buf_reset(&c->pending, KEEP_BUF);
        }
        if (o == PARSE_REQUEST || o == PARSE_HEAD) conn_dispatch(c, o == PARSE_HEAD);
    }
    if (c->close_after && !c->in_flight && !c->rp.in_message) conn_end(c);
}

/* The client sent FIN while answers are still queued for it: it may well still be reading them
 * (a half-close), so they go out whole before we close. It sends nothing more: a request in flight
 * is aborted as for any client that hangs up, and one not parsed yet or half received is dropped. */
static void on_peer_half_close(gw_conn *c) {
    c->peer_eof = true; /* the FIN lingering waits for is here: on_shutdown closes at once */
    transport_read_stop(tr(c));
    conn_complete(c, GW_END_GONE);
    conn_abort_request(c);
    conn_linger(c);
}

static void on_read_end(gw_transport *t, int status) {
    gw_conn *c = t->data;
    if (status == UV_EOF && queued(c) > 0) {
        on_peer_half_close(c);
        return;
    }
    if (status != UV_EOF) log_debug("%s: read: %s", c->remote, uv_strerror(status));
    conn_close(c); /* a request in flight is aborted: the client is gone */
}

static void on_read(gw_transport *t, const char *data, size_t n) {
    gw_conn *c = t->data;
    if (c->lingering || c->closing) return;

    if (c->in_flight && c->early && c->rp.in_message) {
        conn_body_bytes(c, data, n);
        return;
    }
    if (c->in_flight || c->write_blocked || c->pending_off < c->pending.len) {
        if (buf_append(&c->pending, data, n)) {
            conn_close(c);
            return;
        }
        /* A client far ahead of us: stop reading until we catch up. */
        const gw_limits *l = &c->srv->limits;
        if (c->write_blocked || c->pending.len > l->max_header_size + l->max_body_size + sizeof c->srv->read_slab) {
            transport_read_stop(t);
            c->read_stopped = true;
        }
        if (!c->in_flight && !c->write_blocked) conn_schedule(c);
        return;
    }

    /* The common case: parse straight from the read buffer, keep only what follows a request. */
    c->last_read = now_ms(c); /* progress: the read deadline is counted from here (conn_deadline) */
    size_t used = 0;
    int o = conn_parse(c, data, n, &used);
    if (o == PARSE_HEAD) { /* every byte was taken: the head, and what came of the body */
        conn_dispatch(c, true);
        return;
    }
    if (o != PARSE_REQUEST) return;
    if (used < n && buf_append(&c->pending, data + used, n - used)) {
        conn_close(c);
        return;
    }
    conn_dispatch(c, false);
}

static const gw_transport_events conn_events = {
    .on_read = on_read,
    .on_read_end = on_read_end,
    .on_write_done = on_write_done,
    .on_shutdown = on_shutdown,
    .on_closed = on_transport_closed,
};

bool conn_accept(gw_server *srv, bool refused) {
    gw_conn *c = calloc(1, sizeof *c);
    if (!c) return false;
    c->srv = srv;
    c->refused = refused;
    srv->nrefused += refused;
    tcp_init(&c->tcp, srv->loop, &conn_events, c, srv->read_slab, sizeof srv->read_slab);
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (tcp_accept(&c->tcp, (uv_stream_t *)&srv->listener) < 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
        transport_close(tr(c));
        return true;
    }
    request_parser_init(&c->rp, &srv->limits, &parser_events, c);
    tcp_peer_name(&c->tcp, c->remote, sizeof c->remote);
    uint64_t head_ms = srv->limits.header_timeout_ms; /* its first request, or out; 0: no deadline */
    c->head_deadline = head_ms ? now_ms(c) + head_ms : 0;
    conn_set_idle(c);
    conn_start_reading(c);
    /* Answered before it asks: an HTTP client takes an answer that comes early, and lingering
     * reads (and drops) its request so that the close cannot turn into a reset. */
    if (refused) conn_fail(c, 503, "too many connections");
    return true;
}

/* The worker's memory budget ran short: a client whose queued output has not moved for
 * STALLED_MS is not reading, and what it holds goes back. */
void conn_cut_stalled(gw_server *srv) {
    uint64_t now = uv_now(srv->loop);
    for (gw_conn *c = srv->conns; c; c = c->next) {
        size_t q = queued(c);
        if (c->closing || q < STALLED_MIN) continue;
        if (!c->queued_seen || q < c->queued_seen) { /* progress since last seen */
            c->queued_seen = q;
            c->send_progress = now;
        } else if (now - c->send_progress >= STALLED_MS) {
            log_info("%s: cut: %zu bytes queued and unread for %llu ms while max_buffered_size is reached",
                     c->remote, q, (unsigned long long)(now - c->send_progress));
            conn_close(c);
        }
    }
}
