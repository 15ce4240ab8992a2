/* Descriptors handed from a parent process to a child it starts (a master to its workers, an old
 * master to the new one on a binary upgrade), named in the environment variable
 *
 *     LUAGATE_FDS="listen=3,listen=4,ready=5"
 *
 * Names say what each descriptor is for: `listen` a listening TCP socket (in the order of the
 * config's addresses, for a worker), `ready` a socket a worker writes "ready <routes>\n" on once it
 * accepts, `upgrade` a socket the new master of a binary upgrade writes "ready\n" on. A name
 * may appear several times; a reader takes the names it knows. New kinds of inherited descriptor
 * (a shared-memory region, another listener) add a name, not a mechanism. */
#ifndef LUAGATE_FDS_H
#define LUAGATE_FDS_H

#include <stddef.h>

#define FDS_ENV "LUAGATE_FDS"

/* The child's side: the descriptors named `name`, in order, from the environment: how many were
 * found (at most max are stored, and made close-on-exec), or -1 when the variable is malformed. */
int fds_get(const char *name, int *out, int max);
/* Forget LUAGATE_FDS, so that processes this one starts do not inherit it by mistake. */
void fds_forget(void);

/* The parent's side: append "name=fd" to the value being built in list (of size len, "" at first).
 * 0, or -1 when it does not fit. */
int fds_add(char *list, size_t len, const char *name, int fd);
/* The environment for a child: this process's, without any LUAGATE_FDS, plus LUAGATE_FDS=list.
 * A NULL-terminated array to free with fds_env_free, or NULL when out of memory. */
char **fds_env(const char *list);
void fds_env_free(char **env);

#endif
