/* The master: worker processes, their restarts, and the stop that waits for all of them.
 *
 * Workers are started with exec rather than fork, so each builds its loop, libcurl and Lua state
 * from scratch: nothing of the master's loop leaks into them. A worker is its own session
 * (UV_PROCESS_DETACHED): a Ctrl-C in the terminal reaches the master only, which then asks each
 * worker once, so a worker never mistakes it for the second, "stop now" signal. */
#include "master.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "server.h"
#include "shm.h"

/* A worker that dies sooner than this after its start is restarted only after the same delay:
 * a worker that cannot start must not turn the master into a fork loop. */
#define QUICK_DEATH_MS 1000

typedef struct master master;

typedef struct worker {
    master *m;
    int id; /* 1..n: stable across restarts, shown in its log lines */
    uv_process_t proc;
    uv_timer_t restart_timer;
    bool running;     /* proc is a live child */
    uint64_t started; /* loop time of the last start */
} worker;

struct master {
    uv_loop_t loop;
    char exe[4096];
    const char *conf_path;
    const char *host;
    char port[16];
    char pid[16];
    int nworkers;
    worker *workers;
    uv_signal_t sigterm, sigint;
    bool stopping;
    int failed; /* workers that exited non-zero during the stop */
};

static void start_worker(worker *w);

static void on_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void on_restart_timer(uv_timer_t *t) {
    start_worker(t->data);
}

static void on_proc_closed(uv_handle_t *h) {
    worker *w = h->data;
    if (w->m->stopping) return;
    uint64_t lived = uv_now(&w->m->loop) - w->started;
    uv_timer_start(&w->restart_timer, on_restart_timer, lived < QUICK_DEATH_MS ? QUICK_DEATH_MS : 0, 0);
}

static void on_worker_exit(uv_process_t *p, int64_t status, int signum) {
    worker *w = p->data;
    master *m = w->m;
    w->running = false;
    if (m->stopping) {
        /* Killed by our SIGTERM: it was still starting, before its handler was in place, so it
         * had no client to let down. */
        bool clean = status == 0 && (signum == 0 || signum == SIGTERM);
        if (!clean) m->failed++;
        log_info("worker %d (pid %d) stopped%s", w->id, p->pid, clean ? "" : " with an error");
    } else if (signum) {
        log_error("worker %d (pid %d) was killed by signal %d; starting another", w->id, p->pid, signum);
    } else {
        log_error("worker %d (pid %d) exited with status %d; starting another", w->id, p->pid, (int)status);
    }
    uv_close((uv_handle_t *)p, on_proc_closed);
}

static void start_worker(worker *w) {
    master *m = w->m;
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    /* The address comes from the master, not from the config as it is now on disk: the master
     * holds that port on that host. */
    char *args[] = {m->exe, "-c", (char *)m->conf_path, "--worker", id,     "--host",
                    (char *)m->host, "--port", m->port, "--master", m->pid, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t opts = {
        .exit_cb = on_worker_exit,
        .file = m->exe,
        .args = args,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    w->proc.data = w;
    w->started = uv_now(&m->loop);
    int r = uv_spawn(&m->loop, &w->proc, &opts);
    if (r < 0) {
        /* The handle was initialised all the same and must be closed; its close retries later. */
        log_error("worker %d: cannot start %s: %s", w->id, m->exe, uv_strerror(r));
        uv_close((uv_handle_t *)&w->proc, on_proc_closed);
        return;
    }
    w->running = true;
}

/* Once stopping, the loop ends when the last worker handle closes: nothing else stays active. */
static void on_signal(uv_signal_t *s, int signum) {
    master *m = s->data;
    if (m->stopping) {
        log_warn("master: second signal: workers close every connection now");
    } else {
        m->stopping = true;
        log_info("master: %s: stopping the workers gracefully", signum == SIGINT ? "SIGINT" : "SIGTERM");
    }
    for (int i = 0; i < m->nworkers; i++) {
        worker *w = &m->workers[i];
        if (w->running) uv_process_kill(&w->proc, SIGTERM);
        if (!uv_is_closing((uv_handle_t *)&w->restart_timer)) uv_close((uv_handle_t *)&w->restart_timer, on_handle_closed);
    }
    /* The loop ends once the workers' handles are gone; a second signal is still caught. */
    uv_unref((uv_handle_t *)&m->sigterm);
    uv_unref((uv_handle_t *)&m->sigint);
}

int master_run(const char *conf_path, const char *host, int port, int nworkers) {
    master m = {.conf_path = conf_path, .host = host, .nworkers = nworkers};
    size_t len = sizeof m.exe;
    if (uv_exepath(m.exe, &len) < 0) {
        fprintf(stderr, "luagate: cannot find its own executable to start workers\n");
        return 1;
    }
    /* The master's own bound socket keeps the port (and, for port 0, the number the kernel chose)
     * for the workers, across their restarts. */
    int reserved;
    int r = server_reserve_port(host, &port, &reserved);
    if (r < 0) {
        fprintf(stderr, "luagate: %s: listen on %s:%d: %s\n", conf_path, host, port, uv_strerror(r));
        return 1;
    }
    snprintf(m.port, sizeof m.port, "%d", port);
    snprintf(m.pid, sizeof m.pid, "%d", (int)uv_os_getpid());
    m.workers = calloc((size_t)nworkers, sizeof *m.workers);
    if (!m.workers) {
        close(reserved);
        fprintf(stderr, "luagate: out of memory\n");
        return 1;
    }
    uv_loop_init(&m.loop);
    uv_signal_init(&m.loop, &m.sigterm);
    uv_signal_init(&m.loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    log_info("luagate %s master (pid %s): %d workers on port %d (config %s)", LUAGATE_VERSION, m.pid, nworkers,
             port, conf_path);
    if ((r = shm_create_for_workers()) < 0) /* before any worker: they inherit it */
        log_error("master: no memory shared by the workers (%s): \"shared\" limits count per worker", strerror(-r));
    for (int i = 0; i < nworkers; i++) {
        worker *w = &m.workers[i];
        w->m = &m;
        w->id = i + 1;
        uv_timer_init(&m.loop, &w->restart_timer);
        w->restart_timer.data = w;
        start_worker(w);
    }
    uv_run(&m.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&m.sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&m.sigint, on_handle_closed);
    uv_run(&m.loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&m.loop);
    close(reserved);
    free(m.workers);
    log_info("master: all workers stopped; exiting");
    return r || m.failed ? 1 : 0;
}

int master_watch_from_worker(int master_pid) {
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return -1;
    /* The master may have died before the line above: then nobody would send the signal. */
    return getppid() == master_pid ? 0 : -1;
}
