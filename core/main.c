/* luagate: the command line. Serving is the master's (master.c) and its workers' (worker.c). */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <luajit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "pidfile.h"
#include "runtime.h"
#include "worker.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: luagate [-c FILE] [-t | -s SIGNAL]   serve the routes of FILE (default: gateway.conf)\n"
            "       luagate busted [ARGS...]           run busted specs inside the gateway's runtime\n"
            "  -c FILE     the config file\n"
            "  -t          check the config and the route scripts, then exit\n"
            "  -s SIGNAL   signal the running gateway (found by the config's pid file):\n"
            "              reload, stop (graceful), quit (graceful, no time limit), reopen (the logs)\n"
            "  --help      this text\n"
            "  --version   the version\n");
}

/* The Lua library: $LUAGATE_LUA_DIR, else share/luagate beside an installed binary (bin/luagate:
 * LUAGATE_LUA_REL is "../share/luagate"), else the source tree the binary was built from. */
static const char *lua_dir(void) {
    static char dir[PATH_MAX];
    const char *d = getenv("LUAGATE_LUA_DIR");
    if (d && *d) return d;
    char exe[4096];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        char rel[4200], probe[4300];
        snprintf(rel, sizeof rel, "%s/%s", exe, LUAGATE_LUA_REL);
        snprintf(probe, sizeof probe, "%s/luagate/init.lua", rel);
        struct stat st;
        if (stat(probe, &st) == 0 && realpath(rel, dir)) return dir; /* no "bin/.." in tracebacks */
    }
    return LUAGATE_LUA_DIR;
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

/* Print what _boot reported: the routes each script registered. */
static void print_scripts(lua_State *L) {
    int total = 0, n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "script");
        lua_getfield(L, -2, "routes");
        int routes = (int)lua_tointeger(L, -1);
        printf("luagate: %s: %d route%s\n", lua_tostring(L, -2), routes, routes == 1 ? "" : "s");
        total += routes;
        lua_pop(L, 3);
    }
    printf("luagate: %d route%s in %d script%s\n", total, total == 1 ? "" : "s", n, n == 1 ? "" : "s");
}

/* `luagate -t`: load the config and run the route scripts as a worker would, then exit. The master
 * runs this as a child before each start and reload. */
static int check_config(const char *conf_path) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_runtime *rt;
    if (runtime_new(&rt, &loop, lua_dir(), 0) < 0) {
        fprintf(stderr, "luagate: cannot create the Lua runtime\n");
        return 1;
    }
    lua_State *L = runtime_lua(rt);
    gw_config cfg;
    char err[2048];
    int status = 0;
    if (config_load(L, conf_path, &cfg, err, sizeof err)) {
        fprintf(stderr, "luagate: %s\n", err);
        status = 1;
    } else {
        log_set_level_name(cfg.log_level);
        /* require("luagate")._boot(conf): the dispatch function and the scripts' route counts. */
        lua_getglobal(L, "require");
        lua_pushstring(L, "luagate");
        int r = lua_pcall(L, 1, 1, 0);
        if (r == 0) {
            lua_getfield(L, -1, "_boot");
            lua_remove(L, -2);
            lua_insert(L, -2);
            r = lua_pcall(L, 1, 2, 0);
        }
        if (r) {
            fprintf(stderr, "luagate: %s\n", lua_tostring(L, -1));
            status = 1;
        } else {
            printf("luagate: the configuration file %s syntax is ok\n", conf_path);
            print_scripts(L);
            printf("luagate: configuration file %s test is successful\n", conf_path);
        }
    }
    fflush(stdout);
    runtime_close(rt);
    return finish_loop(&loop) || status;
}

/* `luagate -s reload|stop|quit|reopen`: a signal to the master named in the config's pid file. */
static int send_signal(const char *conf_path, const char *name) {
    static const struct { const char *name; int signum; } names[] = {
        {"reload", SIGHUP}, {"stop", SIGTERM}, {"quit", SIGQUIT}, {"reopen", SIGUSR1}};
    int signum = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) signum = names[i].signum;
    if (!signum) {
        fprintf(stderr, "luagate: -s %s: expected reload, stop, quit or reopen\n", name);
        return 2;
    }
    gw_config cfg;
    char err[2048];
    if (config_read(conf_path, lua_dir(), &cfg, err, sizeof err)) {
        fprintf(stderr, "luagate: %s\n", err);
        return 1;
    }
    int pid = pidfile_read(cfg.pid);
    if (pid < 0) {
        fprintf(stderr, "luagate: -s %s: pid file %s: %s\n", name, cfg.pid,
                pid == -EINVAL ? "holds no pid" : strerror(-pid));
        return 1;
    }
    if (kill(pid, signum)) {
        fprintf(stderr, "luagate: -s %s: pid %d (from %s): %s\n", name, pid, cfg.pid, strerror(errno));
        return 1;
    }
    return 0;
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

    const char *conf_path = "gateway.conf", *signal_name = NULL;
    bool check_only = false;
    worker_options w = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf_path = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            signal_name = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("luagate %s (%s, libuv %s, %s, llhttp %d.%d.%d)\n", LUAGATE_VERSION, LUAJIT_VERSION,
                   uv_version_string(), curl_version(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
                   LLHTTP_VERSION_PATCH);
            return 0;
        } else if (strcmp(argv[i], "--worker") == 0 && i + 1 < argc) {
            w.id = atoi(argv[++i]); /* the master's options, not the user's: see master.c */
        } else if (strcmp(argv[i], "--generation") == 0 && i + 1 < argc) {
            w.generation = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--master") == 0 && i + 1 < argc) {
            w.master_pid = atoi(argv[++i]);
        } else {
            fprintf(stderr, "luagate: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (check_only) return check_config(conf_path);
    if (signal_name) return send_signal(conf_path, signal_name);
    if (w.id) {
        char name[64];
        snprintf(name, sizeof name, "worker %d [gen %d]", w.id, w.generation);
        log_set_process(name);
        w.conf_path = conf_path;
        w.lua_dir = lua_dir();
        return worker_run(&w);
    }
    int status = master_run(conf_path, lua_dir());
    curl_global_cleanup();
    return status;
}
