#include "observe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics_shm.h"

#define TICK_MS 100

struct gw_observe {
    uv_timer_t timer;
    ms_slot *slot; /* NULL: metrics off */
    gw_fetch *fetch;
    size_t (*connections)(void *arg);
    void *arg;
    int worker_id;
    uint64_t in_flight;
    /* Label values by id, for the log line (the slot has them too, for the master). */
    char *routes[MS_ROUTES];
    int nroutes;
    char *upstreams[MS_UPSTREAMS];
    int nupstreams;
    bool full_said;
};

static const char *const OTHER = "(other)";

static void sample_gauges(gw_observe *o) {
    ms_slot *s = o->slot;
    if (!s) return;
    __atomic_store_n(&s->connections, o->connections ? (uint64_t)o->connections(o->arg) : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->in_flight, o->in_flight, __ATOMIC_RELAXED);
    if (o->fetch) {
        gw_fetch_stats fs;
        fetch_stats(o->fetch, &fs);
        __atomic_store_n(&s->upstream_active, (uint64_t)fs.active, __ATOMIC_RELAXED);
        __atomic_store_n(&s->upstream_idle, (uint64_t)fs.idle, __ATOMIC_RELAXED);
        __atomic_store_n(&s->upstream_opened, (uint64_t)fs.connections_opened, __ATOMIC_RELAXED);
    }
}

static void on_tick(uv_timer_t *t) {
    gw_observe *o = t->data;
    access_log_flush();
    sample_gauges(o);
}

int observe_open(gw_observe **out, uv_loop_t *loop, const observe_options *opts) {
    gw_observe *o = calloc(1, sizeof *o);
    if (!o) return -ENOMEM;
    o->connections = opts->connections;
    o->arg = opts->arg;
    o->worker_id = opts->worker_id;
    trace_seed();
    if (opts->metrics_fd >= 0) {
        o->slot = ms_attach(opts->metrics_fd, opts->worker_id, opts->generation);
        if (!o->slot) log_error("metrics: no slot of the master's region could be taken; this worker counts nothing");
        close(opts->metrics_fd);
    }
    if (o->slot) {
        ms_set_route(o->slot, MS_ROUTES - 1, OTHER);
        ms_set_upstream(o->slot, MS_UPSTREAMS - 1, OTHER);
    }
    int r = 0;
    if (opts->access_log && strcmp(opts->access_log, "off") != 0) r = access_log_open(opts->access_log, opts->format);
    uv_timer_init(loop, &o->timer);
    o->timer.data = o;
    uv_timer_start(&o->timer, on_tick, TICK_MS, TICK_MS);
    *out = o;
    return r;
}

void observe_set_fetch(gw_observe *o, gw_fetch *f) {
    if (o) o->fetch = f;
}

static void on_timer_closed(uv_handle_t *h) {
    gw_observe *o = h->data;
    for (int i = 0; i < o->nroutes; i++) free(o->routes[i]);
    for (int i = 0; i < o->nupstreams; i++) free(o->upstreams[i]);
    ms_detach(o->slot);
    free(o);
}

void observe_close(gw_observe *o) {
    if (!o) return;
    access_log_close();
    o->in_flight = 0;
    sample_gauges(o);
    uv_close((uv_handle_t *)&o->timer, on_timer_closed);
}

/* ---- label ids ---- */

/* names[0..n) hold ids 1..n; the last id of the table is "(other)". */
static int name_id(gw_observe *o, char **names, int *n, int max, const char *name, void (*publish)(ms_slot *, int, const char *)) {
    for (int i = 0; i < *n; i++)
        if (strcmp(names[i], name) == 0) return i + 1;
    if (*n + 2 >= max || !(names[*n] = strdup(name))) {
        if (!o->full_said) log_warn("metrics: more than %d route patterns or upstream names; the others count as %s", max - 2, OTHER);
        o->full_said = true;
        return max - 1;
    }
    (*n)++;
    publish(o->slot, *n, name);
    return *n;
}

int observe_route_id(gw_observe *o, const char *pattern) {
    return o ? name_id(o, o->routes, &o->nroutes, MS_ROUTES, pattern, ms_set_route) : 0;
}

int observe_upstream_id(gw_observe *o, const char *name) {
    return o ? name_id(o, o->upstreams, &o->nupstreams, MS_UPSTREAMS, name, ms_set_upstream) : 0;
}

static const char *route_name(const gw_observe *o, int id) {
    if (id <= 0) return NULL;
    return id <= o->nroutes ? o->routes[id - 1] : OTHER;
}

static const char *upstream_name(const gw_observe *o, int id) {
    if (id <= 0) return "(url)";
    return id <= o->nupstreams ? o->upstreams[id - 1] : OTHER;
}

const char *observe_upstream_name(const gw_observe *o, int id) {
    return o ? upstream_name(o, id) : "(url)";
}

/* ---- requests ---- */

void observe_request_begin(gw_observe *o, gw_req_obs *r, gw_request *req) {
    if (!o) return;
    r->begun = true;
    r->req = req;
    req->obs = r;
    o->in_flight++;
}

/* The ids are made on first use: most requests of a gateway with no access log never need them. */
static const gw_trace *trace_of(gw_req_obs *r, const gw_request *req) {
    if (r->traced) return &r->trace;
    const gw_header *tp = NULL;
    for (size_t i = 0; req && i < req->nheaders; i++) {
        const gw_header *h = &req->headers[i];
        if (h->name_len == 11 && memcmp(h->name, "traceparent", 11) == 0) tp = h;
    }
    trace_begin(&r->trace, tp ? tp->value : NULL, tp ? tp->value_len : 0);
    r->traced = true;
    return &r->trace;
}

const gw_trace *observe_trace(gw_observe *o, gw_req_obs *r) {
    return o && r->begun ? trace_of(r, r->req) : NULL;
}

void observe_request_drop(gw_observe *o, gw_req_obs *r) {
    if (!o || !r->begun || r->ended) return;
    r->ended = true;
    o->in_flight--;
    if (r->req->obs == r) r->req->obs = NULL;
    r->req = NULL;
}

/* GET HEAD POST PUT DELETE PATCH OPTIONS, anything else: by length and first letter. */
static int method_index(const char *m) {
    if (!m) return 7;
    switch (m[0]) {
    case 'G': return m[1] == 'E' && m[2] == 'T' && !m[3] ? 0 : 7;
    case 'H': return strcmp(m, "HEAD") == 0 ? 1 : 7;
    case 'P': return strcmp(m, "POST") == 0 ? 2 : strcmp(m, "PUT") == 0 ? 3 : strcmp(m, "PATCH") == 0 ? 5 : 7;
    case 'D': return strcmp(m, "DELETE") == 0 ? 4 : 7;
    case 'O': return strcmp(m, "OPTIONS") == 0 ? 6 : 7;
    default: return 7;
    }
}

static void count(uint64_t *p, uint64_t n) {
    __atomic_store_n(p, *p + n, __ATOMIC_RELAXED); /* one writer: this worker */
}

/* 1xx..5xx as 0..4 (anything else as the nearest). */
static int class_of(int status) {
    int c = status / 100 - 1;
    return c < 0 ? 0 : c >= MS_CLASSES ? MS_CLASSES - 1 : c;
}

static void count_request(ms_slot *s, int route, const char *method, int status, uint64_t us) {
    count(&s->requests[route][method_index(method)][class_of(status)], 1);
    count(&s->req_buckets[route][ms_bucket(us)], 1);
    count(&s->req_sum_us[route], us);
}

const char *observe_call_error_name(int16_t status) {
    return status >= 0 ? NULL : -status == MS_OUTCOME_CANCELLED ? "cancelled" : fetch_error_name(-status);
}

/* Why a request ended as it did, for its log line: a 499, a cut answer, a 502 or 504. */
static const char *reason_of(const gw_observe *o, const gw_req_obs *r, const gw_request_end *e, char *buf, size_t len) {
    const char *failed = NULL, *kind = NULL;
    if (r && r->failed) {
        failed = upstream_name(o, r->calls[r->failed - 1].up);
        kind = observe_call_error_name(r->calls[r->failed - 1].status);
    }
    if (e->how == GW_END_GONE)
        return e->status ? "client closed the connection mid-answer" : "client closed the connection";
    if (e->how == GW_END_CUT) {
        if (!failed) return "answer cut";
        snprintf(buf, len, "answer cut: upstream %s: %s", failed, kind);
        return buf;
    }
    if ((e->status == 502 || e->status == 504) && failed) {
        snprintf(buf, len, "upstream %s: %s", failed, kind);
        return buf;
    }
    return NULL;
}

void observe_call_result(const gw_req_obs *r, int i, int16_t *status, uint32_t *us) {
    if (r->calls[i].status) {
        *status = r->calls[i].status;
        *us = r->calls[i].us;
    } else { /* still in progress (a stream whose client left): it is cancelled right after */
        *status = -MS_OUTCOME_CANCELLED;
        *us = (uint32_t)(uv_hrtime() / 1000) - r->calls[i].us;
    }
}

static void log_request(gw_observe *o, const gw_request *req, gw_req_obs *r, const gw_request_end *e) {
    access_call calls[OBS_CALLS];
    char trace[33], why[300];
    access_entry a = {.req = req, .end = e, .worker = o->worker_id};
    if (r) {
        for (int i = 0; i < r->ncalls; i++) {
            int16_t status;
            uint32_t us;
            observe_call_result(r, i, &status, &us);
            calls[i] = (access_call){.upstream = upstream_name(o, r->calls[i].up), .us = us,
                                     .status = status > 0 ? status : 0, .error = observe_call_error_name(status)};
        }
        a.calls = calls;
        a.ncalls = r->ncalls;
        a.more_calls = r->more;
        a.route = route_name(o, r->route);
        const gw_trace *t = trace_of(r, req);
        trace_hex64(t->trace_hi, trace);
        trace_hex64(t->trace_lo, trace + 16);
        a.trace_id = trace;
    }
    a.reason = reason_of(o, r, e, why, sizeof why);
    access_log_write(&a);
}

void observe_request_end(gw_observe *o, gw_request *req, const gw_request_end *e) {
    if (!o) return;
    gw_req_obs *r = req->obs;
    if (r && r->ended) r = NULL;
    if (r) observe_request_drop(o, r); /* ended; what it recorded stays readable below */
    req->obs = NULL;
    uint64_t us = e->duration_ns / 1000;
    int status = e->status ? e->status : 499;
    if (o->slot) count_request(o->slot, r ? r->route : 0, req->method, status, us);
    if (access_log_enabled()) log_request(o, req, r, e);
}

/* ---- upstream calls ---- */

void observe_traceparent(gw_observe *o, gw_req_obs *r, char *tp) {
    const gw_trace *t = observe_trace(o, r);
    if (t) trace_format(t, trace_random(), tp);
    else tp[0] = '\0';
}

void observe_call_begin(gw_observe *o, gw_req_obs *r, gw_call_obs *c, int upstream) {
    *c = (gw_call_obs){.t0 = uv_hrtime(), .up = (uint16_t)upstream, .index = -1};
    if (!o || !r->begun || r->ended) return;
    if (r->ncalls < OBS_CALLS) {
        c->index = (int16_t)r->ncalls;
        r->calls[r->ncalls++] = (typeof(r->calls[0])){.up = (uint16_t)upstream, .us = (uint32_t)(c->t0 / 1000)};
    } else {
        r->more++;
    }
}

_Static_assert(MS_CLASSES - 1 + FETCH_ERR_INTERNAL == MS_OUTCOME_CANCELLED - 1,
               "every fetch error kind has an outcome of its own (metrics_shm.h, metrics_agg.c)");

void observe_call_end(gw_observe *o, gw_req_obs *r, gw_call_obs *c, const gw_fetch_error *err, const char *request_id) {
    if (!o || c->t0 == 0) return;
    int status = err ? 0 : c->status;
    uint64_t us = (uv_hrtime() - c->t0) / 1000;
    c->t0 = 0;
    int outcome = status > 0 ? class_of(status) : MS_OUTCOME_CANCELLED;
    if (err) outcome = MS_CLASSES - 1 + err->kind < MS_OUTCOME_CANCELLED ? MS_CLASSES - 1 + err->kind : MS_OUTCOME_CANCELLED - 1;
    if (o->slot) {
        count(&o->slot->calls[c->up][outcome], 1);
        count(&o->slot->call_buckets[c->up][ms_bucket(us)], 1);
        count(&o->slot->call_sum_us[c->up], us);
    }
    if (err)
        log_warn("request %s: upstream %s failed: %s: %s", request_id && *request_id ? request_id : "-",
                 upstream_name(o, c->up), fetch_error_name(err->kind), err->detail);
    if (c->index < 0 || !r || r->ended) return;
    r->calls[c->index].us = (uint32_t)(us > UINT32_MAX ? UINT32_MAX : us);
    r->calls[c->index].status = (int16_t)(status > 0 ? status : err ? -err->kind : -MS_OUTCOME_CANCELLED);
    if (err) r->failed = (uint8_t)(c->index + 1);
}

/* ---- gw.metrics ---- */

static bool valid_name(const char *s) {
    if (!s || !*s || strlen(s) >= sizeof(((ms_user_series *)0)->name)) return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9')) return false;
    }
    return true;
}

double *observe_user_series(gw_observe *o, int type, const char *name, const char *help, const char *labels,
                            const double *bounds, int nbounds, const char **err) {
    *err = NULL;
    if (!valid_name(name)) {
        *err = "a metric name is [a-zA-Z_:][a-zA-Z0-9_:]*, under 96 bytes";
        return NULL;
    }
    if (strlen(labels) >= sizeof(((ms_user_series *)0)->labels) || strlen(help) >= 128) {
        *err = "its labels or help are too long";
        return NULL;
    }
    if (nbounds > MS_USER_BUCKETS) {
        *err = "a histogram has at most 16 buckets";
        return NULL;
    }
    ms_slot *s = o ? o->slot : NULL;
    if (!s) return NULL;
    uint32_t nvalues = type == MS_HISTOGRAM ? (uint32_t)nbounds + 2 : 1;
    if (s->nuser >= MS_USER_SERIES || s->nvalues + nvalues > MS_USER_VALUES) {
        *err = "too many series (gw.metrics holds 256 series, 8192 values, per worker)";
        return NULL;
    }
    ms_user_series *u = &s->user[s->nuser];
    snprintf(u->name, sizeof u->name, "%s", name);
    snprintf(u->help, sizeof u->help, "%s", help);
    snprintf(u->labels, sizeof u->labels, "%s", labels);
    u->type = (uint32_t)type;
    u->nbounds = (uint32_t)nbounds;
    u->offset = s->nvalues;
    for (int i = 0; i < nbounds; i++) u->bounds[i] = bounds[i];
    s->nvalues += nvalues;
    __atomic_store_n(&s->nuser, s->nuser + 1, __ATOMIC_RELEASE);
    return &s->user_values[u->offset];
}
