/* The LuaJIT runtime of one worker: its Lua state, and the app that runs each request's handler in
 * a coroutine of its own, resumed by the loop when the upstream transfers it waits on complete. */
#ifndef LUAGATE_RUNTIME_H
#define LUAGATE_RUNTIME_H

#include <lua.h>
#include <uv.h>

#include "fetch.h"
#include "observe.h"
#include "server.h"

typedef struct gw_runtime gw_runtime;
typedef struct gw_lua_app gw_lua_app;

/* A Lua state with the standard libraries, package.path covering lua_dir, and luagate.core. */
int runtime_new(gw_runtime **out, uv_loop_t *loop, const char *lua_dir, long upstream_keepalive);
lua_State *runtime_lua(gw_runtime *rt);

/* An app whose requests are handled by the Lua function on top of the stack (popped):
 * dispatch(req) -> status, body, content_type, headers. Free it after its server has closed.
 * NULL when out of memory (the function is popped all the same; app_out is not set). */
gw_lua_app *runtime_app_new(gw_runtime *rt, gw_app *app_out);
void runtime_app_free(gw_lua_app *a);

/* Stop the servers that specs opened with core.listen. */
void runtime_close_servers(gw_runtime *rt);
/* How many idle upstream connections to keep (from the config). */
void runtime_set_upstream_keepalive(gw_runtime *rt, long n);
/* Which worker of a master this is (1..n), for gw.stats(); 0 (the default) when on its own. */
void runtime_set_worker_id(gw_runtime *rt, int id);
/* Count requests and upstream calls, and log them (the worker's; before the routes load). */
void runtime_set_observe(gw_runtime *rt, gw_observe *o);

/* Once every server has closed: no request runs any more. Frees the runtime and its Lua state. */
void runtime_close(gw_runtime *rt);

#endif
