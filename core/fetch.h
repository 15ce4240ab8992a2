/* Non-blocking HTTP client: libcurl's multi interface driven by the libuv loop.
 *
 * One gw_fetch per loop for its whole life: its multi handle holds the connection cache, so
 * upstream connections are reused across requests. Transfers complete through a callback that
 * runs from the loop, never from inside a libcurl callback, so it may start or cancel transfers. */
#ifndef LUAGATE_FETCH_H
#define LUAGATE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct gw_fetch gw_fetch;
typedef struct gw_transfer gw_transfer;

typedef struct gw_fetch_request {
    const char *method; /* "GET" when NULL */
    const char *url;
    const char *const *headers; /* "Name: value" lines */
    size_t nheaders;
    const char *body; /* copied; NULL for none */
    size_t body_len;
    long timeout_ms;         /* whole transfer; 0: none */
    long connect_timeout_ms; /* 0: libcurl's default */
    const char *userpwd;     /* "user:password" for basic auth, or NULL */
    int pool;                /* the upstream's pool number (1, 2, ...), 0 for none */
    long pool_size;          /* idle connections the pool keeps; < 0: no limit of its own */
} gw_fetch_request;

typedef struct gw_fetch_result {
    long status;          /* 0 when the transfer failed */
    const char *error;    /* NULL on success; else "timeout: ...", "connection refused: ..." */
    bool timed_out;
    const char *headers;  /* the final response's header block, lines ending in CRLF */
    size_t headers_len;
    const char *body;
    size_t body_len;
    const char *content_type; /* as libcurl parsed it, or NULL */
} gw_fetch_result;

/* Called once per started transfer, unless it was cancelled. The result is valid during the call. */
typedef void (*gw_fetch_cb)(const gw_fetch_result *res, void *data);

/* max_idle: how many idle upstream connections the cache keeps. 0 or a negative libuv error. */
int fetch_init(gw_fetch **out, uv_loop_t *loop, long max_idle);
void fetch_set_max_idle(gw_fetch *f, long max_idle);
/* Start a transfer. NULL with *err set (a static string) when it could not be started. */
gw_transfer *fetch_start(gw_fetch *f, const gw_fetch_request *r, gw_fetch_cb cb, void *data, const char **err);
/* Abort a transfer: its callback will not run. */
void fetch_cancel(gw_fetch *f, gw_transfer *t);
/* Transfers in flight and upstream connections opened so far (for tests and metrics). */
size_t fetch_active(const gw_fetch *f);
long fetch_connections_opened(const gw_fetch *f);
/* Release everything once no transfer is in flight; the struct is freed when its handles close. */
void fetch_close(gw_fetch *f);

#endif
