#include "trace.h"

#include <string.h>
#include <uv.h>

static uint64_t state[2] = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL};

void trace_seed(void) {
    uint64_t s[2];
    if (uv_random(NULL, NULL, s, sizeof s, 0, NULL) == 0 && (s[0] | s[1])) {
        state[0] = s[0];
        state[1] = s[1];
    }
}

/* xorshift128+: a handful of instructions per id. */
uint64_t trace_random(void) {
    uint64_t x = state[0];
    const uint64_t y = state[1];
    state[0] = y;
    x ^= x << 23;
    state[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    uint64_t r = state[1] + y;
    return r ? r : 1; /* an all-zero id is invalid */
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

static bool parse_hex(const char *p, int n, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

bool trace_parse(gw_trace *t, const char *v, size_t len) {
    uint64_t version, hi, lo, parent, flags;
    if (!v || len < TRACEPARENT_LEN || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
    if (!parse_hex(v, 2, &version) || version == 0xff) return false;
    if (version == 0 && len != TRACEPARENT_LEN) return false;
    if (version != 0 && len > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != '-') return false;
    if (!parse_hex(v + 3, 16, &hi) || !parse_hex(v + 19, 16, &lo) || !parse_hex(v + 36, 16, &parent) ||
        !parse_hex(v + 53, 2, &flags))
        return false;
    if ((hi | lo) == 0 || parent == 0) return false;
    t->trace_hi = hi;
    t->trace_lo = lo;
    t->parent = parent;
    t->flags = (uint8_t)(flags & 1); /* of version 00's flags, only "sampled" is defined */
    return true;
}

void trace_begin(gw_trace *t, const char *value, size_t len) {
    if (!trace_parse(t, value, len)) {
        t->trace_hi = trace_random();
        t->trace_lo = trace_random();
        t->parent = 0;
        t->flags = 1; /* a trace started here is sampled: let the upstreams record it */
    }
    t->span = trace_random();
}

/* Eight hex digits of v at once (SWAR): each nibble spread to a byte, then turned into its digit
 * with a few adds; ids are formatted on every upstream call. */
static uint64_t hex8(uint32_t v) {
    uint64_t x = v;
    x = ((x & 0xffff0000ull) << 16) | (x & 0xffffull);
    x = ((x & 0x0000ff000000ff00ull) << 8) | (x & 0x000000ff000000ffull);
    x = ((x & 0x00f000f000f000f0ull) << 4) | (x & 0x000f000f000f000full);
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    x += 0x3030303030303030ull + letters * ('a' - '0' - 10);
    return __builtin_bswap64(x); /* the first digit at the lowest address */
}

void trace_hex64(uint64_t v, char *out) {
    uint64_t hi = hex8((uint32_t)(v >> 32)), lo = hex8((uint32_t)v);
    memcpy(out, &hi, 8);
    memcpy(out + 8, &lo, 8);
}

void trace_format(const gw_trace *t, uint64_t span, char *out) {
    out[0] = '0', out[1] = '0', out[2] = '-';
    trace_hex64(t->trace_hi, out + 3);
    trace_hex64(t->trace_lo, out + 19);
    out[35] = '-';
    trace_hex64(span, out + 36);
    out[52] = '-';
    out[53] = '0';
    out[54] = (char)('0' + (t->flags & 1));
    out[55] = '\0';
}
