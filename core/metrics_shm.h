/* The metrics region: memory the master creates (a memfd) and every worker maps, in which each
 * worker counts into a slot of its own. No lock anywhere: a slot has one writer (its worker), and
 * the master only reads it, when scraped, and once more when the worker has exited (to keep its
 * counts: metrics survive a worker's death and a reload). The master hands the region to a worker
 * as the descriptor named "metrics" (fds.h).
 *
 * A slot holds the worker's label values (route patterns, upstream names) in the order the worker
 * registered them, and arrays indexed by those small ids: a request is counted with a few array
 * increments. The master merges slots by label value, never by id, so workers (and generations)
 * that registered different routes still add up. Names are published by writing the entry first
 * and the count after it (release), read count first (acquire). */
#ifndef LUAGATE_METRICS_SHM_H
#define LUAGATE_METRICS_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_SLOTS 520      /* workers alive at once: two generations of 256, and a few restarting */
#define MS_NAME 128       /* bytes of a route pattern or an upstream name, NUL included */
#define MS_ROUTES 256     /* route 0: requests no route matched */
#define MS_UPSTREAMS 64   /* upstream 0: calls to a whole URL */
#define MS_METHODS 8      /* GET HEAD POST PUT DELETE PATCH OPTIONS other */
#define MS_CLASSES 5      /* 1xx .. 5xx */
#define MS_BUCKETS 14     /* MS_BOUNDS_US and +Inf */
#define MS_OUTCOMES 17    /* 0..4: answered 1xx..5xx; 5..15: a fetch error kind (1..11); 16: cancelled */
#define MS_OUTCOME_CANCELLED 16
#define MS_USER_SERIES 256   /* series declared with gw.metrics */
#define MS_USER_VALUES 8192  /* their values (a histogram takes its buckets + 1) */
#define MS_USER_BUCKETS 16   /* bounds of a user histogram, at most */

enum ms_user_type { MS_COUNTER = 1, MS_GAUGE, MS_HISTOGRAM };

/* Upper bounds of the duration buckets, in microseconds: Prometheus' defaults with two finer ones
 * at the low end, where a gateway's own answers fall. */
extern const uint64_t MS_BOUNDS_US[MS_BUCKETS - 1];

typedef struct ms_user_series {
    char name[96];
    char help[128];
    char labels[160]; /* rendered: name="value",... (escaped), or "" */
    uint32_t type;
    uint32_t nbounds;  /* histogram: bounds, then +Inf */
    uint32_t offset;   /* into user_values: 1 value, or nbounds + 1 buckets then the sum */
    uint32_t pad;
    double bounds[MS_USER_BUCKETS];
} ms_user_series;

typedef struct ms_slot {
    /* Written once by the worker at its start, before live is set. */
    uint32_t live; /* 1: laid out and counting (release/acquire) */
    int32_t worker_id, generation, pid;
    uint64_t started_unix;
    /* Counts of names published (release stores; the entries are written before). */
    uint32_t nroutes, nupstreams, nuser, nvalues;
    /* Gauges, set by the worker every ~100 ms. */
    uint64_t connections, in_flight, upstream_active, upstream_idle, upstream_opened;
    char routes[MS_ROUTES][MS_NAME];
    char upstreams[MS_UPSTREAMS][MS_NAME];
    uint64_t requests[MS_ROUTES][MS_METHODS][MS_CLASSES];
    uint64_t req_buckets[MS_ROUTES][MS_BUCKETS]; /* per bucket, not cumulative */
    uint64_t req_sum_us[MS_ROUTES];
    uint64_t calls[MS_UPSTREAMS][MS_OUTCOMES];
    uint64_t call_buckets[MS_UPSTREAMS][MS_BUCKETS];
    uint64_t call_sum_us[MS_UPSTREAMS];
    ms_user_series user[MS_USER_SERIES];
    double user_values[MS_USER_VALUES];
} ms_slot;

#define MS_SLOT_SIZE ((sizeof(ms_slot) + 4095) & ~(size_t)4095)

/* The region's first page: who owns each slot (a worker's pid, 0 when free). */
typedef struct ms_header {
    uint64_t magic;
    uint32_t nslots;
    int32_t owner[MS_SLOTS];
} ms_header;

#define MS_HEADER_SIZE ((sizeof(ms_header) + 4095) & ~(size_t)4095)
#define MS_REGION_SIZE (MS_HEADER_SIZE + (size_t)MS_SLOTS * MS_SLOT_SIZE)

/* ---- the master's side ---- */

typedef struct ms_region {
    int fd;
    ms_header *header;
    char *base; /* the whole region, mapped read-write (the master frees slots) */
} ms_region;

/* Create the region (pages are only allocated as workers touch them). 0 or a negative errno. */
int ms_create(ms_region *r);
void ms_destroy(ms_region *r);
/* The slot of a live worker, NULL for a free or not yet laid out one. */
const ms_slot *ms_live_slot(const ms_region *r, int i);
/* The slot a worker with this pid owned (live or not), for its final counts; NULL if none. */
ms_slot *ms_slot_of_pid(ms_region *r, int pid, int *index);
/* After its final counts were kept: the slot is free for another worker. */
void ms_release(ms_region *r, int index);

/* ---- a worker's side ---- */

/* Claim a free slot of the region fd, map it and lay it out: NULL when none is free or the region
 * cannot be mapped (the worker then counts nothing, and says so). */
ms_slot *ms_attach(int fd, int worker_id, int generation);
void ms_detach(ms_slot *s);

/* Publish the name of route (or upstream) id: ids are given densely from 1 by the worker (0 is
 * "no route" / "a whole URL"). Names are truncated to MS_NAME - 1 bytes. */
void ms_set_route(ms_slot *s, int id, const char *name);
void ms_set_upstream(ms_slot *s, int id, const char *name);

static inline uint64_t ms_load(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint32_t ms_load_count(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* The bucket of a duration: a few compares, short ones first. */
static inline int ms_bucket(uint64_t us) {
    int b = 0;
    while (b < MS_BUCKETS - 1 && us > MS_BOUNDS_US[b]) b++;
    return b;
}

#endif
