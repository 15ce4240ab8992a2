/* An upstream's answer from its bytes: llhttp in response mode, run behind the strict scanner
 * (http_strict.c) over the same bytes, so that what llhttp 8 lets through (obs-fold, bare CR,
 * invalid framing) is refused and both must agree on where each message ends. 1xx answers are
 * skipped; the final head is kept as one block, "HTTP/1.x NNN reason\r\n" then "Name: value\r\n"
 * lines (trailers never join it). Internal to the native client (http_client.c), which owns one
 * per connection; fuzzed on its own (fuzz/fuzz_response.c). */
#ifndef LUAGATE_RESPONSE_PARSER_H
#define LUAGATE_RESPONSE_PARSER_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "http_strict.h"

typedef struct response_parser response_parser;

typedef struct response_parser_events {
    /* The final head is complete (read it from the parser): 0 to go on, -1 to stop parsing. */
    int (*on_head)(void *owner, response_parser *p);
    /* Bytes of the body: 0 to go on, -1 to stop parsing. */
    int (*on_body)(void *owner, const char *at, size_t len);
} response_parser_events;

struct response_parser {
    llhttp_t llhttp;
    http_strict strict;
    const response_parser_events *ev;
    void *owner;
    /* The final head, once on_head runs: */
    gw_buf head;
    int status;
    int http_minor;
    int64_t content_length; /* -1: none said */
    size_t ctype_off, ctype_len;         /* Content-Type's value in head (len 0: none) */
    size_t keepalive_off, keepalive_len; /* Keep-Alive's value in head (len 0: none) */
    /* Where the parse is: */
    size_t name_off, value_off;
    bool line_done, in_name, field_open, in_ctype, in_keepalive;
    bool no_content;    /* the request was HEAD */
    bool head_done;     /* the final head was handed over */
    bool interim_ended; /* a 1xx message just ended */
    bool complete;
    bool stopped;       /* an event said stop */
    const char *error;  /* after RP_ERROR */
};

enum rp_outcome {
    RP_MORE,    /* every byte taken, the answer goes on */
    RP_DONE,    /* the answer is complete after *used bytes */
    RP_ERROR,   /* not a valid answer: p->error says why */
    RP_STOPPED, /* an event stopped the parse */
};

void response_parser_init(response_parser *p, const response_parser_events *ev, void *owner, size_t max_head);
void response_parser_free(response_parser *p);
/* Ready for the answer to a new request (head: it was HEAD, so no body comes whatever is said). */
void response_parser_start(response_parser *p, bool head);
enum rp_outcome response_parser_execute(response_parser *p, const char *data, size_t len, size_t *used);
/* The upstream closed: RP_DONE when that ends the answer's body, RP_STOPPED when an event stopped
 * the parse, else RP_MORE (the answer is cut short). */
enum rp_outcome response_parser_eof(response_parser *p);
/* After RP_DONE: whether the connection may carry another exchange, as far as the answer says. */
bool response_parser_keep_alive(const response_parser *p);

#endif
