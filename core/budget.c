/* The worker's memory budget: see budget.h. */
#include "budget.h"

#include "log.h"

#define STEP (64u << 10) /* a growing buffer is charged this much at a time */

static size_t limit, used;
static gw_budget_watch *watchers;

void budget_set_limit(size_t n) {
    limit = n;
}

bool budget_allows(size_t n) {
    if (limit == 0 || (n <= limit && used <= limit - n)) return true;
    log_limited(GW_LOG_WARN, "max_buffered_size reached (%zu of %zu bytes held; %zu more asked): "
                "refusing with 503 and cutting clients that stopped reading", used, limit, n);
    for (gw_budget_watch *w = watchers; w; w = w->next) w->on_short(w);
    return false;
}

/* Take n bytes: false (nothing taken) when they do not fit. */
static bool budget_take(size_t n) {
    if (!budget_allows(n)) return false;
    used += n;
    return true;
}

void budget_add(size_t n) {
    used += n;
}

void budget_give(size_t n) {
    used -= n;
}

bool budget_cover(size_t *charged, size_t need) {
    if (need <= *charged) return true;
    size_t more = need - *charged;
    more = (more + STEP - 1) / STEP * STEP;
    if (!budget_take(more)) return false;
    *charged += more;
    return true;
}

void budget_release(size_t *charged) {
    used -= *charged;
    *charged = 0;
}

void budget_watch(gw_budget_watch *w) {
    w->prev = NULL;
    w->next = watchers;
    if (watchers) watchers->prev = w;
    watchers = w;
}

void budget_unwatch(gw_budget_watch *w) {
    if (w->prev) w->prev->next = w->next;
    else if (watchers == w) watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}
