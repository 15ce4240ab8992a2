/* Memory the workers of one master share: one region, made by the master before it starts them
 * (a memfd handed to each worker as its "shm" descriptor, fds.h), mapped by each worker as it
 * starts. A process on its own (`luagate busted`, `-t`) gets a region of its own, shared with
 * nobody. What the region holds is its users' business (limit_shared.c); it starts zeroed and
 * lives as long as the master, so it outlasts the restart of a worker and a reload. */
#ifndef LUAGATE_SHM_H
#define LUAGATE_SHM_H

#include <stddef.h>

/* In the master, before it starts workers: make the region. 0 and its descriptor (kept open for the
 * master's life), or a negative errno (the workers then each make their own). */
int shm_create(int *fd_out);
/* In a worker: map the master's region now (the descriptor is closed). 0 or a negative errno. */
int shm_adopt(int fd);

/* This process's region (mapped once, for the life of the process), or NULL when none can be
 * mapped; its size in *size. */
void *shm_region(size_t *size);

#endif
