#include "buf.h"

#include <stdlib.h>
#include <string.h>

int buf_reserve(gw_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t need = b->len + extra;
    if (need < b->len) return -1; /* overflow */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(gw_buf *b, const void *data, size_t len) {
    if (len == 0) return 0;
    if (buf_reserve(b, len)) return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int buf_append_str(gw_buf *b, const char *s) {
    return buf_append(b, s, strlen(s));
}

void buf_consume(gw_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void buf_reset(gw_buf *b, size_t keep) {
    b->len = 0;
    if (b->cap > keep) buf_free(b);
}

void buf_free(gw_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
