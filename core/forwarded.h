/* Who a call is made for: X-Forwarded-For, -Proto and -Host for an upstream, from the client's
 * request and the proxies trusted to say who their own client was (trusted_proxies). */
#ifndef LUAGATE_FORWARDED_H
#define LUAGATE_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch.h"
#include "server.h"

typedef struct gw_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
} gw_cidr;

typedef struct gw_trusted {
    gw_cidr *nets;
    size_t n;
} gw_trusted;

/* Add "1.2.3.4", "10.0.0.0/8", "::1" or "fd00::/8". 0, or -1 when it is not one of these (or no
 * memory is left). */
int trusted_add(gw_trusted *t, const char *cidr);
void trusted_clear(gw_trusted *t);
/* Whether ip (an address as text, as the server names a client) is in one of the networks. */
bool trusted_has(const gw_trusted *t, const char *ip, size_t len);

/* What to tell an upstream of req's client: pointers into req, valid while it is. */
void forwarded_of(const gw_request *req, const gw_trusted *trusted, gw_forwarded *out);

#endif
