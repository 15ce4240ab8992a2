/* Memory the workers of one master share: one region, made by the master before it starts them
 * (a memfd whose descriptor the exec'd workers inherit), mapped by each worker at its first use. A
 * process on its own (workers = 1, specs) gets a region of its own, shared with nobody. What the
 * region holds is its users' business (limit_shared.c); it starts zeroed and lives as long as the
 * master, so it outlasts the restart of a worker. */
#ifndef LUAGATE_SHM_H
#define LUAGATE_SHM_H

#include <stddef.h>

/* In the master, before it starts workers: make the region and name its descriptor in the
 * environment the workers inherit. 0 or a negative errno (the workers then each make their own). */
int shm_create_for_workers(void);

/* This process's region (mapped once, for the life of the process), or NULL when none can be
 * mapped; its size in *size. */
void *shm_region(size_t *size);

#endif
