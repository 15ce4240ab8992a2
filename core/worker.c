#include "worker.h"

#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "budget.h"
#include "config.h"
#include "fds.h"
#include "log.h"
#include "observe.h"
#include "runtime.h"
#include "server.h"
#include "shm.h"

typedef struct worker worker;

#define FD_RESERVE 64 /* descriptors kept for logs, DNS, redis and the clients refused with 503 */

/* max_open_files (the soft limit, up to the hard one), and max_connections within it, as Kong's
 * default worker_connections is the descriptor limit. Not half of it, though a proxied client holds
 * an upstream descriptor too: a burst of clients comes and goes, and one that finds no descriptor
 * for its upstream call gets a 503 "too many open files" like the one past max_connections. */
static void apply_bounds(gw_config *cfg) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (cfg->max_open_files > 0) {
        rlim_t want = (rlim_t)cfg->max_open_files;
        if (want > rl.rlim_max) {
            struct rlimit more = {want, want};
            if (setrlimit(RLIMIT_NOFILE, &more) == 0) rl = more; /* allowed when privileged */
            else log_info("max_open_files %ld: the hard limit is %llu", cfg->max_open_files, (unsigned long long)rl.rlim_max);
        }
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t room = rl.rlim_cur > 2 * FD_RESERVE ? (size_t)(rl.rlim_cur - FD_RESERVE) : FD_RESERVE;
    if (cfg->limits.max_connections > room) {
        log_info("max_connections %zu is more than %llu open files allow: %zu", cfg->limits.max_connections,
                 (unsigned long long)rl.rlim_cur, room);
        cfg->limits.max_connections = room;
    }
    budget_set_limit(cfg->max_buffered_size);
}

/* One listening socket's server; srv is NULL once it has closed. */
typedef struct served {
    worker *w;
    gw_server *srv;
} served;

struct worker {
    uv_loop_t loop;
    gw_runtime *rt;
    gw_lua_app *app;
    gw_observe *obs;
    gw_config cfg;
    served srv[GW_MAX_LISTEN];
    int nsrv;  /* servers started */
    int nopen; /* servers not closed yet */
    uv_signal_t signals[7];
    uv_timer_t shutdown_timer;
    bool stopping;
    int master_pid;
};

static void on_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void close_all_connections(worker *w) {
    for (int i = 0; i < w->nsrv; i++)
        if (w->srv[i].srv) server_close_all(w->srv[i].srv);
}

static void on_server_closed(void *arg) {
    served *s = arg;
    worker *w = s->w;
    s->srv = NULL;
    if (--w->nopen > 0) return;
    log_info("all connections closed; exiting");
    for (size_t i = 0; i < sizeof w->signals / sizeof w->signals[0]; i++)
        uv_close((uv_handle_t *)&w->signals[i], on_handle_closed);
    uv_close((uv_handle_t *)&w->shutdown_timer, on_handle_closed);
    observe_close(w->obs); /* flushes the access log */
    runtime_app_free(w->app);
    w->app = NULL;
    runtime_close(w->rt);
    w->rt = NULL;
}

static void on_shutdown_timeout(uv_timer_t *t) {
    log_warn("shutdown_timeout reached: closing the connections still open");
    close_all_connections(t->data);
}

static void drain(worker *w, int signum) {
    if (w->stopping) {
        log_warn("%s: second signal: closing every connection now", strsignal(signum));
        close_all_connections(w);
        return;
    }
    w->stopping = true;
    const char *name = signum == SIGINT ? "SIGINT" : signum == SIGQUIT ? "SIGQUIT" : "SIGTERM";
    if (signum == SIGQUIT) {
        log_info("%s: graceful stop, finishing requests in flight however long they take", name);
    } else {
        log_info("%s: graceful stop, finishing requests in flight", name);
        uv_timer_start(&w->shutdown_timer, on_shutdown_timeout, w->cfg.shutdown_timeout_ms, 0);
    }
    for (int i = 0; i < w->nsrv; i++)
        server_drain(w->srv[i].srv, w->cfg.keepalive_min_timeout_ms, on_server_closed, &w->srv[i]);
}

static void on_signal(uv_signal_t *s, int signum) {
    worker *w = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
    case SIGQUIT: drain(w, signum); break;
    case SIGUSR1: {
        int r = log_reopen();
        if (r < 0) log_error("SIGUSR1: cannot reopen the log: %s", uv_strerror(r));
        else log_info("SIGUSR1: log reopened");
        break;
    }
    default:
        log_warn("%s: ignored by a worker; send it to the master (pid %d)", strsignal(signum), w->master_pid);
    }
}

static void start_signals(worker *w) {
    static const int nums[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        uv_signal_init(&w->loop, &w->signals[i]);
        w->signals[i].data = w;
        uv_signal_start(&w->signals[i], on_signal, nums[i]);
    }
    uv_timer_init(&w->loop, &w->shutdown_timer);
    w->shutdown_timer.data = w;
}

/* Call require("luagate")._boot(conf): leaves the dispatch function and the route count. */
static int boot(lua_State *L, int *routes) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "luagate");
    if (lua_pcall(L, 1, 1, 0)) return -1;
    lua_getfield(L, -1, "_boot");
    lua_remove(L, -2);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 2, 0)) return -1;
    *routes = 0;
    for (int i = 1; i <= (int)lua_objlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "routes");
        *routes += (int)lua_tointeger(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return 0;
}

static int finish_loop(uv_loop_t *loop) {
    uv_run(loop, UV_RUN_DEFAULT);
    int r = uv_loop_close(loop);
    curl_global_cleanup();
    if (r) {
        log_error("handles left open at exit (a bug)");
        uv_print_all_handles(loop, stderr);
        return 1;
    }
    return 0;
}

static int fail(worker *w, const char *why) {
    log_error("%s", why);
    for (int i = 0; i < w->nsrv; i++) server_shutdown(w->srv[i].srv, NULL, NULL);
    observe_close(w->obs);
    if (w->app) runtime_app_free(w->app);
    if (w->rt) runtime_close(w->rt);
    finish_loop(&w->loop);
    return 1;
}

/* The master waits for this line; write(2) of a few bytes to a socket does not block. */
static void report_ready(int fd, int routes) {
    char line[32];
    int n = snprintf(line, sizeof line, "ready %d\n", routes);
    if (write(fd, line, (size_t)n) != n) log_error("cannot report ready to the master: %s", strerror(errno));
    close(fd);
}

static size_t open_connections(void *arg) {
    worker *w = arg;
    size_t n = 0;
    for (int i = 0; i < w->nsrv; i++)
        if (w->srv[i].srv) n += server_connections(w->srv[i].srv);
    return n;
}

/* The access log and the metrics slot (the master's region, "metrics" when it hands one). */
static void start_observing(worker *w, const worker_options *o, int metrics_fd) {
    observe_options opts = {.access_log = w->cfg.access_log, .format = w->cfg.access_log_json ? ACCESS_JSON : ACCESS_COMBINED,
                            .metrics_fd = metrics_fd, .worker_id = o->id, .generation = o->generation,
                            .connections = open_connections, .arg = w};
    int r = observe_open(&w->obs, &w->loop, &opts);
    if (r < 0) log_error("access_log %s: %s; requests are not logged", w->cfg.access_log, strerror(-r));
    runtime_set_observe(w->rt, w->obs);
}

int worker_run(const worker_options *o) {
    /* Stop with the master, whatever killed it; it may have died before this line. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != o->master_pid) return 1;
    int listen_fds[GW_MAX_LISTEN], ready_fd = -1;
    int nlisten = fds_get("listen", listen_fds, GW_MAX_LISTEN);
    if (nlisten < 1 || nlisten > GW_MAX_LISTEN || fds_get("ready", &ready_fd, 1) != 1) {
        fprintf(stderr, "luagate: a worker needs its descriptors in %s (started by a master)\n", FDS_ENV);
        return 1;
    }
    int shm_fd;
    if (fds_get("shm", &shm_fd, 1) == 1) shm_adopt(shm_fd);
    int metrics_fd = -1;
    if (fds_get("metrics", &metrics_fd, 1) != 1) metrics_fd = -1;
    fds_forget();

    worker w = {.master_pid = o->master_pid};
    uv_loop_init(&w.loop);
    if (runtime_new(&w.rt, &w.loop, o->lua_dir, 0) < 0) return fail(&w, "cannot create the Lua runtime");
    lua_State *L = runtime_lua(w.rt);
    char err[2048];
    if (config_load(L, o->conf_path, &w.cfg, err, sizeof err)) return fail(&w, err);
    log_set_level_name(w.cfg.log_level);
    int r = log_open(w.cfg.error_log);
    if (r < 0) log_error("error_log %s: %s; logging to stderr", w.cfg.error_log, uv_strerror(r));
    runtime_set_upstream_keepalive(w.rt, w.cfg.upstream_keepalive);
    runtime_set_worker_id(w.rt, o->id);
    apply_bounds(&w.cfg);
    start_observing(&w, o, metrics_fd);
    int routes;
    if (boot(L, &routes)) return fail(&w, lua_tostring(L, -1));
    gw_app app;
    w.app = runtime_app_new(w.rt, &app); /* pops the dispatch function */
    if (!w.app) return fail(&w, "out of memory");
    for (int i = 0; i < nlisten; i++) {
        w.srv[i].w = &w;
        if ((r = server_open(&w.srv[i].srv, &w.loop, listen_fds[i], &w.cfg.limits, &app)) < 0) {
            for (int k = i + 1; k < nlisten; k++) close(listen_fds[k]);
            snprintf(err, sizeof err, "cannot accept on the socket the master handed over: %s", uv_strerror(r));
            return fail(&w, err);
        }
        w.nsrv = w.nopen = i + 1;
    }
    start_signals(&w);
    report_ready(ready_fd, routes);
    log_info("ready: generation %d, %d routes", o->generation, routes);
    return finish_loop(&w.loop);
}
