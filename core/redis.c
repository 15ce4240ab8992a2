/* A Redis client on the libuv loop (see redis.h).
 *
 * Ownership: a client owns its commands until they are answered and their replies (or the end
 * of their connection) have come back from hiredis: a command that timed out or was detached
 * still waits in the list for its reply, which is then dropped. Each connection attempt is a
 * `redis_link`: a hiredis context and the poll handle watching its socket, freed when that
 * handle has closed. The client itself is freed once closing and once its timer and every link
 * have closed, whatever order the server, the timer and the requests finish in.
 *
 * The handles are unreferenced: a client never keeps the loop alive by itself; whoever waits on
 * a command (a request, core.run) does. */
#include "redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

/* How long past its deadline a command may stay unanswered before its connection is taken as
 * dead and opened again. */
#define STALL_MS 1000
/* Pauses between attempts to reach a server that is down: 50 ms, doubling, at most 1 s. */
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 1000
/* A connection that breaks sooner than this after it was ready counts as a failed attempt, so a
 * server that accepts and then drops us is not reconnected to in a tight loop. */
#define SETTLED_MS 1000

enum state {
    IDLE,       /* never connected: the first command connects */
    WAITING,    /* for the timer, to connect again */
    CONNECTING, /* TCP connect, then AUTH and SELECT */
    READY,
};

typedef struct redis_link {
    uv_poll_t poll;
    gw_redis *r;
    redisAsyncContext *ac; /* NULL once hiredis has freed it */
    int events;
    int handshake; /* AUTH and SELECT replies still to come */
    bool auth_next; /* the next handshake reply is AUTH's */
    bool failed;    /* r->error already says why it ends */
} redis_link;

struct gw_redis {
    uv_loop_t *loop;
    uv_timer_t timer;
    uint64_t timer_due; /* loop time the timer fires at; 0 when it is not armed */
    char *name, *host, *user, *password;
    int port, db;
    uint64_t timeout_ms;
    enum state state;
    bool down;    /* the last attempt failed: commands fail at once until one succeeds */
    bool closing;
    int failures; /* attempts failed in a row */
    uint64_t reconnect_at, connect_deadline, ready_since;
    redis_link *link;            /* the connection or the attempt, if any */
    gw_redis_cmd *head, *tail;   /* commands owed a reply, oldest first */
    size_t pending;
    int open_handles; /* the timer and the links' poll handles not closed yet */
    gw_buf scratch;   /* the command being formatted */
    char error[256];  /* why the last attempt or connection ended */
    char message[512]; /* the last error handed out */
};

struct gw_redis_cmd {
    gw_redis_cmd *prev, *next;
    gw_redis *r;
    gw_redis_cb cb; /* NULL once answered or detached */
    void *data;
    uint64_t deadline, timeout_ms;
    char *packed; /* the command, formatted, until the connection is ready to send it */
    size_t packed_len;
    bool sent;
};

static void on_timer(uv_timer_t *t);
static void connect_start(gw_redis *r);

/* An error for a caller: "kind: redis 'name' (host:port): ...", in r->message. */
static const char *say(gw_redis *r, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static const char *say(gw_redis *r, const char *kind, const char *fmt, ...) {
    int n = snprintf(r->message, sizeof r->message, "%s: redis '%s' (%s:%d)", kind, r->name, r->host, r->port);
    if (n < 0 || (size_t)n >= sizeof r->message) return r->message;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message + n, sizeof r->message - (size_t)n, fmt, ap);
    va_end(ap);
    return r->message;
}

/* ---- commands ---- */

static void cmd_append(gw_redis *r, gw_redis_cmd *c) {
    c->prev = r->tail;
    if (r->tail) r->tail->next = c;
    else r->head = c;
    r->tail = c;
    r->pending++;
}

static void cmd_free(gw_redis_cmd *c) {
    gw_redis *r = c->r;
    if (c->prev) c->prev->next = c->next;
    else r->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else r->tail = c->prev;
    r->pending--;
    free(c->packed);
    free(c);
}

static void answer(gw_redis_cmd *c, const redisReply *reply, const char *err) {
    gw_redis_cb cb = c->cb;
    c->cb = NULL;
    if (cb) cb(reply, err, c->data);
}

/* Commands that waited for a connection that will not come: answered now, never sent. */
static void fail_unsent(gw_redis *r, const char *err) {
    gw_redis_cmd *next;
    for (gw_redis_cmd *c = r->head; c; c = next) {
        next = c->next;
        if (c->sent) continue;
        answer(c, NULL, err);
        cmd_free(c);
    }
}

/* hiredis's callback for every command sent: a reply, or NULL when the connection ends first. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    gw_redis_cmd *c = privdata;
    gw_redis *r = c->r;
    if (reply) {
        answer(c, reply, NULL);
    } else if (c->cb) {
        redis_link *l = ac->data;
        const char *why = l->failed ? r->error : ac->err ? ac->errstr : r->closing ? "closed" : "connection closed";
        answer(c, NULL, say(r, "connection reset", ": %s", why));
    }
    cmd_free(c);
}

static int send_packed(gw_redis *r, gw_redis_cmd *c) {
    if (redisAsyncFormattedCommand(r->link->ac, on_reply, c, c->packed, c->packed_len) != REDIS_OK) return -1;
    free(c->packed);
    c->packed = NULL;
    c->sent = true;
    return 0;
}

/* ---- the timer: deadlines, the connect timeout, reconnecting ---- */

/* Make the timer fire at `when` at the latest. */
static void arm(gw_redis *r, uint64_t when) {
    if (r->closing || (r->timer_due && r->timer_due <= when)) return;
    uint64_t now = uv_now(r->loop);
    r->timer_due = when;
    uv_timer_start(&r->timer, on_timer, when > now ? when - now : 0, 0);
}

/* Abort the current link for the reason given (hiredis then fails its commands with it). */
static void link_abort(redis_link *l, const char *why) {
    gw_redis *r = l->r;
    snprintf(r->error, sizeof r->error, "%s", why);
    l->failed = true;
    redisAsyncFree(l->ac);
}

/* Answer the commands past their deadline; reset a connection that has stalled. */
static void expire(gw_redis *r, uint64_t now) {
    gw_redis_cmd *next;
    for (gw_redis_cmd *c = r->head; c; c = next) {
        next = c->next;
        if (c->cb && now >= c->deadline) {
            answer(c, NULL, say(r, "timeout", " did not answer within %.3g s", (double)c->timeout_ms / 1000));
            if (!c->sent) cmd_free(c);
        } else if (!c->cb && c->sent && now >= c->deadline + STALL_MS && r->link) {
            link_abort(r->link, "no reply for a second past a command's timeout: connection taken as dead");
            return; /* every sent command has been answered and freed */
        }
    }
}

/* Arm the timer for the next thing due. */
static void schedule(gw_redis *r) {
    uint64_t next = UINT64_MAX;
    if (r->state == WAITING) next = r->reconnect_at;
    if (r->state == CONNECTING && r->connect_deadline < next) next = r->connect_deadline;
    for (gw_redis_cmd *c = r->head; c; c = c->next) {
        uint64_t due = c->cb ? c->deadline : c->sent ? c->deadline + STALL_MS : UINT64_MAX;
        if (due < next) next = due;
    }
    if (next != UINT64_MAX) arm(r, next);
}

static void on_timer(uv_timer_t *t) {
    gw_redis *r = t->data;
    uint64_t now = uv_now(r->loop);
    r->timer_due = 0;
    expire(r, now); /* first: a command due now is answered "timeout", not with the connect's failure */
    if (r->state == WAITING && now >= r->reconnect_at) connect_start(r);
    if (r->state == CONNECTING && now >= r->connect_deadline) {
        char why[96];
        snprintf(why, sizeof why, "not connected within %.3g s", (double)r->timeout_ms / 1000);
        link_abort(r->link, why);
    }
    schedule(r);
}

/* ---- connecting ---- */

static void attempt_failed(gw_redis *r) {
    r->failures++;
    if (!r->down)
        log_warn("redis '%s' (%s:%d): %s; commands fail at once until it is back", r->name, r->host, r->port,
                 r->error);
    r->down = true;
    fail_unsent(r, say(r, "connection refused", ": %s", r->error));
    uint64_t pause = BACKOFF_FIRST_MS << (r->failures < 6 ? r->failures - 1 : 5);
    if (pause > BACKOFF_MAX_MS) pause = BACKOFF_MAX_MS;
    r->state = WAITING;
    r->reconnect_at = uv_now(r->loop) + pause;
    arm(r, r->reconnect_at);
}

/* The link's context is gone (hiredis is freeing it): why is in r->error. */
static void link_gone(gw_redis *r) {
    bool was_ready = r->state == READY;
    r->link = NULL;
    if (r->closing) return;
    uint64_t now = uv_now(r->loop);
    if (was_ready && now - r->ready_since >= SETTLED_MS) {
        /* A connection that worked broke: try again at once, commands wait for that attempt. */
        log_warn("redis '%s' (%s:%d): connection lost: %s; reconnecting", r->name, r->host, r->port, r->error);
        r->state = WAITING;
        r->reconnect_at = now;
        arm(r, now);
        return;
    }
    attempt_failed(r);
}

static void became_ready(gw_redis *r) {
    r->state = READY;
    r->ready_since = uv_now(r->loop);
    if (r->down) log_info("redis '%s' (%s:%d): connected again", r->name, r->host, r->port);
    r->down = false;
    r->failures = 0;
    gw_redis_cmd *next;
    for (gw_redis_cmd *c = r->head; c; c = next) {
        next = c->next;
        if (c->sent || send_packed(r, c) == 0) continue;
        answer(c, NULL, say(r, "connection reset", ": cannot send"));
        cmd_free(c);
    }
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata) {
    redis_link *l = privdata;
    gw_redis *r = l->r;
    redisReply *rep = reply;
    if (!rep || l->failed) return; /* the context is going away: ev_cleanup follows */
    const char *what = l->auth_next ? "AUTH" : "SELECT";
    l->auth_next = false;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->error, sizeof r->error, "%s refused: %s", what, rep->str);
        l->failed = true;
        redisAsyncFree(ac); /* done by hiredis once this callback returns */
        return;
    }
    if (--l->handshake == 0) became_ready(r);
}

static void on_connect(const redisAsyncContext *cac, int status) {
    redis_link *l = cac->data;
    gw_redis *r = l->r;
    if (status != REDIS_OK) return; /* hiredis frees the context next: ev_cleanup says why */
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redisEnableKeepAlive(&ac->c); /* notice a peer that vanished while the connection is idle */
    if (r->password) {
        if (r->user) redisAsyncCommand(ac, on_handshake, l, "AUTH %s %s", r->user, r->password);
        else redisAsyncCommand(ac, on_handshake, l, "AUTH %s", r->password);
        l->handshake++;
        l->auth_next = true;
    }
    if (r->db) {
        redisAsyncCommand(ac, on_handshake, l, "SELECT %d", r->db);
        l->handshake++;
    }
    if (!l->handshake) became_ready(r);
}

/* ---- the event adapter: hiredis asks for read and write interest on one uv_poll ---- */

static void on_poll(uv_poll_t *h, int status, int events) {
    redis_link *l = h->data;
    if (status < 0) events = UV_READABLE | UV_WRITABLE; /* let hiredis meet the socket's error */
    if (l->ac && (events & UV_READABLE)) redisAsyncHandleRead(l->ac);
    if (l->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(l->ac);
}

static void ev_update(redis_link *l, int add, int del) {
    int ev = (l->events | add) & ~del;
    if (ev == l->events) return; /* hiredis asks for reads after every read */
    l->events = ev;
    if (ev) uv_poll_start(&l->poll, ev, on_poll);
    else uv_poll_stop(&l->poll);
}

static void ev_add_read(void *p) { ev_update(p, UV_READABLE, 0); }
static void ev_del_read(void *p) { ev_update(p, 0, UV_READABLE); }
static void ev_add_write(void *p) { ev_update(p, UV_WRITABLE, 0); }
static void ev_del_write(void *p) { ev_update(p, 0, UV_WRITABLE); }

static void free_client(gw_redis *r) {
    buf_free(&r->scratch);
    free(r->name);
    free(r->host);
    free(r->user);
    free(r->password);
    free(r);
}

static void on_handle_closed(uv_handle_t *h) {
    gw_redis *r;
    if (h->type == UV_POLL) {
        redis_link *l = h->data;
        r = l->r;
        free(l);
    } else {
        r = h->data;
    }
    if (--r->open_handles == 0 && r->closing) free_client(r);
}

/* Called by hiredis as it frees the context (after failing its commands), whatever the cause:
 * a failed connect, an I/O error, the server closing, or our redisAsyncFree. */
static void ev_cleanup(void *p) {
    redis_link *l = p;
    gw_redis *r = l->r;
    if (!l->failed) snprintf(r->error, sizeof r->error, "%s", l->ac->err ? l->ac->errstr : "connection closed");
    l->ac = NULL;
    uv_close((uv_handle_t *)&l->poll, on_handle_closed); /* before hiredis closes the socket */
    link_gone(r);
}

static void connect_start(gw_redis *r) {
    r->reconnect_at = 0;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        snprintf(r->error, sizeof r->error, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac); /* no hooks yet: it only closes the socket */
        attempt_failed(r);
        return;
    }
    redis_link *l = calloc(1, sizeof *l);
    if (!l || uv_poll_init(r->loop, &l->poll, ac->c.fd) < 0) {
        snprintf(r->error, sizeof r->error, "cannot watch the socket");
        free(l);
        redisAsyncFree(ac);
        attempt_failed(r);
        return;
    }
    uv_unref((uv_handle_t *)&l->poll);
    l->poll.data = l;
    l->r = r;
    l->ac = ac;
    r->open_handles++;
    ac->data = l;
    ac->ev.data = l;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->link = l;
    r->state = CONNECTING;
    r->connect_deadline = uv_now(r->loop) + r->timeout_ms;
    redisAsyncSetConnectCallback(ac, on_connect); /* asks for write readiness: the connect's end */
    arm(r, r->connect_deadline);
}

/* ---- the interface ---- */

static char *put_header(char *p, char type, size_t n) {
    char digits[24];
    int k = 0;
    do digits[k++] = (char)('0' + n % 10);
    while (n /= 10);
    *p++ = type;
    while (k) *p++ = digits[--k];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* The command in Redis's protocol, into r->scratch: what hiredis's formatter makes, without its
 * printf (a third of the cost of a command, measured). */
static int format_command(gw_redis *r, int argc, const char **argv, const size_t *argvlen) {
    size_t size = 24;
    for (int i = 0; i < argc; i++) size += argvlen[i] + 24;
    r->scratch.len = 0;
    if (buf_reserve(&r->scratch, size)) return -1;
    char *p = put_header(r->scratch.data, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = put_header(p, '$', argvlen[i]);
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    r->scratch.len = (size_t)(p - r->scratch.data);
    return 0;
}

static int copy_str(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

int redis_new(gw_redis **out, uv_loop_t *loop, const gw_redis_options *o) {
    gw_redis *r = calloc(1, sizeof *r);
    if (!r) return UV_ENOMEM;
    if (copy_str(&r->name, o->name ? o->name : "redis") || copy_str(&r->host, o->host) ||
        copy_str(&r->user, o->user) || copy_str(&r->password, o->password)) {
        free_client(r);
        return UV_ENOMEM;
    }
    r->loop = loop;
    r->port = o->port;
    r->db = o->db;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : 1000;
    uv_timer_init(loop, &r->timer);
    uv_unref((uv_handle_t *)&r->timer);
    r->timer.data = r;
    r->open_handles = 1;
    *out = r;
    return 0;
}

int redis_command(gw_redis *r, int argc, const char **argv, const size_t *argvlen, uint64_t timeout_ms,
                  gw_redis_cb cb, void *data, gw_redis_cmd **out, const char **err) {
    if (r->closing) {
        *err = say(r, "connection refused", ": closed");
        return UV_ECANCELED;
    }
    uv_update_time(r->loop); /* deadlines count from now, not from when this loop turn began */
    if (r->state == IDLE) connect_start(r);
    if (r->down) {
        *err = say(r, "connection refused", " is down: %s", r->error);
        return UV_ECONNREFUSED;
    }
    gw_redis_cmd *c = calloc(1, sizeof *c);
    if (!c) {
        *err = say(r, "redis error", ": out of memory");
        return UV_ENOMEM;
    }
    c->r = r;
    c->cb = cb;
    c->data = data;
    c->timeout_ms = timeout_ms ? timeout_ms : r->timeout_ms;
    c->deadline = uv_now(r->loop) + c->timeout_ms;
    bool ok = format_command(r, argc, argv, argvlen) == 0;
    if (ok && r->state == READY) {
        ok = redisAsyncFormattedCommand(r->link->ac, on_reply, c, r->scratch.data, r->scratch.len) == REDIS_OK;
        c->sent = ok;
    } else if (ok) { /* sent once AUTH and SELECT have been answered: never before, on another database */
        c->packed = malloc(r->scratch.len);
        if ((ok = c->packed != NULL)) memcpy(c->packed, r->scratch.data, r->scratch.len);
        c->packed_len = r->scratch.len;
    }
    if (!ok) {
        free(c);
        *err = say(r, "redis error", ": cannot queue the command (out of memory)");
        return UV_ENOMEM;
    }
    cmd_append(r, c);
    arm(r, c->deadline);
    *out = c;
    return 0;
}

void redis_detach(gw_redis_cmd *c) {
    c->cb = NULL;
    if (!c->sent) cmd_free(c);
}

const char *redis_state(const gw_redis *r) {
    if (r->down) return "down";
    if (r->state == IDLE) return "idle";
    return r->state == READY ? "ready" : "connecting";
}

size_t redis_pending(const gw_redis *r) {
    return r->pending;
}

void redis_close(gw_redis *r) {
    r->closing = true;
    fail_unsent(r, say(r, "connection reset", ": closed"));
    if (r->link) redisAsyncFree(r->link->ac); /* answers the sent commands, closes the poll */
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}
