/* The error log: one line per event, with time and level, on stderr or in a file (error_log). */
#ifndef LUAGATE_LOG_H
#define LUAGATE_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum gw_log_level { GW_LOG_ERROR, GW_LOG_WARN, GW_LOG_INFO, GW_LOG_DEBUG };

/* Set at start-up from the config; returns -1 for an unknown name. */
int log_set_level_name(const char *name);
/* Set once at start-up in a worker: "worker 2 (pid 4242)", written before each message. */
void log_set_process(const char *name);
/* Write to path ("stderr" or NULL: standard error) from now on. 0 or a negative libuv error, and
 * then the log stays where it was. */
int log_open(const char *path);
/* SIGUSR1: open the log file again by its name (after logrotate moved it), then call every hook
 * added with log_on_reopen (other logs of this process). 0 or the first negative error. */
int log_reopen(void);
/* A function for log_reopen to call too: at most a few, for the life of the process. */
int log_on_reopen(int (*hook)(void));
int log_enabled(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* At most one line a second for one kind of event (a flood of refused connections must not become
 * a flood of lines): a static gw_log_rate per call site, see log_limited. */
typedef struct gw_log_rate {
    uint64_t next; /* monotonic ms before which lines are counted, not written */
    unsigned suppressed;
} gw_log_rate;
/* true: write the line now; *suppressed says how many were left out since the last one. */
bool log_rate_pass(gw_log_rate *r, unsigned *suppressed);

#define log_limited(level, fmt, ...)                                                              \
    do {                                                                                          \
        static gw_log_rate rate_;                                                                 \
        unsigned skipped_;                                                                        \
        if (log_rate_pass(&rate_, &skipped_)) {                                                   \
            char more_[64] = "";                                                                  \
            if (skipped_) snprintf(more_, sizeof more_, " (and %u more like it, not logged)", skipped_); \
            log_msg(level, fmt "%s", __VA_ARGS__, more_);                                         \
        }                                                                                         \
    } while (0)

#define log_error(...) log_msg(GW_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(GW_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(GW_LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(GW_LOG_DEBUG)) log_msg(GW_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
