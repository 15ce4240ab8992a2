/* Decoding first and resolving dot-segments after: "%2e%2e" is a ".." segment like ".." itself,
 * since an upstream or a file system would take it as one. An encoded slash is refused rather
 * than decoded (it would make a separator where the client sent none) or kept (then "%2F" in
 * req.path would mean two things). */
#include "path.h"

#include <stdbool.h>
#include <string.h>

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

static enum path_error decode(const char *in, size_t len, char *out, size_t *n_out) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\0') return PATH_NUL;
        if (in[i] != '%') {
            out[n++] = in[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(in[i + 1]) : -1, lo = hi >= 0 ? hex_value(in[i + 2]) : -1;
        if (lo < 0) return PATH_BAD_ESCAPE;
        char c = (char)(hi * 16 + lo);
        if (c == '\0') return PATH_NUL;
        if (c == '/') return PATH_ENCODED_SLASH;
        out[n++] = c;
        i += 2;
    }
    *n_out = n;
    return PATH_OK;
}

/* In place: p[0..n) is decoded and starts with '/'. Segments are copied down over removed ones. */
static enum path_error resolve(char *p, size_t n, size_t *out_len) {
    size_t w = 0; /* written: p[0..w) is the resolved path so far, without a trailing slash */
    size_t i = 0;
    bool trailing = false;
    while (i < n) {
        size_t start = ++i; /* past the '/' */
        while (i < n && p[i] != '/') i++;
        size_t seg = i - start;
        bool last = i >= n;
        if (seg == 0 || (seg == 1 && p[start] == '.')) { /* "//" or "/./": nothing */
            trailing = last;
            continue;
        }
        if (seg == 2 && p[start] == '.' && p[start + 1] == '.') {
            if (w == 0) return PATH_ABOVE_ROOT;
            while (p[w - 1] != '/') w--; /* drop the last segment... */
            w--;                          /* ...and its slash */
            trailing = last;
            continue;
        }
        p[w++] = '/';
        memmove(p + w, p + start, seg);
        w += seg;
        trailing = false;
    }
    if (trailing || w == 0) p[w++] = '/';
    p[w] = '\0';
    *out_len = w;
    return PATH_OK;
}

enum path_error path_normalize(const char *path, size_t len, char *out, size_t *out_len) {
    size_t n;
    enum path_error e = decode(path, len, out, &n);
    if (e) return e;
    if (n == 1 && out[0] == '*') { /* OPTIONS * */
        out[1] = '\0';
        *out_len = 1;
        return PATH_OK;
    }
    if (n == 0 || out[0] != '/') return PATH_NOT_ABSOLUTE;
    return resolve(out, n, out_len);
}

const char *path_error_reason(enum path_error e) {
    switch (e) {
    case PATH_OK: return "ok";
    case PATH_BAD_ESCAPE: return "malformed percent-encoding in the path";
    case PATH_NUL: return "NUL (raw or %00) in the path";
    case PATH_ENCODED_SLASH: return "encoded slash (%2F) in the path";
    case PATH_ABOVE_ROOT: return "the path climbs above the root";
    case PATH_NOT_ABSOLUTE: return "the path does not start with '/'";
    }
    return "?";
}
