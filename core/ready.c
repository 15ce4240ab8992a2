#include "ready.h"

#include <stddef.h>

static void on_idle(uv_idle_t *h) {
    (void)h; /* only there to make poll return at once */
}

/* Runs what is queued, including what those items queue in turn. */
static void on_check(uv_check_t *h) {
    gw_ready *r = h->data;
    gw_ready_item *it;
    while ((it = r->head)) {
        ready_cancel(r, it);
        it->fn(it);
    }
    uv_idle_stop(&r->idle);
}

void ready_init(gw_ready *r, uv_loop_t *loop) {
    *r = (gw_ready){0};
    uv_check_init(loop, &r->check);
    uv_idle_init(loop, &r->idle);
    r->check.data = r->idle.data = r;
    uv_check_start(&r->check, on_check);
    uv_unref((uv_handle_t *)&r->check); /* a queue that is empty keeps no loop alive */
}

void ready_push(gw_ready *r, gw_ready_item *item, gw_ready_fn fn) {
    item->fn = fn;
    if (item->queued) return;
    item->queued = true;
    item->next = NULL;
    item->prev = r->tail;
    if (r->tail) r->tail->next = item;
    else r->head = item;
    r->tail = item;
    uv_idle_start(&r->idle, on_idle);
}

void ready_cancel(gw_ready *r, gw_ready_item *item) {
    if (!item->queued) return;
    if (item->prev) item->prev->next = item->next;
    else r->head = item->next;
    if (item->next) item->next->prev = item->prev;
    else r->tail = item->prev;
    item->prev = item->next = NULL;
    item->queued = false;
}

static void on_handle_closed(uv_handle_t *h) {
    gw_ready *r = h->data;
    if (--r->open_handles == 0 && r->on_closed) r->on_closed(r);
}

void ready_close(gw_ready *r, void (*on_closed)(gw_ready *r)) {
    while (r->head) ready_cancel(r, r->head);
    r->on_closed = on_closed;
    r->open_handles = 2;
    uv_close((uv_handle_t *)&r->check, on_handle_closed);
    uv_close((uv_handle_t *)&r->idle, on_handle_closed);
}
