/* The error log: one line per event on stderr, with time and level. */
#ifndef LUAGATE_LOG_H
#define LUAGATE_LOG_H

enum gw_log_level { GW_LOG_ERROR, GW_LOG_WARN, GW_LOG_INFO, GW_LOG_DEBUG };

/* Set once at start-up from the config; returns -1 for an unknown name. */
int log_set_level_name(const char *name);
/* Set once at start-up in a worker of several: "worker 2", written before each message. */
void log_set_process(const char *name);
int log_enabled(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(GW_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(GW_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(GW_LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(GW_LOG_DEBUG)) log_msg(GW_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
