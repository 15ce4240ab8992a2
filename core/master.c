/* The master: listening sockets, generations of workers, reload, stop, log reopening and the
 * binary upgrade.
 *
 * A generation is the set of workers started from one check of the config. It is STARTING until
 * every worker has reported ready (or failed: then it is killed and the serving one stays),
 * SERVING while it is the one accepting (a worker that dies is replaced), and DONE once asked to
 * stop; it is freed when its last worker has exited and its handles have closed. Listening sockets
 * are counted by the generations that use them: an address that stays across a reload keeps its
 * socket, one that goes away is closed when the last generation using it is freed.
 *
 * Workers are started with exec rather than fork, so each builds its loop, libcurl and Lua state
 * from scratch: nothing of the master's loop leaks into them, and the master never runs a route
 * script. A worker is its own session (UV_PROCESS_DETACHED): a Ctrl-C in the terminal reaches the
 * master only, which then asks each worker once, so a worker never mistakes it for the second,
 * "stop now" signal. */
#include "master.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "fds.h"
#include "log.h"
#include "notify.h"
#include "pidfile.h"
#include "server.h"
#include "shm.h"
#include "status_http.h"

/* A worker that dies sooner than this after its start is restarted only after the same delay:
 * a worker that cannot start must not turn the master into a fork loop. */
#define QUICK_DEATH_MS 1000
#define CHECK_OUTPUT_MAX 16384
#define FIRST_FD 3 /* inherited descriptors follow stdin, stdout, stderr */

typedef struct master master;
typedef struct generation generation;

typedef struct listener {
    gw_address addr; /* as configured (port 0: any) */
    int port;        /* as bound */
    int fd;
    int refs; /* generations using it */
    struct listener *next;
} listener;

typedef struct worker {
    generation *gen;
    int id; /* 1..n: stable across restarts, shown in its log lines */
    uv_process_t proc;
    uv_pipe_t ready_pipe; /* the worker writes "ready <routes>\n" on it */
    uv_timer_t restart_timer;
    char line[32];
    size_t line_len;
    bool running;   /* proc is a live child */
    bool piped;     /* ready_pipe is open */
    bool stop_sent; /* asked to stop: a second request is a "stop now" */
    uint64_t started;
} worker;

enum gen_state { GEN_STARTING, GEN_SERVING, GEN_DONE };

struct generation {
    master *m;
    int number;
    enum gen_state state;
    gw_config cfg;
    listener *listeners[GW_MAX_LISTEN];
    worker *workers;
    int nready;
    int routes;
    bool served;  /* it was SERVING once: its end is a drain */
    int running;  /* workers alive */
    int handles;  /* handles not closed yet: freed at 0 once DONE */
    uv_timer_t ready_timer;
    generation *next;
};

/* A child process whose stderr the master reads: the config check, or the new master of an upgrade
 * (whose "ready" comes on a descriptor of its own). */
typedef struct child {
    uv_process_t proc;
    uv_pipe_t out;
    char buf[CHECK_OUTPUT_MAX];
    size_t len;
    int handles; /* 0 when idle */
    bool eof;
    bool exited;
    bool timed_out;
    int64_t status;
    int signum;
} child;

struct master {
    uv_loop_t loop;
    char exe[4096];
    const char *conf_path;
    const char *lua_dir;
    gw_config cfg; /* of the serving generation, or the one starting first */
    generation *gens;
    generation *serving;
    listener *listeners;
    int next_number;
    uv_signal_t signals[7];
    int stop_signal; /* 0 while serving; SIGTERM or SIGQUIT once stopping */
    bool started;    /* a first generation has served */
    bool reloading;
    bool reload_again; /* a SIGHUP arrived during a reload */
    uint64_t reload_t0;
    gw_config next; /* the config being checked */
    child check;
    uv_timer_t check_timer;
    child heir; /* binary upgrade: the new master */
    uv_timer_t heir_timer;
    bool upgrading;
    int upgrade_fd; /* this master is an heir: report "ready" here once serving, then -1 */
    int shm_fd;     /* the memory its workers share (shm.h), or -1 */
    int pid;
    char oldbin[4200];
    int status;
    gw_status *metrics; /* the metrics region, /metrics, health and the status page */
    uint64_t restarts, reloads, reloads_failed;
    uint64_t started_unix;
};

static void reload_done(master *m);
static void maybe_finish(master *m);

static void on_closed_nothing(uv_handle_t *h) {
    (void)h;
}

/* ---- listening sockets ---- */

static bool same_address(const gw_address *a, const gw_address *b) {
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* Close the master's copy: once the workers have closed theirs, new clients are refused. */
static void listener_close(listener *l) {
    if (l->fd < 0) return;
    char url[96];
    config_address_url(&l->addr, l->port, url, sizeof url);
    log_info("closed the listening socket on %s", url);
    close(l->fd);
    l->fd = -1;
}

static void listener_unref(master *m, listener *l) {
    if (--l->refs > 0) return;
    for (listener **p = &m->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    listener_close(l);
    free(l);
}

/* Sockets adopted from an old master that the config no longer names. */
static void drop_unused_listeners(master *m) {
    listener *l = m->listeners;
    while (l) {
        listener *next = l->next;
        if (l->refs == 0) {
            l->refs = 1;
            listener_unref(m, l);
        }
        l = next;
    }
}

/* A socket for each address of cfg: the one already open for it, else a new one. On failure the
 * sockets taken are given back and err says which address failed. */
static int take_listeners(master *m, const gw_config *cfg, listener **out, char *err, size_t errlen) {
    for (int i = 0; i < cfg->nlisten; i++) {
        listener *l = m->listeners;
        while (l && !same_address(&l->addr, &cfg->listen[i])) l = l->next;
        if (!l) {
            int port = cfg->listen[i].port, fd, r;
            if ((r = server_listen_socket(cfg->listen[i].host, &port, cfg->limits.backlog, &fd)) < 0 ||
                !(l = calloc(1, sizeof *l))) {
                if (r == 0) close(fd);
                snprintf(err, errlen, "%s: listen on %s:%d: %s", m->conf_path, cfg->listen[i].host,
                         cfg->listen[i].port, uv_strerror(r < 0 ? r : UV_ENOMEM));
                while (i-- > 0) listener_unref(m, out[i]);
                return -1;
            }
            *l = (listener){.addr = cfg->listen[i], .port = port, .fd = fd, .next = m->listeners};
            m->listeners = l;
        }
        l->refs++;
        out[i] = l;
    }
    return 0;
}

/* After a binary upgrade: the old master's sockets, known by the address they are bound to. */
static void adopt_listeners(master *m) {
    int fds[GW_MAX_LISTEN];
    int n = fds_get("listen", fds, GW_MAX_LISTEN);
    for (int i = 0; i < n && i < GW_MAX_LISTEN; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        listener *l = calloc(1, sizeof *l);
        if (!l || getsockname(fds[i], (struct sockaddr *)&sa, &len)) {
            free(l);
            close(fds[i]);
            continue;
        }
        l->fd = fds[i];
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, l->addr.host, sizeof l->addr.host);
            l->port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, l->addr.host, sizeof l->addr.host);
            l->port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
        l->addr.port = l->port;
        l->next = m->listeners;
        m->listeners = l;
    }
}

/* ---- workers ---- */

static void start_worker(worker *w);

static void gen_handle_closed(uv_handle_t *h) {
    generation *g = h->data;
    if (--g->handles > 0) return;
    master *m = g->m;
    for (generation **p = &m->gens; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
    for (int i = 0; i < g->cfg.nlisten; i++) listener_unref(m, g->listeners[i]);
    free(g->workers);
    free(g);
    maybe_finish(m);
}

static void worker_handle_closed(uv_handle_t *h) {
    worker *w = h->data;
    h->data = w->gen;
    gen_handle_closed(h);
}

/* A DONE generation whose last worker has gone: close its timers (the rest is closed already). */
static void gen_maybe_free(generation *g) {
    if (g->state != GEN_DONE || g->running > 0 || uv_is_closing((uv_handle_t *)&g->ready_timer)) return;
    if (g->served) log_info("generation %d drained: its last worker has exited", g->number);
    uv_close((uv_handle_t *)&g->ready_timer, gen_handle_closed);
    for (int i = 0; i < g->cfg.workers; i++)
        uv_close((uv_handle_t *)&g->workers[i].restart_timer, worker_handle_closed);
}

static void signal_worker(worker *w, int signum) {
    if (w->running) uv_process_kill(&w->proc, signum);
}

/* The generation stops: each worker is asked once (again: a second request means "now"). */
static void gen_stop(generation *g, int signum, bool again) {
    g->state = GEN_DONE;
    uv_timer_stop(&g->ready_timer);
    for (int i = 0; i < g->cfg.workers; i++) {
        worker *w = &g->workers[i];
        uv_timer_stop(&w->restart_timer);
        if (w->running && (!w->stop_sent || again)) signal_worker(w, signum);
        w->stop_sent = true;
    }
    gen_maybe_free(g);
}

static void on_restart_timer(uv_timer_t *t) {
    start_worker(t->data);
}

static void on_proc_closed(uv_handle_t *h) {
    worker *w = h->data;
    generation *g = w->gen;
    if (g->state == GEN_SERVING) {
        uint64_t lived = uv_now(&g->m->loop) - w->started;
        uv_timer_start(&w->restart_timer, on_restart_timer, lived < QUICK_DEATH_MS ? QUICK_DEATH_MS : 0, 0);
    }
    h->data = g;
    gen_handle_closed(h);
}

static void gen_fail(generation *g, const char *why);

static void on_worker_exit(uv_process_t *p, int64_t status, int signum) {
    worker *w = p->data;
    generation *g = w->gen;
    master *m = g->m;
    w->running = false;
    g->running--;
    status_worker_exited(m->metrics, p->pid); /* its counts are kept */
    if (w->piped) { /* before a restart re-initialises it */
        uv_close((uv_handle_t *)&w->ready_pipe, worker_handle_closed);
        w->piped = false;
    }
    bool clean = status == 0 && signum == 0;
    if (g->state == GEN_SERVING) {
        m->restarts++;
        if (signum) log_error("worker %d (pid %d) was killed by signal %d; starting another", w->id, p->pid, signum);
        else log_error("worker %d (pid %d) exited with status %d; starting another", w->id, p->pid, (int)status);
    } else if (g->state == GEN_STARTING) {
        char why[128];
        snprintf(why, sizeof why, "worker %d (pid %d) %s %d before it was ready", w->id, p->pid,
                 signum ? "was killed by signal" : "exited with status", signum ? signum : (int)status);
        gen_fail(g, why);
    } else {
        /* Killed by our signal while still starting, before its handler was in place: it had no
         * client to let down. */
        clean = clean || (w->stop_sent && (signum == SIGTERM || signum == SIGQUIT || signum == SIGKILL));
        if (m->stop_signal && !clean) m->status = 1;
        log_info("worker %d (pid %d) of generation %d stopped%s", w->id, p->pid, g->number,
                 clean ? "" : " with an error");
    }
    uv_close((uv_handle_t *)p, on_proc_closed);
    gen_maybe_free(g);
}

static void gen_serving(generation *g);

static void on_ready_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    worker *w = s->data;
    (void)b;
    if (n > 0) w->line_len += (size_t)n;
    char *nl = memchr(w->line, '\n', w->line_len);
    if (n >= 0 && !nl && w->line_len < sizeof w->line) return;
    /* A line, EOF, an error or garbage: nothing more is expected on this pipe. */
    uv_close((uv_handle_t *)s, worker_handle_closed);
    w->piped = false;
    int routes;
    if (!nl || sscanf(w->line, "ready %d", &routes) != 1) return; /* its exit is handled on its own */
    generation *g = w->gen;
    log_info("worker %d (pid %d) of generation %d ready", w->id, w->proc.pid, g->number);
    if (g->state != GEN_STARTING) return;
    g->routes = routes;
    if (++g->nready == g->cfg.workers) gen_serving(g);
}

static void on_ready_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    worker *w = h->data;
    (void)suggested;
    *b = uv_buf_init(w->line + w->line_len, (unsigned)(sizeof w->line - w->line_len));
}

static void start_worker(worker *w) {
    generation *g = w->gen;
    master *m = g->m;
    char id[16], gen[16], pid[16], fds[256] = "";
    snprintf(id, sizeof id, "%d", w->id);
    snprintf(gen, sizeof gen, "%d", g->number);
    snprintf(pid, sizeof pid, "%d", m->pid);
    char *args[] = {m->exe, "-c", (char *)m->conf_path, "--worker", id, "--generation", gen, "--master", pid, NULL};
    uv_stdio_container_t stdio[FIRST_FD + GW_MAX_LISTEN + 3] = { /* the listeners, shm, metrics, ready */
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    int n = FIRST_FD;
    for (int i = 0; i < g->cfg.nlisten; i++, n++) {
        stdio[n] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = g->listeners[i]->fd};
        fds_add(fds, sizeof fds, "listen", n);
    }
    if (m->shm_fd >= 0) {
        stdio[n] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = m->shm_fd};
        fds_add(fds, sizeof fds, "shm", n++);
    }
    if (g->cfg.metrics_listen.port >= 0 && status_region_fd(m->metrics) >= 0) {
        stdio[n] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = status_region_fd(m->metrics)};
        fds_add(fds, sizeof fds, "metrics", n++);
    }
    uv_pipe_init(&m->loop, &w->ready_pipe, 0);
    w->ready_pipe.data = w;
    g->handles++;
    w->piped = true;
    stdio[n] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE,
                                      .data.stream = (uv_stream_t *)&w->ready_pipe};
    fds_add(fds, sizeof fds, "ready", n++);
    char **env = fds_env(fds);
    uv_process_options_t opts = {
        .exit_cb = on_worker_exit,
        .file = m->exe,
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = n,
        .stdio = stdio,
    };
    w->proc.data = w;
    w->started = uv_now(&m->loop);
    w->stop_sent = false;
    w->line_len = 0;
    g->handles++;
    int r = env ? uv_spawn(&m->loop, &w->proc, &opts) : UV_ENOMEM;
    fds_env_free(env);
    if (r < 0) {
        /* The handles were initialised all the same and must be closed; a retry comes later. */
        log_error("worker %d: cannot start %s: %s", w->id, m->exe, uv_strerror(r));
        uv_close((uv_handle_t *)&w->ready_pipe, worker_handle_closed);
        w->piped = false;
        if (g->state == GEN_STARTING) {
            uv_close((uv_handle_t *)&w->proc, worker_handle_closed);
            gen_fail(g, "a worker could not be started");
        } else {
            uv_close((uv_handle_t *)&w->proc, on_proc_closed);
        }
        return;
    }
    w->running = true;
    g->running++;
    uv_read_start((uv_stream_t *)&w->ready_pipe, on_ready_alloc, on_ready_read);
}

/* ---- generations ---- */

static void on_ready_timeout(uv_timer_t *t) {
    generation *g = t->data;
    char why[96];
    snprintf(why, sizeof why, "not every worker was ready within reload_timeout (%.1f s)",
             (double)g->cfg.reload_timeout_ms / 1000);
    gen_fail(g, why);
}

static generation *gen_start(master *m, const gw_config *cfg, listener **listeners) {
    generation *g = calloc(1, sizeof *g);
    worker *ws = calloc((size_t)cfg->workers, sizeof *ws);
    if (!g || !ws) {
        free(g);
        free(ws);
        return NULL;
    }
    *g = (generation){.m = m, .number = ++m->next_number, .cfg = *cfg, .workers = ws, .next = m->gens};
    memcpy(g->listeners, listeners, sizeof g->listeners[0] * (size_t)cfg->nlisten);
    m->gens = g;
    uv_timer_init(&m->loop, &g->ready_timer);
    g->ready_timer.data = g;
    g->handles = 1;
    uv_timer_start(&g->ready_timer, on_ready_timeout, cfg->reload_timeout_ms, 0);
    for (int i = 0; i < cfg->workers; i++) {
        worker *w = &ws[i];
        w->gen = g;
        w->id = i + 1;
        uv_timer_init(&m->loop, &w->restart_timer);
        w->restart_timer.data = w;
        g->handles++;
    }
    for (int i = 0; i < cfg->workers && g->state == GEN_STARTING; i++) start_worker(&ws[i]);
    return g;
}

/* A new generation that cannot serve: stop it; the serving one (if any) goes on. */
static void gen_fail(generation *g, const char *why) {
    master *m = g->m;
    if (g->state != GEN_STARTING) return;
    if (m->serving) log_error("reload failed: generation %d: %s; generation %d keeps serving", g->number, why,
                              m->serving->number);
    if (m->serving) m->reloads_failed++;
    else log_error("generation %d: %s", g->number, why);
    /* Not ready yet means not accepting yet (a worker reports ready once it accepts), so there is
     * nothing to drain; a worker stuck in a script's top-level code would not see a SIGTERM. */
    gen_stop(g, SIGKILL, false);
    if (!m->started) m->status = 1; /* no generation to fall back on: the master exits */
    reload_done(m);
}

static void log_summary(master *m, generation *g, const char *what) {
    char where[GW_MAX_LISTEN * 100] = "";
    for (int i = 0; i < g->cfg.nlisten; i++) {
        char url[96];
        config_address_url(&g->listeners[i]->addr, g->listeners[i]->port, url, sizeof url);
        snprintf(where + strlen(where), sizeof where - strlen(where), "%s%s", i ? ", " : "", url);
    }
    log_info("%s in %d ms: generation %d listening on %s (config %s), %d worker%s, %d route%s, %d upstream%s; "
             "luagate %s, master pid %d",
             what, (int)(uv_now(&m->loop) - m->reload_t0), g->number, where, m->conf_path, g->cfg.workers,
             g->cfg.workers == 1 ? "" : "s", g->routes, g->routes == 1 ? "" : "s", g->cfg.nupstreams,
             g->cfg.nupstreams == 1 ? "" : "s", LUAGATE_VERSION, m->pid);
}

/* Apply the settings the master itself uses: the log and the pid file. */
static void adopt_settings(master *m, const gw_config *cfg) {
    log_set_level_name(cfg->log_level);
    if (strcmp(cfg->error_log, m->cfg.error_log) != 0) {
        int r = log_open(cfg->error_log);
        if (r < 0) log_error("error_log %s: %s; the log stays where it was", cfg->error_log, uv_strerror(r));
    }
    if (strcmp(cfg->pid, m->cfg.pid) != 0) {
        int r = pidfile_write(cfg->pid, m->pid);
        if (r < 0) log_warn("cannot write the pid file %s: %s; luagate -s will not find this gateway", cfg->pid,
                            strerror(-r));
        else pidfile_remove(m->cfg.pid, m->pid);
    }
    status_listen(m->metrics, &cfg->metrics_listen);
    m->cfg = *cfg;
}

static void report_to_old_master(master *m) {
    if (m->upgrade_fd < 0) return;
    if (write(m->upgrade_fd, "ready\n", 6) != 6) log_error("cannot tell the old master: %s", strerror(errno));
    close(m->upgrade_fd);
    m->upgrade_fd = -1;
}

/* Every worker of g is ready: g takes over; the generation serving until now drains. */
static void gen_serving(generation *g) {
    master *m = g->m;
    uv_timer_stop(&g->ready_timer);
    g->state = GEN_SERVING;
    g->served = true;
    generation *old = m->serving;
    m->serving = g;
    adopt_settings(m, &g->cfg);
    if (old) {
        m->reloads++;
        log_summary(m, g, "reloaded");
        log_info("generation %d drains: its workers finish their requests in flight", old->number);
        gen_stop(old, SIGTERM, false);
    } else {
        log_summary(m, g, m->upgrade_fd >= 0 ? "upgraded binary serving" : "started");
    }
    if (!m->started) {
        char state[64];
        snprintf(state, sizeof state, "MAINPID=%d\nREADY=1", m->pid);
        notify_systemd(state);
        drop_unused_listeners(m);
        report_to_old_master(m);
    }
    m->started = true;
    reload_done(m);
}

/* ---- reload: check in a child, then a new generation ---- */

static void child_handle_closed(uv_handle_t *h) {
    child *c = h->data;
    if (--c->handles == 0) maybe_finish(h->loop->data);
}

static void on_child_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    child *c = h->data;
    (void)suggested;
    size_t room = sizeof c->buf - 1 - c->len;
    *b = uv_buf_init(c->buf + c->len, (unsigned)room);
}

/* Relay each line a child wrote on stderr: to the log (without the child's own time stamp), or as
 * is to stderr before the first generation served (the error of a gateway that cannot start). */
static void relay_lines(master *m, child *c, int level) {
    c->buf[c->len] = '\0';
    char *save;
    for (char *line = strtok_r(c->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!m->started) {
            fprintf(stderr, "%s\n", line);
            continue;
        }
        const char *msg = line, *lvl = strstr(line, "] ");
        if (line[0] >= '0' && line[0] <= '9' && lvl) msg = lvl + 2;
        log_msg(level, "check: %s", msg);
    }
}

static void check_done(master *m);

static void on_child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    child *c = s->data;
    (void)b;
    if (n > 0) c->len += (size_t)n;
    if (n < 0 || c->len >= sizeof c->buf - 1) {
        uv_close((uv_handle_t *)s, child_handle_closed);
        c->eof = true;
        check_done(s->loop->data);
    }
}

static void on_check_exit(uv_process_t *p, int64_t status, int signum) {
    master *m = p->loop->data;
    m->check.exited = true;
    m->check.status = status;
    m->check.signum = signum;
    uv_close((uv_handle_t *)p, child_handle_closed);
    check_done(m);
}

/* Start a child with stderr on c->out. The handles are counted in c->handles. */
static int child_spawn(master *m, child *c, char **args, char **env, uv_stdio_container_t *stdio, int nstdio,
                       uv_exit_cb on_exit) {
    *c = (child){0};
    uv_pipe_init(&m->loop, &c->out, 0);
    c->out.data = c;
    c->proc.data = c;
    c->handles = 2;
    stdio[2] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out};
    uv_process_options_t opts = {.exit_cb = on_exit, .file = m->exe, .args = args, .env = env,
                                 .flags = UV_PROCESS_DETACHED, .stdio_count = nstdio, .stdio = stdio};
    int r = uv_spawn(&m->loop, &c->proc, &opts);
    if (r < 0) {
        uv_close((uv_handle_t *)&c->out, child_handle_closed);
        uv_close((uv_handle_t *)&c->proc, child_handle_closed);
        return r;
    }
    uv_read_start((uv_stream_t *)&c->out, on_child_alloc, on_child_read);
    return 0;
}

/* The new config cannot be used: say why; what serves goes on (or, at the start, the master exits). */
static void refuse(master *m, const char *why) {
    if (m->started) {
        log_error("reload refused: %s; generation %d keeps serving", why, m->serving->number);
        m->reloads_failed++;
    } else {
        fprintf(stderr, "luagate: %s\n", why);
        m->status = 1;
    }
    reload_done(m);
}

/* A route script whose top-level code never returns must not hold the reload forever. */
static void on_check_timeout(uv_timer_t *t) {
    master *m = t->data;
    if (m->check.exited) return;
    m->check.timed_out = true;
    uv_process_kill(&m->check.proc, SIGKILL);
}

static void start_reload(master *m) {
    if (m->reloading) {
        m->reload_again = true;
        log_info("SIGHUP: a reload is under way; another follows it");
        return;
    }
    m->reloading = true;
    m->reload_t0 = uv_now(&m->loop);
    log_info("%s: checking %s and its route scripts", m->started ? "SIGHUP: reload" : "start", m->conf_path);
    char err[8192];
    if (config_read(m->conf_path, m->lua_dir, &m->next, err, sizeof err)) {
        refuse(m, err);
        return;
    }
    char *args[] = {m->exe, "-t", "-c", (char *)m->conf_path, NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0}, {.flags = UV_IGNORE}};
    int r = child_spawn(m, &m->check, args, NULL, stdio, 3, on_check_exit);
    if (r < 0) {
        snprintf(err, sizeof err, "cannot start %s -t: %s", m->exe, uv_strerror(r));
        refuse(m, err);
        return;
    }
    uv_timer_start(&m->check_timer, on_check_timeout, m->next.reload_timeout_ms, 0);
}

/* The check's output is read and it has exited: go on, or keep what serves. */
static void check_done(master *m) {
    child *c = &m->check;
    if (!c->exited || !c->eof) return;
    uv_timer_stop(&m->check_timer);
    if (m->stop_signal) {
        reload_done(m);
        return;
    }
    bool ok = c->status == 0 && c->signum == 0;
    char err[8192];
    listener *ls[GW_MAX_LISTEN];
    if (!ok) {
        /* Its first line is the error (file:line: ...); the rest, a traceback, is logged after. */
        c->buf[c->len] = '\0';
        const char *first = strncmp(c->buf, "luagate: ", 9) == 0 ? c->buf + 9 : c->buf;
        if (c->timed_out) snprintf(err, sizeof err, "the check (-t) did not finish within reload_timeout");
        else snprintf(err, sizeof err, "%.*s", (int)strcspn(first, "\n"), first);
        relay_lines(m, c, GW_LOG_ERROR);
        if (m->started || c->timed_out) {
            refuse(m, err);
        } else { /* its output, relayed as is, says why luagate cannot start */
            m->status = 1;
            reload_done(m);
        }
        return;
    }
    relay_lines(m, c, GW_LOG_WARN);
    if (take_listeners(m, &m->next, ls, err, sizeof err)) {
        refuse(m, err);
        return;
    }
    if (!m->started) adopt_settings(m, &m->next); /* the log, and the pid file `luagate -s` reads */
    if (!gen_start(m, &m->next, ls)) {
        for (int i = 0; i < m->next.nlisten; i++) listener_unref(m, ls[i]);
        refuse(m, "out of memory starting a generation");
    }
}

/* A reload (or the start) has ended, one way or the other. */
static void reload_done(master *m) {
    if (!m->reloading) return;
    m->reloading = false;
    if (!m->started && m->status) m->stop_signal = SIGTERM;
    if (m->reload_again && !m->stop_signal) {
        m->reload_again = false;
        start_reload(m);
    }
    maybe_finish(m);
}

/* ---- binary upgrade ---- */

static void upgrade_failed(master *m, const char *why) {
    log_error("upgrade failed: %s; this master keeps serving", why);
    if (rename(m->oldbin, m->cfg.pid)) log_error("cannot rename %s back: %s", m->oldbin, strerror(errno));
    m->upgrading = false;
    uv_timer_stop(&m->heir_timer);
}

static void on_heir_exit(uv_process_t *p, int64_t status, int signum) {
    master *m = p->loop->data;
    char why[96];
    snprintf(why, sizeof why, "the new master (pid %d) %s %d", p->pid, signum ? "was killed by signal" : "exited with status",
             signum ? signum : (int)status);
    if (m->upgrading) upgrade_failed(m, why);
    else log_info("%s", why);
    uv_close((uv_handle_t *)p, child_handle_closed);
}

static void on_heir_timeout(uv_timer_t *t) {
    master *m = t->data;
    uv_process_kill(&m->heir.proc, SIGKILL);
    upgrade_failed(m, "the new master was not serving in time");
}

/* The new master's "ready": it serves on the same sockets; this master's workers drain. */
static void on_heir_ready_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    master *m = s->loop->data;
    if (n == 0) return;
    bool ready = n >= 5 && memcmp(b->base, "ready", 5) == 0;
    uv_close((uv_handle_t *)s, child_handle_closed);
    if (!m->upgrading || !ready) return; /* its exit says why */
    m->upgrading = false;
    uv_timer_stop(&m->heir_timer);
    uv_close((uv_handle_t *)&m->heir.proc, child_handle_closed); /* it lives on, unwatched */
    log_info("upgrade: the new master (pid %d) serves; generation %d drains and this master exits",
             m->heir.proc.pid, m->serving ? m->serving->number : 0);
    m->stop_signal = SIGTERM;
    for (generation *g = m->gens; g; g = g->next) gen_stop(g, SIGTERM, false);
    maybe_finish(m);
}

static void on_heir_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    child *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->buf, 16);
}

static void start_upgrade(master *m) {
    if (m->upgrading || m->reloading || !m->serving || m->heir.handles) {
        log_warn("SIGUSR2: a reload or an upgrade is under way; ignored");
        return;
    }
    snprintf(m->oldbin, sizeof m->oldbin, "%s.oldbin", m->cfg.pid);
    if (rename(m->cfg.pid, m->oldbin)) {
        log_error("SIGUSR2: cannot rename the pid file %s: %s; no upgrade", m->cfg.pid, strerror(errno));
        return;
    }
    log_info("SIGUSR2: starting a new master from %s on the same sockets", m->exe);
    generation *g = m->serving;
    char fds[256] = "";
    uv_stdio_container_t stdio[FIRST_FD + GW_MAX_LISTEN + 1] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                                                 {.flags = UV_INHERIT_FD, .data.fd = 1}};
    int n = FIRST_FD;
    for (listener *l = m->listeners; l && n < FIRST_FD + GW_MAX_LISTEN; l = l->next, n++) {
        stdio[n] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = l->fd};
        fds_add(fds, sizeof fds, "listen", n);
    }
    /* The new master's "ready" comes on a socket of its own; its stderr is inherited, not read. */
    child *c = &m->heir;
    *c = (child){0};
    uv_pipe_init(&m->loop, &c->out, 0);
    c->out.data = c;
    c->proc.data = c;
    c->handles = 2;
    stdio[n] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE,
                                      .data.stream = (uv_stream_t *)&c->out};
    fds_add(fds, sizeof fds, "upgrade", n++);
    stdio[2] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = 2};
    char **env = fds_env(fds);
    char *args[] = {m->exe, "-c", (char *)m->conf_path, NULL};
    uv_process_options_t opts = {.exit_cb = on_heir_exit, .file = m->exe, .args = args, .env = env,
                                 .flags = UV_PROCESS_DETACHED, .stdio_count = n, .stdio = stdio};
    int r = env ? uv_spawn(&m->loop, &c->proc, &opts) : UV_ENOMEM;
    fds_env_free(env);
    m->upgrading = true;
    if (r < 0) {
        uv_close((uv_handle_t *)&c->out, child_handle_closed);
        uv_close((uv_handle_t *)&c->proc, child_handle_closed);
        upgrade_failed(m, uv_strerror(r));
        return;
    }
    uv_read_start((uv_stream_t *)&c->out, on_heir_alloc, on_heir_ready_read);
    /* Its check, then its workers: each may take reload_timeout. */
    uv_timer_start(&m->heir_timer, on_heir_timeout, 2 * g->cfg.reload_timeout_ms + 1000, 0);
}

/* ---- signals and the end ---- */

static void stop(master *m, int signum) {
    bool again = m->stop_signal != 0;
    const char *name = signum == SIGINT ? "SIGINT" : signum == SIGQUIT ? "SIGQUIT" : "SIGTERM";
    if (again) log_warn("%s: second signal: workers close every connection now", name);
    else log_info("%s: stopping the workers gracefully%s", name, signum == SIGQUIT ? ", without a time limit" : "");
    /* Workers get SIGTERM for SIGINT: they are in their own session and did not see the Ctrl-C.
     * "Now" goes as a signal other than the first: two of the same sent before a busy worker runs
     * merge into one (standard signals do not queue), and the second would be lost. */
    int fwd = !again ? (signum == SIGQUIT ? SIGQUIT : SIGTERM) : m->stop_signal == SIGTERM ? SIGINT : SIGTERM;
    m->stop_signal = fwd;
    for (generation *g = m->gens; g; g = g->next) gen_stop(g, g->state == GEN_STARTING ? SIGKILL : fwd, again);
    for (listener *l = m->listeners; l; l = l->next) listener_close(l);
    /* A reload under way ends here: its check's end (if it runs) finds the master stopping. */
    if (!m->check.handles) reload_done(m);
    else if (!m->check.exited) uv_process_kill(&m->check.proc, SIGKILL);
    if (m->upgrading) {
        uv_process_kill(&m->heir.proc, SIGTERM);
        upgrade_failed(m, "stopped meanwhile");
    }
    maybe_finish(m);
}

static void on_signal(uv_signal_t *s, int signum) {
    master *m = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
    case SIGQUIT: stop(m, signum); break;
    case SIGHUP:
        if (m->stop_signal) log_warn("SIGHUP: stopping; no reload");
        else start_reload(m);
        break;
    case SIGUSR1: {
        int r = log_reopen();
        if (r < 0) log_error("SIGUSR1: cannot reopen the log: %s", uv_strerror(r));
        else log_info("SIGUSR1: log reopened; the workers reopen theirs");
        for (generation *g = m->gens; g; g = g->next)
            for (int i = 0; i < g->cfg.workers; i++) signal_worker(&g->workers[i], SIGUSR1);
        break;
    }
    case SIGUSR2:
        if (m->stop_signal) log_warn("SIGUSR2: stopping; no upgrade");
        else start_upgrade(m);
        break;
    default: log_info("%s: ignored (luagate has no use for it)", strsignal(signum));
    }
}

/* Once stopping, the loop ends when the last generation and child are gone. */
static void maybe_finish(master *m) {
    if (!m->stop_signal || m->gens || m->reloading || m->check.handles || m->upgrading) return;
    for (size_t i = 0; i < sizeof m->signals / sizeof m->signals[0]; i++)
        if (!uv_is_closing((uv_handle_t *)&m->signals[i])) uv_close((uv_handle_t *)&m->signals[i], on_closed_nothing);
    if (!uv_is_closing((uv_handle_t *)&m->heir_timer)) uv_close((uv_handle_t *)&m->heir_timer, on_closed_nothing);
    if (!uv_is_closing((uv_handle_t *)&m->check_timer)) uv_close((uv_handle_t *)&m->check_timer, on_closed_nothing);
    status_close(m->metrics);
}

/* For /metrics, the health endpoints and the status page: what only the master knows. */
static void master_figures_of(void *arg, master_figures *out) {
    master *m = arg;
    *out = (master_figures){.generation = m->serving ? m->serving->number : 0, .workers = m->cfg.workers,
                            .ready = m->serving && !m->stop_signal && !m->upgrading, .restarts = m->restarts,
                            .reloads = m->reloads, .reloads_failed = m->reloads_failed,
                            .started_unix = m->started_unix};
}

int master_run(const char *conf_path, const char *lua_dir) {
    static master m; /* one per process, and large */
    m = (master){.conf_path = conf_path, .lua_dir = lua_dir, .pid = (int)uv_os_getpid(), .upgrade_fd = -1,
                 .shm_fd = -1};
    size_t len = sizeof m.exe;
    if (uv_exepath(m.exe, &len) < 0) {
        fprintf(stderr, "luagate: cannot find its own executable to start workers\n");
        return 1;
    }
    log_set_process("master");
    adopt_listeners(&m);
    int up;
    if (fds_get("upgrade", &up, 1) == 1) m.upgrade_fd = up;
    fds_forget();
    snprintf(m.cfg.error_log, sizeof m.cfg.error_log, "stderr");
    uv_loop_init(&m.loop);
    m.loop.data = &m;
    static const int nums[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        uv_signal_init(&m.loop, &m.signals[i]);
        m.signals[i].data = &m;
        uv_signal_start(&m.signals[i], on_signal, nums[i]);
    }
    uv_timer_init(&m.loop, &m.heir_timer);
    uv_timer_init(&m.loop, &m.check_timer);
    m.heir_timer.data = m.check_timer.data = &m;
    int r = shm_create(&m.shm_fd); /* before any worker: every generation shares it */
    if (r < 0) log_error("no memory shared by the workers (%s): \"shared\" limits count per worker", strerror(-r));
    char page[4200];
    snprintf(page, sizeof page, "%s/luagate/status.html", lua_dir);
    m.started_unix = (uint64_t)time(NULL);
    m.metrics = status_open(&m.loop, master_figures_of, &m, page);
    start_reload(&m);
    uv_run(&m.loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&m.loop);
    while (m.listeners) {
        m.listeners->refs = 1;
        listener_unref(&m, m.listeners);
    }
    if (m.upgrade_fd >= 0) close(m.upgrade_fd);
    if (m.shm_fd >= 0) close(m.shm_fd);
    if (m.cfg.pid[0]) pidfile_remove(m.cfg.pid, m.pid);
    if (m.oldbin[0]) pidfile_remove(m.oldbin, m.pid);
    if (m.started) log_info("all workers stopped; exiting");
    if (r) log_error("handles left open at exit (a bug)");
    return r || m.status ? 1 : 0;
}
