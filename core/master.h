/* The master process: it always runs when luagate serves, serves no request itself, and owns the
 * listening sockets, which it hands to its workers (fds.h). It starts a generation of `workers`
 * worker processes, replaces one that dies, and on SIGHUP checks the config and the route scripts
 * (`luagate -t` in a child process), starts a new generation and, once every new worker reports
 * ready, lets the old generation drain. SIGTERM/SIGINT/SIGQUIT stop gracefully, SIGUSR1 reopens the
 * logs, SIGUSR2 starts a new master from the binary on disk on the same sockets. */
#ifndef LUAGATE_MASTER_H
#define LUAGATE_MASTER_H

/* Serve conf_path until stopped. lua_dir holds the luagate library. Returns the exit status:
 * 0 once every worker stopped cleanly, 1 when the gateway could not start. */
int master_run(const char *conf_path, const char *lua_dir);

#endif
