/* The shared-memory limiter (core/limit_shared.c), with real processes racing on one table:
 * exactly `limit` requests admitted per key and window, each admitted count given out once, also
 * when several processes put the same new key in at once and must evict ended windows for it. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "limit_shared.h"

#include "check.h"

#define SLOT_BYTES 16
#define HEADER_BYTES 64
#define PROCS 4

static void *shared(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static int take(void *t, size_t size, const char *name, const char *key, uint32_t limit, uint64_t period_ms,
                gw_limit_result *r) {
    return limit_shared_take(t, size, name, strlen(name), key, strlen(key), limit, period_ms, r);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void test_one_process(void) {
    size_t size = HEADER_BYTES + 64 * SLOT_BYTES;
    void *t = shared(size);
    gw_limit_result r;
    for (uint32_t i = 1; i <= 3; i++) {
        CHECK(take(t, size, "a", "k", 3, 150, &r) == 0);
        CHECK(r.admitted && r.count == i && r.reset_ms <= 150);
    }
    CHECK(take(t, size, "a", "k", 3, 150, &r) == 0);
    CHECK(!r.admitted && r.count == 3 && r.reset_ms > 0 && r.reset_ms <= 150);
    /* Another key, another limiter's same key: counted apart. */
    CHECK(take(t, size, "a", "k2", 3, 150, &r) == 0 && r.admitted && r.count == 1);
    CHECK(take(t, size, "b", "k", 3, 150, &r) == 0 && r.admitted && r.count == 1);
    sleep_ms(160); /* the window ends: the next request starts a new one */
    CHECK(take(t, size, "a", "k", 3, 150, &r) == 0 && r.admitted && r.count == 1);
    munmap(t, size);
}

static void test_full_group(void) {
    size_t size = HEADER_BYTES + 8 * SLOT_BYTES; /* one group: every key shares it */
    void *t = shared(size);
    gw_limit_result r;
    char key[16];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(take(t, size, "a", key, 5, 60000, &r) == 0 && r.admitted);
    }
    CHECK(take(t, size, "a", "k8", 5, 60000, &r) == UV_ENOSPC);
    CHECK(take(t, size, "a", "k3", 5, 60000, &r) == 0 && r.admitted && r.count == 2); /* in the table still */
    munmap(t, size);
}

/* PROCS processes, released at once, each taking `per_proc` requests for each of `nkeys` keys; the
 * parent checks that each key admitted exactly `limit`, each count from 1 to limit once. */
typedef struct race {
    _Atomic int ready, go;
    _Atomic int admitted[64];
    _Atomic int seen[64][1024]; /* how often each count was handed out */
    _Atomic int errors;
} race;

static void race_child(race *rc, void *t, size_t size, const char *name, int nkeys, int per_proc, uint32_t limit) {
    atomic_fetch_add(&rc->ready, 1);
    while (!atomic_load(&rc->go)) sched_yield();
    char key[16];
    for (int n = 0; n < per_proc; n++) {
        for (int k = 0; k < nkeys; k++) {
            snprintf(key, sizeof key, "key-%d", k);
            gw_limit_result r;
            if (take(t, size, name, key, limit, 60000, &r)) {
                atomic_fetch_add(&rc->errors, 1);
                continue;
            }
            if (r.admitted) {
                atomic_fetch_add(&rc->admitted[k], 1);
                if (r.count >= 1 && r.count <= limit) atomic_fetch_add(&rc->seen[k][r.count - 1], 1);
            }
        }
    }
}

static void run_race(race *rc, void *t, size_t size, const char *name, int nkeys, int per_proc, uint32_t limit) {
    memset(rc, 0, sizeof *rc);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            race_child(rc, t, size, name, nkeys, per_proc, limit);
            _exit(0);
        }
    }
    while (atomic_load(&rc->ready) < PROCS) sched_yield();
    atomic_store(&rc->go, 1);
    for (int p = 0; p < PROCS; p++) waitpid(pids[p], NULL, 0);
}

static int race_exact(race *rc, int nkeys, uint32_t limit) {
    if (atomic_load(&rc->errors)) return 0;
    for (int k = 0; k < nkeys; k++) {
        if (atomic_load(&rc->admitted[k]) != (int)limit) return 0;
        for (uint32_t c = 0; c < limit; c++)
            if (atomic_load(&rc->seen[k][c]) != 1) return 0;
    }
    return 1;
}

static void test_processes_counting(void) {
    size_t size = HEADER_BYTES + 512 * SLOT_BYTES;
    void *t = shared(size);
    race *rc = shared(sizeof *rc);
    run_race(rc, t, size, "many", 32, 1500, 1000); /* 6000 requests per key for 1000 places */
    CHECK(race_exact(rc, 32, 1000));
    munmap(rc, sizeof *rc);
    munmap(t, size);
}

/* Every round, all processes put the same new key into one full group of ended windows at once. */
static void test_processes_inserting(void) {
    size_t size = HEADER_BYTES + 8 * SLOT_BYTES;
    void *t = shared(size);
    race *rc = shared(sizeof *rc);
    int exact = 0, rounds = 100;
    char name[32], key[16];
    for (int round = 0; round < rounds; round++) {
        memset((char *)t + HEADER_BYTES, 0, size - HEADER_BYTES);
        for (int i = 0; i < 8; i++) { /* fill the group with windows that end at once */
            gw_limit_result r;
            snprintf(key, sizeof key, "k%d", i);
            take(t, size, "fill", key, 1, 1, &r);
        }
        sleep_ms(2);
        snprintf(name, sizeof name, "round-%d", round);
        run_race(rc, t, size, name, 1, 10, 5);
        exact += race_exact(rc, 1, 5);
    }
    CHECK(exact == rounds);
    munmap(rc, sizeof *rc);
    munmap(t, size);
}

/* White-box: slots as limit_shared.c lays them out (after a 64-byte header: key, state; a state is
 * end_ms << 24 | count, with bit 63 set for a claim), to set up what other processes would leave. */
typedef struct { _Atomic uint64_t key, state; } slot_view;
#define CLAIM (1ull << 63)

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The key's hash in this table (it depends on the table's seed): put it in once, read it back. */
static uint64_t hash_in(void *t, size_t size, const char *name, const char *key) {
    slot_view *s = (slot_view *)((char *)t + HEADER_BYTES);
    gw_limit_result r;
    take(t, size, name, key, 1, 60000, &r);
    uint64_t h = atomic_load(&s[0].key);
    memset(s, 0, 8 * sizeof *s);
    return h;
}

static void test_claims_of_others(void) {
    size_t size = HEADER_BYTES + 8 * SLOT_BYTES;
    void *t = shared(size);
    slot_view *s = (slot_view *)((char *)t + HEADER_BYTES);
    gw_limit_result *got = shared(sizeof *got);
    uint64_t h = hash_in(t, size, "a", "k");
    CHECK(h != 0);

    /* Another process is putting the key in slot 5: we wait for its window, then count there. */
    atomic_store(&s[5].key, h);
    atomic_store(&s[5].state, CLAIM | (mono_ms() + 5000) << 24);
    pid_t pid = fork();
    if (pid == 0) _exit(take(t, size, "a", "k", 10, 60000, got) == 0 ? 0 : 1);
    sleep_ms(30);
    atomic_store(&s[5].state, (mono_ms() + 60000) << 24 | 3); /* its window, with 3 counted */
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(got->admitted && got->count == 4);
    CHECK(atomic_load(&s[0].key) == 0 && (atomic_load(&s[5].state) & 0xffffff) == 4);

    /* A claim left by a process that died: it expires, and is ended by whoever meets it. */
    memset(s, 0, 8 * sizeof *s);
    atomic_store(&s[5].key, h);
    atomic_store(&s[5].state, CLAIM | (mono_ms() - 1) << 24);
    CHECK(take(t, size, "a", "k", 10, 60000, got) == 0 && got->admitted && got->count == 1);
    CHECK(atomic_load(&s[0].key) == h && atomic_load(&s[5].key) == 0 && atomic_load(&s[5].state) == 0);
    CHECK(take(t, size, "a", "k", 10, 60000, got) == 0 && got->count == 2);
    munmap(got, sizeof *got);
    munmap(t, size);
}

int main(void) {
    test_one_process();
    test_full_group();
    test_processes_counting();
    test_processes_inserting();
    test_claims_of_others();
    return check_summary();
}
