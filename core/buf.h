/* A growable byte buffer. The owner of the struct owns the memory; buf_free releases it. */
#ifndef LUAGATE_BUF_H
#define LUAGATE_BUF_H

#include <stddef.h>

typedef struct gw_buf {
    char *data;
    size_t len;
    size_t cap;
} gw_buf;

/* Make room for `extra` more bytes. 0 on success, -1 when out of memory (the buffer is unchanged). */
int buf_reserve(gw_buf *b, size_t extra);
int buf_append(gw_buf *b, const void *data, size_t len);
int buf_append_str(gw_buf *b, const char *s);
/* Drop the first n bytes, keeping the rest. */
void buf_consume(gw_buf *b, size_t n);
/* Keep the allocation for reuse, unless it grew past `keep` bytes (a one-off large request). */
void buf_reset(gw_buf *b, size_t keep);
void buf_free(gw_buf *b);

#endif
