/* A byte stream with the few operations an HTTP connection needs: read, write, shutdown, close.
 *
 * The server's connections and the upstream client's connections read and write through this
 * instead of a TCP handle, so that another transport (TLS over TCP) can be put in without touching
 * their state machines. One implementation today: TCP (below). */
#ifndef LUAGATE_TRANSPORT_H
#define LUAGATE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct gw_transport gw_transport;

/* What a transport tells its owner. Each runs from the loop, never from inside a transport call. */
typedef struct gw_transport_events {
    /* Bytes arrived; they are valid during the call only. */
    void (*on_read)(gw_transport *t, const char *data, size_t len);
    /* No more bytes: UV_EOF when the peer closed its side, else a negative libuv error. */
    void (*on_read_end)(gw_transport *t, int status);
    /* A queued write went out (status 0) or failed; queued() has shrunk. */
    void (*on_write_done)(gw_transport *t, int status);
    /* shutdown() finished: our FIN is sent after everything queued before it. */
    void (*on_shutdown)(gw_transport *t, int status);
    /* close() finished: the owner may free the memory that holds the transport. */
    void (*on_closed)(gw_transport *t);
} gw_transport_events;

typedef struct gw_transport_ops {
    int (*read_start)(gw_transport *t);
    void (*read_stop)(gw_transport *t);
    /* Write bufs in order: at once when the socket takes them (no copy), else the rest is copied
     * and queued behind earlier writes. 0 or a negative libuv error. */
    int (*write)(gw_transport *t, const uv_buf_t *bufs, unsigned n);
    size_t (*queued)(const gw_transport *t); /* bytes written but not yet taken by the kernel */
    int (*shutdown)(gw_transport *t);
    void (*close)(gw_transport *t);
} gw_transport_ops;

struct gw_transport {
    const gw_transport_ops *ops;
    const gw_transport_events *ev;
    void *data; /* the owner */
};

static inline int transport_read_start(gw_transport *t) { return t->ops->read_start(t); }
static inline void transport_read_stop(gw_transport *t) { t->ops->read_stop(t); }
static inline int transport_write(gw_transport *t, const uv_buf_t *b, unsigned n) { return t->ops->write(t, b, n); }
static inline size_t transport_queued(const gw_transport *t) { return t->ops->queued(t); }
static inline int transport_shutdown(gw_transport *t) { return t->ops->shutdown(t); }
static inline void transport_close(gw_transport *t) { t->ops->close(t); }

/* ---- TCP ---- */

typedef struct gw_tcp {
    gw_transport base;
    uv_tcp_t handle;
    uv_shutdown_t shutdown_req;
    uv_connect_t connect_req;
    void (*on_connect)(struct gw_tcp *t, int status);
    char *slab; /* the read buffer, shared by every transport of the loop: reads never nest */
    size_t slab_len;
} gw_tcp;

/* Initialise; the transport must then be closed with transport_close, even when a later step fails. */
void tcp_init(gw_tcp *t, uv_loop_t *loop, const gw_transport_events *ev, void *owner, char *slab, size_t slab_len);
int tcp_accept(gw_tcp *t, uv_stream_t *listener);
/* Connect to addr; on_connect(t, status) runs from the loop. */
int tcp_connect(gw_tcp *t, const struct sockaddr *addr, void (*on_connect)(gw_tcp *t, int status));
/* "ip:port" of the peer, or "?" */
void tcp_peer_name(const gw_tcp *t, char *out, size_t len);

#endif
