/* The pid file (config key `pid`): where `luagate -s SIGNAL` finds the running master. */
#ifndef LUAGATE_PIDFILE_H
#define LUAGATE_PIDFILE_H

/* Write pid to path (a whole file, put in place by rename). 0 or a negative errno. */
int pidfile_write(const char *path, int pid);
/* The pid in path: > 0, or a negative errno (-ENOENT when there is no file, -EINVAL when it holds
 * no pid). */
int pidfile_read(const char *path);
/* Remove path if it still names pid (a newer master may have written its own since). */
void pidfile_remove(const char *path, int pid);

#endif
