#include "metrics_agg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const METHODS[MS_METHODS] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"};
static const char *const CLASSES[MS_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
/* Outcomes 5..15 are the fetch error kinds 1..11, as fetch_error_name spells them (with '_'). */
static const char *const OUTCOMES[MS_OUTCOMES] = {
    "1xx",         "2xx",           "3xx",        "4xx",          "5xx",          "timeout",
    "refused",     "resolve",       "reset",      "empty_reply",  "too_large",    "bad_response",
    "no_fds",      "body_failed",   "gateway_busy", "internal",   "cancelled"};

void agg_free(metrics_agg *a) {
    free(a->routes);
    free(a->ups);
    free(a->users);
    *a = (metrics_agg){0};
}

/* Find name in a table of records each starting with char[MS_NAME], or add a zeroed one. hint: the
 * index to try first (slots of one generation list names in the same order). */
static void *find_or_add(void **table, size_t *n, size_t *cap, size_t size, const char *name, size_t hint) {
    char *base = *table;
    if (hint < *n && strcmp(base + hint * size, name) == 0) return base + hint * size;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(base + i * size, name) == 0) return base + i * size;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char *p = realloc(base, ncap * size);
        if (!p) return NULL;
        *table = base = p;
        *cap = ncap;
    }
    char *rec = base + (*n)++ * size;
    memset(rec, 0, size);
    snprintf(rec, MS_NAME, "%s", name);
    return rec;
}

static agg_route *route_of(metrics_agg *a, const char *name, size_t hint) {
    return find_or_add((void **)&a->routes, &a->nroutes, &a->caproutes, sizeof *a->routes, name, hint);
}

static agg_upstream *upstream_of(metrics_agg *a, const char *name, size_t hint) {
    return find_or_add((void **)&a->ups, &a->nups, &a->capups, sizeof *a->ups, name, hint);
}

/* User series are keyed by name and labels together. */
static agg_user *user_of(metrics_agg *a, const ms_user_series *m) {
    for (size_t i = 0; i < a->nusers; i++)
        if (strcmp(a->users[i].meta.name, m->name) == 0 && strcmp(a->users[i].meta.labels, m->labels) == 0)
            return a->users[i].meta.type == m->type ? &a->users[i] : NULL; /* another type: the first wins */
    if (a->nusers == a->capusers) {
        size_t ncap = a->capusers ? a->capusers * 2 : 16;
        agg_user *p = realloc(a->users, ncap * sizeof *p);
        if (!p) return NULL;
        a->users = p;
        a->capusers = ncap;
    }
    agg_user *u = &a->users[a->nusers++];
    memset(u, 0, sizeof *u);
    u->meta = *m;
    return u;
}

static const char *slot_route_name(const ms_slot *s, uint32_t i) {
    return i == 0 ? "(unmatched)" : s->routes[i];
}

static const char *slot_upstream_name(const ms_slot *s, uint32_t i) {
    return i == 0 ? "(url)" : s->upstreams[i];
}

int agg_add_slot(metrics_agg *a, const ms_slot *s, bool live) {
    uint32_t nr = ms_load_count(&s->nroutes), nu = ms_load_count(&s->nupstreams), nx = ms_load_count(&s->nuser);
    if (nr == 0) nr = 1; /* route 0 counts even when no route was registered */
    if (nu == 0) nu = 1;
    for (uint32_t i = 0; i < nr && i < MS_ROUTES; i++) {
        if (i > 0 && !s->routes[i][0]) continue; /* an id not published (the "(other)" gap) */
        agg_route *r = route_of(a, slot_route_name(s, i), i);
        if (!r) return -1;
        for (int m = 0; m < MS_METHODS; m++)
            for (int c = 0; c < MS_CLASSES; c++) r->req[m][c] += ms_load(&s->requests[i][m][c]);
        for (int b = 0; b < MS_BUCKETS; b++) r->buckets[b] += ms_load(&s->req_buckets[i][b]);
        r->sum_us += ms_load(&s->req_sum_us[i]);
    }
    for (uint32_t i = 0; i < nu && i < MS_UPSTREAMS; i++) {
        if (i > 0 && !s->upstreams[i][0]) continue;
        agg_upstream *u = upstream_of(a, slot_upstream_name(s, i), i);
        if (!u) return -1;
        for (int o = 0; o < MS_OUTCOMES; o++) u->calls[o] += ms_load(&s->calls[i][o]);
        for (int b = 0; b < MS_BUCKETS; b++) u->buckets[b] += ms_load(&s->call_buckets[i][b]);
        u->sum_us += ms_load(&s->call_sum_us[i]);
    }
    for (uint32_t i = 0; i < nx && i < MS_USER_SERIES; i++) {
        const ms_user_series *m = &s->user[i];
        if (m->type == MS_GAUGE && !live) continue; /* a dead worker's gauge means nothing any more */
        agg_user *u = user_of(a, m);
        if (!u) continue;
        uint32_t n = m->type == MS_HISTOGRAM ? m->nbounds + 2 : 1;
        const volatile double *v = &s->user_values[m->offset]; /* written by the worker's Lua (FFI) */
        for (uint32_t k = 0; k < n && m->offset + k < MS_USER_VALUES; k++) u->values[k] += v[k];
    }
    a->upstream_opened += ms_load(&s->upstream_opened);
    if (live) {
        a->connections += ms_load(&s->connections);
        a->in_flight += ms_load(&s->in_flight);
        a->upstream_active += ms_load(&s->upstream_active);
        a->upstream_idle += ms_load(&s->upstream_idle);
        a->workers++;
    }
    return 0;
}

int agg_add(metrics_agg *dst, const metrics_agg *src) {
    for (size_t i = 0; i < src->nroutes; i++) {
        const agg_route *s = &src->routes[i];
        agg_route *d = route_of(dst, s->name, i);
        if (!d) return -1;
        for (int m = 0; m < MS_METHODS; m++)
            for (int c = 0; c < MS_CLASSES; c++) d->req[m][c] += s->req[m][c];
        for (int b = 0; b < MS_BUCKETS; b++) d->buckets[b] += s->buckets[b];
        d->sum_us += s->sum_us;
    }
    for (size_t i = 0; i < src->nups; i++) {
        const agg_upstream *s = &src->ups[i];
        agg_upstream *d = upstream_of(dst, s->name, i);
        if (!d) return -1;
        for (int o = 0; o < MS_OUTCOMES; o++) d->calls[o] += s->calls[o];
        for (int b = 0; b < MS_BUCKETS; b++) d->buckets[b] += s->buckets[b];
        d->sum_us += s->sum_us;
    }
    for (size_t i = 0; i < src->nusers; i++) {
        agg_user *d = user_of(dst, &src->users[i].meta);
        if (!d) continue;
        for (int k = 0; k < MS_USER_BUCKETS + 2; k++) d->values[k] += src->users[i].values[k];
    }
    dst->connections += src->connections;
    dst->in_flight += src->in_flight;
    dst->upstream_active += src->upstream_active;
    dst->upstream_idle += src->upstream_idle;
    dst->upstream_opened += src->upstream_opened;
    dst->workers += src->workers;
    return 0;
}

/* ---- the Prometheus text format ---- */

typedef struct out {
    gw_buf *b;
    int failed;
} out;

static void emit(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(out *o, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    if (buf_append(o->b, line, (size_t)n)) o->failed = 1;
}

/* A label value as the text format escapes it: backslash, double quote, line feed. */
static const char *esc(const char *s, char *buf, size_t len) {
    size_t o = 0;
    for (; *s && o + 2 < len; s++) {
        if (*s == '\\' || *s == '"') buf[o++] = '\\', buf[o++] = *s;
        else if (*s == '\n') buf[o++] = '\\', buf[o++] = 'n';
        else buf[o++] = *s;
    }
    buf[o] = '\0';
    return buf;
}

static void family(out *o, const char *name, const char *type, const char *help) {
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(out *o, const char *name, const char *label, const char *value, const uint64_t *buckets,
                      uint64_t sum_us) {
    uint64_t cum = 0;
    for (int b = 0; b < MS_BUCKETS; b++) {
        cum += buckets[b];
        if (b < MS_BUCKETS - 1)
            emit(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value, (double)MS_BOUNDS_US[b] / 1e6,
                 (unsigned long long)cum);
        else
            emit(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value, (unsigned long long)cum);
    }
    emit(o, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, (double)sum_us / 1e6);
    emit(o, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)cum);
}

static uint64_t total(const uint64_t *v, int n) {
    uint64_t t = 0;
    for (int i = 0; i < n; i++) t += v[i];
    return t;
}

static void render_user(out *o, const metrics_agg *a) {
    static const char *const types[] = {"", "counter", "gauge", "histogram"};
    for (size_t i = 0; i < a->nusers; i++) {
        const ms_user_series *m = &a->users[i].meta;
        bool first = true; /* the family's head goes with its first series */
        for (size_t j = 0; j < i && first; j++) first = strcmp(a->users[j].meta.name, m->name) != 0;
        if (!first) continue;
        family(o, m->name, types[m->type], m->help[0] ? m->help : m->name);
        for (size_t j = i; j < a->nusers; j++) {
            const agg_user *u = &a->users[j];
            if (strcmp(u->meta.name, m->name) != 0 || u->meta.type != m->type) continue;
            const char *l = u->meta.labels, *sep = l[0] ? "," : "";
            if (m->type != MS_HISTOGRAM) {
                emit(o, "%s%s%s%s %.15g\n", m->name, l[0] ? "{" : "", l, l[0] ? "}" : "", u->values[0]);
                continue;
            }
            double cum = 0;
            for (uint32_t b = 0; b <= u->meta.nbounds; b++) {
                cum += u->values[b];
                if (b < u->meta.nbounds) emit(o, "%s_bucket{%s%sle=\"%.15g\"} %.15g\n", m->name, l, sep, u->meta.bounds[b], cum);
                else emit(o, "%s_bucket{%s%sle=\"+Inf\"} %.15g\n", m->name, l, sep, cum);
            }
            emit(o, "%s_sum%s%s%s %.15g\n", m->name, l[0] ? "{" : "", l, l[0] ? "}" : "", u->values[u->meta.nbounds + 1]);
            emit(o, "%s_count%s%s%s %.15g\n", m->name, l[0] ? "{" : "", l, l[0] ? "}" : "", cum);
        }
    }
}

int agg_render_prometheus(const metrics_agg *a, const master_figures *m, gw_buf *b) {
    out o = {.b = b};
    char v[2 * MS_NAME + 8];
    family(&o, "luagate_requests_total", "counter",
           "Requests answered, by route pattern, method and status class (a client that left before its answer counts as 499).");
    for (size_t i = 0; i < a->nroutes; i++)
        for (int k = 0; k < MS_METHODS; k++)
            for (int c = 0; c < MS_CLASSES; c++)
                if (a->routes[i].req[k][c])
                    emit(&o, "luagate_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %llu\n",
                         esc(a->routes[i].name, v, sizeof v), METHODS[k], CLASSES[c], (unsigned long long)a->routes[i].req[k][c]);
    family(&o, "luagate_request_duration_seconds", "histogram",
           "Time from a request's first byte to the end of its answer, by route pattern.");
    for (size_t i = 0; i < a->nroutes; i++)
        if (total(a->routes[i].buckets, MS_BUCKETS))
            histogram(&o, "luagate_request_duration_seconds", "route", esc(a->routes[i].name, v, sizeof v),
                      a->routes[i].buckets, a->routes[i].sum_us);
    family(&o, "luagate_upstream_requests_total", "counter",
           "Upstream calls, by upstream name and outcome: the status class of the answer, or the kind of failure.");
    for (size_t i = 0; i < a->nups; i++)
        for (int k = 0; k < MS_OUTCOMES; k++)
            if (a->ups[i].calls[k])
                emit(&o, "luagate_upstream_requests_total{upstream=\"%s\",outcome=\"%s\"} %llu\n",
                     esc(a->ups[i].name, v, sizeof v), OUTCOMES[k], (unsigned long long)a->ups[i].calls[k]);
    family(&o, "luagate_upstream_request_duration_seconds", "histogram",
           "Time from the start of an upstream call to the end of its answer (or its failure), by upstream name.");
    for (size_t i = 0; i < a->nups; i++)
        if (total(a->ups[i].buckets, MS_BUCKETS))
            histogram(&o, "luagate_upstream_request_duration_seconds", "upstream", esc(a->ups[i].name, v, sizeof v),
                      a->ups[i].buckets, a->ups[i].sum_us);
    family(&o, "luagate_connections", "gauge", "Open client connections.");
    emit(&o, "luagate_connections %llu\n", (unsigned long long)a->connections);
    family(&o, "luagate_requests_in_flight", "gauge", "Requests received and not answered yet.");
    emit(&o, "luagate_requests_in_flight %llu\n", (unsigned long long)a->in_flight);
    family(&o, "luagate_upstream_connections", "gauge",
           "Upstream connections: active (a call in flight on each) and idle (kept for reuse).");
    emit(&o, "luagate_upstream_connections{state=\"active\"} %llu\n", (unsigned long long)a->upstream_active);
    emit(&o, "luagate_upstream_connections{state=\"idle\"} %llu\n", (unsigned long long)a->upstream_idle);
    family(&o, "luagate_upstream_connections_opened_total", "counter", "Upstream connections opened.");
    emit(&o, "luagate_upstream_connections_opened_total %llu\n", (unsigned long long)a->upstream_opened);
    family(&o, "luagate_workers", "gauge", "Worker processes counting (every live generation's).");
    emit(&o, "luagate_workers %d\n", a->workers);
    family(&o, "luagate_worker_restarts_total", "counter", "Workers that died while serving and were replaced.");
    emit(&o, "luagate_worker_restarts_total %llu\n", (unsigned long long)m->restarts);
    family(&o, "luagate_reloads_total", "counter", "Reloads (SIGHUP), by result.");
    emit(&o, "luagate_reloads_total{result=\"ok\"} %llu\n", (unsigned long long)m->reloads);
    emit(&o, "luagate_reloads_total{result=\"failed\"} %llu\n", (unsigned long long)m->reloads_failed);
    family(&o, "luagate_config_generation", "gauge", "The generation of the config serving (1 at start, +1 each reload).");
    emit(&o, "luagate_config_generation %d\n", m->generation);
    family(&o, "luagate_ready", "gauge", "1 when routes are loaded and the gateway is not draining.");
    emit(&o, "luagate_ready %d\n", m->ready ? 1 : 0);
    family(&o, "luagate_start_time_seconds", "gauge", "When the master started, in seconds since the epoch.");
    emit(&o, "luagate_start_time_seconds %llu\n", (unsigned long long)m->started_unix);
    family(&o, "luagate_build_info", "gauge", "The version of luagate.");
    emit(&o, "luagate_build_info{version=\"%s\"} 1\n", LUAGATE_VERSION);
    render_user(&o, a);
    return o.failed ? -1 : 0;
}

double agg_quantile_ms(const uint64_t *buckets, double q) {
    uint64_t n = total(buckets, MS_BUCKETS);
    if (n == 0) return -1;
    double rank = q * (double)n, cum = 0;
    for (int b = 0; b < MS_BUCKETS; b++) {
        double prev = cum;
        cum += (double)buckets[b];
        if (cum < rank || buckets[b] == 0) continue;
        if (b == MS_BUCKETS - 1) return (double)MS_BOUNDS_US[MS_BUCKETS - 2] / 1000; /* past the last bound */
        double lo = b ? (double)MS_BOUNDS_US[b - 1] : 0, hi = (double)MS_BOUNDS_US[b];
        return (lo + (hi - lo) * (rank - prev) / (double)buckets[b]) / 1000;
    }
    return (double)MS_BOUNDS_US[MS_BUCKETS - 2] / 1000;
}
