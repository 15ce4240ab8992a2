/* llhttp's request callbacks: each appends to the head buffer and records where a header sits;
 * the gw_request is built only once the request is complete, so that pointers into the buffer
 * cannot move under the app. */
#include "request_parser.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "budget.h"
#include "log.h"
#include "path.h"

#define MAX_HEADERS 100
#define KEEP_BUF 16384 /* buffers larger than this are freed after the request */

typedef struct span {
    size_t name_off, name_len, val_off, val_len;
} span;

static request_parser *parser_of(llhttp_t *p) {
    return (request_parser *)p->data;
}

static span *last_span(request_parser *rp) {
    return (span *)(rp->spans.data + rp->spans.len) - 1;
}

static int fail(request_parser *rp, int status) {
    rp->error_status = status;
    return -1;
}

/* The head's size was checked by the strict scanner (max_header_size, on the raw bytes). */
static int head_append(request_parser *rp, const char *at, size_t len) {
    if (buf_append(&rp->head, at, len)) return fail(rp, 500);
    return 0;
}

static int on_message_begin(llhttp_t *p) {
    request_parser *rp = parser_of(p);
    rp->head.len = rp->spans.len = rp->body.len = 0;
    rp->url_len = 0;
    rp->field_open = false;
    rp->in_trailers = false;
    rp->in_message = true;
    rp->head_done = rp->stream_body = rp->undecided = rp->over_limit = rp->expect_continue = false;
    rp->body_off = 0;
    rp->ev->on_begin(rp->owner);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    request_parser *rp = parser_of(p);
    rp->url_len += len;
    return head_append(rp, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    request_parser *rp = parser_of(p);
    if (rp->in_trailers) return 0;
    if (!rp->field_open) {
        if (rp->spans.len / sizeof(span) >= MAX_HEADERS) return fail(rp, 431);
        span s = {.name_off = rp->head.len};
        if (buf_append(&rp->spans, &s, sizeof s)) return fail(rp, 500);
        rp->field_open = true;
    }
    last_span(rp)->name_len += len;
    return head_append(rp, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
    request_parser *rp = parser_of(p);
    if (rp->in_trailers) return 0;
    last_span(rp)->val_off = rp->head.len;
    rp->field_open = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    request_parser *rp = parser_of(p);
    if (rp->in_trailers) return 0;
    last_span(rp)->val_len += len;
    return head_append(rp, at, len);
}

static bool span_is(const request_parser *rp, const span *s, const char *name) {
    size_t n = strlen(name);
    return s->name_len == n && strncasecmp(rp->head.data + s->name_off, name, n) == 0;
}

static bool expects_continue(const request_parser *rp) {
    size_t n = rp->spans.len / sizeof(span);
    for (size_t i = 0; i < n; i++) {
        const span *s = (const span *)rp->spans.data + i;
        if (span_is(rp, s, "expect") && s->val_len == 12 &&
            strncasecmp(rp->head.data + s->val_off, "100-continue", 12) == 0)
            return true;
    }
    return false;
}

static int on_headers_complete(llhttp_t *p) {
    request_parser *rp = parser_of(p);
    rp->in_trailers = true; /* what follows a chunked body comes through the same callbacks */
    rp->head_done = true;
    bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    rp->over_limit = (p->flags & F_CONTENT_LENGTH) && p->content_length > rp->limits->max_body_size;
    /* llhttp counts its content_length down as the body is parsed: the length said is kept here. */
    rp->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : ((p->flags & F_CHUNKED) ? -1 : 0);
    rp->expect_continue = body && p->http_minor >= 1 && expects_continue(rp);
    /* A body too large to buffer, or of unknown length: what comes of it is kept, unjudged, until
     * the app chooses to stream it, to refuse it (413) or to take it whole within max_body_size.
     * That is one read at most: the app chooses as the request is handed over. */
    rp->undecided = body && (rp->over_limit || (p->flags & F_CHUNKED));
    /* A body to be taken whole is charged to the worker's budget as soon as its size is known:
     * when it does not fit, the client hears 503 before it sends it. */
    if (body && !rp->undecided && !budget_cover(&rp->body_charged, (size_t)rp->content_length)) return fail(rp, 503);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    request_parser *rp = parser_of(p);
    if (!rp->stream_body && !rp->undecided && rp->body.len + len > rp->limits->max_body_size) return fail(rp, 413);
    if (!rp->stream_body && !budget_cover(&rp->body_charged, rp->body.len + len)) return fail(rp, 503);
    if (buf_append(&rp->body, at, len)) return fail(rp, 500);
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    /* An Upgrade (or CONNECT) is answered as plain HTTP, then the connection closes: llhttp
     * parses nothing after it. */
    if (p->upgrade) parser_of(p)->upgrade = true;
    return HPE_PAUSED; /* one request at a time: the rest waits until this one is answered */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void request_parser_init(request_parser *rp, const gw_limits *limits, const request_parser_events *ev, void *owner) {
    *rp = (request_parser){.limits = limits, .ev = ev, .owner = owner};
    http_strict_init(&rp->strict, HS_REQUEST, limits->max_header_size);
    llhttp_init(&rp->llhttp, HTTP_REQUEST, &settings);
    rp->llhttp.data = rp;
}

void request_parser_free(request_parser *rp) {
    buf_free(&rp->head);
    buf_free(&rp->spans);
    buf_free(&rp->headers);
    buf_free(&rp->body);
    budget_release(&rp->body_charged);
}

bool request_parser_body_too_large(const request_parser *rp) {
    return rp->over_limit || rp->body.len > rp->limits->max_body_size;
}

bool request_parser_expects_body(const request_parser *rp) {
    /* A body of known length within max_body_size that did not all come with its head. */
    return rp->head_done && rp->in_message &&
           ((rp->llhttp.flags & F_CHUNKED) || ((rp->llhttp.flags & F_CONTENT_LENGTH) && rp->llhttp.content_length > 0));
}

void request_parser_trim(request_parser *rp) {
    buf_reset(&rp->head, KEEP_BUF);
    buf_reset(&rp->body, KEEP_BUF);
    budget_release(&rp->body_charged);
}

static enum parse_outcome failed(request_parser *rp, int status, const char *why) {
    rp->in_message = false;
    log_debug("bad request: %s", why);
    if (!rp->error_status) rp->error_status = status;
    return PARSE_FAILED;
}

/* The strict scanner sees the bytes first and says where the message ends; llhttp then parses the
 * same bytes into the request and must end it at the same byte. A disagreement is a message that
 * two parsers read two ways: refused like any other ambiguous framing. */
enum parse_outcome request_parser_execute(request_parser *rp, const char *data, size_t len, size_t *used) {
    size_t n;
    enum hs_step step = http_strict_scan(&rp->strict, data, len, &n);
    *used = len;
    if (step == HS_ERROR) {
        const char *why;
        enum hs_error e = http_strict_error(&rp->strict, &why);
        return failed(rp, http_strict_request_status(e), why);
    }
    enum llhttp_errno err = llhttp_execute(&rp->llhttp, data, n);
    bool ended = err == HPE_PAUSED;
    if ((err == HPE_OK || ended) &&
        (ended != (step == HS_DONE) || (ended && llhttp_get_error_pos(&rp->llhttp) != data + n)))
        return failed(rp, 400, "the strict scanner and llhttp disagree on where the request ends");
    if (err == HPE_OK) return PARSE_MORE;
    if (err == HPE_PAUSED_UPGRADE) {
        *used = len;
        return PARSE_CLOSE;
    }
    if (err == HPE_PAUSED) {
        *used = n;
        llhttp_resume(&rp->llhttp);
        rp->in_message = false;
        return PARSE_REQUEST;
    }
    return failed(rp, 400, llhttp_get_error_reason(&rp->llhttp));
}

int request_parser_status(const request_parser *rp, const char **message) {
    switch (rp->error_status) {
    case 413: *message = "request body too large"; break;
    case 431: *message = "request header fields too large"; break;
    case 500: *message = "out of memory"; break;
    case 501: *message = "transfer coding not implemented"; break;
    case 503: *message = "server busy"; break;
    default: *message = "bad request";
    }
    return rp->error_status ? rp->error_status : 400;
}

/* The decoded, normalised path into head (after everything else): see path.h. */
static int normalize_path(request_parser *rp, const char *path, size_t len, size_t *off) {
    if (buf_reserve(&rp->head, len + 2)) return -1;
    *off = rp->head.len;
    size_t n;
    enum path_error e = path_normalize(path, len, rp->head.data + rp->head.len, &n);
    if (e) {
        log_debug("bad request: %s", path_error_reason(e));
        return -1;
    }
    rp->head.len += n + 1;
    return (int)n;
}

static bool valid_request_id(const char *s, size_t n) {
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.:", s[i])) return false;
    return true;
}

int request_parser_build(request_parser *rp, gw_request *r, char *id_out) {
    llhttp_t *p = &rp->llhttp;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->http_minor = p->http_major == 1 ? p->http_minor : 1;
    r->keep_alive = llhttp_should_keep_alive(p);
    r->is_head = p->method == HTTP_HEAD;
    id_out[0] = '\0';

    /* Room for the decoded path now: pointers into head must not move under us below. */
    if (buf_reserve(&rp->head, rp->url_len + 2)) return 500;
    /* Split the target: absolute-form "http://host/path?q" is reduced to its path. */
    const char *url = rp->head.data;
    size_t url_len = rp->url_len, start = 0;
    if (url_len && url[0] != '/' && url[0] != '*') {
        const char *scheme = memchr(url, ':', url_len);
        if (!scheme || (size_t)(scheme - url) + 3 > url_len || scheme[1] != '/' || scheme[2] != '/') return 400;
        const char *slash = memchr(scheme + 3, '/', url_len - (size_t)(scheme + 3 - url));
        start = slash ? (size_t)(slash - url) : url_len;
    }
    const char *q = memchr(url + start, '?', url_len - start);
    size_t path_end = q ? (size_t)(q - url) : url_len;
    size_t target_off = start, query_off = q ? path_end + 1 : url_len;

    size_t nspans = rp->spans.len / sizeof(span);
    rp->headers.len = 0;
    if (buf_reserve(&rp->headers, nspans * sizeof(gw_header) + 1)) return 500;
    size_t path_off;
    /* "GET http://host HTTP/1.1": the path is "/" */
    bool no_path = path_end == start;
    int path_len = normalize_path(rp, no_path ? "/" : url + start, no_path ? 1 : path_end - start, &path_off);
    if (path_len < 0) return 400;
    /* head is final now: pointers into it stay valid until the next request begins. */
    char *h = rp->head.data;
    r->path = h + path_off;
    r->path_len = (size_t)path_len;
    r->target = h + target_off;
    r->target_len = url_len - target_off;
    r->query = q ? h + query_off : "";
    r->query_len = q ? url_len - query_off : 0;

    gw_header *hs = (gw_header *)rp->headers.data;
    for (size_t i = 0; i < nspans; i++) {
        const span *s = (const span *)rp->spans.data + i;
        char *name = h + s->name_off;
        for (size_t k = 0; k < s->name_len; k++) name[k] = (char)tolower((unsigned char)name[k]);
        hs[i] = (gw_header){name, s->name_len, h + s->val_off, s->val_len};
        if (s->name_len == 12 && memcmp(name, "x-request-id", 12) == 0 && valid_request_id(hs[i].value, s->val_len)) {
            memcpy(id_out, hs[i].value, s->val_len);
            id_out[s->val_len] = '\0';
        }
    }
    r->headers = hs;
    r->nheaders = nspans;
    r->body = rp->body.data ? rp->body.data : "";
    r->body_len = rp->body.len;
    r->content_length = rp->content_length;
    r->body_too_large = request_parser_body_too_large(rp);
    return 0;
}
