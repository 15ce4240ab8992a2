/* Header rules: see http_headers.h. */
#include "http_headers.h"

#include <string.h>
#include <strings.h>

bool header_hop_by_hop(const char *name, size_t len) {
    /* Found by length first: this runs for every header passed on. */
    switch (len) {
    case 2: return strncasecmp(name, "te", 2) == 0;
    case 7: return strncasecmp(name, "upgrade", 7) == 0 || strncasecmp(name, "trailer", 7) == 0;
    case 10: return strncasecmp(name, "connection", 10) == 0 || strncasecmp(name, "keep-alive", 10) == 0;
    case 17: return strncasecmp(name, "transfer-encoding", 17) == 0;
    default: return len > 6 && strncasecmp(name, "proxy-", 6) == 0;
    }
}

bool header_list_has(const char *list, size_t list_len, const char *name, size_t len) {
    const char *p = list, *end = list + list_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') p++;
        if ((size_t)(p - tok) == len && strncasecmp(tok, name, len) == 0) return true;
        while (p < end && *p != ',') p++;
    }
    return false;
}

size_t header_line_name(const char *line) {
    const char *colon = strchr(line, ':');
    return colon ? (size_t)(colon - line) : 0;
}
