#include "dns.h"

#include <stdlib.h>
#include <string.h>

#define MAX_ADDRS 8
#define MAX_ENTRIES 1024
#define NEGATIVE_TTL_MS 1000 /* a failed name is asked again after this */

typedef struct dns_entry dns_entry;

struct gw_dns_query {
    gw_dns_query *next;
    dns_entry *entry;
    int port;
    gw_dns_cb cb;
    void *data;
};

struct dns_entry {
    dns_entry *next;
    gw_dns *dns;
    char *host;
    struct sockaddr_storage addrs[MAX_ADDRS];
    int naddrs;
    unsigned turn;    /* round robin over the addresses, one per new connection */
    int error;        /* the last lookup's failure, cached briefly */
    uint64_t expires; /* loop time */
    uv_getaddrinfo_t req;
    bool resolving;
    gw_dns_query *waiting;
};

struct gw_dns {
    uv_loop_t *loop;
    uint64_t ttl_ms;
    dns_entry *entries;
    size_t nentries;
    int resolving; /* lookups in the thread pool */
    bool closing;
};

int dns_new(gw_dns **out, uv_loop_t *loop, uint64_t ttl_ms) {
    gw_dns *d = calloc(1, sizeof *d);
    if (!d) return UV_ENOMEM;
    d->loop = loop;
    d->ttl_ms = ttl_ms;
    *out = d;
    return 0;
}

static void set_port(struct sockaddr_storage *sa, int port) {
    if (sa->ss_family == AF_INET6) ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

static dns_entry *find(gw_dns *d, const char *host) {
    for (dns_entry *e = d->entries; e; e = e->next)
        if (strcmp(e->host, host) == 0) return e;
    return NULL;
}

int dns_lookup(gw_dns *d, const char *host, int port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) return 0;
    dns_entry *e = find(d, host);
    if (!e || e->resolving || e->expires <= uv_now(d->loop)) return UV_EAGAIN;
    if (e->error) return e->error;
    *out = e->addrs[e->turn++ % (unsigned)e->naddrs];
    set_port(out, port);
    return 0;
}

static void entry_free(dns_entry *e) {
    free(e->host);
    free(e);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    dns_entry *e = req->data;
    gw_dns *d = e->dns;
    e->resolving = false;
    d->resolving--;
    e->naddrs = 0;
    for (struct addrinfo *a = res; a && e->naddrs < MAX_ADDRS; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
        memcpy(&e->addrs[e->naddrs++], a->ai_addr, a->ai_addrlen);
    }
    uv_freeaddrinfo(res);
    e->error = status < 0 ? status : (e->naddrs ? 0 : UV_EAI_NONAME);
    e->expires = uv_now(d->loop) + (e->error ? NEGATIVE_TTL_MS : d->ttl_ms);
    /* The waiters may look the name up again (a retry): take the list first. */
    gw_dns_query *q = e->waiting;
    e->waiting = NULL;
    while (q) {
        gw_dns_query *next = q->next;
        struct sockaddr_storage sa;
        if (!e->error) {
            sa = e->addrs[e->turn++ % (unsigned)e->naddrs];
            set_port(&sa, q->port);
        }
        q->cb(q, e->error, e->error ? NULL : (struct sockaddr *)&sa, q->data);
        free(q);
        q = next;
    }
    if (d->closing && d->resolving == 0) dns_close(d);
}

/* An entry to resolve into: the name's own, or a new one (dropping expired ones when full). */
static dns_entry *entry_for(gw_dns *d, const char *host) {
    dns_entry *e = find(d, host);
    if (e) return e;
    if (d->nentries >= MAX_ENTRIES) {
        uint64_t now = uv_now(d->loop);
        for (dns_entry **pp = &d->entries; *pp;) {
            dns_entry *x = *pp;
            if (!x->resolving && x->expires <= now) {
                *pp = x->next;
                entry_free(x);
                d->nentries--;
            } else {
                pp = &x->next;
            }
        }
        if (d->nentries >= MAX_ENTRIES) return NULL;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->host = strdup(host))) {
        free(e);
        return NULL;
    }
    e->dns = d;
    e->next = d->entries;
    d->entries = e;
    d->nentries++;
    return e;
}

gw_dns_query *dns_resolve(gw_dns *d, const char *host, int port, gw_dns_cb cb, void *data) {
    dns_entry *e = entry_for(d, host);
    gw_dns_query *q = e ? calloc(1, sizeof *q) : NULL;
    if (!q) return NULL;
    *q = (gw_dns_query){.entry = e, .port = port, .cb = cb, .data = data, .next = e->waiting};
    e->waiting = q;
    if (e->resolving) return q;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    e->req.data = e;
    if (uv_getaddrinfo(d->loop, &e->req, on_resolved, host, NULL, &hints) < 0) {
        e->waiting = q->next;
        free(q);
        return NULL;
    }
    e->resolving = true;
    d->resolving++;
    return q;
}

void dns_cancel(gw_dns_query *q) {
    dns_entry *e = q->entry;
    for (gw_dns_query **pp = &e->waiting; *pp; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            free(q);
            return;
        }
    }
}

void dns_close(gw_dns *d) {
    d->closing = true;
    if (d->resolving > 0) return; /* on_resolved calls again when the last lookup is back */
    while (d->entries) {
        dns_entry *e = d->entries;
        d->entries = e->next;
        while (e->waiting) {
            gw_dns_query *q = e->waiting;
            e->waiting = q->next;
            free(q);
        }
        entry_free(e);
    }
    free(d);
}
