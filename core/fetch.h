/* Upstream calls: one facade over two backends.
 *
 *   plain http://   the native HTTP/1.1 client (http_client.c: llhttp over a libuv transport,
 *                   with its own keep-alive pool per upstream)
 *   anything else   libcurl's multi interface on the same loop (fetch_curl.c): https://, and any
 *                   upstream configured with client = "curl"
 *
 * What both share is done here, once: deadlines (connect, first byte, idle between bytes, whole
 * transfer), typed errors, retries, cancellation, per-upstream accounting keyed by the upstream's
 * name, and the events a caller sees: head, body chunks (with pause and resume), end or error.
 *
 * Events run from the loop, never from inside a fetch_* call, and never after fetch_cancel. After
 * on_end or on_error the transfer is gone: the caller must forget it. */
#ifndef LUAGATE_FETCH_H
#define LUAGATE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct gw_fetch gw_fetch;       /* one per loop: pools, DNS cache, both backends */
typedef struct gw_upstream gw_upstream; /* an upstream's settings, prepared once */
typedef struct gw_transfer gw_transfer; /* one call */

/* The kinds of failure. Lua sees "<kind>: <detail>"; answers to clients carry only the kind. */
enum gw_fetch_error_kind {
    FETCH_ERR_TIMEOUT = 1, /* "timeout" */
    FETCH_ERR_REFUSED,     /* "connection refused": nothing was sent */
    FETCH_ERR_RESOLVE,     /* "could not resolve host" */
    FETCH_ERR_RESET,       /* "connection reset": the upstream closed or reset mid-exchange */
    FETCH_ERR_EMPTY,       /* "empty reply": closed before the first byte of an answer */
    FETCH_ERR_TOO_LARGE,   /* "response too large": over max_response_body (buffered calls) */
    FETCH_ERR_BAD_RESPONSE, /* "bad response": not valid HTTP/1.x, or a status outside 100-599 */
    FETCH_ERR_NO_FDS,      /* "too many open files": the gateway ran out of descriptors */
    FETCH_ERR_BODY,        /* "request body failed": the body being sent could not be read */
    FETCH_ERR_BUSY,        /* "gateway busy": a buffered answer over the worker's max_buffered_size */
    FETCH_ERR_INTERNAL,    /* "upstream error": out of memory, a backend failure */
};

typedef struct gw_fetch_error {
    int kind;
    char detail[200];
} gw_fetch_error;

const char *fetch_error_name(int kind);

/* Deadlines in milliseconds, 0 for none. */
typedef struct gw_deadlines {
    uint32_t connect;    /* from the start (or a retry) until connected */
    uint32_t first_byte; /* from the request sent until the first byte of the answer */
    uint32_t idle;       /* between two reads of the answer */
    uint32_t total;      /* the whole call, retries included */
} gw_deadlines;

enum gw_fetch_backend { FETCH_AUTO, FETCH_CURL };

typedef struct gw_upstream_config {
    const char *name;                 /* the pool's key: connections survive a settings change */
    const char *url;                  /* base URL: "http://host:port/prefix" */
    const char *const *header_lines;  /* "Name: value", sent with every call */
    size_t nheader_lines;
    const char *userpwd;              /* "user:password" for basic auth, or NULL */
    const char *bearer;               /* a bearer token instead, or NULL */
    gw_deadlines deadlines;
    long keepalive;                   /* idle connections kept; < 0: the gateway's upstream_keepalive */
    int retries;                      /* refused connections tried again (with backoff, within total) */
    int backend;                      /* FETCH_AUTO: native for http://, libcurl for the rest */
    size_t max_body;                  /* buffered answers over this fail with "response too large" */
    bool forwarded;                   /* send X-Forwarded-For, -Proto and -Host (gw_forwarded) */
} gw_upstream_config;

/* What an upstream is told of the client a call is made for (X-Forwarded-For, -Proto, -Host). */
typedef struct gw_forwarded {
    const char *prior;  /* X-Forwarded-For as a trusted proxy sent it, to append to; or NULL */
    size_t prior_len;
    const char *client; /* the client's address */
    size_t client_len;
    const char *proto;  /* "http", or what a trusted proxy said */
    size_t proto_len;
    const char *host;   /* the request's Host, or what a trusted proxy said; or NULL */
    size_t host_len;
} gw_forwarded;

/* A streamed request body: the transfer pulls bytes as the upstream takes them. */
typedef struct gw_body_source gw_body_source;
struct gw_body_source {
    /* What is ready: *data and its length; 0 with *ended when the body is all sent, 0 without
     * when more is to come; a negative libuv error when it failed (the client left). */
    long (*peek)(gw_body_source *s, const char **data, bool *ended);
    void (*consume)(gw_body_source *s, size_t n);
    /* Call wake(arg) once, from the loop, when more is ready (or it ended or failed). */
    void (*want)(gw_body_source *s, void (*wake)(void *arg), void *arg);
    int64_t length; /* -1 when unknown: sent chunked */
};

typedef struct gw_fetch_request {
    gw_upstream *upstream; /* NULL: url is a whole URL with no upstream */
    const char *method;    /* "GET" when NULL */
    const char *target;    /* the path on the upstream (with its query), or the whole URL */
    /* This call's own "Name: value" lines, after the upstream's. Hop-by-hop headers (and those a
     * Connection line names) and the body's framing are not sent; a Host line replaces the
     * upstream's host:port; X-Forwarded-* lines are dropped when `forwarded` is sent instead. */
    const char *const *header_lines;
    size_t nheader_lines;
    bool auth_set;         /* this call's auth replaces the upstream's (none when both are NULL) */
    const char *userpwd;
    const char *bearer;
    const char *body;      /* a buffered body (copied when needed), or NULL */
    size_t body_len;
    gw_body_source *source; /* a streamed body instead, or NULL */
    uint32_t timeout_ms, connect_timeout_ms; /* this call's whole and connect deadlines; 0: the upstream's */
    int retries;           /* < 0: the upstream's */
    bool stream;           /* deliver the answer's body in chunks (else whole, in on_end) */
    const char *request_id;
    const gw_forwarded *forwarded; /* the client's, for an upstream that is told; or NULL */
    const char *traceparent; /* sent as traceparent unless a header line gives one, or NULL */
} gw_fetch_request;

typedef struct gw_fetch_head {
    int status;
    int http_minor;
    const char *block; /* the header block: status line, then "Name: value\r\n" lines */
    size_t block_len;
    const char *content_type; /* NULL when there is none */
    size_t content_type_len;
    int64_t content_length; /* as the head says it; -1 when it does not */
    bool no_body;           /* none follows, whatever the head says: HEAD, 204, 304 */
} gw_fetch_head;

/* A buffered answer's body, and the part of the worker's budget it holds (budget.h). on_end's
 * receiver may take both over (and later free the buffer and release the charge), or leave them. */
typedef struct gw_fetch_body {
    gw_buf data;
    size_t charged;
} gw_fetch_body;

typedef struct gw_fetch_events {
    /* The final answer's head (1xx skipped). For a buffered call it comes just before on_end. */
    void (*on_head)(void *data, const gw_fetch_head *head);
    /* A piece of a streamed body; return true to pause reading after it (fetch_resume goes on). */
    bool (*on_body)(void *data, const char *chunk, size_t len);
    /* The answer is complete. body: the whole body for a buffered call, NULL for a stream. */
    void (*on_end)(void *data, gw_fetch_body *body);
    void (*on_error)(void *data, const gw_fetch_error *err);
} gw_fetch_events;

/* upstream_keepalive: idle connections kept per upstream by default, and over all upstreams. */
int fetch_init(gw_fetch **out, uv_loop_t *loop, long upstream_keepalive);
void fetch_set_keepalive(gw_fetch *f, long upstream_keepalive);

/* Prepare an upstream. 0 and *out (one reference), or a negative libuv error with why in err. */
int fetch_upstream_new(gw_fetch *f, const gw_upstream_config *c, gw_upstream **out, const char **err);
void fetch_upstream_release(gw_upstream *u);

/* Start a call. 0 and *out, or a negative libuv error with why in err (a bad URL, shutting down):
 * then no event follows. */
int fetch_start(gw_fetch *f, const gw_fetch_request *r, const gw_fetch_events *ev, void *data, gw_transfer **out,
                const char **err);
/* Stop or restart reading a streamed answer. */
void fetch_pause(gw_transfer *t);
void fetch_resume(gw_transfer *t);
/* Abort a call: no event follows; its connection is closed unless the answer was complete. */
void fetch_cancel(gw_transfer *t);

/* Counters for gw.stats() and metrics: calls in flight, connections opened since start. */
typedef struct gw_fetch_stats {
    size_t active;
    long connections_opened;
    size_t idle; /* native pools: idle connections kept */
} gw_fetch_stats;
void fetch_stats(const gw_fetch *f, gw_fetch_stats *out);

/* Release everything once no call is in flight; the struct is freed when its handles close. */
void fetch_close(gw_fetch *f);

#endif
