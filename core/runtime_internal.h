/* Shared by runtime.c (tasks, marshalling) and lua_core.c (the luagate.core module). */
#ifndef LUAGATE_RUNTIME_INTERNAL_H
#define LUAGATE_RUNTIME_INTERNAL_H

#include <lauxlib.h>
#include <stdbool.h>

#include "buf.h"
#include "runtime.h"

typedef struct gw_task gw_task;
typedef struct gw_op gw_op;

struct gw_runtime {
    uv_loop_t *loop;
    lua_State *L;
    gw_fetch *fetch;
    gw_task *current; /* the task whose coroutine is running, if any */
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

enum op_kind { OP_FETCH, OP_SLEEP };

struct gw_op {
    gw_op *prev, *next;
    gw_task *task;
    lua_Integer id;
    enum op_kind kind;
    gw_transfer *xfer;
    uv_timer_t timer;
};

/* The value a handler's coroutine yields when it waits for an op: anything else is a mistake. */
extern char runtime_wait_token;

gw_task *task_new(gw_runtime *rt, lua_State *host);
/* Resume with nargs values already pushed on t->co. The task may be freed when this returns,
 * unless it is a core.run task (freed by its runner). */
void task_resume(gw_task *t, int nargs);
void task_free(gw_task *t);

gw_op *op_new(gw_task *t, enum op_kind kind);
void op_unlink(gw_op *op);
/* Stop an op without resuming its task. */
void op_cancel(gw_op *op);
void op_free(gw_op *op);

int luaopen_luagate_core(lua_State *L);

#endif
