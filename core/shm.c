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

#define SHM_ENV "LUAGATE_SHM_FD"
/* Room for the shared limiter's table, 4 MB of slots (262,144) after a page for its header; only
 * the pages written take memory. */
#define SHM_SIZE (((size_t)4 << 20) + 4096)

int shm_create_for_workers(void) {
    int fd = memfd_create("luagate-shared", 0); /* no MFD_CLOEXEC: the workers inherit it */
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)SHM_SIZE) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    char v[16];
    snprintf(v, sizeof v, "%d", fd);
    return setenv(SHM_ENV, v, 1) ? -errno : 0; /* the descriptor stays open for the master's life */
}

/* A process has one region, mapped at its first use and never unmapped: a process-wide value. */
static void *region;
static size_t region_size;

void *shm_region(size_t *size) {
    if (!region) {
        const char *env = getenv(SHM_ENV);
        void *p = MAP_FAILED;
        size_t len = SHM_SIZE;
        if (env) {
            int fd = atoi(env);
            struct stat st;
            int e = EINVAL;
            if (fstat(fd, &st) == 0 && st.st_size > 0) {
                len = (size_t)st.st_size;
                p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            }
            if (p == MAP_FAILED) e = errno;
            close(fd); /* the mapping keeps the memory; the master keeps the descriptor */
            unsetenv(SHM_ENV);
            if (p == MAP_FAILED)
                log_error("cannot map the master's shared memory (%s): shared limits count in this worker only",
                          strerror(e));
        }
        if (p == MAP_FAILED) {
            len = SHM_SIZE;
            p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        }
        if (p == MAP_FAILED) return NULL;
        region = p;
        region_size = len;
    }
    *size = region_size;
    return region;
}
