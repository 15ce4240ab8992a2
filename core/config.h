/* gateway.conf: a Lua file of assignments, run in an empty sandbox and checked against a schema
 * by lua/luagate/config.lua. This module reads the checked result into C. */
#ifndef LUAGATE_CONFIG_H
#define LUAGATE_CONFIG_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define GW_MAX_LISTEN 16

typedef struct gw_address {
    char host[64]; /* an IP literal */
    int port;
} gw_address;

typedef struct gw_config {
    gw_address listen[GW_MAX_LISTEN];
    int nlisten;
    int workers; /* processes sharing the sockets; "auto" is resolved to the CPU count */
    gw_limits limits;
    uint64_t shutdown_timeout_ms;
    uint64_t reload_timeout_ms;        /* for a new generation of workers to report ready */
    uint64_t keepalive_min_timeout_ms; /* an idle connection's grace when its worker drains */
    long upstream_keepalive;
    long max_open_files;      /* the worker's descriptor limit; 0: as inherited */
    size_t max_buffered_size; /* the worker's memory budget (budget.h) */
    int nupstreams;
    char log_level[16];
    char error_log[4096]; /* "stderr" or a path */
    char access_log[4096]; /* "stdout", "off" or a path */
    bool access_log_json;  /* else nginx's combined, and luagate's fields */
    gw_address metrics_listen; /* port -1: off */
    char pid[4096];
} gw_config;

/* Load and check `path`. On success 0, *out filled and the checked config table pushed on L (for
 * the Lua side: upstreams, routes). On failure -1 and err holds "file:line: key: problem". */
int config_load(lua_State *L, const char *path, gw_config *out, char *err, size_t errlen);
/* The same in a Lua state of its own, closed before returning: for the master and `-s`, which need
 * the settings and never run route scripts. lua_dir holds luagate/config.lua. */
int config_read(const char *path, const char *lua_dir, gw_config *out, char *err, size_t errlen);
/* "http://127.0.0.1:8080" for an address (with [] around an IPv6 host): out has room for 80. */
void config_address_url(const gw_address *a, int port, char *out, size_t len);

#endif
