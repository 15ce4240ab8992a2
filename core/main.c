/* luagate: command line, start-up, signals and the graceful stop. */
#include <curl/curl.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <luajit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "runtime.h"
#include "server.h"

typedef struct gateway {
    uv_loop_t loop;
    gw_runtime *rt;
    gw_server *srv;
    gw_lua_app *app;
    gw_config cfg;
    uv_signal_t sigterm, sigint;
    uv_timer_t shutdown_timer;
    bool stopping;
} gateway;

/* How this process was started: on its own, or by a master as one of its workers. */
typedef struct start_options {
    const char *conf_path;
    bool check_only;
    int worker_id; /* 0: not a worker */
    const char *worker_host;
    int worker_port;
    int master_pid;
} start_options;

static void usage(FILE *out) {
    fprintf(out,
            "usage: luagate [-c FILE] [-t]      serve the routes of FILE (default: gateway.conf)\n"
            "       luagate busted [ARGS...]    run busted specs inside the gateway's runtime\n"
            "  -c FILE     the config file\n"
            "  -t          check the config and the route scripts, then exit\n"
            "  --help      this text\n"
            "  --version   the version\n");
}

static const char *lua_dir(void) {
    const char *d = getenv("LUAGATE_LUA_DIR");
    return d && *d ? d : LUAGATE_LUA_DIR;
}

/* Thousands of clients, each with an upstream connection, need more descriptors than the default. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    rlim_t want = 65536;
    if (rl.rlim_max < want) {
        struct rlimit more = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &more) == 0) return; /* allowed when privileged */
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- stopping ---- */

static void on_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void on_drained(void *arg) {
    gateway *g = arg;
    g->srv = NULL;
    log_info("all connections closed; exiting");
    uv_close((uv_handle_t *)&g->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&g->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&g->shutdown_timer, on_handle_closed);
    runtime_app_free(g->app);
    g->app = NULL;
    runtime_close(g->rt);
    g->rt = NULL;
}

static void on_shutdown_timeout(uv_timer_t *t) {
    gateway *g = t->data;
    log_warn("shutdown_timeout reached: closing the connections still open");
    if (g->srv) server_close_all(g->srv);
}

static void on_signal(uv_signal_t *s, int signum) {
    gateway *g = s->data;
    if (g->stopping) {
        log_warn("second signal: closing every connection now");
        if (g->srv) server_close_all(g->srv);
        return;
    }
    g->stopping = true;
    log_info("%s: graceful stop, finishing requests in flight", signum == SIGINT ? "SIGINT" : "SIGTERM");
    uv_timer_start(&g->shutdown_timer, on_shutdown_timeout, g->cfg.shutdown_timeout_ms, 0);
    server_shutdown(g->srv, on_drained, g);
}

/* ---- modes ---- */

/* Call require("luagate")[fn] with the value on top of the stack; leaves nresults on success. */
static int call_library(lua_State *L, const char *fn, int nresults) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "luagate");
    if (lua_pcall(L, 1, 1, 0)) return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -2);
    return lua_pcall(L, 1, nresults, 0) ? -1 : 0;
}

static int finish_loop(uv_loop_t *loop) {
    uv_run(loop, UV_RUN_DEFAULT);
    int r = uv_loop_close(loop);
    curl_global_cleanup();
    if (r) {
        fprintf(stderr, "luagate: handles left open at exit (a bug)\n");
        uv_print_all_handles(loop, stderr);
        return 1;
    }
    return 0;
}

static int fail_start(gateway *g, const char *why) {
    fprintf(stderr, "luagate: %s\n", why);
    if (g->app) runtime_app_free(g->app);
    runtime_close(g->rt);
    finish_loop(&g->loop);
    return 1;
}

static int run_gateway(const start_options *o) {
    gateway g = {0};
    uv_loop_init(&g.loop);
    if (runtime_new(&g.rt, &g.loop, lua_dir(), 0) < 0) {
        fprintf(stderr, "luagate: cannot create the Lua runtime\n");
        return 1;
    }
    lua_State *L = runtime_lua(g.rt);
    char err[2048];
    if (config_load(L, o->conf_path, &g.cfg, err, sizeof err)) return fail_start(&g, err);
    log_set_level_name(g.cfg.log_level);
    runtime_set_upstream_keepalive(g.rt, g.cfg.upstream_keepalive);
    runtime_set_worker_id(g.rt, o->worker_id);
    /* The checked config is on the stack: the library takes its upstreams and loads the routes. */
    if (call_library(L, "_boot", 1)) return fail_start(&g, lua_tostring(L, -1));
    if (o->check_only) {
        printf("luagate: the configuration file %s syntax is ok\n", o->conf_path);
        printf("luagate: configuration file %s test is successful\n", o->conf_path);
        runtime_close(g.rt);
        return finish_loop(&g.loop);
    }
    if (g.cfg.workers > 1 && !o->worker_id) {
        /* The config and the routes load: the master needs nothing more of them than the port. */
        runtime_close(g.rt);
        if (finish_loop(&g.loop)) return 1;
        return master_run(o->conf_path, g.cfg.host, g.cfg.port, g.cfg.workers);
    }
    gw_app app;
    g.app = runtime_app_new(g.rt, &app); /* pops the dispatch function _boot returned */
    if (!g.app) return fail_start(&g, "out of memory");
    gw_listen where = {.host = g.cfg.host, .port = g.cfg.port};
    if (o->worker_id) {
        where.host = o->worker_host ? o->worker_host : g.cfg.host;
        where.port = o->worker_port;
        where.shared = true;
    }
    int r = server_start(&g.srv, &g.loop, &where, &g.cfg.limits, &app);
    if (r < 0) {
        snprintf(err, sizeof err, "%s: listen on %s:%d: %s", o->conf_path, where.host, where.port, uv_strerror(r));
        return fail_start(&g, err);
    }
    uv_signal_init(&g.loop, &g.sigterm);
    uv_signal_init(&g.loop, &g.sigint);
    uv_timer_init(&g.loop, &g.shutdown_timer);
    g.sigterm.data = g.sigint.data = g.shutdown_timer.data = &g;
    uv_signal_start(&g.sigterm, on_signal, SIGTERM);
    uv_signal_start(&g.sigint, on_signal, SIGINT);
    bool v6 = strchr(where.host, ':') != NULL;
    log_info("luagate %s listening on http://%s%s%s:%d (config %s, pid %d)", LUAGATE_VERSION, v6 ? "[" : "",
             where.host, v6 ? "]" : "", server_port(g.srv), o->conf_path, (int)uv_os_getpid());
    return finish_loop(&g.loop);
}

/* `luagate busted ARGS`: busted's own runner, inside this runtime, so that specs exercise real
 * coroutines, the real loop and real libcurl. */
static int run_busted(int argc, char **argv) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_runtime *rt;
    if (runtime_new(&rt, &loop, lua_dir(), 0) < 0) {
        fprintf(stderr, "luagate: cannot create the Lua runtime\n");
        return 1;
    }
    lua_State *L = runtime_lua(rt);
    /* Specs provoke errors on purpose: only warnings and errors are worth seeing among results. */
    const char *level = getenv("LUAGATE_LOG_LEVEL");
    log_set_level_name(level && *level ? level : "warn");
    lua_createtable(L, argc, 1);
    lua_pushstring(L, "busted");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    int status = 0;
    if (luaL_dostring(L, "require('busted.runner')({ standalone = false })")) {
        fprintf(stderr, "luagate busted: %s\n", lua_tostring(L, -1));
        status = 1;
    }
    runtime_close_servers(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    runtime_close(rt);
    return finish_loop(&loop) || status;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "luagate: libcurl failed to initialise\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "busted") == 0) return run_busted(argc - 2, argv + 2);

    start_options o = {.conf_path = "gateway.conf"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            o.conf_path = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            o.check_only = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("luagate %s (%s, libuv %s, %s, llhttp %d.%d.%d)\n", LUAGATE_VERSION, LUAJIT_VERSION,
                   uv_version_string(), curl_version(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
                   LLHTTP_VERSION_PATCH);
            return 0;
        } else if (strcmp(argv[i], "--worker") == 0 && i + 1 < argc) {
            o.worker_id = atoi(argv[++i]); /* the master's options, not the user's: see master.c */
        } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
            o.worker_host = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            o.worker_port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--master") == 0 && i + 1 < argc) {
            o.master_pid = atoi(argv[++i]);
        } else {
            fprintf(stderr, "luagate: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (o.worker_id) {
        char name[32];
        snprintf(name, sizeof name, "worker %d", o.worker_id);
        log_set_process(name);
        if (master_watch_from_worker(o.master_pid)) return 1;
    }
    return run_gateway(&o);
}
