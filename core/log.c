#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Set once before the loop starts, read-only afterwards. */
static int max_level = GW_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};
static char process[32];

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

int log_enabled(int level) {
    return level <= max_level;
}

void log_msg(int level, const char *fmt, ...) {
    if (level > max_level) return;
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y/%m/%d %H:%M:%S", &tm);

    /* One fprintf per line so that lines from concurrent processes do not interleave mid-line. */
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s [%s] %s%s\n", stamp, names[level], process, line);
}
