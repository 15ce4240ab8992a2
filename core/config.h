/* gateway.conf: a Lua file of assignments, run in an empty sandbox and checked against a schema
 * by lua/luagate/config.lua. This module reads the checked result into C. */
#ifndef LUAGATE_CONFIG_H
#define LUAGATE_CONFIG_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

typedef struct gw_config {
    char host[256];
    int port;
    int workers; /* processes sharing the port; "auto" is resolved to the CPU count */
    gw_limits limits;
    uint64_t shutdown_timeout_ms;
    long upstream_keepalive;
    char log_level[16];
} gw_config;

/* Load and check `path`. On success 0, *out filled and the checked config table pushed on L (for
 * the Lua side: upstreams, routes). On failure -1 and err holds "file:line: key: problem". */
int config_load(lua_State *L, const char *path, gw_config *out, char *err, size_t errlen);

#endif
