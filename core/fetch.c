/* libcurl's multi_socket API on libuv (after curl's docs/examples/multi-uv.c, with its gaps closed):
 * - one multi handle for the loop's life: it is the connection cache and the DNS cache;
 * - one non-repeating uv_timer for CURLMOPT_TIMERFUNCTION;
 * - a uv_poll per socket, found by fd; its life ends in CURLOPT_CLOSESOCKETFUNCTION, because curl
 *   may close a socket before telling us CURL_POLL_REMOVE and the kernel reuses fds at once;
 * - completions are drained with curl_multi_info_read after curl_multi_socket_action returns, and
 *   only then handed to the owner, so owner code never runs inside a libcurl callback.
 * DNS never blocks the loop: Debian's libcurl resolves in a thread (AsynchDNS). */
#define _GNU_SOURCE /* memmem */
#include "fetch.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#define MAX_RESPONSE_BODY (64u << 20)
#define MAX_RESPONSE_HEAD (1u << 20)
#define MAX_SPARE_EASY 256

typedef struct sock_watch {
    uv_poll_t poll;
    gw_fetch *f;
    curl_socket_t fd;
} sock_watch;

struct gw_transfer {
    CURL *easy;
    gw_fetch *f;
    struct curl_slist *headers;
    gw_buf head; /* response header block */
    gw_buf body;
    gw_fetch_cb cb;
    void *data;
    gw_transfer *spare_next;
    int pool;
    bool keeps; /* may put its connection back in the pool when it ends */
    bool plain_get; /* the handle's last transfer was a GET without body: its options still fit */
    bool used;
    char errbuf[CURL_ERROR_SIZE];
};

/* What luagate knows of a connection pool, counted from the transfers it starts and ends, for
 * the choices libcurl cannot make well by itself (see pool_choose). libcurl keeps the real
 * connections; these counts are estimates, since a server may close an idle connection. */
typedef struct conn_pool {
    size_t active;  /* transfers in flight */
    size_t keeping; /* of those, the ones that will put their connection back */
    size_t idle;    /* connections put back and not taken again */
} conn_pool;

struct gw_fetch {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    sock_watch **watches; /* indexed by fd */
    size_t nwatches;
    size_t active;   /* transfers in flight, all pools */
    long max_idle;   /* upstream_keepalive: idle connections kept, per upstream and in all */
    conn_pool *pools; /* each upstream's, indexed by pool number (0: none) */
    size_t npools;
    long opened;
    gw_transfer *spare; /* finished transfers with their easy handles, ready for reuse */
    size_t nspare;
    bool closing;
};

static void fetch_drain(gw_fetch *f);
static void pool_bound(gw_fetch *f);
static bool pool_reserve(gw_fetch *f, int n);

/* ---- sockets and timer ---- */

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_watch *w = p->data;
    gw_fetch *f = w->f;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(f->multi, w->fd, flags, &running);
    fetch_drain(f);
}

static void on_curl_timeout(uv_timer_t *t) {
    gw_fetch *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    fetch_drain(f);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    gw_fetch *f = userp;
    if (timeout_ms < 0) uv_timer_stop(&f->timer);
    else uv_timer_start(&f->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static sock_watch *watch_for(gw_fetch *f, curl_socket_t fd, bool create) {
    if (fd < 0) return NULL;
    if ((size_t)fd < f->nwatches && f->watches[fd]) return f->watches[fd];
    if (!create) return NULL;
    if ((size_t)fd >= f->nwatches) {
        size_t n = f->nwatches ? f->nwatches : 64;
        while (n <= (size_t)fd) n *= 2;
        sock_watch **w = realloc(f->watches, n * sizeof *w);
        if (!w) return NULL;
        memset(w + f->nwatches, 0, (n - f->nwatches) * sizeof *w);
        f->watches = w;
        f->nwatches = n;
    }
    sock_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (uv_poll_init_socket(f->loop, &w->poll, fd) < 0) {
        free(w);
        return NULL;
    }
    w->f = f;
    w->fd = fd;
    w->poll.data = w;
    f->watches[fd] = w;
    return w;
}

static void on_watch_closed(uv_handle_t *h) {
    free(h->data);
}

static void watch_close(gw_fetch *f, curl_socket_t fd) {
    sock_watch *w = watch_for(f, fd, false);
    if (!w) return;
    f->watches[fd] = NULL;
    uv_close((uv_handle_t *)&w->poll, on_watch_closed); /* stops polling fd at once */
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)e;
    (void)socketp;
    gw_fetch *f = userp;
    if (what == CURL_POLL_REMOVE) {
        sock_watch *w = watch_for(f, fd, false);
        if (w) uv_poll_stop(&w->poll); /* closed in on_close_socket, or reused for this fd */
        return 0;
    }
    sock_watch *w = watch_for(f, fd, true);
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
    gw_fetch *f = clientp;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    if (fd != CURL_SOCKET_BAD) f->opened++;
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd) {
    watch_close(clientp, fd);
    return close(fd);
}

/* ---- transfers ---- */

static size_t on_body(char *ptr, size_t size, size_t n, void *userp) {
    gw_transfer *t = userp;
    size_t len = size * n;
    if (t->body.len + len > MAX_RESPONSE_BODY || buf_append(&t->body, ptr, len)) return 0;
    return len;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *userp) {
    gw_transfer *t = userp;
    size_t len = size * n;
    /* Keep only the last response's headers (after 100 Continue or redirects). */
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) t->head.len = 0;
    if (t->head.len + len > MAX_RESPONSE_HEAD || buf_append(&t->head, ptr, len)) return 0;
    return len;
}

int fetch_init(gw_fetch **out, uv_loop_t *loop, long max_idle) {
    gw_fetch *f = calloc(1, sizeof *f);
    if (!f) return UV_ENOMEM;
    f->loop = loop;
    f->multi = curl_multi_init();
    if (!f->multi) {
        free(f);
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    fetch_set_max_idle(f, max_idle);
    if (!pool_reserve(f, 0)) { /* pool 0, for URLs of no upstream, is always there */
        fetch_close(f);
        return UV_ENOMEM;
    }
    *out = f;
    return 0;
}

void fetch_set_max_idle(gw_fetch *f, long max_idle) {
    f->max_idle = max_idle > 0 ? max_idle : 256L;
    pool_bound(f);
}

/* The options that never change: set on a new handle, and again after a reset. */
static void easy_defaults(gw_fetch *f, gw_transfer *t) {
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    /* A gateway goes where its config says, not where http_proxy says; and an explicit empty
     * proxy spares libcurl five getenv() calls per transfer. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

static gw_transfer *transfer_new(gw_fetch *f) {
    gw_transfer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return NULL;
    }
    t->f = f;
    easy_defaults(f, t);
    return t;
}

static gw_transfer *transfer_get(gw_fetch *f) {
    gw_transfer *t = f->spare;
    if (!t) return transfer_new(f);
    f->spare = t->spare_next;
    f->nspare--;
    return t;
}

static void transfer_put(gw_fetch *f, gw_transfer *t) {
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    buf_reset(&t->head, 4096);
    buf_reset(&t->body, 16384);
    t->cb = NULL;
    t->data = NULL;
    if (f->nspare >= MAX_SPARE_EASY || f->closing) {
        curl_easy_cleanup(t->easy);
        buf_free(&t->head);
        buf_free(&t->body);
        free(t);
        return;
    }
    t->spare_next = f->spare;
    f->spare = t;
    f->nspare++;
}

/* Room for pool number n in the per-pool counters. */
static bool pool_reserve(gw_fetch *f, int n) {
    if ((size_t)n < f->npools) return true;
    size_t count = (size_t)n + 8;
    conn_pool *p = realloc(f->pools, count * sizeof *p);
    if (!p) return false;
    memset(p + f->npools, 0, (count - f->npools) * sizeof *p);
    f->pools = p;
    f->npools = count;
    return true;
}

/* How a new transfer should treat connections, as nginx's `keepalive N` does, where N is the
 * upstream's keepalive (or upstream_keepalive, which also bounds all upstreams together):
 * - Take an idle connection when one is there.
 * - Otherwise open one, and keep it after use only while fewer than N are kept (idle, or in use
 *   and going back); past N, the connection is closed after its request.
 * - With more transfers in flight than N and none idle, tell libcurl not to look for an idle
 *   connection (FRESH_CONNECT): it would walk every connection to the host, in use all of them,
 *   and a burst of thousands would make that O(n^2). */
static void pool_choose(gw_fetch *f, gw_transfer *t, long size, bool *fresh) {
    conn_pool *p = &f->pools[t->pool];
    size_t limit = size >= 0 && size < f->max_idle ? (size_t)size : (size_t)f->max_idle;
    if (p->idle > 0) {
        t->keeps = true; /* it puts back the one it takes */
        *fresh = false;
        return;
    }
    /* Only this pool's own count decides: an estimate another upstream's traffic left too high
     * must not take keep-alive away from this one. The bound over all upstreams is libcurl's
     * (see pool_bound). */
    t->keeps = p->keeping < limit;
    *fresh = p->active >= limit || f->active >= (size_t)f->max_idle;
}

/* libcurl's MAXCONNECTS counts the connections in use too: with more transfers in flight than
 * it, each one ending would close the connection it just put back. Kept just above the transfers
 * in flight, it lets the pools work and still bounds the idle connections over all upstreams to
 * upstream_keepalive, whatever the estimates above say (when it is exceeded, libcurl closes the
 * oldest idle connection). */
static void pool_bound(gw_fetch *f) {
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->active + f->max_idle);
}

static void pool_count_start(gw_fetch *f, gw_transfer *t) {
    conn_pool *p = &f->pools[t->pool];
    p->active++;
    f->active++;
    if (p->idle > 0) p->idle--;
    if (t->keeps) p->keeping++;
    pool_bound(f);
}

/* reusable: the transfer succeeded, so its connection went back to libcurl's cache. */
static void pool_count_end(gw_fetch *f, gw_transfer *t, bool reusable) {
    conn_pool *p = &f->pools[t->pool];
    p->active--;
    f->active--;
    if (t->keeps) {
        p->keeping--;
        if (reusable) p->idle++;
    }
    t->keeps = false;
    pool_bound(f);
}

gw_transfer *fetch_start(gw_fetch *f, const gw_fetch_request *r, gw_fetch_cb cb, void *data, const char **err) {
    if (f->closing) {
        *err = "shutting down";
        return NULL;
    }
    gw_transfer *t = transfer_get(f);
    if (!t) {
        *err = "out of memory";
        return NULL;
    }
    CURL *e = t->easy;
    t->cb = cb;
    t->data = data;
    t->errbuf[0] = '\0';
    /* A handle is reused as it is from one plain GET to the next (the proxy's case); any other
     * method starts from a reset, since method options interact in libcurl (a HEAD, then a GET,
     * then a PUT with a body sends no body in 7.88). */
    const char *method = r->method ? r->method : "GET";
    bool plain_get = !r->body && strcmp(method, "GET") == 0;
    if (t->used && !(plain_get && t->plain_get)) {
        curl_easy_reset(e);
        easy_defaults(f, t);
    }
    t->used = true;
    t->plain_get = plain_get;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms > 0 ? r->timeout_ms : 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms > 0 ? r->connect_timeout_ms : 0L);
    t->pool = r->pool > 0 && pool_reserve(f, r->pool) ? r->pool : 0;
    bool fresh;
    pool_choose(f, t, t->pool ? r->pool_size : -1, &fresh);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, t->keeps ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_USERPWD, r->userpwd);
    if (r->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, r->body); /* makes it a POST */
        if (strcmp(method, "POST")) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (!plain_get) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    /* libcurl adds a catch-all Accept header unless told otherwise; no Accept means the same. */
    t->headers = curl_slist_append(t->headers, "Accept:");
    /* curl would wait up to 1 s for "100 Continue" on large bodies: send them at once. */
    if (r->body) t->headers = curl_slist_append(t->headers, "Expect:");
    for (size_t i = 0; i < r->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(t->headers, r->headers[i]);
        if (!l) break;
        t->headers = l;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        transfer_put(f, t);
        *err = "cannot start transfer";
        return NULL;
    }
    pool_count_start(f, t);
    return t;
}

void fetch_cancel(gw_fetch *f, gw_transfer *t) {
    curl_multi_remove_handle(f->multi, t->easy); /* closes a connection still in use */
    pool_count_end(f, t, false);
    transfer_put(f, t);
}

static const char *error_kind(CURLcode code) {
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_COULDNT_CONNECT: return "connection refused";
    case CURLE_COULDNT_RESOLVE_HOST: return "could not resolve host";
    case CURLE_WRITE_ERROR: return "response too large";
    case CURLE_GOT_NOTHING: return "empty reply";
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR: return "connection reset";
    default: return "upstream error";
    }
}

/* Whether libcurl kept the connection of a successful transfer: not when the server said it
 * would close it (an estimate: a server may still close an idle connection later). */
static bool connection_kept(const gw_transfer *t) {
    const char *h = t->head.data, *end = h + t->head.len;
    if (!h || t->head.len < 8) return false;
    bool kept = memcmp(h, "HTTP/1.0", 8) != 0; /* 1.0 closes unless it says keep-alive */
    for (const char *p = memchr(h, '\n', t->head.len); p && end - p > 12; p = memchr(p + 1, '\n', end - p - 1)) {
        if (strncasecmp(p + 1, "connection:", 11)) continue;
        const char *v = p + 12, *eol = memchr(v, '\n', end - v);
        size_t n = eol ? (size_t)(eol - v) : (size_t)(end - v);
        if (memmem(v, n, "close", 5) || memmem(v, n, "Close", 5)) return false;
        if (memmem(v, n, "eep-alive", 9) || memmem(v, n, "eep-Alive", 9)) kept = true;
    }
    return kept;
}

/* Hand finished transfers to their owners. Runs after curl_multi_socket_action, outside libcurl. */
static void fetch_drain(gw_fetch *f) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(f->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *e = msg->easy_handle;
        CURLcode code = msg->data.result; /* read before remove_handle invalidates msg */
        gw_transfer *t = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(f->multi, e);
        pool_count_end(f, t, code == CURLE_OK && connection_kept(t));

        gw_fetch_result res = {0};
        char error[CURL_ERROR_SIZE + 64];
        if (code == CURLE_OK) {
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &res.status);
            curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &res.content_type);
        } else {
            snprintf(error, sizeof error, "%s: %s", error_kind(code), t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
            res.error = error;
            res.timed_out = code == CURLE_OPERATION_TIMEDOUT;
        }
        res.headers = t->head.data ? t->head.data : "";
        res.headers_len = t->head.len;
        res.body = t->body.data ? t->body.data : "";
        res.body_len = t->body.len;
        t->cb(&res, t->data);
        transfer_put(f, t);
    }
}

size_t fetch_active(const gw_fetch *f) {
    return f->active;
}

long fetch_connections_opened(const gw_fetch *f) {
    return f->opened;
}

static void on_timer_closed(uv_handle_t *h) {
    gw_fetch *f = h->data;
    free(f->pools);
    free(f->watches);
    free(f);
}

void fetch_close(gw_fetch *f) {
    f->closing = true;
    while (f->spare) {
        gw_transfer *t = f->spare;
        f->spare = t->spare_next;
        curl_easy_cleanup(t->easy);
        buf_free(&t->head);
        buf_free(&t->body);
        free(t);
    }
    f->nspare = 0;
    curl_multi_cleanup(f->multi); /* closes cached connections through on_close_socket */
    f->multi = NULL;
    for (size_t fd = 0; fd < f->nwatches; fd++) watch_close(f, (curl_socket_t)fd);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}
