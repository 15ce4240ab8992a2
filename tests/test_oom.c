/* Out of memory at start-up: allocations of luagate's own code fail on demand (linked with
 * -Wl,--wrap=calloc, which only reroutes the calls made by luagate's objects). */
#include <lua.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static bool fail_calloc;

void *__wrap_calloc(size_t n, size_t size) {
    return fail_calloc ? NULL : __real_calloc(n, size);
}

#include "check.h"

/* runtime_app_new without memory: NULL, the dispatch function still taken off the stack, and the
 * caller's gw_app left as it was (main.c refuses to start rather than serve with it). */
static void test_app_without_memory(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_runtime *rt;
    CHECK(runtime_new(&rt, &loop, LUAGATE_LUA_DIR, 0) == 0);
    lua_State *L = runtime_lua(rt);
    int top = lua_gettop(L);
    lua_pushcfunction(L, lua_gettop);
    gw_app app = {0};
    fail_calloc = true;
    gw_lua_app *a = runtime_app_new(rt, &app);
    fail_calloc = false;
    CHECK(a == NULL);
    CHECK(lua_gettop(L) == top);
    CHECK(app.on_request == NULL);
    lua_pushcfunction(L, lua_gettop);
    a = runtime_app_new(rt, &app);
    CHECK(a != NULL && app.on_request != NULL && lua_gettop(L) == top);
    runtime_app_free(a);
    runtime_close(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void) {
    test_app_without_memory();
    return check_summary();
}
