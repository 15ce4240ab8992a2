/* Formatting an HTTP/1.1 response head. Pure functions: no I/O, no loop. */
#ifndef LUAGATE_RESPONSE_H
#define LUAGATE_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

typedef struct gw_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} gw_header;

/* What an application hands back for one request. Pointers are only read during the call that
 * takes the response: the caller keeps them alive for that long, no longer. */
typedef struct gw_response {
    int status;
    const char *content_type; /* NULL: none */
    size_t content_type_len;
    const char *body;
    size_t body_len;
    const gw_header *headers; /* extra headers, sent as given */
    size_t nheaders;
    enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE } framing; /* FRAME_LENGTH: body_len */
} gw_response;

#define RESPONSE_ERROR_BUF 256

/* An answer luagate makes itself: {"error": message, "request_id": id} as JSON, formatted into
 * buf (RESPONSE_ERROR_BUF bytes, which the caller keeps alive while the response is used). */
gw_response response_error(int status, const char *message, const char *request_id, char *buf);

/* The reason phrase of a status code ("Unknown" for codes without one). */
const char *response_reason(int status);

/* true when a header name or value holds a byte that could split the header (CR, LF, NUL),
 * or a name holds anything but an RFC 9110 token character. */
bool response_header_invalid(const gw_header *h);
/* true when a header value has no CR, LF or NUL. */
bool response_value_valid(const char *value, size_t len);

/* Append the response head to `out`: status line, Date, Content-Type, Content-Length (or
 * Transfer-Encoding: chunked, by r->framing), X-Request-Id, the extra headers, and Connection when
 * it differs from the protocol's default.
 * 0 on success, -1 when out of memory. */
int response_format_head(gw_buf *out, const gw_response *r, const char *date, const char *request_id,
                         bool keep_alive, int http_minor);

#endif
