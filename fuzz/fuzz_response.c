/* Upstream answers: the strict scanner in response mode (what the native HTTP/1.1 client runs over
 * an upstream's bytes), as a HEAD or a GET answer, fed whole and in pieces: the same verdict at the
 * same byte either way, and a message never ends past the bytes given.
 *
 * The native client's own response parser (core/fetch*, the lead's) plugs in here: run it on the
 * same pieces and check that it agrees with the scanner on where each response ends. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "http_strict.h"

typedef struct verdict {
    enum hs_step step;
    enum hs_error error;
    size_t at;
} verdict;

static verdict scan(const uint8_t *d, size_t len, bool head, size_t piece) {
    http_strict s;
    http_strict_init(&s, HS_RESPONSE, 1024);
    if (head) http_strict_expect_no_content(&s);
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece, used;
        enum hs_step st = http_strict_scan(&s, (const char *)d + off, n, &used);
        if (used > n) abort();
        if (st == HS_ERROR) {
            const char *why;
            return (verdict){st, http_strict_error(&s, &why), 0};
        }
        if (st == HS_DONE) return (verdict){st, HS_OK, off + used};
        off += n;
    }
    return (verdict){HS_MORE, http_strict_eof(&s), len};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool head = data[0] & 1;
    size_t piece = 1 + (data[0] >> 1);
    verdict whole = scan(data + 1, size - 1, head, size);
    verdict cut = scan(data + 1, size - 1, head, piece);
    if (whole.step != cut.step || whole.error != cut.error || whole.at != cut.at) abort();
    return 0;
}
