/* The strict scanner: one state machine over a message's bytes. Written from RFC 9112 (message
 * syntax and framing) and RFC 9110 (fields), section numbers in the comments; see README.md,
 * "HTTP behaviour", for the rules as a table.
 *
 * Every line ends in CRLF. RFC 9112 2.2 lets a recipient also take a bare LF as the end of the
 * start line or a field line (nginx does); llhttp refuses it in fields (8.1.0 as Debian ships it,
 * and 9.x by default), so luagate refuses it everywhere rather than depend on which llhttp it is
 * built with. Tolerated: empty lines (CRLF) before a request line (2.2). */
#include "http_strict.h"

#include <string.h>
#include <strings.h>

/* States metered against the head budget come first (up to ST_CONTENT), then the chunk
 * extension states (also metered), then the rest. */
enum state {
    ST_IDLE, /* before a message: empty lines are skipped (RFC 9112 2.2) */
    ST_IDLE_CR,
    ST_METHOD,
    ST_TARGET_FIRST,
    ST_TARGET,
    ST_VERSION, /* "HTTP/d.d", pos bytes matched */
    ST_STATUS,  /* a response's three digits, pos matched */
    ST_STATUS_END,
    ST_REASON,
    ST_START_CR,
    ST_FIELD_START,
    ST_NAME,
    ST_VALUE,
    ST_VALUE_CR,
    ST_HEAD_END_CR,
    ST_EXT_NAME_FIRST,
    ST_EXT_NAME,
    ST_EXT_VALUE_FIRST,
    ST_EXT_TOKEN,
    ST_EXT_QUOTED,
    ST_EXT_QPAIR,
    ST_EXT_AFTER_QUOTE,
    ST_CONTENT,
    ST_UNTIL_CLOSE,
    ST_SIZE_FIRST,
    ST_SIZE,
    ST_SIZE_LF,
    ST_DATA,
    ST_DATA_CR,
    ST_DATA_LF,
    ST_FAILED,
};

enum field { F_NONE, F_CONTENT_LENGTH, F_TRANSFER_ENCODING, F_HOST };

#define MAX_CHUNK_DIGITS 16 /* a 64-bit size; more digits (even zeros) are refused */

/* Character classes as bitmaps of the 256 byte values: one load and a shift per byte. */
typedef uint32_t char_class[8];

static bool in_class(const char_class bits, unsigned char c) {
    return (bits[c >> 5] >> (c & 31)) & 1;
}

/* RFC 9110 5.6.2: tchar = ALPHA / DIGIT / "!#$%&'*+-.^_`|~" */
static const char_class TCHAR = {0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff};
/* RFC 9110 5.5: field-vchar, SP and HTAB; obs-text (0x80-0xff) is allowed, as the RFC has it. */
static const char_class VALUE = {0x00000200, 0xffffffff, 0xffffffff, 0x7fffffff,
                                 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
/* The request target: any visible byte, obs-text too (nginx takes raw UTF-8). */
static const char_class TARGET = {0x00000000, 0xfffffffe, 0xffffffff, 0x7fffffff,
                                  0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
/* RFC 3986 3.2.2 host [":" port], loosely: reg-name, IP-literal and port characters, that is
 * ALPHA / DIGIT / "-._~!$&'()*+,;=%:[]" */
static const char_class HOST = {0x00000000, 0x2fff7ff2, 0xaffffffe, 0x47fffffe};

/* The same classes as one byte of flags per byte value, built once: a run of field bytes (most of
 * a head) costs a load and a test per byte. */
enum { C_TCHAR = 1, C_VALUE = 2, C_TARGET = 4, C_HOST = 8 };
static uint8_t classes[256];

static void classes_build(void) {
    for (int c = 0; c < 256; c++)
        classes[c] = (uint8_t)((in_class(TCHAR, (unsigned char)c) ? C_TCHAR : 0) |
                               (in_class(VALUE, (unsigned char)c) ? C_VALUE : 0) |
                               (in_class(TARGET, (unsigned char)c) ? C_TARGET : 0) |
                               (in_class(HOST, (unsigned char)c) ? C_HOST : 0));
}

static bool is_tchar(unsigned char c) {
    return classes[c] & C_TCHAR;
}

static bool is_value_char(unsigned char c) {
    return classes[c] & C_VALUE;
}

static char lower(unsigned char c) {
    return (char)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
}

static bool is_ows(unsigned char c) {
    return c == ' ' || c == '\t';
}

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Take a run of bytes of a class at p[i..len) (p[i] is in it and metered already): meters the rest
 * of the run, returns the index of its last byte, or len when the budget ran out. */
static size_t take_run(http_strict *s, const unsigned char *p, size_t i, size_t len, uint8_t cls) {
    size_t j = i + 1;
    while (j + 4 <= len && (classes[p[j]] & classes[p[j + 1]] & classes[p[j + 2]] & classes[p[j + 3]] & cls)) j += 4;
    while (j < len && (classes[p[j]] & cls)) j++;
    if (j - i - 1 > s->budget) return len;
    s->budget -= j - i - 1;
    return j - 1;
}

static const char *const reasons[] = {
    [HS_OK] = "ok",
    [HS_BAD_START_LINE] = "malformed start line",
    [HS_BARE_CR] = "CR not followed by LF",
    [HS_BARE_LF] = "LF not preceded by CR",
    [HS_OBS_FOLD] = "obsolete line folding (a field line starting with whitespace)",
    [HS_BAD_FIELD_NAME] = "invalid field name",
    [HS_SPACE_BEFORE_COLON] = "whitespace before the colon of a field",
    [HS_BAD_FIELD_VALUE] = "control character in a field value",
    [HS_TOO_LARGE] = "head, chunk extensions or trailers too large",
    [HS_BAD_CONTENT_LENGTH] = "invalid or repeated Content-Length",
    [HS_LENGTH_AND_ENCODING] = "both Content-Length and Transfer-Encoding",
    [HS_BAD_TRANSFER_ENCODING] = "invalid Transfer-Encoding",
    [HS_UNKNOWN_TRANSFER_CODING] = "transfer coding other than chunked",
    [HS_NO_HOST] = "HTTP/1.1 request without Host",
    [HS_REPEATED_HOST] = "more than one Host",
    [HS_BAD_HOST] = "invalid Host",
    [HS_CONNECT_BODY] = "CONNECT request with content",
    [HS_BAD_CHUNK_SIZE] = "invalid chunk size",
    [HS_BAD_CHUNK_EXT] = "invalid chunk extension",
    [HS_BAD_CHUNK_END] = "chunk data not followed by CRLF",
    [HS_TRUNCATED] = "message cut short",
};

/* What one message leaves behind is cleared before the next: the kind and limit stay. */
static void begin_message(http_strict *s) {
    enum hs_kind kind = s->kind;
    size_t max = s->max_head;
    memset(s, 0, sizeof *s);
    s->kind = (uint8_t)kind;
    s->max_head = s->budget = max;
}

void http_strict_init(http_strict *s, enum hs_kind kind, size_t max_head) {
    if (!classes['a']) classes_build();
    s->kind = (uint8_t)kind;
    s->max_head = max_head;
    begin_message(s);
}

void http_strict_expect_no_content(http_strict *s) {
    s->head_request = true;
}

static enum hs_step fail(http_strict *s, enum hs_error e) {
    s->error = e;
    s->state = ST_FAILED;
    return HS_ERROR;
}

/* The method: CONNECT has no content (RFC 9110 9.3.6); PRI starts HTTP/2's connection preface
 * (RFC 9113 3.4), never an HTTP/1.1 request (llhttp would wait for the rest of the preface). */
static enum hs_error method_done(http_strict *s) {
    s->connect = s->name_len == 7 && memcmp(s->name, "CONNECT", 7) == 0;
    if (s->name_len == 3 && memcmp(s->name, "PRI", 3) == 0) return HS_BAD_START_LINE;
    return HS_OK;
}

/* ---- framing fields (RFC 9112 6) ---- */

/* At the colon: is this Content-Length, Transfer-Encoding or Host? Trailers never frame. */
static enum hs_error name_done(http_strict *s) {
    s->field = F_NONE;
    s->pos = 0;
    if (s->in_trailers || s->name_len > sizeof s->name) return HS_OK;
    if (s->name_len == 14 && strncasecmp(s->name, "content-length", 14) == 0) {
        s->field = F_CONTENT_LENGTH;
        if (++s->cl_lines > 1) return HS_BAD_CONTENT_LENGTH; /* repeated: refused, as RFC 9110 8.6 allows */
    } else if (s->name_len == 17 && strncasecmp(s->name, "transfer-encoding", 17) == 0) {
        s->field = F_TRANSFER_ENCODING;
        s->te_lines++;
    } else if (s->name_len == 4 && strncasecmp(s->name, "host", 4) == 0) {
        s->field = F_HOST;
        if (++s->host_lines > 1) return HS_REPEATED_HOST;
    }
    return HS_OK;
}

/* One element of the Transfer-Encoding list ends (at a comma or the end of the line). */
static void coding_done(http_strict *s) {
    if (s->elem_len == 0) return; /* empty list elements are ignored (RFC 9110 5.6.1) */
    bool chunked = s->elem_len == 7 && memcmp(s->elem, "chunked", 7) == 0;
    if (s->te_chunked_last) s->te_chunked_before = true; /* something follows chunked */
    s->te_chunked_last = chunked;
    if (!chunked) s->te_other = true;
    s->elem_len = 0;
    s->elem_space = false;
}

/* A byte of a framing field's value (already known to be a field-value byte). */
static enum hs_error field_byte(http_strict *s, unsigned char c) {
    switch (s->field) {
    case F_CONTENT_LENGTH: /* OWS 1*DIGIT OWS; pos: 0 before, 1 in, 2 after the digits */
        if (c >= '0' && c <= '9') {
            if (s->pos == 2 || s->content_length > (UINT64_MAX / 2 - 9) / 10) return HS_BAD_CONTENT_LENGTH;
            s->content_length = s->content_length * 10 + (uint64_t)(c - '0');
            s->pos = 1;
            s->cl_digits = true;
        } else if (is_ows(c)) {
            if (s->pos == 1) s->pos = 2;
        } else {
            return HS_BAD_CONTENT_LENGTH;
        }
        return HS_OK;
    case F_TRANSFER_ENCODING:
        if (c == ',') {
            coding_done(s);
        } else if (is_ows(c)) {
            if (s->elem_len) s->elem_space = true;
        } else if (s->elem_space || s->elem_len >= sizeof s->elem) {
            s->elem_len = sizeof s->elem; /* parameters or a long name: not chunked, whatever it is */
        } else {
            s->elem[s->elem_len++] = lower(c);
        }
        return HS_OK;
    case F_HOST: /* OWS host OWS; pos as for Content-Length */
        if (is_ows(c)) {
            if (s->pos == 1) s->pos = 2;
            return HS_OK;
        }
        if (s->pos == 2 || !(classes[c] & C_HOST)) return HS_BAD_HOST;
        s->pos = 1;
        return HS_OK;
    default:
        return HS_OK;
    }
}

static enum hs_error field_line_done(http_strict *s) {
    if (s->field == F_CONTENT_LENGTH && !s->cl_digits) return HS_BAD_CONTENT_LENGTH;
    if (s->field == F_TRANSFER_ENCODING) coding_done(s);
    s->field = F_NONE;
    return HS_OK;
}

/* ---- the end of the head: how long is the content? (RFC 9112 6.3) ---- */

enum body { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

static enum hs_error transfer_coding(const http_strict *s, enum body *b) {
    if (s->cl_lines) return HS_LENGTH_AND_ENCODING;               /* 6.1: smuggling's favourite */
    if (s->version_minor == 0) return HS_BAD_TRANSFER_ENCODING;    /* 6.1: faulty framing in 1.0 */
    if (s->te_chunked_before) return HS_BAD_TRANSFER_ENCODING;     /* chunked twice, or not last */
    if (!s->te_chunked_last) {
        if (s->kind == HS_RESPONSE && s->te_lines) { /* 6.3.4: a response then ends at the close */
            *b = BODY_UNTIL_CLOSE;
            return HS_OK;
        }
        return HS_BAD_TRANSFER_ENCODING; /* a request must end in chunked (6.3.4) */
    }
    if (s->te_other && s->kind == HS_REQUEST) return HS_UNKNOWN_TRANSFER_CODING; /* 501 (6.1) */
    *b = BODY_CHUNKED;
    return HS_OK;
}

static enum hs_error head_done(http_strict *s, enum body *b) {
    *b = BODY_NONE;
    if (s->kind == HS_REQUEST) {
        if (s->host_lines == 0 && s->version_minor >= 1) return HS_NO_HOST; /* RFC 9112 3.2 */
        if (s->te_lines) {
            enum hs_error e = transfer_coding(s, b);
            if (e) return e;
        } else if (s->cl_lines && s->content_length > 0) {
            *b = BODY_LENGTH;
        }
        if (s->connect && *b != BODY_NONE) return HS_CONNECT_BODY; /* RFC 9110 9.3.6 */
        return HS_OK;
    }
    /* A response: 1xx, 204 and 304, and any answer to HEAD, have no content (RFC 9112 6.3.1). */
    if (s->status < 200 || s->status == 204 || s->status == 304 || s->head_request) return HS_OK;
    if (s->te_lines) return transfer_coding(s, b);
    if (s->cl_lines) *b = s->content_length ? BODY_LENGTH : BODY_NONE;
    else *b = BODY_UNTIL_CLOSE;
    return HS_OK;
}

/* ---- fast paths: what the byte-at-a-time states below would do, in one step ---- */

/* A response's "HTTP/1.x NNN " (p[0] is the 'H', metered): its length, or 0 to go byte by byte. */
static size_t status_line_start(http_strict *s, const unsigned char *p, size_t avail) {
    if (avail < 13 || s->budget < 12 || memcmp(p, "HTTP/1.", 7) != 0) return 0;
    if (p[7] < '0' || p[7] > '9' || p[8] != ' ' || p[12] != ' ') return 0;
    for (int k = 9; k < 12; k++)
        if (p[k] < '0' || p[k] > '9') return 0;
    s->version_major = 1;
    s->version_minor = (uint8_t)(p[7] - '0');
    s->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    s->budget -= 12;
    s->state = ST_REASON;
    return 13;
}

/* A request's "HTTP/1.x\r\n" (p[0] metered): true when it is there whole, taken. */
static bool request_version_line(http_strict *s, const unsigned char *p, size_t avail) {
    if (avail < 10 || s->budget < 9 || memcmp(p, "HTTP/1.", 7) != 0) return false;
    if (p[7] < '0' || p[7] > '9' || p[8] != '\r' || p[9] != '\n') return false;
    s->version_major = 1;
    s->version_minor = (uint8_t)(p[7] - '0');
    s->budget -= 9;
    s->state = ST_FIELD_START;
    return true;
}

/* ---- the scanner ---- */

#define FAIL(e) return (*used = i, fail(s, (e)))
#define DONE() return (*used = i + 1, begin_message(s), HS_DONE)

enum hs_step http_strict_scan(http_strict *s, const char *data, size_t len, size_t *used) {
    const unsigned char *p = (const unsigned char *)data;
    if (s->state == ST_FAILED) return (*used = 0, HS_ERROR);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (s->state < ST_CONTENT) { /* the head, extensions, trailers: metered */
            if (s->budget == 0) FAIL(HS_TOO_LARGE);
            s->budget--;
        }
        switch ((enum state)s->state) {
        case ST_IDLE:
            if (c == '\r') {
                s->state = ST_IDLE_CR;
            } else if (c == '\n') {
                FAIL(HS_BARE_LF);
            } else if (s->kind == HS_RESPONSE && c == 'H') {
                size_t n = status_line_start(s, p + i, len - i);
                if (n) i += n - 1; /* "HTTP/1.1 200 " at once */
                else s->state = ST_VERSION, s->pos = 1;
            } else if (s->kind == HS_REQUEST && is_tchar(c)) {
                size_t end = take_run(s, p, i, len, C_TCHAR);
                if (end == len) FAIL(HS_TOO_LARGE);
                size_t n = end - i + 1;
                memcpy(s->name, p + i, n < sizeof s->name ? n : sizeof s->name);
                s->name_len = (uint8_t)(n <= sizeof s->name ? n : sizeof s->name + 1);
                s->state = ST_METHOD;
                i = end;
            } else {
                FAIL(HS_BAD_START_LINE);
            }
            break;
        case ST_IDLE_CR:
            if (c != '\n') FAIL(HS_BARE_CR);
            s->state = ST_IDLE;
            break;
        case ST_METHOD: /* its first bytes kept in name: is it CONNECT, or PRI? */
            if (c == ' ') {
                enum hs_error e = method_done(s);
                if (e) FAIL(e);
                s->state = ST_TARGET_FIRST;
            } else if (!is_tchar(c)) {
                FAIL(HS_BAD_START_LINE);
            } else {
                if (s->name_len < sizeof s->name) s->name[s->name_len] = (char)c;
                if (s->name_len <= sizeof s->name) s->name_len++;
            }
            break;
        case ST_TARGET_FIRST:
        case ST_TARGET: /* any visible byte, obs-text too (nginx takes raw UTF-8); one SP ends it */
            if (c == ' ' && s->state == ST_TARGET) {
                s->state = ST_VERSION;
                s->pos = 0;
            } else if (!(classes[c] & C_TARGET)) {
                FAIL(HS_BAD_START_LINE);
            } else {
                s->state = ST_TARGET;
                if ((i = take_run(s, p, i, len, C_TARGET)) == len) FAIL(HS_TOO_LARGE);
            }
            break;
        case ST_VERSION: /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3) */
            if (s->pos == 0 && s->kind == HS_REQUEST && request_version_line(s, p + i, len - i)) {
                i += 9; /* "HTTP/1.1\r\n" at once */
                break;
            }
            if (s->pos < 5) {
                if (c != (unsigned char)"HTTP/"[s->pos]) FAIL(HS_BAD_START_LINE);
            } else if (s->pos == 5 || s->pos == 7) {
                if (c < '0' || c > '9') FAIL(HS_BAD_START_LINE);
                if (s->pos == 5) s->version_major = (uint8_t)(c - '0');
                else s->version_minor = (uint8_t)(c - '0');
            } else if (s->pos == 6) {
                if (c != '.') FAIL(HS_BAD_START_LINE);
            } else if (s->kind == HS_RESPONSE) { /* then SP and the status */
                if (c != ' ') FAIL(HS_BAD_START_LINE);
                s->state = ST_STATUS;
                s->pos = 0;
                break;
            } else if (c == '\r') {
                s->state = ST_START_CR;
            } else {
                FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_START_LINE);
            }
            if (s->pos == 7 && s->version_major != 1) FAIL(HS_BAD_START_LINE); /* only HTTP/1.x here */
            s->pos++;
            break;
        case ST_STATUS:
            if (c < '0' || c > '9') FAIL(HS_BAD_START_LINE);
            s->status = s->status * 10 + (c - '0');
            if (++s->pos == 3) s->state = ST_STATUS_END;
            break;
        case ST_STATUS_END: /* SP [reason]; a missing SP before an empty reason is tolerated */
            if (c == ' ') s->state = ST_REASON;
            else if (c == '\r') s->state = ST_START_CR;
            else FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_START_LINE);
            break;
        case ST_REASON: /* HTAB / SP / VCHAR / obs-text */
            if (c == '\r') s->state = ST_START_CR;
            else if (!is_value_char(c)) FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_START_LINE);
            else if ((i = take_run(s, p, i, len, C_VALUE)) == len) FAIL(HS_TOO_LARGE);
            break;
        case ST_START_CR:
            if (c != '\n') FAIL(HS_BARE_CR);
            s->state = ST_FIELD_START;
            break;
        case ST_FIELD_START:
            if (c == '\r') {
                s->state = ST_HEAD_END_CR;
                break;
            }
            if (c == '\n') FAIL(HS_BARE_LF);
            if (is_ows(c)) FAIL(HS_OBS_FOLD); /* RFC 9112 5.2 and 2.2: never unfolded, refused */
            if (!is_tchar(c)) FAIL(HS_BAD_FIELD_NAME);
            s->state = ST_NAME;
            s->name_len = 0;
            /* fall through */
        case ST_NAME:
            if (c == ':') {
                enum hs_error e = name_done(s);
                if (e) FAIL(e);
                s->state = ST_VALUE;
            } else if (is_tchar(c)) {
                size_t end = take_run(s, p, i, len, C_TCHAR);
                if (end == len) FAIL(HS_TOO_LARGE);
                size_t n = end - i + 1; /* kept as sent: name_done compares without case */
                if (s->name_len + n <= sizeof s->name) memcpy(s->name + s->name_len, p + i, n), s->name_len += (uint8_t)n;
                else s->name_len = sizeof s->name + 1; /* longer than any framing field's */
                i = end;
            } else if (is_ows(c)) {
                FAIL(HS_SPACE_BEFORE_COLON); /* RFC 9112 5.1: MUST be rejected with 400 */
            } else {
                FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_FIELD_NAME);
            }
            break;
        case ST_VALUE:
            if (s->field == F_NONE) { /* the common case: a run of plain value bytes */
                if (is_value_char(c)) {
                    if ((i = take_run(s, p, i, len, C_VALUE)) == len) FAIL(HS_TOO_LARGE);
                    break;
                }
            } else if (s->field == F_HOST && s->pos != 2 && (classes[c] & C_HOST)) {
                if ((i = take_run(s, p, i, len, C_HOST)) == len) FAIL(HS_TOO_LARGE);
                s->pos = 1; /* in the host: what follows is OWS, or the end */
                break;
            } else if (is_value_char(c)) {
                enum hs_error e = field_byte(s, c);
                if (e) FAIL(e);
                break;
            }
            if (c != '\r') FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_FIELD_VALUE);
            s->state = ST_VALUE_CR;
            if (i + 1 < len && p[i + 1] == '\n' && s->budget) { /* CRLF at once: the line ends */
                s->budget--;
                i++;
                enum hs_error e = field_line_done(s);
                if (e) FAIL(e);
                s->state = ST_FIELD_START;
            }
            break;
        case ST_VALUE_CR: {
            if (c != '\n') FAIL(HS_BARE_CR);
            enum hs_error e = field_line_done(s);
            if (e) FAIL(e);
            s->state = ST_FIELD_START;
            break;
        }
        case ST_HEAD_END_CR: {
            if (c != '\n') FAIL(HS_BARE_CR); /* "\r\n\rX": not the end of the head */
            if (s->in_trailers) DONE();
            enum body b;
            enum hs_error e = head_done(s, &b);
            if (e) FAIL(e);
            if (b == BODY_NONE) DONE();
            s->remaining = s->content_length;
            s->state = b == BODY_LENGTH ? ST_CONTENT : b == BODY_CHUNKED ? ST_SIZE_FIRST : ST_UNTIL_CLOSE;
            s->pos = 0;
            break;
        }
        case ST_CONTENT: {
            size_t n = len - i;
            if (n > s->remaining) n = (size_t)s->remaining;
            s->remaining -= n;
            i += n - 1;
            if (s->remaining == 0) DONE();
            break;
        }
        case ST_UNTIL_CLOSE:
            i = len - 1;
            break;
        /* chunked (RFC 9112 7.1): chunk-size [ chunk-ext ] CRLF chunk-data CRLF, last-chunk,
         * trailer-section CRLF. No whitespace anywhere in a chunk line (the BWS of 7.1.1 is never
         * sent by a conforming sender and is where parsers disagree: llhttp 9 refuses it too). */
        case ST_SIZE_FIRST:
        case ST_SIZE: {
            int d = hex_digit(c);
            if (d >= 0) {
                if (++s->pos > MAX_CHUNK_DIGITS) FAIL(HS_BAD_CHUNK_SIZE);
                s->remaining = s->remaining * 16 + (uint64_t)d;
                s->state = ST_SIZE;
            } else if (s->state == ST_SIZE_FIRST) {
                FAIL(HS_BAD_CHUNK_SIZE);
            } else if (c == ';') {
                s->state = ST_EXT_NAME_FIRST;
            } else if (c == '\r') {
                s->state = ST_SIZE_LF;
            } else if (c == '\n') {
                FAIL(HS_BARE_LF);
            } else {
                FAIL(HS_BAD_CHUNK_SIZE);
            }
            break;
        }
        case ST_EXT_NAME_FIRST:
            if (!is_tchar(c)) FAIL(HS_BAD_CHUNK_EXT);
            s->state = ST_EXT_NAME;
            break;
        case ST_EXT_NAME:
        case ST_EXT_TOKEN:
            if (is_tchar(c)) break;
            if (c == '=' && s->state == ST_EXT_NAME) s->state = ST_EXT_VALUE_FIRST;
            else if (c == ';') s->state = ST_EXT_NAME_FIRST;
            else if (c == '\r') s->state = ST_SIZE_LF;
            else FAIL(c == '\n' ? HS_BARE_LF : HS_BAD_CHUNK_EXT);
            break;
        case ST_EXT_VALUE_FIRST:
            if (c == '"') s->state = ST_EXT_QUOTED;
            else if (is_tchar(c)) s->state = ST_EXT_TOKEN;
            else FAIL(HS_BAD_CHUNK_EXT);
            break;
        case ST_EXT_QUOTED: /* RFC 9110 5.6.4: qdtext / quoted-pair; never CR or LF */
            if (c == '"') s->state = ST_EXT_AFTER_QUOTE;
            else if (c == '\\') s->state = ST_EXT_QPAIR;
            else if (!is_value_char(c)) FAIL(HS_BAD_CHUNK_EXT);
            break;
        case ST_EXT_QPAIR:
            if (!is_value_char(c)) FAIL(HS_BAD_CHUNK_EXT);
            s->state = ST_EXT_QUOTED;
            break;
        case ST_EXT_AFTER_QUOTE:
            if (c == ';') s->state = ST_EXT_NAME_FIRST;
            else if (c == '\r') s->state = ST_SIZE_LF;
            else FAIL(HS_BAD_CHUNK_EXT);
            break;
        case ST_SIZE_LF:
            if (c != '\n') FAIL(HS_BARE_CR);
            s->pos = 0;
            if (s->remaining == 0) { /* the last chunk: trailer fields follow, metered as the head */
                s->in_trailers = true;
                s->state = ST_FIELD_START;
            } else {
                s->state = ST_DATA;
            }
            break;
        case ST_DATA: {
            size_t n = len - i;
            if (n > s->remaining) n = (size_t)s->remaining;
            s->remaining -= n;
            i += n - 1;
            if (s->remaining == 0) s->state = ST_DATA_CR;
            break;
        }
        case ST_DATA_CR:
            if (c != '\r') FAIL(HS_BAD_CHUNK_END);
            s->state = ST_DATA_LF;
            break;
        case ST_DATA_LF:
            if (c != '\n') FAIL(HS_BARE_CR);
            s->state = ST_SIZE_FIRST;
            break;
        case ST_FAILED:
            FAIL(s->error);
        }
    }
    *used = len;
    return HS_MORE;
}

enum hs_error http_strict_eof(http_strict *s) {
    if (s->state == ST_UNTIL_CLOSE || s->state == ST_IDLE) return HS_OK;
    if (s->state != ST_FAILED) {
        s->error = HS_TRUNCATED;
        s->state = ST_FAILED;
    }
    return s->error;
}

enum hs_error http_strict_error(const http_strict *s, const char **reason) {
    *reason = reasons[s->error];
    return s->error;
}

int http_strict_request_status(enum hs_error e) {
    switch (e) {
    case HS_TOO_LARGE: return 431;
    case HS_UNKNOWN_TRANSFER_CODING: return 501;
    default: return 400;
    }
}

int http_strict_status(const http_strict *s) {
    return s->status;
}
