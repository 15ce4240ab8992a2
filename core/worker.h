/* A worker process: one loop, one Lua state, serving on the listening sockets its master handed
 * it (fds.h: "listen"), and telling the master on "ready" once its routes are loaded and it
 * accepts. It drains on SIGTERM/SIGINT (bounded by shutdown_timeout) or SIGQUIT (unbounded). */
#ifndef LUAGATE_WORKER_H
#define LUAGATE_WORKER_H

typedef struct worker_options {
    const char *conf_path;
    const char *lua_dir;
    int id;         /* 1..n within its generation */
    int generation; /* counts the master's reloads, from 1 */
    int master_pid;
} worker_options;

/* Serve until stopped: the process's exit status. */
int worker_run(const worker_options *o);

#endif
