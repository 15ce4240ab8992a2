/* Name resolution for the native client: uv_getaddrinfo in libuv's thread pool, never on the loop,
 * with a cache that keeps an answer for `ttl_ms` (getaddrinfo does not say a record's TTL: a fixed
 * validity, as nginx's `resolver valid=`). IP literals never leave the caller's stack. Lookups of a
 * name already being resolved wait for that one instead of starting another. */
#ifndef LUAGATE_DNS_H
#define LUAGATE_DNS_H

#include <stdbool.h>
#include <uv.h>

typedef struct gw_dns gw_dns;
typedef struct gw_dns_query gw_dns_query;

/* status 0 and an address (port set), or a negative libuv error. addr is valid during the call. */
typedef void (*gw_dns_cb)(gw_dns_query *q, int status, const struct sockaddr *addr, void *data);

int dns_new(gw_dns **out, uv_loop_t *loop, uint64_t ttl_ms);
/* An address for host:port at once when it is a literal or cached: 0 and *out filled; else
 * UV_EAGAIN: call dns_resolve. */
int dns_lookup(gw_dns *d, const char *host, int port, struct sockaddr_storage *out);
/* Resolve in the thread pool; cb runs from the loop. NULL when out of memory. */
gw_dns_query *dns_resolve(gw_dns *d, const char *host, int port, gw_dns_cb cb, void *data);
/* The query's callback will not run. */
void dns_cancel(gw_dns_query *q);
/* Free the cache; lookups still running finish in the thread pool and are dropped. */
void dns_close(gw_dns *d);

#endif
