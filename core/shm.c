#define _GNU_SOURCE /* memfd_create */
#include "shm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Room for the shared limiter's table, 4 MB of slots (262,144) after a page for its header; only
 * the pages written take memory. */
#define SHM_SIZE (((size_t)4 << 20) + 4096)

/* A process has one region, mapped once and never unmapped: a process-wide value. */
static void *region;
static size_t region_size;

int shm_create(int *fd_out) {
    int fd = memfd_create("luagate-shared", MFD_CLOEXEC); /* handed on to workers explicitly */
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)SHM_SIZE) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *fd_out = fd;
    return 0;
}

int shm_adopt(int fd) {
    struct stat st;
    int r = 0;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) r = -errno;
    close(fd); /* the mapping keeps the memory; the master keeps its descriptor */
    if (r < 0) {
        log_error("cannot map the master's shared memory (%s): shared limits count in this worker only", strerror(-r));
        return r;
    }
    region = p;
    region_size = (size_t)st.st_size;
    return 0;
}

void *shm_region(size_t *size) {
    if (!region) { /* on its own: a region shared with nobody */
        void *p = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        region = p;
        region_size = SHM_SIZE;
    }
    *size = region_size;
    return region;
}
