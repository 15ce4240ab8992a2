/* The master's view of the metrics: the workers' slots (metrics_shm.h) merged by label value, the
 * counts of workers that have exited kept in a merged set of their own, and the renderings: the
 * Prometheus text format for /metrics and the figures of the status page. Not on any request path
 * of a worker: the master merges when scraped, and every few seconds for the status page. */
#ifndef LUAGATE_METRICS_AGG_H
#define LUAGATE_METRICS_AGG_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "metrics_shm.h"

typedef struct agg_route {
    char name[MS_NAME];
    uint64_t req[MS_METHODS][MS_CLASSES];
    uint64_t buckets[MS_BUCKETS];
    uint64_t sum_us;
} agg_route;

typedef struct agg_upstream {
    char name[MS_NAME];
    uint64_t calls[MS_OUTCOMES];
    uint64_t buckets[MS_BUCKETS];
    uint64_t sum_us;
} agg_upstream;

typedef struct agg_user {
    ms_user_series meta; /* name, help, labels, type, bounds */
    double values[MS_USER_BUCKETS + 2];
} agg_user;

typedef struct metrics_agg {
    agg_route *routes;
    size_t nroutes, caproutes;
    agg_upstream *ups;
    size_t nups, capups;
    agg_user *users;
    size_t nusers, capusers;
    /* Gauges of the live workers (never kept from exited ones), and one counter. */
    uint64_t connections, in_flight, upstream_active, upstream_idle;
    uint64_t upstream_opened;
    int workers;
} metrics_agg;

/* What only the master knows. */
typedef struct master_figures {
    int generation;       /* serving, 0 before the first */
    int workers;          /* configured */
    bool ready;           /* routes loaded, serving, not draining */
    uint64_t restarts;    /* workers that died and were replaced */
    uint64_t reloads, reloads_failed;
    uint64_t started_unix;
} master_figures;

void agg_free(metrics_agg *a);
/* Add a slot's counts (and its gauges when live). 0, or -1 when out of memory. */
int agg_add_slot(metrics_agg *a, const ms_slot *s, bool live);
/* Add every count of src (gauges too). */
int agg_add(metrics_agg *dst, const metrics_agg *src);

/* The Prometheus text format (0.0.4). 0, or -1 when out of memory. */
int agg_render_prometheus(const metrics_agg *a, const master_figures *m, gw_buf *out);

/* The q-quantile (0..1) of the durations in buckets, in milliseconds, interpolated within its
 * bucket as Prometheus' histogram_quantile does; -1 when there is no observation. */
double agg_quantile_ms(const uint64_t *buckets, double q);

#endif
