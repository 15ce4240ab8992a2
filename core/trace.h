/* W3C Trace Context (traceparent): the ids of a request's trace, taken from the client's header or
 * started here, and a child span id for each upstream call, sent on in its own traceparent.
 *
 *     traceparent: 00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>
 *
 * Only version 00's fields are read; a later version is read as 00 (as the spec asks), and a
 * header that does not parse starts a new trace. Ids come from a fast generator seeded once from
 * the system's random source: they need to be unique, not secret. */
#ifndef LUAGATE_TRACE_H
#define LUAGATE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

typedef struct gw_trace {
    uint64_t trace_hi, trace_lo; /* the trace id */
    uint64_t parent;             /* the client's span (0: this request started the trace) */
    uint64_t span;               /* this request's span in the gateway */
    uint8_t flags;               /* bit 0: sampled */
} gw_trace;

/* Seed the generator (once per process). */
void trace_seed(void);
uint64_t trace_random(void);
/* The trace of a request whose traceparent header is value (NULL or invalid: a new trace). */
void trace_begin(gw_trace *t, const char *value, size_t len);
/* false when value is not a valid traceparent; else the ids and flags in t (span untouched). */
bool trace_parse(gw_trace *t, const char *value, size_t len);
/* Format "00-trace-span-flags" (TRACEPARENT_LEN bytes and a NUL) for a span of t's trace. */
void trace_format(const gw_trace *t, uint64_t span, char *out);
/* Hex of an id: 32 (trace) or 16 (span) characters, no NUL. */
void trace_hex64(uint64_t v, char *out);

#endif
