/* Strict HTTP/1.1 message framing: an incremental scanner over the raw bytes of one message (start
 * line, field lines, then the body's framing), which rejects what RFC 9112 and RFC 9110 say a
 * recipient MUST reject, whatever the HTTP parser that runs beside it lets through.
 *
 * It knows nothing of servers or connections: bytes in, and at the first violation an error code
 * and a reason out. The same scanner checks requests (the server answers 400, 431 or 501) and
 * responses from upstreams (a client answers 502). It does not copy or keep the bytes: a parser
 * such as llhttp still extracts the fields; the scanner only says whether, and where, a message
 * ends, so that both must agree.
 *
 *   http_strict s;
 *   http_strict_init(&s, HS_REQUEST, max_head);
 *   switch (http_strict_scan(&s, data, len, &used)) { ... }   // again with the next bytes */
#ifndef LUAGATE_HTTP_STRICT_H
#define LUAGATE_HTTP_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum hs_kind { HS_REQUEST, HS_RESPONSE };

enum hs_error {
    HS_OK,
    HS_BAD_START_LINE,      /* not "method SP target SP HTTP/1.x" (or "HTTP/1.x SP status ...") */
    HS_BARE_CR,             /* a CR not followed by LF */
    HS_BARE_LF,             /* a line ended by LF alone: CRLF only (see http_strict.c) */
    HS_OBS_FOLD,            /* a field line starting with SP or HTAB (obsolete line folding) */
    HS_BAD_FIELD_NAME,      /* empty, not a token, or a line without a colon */
    HS_SPACE_BEFORE_COLON,  /* whitespace between a field name and its colon */
    HS_BAD_FIELD_VALUE,     /* a control character other than HTAB in a field value */
    HS_TOO_LARGE,           /* head, chunk extensions and trailers over the limit */
    HS_BAD_CONTENT_LENGTH,  /* not digits, too large, or repeated */
    HS_LENGTH_AND_ENCODING, /* both Content-Length and Transfer-Encoding */
    HS_BAD_TRANSFER_ENCODING,  /* chunked not last, twice, or in an HTTP/1.0 message */
    HS_UNKNOWN_TRANSFER_CODING, /* a transfer coding other than chunked in a request */
    HS_NO_HOST,             /* an HTTP/1.1 request without Host */
    HS_REPEATED_HOST,
    HS_BAD_HOST,
    HS_CONNECT_BODY,        /* a CONNECT request with content */
    HS_BAD_CHUNK_SIZE,      /* not hexadecimal, or too large */
    HS_BAD_CHUNK_EXT,       /* a chunk extension that is not ;name[=token|quoted-string] */
    HS_BAD_CHUNK_END,       /* chunk data not followed by CRLF */
    HS_TRUNCATED,           /* the peer closed in the middle of a message */
};

/* What http_strict_scan found. */
enum hs_step {
    HS_MORE,  /* every byte taken; the message goes on */
    HS_DONE,  /* the message ended after *used bytes: the next call starts a new one */
    HS_ERROR, /* a violation: http_strict_error says which */
};

typedef struct http_strict {
    uint8_t kind;
    uint8_t state;
    uint8_t field;     /* the framing field whose value is being read, if any */
    uint8_t pos;       /* position in a fixed token being matched */
    uint8_t elem_len;  /* Transfer-Encoding: bytes of the current list element kept in elem */
    bool in_trailers;
    bool head_request; /* a response to HEAD: no content whatever its fields say */
    bool connect;      /* the request's method is CONNECT */
    bool elem_space;   /* whitespace seen after the current element's first byte */
    bool cl_digits;    /* the Content-Length value has a digit */
    char name[18];     /* a field name as sent, up to 18 bytes: is it a framing field? */
    char elem[8];
    uint8_t name_len;
    uint8_t version_major, version_minor;
    uint8_t cl_lines, te_lines, host_lines;
    bool te_chunked_last; /* the last Transfer-Encoding element so far is chunked */
    bool te_chunked_before; /* chunked appeared before a later element */
    bool te_other;          /* a coding other than chunked */
    int status;             /* a response's status code */
    uint64_t content_length;
    uint64_t remaining;     /* bytes left of the content or of the current chunk */
    size_t budget;          /* head, chunk extension and trailer bytes still allowed */
    size_t max_head;
    enum hs_error error;
} http_strict;

/* Start scanning messages of a kind; max_head bounds the start line and fields, plus the chunk
 * extensions and trailer fields of a chunked body. */
void http_strict_init(http_strict *s, enum hs_kind kind, size_t max_head);
/* For the next response: its request was HEAD, so it has no content whatever its fields say
 * (call before its first byte is scanned, and again after a 1xx). */
void http_strict_expect_no_content(http_strict *s);
/* Scan len bytes; *used: how many were taken (up to the end of a message on HS_DONE). */
enum hs_step http_strict_scan(http_strict *s, const char *data, size_t len, size_t *used);
/* The peer closed: HS_OK at a message boundary or in content delimited by the close (a response
 * without length), else HS_TRUNCATED. */
enum hs_error http_strict_eof(http_strict *s);
/* After HS_ERROR: the violation, and a short reason for a log line. */
enum hs_error http_strict_error(const http_strict *s, const char **reason);
/* The status a server answers a request with for this error: 400, 431 or 501. */
int http_strict_request_status(enum hs_error e);
/* A response's status code, once its status line is scanned. */
int http_strict_status(const http_strict *s);

#endif
