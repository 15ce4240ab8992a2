/* The shared-memory limiter of luagate.core (core.limit_shared): see lua_limit.c. */
#ifndef LUAGATE_LUA_LIMIT_H
#define LUAGATE_LUA_LIMIT_H

#include <lua.h>

/* Add it to the module table on top of L's stack. */
void lua_limit_register(lua_State *L);

#endif
