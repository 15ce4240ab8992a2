#include "response.h"

#include <stdio.h>
#include <string.h>

const char *response_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

gw_response response_error(int status, const char *message, const char *request_id, char *buf) {
    int n = snprintf(buf, RESPONSE_ERROR_BUF, "{\"error\":\"%s\",\"request_id\":\"%s\"}\n", message, request_id);
    if (n < 0 || n >= RESPONSE_ERROR_BUF) n = 0;
    return (gw_response){.status = status,
                         .content_type = "application/json",
                         .content_type_len = 16,
                         .body = buf,
                         .body_len = (size_t)n};
}

static bool is_token_char(unsigned char c) {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool response_value_valid(const char *value, size_t len) {
    for (size_t i = 0; i < len; i++) {
        char c = value[i];
        if (c == '\r' || c == '\n' || c == '\0') return false;
    }
    return true;
}

bool response_header_invalid(const gw_header *h) {
    if (h->name_len == 0) return true;
    for (size_t i = 0; i < h->name_len; i++)
        if (!is_token_char((unsigned char)h->name[i])) return true;
    return !response_value_valid(h->value, h->value_len);
}

/* Appends without bounds checks: the caller reserved enough room. */
static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

static char *put_uint(char *p, size_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

#define PUT_LIT(p, s) put((p), (s), sizeof(s) - 1)

int response_format_head(gw_buf *out, const gw_response *r, const char *date, const char *request_id,
                         bool keep_alive, int http_minor) {
    const char *reason = response_reason(r->status);
    size_t id_len = request_id ? strlen(request_id) : 0;
    size_t need = 128 + strlen(reason) + 30 + r->content_type_len + id_len;
    for (size_t i = 0; i < r->nheaders; i++) need += r->headers[i].name_len + r->headers[i].value_len + 4;
    if (buf_reserve(out, need)) return -1;

    char *p = out->data + out->len;
    p = http_minor == 0 ? PUT_LIT(p, "HTTP/1.0 ") : PUT_LIT(p, "HTTP/1.1 ");
    p = put_uint(p, (size_t)r->status);
    *p++ = ' ';
    p = put(p, reason, strlen(reason));
    p = PUT_LIT(p, "\r\nDate: ");
    p = put(p, date, strlen(date));
    if (r->content_type) {
        p = PUT_LIT(p, "\r\nContent-Type: ");
        p = put(p, r->content_type, r->content_type_len);
    }
    /* 1xx, 204 and 304 carry no body and no Content-Length. */
    if (!(r->status < 200 || r->status == 204 || r->status == 304)) {
        if (r->framing == FRAME_CHUNKED) {
            p = PUT_LIT(p, "\r\nTransfer-Encoding: chunked");
        } else if (r->framing == FRAME_LENGTH) {
            p = PUT_LIT(p, "\r\nContent-Length: ");
            p = put_uint(p, r->body_len);
        }
    }
    if (id_len) {
        p = PUT_LIT(p, "\r\nX-Request-Id: ");
        p = put(p, request_id, id_len);
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        const gw_header *h = &r->headers[i];
        *p++ = '\r', *p++ = '\n';
        p = put(p, h->name, h->name_len);
        *p++ = ':', *p++ = ' ';
        p = put(p, h->value, h->value_len);
    }
    if (!keep_alive && http_minor > 0) p = PUT_LIT(p, "\r\nConnection: close");
    if (keep_alive && http_minor == 0) p = PUT_LIT(p, "\r\nConnection: keep-alive");
    p = PUT_LIT(p, "\r\n\r\n");
    out->len = (size_t)(p - out->data);
    return 0;
}
