/* Fixed-window request counters in memory shared by processes (the region of shm.c), exact and
 * lock-free: every decision is a compare-and-swap on the key's one slot, so no process ever waits
 * for a lock another holds, and a worker killed at any instruction leaves no lock behind.
 *
 * A key's window starts at its first request and lasts `period`; up to `limit` requests are
 * admitted in it; the others are refused until it ends. Windows are timed on CLOCK_MONOTONIC,
 * the same clock in every process of the host. */
#ifndef LUAGATE_LIMIT_SHARED_H
#define LUAGATE_LIMIT_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest limit a window can count. */
#define LIMIT_SHARED_MAX 16777215u

typedef struct gw_limit_result {
    bool admitted;
    uint32_t count;    /* requests admitted in the window, this one included */
    uint64_t reset_ms; /* until the window ends */
} gw_limit_result;

/* Count one request of `key` for the limiter `name` (name and key may hold any bytes), in the
 * table laid out on `size` bytes of shared memory that started zeroed. 1 <= limit <=
 * LIMIT_SHARED_MAX. Returns 0 with the decision in *out, or UV_ENOSPC when the key's group of
 * slots is full of windows still running (the table is too small for the keys in use). */
int limit_shared_take(void *region, size_t size, const char *name, size_t name_len, const char *key,
                      size_t key_len, uint32_t limit, uint64_t period_ms, gw_limit_result *out);

#endif
