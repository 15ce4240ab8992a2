#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
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

static void read_listen(lua_State *L, gw_config *out) {
    lua_getfield(L, -1, "listen");
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n && i <= GW_MAX_LISTEN; i++) {
        lua_rawgeti(L, -1, i);
        string_field(L, "host", out->listen[i - 1].host, sizeof out->listen[i - 1].host);
        out->listen[i - 1].port = (int)number_field(L, "port");
        lua_pop(L, 1);
    }
    out->nlisten = n < GW_MAX_LISTEN ? n : GW_MAX_LISTEN;
    lua_pop(L, 1);
}

static int count_upstreams(lua_State *L) {
    int n = 0;
    lua_getfield(L, -1, "upstreams");
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) n++;
    lua_pop(L, 1);
    return n;
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
    read_listen(L, out);
    lua_getfield(L, -1, "workers");
    out->workers = lua_type(L, -1) == LUA_TSTRING ? (int)uv_available_parallelism() : (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
    out->limits.max_header_size = (size_t)number_field(L, "max_header_size");
    out->limits.max_body_size = (size_t)number_field(L, "max_body_size");
    out->limits.keepalive_timeout_ms = (uint64_t)(number_field(L, "keepalive_timeout") * 1000);
    out->limits.read_timeout_ms = (uint64_t)(number_field(L, "read_timeout") * 1000);
    out->limits.header_timeout_ms = (uint64_t)(number_field(L, "header_timeout") * 1000);
    out->limits.body_timeout_ms = (uint64_t)(number_field(L, "body_timeout") * 1000);
    out->limits.handler_timeout_ms = (uint64_t)(number_field(L, "handler_timeout") * 1000);
    out->limits.backlog = (int)number_field(L, "backlog");
    out->limits.max_connections = (size_t)number_field(L, "max_connections");
    out->max_open_files = (long)number_field(L, "max_open_files");
    out->max_buffered_size = (size_t)number_field(L, "max_buffered_size");
    out->shutdown_timeout_ms = (uint64_t)(number_field(L, "shutdown_timeout") * 1000);
    out->reload_timeout_ms = (uint64_t)(number_field(L, "reload_timeout") * 1000);
    out->keepalive_min_timeout_ms = (uint64_t)(number_field(L, "keepalive_min_timeout") * 1000);
    out->upstream_keepalive = (long)number_field(L, "upstream_keepalive");
    out->nupstreams = count_upstreams(L);
    string_field(L, "log_level", out->log_level, sizeof out->log_level);
    string_field(L, "error_log", out->error_log, sizeof out->error_log);
    string_field(L, "access_log", out->access_log, sizeof out->access_log);
    char format[16];
    string_field(L, "access_log_format", format, sizeof format);
    out->access_log_json = strcmp(format, "json") == 0;
    lua_getfield(L, -1, "metrics_listen");
    string_field(L, "host", out->metrics_listen.host, sizeof out->metrics_listen.host);
    out->metrics_listen.port = (int)number_field(L, "port");
    lua_pop(L, 1);
    string_field(L, "pid", out->pid, sizeof out->pid);
    return 0;
}

int config_read(const char *path, const char *lua_dir, gw_config *out, char *err, size_t errlen) {
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua", lua_dir);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    int r = config_load(L, path, out, err, errlen);
    lua_close(L);
    return r;
}

void config_address_url(const gw_address *a, int port, char *out, size_t len) {
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(out, len, "http://%s%s%s:%d", v6 ? "[" : "", a->host, v6 ? "]" : "", port);
}
