/* The Redis part of luagate.core; lua/luagate/redis.lua builds gw.redis on it.
 *
 *   core.redis_open(name, host, port, user, password, db, timeout_s) -> client (a userdata;
 *       closed when collected)
 *   core.redis_call(client, timeout_s, word, ...) -> id | nil, err
 *       an op like fetch: the coroutine then yields core.WAIT and is resumed with
 *       (id, true, value) or (id, false, err)
 *   core.redis_close(client), core.redis_info(client) -> state, pending
 *   core.redis_null: the value of a nil inside an array (cjson.null: lightuserdata NULL)
 *
 * A reply is copied out of hiredis in its callback (hiredis frees it when the callback returns)
 * and turned into Lua values only when the coroutine is resumed, from the runtime's ready list. */
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_redis.h"
#include "redis.h"

#define CLIENT_MT "luagate.redis"

typedef struct client_ud {
    gw_redis *r; /* NULL once closed */
} client_ud;

/* A command a task waits on; the reply (flattened) or the error stays here until delivered. */
typedef struct redis_op {
    gw_op op;
    gw_redis_cmd *cmd; /* NULL once answered */
    gw_buf reply;
    char *err;
} redis_op;

/* ---- replies ---- */

/* A reply, flattened in pre-order into one buffer: per value its type byte and an int64 (the
 * integer; a string's length; an array's count), then a string's bytes. */
static int flatten(gw_buf *b, const redisReply *rep) {
    unsigned char type = (unsigned char)rep->type;
    bool text = type == REDIS_REPLY_STRING || type == REDIS_REPLY_STATUS || type == REDIS_REPLY_ERROR;
    int64_t n = type == REDIS_REPLY_INTEGER ? rep->integer
                : type == REDIS_REPLY_ARRAY ? (int64_t)rep->elements
                : text                      ? (int64_t)rep->len
                                            : 0;
    if (buf_append(b, &type, 1) || buf_append(b, &n, sizeof n)) return -1;
    if (text && buf_append(b, rep->str, rep->len)) return -1;
    for (size_t i = 0; type == REDIS_REPLY_ARRAY && i < rep->elements; i++)
        if (flatten(b, rep->element[i])) return -1;
    return 0;
}

static void on_reply(const redisReply *reply, const char *err, void *data) {
    redis_op *o = data;
    o->cmd = NULL;
    if (err) o->err = strdup(err);
    else if (flatten(&o->reply, reply)) o->reply.len = 0; /* delivered as out of memory */
    op_complete(&o->op);
}

/* Push the value at *p: strings and statuses as strings, integers as numbers, arrays as lists; a
 * nil or an error inside an array is redis_null or { err = message } (as Redis's own Lua does). */
static const char *push_value(lua_State *L, const char *p) {
    unsigned char type = (unsigned char)*p;
    int64_t n;
    memcpy(&n, p + 1, sizeof n);
    p += 1 + sizeof n;
    switch (type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, p, (size_t)n);
        return p + n;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, p, (size_t)n);
        lua_setfield(L, -2, "err");
        return p + n;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)n);
        return p;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
        for (int64_t i = 1; i <= n; i++) {
            p = push_value(L, p);
            lua_rawseti(L, -2, (int)i);
        }
        return p;
    default:
        lua_pushlightuserdata(L, NULL);
        return p;
    }
}

static int redis_deliver(gw_op *op, lua_State *co) {
    redis_op *o = (redis_op *)op;
    lua_checkstack(co, 24); /* hiredis nests arrays at most 7 deep */
    const char *p = o->reply.data;
    if (o->err || !o->reply.len) {
        lua_pushboolean(co, 0);
        lua_pushstring(co, o->err ? o->err : "redis error: out of memory");
        return 2;
    }
    unsigned char type = (unsigned char)*p;
    if (type == REDIS_REPLY_ERROR) {
        int64_t n;
        memcpy(&n, p + 1, sizeof n);
        lua_pushboolean(co, 0);
        lua_pushliteral(co, "redis error: ");
        lua_pushlstring(co, p + 1 + sizeof n, (size_t)n);
        lua_concat(co, 2);
        return 2;
    }
    lua_pushboolean(co, 1);
    if (type == REDIS_REPLY_NIL) lua_pushnil(co);
    else push_value(co, p);
    return 2;
}

static void redis_op_cancel(gw_op *op) {
    redis_op *o = (redis_op *)op;
    if (o->cmd) redis_detach(o->cmd);
    o->cmd = NULL;
}

static void redis_op_release(gw_op *op) {
    redis_op *o = (redis_op *)op;
    buf_free(&o->reply);
    free(o->err);
    op_free(op);
}

static const gw_op_kind redis_kind = {redis_deliver, redis_op_cancel, redis_op_release};
_Static_assert(sizeof(redis_op) <= SMALL_BLOCK, "a redis op fits a small block");

/* ---- functions ---- */

static gw_redis *client_of(lua_State *L) {
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (!u->r) luaL_error(L, "redis: the client is closed");
    return u->r;
}

static int l_redis_open(lua_State *L) {
    gw_redis_options o = {
        .name = luaL_checkstring(L, 1),
        .host = luaL_checkstring(L, 2),
        .port = (int)luaL_checkinteger(L, 3),
        .user = luaL_optstring(L, 4, NULL),
        .password = luaL_optstring(L, 5, NULL),
        .db = (int)luaL_optinteger(L, 6, 0),
        .timeout_ms = (uint64_t)ms_of(L, 7),
    };
    client_ud *u = lua_newuserdata(L, sizeof *u);
    u->r = NULL;
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);
    if (redis_new(&u->r, runtime_of(L)->loop, &o) < 0) return luaL_error(L, "redis: out of memory");
    return 1;
}

/* A number as Redis reads it: integers without a fraction or exponent ("%.14g" would send 1e+15),
 * written without printf (a limit and a period go with every rate-limit decision). */
static void number_to_word(lua_State *L, int idx) {
    char s[32];
    double x = lua_tonumber(L, idx);
    if (x == floor(x) && fabs(x) < 9.2e18) {
        long long v = (long long)x;
        unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
        char *p = s + sizeof s;
        do *--p = (char)('0' + u % 10);
        while (u /= 10);
        if (v < 0) *--p = '-';
        lua_pushlstring(L, p, (size_t)(s + sizeof s - p));
    } else {
        snprintf(s, sizeof s, "%.17g", x);
        lua_pushstring(L, s);
    }
    lua_replace(L, idx);
}

static int l_redis_call(lua_State *L) {
    gw_redis *r = client_of(L);
    gw_task *t = op_owner(L, "redis");
    uint64_t timeout_ms = (uint64_t)ms_of(L, 2);
    int argc = lua_gettop(L) - 2;
    if (argc < 1) return luaL_error(L, "redis: no command given");
    for (int i = 3; i <= argc + 2; i++) {
        int type = lua_type(L, i);
        if (type == LUA_TNUMBER) number_to_word(L, i);
        else if (type != LUA_TSTRING)
            return luaL_error(L, "redis: argument #%d is a %s: only strings and numbers can be sent", i - 2,
                              lua_typename(L, type));
    }
    /* The words stay on the stack (alive) while hiredis formats them; a long command's arrays go in
     * a userdata, collected with the rest. */
    const char *small_argv[16];
    size_t small_len[16];
    const char **argv = small_argv;
    size_t *lens = small_len;
    if (argc > 16) {
        lens = lua_newuserdata(L, (size_t)argc * (sizeof *lens + sizeof *argv));
        argv = (const char **)(lens + argc);
    }
    for (int i = 0; i < argc; i++) argv[i] = lua_tolstring(L, i + 3, &lens[i]);
    redis_op *o = (redis_op *)op_new(t, &redis_kind, sizeof *o);
    if (!o) return luaL_error(L, "redis: out of memory");
    const char *err;
    if (redis_command(r, argc, argv, lens, timeout_ms, on_reply, o, &o->cmd, &err) < 0) {
        op_discard(&o->op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, o->op.id);
    return 1;
}

static int l_redis_close(lua_State *L) {
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (u->r) redis_close(u->r);
    u->r = NULL;
    return 0;
}

static int l_redis_info(lua_State *L) {
    gw_redis *r = client_of(L);
    lua_pushstring(L, redis_state(r));
    lua_pushnumber(L, (double)redis_pending(r));
    return 2;
}

void lua_redis_register(lua_State *L, gw_runtime *rt) {
    if (luaL_newmetatable(L, CLIENT_MT)) {
        lua_pushcfunction(L, l_redis_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"redis_open", l_redis_open},
                                   {"redis_call", l_redis_call},
                                   {"redis_close", l_redis_close},
                                   {"redis_info", l_redis_info},
                                   {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, rt);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "redis_null");
}
