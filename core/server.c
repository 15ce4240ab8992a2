/* The listener: bind, accept, request ids, and the graceful stop. Connections live in conn.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

static void on_reject_closed(uv_handle_t *h);

static void on_connection(uv_stream_t *l, int status) {
    gw_server *srv = l->data;
    if (status < 0) {
        /* EMFILE and friends: say so, and keep serving the connections we have. */
        log_error("accept: %s", uv_strerror(status));
        return;
    }
    if (conn_accept(srv)) return;
    /* Out of memory: the client must still be taken off the listen queue, or libuv stops
     * watching the listener for good. */
    log_error("accept: out of memory; closing the new connection");
    if (srv->reject_busy) return;
    uv_tcp_init(srv->loop, &srv->reject);
    srv->reject.data = srv;
    srv->reject_busy = true;
    uv_accept(l, (uv_stream_t *)&srv->reject);
    uv_close((uv_handle_t *)&srv->reject, on_reject_closed);
}

static void server_maybe_done(gw_server *srv) {
    if (!srv->draining || !srv->listener_closed || srv->nconns > 0 || srv->reject_busy) return;
    if (srv->on_closed) srv->on_closed(srv->on_closed_arg);
    free(srv);
}

static void on_reject_closed(uv_handle_t *h) {
    gw_server *srv = h->data;
    srv->reject_busy = false;
    server_maybe_done(srv);
}

static void on_listener_closed(uv_handle_t *h) {
    gw_server *srv = h->data;
    srv->listener_closed = true;
    server_maybe_done(srv);
}

void server_conn_freed(gw_server *srv) {
    srv->nconns--;
    server_maybe_done(srv);
}

void server_new_request_id(gw_server *srv, char *out) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v = ((uint64_t)srv->id_prefix << 32) | ++srv->id_counter;
    for (int i = 15; i >= 0; i--, v >>= 4) out[i] = hex[v & 15];
    out[16] = '\0';
}

int server_start(gw_server **out, uv_loop_t *loop, const char *host, int port, const gw_limits *limits,
                 const gw_app *app) {
    struct sockaddr_storage sa;
    int r = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa)
                              : uv_ip4_addr(host, port, (struct sockaddr_in *)&sa);
    if (r < 0) return r;
    gw_server *srv = calloc(1, sizeof *srv);
    if (!srv) return UV_ENOMEM;
    srv->loop = loop;
    srv->limits = *limits;
    srv->app = *app;
    conn_init_settings(&srv->settings);
    uv_random(NULL, NULL, &srv->id_prefix, sizeof srv->id_prefix, 0, NULL);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    r = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&sa, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)&srv->listener, limits->backlog, on_connection);
    if (r < 0) {
        /* The handle must still be closed; the struct is freed once libuv lets go of it. */
        srv->draining = true;
        srv->on_closed = NULL;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
        return r;
    }
    *out = srv;
    return 0;
}

int server_port(const gw_server *s) {
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len) < 0) return -1;
    return ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                          : ((struct sockaddr_in *)&sa)->sin_port);
}

void server_shutdown(gw_server *srv, void (*on_closed)(void *arg), void *arg) {
    if (srv->draining) return;
    srv->draining = true;
    srv->on_closed = on_closed;
    srv->on_closed_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (gw_conn *c = srv->conns; c; c = conn_next(c)) conn_shutdown(c);
}

void server_close_all(gw_server *srv) {
    for (gw_conn *c = srv->conns; c; c = conn_next(c)) conn_close(c);
}
