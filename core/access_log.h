/* The access log: one line per answered request, written after the answer (the log phase).
 *
 * Lines are formatted by hand into a per-process buffer and written when it fills, every ~100 ms
 * (access_log_flush from the worker's timer) and at stop: never a write per request. To a file
 * (opened O_APPEND, so that workers' whole buffers never interleave; reopened on SIGUSR1), or to
 * stdout (in pieces that end on a line and fit PIPE_BUF, so that lines from several workers on one
 * pipe never mix). Two formats: nginx's "combined" followed by luagate's fields as key=value, or
 * one JSON object per line. */
#ifndef LUAGATE_ACCESS_LOG_H
#define LUAGATE_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

enum access_format { ACCESS_COMBINED, ACCESS_JSON };

typedef struct access_call {
    const char *upstream; /* its name in the config, or "(url)" */
    int status;           /* the upstream's status, 0 when it failed */
    const char *error;    /* the kind of failure ("timeout", ...) or "cancelled"; NULL when answered */
    uint32_t us;          /* from the start of the call to the end of its answer */
} access_call;

typedef struct access_entry {
    const gw_request *req;
    const gw_request_end *end;
    const char *route;     /* the matched route pattern, or NULL */
    const char *trace_id;  /* 32 hex digits, or NULL */
    const access_call *calls;
    int ncalls;
    int more_calls;        /* calls made beyond those listed */
    const char *reason;    /* why a 499, 502, 504 or a cut answer: NULL otherwise */
    int worker;
} access_entry;

/* Log to dest ("stdout" or a path) in format. 0, or a negative errno (nothing is logged then).
 * Once per process: there is one access log. */
int access_log_open(const char *dest, enum access_format format);
bool access_log_enabled(void);
void access_log_write(const access_entry *e);
/* Write what is buffered. */
void access_log_flush(void);
/* Flush and close (at stop). */
void access_log_close(void);

#endif
