/* path_normalize (core/path.c) on its own, fast: the output is never longer than the input, is
 * absolute, has no empty, "." or ".." segment left, and normalising it again (when it holds no
 * '%', which a second decoding would change) gives it back. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *out = malloc(size + 1), *again = malloc(size + 1);
    if (!out || !again) abort();
    size_t n, m;
    if (path_normalize((const char *)data, size, out, &n) == PATH_OK) {
        if (n > size || out[n] != '\0') abort();
        if (!(n == 1 && out[0] == '*')) {
            if (out[0] != '/' || memmem(out, n, "//", 2) || memmem(out, n, "/./", 3) || memmem(out, n, "/../", 4)) abort();
            if ((n >= 2 && memcmp(out + n - 2, "/.", 2) == 0) || (n >= 3 && memcmp(out + n - 3, "/..", 3) == 0)) abort();
            if (memchr(out, '\0', n)) abort();
        }
        if (!memchr(out, '%', n)) {
            if (path_normalize(out, n, again, &m) != PATH_OK || m != n || memcmp(out, again, n) != 0) abort();
        }
    }
    free(out);
    free(again);
    return 0;
}
