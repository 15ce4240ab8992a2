/* The request path's parsing: request_parser (the strict scanner, then llhttp, then building the
 * gw_request with its normalised path) over pipelined requests, the bytes cut at points the input
 * chooses. Checks, beyond the sanitizers:
 *   - the same bytes give the same requests, and are refused at the same request, however they
 *     are cut;
 *   - the strict scanner and llhttp, run on their own, never both accept a message and end it at
 *     different bytes (the server answers 400 when they do: such a case is a scanner to fix). */
#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_strict.h"
#include "request_parser.h"

#define MAX_EVENTS 64

typedef struct trace {
    int n;
    int ev[MAX_EVENTS]; /* per request: a hash of what was built; -status when building failed;
                         * -1 once refused */
} trace;

static void on_begin(void *owner) {
    (void)owner;
}

static const request_parser_events events = {on_begin};
static const gw_limits limits = {.max_header_size = 2048, .max_body_size = 4096};

static int hash_request(const gw_request *r) {
    unsigned h = 2166136261u;
#define MIX(p, n) for (size_t k = 0; k < (n); k++) h = (h ^ (unsigned char)(p)[k]) * 16777619u
    MIX(r->method, strlen(r->method));
    MIX(r->path, r->path_len);
    MIX(r->query, r->query_len);
    MIX(r->body, r->body_len);
    for (size_t i = 0; i < r->nheaders; i++) {
        MIX(r->headers[i].name, r->headers[i].name_len);
        MIX(r->headers[i].value, r->headers[i].value_len);
    }
    h ^= (unsigned)r->keep_alive << 1 | (unsigned)r->http_minor;
    return (int)(h & 0x7fffffff);
}

/* Feed data cut at the given points; record each request or the final error. */
static void run(const uint8_t *data, size_t len, const uint8_t *cuts, size_t ncuts, trace *t) {
    request_parser rp;
    request_parser_init(&rp, &limits, &events, NULL);
    t->n = 0;
    size_t pos = 0, c = 0;
    while (pos < len && t->n < MAX_EVENTS) {
        size_t end = len;
        while (c < ncuts) {
            size_t at = pos + 1 + cuts[c++] % 64;
            if (at < len) {
                end = at;
                break;
            }
        }
        while (pos < end && t->n < MAX_EVENTS) {
            size_t used;
            enum parse_outcome o = request_parser_execute(&rp, (const char *)data + pos, end - pos, &used);
            pos += used;
            if (o == PARSE_REQUEST) {
                gw_request req = {0};
                char id[65];
                int st = request_parser_build(&rp, &req, id);
                t->ev[t->n++] = st ? -st : hash_request(&req);
                if (st || rp.upgrade) goto out;
                request_parser_trim(&rp);
            } else if (o != PARSE_MORE) {
                /* which status (400, 413, 431, 501) can depend on where the bytes were cut: whichever
                 * of the scanner and llhttp saw its violation first. That it is refused cannot. */
                t->ev[t->n++] = -1;
                goto out;
            }
        }
    }
out:
    request_parser_free(&rp);
}

/* ---- the scanner against llhttp alone ---- */

static int on_complete(llhttp_t *p) {
    (void)p;
    return HPE_PAUSED;
}

/* As request_parser_execute runs them: the scanner first, then llhttp on the bytes it took. */
static void compare_boundaries(const uint8_t *data, size_t len) {
    http_strict s;
    http_strict_init(&s, HS_REQUEST, limits.max_header_size);
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_message_complete = on_complete;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &settings);
    const char *d = (const char *)data;
    while (len > 0) {
        size_t n;
        enum hs_step st = http_strict_scan(&s, d, len, &n);
        if (st == HS_ERROR) return;
        enum llhttp_errno e = llhttp_execute(&p, d, n);
        if (e != HPE_OK && e != HPE_PAUSED) return; /* llhttp refuses: no disagreement on length */
        bool ended = e == HPE_PAUSED;
        if (ended != (st == HS_DONE) || (ended && llhttp_get_error_pos(&p) != d + n)) abort();
        /* Nothing after an Upgrade is HTTP, nor after a request that closes the connection (the
         * server reads no further; llhttp 8 then ignores the rest). */
        if (!ended || p.upgrade || !llhttp_should_keep_alive(&p)) return;
        llhttp_resume(&p);
        d += n;
        len -= n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The first byte says how many cut points follow; the rest is the stream. */
    size_t ncuts = size ? data[0] % 32 : 0;
    if (size < 1 + ncuts) return 0;
    const uint8_t *cuts = data + 1;
    const uint8_t *stream = data + 1 + ncuts;
    size_t len = size - 1 - ncuts;

    trace whole, pieces;
    run(stream, len, NULL, 0, &whole);
    run(stream, len, cuts, ncuts, &pieces);
    if (whole.n != pieces.n || memcmp(whole.ev, pieces.ev, sizeof whole.ev[0] * (size_t)whole.n) != 0) {
        for (int i = 0; i < whole.n || i < pieces.n; i++)
            fprintf(stderr, "event %d: whole %d, in pieces %d\n", i, i < whole.n ? whole.ev[i] : 0,
                    i < pieces.n ? pieces.ev[i] : 0);
        abort();
    }
    compare_boundaries(stream, len);
    return 0;
}
