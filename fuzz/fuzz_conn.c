/* The connection state machine (conn.c) for real: a server on a loopback port of this process,
 * a client socket per input writing the bytes in pieces the input chooses, reading whatever
 * comes back, then half-closing or resetting. The app answers at once, or from a timer (so that
 * pipelined requests wait behind one in flight), or once the body is whole, or never (the client
 * leaves first); the second byte of the path picks which ('d', 'b', 'n'). After each input every connection must be closed and freed. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server_internal.h"

typedef struct pending {
    uv_timer_t timer;
    gw_request *req;
} pending;

static uv_loop_t loop;
static gw_server *srv;
static int port;

static void on_pending_closed(uv_handle_t *h) {
    free(h->data);
}

static void answer(gw_request *req) {
    static const char body[] = "fuzz";
    gw_header h = {"X-Fuzz", 6, req->path, req->path_len > 64 ? 64 : req->path_len};
    gw_response r = {.status = 200, .body = body, .body_len = sizeof body - 1, .headers = &h, .nheaders = 1};
    server_respond(req, &r);
}

static void on_timer(uv_timer_t *t) {
    pending *p = t->data;
    gw_request *req = p->req;
    req->app_data = NULL;
    uv_close((uv_handle_t *)t, on_pending_closed);
    answer(req);
}

static void on_request(gw_request *req, void *data) {
    (void)data;
    char how = req->path_len > 1 ? req->path[1] : 'a';
    if (how == 'n') return; /* never: the client's close aborts it */
    if (how == 'b' && !req->body_complete) { /* the body first, taken whole (on_body answers) */
        server_body_want(req);
        return;
    }
    if (how != 'd') {
        answer(req);
        return;
    }
    pending *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->req = req;
    req->app_data = p;
    uv_timer_init(&loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timer, 1, 0);
}

static void on_body(gw_request *req, void *data) {
    (void)data;
    if (req->body_complete && !req->app_data) answer(req); /* not one its timer will answer */
}

static void on_writable(gw_request *req, void *data) {
    (void)req, (void)data;
}

static void on_abort(gw_request *req, void *data) {
    (void)data;
    pending *p = req->app_data;
    if (!p) return;
    req->app_data = NULL;
    uv_close((uv_handle_t *)&p->timer, on_pending_closed);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    log_set_level_name("error");
    uv_loop_init(&loop);
    gw_limits limits = {.max_header_size = 1024, .max_body_size = 4096, .keepalive_timeout_ms = 60000,
                        .read_timeout_ms = 60000, .header_timeout_ms = 60000, .backlog = 64};
    gw_listen where = {.host = "127.0.0.1", .port = 0};
    gw_app app = {.on_request = on_request, .on_abort = on_abort, .on_body = on_body, .on_writable = on_writable};
    if (server_start(&srv, &loop, &where, &limits, &app)) abort();
    port = server_port(srv);
    return 0;
}

static int connect_client(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) abort();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Let the server run, and read (and drop) what it sent; false once the server has closed. */
static bool pump(int fd) {
    uv_run(&loop, UV_RUN_NOWAIT);
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return false;
        return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* data[0]: how the client ends (bit 0: reset rather than half-close) and the piece size. */
    if (size < 1) return 0;
    bool reset = data[0] & 1;
    size_t piece = 1 + (data[0] >> 1) % 64;
    data++, size--;

    int fd = connect_client();
    bool open = true;
    for (size_t off = 0; off < size && open; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (send(fd, data + off, n, MSG_NOSIGNAL) < 0) break;
        open = pump(fd);
    }
    if (reset) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    } else {
        shutdown(fd, SHUT_WR);
        for (int i = 0; i < 200 && pump(fd); i++) uv_run(&loop, UV_RUN_ONCE);
    }
    close(fd);
    /* The server must let go of the connection: it sees the close (or its linger timer ends). */
    for (int i = 0; i < 100000 && srv->nconns > 0; i++) uv_run(&loop, UV_RUN_ONCE);
    if (srv->nconns != 0) abort();
    return 0;
}
