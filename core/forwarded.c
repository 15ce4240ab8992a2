/* X-Forwarded-* for upstream calls: see forwarded.h. */
#include "forwarded.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int trusted_add(gw_trusted *t, const char *cidr) {
    gw_cidr net = {0};
    char ip[64];
    const char *slash = strchr(cidr, '/');
    size_t len = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (len == 0 || len >= sizeof ip) return -1;
    memcpy(ip, cidr, len);
    ip[len] = '\0';
    net.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(net.family, ip, net.addr) != 1) return -1;
    int max = net.family == AF_INET ? 32 : 128;
    net.bits = max;
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || bits < 0 || bits > max) return -1;
        net.bits = (int)bits;
    }
    gw_cidr *nets = realloc(t->nets, (t->n + 1) * sizeof *nets);
    if (!nets) return -1;
    t->nets = nets;
    t->nets[t->n++] = net;
    return 0;
}

void trusted_clear(gw_trusted *t) {
    free(t->nets);
    t->nets = NULL;
    t->n = 0;
}

static bool in_net(const gw_cidr *net, const uint8_t *addr) {
    int whole = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, addr, (size_t)whole)) return false;
    if (!rest) return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (net->addr[whole] & mask) == (addr[whole] & mask);
}

bool trusted_has(const gw_trusted *t, const char *ip, size_t len) {
    char text[64];
    if (t->n == 0 || len == 0 || len >= sizeof text) return false;
    memcpy(text, ip, len);
    text[len] = '\0';
    uint8_t addr[16];
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, text, addr) != 1) return false;
    /* A dual-stack listener names IPv4 clients "::ffff:a.b.c.d": they match IPv4 networks. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        family = AF_INET;
    }
    for (size_t i = 0; i < t->n; i++)
        if (t->nets[i].family == family && in_net(&t->nets[i], addr)) return true;
    return false;
}

static const gw_header *find_header(const gw_request *req, const char *name, size_t len) {
    for (size_t i = 0; i < req->nheaders; i++)
        if (req->headers[i].name_len == len && memcmp(req->headers[i].name, name, len) == 0) return &req->headers[i];
    return NULL;
}

void forwarded_of(const gw_request *req, const gw_trusted *trusted, gw_forwarded *out) {
    /* The server names a client "ip:port" (IPv6 without brackets): the address is up to the
     * last colon. */
    const char *colon = strrchr(req->remote, ':');
    *out = (gw_forwarded){.client = req->remote,
                          .client_len = colon ? (size_t)(colon - req->remote) : strlen(req->remote),
                          .proto = "http", .proto_len = 4};
    const gw_header *host = find_header(req, "host", 4);
    if (host) out->host = host->value, out->host_len = host->value_len;
    /* What a client says of itself is believed only from a proxy we trust. */
    const gw_header *xff = find_header(req, "x-forwarded-for", 15);
    const gw_header *xfp = find_header(req, "x-forwarded-proto", 17);
    const gw_header *xfh = find_header(req, "x-forwarded-host", 16);
    if (!(xff || xfp || xfh) || !trusted_has(trusted, out->client, out->client_len)) return;
    if (xff) out->prior = xff->value, out->prior_len = xff->value_len;
    if (xfp) out->proto = xfp->value, out->proto_len = xfp->value_len;
    if (xfh) out->host = xfh->value, out->host_len = xfh->value_len;
}
