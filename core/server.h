/* The HTTP/1.1 server: a listener, its connections, and the hand-off of parsed requests to an app.
 *
 * Ownership: the server owns every connection and every request. A request handed to
 * app.on_request belongs to the app until the app calls server_respond() or the server calls
 * app.on_abort() (the client went away); after either the app must not touch it again. */
#ifndef LUAGATE_SERVER_H
#define LUAGATE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "response.h"

typedef struct gw_server gw_server;

typedef struct gw_request {
    const char *method;
    const char *path; /* percent-decoded, without the query */
    size_t path_len;
    const char *target; /* as sent: path and query, still encoded */
    size_t target_len;
    const char *query; /* raw, after '?'; "" when absent */
    size_t query_len;
    const gw_header *headers; /* names lower-cased */
    size_t nheaders;
    const char *body; /* the whole body once body_complete; see server_body_* while it arrives */
    size_t body_len;
    const char *id;     /* X-Request-Id as received, or generated */
    const char *remote; /* client address "ip:port" */
    int http_minor;
    bool keep_alive;
    bool is_head;
    /* false: the request was handed over at the end of its head, its body still arriving. The app
     * either waits for app.on_body and reads body/body_len (buffered, within max_body_size), or
     * calls server_body_stream and reads it in pieces. */
    bool body_complete;
    int64_t content_length; /* as the client said it; -1 for a chunked body */
    bool body_too_large;    /* over max_body_size (its length, or all of it): it cannot be buffered */
    void *app_data; /* the app's own state for this request */
    void *obs;      /* the app's record of it for its log phase (app.on_complete), or NULL */
} gw_request;

/* How a request ended, for the app's log phase. */
enum gw_end_how {
    GW_END_DONE, /* its answer was handed to the connection whole */
    GW_END_CUT,  /* its answer was cut (server_abort_body): the connection closed */
    GW_END_GONE, /* the connection closed before its answer was complete (the client left) */
};

typedef struct gw_request_end {
    int status; /* the status sent; 0 when no answer went out */
    enum gw_end_how how;
    uint64_t head_bytes, body_bytes; /* handed to the connection */
    uint64_t duration_ns;            /* from the request's first byte to its end */
} gw_request_end;

typedef struct gw_limits {
    size_t max_header_size; /* request line + headers, bytes: over it, 431 */
    size_t max_body_size;   /* bytes: over it, 413 */
    uint64_t keepalive_timeout_ms;
    uint64_t read_timeout_ms;    /* between reads of a request, and for a client to take an answer */
    uint64_t header_timeout_ms;  /* a request's whole head, from its first byte (or the accept); 0: none */
    uint64_t body_timeout_ms;    /* a buffered body, whole; 0: none */
    uint64_t handler_timeout_ms; /* for the app to begin its answer; 0: none */
    int backlog;
    size_t max_connections; /* open client connections; past it, a 503 and close. 0: no limit */
} gw_limits;

typedef struct gw_app {
    void (*on_request)(gw_request *req, void *data);
    void (*on_abort)(gw_request *req, void *data);
    /* More of a body that was still arriving: it is complete (buffered), or bytes are ready to read
     * or it ended or failed (streamed). */
    void (*on_body)(gw_request *req, void *data);
    /* A streamed answer that server_write_body said was backed up can take more now. */
    void (*on_writable)(gw_request *req, void *data);
    /* Optional: the request has ended for good (answered, cut, or its client left), once for each
     * request handed to the app and for each error answer the server made itself (req then holds
     * what was parsed of it). Called before on_abort; req and its headers are valid during the call. */
    void (*on_complete)(gw_request *req, const gw_request_end *end, void *data);
    void *data;
} gw_app;

typedef struct gw_listen {
    const char *host; /* an IP literal */
    int port;         /* 0: any free port */
} gw_listen;

/* Bind and listen (the test servers of core.listen). 0 or a negative libuv error. */
int server_start(gw_server **out, uv_loop_t *loop, const gw_listen *where, const gw_limits *limits,
                 const gw_app *app);
/* Serve on fd, a listening socket made by server_listen_socket in another process (a worker's
 * inherited descriptor). 0 or a negative libuv error; fd is the server's either way. */
int server_open(gw_server **out, uv_loop_t *loop, int fd, const gw_limits *limits, const gw_app *app);
/* For a master: a listening socket (close-on-exec) on host:port, for its workers to accept on.
 * *port 0 takes any free port and is set to it. 0 and *fd_out, or a negative libuv error. */
int server_listen_socket(const char *host, int *port, int backlog, int *fd_out);
int server_port(const gw_server *s);
/* Client connections open (for metrics). */
size_t server_connections(const gw_server *s);

/* Answer a request the server handed to the app. */
void server_respond(gw_request *req, const gw_response *resp);
/* The app's answer is due within ms from now (a route's own timeout); past it the server answers
 * 504 and aborts the request. 0: no deadline. */
void server_set_answer_timeout(gw_request *req, uint64_t ms);

/* ---- a body that is still arriving (req->body_complete false) ---- */

/* The app waits for the body whole (app.on_body once complete): a client waiting for "100
 * Continue" gets it now. */
void server_body_want(gw_request *req);
/* Take the body in pieces instead of whole: no max_body_size, and the client is read only as fast
 * as the app consumes (at most STREAM_HIGH bytes wait). */
void server_body_stream(gw_request *req);
/* Whether the body is over max_body_size, as far as is known: it cannot be taken whole. */
bool server_body_too_large(gw_request *req);
/* What is ready: *data and its length. 0 with *ended: the body is all read; 0 without: wait for
 * app.on_body. A negative libuv error when it cannot complete (the request was answered or aborted). */
long server_body_peek(gw_request *req, const char **data, bool *ended);
void server_body_consume(gw_request *req, size_t n);

/* ---- an answer streamed in pieces ---- */

/* Send the head: resp->body is ignored; body_length < 0 when unknown (chunked for HTTP/1.1
 * clients, delimited by closing the connection for HTTP/1.0). 0, or a negative error when the
 * client is gone (the request is then finished). */
int server_respond_head(gw_request *req, const gw_response *resp, int64_t body_length);
/* Queue a piece: 0, 1 when the client's queue is past its bound (wait for app.on_writable before
 * writing more), or a negative error when the client is gone. */
int server_write_body(gw_request *req, const char *data, size_t len);
/* The answer is complete: the request is finished. */
void server_end_body(gw_request *req);
/* The answer cannot be completed (its source failed): the connection closes, so that the client
 * never takes a truncated body for a whole one. The request is finished. */
void server_abort_body(gw_request *req);

/* Graceful stop: close the listener (in this process: the socket lives on in others that hold
 * it), let requests in flight finish (their answers say Connection: close), close each idle
 * connection once it has been idle min_idle_ms (a request may be on its way on one just used),
 * then call on_closed(arg) once no connection is left. The server frees itself after that call. */
void server_drain(gw_server *s, uint64_t min_idle_ms, void (*on_closed)(void *arg), void *arg);
/* server_drain with no grace for idle connections. */
void server_shutdown(gw_server *s, void (*on_closed)(void *arg), void *arg);
/* Close every connection now, aborting requests in flight (after server_shutdown, on timeout). */
void server_close_all(gw_server *s);

#endif
