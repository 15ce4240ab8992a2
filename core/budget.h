/* The worker's memory budget (max_buffered_size): the bytes that clients and upstreams can make it
 * hold, as opposed to what it holds per connection by design. Three things draw on it:
 * - request bodies taken whole (a new one that does not fit is answered 503);
 * - upstream answers taken whole (the call fails with kind "gateway busy");
 * - output queued for a client that reads slower than we write (an answer that does not fit is
 *   refused before any of it is written, and clients that stopped reading are cut).
 * One loop per process: the budget is the process's, with no locking. */
#ifndef LUAGATE_BUDGET_H
#define LUAGATE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

/* 0: no limit (the default, until the worker sets one from the config). */
void budget_set_limit(size_t limit);
/* Whether n more bytes fit; when they do not, the watchers hear of it. */
bool budget_allows(size_t n);
/* Take n bytes whether they fit or not: for what was checked earlier, or is bounded otherwise. */
void budget_add(size_t n);
void budget_give(size_t n);
/* Grow a charge to cover `need` bytes, in steps (a buffer grows a little at a time). */
bool budget_cover(size_t *charged, size_t need);
/* Give a charge back and zero it. */
void budget_release(size_t *charged);

/* Told when a take fails: the owner of what holds memory may let some go (a server cuts clients
 * that stopped reading). Runs on the stack of the failed take: it should only schedule work. */
typedef struct gw_budget_watch {
    void (*on_short)(struct gw_budget_watch *w);
    struct gw_budget_watch *prev, *next;
} gw_budget_watch;

void budget_watch(gw_budget_watch *w);
void budget_unwatch(gw_budget_watch *w);

#endif
