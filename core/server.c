/* The listener: bind (or adopt an inherited socket), accept, request ids, and the graceful stop.
 * Connections live in conn.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server_internal.h"

#define MAX_REFUSED 32 /* connections at once being answered 503 past max_connections */

static void on_reject_closed(uv_handle_t *h);

/* Take the client libuv has accepted: as a connection, or answered 503 past max_connections, or
 * closed when there is no memory for it. When none of these can be done now it stays in the
 * listener, and libuv stops watching the listener until we take it (server_accept_resume): the
 * kernel's queue holds the next clients, and another worker of the same socket takes them. */
static void server_accept(gw_server *srv) {
    size_t max = srv->limits.max_connections;
    bool refused = max && srv->nconns - srv->nrefused >= max;
    if (refused && srv->nrefused >= MAX_REFUSED) {
        srv->accept_paused = true;
        return;
    }
    if (conn_accept(srv, refused)) {
        if (refused) log_limited(GW_LOG_WARN, "max_connections (%zu) reached: answering new clients 503", max);
        return;
    }
    log_limited(GW_LOG_ERROR, "accept: out of memory; closing a new connection%s", "");
    if (srv->reject_busy) {
        srv->accept_paused = true;
        return;
    }
    uv_tcp_init(srv->loop, &srv->reject);
    srv->reject.data = srv;
    srv->reject_busy = true;
    uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&srv->reject);
    uv_close((uv_handle_t *)&srv->reject, on_reject_closed);
}

/* Room again (a connection or the reject handle let go): take the client left waiting. */
static void server_accept_resume(gw_server *srv) {
    if (!srv->accept_paused || srv->draining) return;
    srv->accept_paused = false;
    server_accept(srv);
}

static void on_connection(uv_stream_t *l, int status) {
    gw_server *srv = l->data;
    if (status < 0) {
        /* EMFILE or ENFILE: libuv has taken the waiting clients and closed them (its spare
         * descriptor trick) and keeps watching the listener. Say so, not once per client. */
        log_limited(GW_LOG_ERROR, "accept: %s: clients are being closed unanswered; raise max_open_files "
                    "or lower max_connections", uv_strerror(status));
        return;
    }
    server_accept(srv);
}

static void on_ready_closed(gw_ready *r) {
    gw_server *srv = (gw_server *)((char *)r - offsetof(gw_server, ready));
    budget_unwatch(&srv->budget_watch);
    if (srv->on_closed) srv->on_closed(srv->on_closed_arg);
    free(srv);
}

static void server_maybe_done(gw_server *srv) {
    if (!srv->draining || !srv->listener_closed || srv->nconns > 0 || srv->reject_busy || srv->ready_closing) return;
    srv->ready_closing = true;
    ready_cancel(&srv->ready, &srv->cut_stalled);
    ready_close(&srv->ready, on_ready_closed);
}

static void on_reject_closed(uv_handle_t *h) {
    gw_server *srv = h->data;
    srv->reject_busy = false;
    server_accept_resume(srv);
    server_maybe_done(srv);
}

static void on_listener_closed(uv_handle_t *h) {
    gw_server *srv = h->data;
    srv->listener_closed = true;
    server_maybe_done(srv);
}

void server_conn_freed(gw_server *srv, bool refused) {
    srv->nconns--;
    if (refused) srv->nrefused--;
    server_accept_resume(srv);
    server_maybe_done(srv);
}

void server_new_request_id(gw_server *srv, char *out) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v = ((uint64_t)srv->id_prefix << 32) | ++srv->id_counter;
    for (int i = 15; i >= 0; i--, v >>= 4) out[i] = hex[v & 15];
    out[16] = '\0';
}

static int parse_addr(const char *host, int port, struct sockaddr_storage *sa) {
    return strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)sa)
                             : uv_ip4_addr(host, port, (struct sockaddr_in *)sa);
}

static int sockaddr_port(const struct sockaddr_storage *sa) {
    return ntohs(sa->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
}

/* A listening socket. "[::]" takes IPv4 clients too, as uv_tcp_bind has it. */
int server_listen_socket(const char *host, int *port, int backlog, int *fd_out) {
    struct sockaddr_storage sa;
    int r = parse_addr(host, *port, &sa);
    if (r < 0) return r;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int on = 1, off = 0;
    socklen_t len = sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) ||
        (sa.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off)) ||
        bind(fd, (struct sockaddr *)&sa, len) || listen(fd, backlog)) {
        r = -errno;
        close(fd);
        return r;
    }
    len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = sockaddr_port(&sa);
    *fd_out = fd;
    return 0;
}

static void on_cut_stalled(gw_ready_item *it) {
    conn_cut_stalled((gw_server *)((char *)it - offsetof(gw_server, cut_stalled)));
}

/* From inside whatever call ran short: the cut is done from the loop. */
static void on_budget_short(gw_budget_watch *w) {
    gw_server *srv = (gw_server *)((char *)w - offsetof(gw_server, budget_watch));
    if (!srv->ready_closing) ready_push(&srv->ready, &srv->cut_stalled, on_cut_stalled);
}

static gw_server *server_new(uv_loop_t *loop, const gw_limits *limits, const gw_app *app) {
    gw_server *srv = calloc(1, sizeof *srv);
    if (!srv) return NULL;
    srv->loop = loop;
    srv->limits = *limits;
    srv->app = *app;
    ready_init(&srv->ready, loop);
    srv->budget_watch.on_short = on_budget_short;
    budget_watch(&srv->budget_watch);
    uv_random(NULL, NULL, &srv->id_prefix, sizeof srv->id_prefix, 0, NULL);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    return srv;
}

/* Listen (again: the backlog may differ) and accept; on failure the half-made server is closed. */
static int server_listen(gw_server **out, gw_server *srv, int r) {
    if (r == 0) r = uv_listen((uv_stream_t *)&srv->listener, srv->limits.backlog, on_connection);
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

int server_start(gw_server **out, uv_loop_t *loop, const gw_listen *where, const gw_limits *limits,
                 const gw_app *app) {
    struct sockaddr_storage sa;
    int r = parse_addr(where->host, where->port, &sa);
    if (r < 0) return r;
    gw_server *srv = server_new(loop, limits, app);
    if (!srv) return UV_ENOMEM;
    return server_listen(out, srv, uv_tcp_bind(&srv->listener, (const struct sockaddr *)&sa, 0));
}

int server_open(gw_server **out, uv_loop_t *loop, int fd, const gw_limits *limits, const gw_app *app) {
    gw_server *srv = server_new(loop, limits, app);
    if (!srv) {
        close(fd);
        return UV_ENOMEM;
    }
    int r = uv_tcp_open(&srv->listener, fd);
    if (r < 0) close(fd);
    return server_listen(out, srv, r);
}

int server_port(const gw_server *s) {
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len) < 0) return -1;
    return sockaddr_port(&sa);
}

size_t server_connections(const gw_server *s) {
    return s->nconns;
}

void server_drain(gw_server *srv, uint64_t min_idle_ms, void (*on_closed)(void *arg), void *arg) {
    if (srv->draining) return;
    srv->draining = true;
    srv->on_closed = on_closed;
    srv->on_closed_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (gw_conn *c = srv->conns; c; c = conn_next(c)) conn_drain(c, min_idle_ms);
}

void server_shutdown(gw_server *srv, void (*on_closed)(void *arg), void *arg) {
    server_drain(srv, 0, on_closed, arg);
}

void server_close_all(gw_server *srv) {
    for (gw_conn *c = srv->conns; c; c = conn_next(c)) conn_close(c);
}
