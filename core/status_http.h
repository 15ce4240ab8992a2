/* The master's own listener (metrics_listen, loopback by default): Prometheus /metrics, liveness
 * (/healthz) and readiness (/readyz), and a live status page (/status, refreshing itself from
 * /status.json). Served by the master with the project's server code and a small C app: the master
 * runs no Lua. It owns the metrics region the workers count into (metrics_shm.h), keeps the counts
 * of workers that exit, and samples the totals every few seconds for the status page's figures
 * over the last minutes. */
#ifndef LUAGATE_STATUS_HTTP_H
#define LUAGATE_STATUS_HTTP_H

#include <uv.h>

#include "config.h"
#include "metrics_agg.h"

typedef struct gw_status gw_status;

/* figures(arg, out): what only the master knows, asked for at each scrape. page_path: the status
 * page's HTML. NULL when out of memory or the region cannot be made (then there are no metrics). */
gw_status *status_open(uv_loop_t *loop, void (*figures)(void *arg, master_figures *out), void *arg,
                       const char *page_path);
/* Serve on addr (port -1: not at all), from now on: a listener on another address is closed. A
 * listener that cannot be bound (its port taken) is tried again every second. */
void status_listen(gw_status *s, const gw_address *addr);
/* The descriptor of the metrics region to hand to a worker, or -1. */
int status_region_fd(const gw_status *s);
/* A worker exited: keep its counts. */
void status_worker_exited(gw_status *s, int pid);
/* Close the listener, its connections and the timers; freed once they have closed. */
void status_close(gw_status *s);

#endif
