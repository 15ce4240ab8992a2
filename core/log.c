#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOOKS 4

static int max_level = GW_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};
static char process[64];
static int fd = 2;        /* where lines go: stderr until log_open names a file */
static char path[4096];   /* the file's name, for reopening; "" for stderr */
static int (*hooks[MAX_HOOKS])(void);
static int nhooks;

int log_set_level_name(const char *name) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            max_level = i;
            return 0;
        }
    }
    return -1;
}

void log_set_process(const char *name) {
    snprintf(process, sizeof process, "%s: ", name);
}

/* O_APPEND: every process writing the same file (master and workers) appends whole lines. */
int log_open(const char *p) {
    if (!p || strcmp(p, "stderr") == 0) {
        if (fd != 2) close(fd);
        fd = 2;
        path[0] = '\0';
        return 0;
    }
    int nfd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (nfd < 0) return -errno;
    if (fd != 2) close(fd);
    fd = nfd;
    snprintf(path, sizeof path, "%s", p);
    return 0;
}

int log_reopen(void) {
    int r = 0;
    if (path[0]) {
        char p[sizeof path];
        memcpy(p, path, sizeof p);
        r = log_open(p);
    }
    for (int i = 0; i < nhooks; i++) {
        int h = hooks[i]();
        if (h < 0 && r == 0) r = h;
    }
    return r;
}

int log_on_reopen(int (*hook)(void)) {
    if (nhooks == MAX_HOOKS) return -ENOMEM;
    hooks[nhooks++] = hook;
    return 0;
}

int log_enabled(int level) {
    return level <= max_level;
}

void log_msg(int level, const char *fmt, ...) {
    if (level > max_level) return;
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);

    /* One write(2) per line, so that lines from concurrent processes never interleave mid-line. */
    char line[8192];
    size_t n = strftime(line, sizeof line, "%Y/%m/%d %H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, " [%s] %s", names[level], process);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n = m < 0 ? n : (n + (size_t)m < sizeof line - 1 ? n + (size_t)m : sizeof line - 2);
    line[n++] = '\n';
    ssize_t w;
    do w = write(fd, line, n);
    while (w < 0 && errno == EINTR);
}

bool log_rate_pass(gw_log_rate *r, unsigned *suppressed) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (now < r->next) {
        r->suppressed++;
        return false;
    }
    r->next = now + 1000;
    *suppressed = r->suppressed;
    r->suppressed = 0;
    return true;
}
