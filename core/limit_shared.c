/* Fixed-window counters in shared memory (see limit_shared.h).
 *
 * The table: a header (the hash seed), then groups of GROUP slots. A key hashes to one group and
 * lives in at most one of its slots. A slot is two words, both changed only by compare-and-swap or
 * by the one process that has frozen the slot:
 *
 *   key    0 (empty) or the key's 64-bit hash
 *   state  0 (empty), BUSY (frozen: its key is being changed), a window (end time, count), or a
 *          claim (PENDING with the time it expires): a key being put in by one process
 *
 * Counting in a window is one CAS on the state. A key is put in a slot that is empty, whose window
 * has ended, or whose claim has expired, in steps: freeze the slot (CAS its state to BUSY), write
 * the key, write a claim; then look at the group's other slots: a window of the same key, or a
 * claim for it in a lower slot, wins (the claim is undone and the look-up starts again); a claim
 * for it in a higher slot is waited for (it gives way to ours, or became a window we then use).
 * Only then does the claim become a window, by CAS. So two processes putting in a new key at once
 * never both count it: one of the claims gives way. A claim left by a process that died expires
 * after CLAIM_MS; whoever meets it then ends it.
 *
 * Keys change only while their slot's state is BUSY, so a key read between two equal states that
 * are not BUSY belongs with them, and a state read as a window of the key stays the key's until it
 * changes, which makes the CAS that counts fail. */
#include "limit_shared.h"

#include <sched.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>
#include <uv.h>

#define GROUP 8
#define BUSY UINT64_MAX
#define PENDING (1ull << 63)
#define COUNT_BITS 24
#define COUNT_MASK ((1ull << COUNT_BITS) - 1)
/* A claim not made a window within this time is taken as left by a dead process. */
#define CLAIM_MS 100
/* How long a decision may keep meeting claims of others before giving up (UV_EAGAIN). */
#define GIVE_UP_MS 200

typedef struct slot {
    _Atomic uint64_t key;
    _Atomic uint64_t state;
} slot;

typedef struct header {
    _Atomic uint64_t seed; /* 0 until the first process to count sets it */
    char pad[56];
} header;

enum { DONE, AGAIN };

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t window(uint64_t end, uint32_t count) {
    return end << COUNT_BITS | count;
}

static uint64_t end_of(uint64_t state) {
    return (state & ~PENDING) >> COUNT_BITS;
}

static uint64_t seed_of(header *h) {
    uint64_t seed = atomic_load(&h->seed);
    if (seed) return seed;
    uint64_t mine = 0;
    if (getrandom(&mine, sizeof mine, 0) != sizeof mine) mine = uv_hrtime();
    mine |= 1;
    return atomic_compare_exchange_strong(&h->seed, &seed, mine) ? mine : seed;
}

/* FNV-1a over name, a NUL and key, from a basis the seed changes, then mixed (splitmix64's end):
 * which keys share a group cannot be known without the seed. Never 0. */
static uint64_t hash_key(uint64_t seed, const char *name, size_t name_len, const char *key, size_t key_len) {
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < name_len; i++) h = (h ^ (unsigned char)name[i]) * 0x100000001b3ull;
    h *= 0x100000001b3ull;
    for (size_t i = 0; i < key_len; i++) h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h | 1;
}

/* The slot's key and state as one; false while it is frozen (then it held no running window, and
 * what it gets next is seen by the process that writes it). A state that changed between the
 * reads was counted in by others: read again. */
static bool read_slot(slot *s, uint64_t *key, uint64_t *state) {
    for (;;) {
        uint64_t st = atomic_load(&s->state);
        if (st == BUSY) return false;
        uint64_t k = atomic_load(&s->key);
        if (atomic_load(&s->state) == st) {
            *key = k;
            *state = st;
            return true;
        }
    }
}

/* Empty the slot if its state is still `state` (a claim undone, or one that expired). */
static void clear(slot *s, uint64_t state) {
    if (!atomic_compare_exchange_strong(&s->state, &state, BUSY)) return;
    atomic_store(&s->key, 0);
    atomic_store(&s->state, 0);
}

/* Count one request in the key's window at s: DONE with the decision, or AGAIN when the slot no
 * longer holds the key's window. */
static int count_in(slot *s, uint64_t h, uint32_t limit, uint64_t period_ms, uint64_t now, gw_limit_result *out) {
    for (;;) {
        uint64_t st = atomic_load(&s->state);
        if (st == BUSY || (st & PENDING) || atomic_load(&s->key) != h) return AGAIN;
        uint64_t end = end_of(st);
        uint32_t count = (uint32_t)(st & COUNT_MASK);
        if (end <= now) { /* its window has ended: this request starts the next */
            end = now + period_ms;
            count = 0;
        }
        out->reset_ms = end - now;
        if (count >= limit) {
            out->admitted = false;
            out->count = count;
            return DONE;
        }
        if (atomic_compare_exchange_weak(&s->state, &st, window(end, count + 1))) {
            out->admitted = true;
            out->count = count + 1;
            return DONE;
        }
    }
}

/* Put the key in g[i], whose state was `was` (empty, ended or an expired claim), and count the
 * request there: DONE, or AGAIN when another slot of the group has or gets the key. */
static int put_in(slot *g, int i, uint64_t was, uint64_t h, uint64_t period_ms, gw_limit_result *out) {
    slot *s = &g[i];
    if (!atomic_compare_exchange_strong(&s->state, &was, BUSY)) return AGAIN;
    atomic_store(&s->key, h);
    uint64_t claim = PENDING | window(now_ms() + CLAIM_MS, 0);
    atomic_store(&s->state, claim);
    for (bool wait = true; wait;) {
        wait = false;
        for (int j = 0; j < GROUP; j++) {
            uint64_t k, st;
            if (j == i || !read_slot(&g[j], &k, &st) || k != h) continue;
            if (!(st & PENDING) || j < i) { /* the key's window, or an earlier claim: ours gives way */
                clear(s, claim);
                return AGAIN;
            }
            if (end_of(st) <= now_ms()) clear(&g[j], st); /* a dead process's claim */
            else wait = true; /* a later claim: it gives way to ours, or became a window */
        }
        if (wait) sched_yield();
        if (end_of(claim) <= now_ms()) { /* ours expired while we waited: others may end it */
            clear(s, claim);
            return AGAIN;
        }
    }
    uint64_t now = now_ms();
    if (!atomic_compare_exchange_strong(&s->state, &claim, window(now + period_ms, 1))) return AGAIN;
    out->admitted = true;
    out->count = 1;
    out->reset_ms = period_ms;
    return DONE;
}

int limit_shared_take(void *region, size_t size, const char *name, size_t name_len, const char *key,
                      size_t key_len, uint32_t limit, uint64_t period_ms, gw_limit_result *out) {
    header *hd = region;
    size_t ngroups = 1;
    while ((ngroups * 2) * GROUP * sizeof(slot) + sizeof *hd <= size) ngroups *= 2;
    uint64_t h = hash_key(seed_of(hd), name, name_len, key, key_len);
    slot *g = (slot *)(hd + 1) + ((h >> 8) & (ngroups - 1)) * GROUP;
    uint64_t give_up = now_ms() + GIVE_UP_MS;
    for (;;) {
        uint64_t now = now_ms();
        if (now > give_up) return UV_EAGAIN;
        int mine = -1, free_at = -1;
        bool claimed = false;
        uint64_t free_state = 0;
        for (int i = 0; i < GROUP && mine < 0; i++) {
            uint64_t k, st;
            if (!read_slot(&g[i], &k, &st)) continue;
            bool pending = st & PENDING, ended = end_of(st) <= now;
            if (k == h && !pending) mine = i;
            else if (k == h && !ended) claimed = true;
            else if (free_at < 0 && (st == 0 || ended)) free_at = i, free_state = st;
        }
        if (mine >= 0) {
            if (count_in(&g[mine], h, limit, period_ms, now, out) == DONE) return 0;
        } else if (claimed) {
            sched_yield(); /* another process is putting the key in: its window comes next */
        } else if (free_at < 0) {
            return UV_ENOSPC;
        } else if (put_in(g, free_at, free_state, h, period_ms, out) == DONE) {
            return 0;
        }
    }
}
