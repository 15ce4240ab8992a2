/* Shared by the runtime's files: runtime.c (tasks, ops, marshalling), lua_core.c (the luagate.core
 * module), lua_fetch.c (upstream calls and their streams), lua_http.c (the request's body and a
 * streamed answer). */
#ifndef LUAGATE_RUNTIME_INTERNAL_H
#define LUAGATE_RUNTIME_INTERNAL_H

#include <lauxlib.h>
#include <stdbool.h>

#include "buf.h"
#include "forwarded.h"
#include "observe.h"
#include "ready.h"
#include "runtime.h"

typedef struct gw_task gw_task;
typedef struct gw_op gw_op;
typedef struct upstream_stream upstream_stream;

struct gw_runtime {
    uv_loop_t *loop;
    lua_State *L;
    gw_fetch *fetch;
    gw_trusted trusted; /* trusted_proxies: whose X-Forwarded-* are passed on */
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
    gw_observe *obs; /* metrics and the access log: NULL outside a worker */
    int32_t route_cell; /* the route the running handler's router matched (lua_metrics.c), until taken */
    int log_ref;        /* the Lua log phase, run after each request's end; LUA_NOREF when none */
    /* Coroutines whose handler returned normally, kept for the next requests: creating and
     * collecting a coroutine per request is a large part of a short request's cost. */
    struct spare_thread { lua_State *co; int ref; } spare[256];
    size_t nspare;
    gw_task *spare_tasks;  /* freed tasks, for the next requests */
    size_t nspare_tasks;
    void *small;           /* freed blocks of SMALL_BLOCK bytes (ops, streams) */
    size_t nsmall;
};

/* Ops and streams come from a free list of blocks this large: a request makes several, and malloc
 * and free for each were a tenth of a proxied request's cost. */
#define SMALL_BLOCK 256

/* One coroutine running one handler: for a request (req set) or for core.run (req NULL). */
struct gw_task {
    gw_runtime *rt;
    lua_State *co;
    int co_ref;
    gw_request *req;
    gw_op *ops; /* transfers and timers this task waits on */
    lua_Integer next_op_id;
    upstream_stream *streams; /* streamed upstream answers it holds (lua_fetch.c) */
    upstream_stream *pipe;    /* the one being sent on as the answer */
    gw_op *writable_op;       /* waiting for the client to take a streamed answer */
    gw_op *body_op;           /* waiting for the request's body */
    gw_body_source source;    /* the request's body, when it is sent on upstream */
    void (*source_wake)(void *arg);
    void *source_arg;
    char id[65]; /* request id, passed on to upstreams and put in log lines; "" for none */
    gw_req_obs obs; /* its route, trace and upstream calls, for the log phase */
    int req_ref;    /* its Lua req table, kept for the log phase (0: none) */
    int status; /* lua_resume's result once finished */
    bool running;
    bool finished;
    bool aborted;
    bool for_request; /* a request's handler (else core.run's), even once req is let go */
    bool answered; /* the answer went out in pieces (a pipe, a writer): the handler's return is not one */
    bool body_consumed; /* pieces of the request body were read */
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
    gw_runtime *rt;
    gw_task *task;
    const gw_op_kind *kind;
    lua_Integer id;
    gw_ready_item ready; /* queued once completed: delivered from the runtime's ready list */
    bool completed;
};

/* The value a handler's coroutine yields when it waits for an op: anything else is a mistake. */
extern char runtime_wait_token;

gw_task *task_new(gw_runtime *rt, lua_State *host);
/* The answer is complete (or cut): the task lets go of its request at once. The server may reuse
 * it for the connection's next request, or free it, from then on. */
void task_release_request(gw_task *t);
/* Resume with nargs values already pushed on t->co. The task may be freed when this returns,
 * unless it is a core.run task (freed by its runner). */
void task_resume(gw_task *t, int nargs);
void task_free(gw_task *t);

/* A zeroed block of size bytes (at most SMALL_BLOCK), and back to the free list. */
void *small_alloc(gw_runtime *rt, size_t size);
void small_free(gw_runtime *rt, void *p);

/* A new op of `size` bytes (a struct that starts with gw_op, at most SMALL_BLOCK), zeroed, linked
 * to t. NULL when out of memory. Its kind's release gives it back with op_free. */
gw_op *op_new(gw_task *t, const gw_op_kind *kind, size_t size);
void op_free(gw_op *op);
/* The op's work is done: its task is resumed with (id, deliver's results) from the runtime's ready
 * list, never on the stack of the code that completed it. */
void op_complete(gw_op *op);
/* The task that may start an op from L (a function of luagate.core), or a Lua error saying why
 * not: only the running handler's own coroutine, where it can yield. */
gw_task *op_owner(lua_State *L, const char *what);
/* Drop an op that was never started. */
void op_discard(gw_op *op);
/* Stop an op without resuming its task. */
void op_cancel(gw_op *op);

/* The task whose coroutine is L (the running handler), or a Lua error saying why there is none:
 * what starts an op must be called from a handler's own coroutine, where it can yield. */
gw_task *op_owner(lua_State *L, const char *what);
gw_runtime *runtime_of(lua_State *L);
long ms_of(lua_State *L, int idx);

/* Collect a Lua headers table (name -> string | { string, ... }) at idx into rt->scratch as
 * gw_header[]: -1 with *bad naming the header when one is invalid. */
int runtime_collect_headers(gw_runtime *rt, lua_State *co, int idx, const char **bad);
/* Push the request's headers as a table (lower-case names, repeated ones joined). */
void runtime_push_headers(lua_State *co, const gw_request *r);
/* Headers a handler's answer never carries: those the server writes itself, and hop-by-hop ones. */
bool runtime_header_skipped(const char *name, size_t len);

/* lua_fetch.c */
void fetch_register(lua_State *L, gw_runtime *rt);
void streams_close(gw_task *t);       /* cancel what the task still holds */
void stream_on_writable(gw_task *t);  /* the client takes more of a piped answer */

/* lua_metrics.c: route and upstream ids, gw.metrics, gw.trace, the log phase */
void metrics_register(lua_State *L, gw_runtime *rt);
/* The request of t has ended: its Lua log phase runs from the loop, if there is one. */
void log_phase_queue(gw_task *t, const gw_request_end *end);

/* lua_http.c */
void http_register(lua_State *L, gw_runtime *rt);
void http_on_body(gw_task *t);     /* more of the request's body arrived */
void http_on_writable(gw_task *t); /* the client takes more of a streamed answer */
gw_body_source *http_body_source(gw_task *t); /* the request's body, to send on upstream */

int luaopen_luagate_core(lua_State *L);
int luaopen_luagate_path(lua_State *L);

#endif
