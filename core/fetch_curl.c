/* The libcurl backend: https:// and whatever the native client does not speak, on the same loop
 * through libcurl's multi_socket API (after curl's docs/examples/multi-uv.c, with its gaps closed):
 * - one multi handle for the loop's life: it is the connection cache and the DNS cache;
 * - one non-repeating uv_timer for CURLMOPT_TIMERFUNCTION;
 * - a uv_poll per socket, found by fd; its life ends in CURLOPT_CLOSESOCKETFUNCTION, because curl
 *   may close a socket before telling us CURL_POLL_REMOVE and the kernel reuses fds at once;
 * - libcurl's callbacks only record what happened (a head, body bytes): the facade hears of it
 *   after curl_multi_socket_action has returned, so no caller code, and no libcurl call, ever runs
 *   inside a libcurl callback.
 * DNS never blocks the loop: Debian's libcurl resolves in a thread (AsynchDNS). Deadlines are the
 * facade's: libcurl gets none of its own. */
#define _GNU_SOURCE /* memmem */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fetch_internal.h"
#include "http_headers.h"
#include "log.h"

#define MAX_RESPONSE_HEAD (1u << 20)
#define MAX_SPARE_EASY 256
#define STREAM_BUFFER (256u << 10) /* a streamed answer waiting for its reader: then libcurl pauses */

typedef struct curl_backend curl_backend;

typedef struct sock_watch {
    uv_poll_t poll;
    curl_backend *b;
    curl_socket_t fd;
} sock_watch;

typedef struct curl_xfer {
    CURL *easy;
    curl_backend *b;
    gw_transfer *t;
    struct curl_slist *headers;
    gw_buf head;    /* the header block of the answer being received */
    gw_buf pending; /* a streamed body not yet handed on */
    size_t pending_off;
    struct curl_xfer *spare_next, *dirty_next;
    gw_ready_item wake; /* resume after a pause, from the loop */
    int status;
    bool head_done;   /* the final head is complete */
    bool head_told;   /* ... and reported */
    bool dirty;       /* something to report after curl returns */
    bool complete;    /* libcurl finished: report once pending is out */
    CURLcode result;
    bool paused_recv; /* libcurl holds the answer (CURL_WRITEFUNC_PAUSE) */
    int fail_kind;    /* a failure the facade found in a callback (a buffered answer without room) */
    bool paused_send; /* the streamed body had nothing ready (CURL_READFUNC_PAUSE) */
    bool reader_paused; /* the caller asked to pause */
    bool keeps;       /* may put its connection back in the pool when it ends */
    bool plain_get;   /* the handle's last transfer was a GET without body: its options still fit */
    bool used;
    bool got_bytes;
    char errbuf[CURL_ERROR_SIZE];
} curl_xfer;

struct curl_backend {
    fetch_backend base;
    gw_fetch *f;
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    gw_ready ready;
    sock_watch **watches; /* indexed by fd */
    size_t nwatches;
    size_t active;
    curl_xfer *spare;
    size_t nspare;
    curl_xfer *dirty; /* touched inside libcurl's callbacks: reported after it returns */
    bool closing;
};

static void backend_run(curl_backend *b, curl_socket_t fd, int flags);
static void on_wake(gw_ready_item *it);

/* ---- sockets and timer ---- */

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_watch *w = p->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    backend_run(w->b, w->fd, flags);
}

static void on_curl_timeout(uv_timer_t *t) {
    backend_run(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    curl_backend *b = userp;
    if (timeout_ms < 0) uv_timer_stop(&b->timer);
    else uv_timer_start(&b->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static sock_watch *watch_for(curl_backend *b, curl_socket_t fd, bool create) {
    if (fd < 0) return NULL;
    if ((size_t)fd < b->nwatches && b->watches[fd]) return b->watches[fd];
    if (!create) return NULL;
    if ((size_t)fd >= b->nwatches) {
        size_t n = b->nwatches ? b->nwatches : 64;
        while (n <= (size_t)fd) n *= 2;
        sock_watch **w = realloc(b->watches, n * sizeof *w);
        if (!w) return NULL;
        memset(w + b->nwatches, 0, (n - b->nwatches) * sizeof *w);
        b->watches = w;
        b->nwatches = n;
    }
    sock_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (uv_poll_init_socket(b->loop, &w->poll, fd) < 0) {
        free(w);
        return NULL;
    }
    fetch_handle_opened(b->f);
    w->b = b;
    w->fd = fd;
    w->poll.data = w;
    b->watches[fd] = w;
    return w;
}

static void on_watch_closed(uv_handle_t *h) {
    sock_watch *w = h->data;
    gw_fetch *f = w->b->f;
    free(w);
    fetch_handle_closed(f);
}

static void watch_close(curl_backend *b, curl_socket_t fd) {
    sock_watch *w = watch_for(b, fd, false);
    if (!w) return;
    b->watches[fd] = NULL;
    uv_close((uv_handle_t *)&w->poll, on_watch_closed); /* stops polling fd at once */
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)e;
    (void)socketp;
    curl_backend *b = userp;
    if (what == CURL_POLL_REMOVE) {
        sock_watch *w = watch_for(b, fd, false);
        if (w) uv_poll_stop(&w->poll); /* closed in on_close_socket, or reused for this fd */
        return 0;
    }
    sock_watch *w = watch_for(b, fd, true);
    if (!w) {
        log_error("fetch: cannot watch socket %d", (int)fd);
        return -1;
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&w->poll, events, on_poll);
    return 0;
}

static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
    curl_xfer *x = clientp;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    if (fd != CURL_SOCKET_BAD) fetch_count_connection(x->b->f);
    else if (errno == EMFILE || errno == ENFILE) x->fail_kind = FETCH_ERR_NO_FDS; /* not "refused" */
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd) {
    watch_close(clientp, fd);
    return close(fd);
}

/* ---- libcurl's callbacks: record, report later ---- */

static void mark_dirty(curl_xfer *x) {
    if (x->dirty) return;
    x->dirty = true;
    x->dirty_next = x->b->dirty;
    x->b->dirty = x;
}

static int status_of(const char *line, size_t len) {
    /* "HTTP/1.1 200 OK": the three digits after the first space */
    const char *sp = memchr(line, ' ', len);
    if (!sp || (size_t)(sp - line) + 4 > len) return 0;
    int s = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9') return 0;
        s = s * 10 + sp[i] - '0';
    }
    return s;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *userp) {
    curl_xfer *x = userp;
    size_t len = size * n;
    if (!x->t) return 0;
    x->got_bytes = true;
    fetch_progress(x->t);
    if (x->head_done) return len; /* trailers: never mixed into the answer's headers */
    /* A new status line: an earlier head was a 1xx (or a redirect libcurl follows). */
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        x->head.len = 0;
        x->status = status_of(ptr, len);
    }
    if (len <= 2 && (ptr[0] == '\r' || ptr[0] == '\n')) { /* the end of a head */
        if (x->status >= 200 || x->status == 101) {
            x->head_done = true;
            mark_dirty(x);
        }
        return len;
    }
    if (x->head.len + len > MAX_RESPONSE_HEAD || buf_append(&x->head, ptr, len)) return 0;
    return len;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *userp) {
    curl_xfer *x = userp;
    size_t len = size * n;
    gw_transfer *t = x->t;
    if (!t) return 0;
    x->got_bytes = true;
    fetch_progress(t);
    if (!t->stream) { /* buffered: straight into the facade's buffer, within its limit */
        if ((x->fail_kind = fetch_answer_room(t, len))) return 0;
        buf_append(&t->answer.data, ptr, len); /* room is made */
        return len;
    }
    if (x->pending.len - x->pending_off >= STREAM_BUFFER || x->reader_paused) {
        x->paused_recv = true;
        return CURL_WRITEFUNC_PAUSE; /* libcurl keeps the bytes and stops reading */
    }
    if (buf_append(&x->pending, ptr, len)) return 0;
    mark_dirty(x);
    return len;
}

static void on_source_ready(void *arg);

static size_t on_read_body(char *out, size_t size, size_t n, void *userp) {
    curl_xfer *x = userp;
    gw_transfer *t = x->t;
    if (!t) return CURL_READFUNC_ABORT;
    const char *data;
    bool ended = false;
    long avail = t->source->peek(t->source, &data, &ended);
    if (avail < 0) return CURL_READFUNC_ABORT;
    if (avail == 0) {
        if (ended) {
            fetch_sent(t);
            return 0;
        }
        x->paused_send = true;
        t->source->want(t->source, on_source_ready, x);
        return CURL_READFUNC_PAUSE;
    }
    size_t take = (size_t)avail < size * n ? (size_t)avail : size * n;
    memcpy(out, data, take);
    t->source->consume(t->source, take);
    fetch_progress(t);
    return take;
}

/* Connected, the request about to be sent (libcurl 7.80 and later). */
static int on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port) {
    (void)conn_primary_ip, (void)conn_local_ip, (void)conn_primary_port, (void)conn_local_port;
    curl_xfer *x = userp;
    if (x->t) {
        fetch_connected(x->t);
        if (!x->t->source) fetch_sent(x->t);
    }
    return CURL_PREREQFUNC_OK;
}

/* ---- handles ---- */

static void easy_defaults(curl_backend *b, curl_xfer *x) {
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    /* A gateway goes where its config says, not where http_proxy says; and an explicit empty
     * proxy spares libcurl five getenv() calls per transfer. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, b);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
}

static curl_xfer *xfer_get(curl_backend *b) {
    curl_xfer *x = b->spare;
    if (x) {
        b->spare = x->spare_next;
        b->nspare--;
        return x;
    }
    x = calloc(1, sizeof *x);
    if (!x) return NULL;
    if (!(x->easy = curl_easy_init())) {
        free(x);
        return NULL;
    }
    x->b = b;
    easy_defaults(b, x);
    return x;
}

static void xfer_destroy(curl_xfer *x) {
    curl_easy_cleanup(x->easy);
    buf_free(&x->head);
    buf_free(&x->pending);
    free(x);
}

static void xfer_put(curl_backend *b, curl_xfer *x) {
    ready_cancel(&b->ready, &x->wake);
    if (x->dirty) { /* cancelled from another transfer's event: off the list before reuse */
        curl_xfer **pp = &b->dirty;
        while (*pp != x) pp = &(*pp)->dirty_next;
        *pp = x->dirty_next;
        x->dirty = false;
    }
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    buf_reset(&x->head, 4096);
    buf_reset(&x->pending, 65536);
    x->pending_off = 0;
    x->t = NULL;
    x->status = 0;
    x->head_done = x->head_told = x->complete = x->paused_recv = x->paused_send = false;
    x->reader_paused = x->got_bytes = false;
    x->result = CURLE_OK;
    x->fail_kind = 0;
    if (b->nspare >= MAX_SPARE_EASY || b->closing) {
        xfer_destroy(x);
        return;
    }
    x->spare_next = b->spare;
    b->spare = x;
    b->nspare++;
}

/* ---- pools (libcurl keeps the connections; these counts steer it) ---- */

/* How a new transfer should treat connections, as nginx's `keepalive N` does, where N is the
 * upstream's keepalive (or upstream_keepalive, which also bounds all upstreams together):
 * - Take an idle connection when one is there.
 * - Otherwise open one, and keep it after use only while fewer than N are kept (idle, or in use
 *   and going back); past N, the connection is closed after its request.
 * - With more transfers in flight than N and none idle, tell libcurl not to look for an idle
 *   connection (FRESH_CONNECT): it would walk every connection to the host, in use all of them,
 *   and a burst of thousands would make that O(n^2). */
static bool pool_choose(curl_backend *b, curl_xfer *x, fetch_pool *p) {
    long all = fetch_keepalive(b->f);
    size_t limit = p->keepalive >= 0 && p->keepalive < all ? (size_t)p->keepalive : (size_t)all;
    if (p->idle > 0) {
        x->keeps = true; /* it puts back the one it takes */
        p->idle--;
        p->keeping++;
        return false;
    }
    /* Only this pool's own count decides: an estimate another upstream's traffic left too high
     * must not take keep-alive away from this one. The bound over all upstreams is libcurl's. */
    x->keeps = p->keeping < limit;
    if (x->keeps) p->keeping++;
    return p->active > limit || b->active >= (size_t)all;
}

/* libcurl's MAXCONNECTS counts the connections in use too: with more transfers in flight than
 * it, each one ending would close the connection it just put back. Kept just above the transfers
 * in flight, it lets the pools work and still bounds the idle connections over all upstreams to
 * upstream_keepalive (past it libcurl closes the oldest idle connection). */
static void pool_bound(curl_backend *b) {
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)b->active + fetch_keepalive(b->f));
}

/* Whether libcurl kept the connection of a successful transfer: not when the server said it
 * would close it (an estimate: a server may still close an idle connection later). */
static bool connection_kept(const curl_xfer *x) {
    const char *h = x->head.data, *end = h + x->head.len;
    if (!h || x->head.len < 8) return false;
    bool kept = memcmp(h, "HTTP/1.0", 8) != 0; /* 1.0 closes unless it says keep-alive */
    for (const char *p = memchr(h, '\n', x->head.len); p && end - p > 12; p = memchr(p + 1, '\n', (size_t)(end - p - 1))) {
        if (strncasecmp(p + 1, "connection:", 11)) continue;
        const char *v = p + 12, *eol = memchr(v, '\n', (size_t)(end - v));
        size_t n = eol ? (size_t)(eol - v) : (size_t)(end - v);
        if (n && v[n - 1] == '\r') n--;
        if (header_list_has(v, n, "close", 5)) return false; /* a token, in any case */
        if (header_list_has(v, n, "keep-alive", 10)) kept = true;
    }
    return kept;
}

static void pool_end(curl_backend *b, curl_xfer *x, fetch_pool *p, bool reusable) {
    b->active--;
    if (x->keeps) {
        p->keeping--;
        if (reusable) p->idle++;
    }
    x->keeps = false;
    pool_bound(b);
}

/* ---- attempts ---- */

static bool append_line(curl_xfer *x, const char *line) {
    struct curl_slist *l = curl_slist_append(x->headers, line);
    if (!l) return false;
    x->headers = l;
    return true;
}

/* The call's own lines are one block; libcurl wants them one by one. */
static bool append_block(curl_xfer *x, const gw_buf *block) {
    const char *p = block->data, *end = p + block->len;
    char line[8192];
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        size_t n = (size_t)(eol - p);
        if (n >= sizeof line) return false;
        memcpy(line, p, n);
        line[n] = '\0';
        if (!append_line(x, line)) return false;
        p = eol + 2;
    }
    return true;
}

static void set_method(CURL *e, curl_xfer *x, gw_transfer *t, bool plain_get) {
    const char *m = t->method;
    if (t->source) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_body);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)t->source->length);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else if (t->has_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->req_body.len);
        /* makes it a POST; the transfer keeps the bytes for as long as libcurl may send them */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->req_body.data ? t->req_body.data : "");
        if (strcmp(m, "POST")) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (!plain_get) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
}

static int curl_start(gw_transfer *t, bool fresh) {
    curl_backend *b = (curl_backend *)t->backend;
    if (b->closing) return UV_ECANCELED;
    curl_xfer *x = xfer_get(b);
    if (!x) return UV_ENOMEM;
    CURL *e = x->easy;
    x->t = t;
    x->errbuf[0] = '\0';
    /* A handle is reused as it is from one plain GET to the next (the proxy's case); any other
     * method starts from a reset, since method options interact in libcurl (a HEAD, then a GET,
     * then a PUT with a body sends no body in 7.88). */
    bool plain_get = !t->has_body && !t->source && strcmp(t->method, "GET") == 0;
    if (x->used && !(plain_get && x->plain_get)) {
        curl_easy_reset(e);
        easy_defaults(b, x);
    }
    x->used = true;
    x->plain_get = plain_get;
    curl_easy_setopt(e, CURLOPT_URL, t->target.data);
    set_method(e, x, t, plain_get);
    bool fresh_connect = pool_choose(b, x, t->up->pool) || fresh;
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, fresh_connect ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, x->keeps ? 0L : 1L);
    /* libcurl adds a catch-all Accept header unless told otherwise; no Accept means the same.
     * It would wait up to 1 s for "100 Continue" before a body: send at once. */
    bool ok = append_line(x, "Accept:") && ((!t->has_body && !t->source) || append_line(x, "Expect:"));
    for (size_t i = 0; ok && i < t->up->nlines; i++) ok = append_line(x, t->up->lines[i]);
    if (ok) ok = append_block(x, &t->lines);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    if (!ok || curl_multi_add_handle(b->multi, e) != CURLM_OK) {
        b->active++; /* pool_end undoes what pool_choose counted */
        pool_end(b, x, t->up->pool, false);
        xfer_put(b, x);
        return UV_ENOMEM;
    }
    b->active++;
    pool_bound(b);
    t->attempt = x;
    return 0;
}

static void curl_cancel(gw_transfer *t) {
    curl_xfer *x = t->attempt;
    curl_backend *b = x->b;
    x->t = NULL;
    curl_multi_remove_handle(b->multi, x->easy); /* closes a connection still in use */
    pool_end(b, x, t->up->pool, false);
    xfer_put(b, x);
}

/* ---- reporting, after libcurl has returned ---- */

static void head_of(const curl_xfer *x, gw_fetch_head *h) {
    *h = (gw_fetch_head){.status = x->status, .http_minor = 1, .block = x->head.data ? x->head.data : "",
                         .block_len = x->head.len, .content_length = -1};
    if (x->head.len >= 8 && memcmp(x->head.data, "HTTP/1.0", 8) == 0) h->http_minor = 0;
    h->no_body = x->status == 204 || x->status == 304 || strcmp(x->t->method, "HEAD") == 0;
    curl_off_t cl = -1;
    if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
        h->content_length = cl;
    /* The content type as a span of the block (the facade's callers keep offsets into it): the
     * value of the last Content-Type line, trimmed. */
    const char *p = x->head.data, *end = p + x->head.len;
    for (const char *line = p; line && line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol ? eol : end;
        if (stop - line > 13 && strncasecmp(line, "content-type:", 13) == 0) {
            const char *v = line + 13, *ve = stop;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            h->content_type = v;
            h->content_type_len = (size_t)(ve - v);
        }
        line = eol ? eol + 1 : NULL;
    }
}

static int error_kind(CURLcode code, const curl_xfer *x) {
    if (x->fail_kind) return x->fail_kind; /* found by the facade, inside a callback */
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return FETCH_ERR_TIMEOUT;
    case CURLE_COULDNT_CONNECT: return FETCH_ERR_REFUSED;
    case CURLE_COULDNT_RESOLVE_HOST: return FETCH_ERR_RESOLVE;
    case CURLE_FILESIZE_EXCEEDED: return FETCH_ERR_TOO_LARGE;
    case CURLE_GOT_NOTHING: return FETCH_ERR_EMPTY;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR: return FETCH_ERR_BODY;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE: return x->got_bytes ? FETCH_ERR_RESET : FETCH_ERR_EMPTY;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: return FETCH_ERR_BAD_RESPONSE;
    default: return FETCH_ERR_INTERNAL;
    }
}

/* Report what libcurl recorded for x. false: the transfer is gone (or waits on its reader). */
static bool report(curl_xfer *x) {
    gw_transfer *t = x->t;
    if (x->head_done && !x->head_told) {
        x->head_told = true;
        gw_fetch_head h;
        head_of(x, &h);
        if (!fetch_head(t, &h)) return false; /* it cancelled: curl_cancel ran */
    }
    while (x->pending_off < x->pending.len && !x->reader_paused) {
        bool pause;
        size_t n = x->pending.len - x->pending_off;
        const char *p = x->pending.data + x->pending_off;
        x->pending_off = x->pending.len;
        if (!fetch_body(t, p, n, &pause)) return false;
        if (pause) x->reader_paused = true;
    }
    if (x->pending_off == x->pending.len) x->pending.len = x->pending_off = 0;
    /* libcurl paused itself because the buffer filled inside one of its runs, and the reader took
     * it all since: nobody else would unpause it. */
    if (x->paused_recv && !x->reader_paused && x->pending.len == 0)
        ready_push(&x->b->ready, &x->wake, on_wake);
    return true;
}

static void finish(curl_backend *b, curl_xfer *x) {
    gw_transfer *t = x->t;
    CURLcode code = x->result != CURLE_OK ? x->result : CURLE_OK;
    long connects = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_multi_remove_handle(b->multi, x->easy);
    pool_end(b, x, t->up->pool, code == CURLE_OK && connection_kept(x));
    x->t = NULL;
    t->attempt = NULL;
    if (code == CURLE_OK) {
        fetch_done(t);
    } else {
        char detail[CURL_ERROR_SIZE + 32];
        if (x->fail_kind == FETCH_ERR_TOO_LARGE)
            snprintf(detail, sizeof detail, "over max_response_body (%zu bytes)", t->up->max_body);
        else if (x->fail_kind == FETCH_ERR_BUSY)
            snprintf(detail, sizeof detail, "over max_buffered_size");
        else if (x->fail_kind == FETCH_ERR_NO_FDS)
            snprintf(detail, sizeof detail, "no descriptor left for a connection");
        else
            snprintf(detail, sizeof detail, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
        fetch_failed(t, error_kind(code, x), detail, connects == 0, !x->got_bytes);
    }
    xfer_put(b, x);
}

/* Report every transfer touched inside libcurl, then the finished ones. */
static void backend_drain(curl_backend *b) {
    while (b->dirty) {
        curl_xfer *x = b->dirty;
        b->dirty = x->dirty_next;
        x->dirty = false;
        if (x->t && !x->complete) report(x);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(b->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        curl_xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x->result == CURLE_OK) x->result = msg->data.result;
        x->complete = true;
        /* A stream whose reader is paused keeps its last bytes: it finishes once they are read. */
        if (x->t && report(x) && !x->reader_paused) finish(b, x);
    }
}

static void backend_run(curl_backend *b, curl_socket_t fd, int flags) {
    int running;
    curl_multi_socket_action(b->multi, fd, flags, &running);
    backend_drain(b);
}

/* ---- pause and resume, from the loop ---- */

static void on_wake(gw_ready_item *it) {
    curl_xfer *x = (curl_xfer *)((char *)it - offsetof(curl_xfer, wake));
    curl_backend *b = x->b;
    if (!x->t) return;
    if (x->complete) {
        if (report(x) && !x->reader_paused) finish(b, x);
        return;
    }
    if (!report(x) || x->reader_paused) return;
    if (x->paused_recv || x->paused_send) {
        x->paused_recv = x->paused_send = false;
        curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may write what it held: recorded as usual */
        backend_drain(b);
    }
}

static void on_source_ready(void *arg) {
    curl_xfer *x = arg;
    ready_push(&x->b->ready, &x->wake, on_wake);
}

static void curl_pause(gw_transfer *t) {
    curl_xfer *x = t->attempt;
    x->reader_paused = true; /* the next write is refused with CURL_WRITEFUNC_PAUSE */
}

static void curl_resume(gw_transfer *t) {
    curl_xfer *x = t->attempt;
    x->reader_paused = false;
    ready_push(&x->b->ready, &x->wake, on_wake);
}

/* ---- the backend ---- */

static void on_timer_closed(uv_handle_t *h) {
    curl_backend *b = h->data;
    gw_fetch *f = b->f;
    free(b->watches);
    free(b);
    fetch_handle_closed(f);
}

static void on_ready_closed(gw_ready *r) {
    curl_backend *b = (curl_backend *)((char *)r - offsetof(curl_backend, ready));
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
}

static void curl_close(fetch_backend *base) {
    curl_backend *b = (curl_backend *)base;
    b->closing = true;
    while (b->spare) {
        curl_xfer *x = b->spare;
        b->spare = x->spare_next;
        xfer_destroy(x);
    }
    curl_multi_cleanup(b->multi); /* closes cached connections through on_close_socket */
    b->multi = NULL;
    for (size_t fd = 0; fd < b->nwatches; fd++) watch_close(b, (curl_socket_t)fd);
    ready_close(&b->ready, on_ready_closed);
}

static const fetch_backend_ops curl_ops = {
    .start = curl_start,
    .pause = curl_pause,
    .resume = curl_resume,
    .cancel = curl_cancel,
    .close = curl_close,
};

int fetch_curl_new(gw_fetch *f, fetch_backend **out) {
    curl_backend *b = calloc(1, sizeof *b);
    if (!b) return UV_ENOMEM;
    b->base.ops = &curl_ops;
    b->f = f;
    b->loop = fetch_loop(f);
    if (!(b->multi = curl_multi_init())) {
        free(b);
        return UV_ENOMEM;
    }
    uv_timer_init(b->loop, &b->timer);
    b->timer.data = b;
    ready_init(&b->ready, b->loop);
    fetch_handle_opened(f);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERDATA, b);
    pool_bound(b);
    *out = &b->base;
    return 0;
}
