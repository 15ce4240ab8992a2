/* Shared by server.c (the listener) and conn.c (one connection): not part of the public surface. */
#ifndef LUAGATE_SERVER_INTERNAL_H
#define LUAGATE_SERVER_INTERNAL_H

#include "budget.h"
#include "http_date.h"
#include "ready.h"
#include "server.h"
#include "transport.h"

typedef struct gw_conn gw_conn;

struct gw_server {
    uv_tcp_t listener;
    uv_loop_t *loop;
    gw_limits limits;
    gw_app app;
    gw_ready ready; /* connections with pipelined requests to parse */
    gw_conn *conns; /* every open connection, for shutdown */
    size_t nconns;  /* connections not yet freed */
    size_t nrefused; /* ... of which taken past max_connections, only to be answered 503 */
    bool accept_paused; /* a client is left in the listener (libuv stops watching it until we take it) */
    gw_budget_watch budget_watch; /* the worker's memory budget ran short: cut clients that stopped reading */
    gw_ready_item cut_stalled;
    bool draining;
    bool listener_closed;
    bool ready_closing;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
    gw_http_date date;
    uv_tcp_t reject; /* accepts and closes a client when no memory is left for it */
    bool reject_busy;
    uint32_t id_prefix; /* random per process: ids differ across restarts */
    uint32_t id_counter;
    char read_slab[65536]; /* one read buffer for all connections: reads are never nested */
};

/* Accept a client; false when there is no memory for it (the caller must still take it). A
 * refused one is answered 503 at once and closed. */
bool conn_accept(gw_server *srv, bool refused);
/* Close the connections whose queued output has not moved for a while (budget.h). */
void conn_cut_stalled(gw_server *srv);
/* Graceful stop: close after the response in flight if any, never before the output already
 * queued has gone out (the client may still be reading it), and when idle only once it has been
 * idle min_idle_ms (a request may be on its way). */
void conn_drain(gw_conn *c, uint64_t min_idle_ms);
void conn_close(gw_conn *c);
gw_conn *conn_next(gw_conn *c);
/* Called by conn.c once a connection's memory is freed. */
void server_conn_freed(gw_server *srv, bool refused);
/* A fresh request id: 16 hex digits and a NUL. */
void server_new_request_id(gw_server *srv, char *out);

#endif
