/* The master process of `workers = N`: it runs N copies of this program as workers, each with its
 * own loop and Lua state, all listening on one port (SO_REUSEPORT); it starts a new worker when
 * one dies, and on SIGTERM or SIGINT stops them all gracefully. It serves no request itself. */
#ifndef LUAGATE_MASTER_H
#define LUAGATE_MASTER_H

/* Serve host:port with `workers` worker processes started as `luagate -c conf_path --worker ...`.
 * Returns the exit status once every worker has exited: 0 when they all stopped cleanly. */
int master_run(const char *conf_path, const char *host, int port, int workers);

/* In a worker (the --worker options): exit when the master dies, whatever killed it. */
int master_watch_from_worker(int master_pid);

#endif
