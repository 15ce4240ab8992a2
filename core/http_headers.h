/* Header rules shared by the server's answers and the upstream clients' requests. */
#ifndef LUAGATE_HTTP_HEADERS_H
#define LUAGATE_HTTP_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

/* A hop-by-hop header (RFC 9110 7.6.1): Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
 * Upgrade and Proxy-*. It belongs to one connection and is never passed on, either way. */
bool header_hop_by_hop(const char *name, size_t len);
/* Whether a comma-separated list (a Connection header's value) holds the token name, in any case:
 * a header a Connection header names is hop-by-hop too. */
bool header_list_has(const char *list, size_t list_len, const char *name, size_t len);
/* The name of a "Name: value" line: its length, or 0 when it has no colon. */
size_t header_line_name(const char *line);

#endif
