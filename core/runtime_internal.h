/* Shared by runtime.c (tasks, marshalling) and lua_core.c (the luagate.core module). */
#ifndef LUAGATE_RUNTIME_INTERNAL_H
#define LUAGATE_RUNTIME_INTERNAL_H

#include <lauxlib.h>
#include <stdbool.h>

#include "buf.h"
#include "ready.h"
#include "runtime.h"

typedef struct gw_task gw_task;
typedef struct gw_op gw_op;

struct gw_runtime {
    uv_loop_t *loop;
    lua_State *L;
    gw_fetch *fetch;
    gw_task *current; /* the task whose coroutine is running, if any */
    gw_ready ready;   /* completed ops, delivered from the loop */
    gw_buf scratch;   /* response headers being collected */
    uv_timer_t run_timer; /* core.run's deadline */
    bool in_run;
    bool run_timed_out;
    size_t ntasks;
    struct lua_server *servers; /* opened by core.listen */
    int next_server_id;
    int worker_id; /* 1..n under a master, else 0 */
    /* Coroutines whose handler returned normally, kept for the next requests: creating and
     * collecting a coroutine per request is a large part of a short request's cost. */
    struct spare_thread { lua_State *co; int ref; } spare[256];
    size_t nspare;
};

/* One coroutine running one handler: for a request (req set) or for core.run (req NULL). */
struct gw_task {
    gw_runtime *rt;
    lua_State *co;
    int co_ref;
    gw_request *req;
    gw_op *ops; /* transfers and timers this task waits on */
    lua_Integer next_op_id;
    char id[65]; /* request id, passed on to upstreams and put in log lines; "" for none */
    int status; /* lua_resume's result once finished */
    bool running;
    bool finished;
    bool aborted;
};

/* What a kind of op does at the ends of its life. An op kind embeds gw_op as its first member. */
typedef struct gw_op_kind {
    /* Push the results the task is resumed with (after the op's id); returns how many. */
    int (*deliver)(gw_op *op, lua_State *co);
    /* Stop the work of an op that has not completed: nothing of it may call back afterwards. */
    void (*cancel)(gw_op *op);
    /* Free the op (after deliver or cancel); may finish later (a handle to close). */
    void (*release)(gw_op *op);
} gw_op_kind;

/* Work a task waits on: a transfer, a timer... Owned by its task until it is delivered. */
struct gw_op {
    gw_op *prev, *next;
    gw_task *task;
    const gw_op_kind *kind;
    lua_Integer id;
    gw_ready_item ready; /* queued once completed: delivered from the runtime's ready list */
    bool completed;
};

/* The value a handler's coroutine yields when it waits for an op: anything else is a mistake. */
extern char runtime_wait_token;

gw_task *task_new(gw_runtime *rt, lua_State *host);
/* Resume with nargs values already pushed on t->co. The task may be freed when this returns,
 * unless it is a core.run task (freed by its runner). */
void task_resume(gw_task *t, int nargs);
void task_free(gw_task *t);

/* A new op of `size` bytes (a struct that starts with gw_op), zeroed, linked to t. NULL when out of
 * memory. */
gw_op *op_new(gw_task *t, const gw_op_kind *kind, size_t size);
/* The op's work is done: its task is resumed with (id, deliver's results) from the runtime's ready
 * list, never on the stack of the code that completed it. */
void op_complete(gw_op *op);
/* Drop an op that was never started. */
void op_discard(gw_op *op);
/* Stop an op without resuming its task. */
void op_cancel(gw_op *op);

int luaopen_luagate_core(lua_State *L);
int luaopen_luagate_path(lua_State *L);

#endif
