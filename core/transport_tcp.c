/* The TCP transport: a uv_tcp_t behind gw_transport_ops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "transport.h"

typedef struct write_req {
    uv_write_t req;
    gw_tcp *t;
    size_t len; /* held of the worker's budget (budget.h) until it is sent */
    char data[];
} write_req;

static gw_tcp *tcp_of(gw_transport *t) {
    return (gw_tcp *)t;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)suggested;
    gw_tcp *t = h->data;
    b->base = t->slab;
    b->len = t->slab_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    gw_tcp *t = s->data;
    if (n > 0) t->base.ev->on_read(&t->base, b->base, (size_t)n);
    else if (n < 0) t->base.ev->on_read_end(&t->base, (int)n);
}

static int tcp_read_start(gw_transport *tr) {
    gw_tcp *t = tcp_of(tr);
    return uv_read_start((uv_stream_t *)&t->handle, on_alloc, on_read);
}

static void tcp_read_stop(gw_transport *tr) {
    uv_read_stop((uv_stream_t *)&tcp_of(tr)->handle);
}

static void on_write_done(uv_write_t *w, int status) {
    gw_tcp *t = ((write_req *)w)->t;
    budget_give(((write_req *)w)->len);
    free(w);
    if (uv_is_closing((uv_handle_t *)&t->handle)) return;
    t->base.ev->on_write_done(&t->base, status);
}

static int tcp_write(gw_transport *tr, const uv_buf_t *bufs, unsigned n) {
    gw_tcp *t = tcp_of(tr);
    uv_stream_t *s = (uv_stream_t *)&t->handle;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    /* Behind queued writes, a direct write would overtake them. */
    int r = s->write_queue_size ? 0 : uv_try_write(s, bufs, n);
    if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
    if (r < 0) return r;
    size_t done = (size_t)r;
    if (done == total) return 0;
    write_req *w = malloc(sizeof *w + total - done);
    if (!w) return UV_ENOMEM;
    w->t = t;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t skip = done < bufs[i].len ? done : bufs[i].len;
        done -= skip;
        memcpy(w->data + len, bufs[i].base + skip, bufs[i].len - skip);
        len += bufs[i].len - skip;
    }
    uv_buf_t rest = uv_buf_init(w->data, (unsigned)len);
    r = uv_write(&w->req, s, &rest, 1, on_write_done);
    if (r < 0) {
        free(w);
        return r;
    }
    /* Queued output counts against the budget, always: what does not fit was refused before it
     * was written (conn.c), and a stream's pieces are bounded by its own high-water mark. */
    w->len = len;
    budget_add(len);
    return 0;
}

static size_t tcp_queued(const gw_transport *tr) {
    return ((const gw_tcp *)tr)->handle.write_queue_size;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    gw_tcp *t = req->data;
    if (uv_is_closing((uv_handle_t *)&t->handle)) return;
    t->base.ev->on_shutdown(&t->base, status);
}

static int tcp_shutdown(gw_transport *tr) {
    gw_tcp *t = tcp_of(tr);
    t->shutdown_req.data = t;
    return uv_shutdown(&t->shutdown_req, (uv_stream_t *)&t->handle, on_shutdown);
}

static void on_closed(uv_handle_t *h) {
    gw_tcp *t = h->data;
    t->base.ev->on_closed(&t->base);
}

static void tcp_close(gw_transport *tr) {
    gw_tcp *t = tcp_of(tr);
    if (!uv_is_closing((uv_handle_t *)&t->handle)) uv_close((uv_handle_t *)&t->handle, on_closed);
}

static const gw_transport_ops tcp_ops = {
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .queued = tcp_queued,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
};

void tcp_init(gw_tcp *t, uv_loop_t *loop, const gw_transport_events *ev, void *owner, char *slab, size_t slab_len) {
    t->base = (gw_transport){.ops = &tcp_ops, .ev = ev, .data = owner};
    uv_tcp_init(loop, &t->handle);
    t->handle.data = t;
    t->slab = slab;
    t->slab_len = slab_len;
}

int tcp_accept(gw_tcp *t, uv_stream_t *listener) {
    int r = uv_accept(listener, (uv_stream_t *)&t->handle);
    if (r == 0) uv_tcp_nodelay(&t->handle, 1);
    return r;
}

static void on_connect(uv_connect_t *req, int status) {
    gw_tcp *t = req->data;
    if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&t->handle)) return;
    if (status == 0) uv_tcp_nodelay(&t->handle, 1);
    t->on_connect(t, status);
}

int tcp_connect(gw_tcp *t, const struct sockaddr *addr, void (*cb)(gw_tcp *t, int status)) {
    t->on_connect = cb;
    t->connect_req.data = t;
    return uv_tcp_connect(&t->connect_req, &t->handle, addr, on_connect);
}

void tcp_peer_name(const gw_tcp *t, char *out, size_t len) {
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&t->handle, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
    }
    snprintf(out, len, "%s:%d", ip, port);
}
