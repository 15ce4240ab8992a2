/* An upstream's answer from its bytes: see response_parser.h. */
#include "response_parser.h"

#include <string.h>
#include <strings.h>

static response_parser *parser_of(llhttp_t *l) {
    return l->data;
}

/* Called a dozen times per answer: the common case, room in the buffer, is a bare copy. */
static inline int head_add(response_parser *p, const char *at, size_t len) {
    gw_buf *b = &p->head;
    if (b->cap - b->len >= len) {
        memcpy(b->data + b->len, at, len);
        b->len += len;
        return 0;
    }
    return buf_append(b, at, len) ? HPE_USER : 0; /* the strict scanner bounds the head */
}

static int on_message_begin(llhttp_t *l) {
    response_parser *p = parser_of(l);
    p->head.len = 0;
    if (buf_reserve(&p->head, 1024)) return HPE_USER;
    p->ctype_len = p->keepalive_len = 0;
    p->line_done = p->in_name = p->field_open = false;
    return 0;
}

/* The status line is "HTTP/1.x 000 reason": the digits are written once llhttp has them. */
static int status_start(llhttp_t *l, response_parser *p) {
    if (p->head.len > 0) return 0;
    return head_add(p, l->http_minor ? "HTTP/1.1 000 " : "HTTP/1.0 000 ", 13);
}

static int on_status(llhttp_t *l, const char *at, size_t len) {
    response_parser *p = parser_of(l);
    return status_start(l, p) || head_add(p, at, len) ? HPE_USER : 0;
}

/* End the status line, or the header value before, with CRLF. */
static int end_value(llhttp_t *l, response_parser *p) {
    if (!p->line_done) {
        p->line_done = true;
        return status_start(l, p) || head_add(p, "\r\n", 2);
    }
    if (!p->field_open) return 0;
    p->field_open = false;
    if (p->in_ctype) p->ctype_len = p->head.len - p->value_off;
    if (p->in_keepalive) p->keepalive_off = p->value_off, p->keepalive_len = p->head.len - p->value_off;
    return head_add(p, "\r\n", 2);
}

static int on_header_field(llhttp_t *l, const char *at, size_t len) {
    response_parser *p = parser_of(l);
    if (p->head_done) return 0; /* trailers: never mixed into the answer's headers */
    if (!p->in_name) {          /* a new name: the status line, or the value before, ends */
        if (end_value(l, p)) return HPE_USER;
        p->name_off = p->head.len;
        p->in_name = true;
    }
    return head_add(p, at, len);
}

static int on_header_field_complete(llhttp_t *l) {
    response_parser *p = parser_of(l);
    if (p->head_done) return 0;
    const char *name = p->head.data + p->name_off;
    size_t n = p->head.len - p->name_off;
    p->in_ctype = n == 12 && (name[0] | 0x20) == 'c' && strncasecmp(name, "content-type", 12) == 0;
    p->in_keepalive = n == 10 && (name[0] | 0x20) == 'k' && strncasecmp(name, "keep-alive", 10) == 0;
    p->in_name = false;
    if (head_add(p, ": ", 2)) return HPE_USER;
    p->value_off = p->head.len;
    if (p->in_ctype) p->ctype_off = p->value_off;
    p->field_open = true;
    return 0;
}

static int on_header_value(llhttp_t *l, const char *at, size_t len) {
    response_parser *p = parser_of(l);
    if (p->head_done) return 0;
    return head_add(p, at, len);
}

static int on_headers_complete(llhttp_t *l) {
    response_parser *p = parser_of(l);
    if (end_value(l, p)) return HPE_USER;
    /* The three digits of the status line, now that llhttp has read them. */
    int status = l->status_code;
    memcpy(p->head.data + 9, (char[3]){(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                                        (char)('0' + status % 10)}, 3);
    p->status = status;
    if (status >= 100 && status < 200 && status != 101) return 0; /* 1xx: the real answer follows */
    p->head_done = true;
    p->http_minor = l->http_minor;
    p->content_length = (l->flags & F_CONTENT_LENGTH) ? (int64_t)l->content_length : -1;
    if (p->ev->on_head(p->owner, p)) {
        p->stopped = true;
        return HPE_USER;
    }
    return p->no_content ? 1 : 0; /* 1: no body, whatever the headers say */
}

static int on_body(llhttp_t *l, const char *at, size_t len) {
    response_parser *p = parser_of(l);
    if (p->ev->on_body(p->owner, at, len)) {
        p->stopped = true;
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *l) {
    response_parser *p = parser_of(l);
    if (!p->head_done) { /* a 1xx ended: the next message is the answer */
        p->interim_ended = true;
        return 0;
    }
    p->complete = true;
    return HPE_PAUSED; /* stop here: anything after it is not ours */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void response_parser_init(response_parser *p, const response_parser_events *ev, void *owner, size_t max_head) {
    *p = (response_parser){.ev = ev, .owner = owner};
    p->strict.max_head = max_head;
}

void response_parser_free(response_parser *p) {
    buf_free(&p->head);
}

void response_parser_start(response_parser *p, bool head) {
    llhttp_init(&p->llhttp, HTTP_RESPONSE, &settings);
    p->llhttp.data = p;
    http_strict_init(&p->strict, HS_RESPONSE, p->strict.max_head);
    if (head) http_strict_expect_no_content(&p->strict);
    p->no_content = head;
    p->head_done = p->interim_ended = p->complete = p->stopped = false;
    p->error = NULL;
    p->status = 0;
}

static enum rp_outcome fail(response_parser *p, const char *why) {
    p->error = why;
    return RP_ERROR;
}

/* The scanner goes first and says how far the message runs; llhttp then parses exactly those
 * bytes and must end a message where the scanner did. */
enum rp_outcome response_parser_execute(response_parser *p, const char *data, size_t len, size_t *used) {
    size_t off = 0;
    while (off < len) {
        size_t n;
        enum hs_step step = http_strict_scan(&p->strict, data + off, len - off, &n);
        if (step == HS_ERROR) {
            const char *why;
            http_strict_error(&p->strict, &why);
            return fail(p, why);
        }
        enum llhttp_errno err = llhttp_execute(&p->llhttp, data + off, n);
        if (p->stopped) return RP_STOPPED;
        if (err == HPE_PAUSED && p->complete) {
            if (step != HS_DONE || llhttp_get_error_pos(&p->llhttp) != data + off + n)
                return fail(p, "the strict scanner and llhttp disagree on where the answer ends");
            *used = off + n;
            return RP_DONE;
        }
        if (err != HPE_OK) return fail(p, llhttp_get_error_reason(&p->llhttp));
        if ((step == HS_DONE) != p->interim_ended)
            return fail(p, "the strict scanner and llhttp disagree on where an interim answer ends");
        if (p->interim_ended) { /* a 1xx: scan the next message as the answer */
            p->interim_ended = false;
            if (p->no_content) http_strict_expect_no_content(&p->strict);
        }
        off += n;
    }
    *used = len;
    return RP_MORE;
}

enum rp_outcome response_parser_eof(response_parser *p) {
    if (!p->head_done || !llhttp_message_needs_eof(&p->llhttp) || http_strict_eof(&p->strict) != HS_OK) return RP_MORE;
    llhttp_finish(&p->llhttp);
    if (p->stopped) return RP_STOPPED;
    return p->complete ? RP_DONE : RP_MORE;
}

bool response_parser_keep_alive(const response_parser *p) {
    return llhttp_should_keep_alive(&p->llhttp);
}
