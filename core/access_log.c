#define _GNU_SOURCE /* memrchr */
#include "access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define BUF_SIZE (160u << 10)
#define LINE_MAX_BYTES (48u << 10) /* the longest line the caps below allow (8 calls at most) */
#define CAP_TARGET 4096            /* bytes of a field logged, at most (escaped, up to 6x) */
#define CAP_HEADER 256
#define CAP_NAME 128

static struct {
    int fd; /* -1: off */
    bool is_file;
    bool dropping; /* writes fail: said once */
    enum access_format format;
    char path[4096];
    char buf[BUF_SIZE];
    size_t len;
    time_t sec; /* the second `stamp` holds */
    char stamp[64];
    size_t stamp_len;
} al = {.fd = -1};

/* ---- writing ---- */

static bool write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(al.fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

void access_log_flush(void) {
    if (al.fd < 0 || al.len == 0) return;
    bool ok = true;
    if (al.is_file) {
        ok = write_all(al.buf, al.len);
    } else {
        /* A pipe or a socket shared by several workers: pieces of whole lines, PIPE_BUF at most,
         * each written atomically. A longer line goes alone. */
        size_t off = 0;
        while (ok && off < al.len) {
            size_t n = al.len - off;
            if (n > PIPE_BUF) {
                const char *nl = memrchr(al.buf + off, '\n', PIPE_BUF);
                n = nl ? (size_t)(nl - (al.buf + off)) + 1 : (size_t)((char *)memchr(al.buf + off, '\n', n) - (al.buf + off)) + 1;
            }
            ok = write_all(al.buf + off, n);
            off += n;
        }
    }
    if (!ok && !al.dropping) log_error("access log: write failed: %s; lines are lost", strerror(errno));
    al.dropping = !ok;
    al.len = 0;
}

static int open_dest(const char *dest) {
    if (strcmp(dest, "stdout") == 0) return dup(1);
    return open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static int reopen(void) {
    if (al.fd < 0 || strcmp(al.path, "stdout") == 0) return 0;
    access_log_flush();
    int fd = open_dest(al.path);
    if (fd < 0) return -errno;
    close(al.fd);
    al.fd = fd;
    return 0;
}

int access_log_open(const char *dest, enum access_format format) {
    int fd = open_dest(dest);
    if (fd < 0) return -errno;
    struct stat st;
    al.is_file = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    al.fd = fd;
    al.format = format;
    snprintf(al.path, sizeof al.path, "%s", dest);
    return log_on_reopen(reopen);
}

bool access_log_enabled(void) {
    return al.fd >= 0;
}

void access_log_close(void) {
    access_log_flush();
    if (al.fd >= 0) close(al.fd);
    al.fd = -1;
}

/* ---- formatting: by hand, into the buffer, which always has room for a whole line ---- */

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, s) put(p, s, sizeof(s) - 1)

static char *put_u64(char *p, uint64_t v) {
    char tmp[20];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (n > 0) *p++ = tmp[--n];
    return p;
}

/* Seconds with millisecond resolution, as nginx's $request_time: "0.004". */
static char *put_seconds(char *p, uint64_t us) {
    uint64_t ms = (us + 500) / 1000;
    p = put_u64(p, ms / 1000);
    *p++ = '.';
    unsigned frac = (unsigned)(ms % 1000);
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
}

static const char hexd[] = "0123456789ABCDEF";

/* The bytes both formats escape: '"', '\\', and those outside printable ASCII. */
#define E1 1, 1, 1, 1, 1, 1, 1, 1
#define E0 0, 0, 0, 0, 0, 0, 0, 0
static const unsigned char escaped[256] = {
    E1, E1, E1, E1,                                      /* 0x00-0x1f */
    0, 0, 1, 0, 0, 0, 0, 0, E0, E0, E0,                  /* 0x20-0x3f: '"' */
    E0, E0, E0, 0, 0, 0, 0, 1, 0, 0, 0,                  /* 0x40-0x5f: '\\' */
    E0, E0, E0, 0, 0, 0, 0, 0, 0, 0, 1,                  /* 0x60-0x7f: DEL */
    E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, E1, /* 0x80-0xff */
};

/* The length of the run of s[0..n) that needs no escaping: most fields are all of it. */
static size_t clean_run(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && !escaped[(unsigned char)s[i]]) i++;
    return i;
}

/* As nginx escapes variables in its log: '"', '\\' and bytes outside printable ASCII as \xHH. */
static char *put_esc(char *p, const char *s, size_t n, size_t cap) {
    if (!s || n == 0) return PUT_LIT(p, "-");
    if (n > cap) n = cap;
    for (size_t i = 0; i < n;) {
        size_t run = clean_run(s + i, n - i);
        p = put(p, s + i, run);
        if ((i += run) == n) break;
        unsigned char c = (unsigned char)s[i++];
        *p++ = '\\', *p++ = 'x', *p++ = hexd[c >> 4], *p++ = hexd[c & 15];
    }
    return p;
}

/* A JSON string's content: control characters and bytes past ASCII as \u00XX (the bytes of a
 * request need not be UTF-8, and the line must stay valid JSON). */
static char *put_json(char *p, const char *s, size_t n, size_t cap) {
    if (n > cap) n = cap;
    for (size_t i = 0; i < n;) {
        size_t run = clean_run(s + i, n - i);
        p = put(p, s + i, run);
        if ((i += run) == n) break;
        unsigned char c = (unsigned char)s[i++];
        if (c == '"' || c == '\\') {
            *p++ = '\\', *p++ = (char)c;
        } else {
            p = PUT_LIT(p, "\\u00");
            *p++ = hexd[c >> 4], *p++ = hexd[c & 15];
        }
    }
    return p;
}

static char *put_json_str(char *p, const char *key, size_t klen, const char *s, size_t n, size_t cap) {
    p = put(p, key, klen);
    if (!s) return PUT_LIT(p, "null");
    *p++ = '"';
    p = put_json(p, s, n, cap);
    *p++ = '"';
    return p;
}

#define JSON_STR(p, key, s, n, cap) put_json_str(p, key, sizeof(key) - 1, s, n, cap)

static const gw_header *header(const gw_request *r, const char *name, size_t len) {
    for (size_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == len && memcmp(r->headers[i].name, name, len) == 0) return &r->headers[i];
    return NULL;
}

/* The client's address without its port ("127.0.0.1:5000", "::1:5000"). */
static size_t addr_len(const char *remote) {
    const char *colon = remote ? strrchr(remote, ':') : NULL;
    return colon ? (size_t)(colon - remote) : (remote ? strlen(remote) : 0);
}

/* "[02/Dec/2026:05:54:55 +0000]" for combined, "2026-12-02T05:54:55" for JSON (then .mmmZ):
 * formatted once a second. */
static void stamp(const struct timespec *now) {
    if (now->tv_sec == al.sec && al.stamp_len) return;
    struct tm tm;
    al.sec = now->tv_sec;
    if (al.format == ACCESS_JSON) {
        gmtime_r(&now->tv_sec, &tm);
        al.stamp_len = strftime(al.stamp, sizeof al.stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    } else {
        localtime_r(&now->tv_sec, &tm);
        al.stamp_len = strftime(al.stamp, sizeof al.stamp, "[%d/%b/%Y:%H:%M:%S %z]", &tm);
    }
}

static int status_of(const access_entry *e) {
    return e->end->status ? e->end->status : 499;
}

static char *format_combined(char *p, const access_entry *e) {
    const gw_request *r = e->req;
    const gw_request_end *end = e->end;
    const gw_header *ref = header(r, "referer", 7), *ua = header(r, "user-agent", 10);
    p = put(p, r->remote ? r->remote : "-", r->remote ? addr_len(r->remote) : 1);
    p = PUT_LIT(p, " - - ");
    p = put(p, al.stamp, al.stamp_len);
    p = PUT_LIT(p, " \"");
    if (r->method) { /* from llhttp's table of methods, like the id below checked by the parser: no escaping */
        p = put(p, r->method, strlen(r->method));
        *p++ = ' ';
        p = put_esc(p, r->target, r->target_len, CAP_TARGET);
        p = r->http_minor == 0 ? PUT_LIT(p, " HTTP/1.0\" ") : PUT_LIT(p, " HTTP/1.1\" ");
    } else {
        p = PUT_LIT(p, "-\" "); /* refused before its request line was read whole */
    }
    p = put_u64(p, (uint64_t)status_of(e));
    *p++ = ' ';
    p = put_u64(p, end->body_bytes);
    p = PUT_LIT(p, " \"");
    p = ref ? put_esc(p, ref->value, ref->value_len, CAP_HEADER) : PUT_LIT(p, "-");
    p = PUT_LIT(p, "\" \"");
    p = ua ? put_esc(p, ua->value, ua->value_len, CAP_HEADER) : PUT_LIT(p, "-");
    p = PUT_LIT(p, "\" rt=");
    p = put_seconds(p, end->duration_ns / 1000);
    p = PUT_LIT(p, " id=");
    p = r->id ? put(p, r->id, strlen(r->id)) : PUT_LIT(p, "-");
    p = PUT_LIT(p, " route=\"");
    p = e->route ? put_esc(p, e->route, strlen(e->route), CAP_HEADER) : PUT_LIT(p, "-");
    p = PUT_LIT(p, "\" up=\"");
    if (e->ncalls == 0) *p++ = '-';
    for (int i = 0; i < e->ncalls; i++) {
        const access_call *c = &e->calls[i];
        if (i) *p++ = ',';
        p = put_esc(p, c->upstream, strlen(c->upstream), CAP_NAME);
        *p++ = ':';
        p = c->error ? put_esc(p, c->error, strlen(c->error), 64) : put_u64(p, (uint64_t)c->status);
        *p++ = ':';
        p = put_seconds(p, c->us);
    }
    if (e->more_calls) {
        p = PUT_LIT(p, ",+");
        p = put_u64(p, (uint64_t)e->more_calls);
    }
    p = PUT_LIT(p, "\" trace=");
    p = e->trace_id ? put(p, e->trace_id, 32) : PUT_LIT(p, "-");
    p = PUT_LIT(p, " reason=\"");
    p = e->reason ? put_esc(p, e->reason, strlen(e->reason), CAP_HEADER) : PUT_LIT(p, "-");
    p = PUT_LIT(p, "\"\n");
    return p;
}

static char *format_json(char *p, const access_entry *e, const struct timespec *now) {
    const gw_request *r = e->req;
    const gw_request_end *end = e->end;
    const gw_header *ref = header(r, "referer", 7), *ua = header(r, "user-agent", 10);
    p = PUT_LIT(p, "{\"time\":\"");
    p = put(p, al.stamp, al.stamp_len);
    unsigned ms = (unsigned)(now->tv_nsec / 1000000);
    *p++ = '.', *p++ = (char)('0' + ms / 100), *p++ = (char)('0' + ms / 10 % 10), *p++ = (char)('0' + ms % 10);
    p = PUT_LIT(p, "Z\"");
    p = JSON_STR(p, ",\"remote_addr\":", r->remote, addr_len(r->remote), 64);
    p = JSON_STR(p, ",\"method\":", r->method, r->method ? strlen(r->method) : 0, 32);
    p = JSON_STR(p, ",\"uri\":", r->target, r->target_len, CAP_TARGET);
    p = r->http_minor == 0 ? PUT_LIT(p, ",\"protocol\":\"HTTP/1.0\"") : PUT_LIT(p, ",\"protocol\":\"HTTP/1.1\"");
    p = PUT_LIT(p, ",\"status\":");
    p = put_u64(p, (uint64_t)status_of(e));
    p = PUT_LIT(p, ",\"body_bytes_sent\":");
    p = put_u64(p, end->body_bytes);
    p = PUT_LIT(p, ",\"bytes_sent\":");
    p = put_u64(p, end->head_bytes + end->body_bytes);
    p = PUT_LIT(p, ",\"request_time\":");
    p = put_seconds(p, end->duration_ns / 1000);
    p = JSON_STR(p, ",\"request_id\":", r->id, r->id ? strlen(r->id) : 0, 64);
    p = JSON_STR(p, ",\"route\":", e->route, e->route ? strlen(e->route) : 0, CAP_HEADER);
    p = JSON_STR(p, ",\"referer\":", ref ? ref->value : NULL, ref ? ref->value_len : 0, CAP_HEADER);
    p = JSON_STR(p, ",\"user_agent\":", ua ? ua->value : NULL, ua ? ua->value_len : 0, CAP_HEADER);
    p = JSON_STR(p, ",\"trace_id\":", e->trace_id, 32, 32);
    p = PUT_LIT(p, ",\"upstreams\":[");
    for (int i = 0; i < e->ncalls; i++) {
        const access_call *c = &e->calls[i];
        if (i) *p++ = ',';
        p = JSON_STR(p, "{\"name\":", c->upstream, strlen(c->upstream), CAP_NAME);
        p = PUT_LIT(p, ",\"status\":");
        p = c->error ? PUT_LIT(p, "null") : put_u64(p, (uint64_t)c->status);
        p = JSON_STR(p, ",\"error\":", c->error, c->error ? strlen(c->error) : 0, 64);
        p = PUT_LIT(p, ",\"time\":");
        p = put_seconds(p, c->us);
        *p++ = '}';
    }
    p = PUT_LIT(p, "],\"more_upstreams\":");
    p = put_u64(p, (uint64_t)e->more_calls);
    p = JSON_STR(p, ",\"reason\":", e->reason, e->reason ? strlen(e->reason) : 0, CAP_HEADER);
    p = PUT_LIT(p, ",\"worker\":");
    p = put_u64(p, (uint64_t)e->worker);
    p = PUT_LIT(p, "}\n");
    return p;
}

void access_log_write(const access_entry *e) {
    if (al.fd < 0) return;
    if (BUF_SIZE - al.len < LINE_MAX_BYTES) access_log_flush();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    stamp(&now);
    char *start = al.buf + al.len;
    char *end = al.format == ACCESS_JSON ? format_json(start, e, &now) : format_combined(start, e);
    al.len += (size_t)(end - start);
}
