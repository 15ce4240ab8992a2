/* A request path as luagate routes it: percent-decoded and normalised, so that one resource has
 * one spelling and a rule on "/admin" cannot be passed with "/x/../admin", "/admin/./" or
 * "//admin". Pure: bytes in, bytes out. */
#ifndef LUAGATE_PATH_H
#define LUAGATE_PATH_H

#include <stddef.h>

enum path_error {
    PATH_OK,
    PATH_BAD_ESCAPE,    /* '%' not followed by two hex digits */
    PATH_NUL,           /* a NUL byte, raw or as %00 */
    PATH_ENCODED_SLASH, /* %2F: a slash that is not a separator (refused, see README.md) */
    PATH_ABOVE_ROOT,    /* more ".." segments than there are segments */
    PATH_NOT_ABSOLUTE,  /* neither "/..." nor "*" */
};

/* Decode %XX escapes in path[0..len), then resolve "." and ".." segments (RFC 3986 5.2.4) and
 * merge repeated slashes; a final "/", ".", or ".." keeps a trailing slash. out needs len + 1
 * bytes (the result is never longer) and gets a NUL-terminated path; *out_len its length. */
enum path_error path_normalize(const char *path, size_t len, char *out, size_t *out_len);
/* A short reason for a log line. */
const char *path_error_reason(enum path_error e);

#endif
