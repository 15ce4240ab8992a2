/* A ready list: work handed to the loop instead of being done on the caller's stack.
 *
 * A callback that finishes one request must not run another request's handler inside itself (a
 * pipelined request, a coroutine woken by a finished transfer): it pushes an item here, and the
 * loop runs it from a uv_check handle once the current callback has returned. While items wait, an
 * idle handle keeps the loop from blocking in poll, so an item pushed from a timer callback runs
 * in the same loop iteration. Items run in the order they were pushed. */
#ifndef LUAGATE_READY_H
#define LUAGATE_READY_H

#include <stdbool.h>
#include <uv.h>

typedef struct gw_ready_item gw_ready_item;
typedef void (*gw_ready_fn)(gw_ready_item *item);

/* Embedded in the object that waits; the list never owns it. */
struct gw_ready_item {
    gw_ready_item *prev, *next;
    gw_ready_fn fn;
    bool queued;
};

typedef struct gw_ready {
    uv_check_t check;
    uv_idle_t idle;
    gw_ready_item *head, *tail;
    int open_handles;
    void (*on_closed)(struct gw_ready *r);
} gw_ready;

void ready_init(gw_ready *r, uv_loop_t *loop);
/* Queue item to run fn(item) once; a no-op when it is queued already. */
void ready_push(gw_ready *r, gw_ready_item *item, gw_ready_fn fn);
/* Take item off the list if it is there: its fn will not run. */
void ready_cancel(gw_ready *r, gw_ready_item *item);
/* Close the handles; on_closed(r) runs once they are closed (r may then be freed). Items still
 * queued are dropped. */
void ready_close(gw_ready *r, void (*on_closed)(gw_ready *r));

#endif
