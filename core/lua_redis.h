/* The Redis functions of luagate.core (core.redis_*): see lua_redis.c. */
#ifndef LUAGATE_LUA_REDIS_H
#define LUAGATE_LUA_REDIS_H

#include "runtime_internal.h"

/* Add them to the module table on top of L's stack. */
void lua_redis_register(lua_State *L, gw_runtime *rt);

#endif
