#include "status_http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "server.h"

#define SAMPLE_MS 2000
#define NSAMPLES 151   /* 5 minutes of samples */
#define WINDOW_S 60    /* the status page's figures: over the last minute */
#define RETRY_MS 1000

/* A series of the status page: a route or an upstream, by a stable index. */
typedef struct series_total {
    uint64_t count, errors, sum_us;
    uint64_t buckets[MS_BUCKETS];
} series_total;

typedef struct series_name {
    bool upstream;
    char name[MS_NAME];
} series_name;

typedef struct sample {
    uint64_t t_ms; /* loop time */
    size_t n;
    series_total *s; /* by series index */
    uint64_t requests, errors;
} sample;

struct gw_status {
    uv_loop_t *loop;
    void (*figures)(void *arg, master_figures *out);
    void *arg;
    ms_region region;
    metrics_agg retired; /* the counts of workers that have exited */
    gw_server *srv;
    gw_address bound; /* what srv listens on */
    gw_address want;  /* what it should listen on (port -1: nothing) */
    uv_timer_t retry, sampler;
    int handles;
    bool closing;
    bool retrying; /* the bind failed: said once */
    uint64_t started_unix;
    series_name *names;
    size_t nnames, capnames;
    sample ring[NSAMPLES];
    int head, count; /* the newest sample is ring[head - 1] */
    char *page;
    size_t page_len;
};

static void maybe_free(gw_status *s);

/* ---- the counts ---- */

static int current(gw_status *s, metrics_agg *a) {
    *a = (metrics_agg){0};
    if (agg_add(a, &s->retired)) return -1;
    for (int i = 0; i < MS_SLOTS; i++) {
        const ms_slot *slot = ms_live_slot(&s->region, i);
        if (slot && agg_add_slot(a, slot, true)) return -1;
    }
    return 0;
}

void status_worker_exited(gw_status *s, int pid) {
    int index;
    ms_slot *slot = s ? ms_slot_of_pid(&s->region, pid, &index) : NULL;
    if (!slot) return;
    if (__atomic_load_n(&slot->live, __ATOMIC_ACQUIRE) && agg_add_slot(&s->retired, slot, false))
        log_error("metrics: out of memory keeping the counts of worker pid %d", pid);
    ms_release(&s->region, index);
}

int status_region_fd(const gw_status *s) {
    return s ? s->region.fd : -1;
}

/* ---- samples for the status page ---- */

static size_t series_index(gw_status *s, bool upstream, const char *name) {
    for (size_t i = 0; i < s->nnames; i++)
        if (s->names[i].upstream == upstream && strcmp(s->names[i].name, name) == 0) return i;
    if (s->nnames == s->capnames) {
        size_t ncap = s->capnames ? s->capnames * 2 : 32;
        series_name *p = realloc(s->names, ncap * sizeof *p);
        if (!p) return (size_t)-1;
        s->names = p;
        s->capnames = ncap;
    }
    s->names[s->nnames].upstream = upstream;
    snprintf(s->names[s->nnames].name, MS_NAME, "%s", name);
    return s->nnames++;
}

/* The totals as they are now. */
static void take_sample(gw_status *s, sample *smp) {
    metrics_agg a;
    *smp = (sample){.t_ms = uv_now(s->loop)};
    if (current(s, &a)) {
        agg_free(&a);
        return;
    }
    for (size_t i = 0; i < a.nroutes; i++) series_index(s, false, a.routes[i].name);
    for (size_t i = 0; i < a.nups; i++) series_index(s, true, a.ups[i].name);
    smp->s = calloc(s->nnames ? s->nnames : 1, sizeof *smp->s);
    if (smp->s) {
        smp->n = s->nnames;
        for (size_t i = 0; i < a.nroutes; i++) {
            size_t k = series_index(s, false, a.routes[i].name);
            if (k >= smp->n) continue;
            series_total *st = &smp->s[k];
            for (int m = 0; m < MS_METHODS; m++)
                for (int c = 0; c < MS_CLASSES; c++) st->count += a.routes[i].req[m][c];
            for (int m = 0; m < MS_METHODS; m++) st->errors += a.routes[i].req[m][4];
            memcpy(st->buckets, a.routes[i].buckets, sizeof st->buckets);
            st->sum_us = a.routes[i].sum_us;
            smp->requests += st->count;
            smp->errors += st->errors;
        }
        for (size_t i = 0; i < a.nups; i++) {
            size_t k = series_index(s, true, a.ups[i].name);
            if (k >= smp->n) continue;
            series_total *st = &smp->s[k];
            for (int o = 0; o < MS_OUTCOMES; o++) st->count += a.ups[i].calls[o];
            for (int o = 4; o < MS_OUTCOME_CANCELLED; o++) st->errors += a.ups[i].calls[o]; /* 5xx and failures */
            memcpy(st->buckets, a.ups[i].buckets, sizeof st->buckets);
            st->sum_us = a.ups[i].sum_us;
        }
    }
    agg_free(&a);
}

static void on_sample(uv_timer_t *t) {
    gw_status *s = t->data;
    free(s->ring[s->head].s);
    take_sample(s, &s->ring[s->head]);
    s->head = (s->head + 1) % NSAMPLES;
    if (s->count < NSAMPLES) s->count++;
}

/* The i-th newest sample (0: the newest). */
static const sample *sample_at(const gw_status *s, int i) {
    return &s->ring[(s->head - 1 - i + 2 * NSAMPLES) % NSAMPLES];
}

/* ---- the answers ---- */

typedef struct jbuf {
    gw_buf b;
    bool failed;
} jbuf;

static void jprintf(jbuf *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jprintf(jbuf *j, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp || buf_append(&j->b, tmp, (size_t)n)) j->failed = true;
}

static void jstring(jbuf *j, const char *str) {
    static const char hex[] = "0123456789abcdef";
    if (buf_append(&j->b, "\"", 1)) j->failed = true;
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        char e[6] = {'\\', (char)*p};
        size_t n = 2;
        if (*p < 0x20 || *p >= 0x7f) e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[*p >> 4], e[5] = hex[*p & 15], n = 6;
        else if (*p != '"' && *p != '\\') e[0] = (char)*p, n = 1;
        if (buf_append(&j->b, e, n)) j->failed = true;
    }
    if (buf_append(&j->b, "\"", 1)) j->failed = true;
}

static void jnumber_or_null(jbuf *j, double v) {
    if (v < 0) jprintf(j, "null");
    else jprintf(j, "%.3f", v);
}

/* Each series over the window: rate, errors, percentiles, and its total. */
static void json_series(jbuf *j, const gw_status *s, const sample *now, const sample *then, double secs, bool upstream) {
    bool first = true;
    jprintf(j, "[");
    for (size_t k = 0; k < now->n; k++) {
        const series_total *a = &now->s[k];
        if (s->names[k].upstream != upstream || (a->count == 0 && s->names[k].name[0] == '(' && strcmp(s->names[k].name, "(unmatched)") != 0))
            continue; /* "(other)" and "(url)" only once something counts there */
        series_total zero = {0};
        const series_total *b = then && k < then->n ? &then->s[k] : &zero;
        uint64_t d[MS_BUCKETS];
        for (int i = 0; i < MS_BUCKETS; i++) d[i] = a->buckets[i] - b->buckets[i];
        uint64_t n = a->count - b->count, e = a->errors - b->errors;
        jprintf(j, "%s{\"name\":", first ? "" : ",");
        jstring(j, s->names[k].name);
        jprintf(j, ",\"total\":%llu,\"errors_total\":%llu,\"rps\":%.2f,\"errors_per_s\":%.2f,\"error_ratio\":%.4f,\"p50_ms\":",
                (unsigned long long)a->count, (unsigned long long)a->errors, secs > 0 ? (double)n / secs : 0,
                secs > 0 ? (double)e / secs : 0, n ? (double)e / (double)n : 0);
        jnumber_or_null(j, agg_quantile_ms(d, 0.5));
        jprintf(j, ",\"p90_ms\":");
        jnumber_or_null(j, agg_quantile_ms(d, 0.9));
        jprintf(j, ",\"p99_ms\":");
        jnumber_or_null(j, agg_quantile_ms(d, 0.99));
        jprintf(j, "}");
        first = false;
    }
    jprintf(j, "]");
}

static void json_workers(jbuf *j, const gw_status *s) {
    bool first = true;
    jprintf(j, "[");
    for (int i = 0; i < MS_SLOTS; i++) {
        const ms_slot *w = ms_live_slot(&s->region, i);
        if (!w) continue;
        jprintf(j, "%s{\"id\":%d,\"pid\":%d,\"generation\":%d,\"started\":%llu,\"connections\":%llu,\"in_flight\":%llu,"
                   "\"upstream_active\":%llu,\"upstream_idle\":%llu}",
                first ? "" : ",", w->worker_id, w->pid, w->generation, (unsigned long long)w->started_unix,
                (unsigned long long)ms_load(&w->connections), (unsigned long long)ms_load(&w->in_flight),
                (unsigned long long)ms_load(&w->upstream_active), (unsigned long long)ms_load(&w->upstream_idle));
        first = false;
    }
    jprintf(j, "]");
}

static int render_json(gw_status *s, gw_buf *out) {
    master_figures m = {0};
    s->figures(s->arg, &m);
    sample cur; /* figures as of now, against the oldest sample within the window */
    take_sample(s, &cur);
    const sample *now = &cur, *then = NULL;
    int back = 0;
    while (back < s->count && now->t_ms - sample_at(s, back)->t_ms <= WINDOW_S * 1000) back++;
    if (back > 0) then = sample_at(s, back - 1);
    if (then && then->t_ms == now->t_ms) then = NULL;
    double secs = then ? (double)(now->t_ms - then->t_ms) / 1000 : 0;
    jbuf j = {0};
    jprintf(&j, "{\"version\":\"%s\",\"generation\":%d,\"workers_configured\":%d,\"ready\":%s,\"started\":%llu,"
                "\"now\":%llu,\"restarts\":%llu,\"reloads\":%llu,\"reloads_failed\":%llu,\"window_s\":%.1f,",
            LUAGATE_VERSION, m.generation, m.workers, m.ready ? "true" : "false", (unsigned long long)m.started_unix,
            (unsigned long long)time(NULL), (unsigned long long)m.restarts, (unsigned long long)m.reloads,
            (unsigned long long)m.reloads_failed, secs);
    jprintf(&j, "\"requests_total\":%llu,\"errors_total\":%llu,\"rps\":%.2f,\"workers\":",
            (unsigned long long)now->requests, (unsigned long long)now->errors,
            then && secs > 0 ? (double)(now->requests - then->requests) / secs : 0);
    json_workers(&j, s);
    jprintf(&j, ",\"routes\":");
    json_series(&j, s, now, then, secs, false);
    jprintf(&j, ",\"upstreams\":");
    json_series(&j, s, now, then, secs, true);
    /* Requests and errors per second between consecutive samples, oldest first. */
    jprintf(&j, ",\"history\":{\"interval_s\":%d,\"rps\":[", SAMPLE_MS / 1000);
    for (int i = s->count - 1; i > 0; i--) {
        const sample *a = sample_at(s, i - 1), *b = sample_at(s, i);
        double dt = (double)(a->t_ms - b->t_ms) / 1000;
        jprintf(&j, "%s%.2f", i == s->count - 1 ? "" : ",", dt > 0 ? (double)(a->requests - b->requests) / dt : 0);
    }
    jprintf(&j, "],\"errors\":[");
    for (int i = s->count - 1; i > 0; i--) {
        const sample *a = sample_at(s, i - 1), *b = sample_at(s, i);
        double dt = (double)(a->t_ms - b->t_ms) / 1000;
        jprintf(&j, "%s%.2f", i == s->count - 1 ? "" : ",", dt > 0 ? (double)(a->errors - b->errors) / dt : 0);
    }
    jprintf(&j, "]}}\n");
    free(cur.s);
    *out = j.b;
    return j.failed ? -1 : 0;
}

static void answer(gw_request *req, int status, const char *ctype, const char *body, size_t len) {
    gw_header nocache = {"Cache-Control", 13, "no-store", 8};
    gw_response r = {.status = status, .content_type = ctype, .content_type_len = strlen(ctype), .body = body,
                     .body_len = len, .headers = &nocache, .nheaders = 1};
    server_respond(req, &r);
}

static void answer_text(gw_request *req, int status, const char *text) {
    answer(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

static bool is(const gw_request *req, const char *path) {
    return req->path_len == strlen(path) && memcmp(req->path, path, req->path_len) == 0;
}

static void on_request(gw_request *req, void *data) {
    gw_status *s = data;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        gw_header allow = {"Allow", 5, "GET, HEAD", 9};
        gw_response r = {.status = 405, .headers = &allow, .nheaders = 1, .body = "", .body_len = 0};
        server_respond(req, &r);
        return;
    }
    master_figures m = {0};
    s->figures(s->arg, &m);
    if (is(req, "/healthz") || is(req, "/livez")) {
        answer_text(req, 200, "ok\n"); /* the master answers: it is alive */
    } else if (is(req, "/readyz")) {
        answer_text(req, m.ready ? 200 : 503, m.ready ? "ready\n" : m.generation ? "draining\n" : "starting\n");
    } else if (is(req, "/metrics") || is(req, "/status.json")) {
        gw_buf b = {0};
        metrics_agg a;
        int r;
        if (is(req, "/metrics")) r = current(s, &a) || agg_render_prometheus(&a, &m, &b);
        else a = (metrics_agg){0}, r = render_json(s, &b);
        agg_free(&a);
        if (r) answer_text(req, 500, "out of memory\n");
        else if (is(req, "/metrics")) answer(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
        else answer(req, 200, "application/json", b.data, b.len);
        buf_free(&b);
    } else if (is(req, "/status") || is(req, "/")) {
        if (s->page) answer(req, 200, "text/html; charset=utf-8", s->page, s->page_len);
        else answer_text(req, 404, "the status page (status.html) was not found beside the Lua library\n");
    } else {
        answer_text(req, 404, "not found: try /metrics, /healthz, /readyz or /status\n");
    }
}

static void on_abort(gw_request *req, void *data) {
    (void)req, (void)data; /* every answer is made at once: nothing waits */
}

static void on_body(gw_request *req, void *data) {
    (void)req, (void)data;
}

/* ---- the listener ---- */

static bool same(const gw_address *a, const gw_address *b) {
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static void on_server_closed(void *arg) {
    gw_status *s = arg;
    s->handles--;
    maybe_free(s);
}

static void stop_server(gw_status *s) {
    if (!s->srv) return;
    server_shutdown(s->srv, on_server_closed, s);
    server_close_all(s->srv);
    s->srv = NULL;
}

static void on_retry(uv_timer_t *t);

static void try_listen(gw_status *s) {
    gw_app app = {.on_request = on_request, .on_abort = on_abort, .on_body = on_body, .data = s};
    gw_limits limits = {.max_header_size = 8192, .max_body_size = 0, .keepalive_timeout_ms = 60000,
                        .read_timeout_ms = 10000, .backlog = 64};
    gw_listen where = {.host = s->want.host, .port = s->want.port};
    int r = server_start(&s->srv, s->loop, &where, &limits, &app);
    char url[96];
    config_address_url(&s->want, r == 0 ? server_port(s->srv) : s->want.port, url, sizeof url);
    if (r < 0) {
        if (!s->retrying) log_error("metrics_listen %s: %s; trying again every second", url, uv_strerror(r));
        s->retrying = true;
        s->srv = NULL;
        uv_timer_start(&s->retry, on_retry, RETRY_MS, 0);
        return;
    }
    s->handles++;
    s->bound = s->want;
    s->retrying = false;
    log_info("metrics on %s/metrics; health %s/healthz, %s/readyz; status page %s/status", url, url, url, url);
}

static void on_retry(uv_timer_t *t) {
    try_listen(t->data);
}

void status_listen(gw_status *s, const gw_address *addr) {
    if (!s || s->closing) return;
    if (s->srv && same(&s->bound, addr)) return;
    uv_timer_stop(&s->retry);
    stop_server(s);
    s->want = *addr;
    if (addr->port >= 0) try_listen(s);
}

/* ---- life ---- */

static char *read_page(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *p = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n)) && fread(p, 1, (size_t)n, f) != (size_t)n) {
            free(p);
            p = NULL;
        }
        *len = p ? (size_t)n : 0;
    }
    fclose(f);
    return p;
}

gw_status *status_open(uv_loop_t *loop, void (*figures)(void *arg, master_figures *out), void *arg,
                       const char *page_path) {
    gw_status *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    int r = ms_create(&s->region);
    if (r < 0) {
        log_error("metrics: cannot create the shared region: %s; no metrics", uv_strerror(r));
        free(s);
        return NULL;
    }
    s->loop = loop;
    s->figures = figures;
    s->arg = arg;
    s->want.port = -1;
    s->started_unix = (uint64_t)time(NULL);
    s->page = read_page(page_path, &s->page_len);
    uv_timer_init(loop, &s->retry);
    uv_timer_init(loop, &s->sampler);
    s->retry.data = s->sampler.data = s;
    s->handles = 2;
    uv_timer_start(&s->sampler, on_sample, 0, SAMPLE_MS);
    return s;
}

static void maybe_free(gw_status *s) {
    if (!s->closing || s->handles > 0) return;
    for (int i = 0; i < NSAMPLES; i++) free(s->ring[i].s);
    free(s->names);
    free(s->page);
    agg_free(&s->retired);
    ms_destroy(&s->region);
    free(s);
}

static void on_timer_closed(uv_handle_t *h) {
    gw_status *s = h->data;
    s->handles--;
    maybe_free(s);
}

void status_close(gw_status *s) {
    if (!s || s->closing) return;
    s->closing = true;
    stop_server(s);
    uv_close((uv_handle_t *)&s->retry, on_timer_closed);
    uv_close((uv_handle_t *)&s->sampler, on_timer_closed);
}
