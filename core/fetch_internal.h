/* Shared by the fetch facade (fetch.c) and its backends (http_client.c, fetch_curl.c).
 *
 * A backend runs one attempt of a transfer at a time and reports what happens with the fetch_*
 * calls below. Any of them may end the transfer (a deadline, a body over its limit, the caller
 * cancelling from an event): the backend is then detached first (its cancel op runs), and the call
 * returns false; the backend must not touch the transfer again and should drop its exchange as soon
 * as it is out of its own callbacks. */
#ifndef LUAGATE_FETCH_INTERNAL_H
#define LUAGATE_FETCH_INTERNAL_H

#include "buf.h"
#include "fetch.h"
#include "ready.h"

typedef struct fetch_backend fetch_backend;
typedef struct fetch_pool fetch_pool;

/* One backend's operations on one attempt of a transfer. */
typedef struct fetch_backend_ops {
    /* Begin an attempt: find or open a connection and send the request. 0 or a negative libuv
     * error (then nothing was started). fresh: do not reuse an idle connection. */
    int (*start)(gw_transfer *t, bool fresh);
    void (*pause)(gw_transfer *t);
    void (*resume)(gw_transfer *t);
    /* Detach the attempt: no report follows. A connection in mid-exchange is closed. */
    void (*cancel)(gw_transfer *t);
    void (*close)(fetch_backend *b); /* when the gateway stops */
} fetch_backend_ops;

struct fetch_backend {
    const fetch_backend_ops *ops;
};

/* What the pools of one upstream name share: counters, and the native client's idle connections. */
struct fetch_pool {
    fetch_pool *next;
    char *name;
    long keepalive;   /* idle connections kept: the upstream's, else the gateway's */
    size_t active;    /* transfers in flight */
    size_t keeping;   /* libcurl: transfers that will put their connection back (an estimate) */
    size_t idle;      /* idle connections (exact for the native client, estimated for libcurl) */
    size_t open;      /* native connections open, idle or busy */
    struct hc_conn *idle_list; /* the native client's idle connections, most recently used first */
    int refs;         /* upstreams and transfers using it */
};

struct gw_upstream {
    gw_fetch *f;
    int refs;
    fetch_pool *pool;
    fetch_backend *backend;
    char *scheme, *host, *base_path; /* base_path: "" or "/prefix" (no trailing slash) */
    int port;
    char *hostport;     /* "host:port" as the Host header and the pool's address key say it */
    char *url;          /* the base URL without a trailing slash, for libcurl */
    gw_buf lines_block; /* "Name: value\r\n" lines sent with every call: the upstream's headers */
    char **lines;       /* the same, one string per line, for libcurl */
    size_t nlines;
    gw_buf auth_line;   /* "Authorization: ...\r\n", unless a call gives its own */
    gw_deadlines deadlines;
    int retries;
    size_t max_body;
    bool ad_hoc; /* made for one whole-URL call */
    bool forwarded; /* calls say who their client is (X-Forwarded-*) */
    gw_buf host_line; /* "Host: ...\r\n" from its headers, sent unless a call gives its own */
};

enum transfer_phase {
    PHASE_CONNECT, /* until connected: the connect deadline */
    PHASE_SEND,    /* a streamed body going out: the idle deadline, counted from the last progress */
    PHASE_WAIT,    /* the request is out: the first-byte deadline */
    PHASE_RECEIVE, /* the answer is coming: the idle deadline */
    PHASE_BACKOFF, /* waiting to try again after a refused connection */
    PHASE_FAILED,  /* a failure found while starting, reported from the timer */
};

struct gw_transfer {
    gw_fetch *f;
    gw_upstream *up;
    const fetch_backend *backend;
    void *attempt; /* the backend's state for the attempt in progress */
    const gw_fetch_events *ev;
    void *data;
    gw_transfer *spare_next;
    /* The request, as every attempt sends it. */
    char *method;   /* method_buf, or allocated when longer */
    char method_buf[16];
    gw_buf target;  /* the path on the upstream, prefix included (native), or the whole URL (libcurl) */
    gw_buf lines;   /* this call's own lines, "Name: value\r\n" each */
    bool host_given; /* lines has a Host (the call's or the upstream's): no other is sent */
    gw_buf req_body;  /* a buffered request body, copied: every attempt may send it */
    bool has_body;
    gw_body_source *source;
    bool replayable;  /* a retry may send the request again: idempotent, or its body is kept */
    bool stream;
    /* Progress, for deadlines and retries. */
    gw_deadlines dl;
    enum transfer_phase phase;
    uint64_t started, phase_started, last_progress; /* loop time, ms */
    uv_timer_t timer;
    uint64_t timer_due;
    int retries_left;
    int refused_tries;
    bool retried_stale; /* one retry on a fresh connection after a reused one died is allowed */
    bool got_head;
    bool finished;  /* reported on_end / on_error, or cancelled */
    bool paused;
    int in_event;   /* inside a caller's event: a cancel then waits until it returns */
    bool cancelled;
    gw_fetch_body answer; /* a buffered answer's body */
    gw_fetch_error pending; /* PHASE_FAILED: what to report */
    bool pending_reused, pending_before_response;
};

/* ---- what backends report ---- */

/* The connection is up (or reused); the request is being written. */
void fetch_connected(gw_transfer *t);
/* The whole request is handed to the connection: the first-byte deadline starts. */
void fetch_sent(gw_transfer *t);
/* Bytes of the answer arrived, or of a streamed body went out: the idle deadline starts again. */
void fetch_progress(gw_transfer *t);
/* The final head. Checked here (status 100-599, no unsolicited 101). false: the transfer ended. */
bool fetch_head(gw_transfer *t, const gw_fetch_head *head);
/* Room for len more bytes of a buffered answer: 0, or the kind to fail with (too large for the
 * upstream's max_response_body, or for the worker's budget). */
int fetch_answer_room(gw_transfer *t, size_t len);
/* A piece of the body. false: the transfer ended. *pause: stop reading after this read. */
bool fetch_body(gw_transfer *t, const char *data, size_t len, bool *pause);
/* The answer is complete. The backend has let go of the transfer before calling. */
void fetch_done(gw_transfer *t);
/* The attempt failed. The backend has let go of the transfer before calling. reused: it ran on a
 * connection that had served earlier requests; before_response: no byte of an answer came. */
void fetch_failed(gw_transfer *t, int kind, const char *detail, bool reused, bool before_response);
/* The same, found inside the backend's start op: reported from the loop, as start must not. */
void fetch_failed_later(gw_transfer *t, int kind, const char *detail, bool reused, bool before_response);

/* Every libuv handle a backend opens is counted, so that the facade is freed only after the last
 * one has closed. */
void fetch_handle_opened(gw_fetch *f);
void fetch_handle_closed(gw_fetch *f);

/* The pool of a name (created when new), one more reference. */
fetch_pool *fetch_pool_get(gw_fetch *f, const char *name, long keepalive);
void fetch_pool_release(gw_fetch *f, fetch_pool *p);
/* The gateway's upstream_keepalive: the default per pool, and the bound over all pools. */
long fetch_keepalive(const gw_fetch *f);
/* A connection was opened (for the counters). */
void fetch_count_connection(gw_fetch *f);
uv_loop_t *fetch_loop(const gw_fetch *f);
/* The read buffer every upstream connection of the loop shares: reads never nest. */
char *fetch_slab(gw_fetch *f, size_t *len);

/* The backends. */
int http_client_new(gw_fetch *f, fetch_backend **out);
int fetch_curl_new(gw_fetch *f, fetch_backend **out);

#endif
