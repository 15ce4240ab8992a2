/* The fetch facade: upstreams, transfers, deadlines, retries and the events callers see. The
 * backends (http_client.c, fetch_curl.c) only run attempts and report on them. */
#include "fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "budget.h"
#include "fetch_internal.h"
#include "http_headers.h"
#include "log.h"

#define MAX_SPARE_TRANSFERS 256
#define KEEP_BUF 16384

struct gw_fetch {
    uv_loop_t *loop;
    fetch_backend *native;
    fetch_backend *curl;
    fetch_pool *pools;
    long keepalive;
    size_t active;
    long opened;
    gw_transfer *spare; /* finished transfers, their timers still open, for the next calls */
    size_t nspare;
    int handles; /* open libuv handles, the spare transfers' timers and the backends' */
    bool closing;
    char slab[65536];
};

const char *fetch_error_name(int kind) {
    switch (kind) {
    case FETCH_ERR_TIMEOUT: return "timeout";
    case FETCH_ERR_REFUSED: return "connection refused";
    case FETCH_ERR_RESOLVE: return "could not resolve host";
    case FETCH_ERR_RESET: return "connection reset";
    case FETCH_ERR_EMPTY: return "empty reply";
    case FETCH_ERR_TOO_LARGE: return "response too large";
    case FETCH_ERR_BAD_RESPONSE: return "bad response";
    case FETCH_ERR_NO_FDS: return "too many open files";
    case FETCH_ERR_BODY: return "request body failed";
    case FETCH_ERR_BUSY: return "gateway busy";
    default: return "upstream error";
    }
}

/* ---- pools ---- */

fetch_pool *fetch_pool_get(gw_fetch *f, const char *name, long keepalive) {
    for (fetch_pool *p = f->pools; p; p = p->next) {
        if (strcmp(p->name, name) == 0) {
            p->refs++;
            p->keepalive = keepalive;
            return p;
        }
    }
    fetch_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    p->keepalive = keepalive;
    p->refs = 1;
    p->next = f->pools;
    f->pools = p;
    return p;
}

/* A pool outlives its upstreams while it holds connections: a new upstream of the same name (a
 * gw.upstreams{} change, a reload of the route) takes them over. Pools of whole-URL calls go when
 * they are empty, so that calls to many hosts cannot pile them up. */
void fetch_pool_release(gw_fetch *f, fetch_pool *p) {
    if (--p->refs > 0 || p->open > 0 || p->idle > 0) return;
    for (fetch_pool **pp = &f->pools; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p->name);
    free(p);
}

long fetch_keepalive(const gw_fetch *f) {
    return f->keepalive;
}

void fetch_count_connection(gw_fetch *f) {
    f->opened++;
}

uv_loop_t *fetch_loop(const gw_fetch *f) {
    return f->loop;
}

char *fetch_slab(gw_fetch *f, size_t *len) {
    *len = sizeof f->slab;
    return f->slab;
}

/* ---- upstreams ---- */

static void base64(const char *in, size_t n, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* "Authorization: Basic ...\r\n" for user:password, or "Authorization: Bearer ...\r\n", appended
 * to b; nothing when both are NULL. */
static int append_auth(gw_buf *b, const char *userpwd, const char *bearer) {
    if (bearer) {
        if (strpbrk(bearer, "\r\n")) return -1;
        return buf_append_str(b, "Authorization: Bearer ") || buf_append_str(b, bearer) || buf_append(b, "\r\n", 2);
    }
    if (!userpwd) return 0;
    size_t n = strlen(userpwd);
    char *enc = malloc(4 * (n / 3 + 1) + 1);
    if (!enc) return -1;
    base64(userpwd, n, enc);
    int r = buf_append_str(b, "Authorization: Basic ") || buf_append_str(b, enc) || buf_append(b, "\r\n", 2);
    free(enc);
    return r ? -1 : 0;
}

/* Split "scheme://host[:port][/prefix]". Names with userinfo, fragments or spaces are refused:
 * credentials belong in auth, and a URL that parses two ways is a way to reach the wrong host. */
static int parse_url(gw_upstream *u, const char *url, const char **err) {
    const char *sep = strstr(url, "://");
    if (!sep || sep == url) goto bad;
    const char *host = sep + 3;
    size_t hlen = strcspn(host, "/?#");
    const char *rest = host + hlen;
    if (hlen == 0 || memchr(host, '@', hlen) || strpbrk(url, " \t\r\n") || strchr(rest, '#')) goto bad;
    u->scheme = strndup(url, (size_t)(sep - url));
    for (char *c = u->scheme; c && *c; c++) *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
    const char *port = NULL;
    size_t name_len = hlen;
    if (host[0] == '[') { /* "[::1]:8080" */
        const char *close = memchr(host, ']', hlen);
        if (!close) goto bad;
        name_len = (size_t)(close - host) + 1;
        if (name_len < hlen) {
            if (host[name_len] != ':') goto bad;
            port = host + name_len + 1;
        }
    } else {
        const char *colon = memchr(host, ':', hlen);
        if (colon) {
            name_len = (size_t)(colon - host);
            port = colon + 1;
        }
    }
    bool https = u->scheme && strcmp(u->scheme, "https") == 0;
    u->port = https ? 443 : 80;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (end != rest || p <= 0 || p > 65535) goto bad;
        u->port = (int)p;
    }
    /* The address without brackets, as uv_ip6_addr and getaddrinfo take it. */
    u->host = host[0] == '[' ? strndup(host + 1, name_len - 2) : strndup(host, name_len);
    u->hostport = strndup(host, hlen);
    size_t plen = strcspn(rest, "?");
    while (plen > 0 && rest[plen - 1] == '/') plen--;
    u->base_path = strndup(rest, plen);
    u->url = strndup(url, (size_t)(rest - url) + plen);
    if (!u->scheme || !u->host || !u->hostport || !u->base_path || !u->url) {
        *err = "out of memory";
        return UV_ENOMEM;
    }
    return 0;
bad:
    *err = "expected a URL such as http://host:port/prefix";
    return UV_EINVAL;
}

static void upstream_free(gw_upstream *u) {
    if (u->pool) fetch_pool_release(u->f, u->pool);
    for (size_t i = 0; i < u->nlines; i++) free(u->lines[i]);
    free(u->lines);
    buf_free(&u->lines_block);
    buf_free(&u->host_line);
    buf_free(&u->auth_line);
    free(u->scheme);
    free(u->host);
    free(u->base_path);
    free(u->hostport);
    free(u->url);
    free(u);
}

void fetch_upstream_release(gw_upstream *u) {
    if (u && --u->refs == 0) upstream_free(u);
}

/* ---- header lines ---- */

enum { LINE_HOST = 1, LINE_FORWARDED = 2, LINE_TRACEPARENT = 4 };

/* A line of an upstream or a call: -1 when it is never sent (hop-by-hop, or the framing, which is
 * written from the body), else 0 or what it is (LINE_*). */
static int line_kind(const char *line, size_t nlen) {
    if (header_hop_by_hop(line, nlen)) return -1;
    switch (nlen) {
    case 4: return strncasecmp(line, "host", 4) == 0 ? LINE_HOST : 0;
    case 11: return strncasecmp(line, "traceparent", 11) == 0 ? LINE_TRACEPARENT : 0;
    case 14: return strncasecmp(line, "content-length", 14) == 0 ? -1 : 0;
    case 15: return strncasecmp(line, "x-forwarded-for", 15) == 0 ? LINE_FORWARDED : 0;
    case 16: return strncasecmp(line, "x-forwarded-host", 16) == 0 ? LINE_FORWARDED : 0;
    case 17: return strncasecmp(line, "x-forwarded-proto", 17) == 0 ? LINE_FORWARDED : 0;
    default: return 0;
    }
}

/* Whether a Connection line among lines names the header of line. */
static bool connection_names(const char *const *lines, size_t n, const char *line, size_t nlen) {
    for (size_t i = 0; i < n; i++) {
        const char *c = lines[i];
        if (strncasecmp(c, "connection:", 11) == 0 && header_list_has(c + 11, strlen(c + 11), line, nlen)) return true;
    }
    return false;
}

/* Append the lines that are sent, "Name: value\r\n" each: not those never sent, nor those of a
 * kind in `drop`; *given gets the kinds of those sent. 0, UV_EINVAL (a line that is not
 * "Name: value", or holds CR or LF) or UV_ENOMEM. */
static int append_lines(gw_buf *out, const char *const *lines, size_t n, int drop, int *given) {
    bool connection = false;
    for (size_t i = 0; i < n && !connection; i++) connection = strncasecmp(lines[i], "connection:", 11) == 0;
    for (size_t i = 0; i < n; i++) {
        const char *line = lines[i];
        size_t nlen = header_line_name(line);
        if (nlen == 0 || strpbrk(line, "\r\n")) return UV_EINVAL;
        int kind = line_kind(line, nlen);
        if (kind < 0 || (kind & drop) || (connection && connection_names(lines, n, line, nlen))) continue;
        *given |= kind;
        if (buf_append_str(out, line) || buf_append(out, "\r\n", 2)) return UV_ENOMEM;
    }
    return 0;
}

/* X-Forwarded-For, -Proto and -Host, as nginx's $proxy_add_x_forwarded_for and Kong's: the
 * client's address appended to what a trusted proxy said. They replace any a line gave: a route
 * that passes a client's headers on must not pass its claims on unchecked. */
static int append_forwarded(gw_buf *out, const gw_forwarded *fw) {
    int bad = buf_append_str(out, "X-Forwarded-For: ");
    if (fw->prior) bad |= buf_append(out, fw->prior, fw->prior_len) || buf_append(out, ", ", 2);
    bad |= buf_append(out, fw->client, fw->client_len) || buf_append(out, "\r\nX-Forwarded-Proto: ", 21) ||
           buf_append(out, fw->proto, fw->proto_len) || buf_append(out, "\r\n", 2);
    if (fw->host)
        bad |= buf_append_str(out, "X-Forwarded-Host: ") || buf_append(out, fw->host, fw->host_len) ||
               buf_append(out, "\r\n", 2);
    return bad ? UV_ENOMEM : 0;
}

/* The lines sent with every call, as one block (native) and as strings (libcurl). */
static int upstream_lines(gw_upstream *u, const gw_upstream_config *c) {
    int given = 0, drop = LINE_HOST | (c->forwarded ? LINE_FORWARDED : 0);
    if (append_lines(&u->lines_block, c->header_lines, c->nheader_lines, drop, &given)) return -1;
    /* Its Host goes with each call that gives none of its own: never two. */
    for (size_t i = 0; i < c->nheader_lines; i++) {
        const char *line = c->header_lines[i];
        if (header_line_name(line) == 4 && strncasecmp(line, "host", 4) == 0) {
            u->host_line.len = 0;
            if (buf_append_str(&u->host_line, line) || buf_append(&u->host_line, "\r\n", 2)) return -1;
        }
    }
    if (append_auth(&u->auth_line, c->userpwd, c->bearer)) return -1;
    const char *p = u->lines_block.data, *end = p + u->lines_block.len;
    size_t n = 0;
    for (const char *q = p; q < end; q++) n += *q == '\n';
    u->lines = calloc(n + 1, sizeof *u->lines);
    if (!u->lines) return -1;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (!(u->lines[u->nlines] = strndup(p, (size_t)(eol - p)))) return -1;
        u->nlines++;
        p = eol + 2;
    }
    return 0;
}

int fetch_upstream_new(gw_fetch *f, const gw_upstream_config *c, gw_upstream **out, const char **err) {
    gw_upstream *u = calloc(1, sizeof *u);
    if (!u) {
        *err = "out of memory";
        return UV_ENOMEM;
    }
    u->f = f;
    u->refs = 1;
    u->deadlines = c->deadlines;
    u->retries = c->retries;
    u->max_body = c->max_body;
    u->forwarded = c->forwarded;
    int r = parse_url(u, c->url, err);
    if (r == 0 && upstream_lines(u, c)) {
        *err = "invalid headers or auth: lines are \"Name: value\", without CR or LF";
        r = UV_EINVAL;
    }
    if (r == 0) {
        bool native = strcmp(u->scheme, "http") == 0 && c->backend != FETCH_CURL;
        u->backend = native ? f->native : f->curl;
        if (!native && strcmp(u->scheme, "http") && strcmp(u->scheme, "https")) {
            *err = "only http:// and https:// URLs are allowed";
            r = UV_EINVAL;
        }
    }
    if (r == 0 && !(u->pool = fetch_pool_get(f, c->name, c->keepalive))) {
        *err = "out of memory";
        r = UV_ENOMEM;
    }
    if (r < 0) {
        upstream_free(u);
        return r;
    }
    *out = u;
    return 0;
}

/* ---- transfers ---- */

static void on_transfer_timer(uv_timer_t *timer);

static gw_transfer *transfer_get(gw_fetch *f) {
    gw_transfer *t = f->spare;
    if (t) {
        f->spare = t->spare_next;
        f->nspare--;
        return t;
    }
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->f = f;
    uv_timer_init(f->loop, &t->timer);
    t->timer.data = t;
    fetch_handle_opened(f);
    return t;
}

static void on_spare_timer_closed(uv_handle_t *h) {
    gw_transfer *t = h->data;
    gw_fetch *f = t->f;
    buf_free(&t->target);
    buf_free(&t->lines);
    buf_free(&t->req_body);
    buf_free(&t->answer.data);
    budget_release(&t->answer.charged);
    free(t);
    fetch_handle_closed(f);
}

/* Back to the spares: the timer and the buffers' memory stay for the next call. */
static void transfer_put(gw_transfer *t) {
    gw_fetch *f = t->f;
    uv_timer_stop(&t->timer);
    t->up->pool->active--;
    f->active--;
    fetch_upstream_release(t->up);
    if (t->method != t->method_buf) free(t->method);
    gw_transfer keep = {.f = f, .timer = t->timer, .target = t->target, .lines = t->lines,
                        .req_body = t->req_body, .answer = t->answer};
    buf_reset(&keep.target, KEEP_BUF);
    buf_reset(&keep.lines, KEEP_BUF);
    buf_reset(&keep.req_body, KEEP_BUF);
    buf_reset(&keep.answer.data, KEEP_BUF);
    budget_release(&keep.answer.charged); /* kept memory is the worker's own, up to KEEP_BUF */
    *t = keep;
    t->timer.data = t;
    if (f->closing || f->nspare >= MAX_SPARE_TRANSFERS) {
        uv_close((uv_handle_t *)&t->timer, on_spare_timer_closed);
        return;
    }
    t->spare_next = f->spare;
    f->spare = t;
    f->nspare++;
}

static uint64_t now_ms(gw_transfer *t) {
    return uv_now(t->f->loop);
}

static uint64_t add_ms(uint64_t base, uint32_t ms) {
    return ms ? base + ms : UINT64_MAX;
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
    return a < b ? a : b;
}

/* Whether the whole-call deadline holds now. A stream's body, and a streamed upload, take as long
 * as they take while they keep moving: only the idle deadline bounds them, as nginx's
 * proxy_read_timeout and proxy_send_timeout do. */
static bool total_applies(const gw_transfer *t) {
    return !t->source && !(t->stream && t->got_head);
}

/* When the transfer times out as things stand: the whole-call deadline, or its phase's. */
static uint64_t transfer_deadline(const gw_transfer *t, uint64_t *phase_deadline) {
    uint64_t d = total_applies(t) ? add_ms(t->started, t->dl.total) : UINT64_MAX;
    uint64_t p = UINT64_MAX;
    switch (t->phase) {
    case PHASE_CONNECT: p = add_ms(t->phase_started, t->dl.connect); break;
    case PHASE_WAIT: p = add_ms(t->phase_started, t->dl.first_byte); break;
    case PHASE_SEND:
    case PHASE_RECEIVE: p = t->paused ? UINT64_MAX : add_ms(t->last_progress, t->dl.idle); break;
    case PHASE_BACKOFF:
    case PHASE_FAILED: p = t->phase_started; break;
    }
    *phase_deadline = p;
    return min_u64(d, p);
}

/* The uv timer is moved only when the deadline comes sooner than it fires; a later deadline is
 * found when it fires. Progress (a read) so costs no timer operation. */
static void transfer_arm(gw_transfer *t) {
    uint64_t phase;
    uint64_t d = transfer_deadline(t, &phase);
    if (d == UINT64_MAX) {
        uv_timer_stop(&t->timer);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&t->timer) || d < t->timer_due) {
        uint64_t now = now_ms(t);
        t->timer_due = d;
        uv_timer_start(&t->timer, on_transfer_timer, d > now ? d - now : 0, 0);
    }
}

static void set_phase(gw_transfer *t, enum transfer_phase phase) {
    t->phase = phase;
    t->phase_started = now_ms(t);
    transfer_arm(t);
}

/* Tell the caller, unless it cancelled meanwhile. Returns false when the transfer is gone. */
static bool emit_begin(gw_transfer *t) {
    t->in_event++;
    return true;
}

static bool emit_end(gw_transfer *t) {
    if (--t->in_event > 0) return !t->cancelled;
    if (t->cancelled) {
        transfer_put(t);
        return false;
    }
    return true;
}

static void transfer_fail(gw_transfer *t, int kind, const char *detail) {
    gw_fetch_error e = {.kind = kind};
    snprintf(e.detail, sizeof e.detail, "%s", detail);
    t->finished = true;
    emit_begin(t);
    t->ev->on_error(t->data, &e);
    t->cancelled = true; /* done with it, whatever the caller did */
    emit_end(t);
}

/* End an attempt in progress from above (a deadline, a limit): the backend lets go first. */
static void transfer_abort(gw_transfer *t, int kind, const char *detail) {
    if (t->attempt) t->backend->ops->cancel(t);
    t->attempt = NULL;
    transfer_fail(t, kind, detail);
}

static const char *upstream_label(const gw_transfer *t) {
    return t->up->ad_hoc ? t->up->hostport : t->up->pool->name;
}

static void attempt_start(gw_transfer *t, bool fresh);

static void on_transfer_timer(uv_timer_t *timer) {
    gw_transfer *t = timer->data;
    uint64_t now = now_ms(t), phase;
    uint64_t d = transfer_deadline(t, &phase);
    if (now < d) {
        t->timer_due = d;
        uv_timer_start(&t->timer, on_transfer_timer, d - now, 0);
        return;
    }
    if (t->phase == PHASE_FAILED) {
        fetch_failed(t, t->pending.kind, t->pending.detail, t->pending_reused, t->pending_before_response);
        return;
    }
    if (t->phase == PHASE_BACKOFF && phase <= now) {
        attempt_start(t, false);
        return;
    }
    char detail[160];
    const char *what = "%s took over %g s";
    double ms = t->dl.total;
    if (phase <= now) {
        switch (t->phase) {
        case PHASE_CONNECT: what = "connecting to %s took over %g s", ms = t->dl.connect; break;
        case PHASE_WAIT: what = "%s sent no answer within %g s", ms = t->dl.first_byte; break;
        case PHASE_SEND: what = "%s took nothing of the body for %g s", ms = t->dl.idle; break;
        default: what = "%s sent nothing for %g s", ms = t->dl.idle; break;
        }
    }
    snprintf(detail, sizeof detail, what, upstream_label(t), ms / 1000);
    transfer_abort(t, FETCH_ERR_TIMEOUT, detail);
}

static void attempt_start(gw_transfer *t, bool fresh) {
    set_phase(t, PHASE_CONNECT);
    int r = t->backend->ops->start(t, fresh);
    if (r < 0) {
        t->attempt = NULL;
        bool fds = r == UV_EMFILE || r == UV_ENFILE;
        fetch_failed_later(t, fds ? FETCH_ERR_NO_FDS : FETCH_ERR_INTERNAL, uv_strerror(r), false, true);
    }
}

void fetch_failed_later(gw_transfer *t, int kind, const char *detail, bool reused, bool before_response) {
    t->attempt = NULL;
    t->pending.kind = kind;
    snprintf(t->pending.detail, sizeof t->pending.detail, "%s", detail);
    t->pending_reused = reused;
    t->pending_before_response = before_response;
    t->phase = PHASE_FAILED;
    t->phase_started = now_ms(t);
    transfer_arm(t);
}

static bool idempotent(const char *m) {
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") || !strcmp(m, "PUT") ||
           !strcmp(m, "DELETE") || !strcmp(m, "TRACE");
}

/* Build the request every attempt sends. */
static int transfer_prepare(gw_transfer *t, const gw_fetch_request *r) {
    gw_upstream *u = t->up;
    const char *m = r->method ? r->method : "GET";
    size_t mlen = strlen(m);
    t->method = mlen < sizeof t->method_buf ? memcpy(t->method_buf, m, mlen + 1) : strdup(m);
    if (!t->method) return UV_ENOMEM;
    t->target.len = t->lines.len = t->answer.data.len = t->req_body.len = 0;
    const char *target = r->target;
    bool native = u->backend == t->f->native;
    int bad = 0;
    if (u->ad_hoc) { /* the whole URL: keep what follows host:port */
        const char *sep = strstr(target, "://");
        target = sep ? sep + 3 + strcspn(sep + 3, "/?") : target;
    } else if (target[0] != '/') {
        return UV_EINVAL;
    }
    bad = native ? buf_append_str(&t->target, u->base_path) : buf_append_str(&t->target, u->url);
    if (!bad && target[0] != '/') bad = buf_append(&t->target, "/", 1);
    if (!bad) bad = buf_append_str(&t->target, target) || buf_append(&t->target, "", 1);
    if (bad) return UV_ENOMEM;
    t->target.len--; /* the NUL is there, not counted */
    bool forwarded = r->forwarded && u->forwarded;
    int given = 0, rc = append_lines(&t->lines, r->header_lines, r->nheader_lines, forwarded ? LINE_FORWARDED : 0, &given);
    if (rc) return rc;
    t->host_given = (given & LINE_HOST) || u->host_line.len;
    if (!(given & LINE_HOST) && u->host_line.len && buf_append(&t->lines, u->host_line.data, u->host_line.len))
        return UV_ENOMEM;
    if (forwarded && append_forwarded(&t->lines, r->forwarded)) return UV_ENOMEM;
    if (r->traceparent && !(given & LINE_TRACEPARENT) && /* unless the handler gave its own */
        (buf_append(&t->lines, "traceparent: ", 13) || buf_append_str(&t->lines, r->traceparent) ||
         buf_append(&t->lines, "\r\n", 2)))
        return UV_ENOMEM;
    if (r->request_id && *r->request_id &&
        (buf_append_str(&t->lines, "X-Request-Id: ") || buf_append_str(&t->lines, r->request_id) ||
         buf_append(&t->lines, "\r\n", 2)))
        return UV_ENOMEM;
    if (r->auth_set ? append_auth(&t->lines, r->userpwd, r->bearer)
                    : buf_append(&t->lines, u->auth_line.data, u->auth_line.len))
        return UV_EINVAL;
    if (r->body) {
        t->has_body = true;
        if (buf_append(&t->req_body, r->body, r->body_len) || buf_reserve(&t->req_body, 1)) return UV_ENOMEM;
    }
    t->source = r->source;
    t->replayable = !r->source && (idempotent(t->method) || r->body);
    return 0;
}

/* A whole-URL call's upstream: 30 s for the whole call unless it says otherwise, 64 MiB at most. */
static int ad_hoc_upstream(gw_fetch *f, const char *url, gw_upstream **out, const char **err) {
    gw_upstream_config c = {.url = url, .keepalive = -1, .deadlines = {.total = 30000, .connect = 30000},
                            .max_body = 64u << 20};
    /* The pool of a whole URL is its origin: scheme://host:port */
    const char *sep = strstr(url, "://");
    size_t origin = sep ? (size_t)(sep + 3 - url) + strcspn(sep + 3, "/?#") : strlen(url);
    char *name = strndup(url, origin);
    if (!name) return UV_ENOMEM;
    c.name = c.url = name; /* the call's path is the whole of what follows the origin */
    int r = fetch_upstream_new(f, &c, out, err);
    free(name);
    if (r == 0) (*out)->ad_hoc = true;
    return r;
}

int fetch_start(gw_fetch *f, const gw_fetch_request *r, const gw_fetch_events *ev, void *data, gw_transfer **out,
                const char **err) {
    if (f->closing) {
        *err = "shutting down";
        return UV_ECANCELED;
    }
    gw_upstream *u = r->upstream;
    if (u) u->refs++;
    else if (ad_hoc_upstream(f, r->target, &u, err) < 0) return UV_EINVAL;
    gw_transfer *t = transfer_get(f);
    if (!t) {
        fetch_upstream_release(u);
        *err = "out of memory";
        return UV_ENOMEM;
    }
    t->up = u;
    u->pool->active++;
    f->active++;
    t->backend = u->backend;
    t->ev = ev;
    t->data = data;
    t->stream = r->stream;
    t->dl = u->deadlines;
    if (r->timeout_ms) t->dl.total = r->timeout_ms;
    if (r->connect_timeout_ms) t->dl.connect = r->connect_timeout_ms;
    t->retries_left = r->retries >= 0 ? r->retries : u->retries;
    int rc = transfer_prepare(t, r);
    if (rc < 0) {
        *err = rc == UV_EINVAL ? "invalid request: a path starts with /, header lines are \"Name: value\" without CR or LF"
                               : "out of memory";
        transfer_put(t);
        return rc;
    }
    t->started = now_ms(t);
    *out = t;
    attempt_start(t, false); /* a failure to start is reported from the loop (fetch_failed_later) */
    return 0;
}

void fetch_pause(gw_transfer *t) {
    if (t->paused || t->finished) return;
    t->paused = true;
    if (t->attempt) t->backend->ops->pause(t);
}

void fetch_resume(gw_transfer *t) {
    if (!t->paused || t->finished) return;
    t->paused = false;
    t->last_progress = now_ms(t); /* the idle deadline counts from now: the wait was ours */
    transfer_arm(t);
    if (t->attempt) t->backend->ops->resume(t);
}

void fetch_cancel(gw_transfer *t) {
    if (t->cancelled) return;
    if (t->attempt) t->backend->ops->cancel(t);
    t->attempt = NULL;
    t->cancelled = true;
    t->finished = true;
    if (t->in_event == 0) transfer_put(t);
}

/* ---- what backends report ---- */

void fetch_connected(gw_transfer *t) {
    t->last_progress = now_ms(t);
    set_phase(t, t->source ? PHASE_SEND : PHASE_WAIT);
}

void fetch_sent(gw_transfer *t) {
    if (t->phase == PHASE_CONNECT || t->phase == PHASE_SEND) set_phase(t, PHASE_WAIT);
}

void fetch_progress(gw_transfer *t) {
    t->last_progress = now_ms(t);
    if (t->phase == PHASE_WAIT || t->phase == PHASE_CONNECT) set_phase(t, PHASE_RECEIVE);
}

bool fetch_head(gw_transfer *t, const gw_fetch_head *head) {
    if (head->status < 100 || head->status > 599 || head->status == 101) {
        char detail[64];
        snprintf(detail, sizeof detail, "status %d from %s", head->status, upstream_label(t));
        transfer_abort(t, FETCH_ERR_BAD_RESPONSE, detail);
        return false;
    }
    t->got_head = true;
    transfer_arm(t);
    emit_begin(t);
    t->ev->on_head(t->data, head);
    return emit_end(t);
}

int fetch_answer_room(gw_transfer *t, size_t len) {
    gw_fetch_body *a = &t->answer;
    if (a->data.len + len > t->up->max_body) return FETCH_ERR_TOO_LARGE;
    if (!budget_cover(&a->charged, a->data.len + len)) return FETCH_ERR_BUSY;
    return buf_reserve(&a->data, len) ? FETCH_ERR_INTERNAL : 0;
}

bool fetch_body(gw_transfer *t, const char *data, size_t len, bool *pause) {
    *pause = false;
    if (!t->stream) {
        int kind = fetch_answer_room(t, len);
        if (kind) {
            char detail[96];
            if (kind == FETCH_ERR_TOO_LARGE)
                snprintf(detail, sizeof detail, "over max_response_body (%zu bytes) from %s", t->up->max_body,
                         upstream_label(t));
            else
                snprintf(detail, sizeof detail, "%s", kind == FETCH_ERR_BUSY ? "over max_buffered_size" : "out of memory");
            transfer_abort(t, kind, detail);
            return false;
        }
        buf_append(&t->answer.data, data, len); /* room is made */
        return true;
    }
    emit_begin(t);
    *pause = t->ev->on_body(t->data, data, len);
    if (!emit_end(t)) return false;
    if (*pause) t->paused = true;
    *pause = t->paused;
    return true;
}

void fetch_done(gw_transfer *t) {
    t->attempt = NULL;
    t->finished = true;
    emit_begin(t);
    t->ev->on_end(t->data, t->stream ? NULL : &t->answer);
    t->cancelled = true;
    emit_end(t);
}

void fetch_failed(gw_transfer *t, int kind, const char *detail, bool reused, bool before_response) {
    t->attempt = NULL;
    /* A kept connection the upstream had closed: the request may never have reached it. Once, on a
     * fresh connection, when the request can be sent again (Go's Transport, nginx's
     * proxy_next_upstream for a reused connection). */
    if (reused && before_response && t->replayable && !t->retried_stale &&
        (kind == FETCH_ERR_RESET || kind == FETCH_ERR_EMPTY)) {
        t->retried_stale = true;
        attempt_start(t, true);
        return;
    }
    /* Refused: nothing was sent, any method may try again, after a pause, within the deadline. */
    if (kind == FETCH_ERR_REFUSED && t->retries_left > 0 && !t->source) {
        int n = t->refused_tries++;
        t->retries_left--;
        uint32_t pause = 20u << (2 * (n < 4 ? n : 4)); /* 20, 80, 320 ms, then 1 s */
        if (pause > 1000) pause = 1000;
        uint64_t at = now_ms(t) + pause;
        if (at < add_ms(t->started, t->dl.total)) { /* else the deadline would cut the retry */
            t->phase = PHASE_BACKOFF;
            t->phase_started = at;
            transfer_arm(t);
            return;
        }
    }
    char msg[200];
    snprintf(msg, sizeof msg, "%s (%s)", detail, upstream_label(t));
    transfer_fail(t, kind, msg);
}

/* ---- the facade ---- */

int fetch_init(gw_fetch **out, uv_loop_t *loop, long upstream_keepalive) {
    gw_fetch *f = calloc(1, sizeof *f);
    if (!f) return UV_ENOMEM;
    f->loop = loop;
    fetch_set_keepalive(f, upstream_keepalive);
    int r = http_client_new(f, &f->native);
    if (r == 0) r = fetch_curl_new(f, &f->curl);
    if (r < 0) {
        if (f->native) f->native->ops->close(f->native);
        free(f);
        return r;
    }
    *out = f;
    return 0;
}

void fetch_set_keepalive(gw_fetch *f, long upstream_keepalive) {
    f->keepalive = upstream_keepalive > 0 ? upstream_keepalive : 256;
}

void fetch_stats(const gw_fetch *f, gw_fetch_stats *out) {
    *out = (gw_fetch_stats){.active = f->active, .connections_opened = f->opened};
    for (const fetch_pool *p = f->pools; p; p = p->next) out->idle += p->idle;
}

void fetch_handle_opened(gw_fetch *f) {
    f->handles++;
}

static void fetch_free(gw_fetch *f) {
    /* Pools still here belonged to upstreams of the Lua state, closed by now. */
    while (f->pools) {
        fetch_pool *p = f->pools;
        f->pools = p->next;
        free(p->name);
        free(p);
    }
    free(f);
}

void fetch_handle_closed(gw_fetch *f) {
    if (--f->handles == 0 && f->closing) fetch_free(f);
}

void fetch_close(gw_fetch *f) {
    f->closing = true;
    f->handles++; /* not freed while the backends close */
    while (f->spare) {
        gw_transfer *t = f->spare;
        f->spare = t->spare_next;
        uv_close((uv_handle_t *)&t->timer, on_spare_timer_closed);
    }
    f->native->ops->close(f->native);
    f->curl->ops->close(f->curl);
    fetch_handle_closed(f);
}
