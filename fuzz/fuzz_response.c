/* Upstream answers: the native client's response parser (llhttp behind the strict scanner, as
 * http_client.c runs it), as a HEAD or a GET answer, fed whole and in pieces: the same verdict at
 * the same byte, and unless refused the same head block and body either way; a message never ends
 * past the bytes given; and whatever the bytes, the head it hands over starts with a status line. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "response_parser.h"

typedef struct outcome {
    enum rp_outcome o;
    size_t at;
    uint32_t head_hash, body_hash;
    size_t body_len;
    int status;
} outcome;

static uint32_t mix(uint32_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static int on_head(void *owner, response_parser *p) {
    outcome *out = owner;
    if (p->head.len < 13 || memcmp(p->head.data, "HTTP/1.", 7) != 0) abort();
    out->head_hash = mix(2166136261u, p->head.data, p->head.len);
    out->status = p->status;
    return 0;
}

static int on_body(void *owner, const char *at, size_t len) {
    outcome *out = owner;
    out->body_hash = mix(out->body_hash, at, len);
    out->body_len += len;
    return 0;
}

static const response_parser_events events = {on_head, on_body};

static outcome parse(const uint8_t *d, size_t len, bool head, size_t piece) {
    outcome out = {.body_hash = 2166136261u};
    response_parser p;
    response_parser_init(&p, &events, &out, 1024);
    response_parser_start(&p, head);
    size_t off = 0;
    out.o = RP_MORE;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece, used = 0;
        out.o = response_parser_execute(&p, (const char *)d + off, n, &used);
        if (used > n) abort();
        if (out.o != RP_MORE) {
            out.at = out.o == RP_DONE ? off + used : 0;
            break;
        }
        off += n;
    }
    if (out.o == RP_MORE) out.o = response_parser_eof(&p) == RP_DONE ? RP_DONE : RP_MORE, out.at = len;
    response_parser_free(&p);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool head = data[0] & 1;
    size_t piece = 1 + (data[0] >> 1);
    outcome whole = parse(data + 1, size - 1, head, size);
    outcome cut = parse(data + 1, size - 1, head, piece);
    if (whole.o != cut.o || whole.at != cut.at) abort();
    /* A refusal may come before or after the head was handed over: the scanner looks at all the
     * bytes it is given before llhttp parses them, so a whole message is refused sooner. */
    if (whole.o != RP_ERROR && (whole.head_hash != cut.head_hash || whole.body_hash != cut.body_hash ||
                                whole.body_len != cut.body_len || whole.status != cut.status))
        abort();
    if (whole.o == RP_DONE && whole.at > size - 1) abort();
    return 0;
}
