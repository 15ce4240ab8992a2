#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

static double number_field(lua_State *L, const char *key) {
    lua_getfield(L, -1, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static void string_field(lua_State *L, const char *key, char *out, size_t len) {
    lua_getfield(L, -1, key);
    snprintf(out, len, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
}

int config_load(lua_State *L, const char *path, gw_config *out, char *err, size_t errlen) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "luagate.config");
    if (lua_pcall(L, 1, 1, 0)) {
        snprintf(err, errlen, "cannot load the config checker: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_pushstring(L, path);
    if (lua_pcall(L, 1, 2, 0)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    if (lua_isnil(L, -2)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return -1;
    }
    lua_pop(L, 1);

    memset(out, 0, sizeof *out);
    string_field(L, "host", out->host, sizeof out->host);
    out->port = (int)number_field(L, "port");
    lua_getfield(L, -1, "workers");
    out->workers = lua_type(L, -1) == LUA_TSTRING ? (int)uv_available_parallelism() : (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
    out->limits.max_header_size = (size_t)number_field(L, "max_header_size");
    out->limits.max_body_size = (size_t)number_field(L, "max_body_size");
    out->limits.keepalive_timeout_ms = (uint64_t)(number_field(L, "keepalive_timeout") * 1000);
    out->limits.read_timeout_ms = (uint64_t)(number_field(L, "read_timeout") * 1000);
    out->limits.backlog = (int)number_field(L, "backlog");
    out->shutdown_timeout_ms = (uint64_t)(number_field(L, "shutdown_timeout") * 1000);
    out->upstream_keepalive = (long)number_field(L, "upstream_keepalive");
    string_field(L, "log_level", out->log_level, sizeof out->log_level);
    return 0;
}
