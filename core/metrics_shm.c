#define _GNU_SOURCE /* memfd_create */
#include "metrics_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MS_MAGIC 0x6c75676174650001ULL /* "lugate", layout 1 */

const uint64_t MS_BOUNDS_US[MS_BUCKETS - 1] = {1000,   2500,   5000,    10000,   25000,   50000,   100000,
                                               250000, 500000, 1000000, 2500000, 5000000, 10000000};

_Static_assert(MS_SLOT_SIZE <= (1u << 20), "a slot stays within 1 MiB");

int ms_create(ms_region *r) {
    *r = (ms_region){.fd = -1};
    int fd = memfd_create("luagate-metrics", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)MS_REGION_SIZE)) {
        int e = -errno;
        close(fd);
        return e;
    }
    void *p = mmap(NULL, MS_REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = -errno;
        close(fd);
        return e;
    }
    r->fd = fd;
    r->base = p;
    r->header = p;
    r->header->magic = MS_MAGIC;
    r->header->nslots = MS_SLOTS;
    return 0;
}

void ms_destroy(ms_region *r) {
    if (r->base) munmap(r->base, MS_REGION_SIZE);
    if (r->fd >= 0) close(r->fd);
    *r = (ms_region){.fd = -1};
}

static ms_slot *slot_at(char *base, int i) {
    return (ms_slot *)(base + MS_HEADER_SIZE + (size_t)i * MS_SLOT_SIZE);
}

const ms_slot *ms_live_slot(const ms_region *r, int i) {
    if (!r->base || __atomic_load_n(&r->header->owner[i], __ATOMIC_ACQUIRE) == 0) return NULL;
    const ms_slot *s = slot_at(r->base, i);
    return __atomic_load_n(&s->live, __ATOMIC_ACQUIRE) ? s : NULL;
}

ms_slot *ms_slot_of_pid(ms_region *r, int pid, int *index) {
    if (!r->base || pid <= 0) return NULL;
    for (int i = 0; i < MS_SLOTS; i++) {
        if (__atomic_load_n(&r->header->owner[i], __ATOMIC_ACQUIRE) == pid) {
            *index = i;
            return slot_at(r->base, i);
        }
    }
    return NULL;
}

void ms_release(ms_region *r, int index) {
    ms_slot *s = slot_at(r->base, index);
    __atomic_store_n(&s->live, 0, __ATOMIC_RELEASE);
    /* Zeroed for the next worker, and its pages given back: a worker touches only what it counts. */
    off_t at = (off_t)(MS_HEADER_SIZE + (size_t)index * MS_SLOT_SIZE);
    if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, (off_t)MS_SLOT_SIZE)) memset(s, 0, sizeof *s);
    __atomic_store_n(&r->header->owner[index], 0, __ATOMIC_RELEASE);
}

ms_slot *ms_attach(int fd, int worker_id, int generation) {
    ms_header *h = mmap(NULL, MS_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) return NULL;
    ms_slot *s = NULL;
    int pid = (int)getpid();
    for (int i = 0; h->magic == MS_MAGIC && i < (int)h->nslots && i < MS_SLOTS; i++) {
        int32_t free_owner = 0;
        if (!__atomic_compare_exchange_n(&h->owner[i], &free_owner, pid, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        void *p = mmap(NULL, MS_SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                       (off_t)(MS_HEADER_SIZE + (size_t)i * MS_SLOT_SIZE));
        if (p == MAP_FAILED) {
            __atomic_store_n(&h->owner[i], 0, __ATOMIC_RELEASE);
            break;
        }
        s = p; /* zero: new, or emptied by the master when its last worker exited (ms_release) */
        s->worker_id = worker_id;
        s->generation = generation;
        s->pid = pid;
        s->started_unix = (uint64_t)time(NULL);
        __atomic_store_n(&s->live, 1, __ATOMIC_RELEASE);
        break;
    }
    munmap(h, MS_HEADER_SIZE);
    return s;
}

void ms_detach(ms_slot *s) {
    if (s) munmap(s, MS_SLOT_SIZE);
}

static void set_name(char (*table)[MS_NAME], uint32_t *count, int id, const char *name) {
    size_t n = strlen(name);
    if (n > MS_NAME - 1) n = MS_NAME - 1;
    memcpy(table[id], name, n);
    table[id][n] = '\0';
    if ((uint32_t)id + 1 > *count) __atomic_store_n(count, (uint32_t)id + 1, __ATOMIC_RELEASE);
}

void ms_set_route(ms_slot *s, int id, const char *name) {
    if (s && id > 0 && id < MS_ROUTES) set_name(s->routes, &s->nroutes, id, name);
}

void ms_set_upstream(ms_slot *s, int id, const char *name) {
    if (s && id > 0 && id < MS_UPSTREAMS) set_name(s->upstreams, &s->nupstreams, id, name);
}
