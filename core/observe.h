/* A worker's observability: what each request and each upstream call did, counted into the
 * worker's metrics slot (metrics_shm.h) and written to the access log (access_log.h) when the
 * request ends, and the traceparent of each upstream call (trace.h).
 *
 * The runtime keeps a gw_req_obs in each request's task and calls: observe_request_begin when the
 * request reaches the app, observe_call_begin/end around each upstream call, and
 * observe_request_end from the server's on_complete. Per request that is a few array increments
 * in the worker's own slot and one line formatted into a buffer. Every function accepts a NULL
 * gw_observe (specs, `luagate -t`): then nothing is counted or logged. */
#ifndef LUAGATE_OBSERVE_H
#define LUAGATE_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "access_log.h"
#include "fetch.h"
#include "server.h"
#include "trace.h"

#define OBS_CALLS 8 /* upstream calls listed in a request's log line (all are counted) */

typedef struct gw_observe gw_observe;

/* A request's record, kept by the runtime for as long as the request is in progress. */
typedef struct gw_req_obs {
    gw_trace trace;
    uint16_t route; /* its route's id (0: none matched) */
    uint8_t ncalls;
    uint8_t failed; /* 1 + the index of the last call that failed, for the reason of a 502/504 */
    uint16_t more;  /* calls past OBS_CALLS */
    bool begun, ended;
    bool traced; /* trace holds the ids: made when first needed (a call, gw.trace, the log) */
    gw_request *req; /* while it has not ended: req->obs points here */
    struct {
        uint16_t up;
        int16_t status; /* the upstream's, or -(error kind), or -MS_OUTCOME_CANCELLED; 0: in progress */
        uint32_t us;    /* its time; in progress, its start (uv_hrtime in us, modulo 2^32) */
    } calls[OBS_CALLS];
} gw_req_obs;

/* An upstream call in progress (kept in its fetch op or stream). */
typedef struct gw_call_obs {
    uint64_t t0;  /* uv_hrtime at its start; 0 once ended */
    uint16_t up;
    int16_t index; /* in its request's calls, or -1 */
    int16_t status; /* the upstream's, once its head came */
} gw_call_obs;

typedef struct observe_options {
    const char *access_log;  /* "off", "stdout" or a path */
    enum access_format format;
    int metrics_fd;          /* the master's region, or -1 */
    int worker_id, generation;
    /* Open client connections, sampled with the other gauges every ~100 ms. */
    size_t (*connections)(void *arg);
    void *arg;
} observe_options;

/* 0, or a negative errno when the access log cannot be opened (*out is made all the same, without
 * it). A worker with no metrics slot free counts nothing, and logs why. */
int observe_open(gw_observe **out, uv_loop_t *loop, const observe_options *opts);
/* Where the upstream gauges come from. */
void observe_set_fetch(gw_observe *o, gw_fetch *f);
/* Flush the access log, stop the timer (the struct is freed once it has closed). */
void observe_close(gw_observe *o);

/* Label ids: a route pattern's (at registration), an upstream name's (at its first use). The same
 * name gives the same id. 0 when o is NULL or the table is full (then counted as "(other)"). */
int observe_route_id(gw_observe *o, const char *pattern);
int observe_upstream_id(gw_observe *o, const char *name);
/* The name of an upstream id ("(url)" for 0). */
const char *observe_upstream_name(const gw_observe *o, int id);
/* Call i of a request as it ends: status is the upstream's (> 0), -(error kind) or
 * -MS_OUTCOME_CANCELLED (also for a call still in progress, with its time so far). */
void observe_call_result(const gw_req_obs *r, int i, int16_t *status, uint32_t *us);
/* What observe_call_result's status says failed: a fetch error kind's name, "cancelled", or NULL
 * for an answer. */
const char *observe_call_error_name(int16_t status);

void observe_request_begin(gw_observe *o, gw_req_obs *r, gw_request *req);
/* The request's trace: the client's traceparent continued, or a new one; NULL when r never began. */
const gw_trace *observe_trace(gw_observe *o, gw_req_obs *r);
void observe_request_end(gw_observe *o, gw_request *req, const gw_request_end *end);
/* The app lets go of the record before the request's end (the client left, or the record's owner
 * goes): the end, when it comes, is logged without it. */
void observe_request_drop(gw_observe *o, gw_req_obs *r);

/* The traceparent for a new call of the request (TRACEPARENT_LEN + 1 bytes): a child span of its
 * trace. "" when there is none to send (specs). */
void observe_traceparent(gw_observe *o, gw_req_obs *r, char *tp);
/* A call started (upstream: its id). */
void observe_call_begin(gw_observe *o, gw_req_obs *r, gw_call_obs *c, int upstream);
/* It ended: failed with err, else answered (c->status set when its head came) or cancelled. r may
 * have ended (the call is counted, not listed). A failure is logged at warn with the upstream's
 * name and the error kind. Once: later calls for the same c do nothing. */
void observe_call_end(gw_observe *o, gw_req_obs *r, gw_call_obs *c, const gw_fetch_error *err, const char *request_id);

/* gw.metrics: a series' values (1 value; a histogram's nbounds + 1 buckets, then its sum), in the
 * worker's slot. NULL with *err when the name or labels are invalid or the slot is full; with no
 * slot (metrics off, specs) NULL and *err NULL: the caller keeps its own values. */
double *observe_user_series(gw_observe *o, int type, const char *name, const char *help, const char *labels,
                            const double *bounds, int nbounds, const char **err);

#endif
