/* Building a gw_request from the bytes of a connection: llhttp's callbacks, the limits on a
 * request's head and body, and the split of the target into path and query. Internal to the
 * server: conn.c owns one per connection and feeds it what it reads. */
#ifndef LUAGATE_REQUEST_PARSER_H
#define LUAGATE_REQUEST_PARSER_H

#include <llhttp.h>
#include <stdbool.h>

#include "buf.h"
#include "http_strict.h"
#include "server.h"

/* What the parser needs of its connection while it parses. */
typedef struct request_parser_events {
    void (*on_begin)(void *owner); /* the first byte of a request: a read deadline starts */
} request_parser_events;

typedef struct request_parser {
    llhttp_t llhttp;
    http_strict strict; /* runs over the same bytes first: what llhttp 8 lets through, it refuses */
    gw_buf head;    /* URL, header names and values of the request being parsed */
    gw_buf spans;   /* where each header sits in head */
    gw_buf headers; /* gw_header[] for the app, built when the request is complete */
    gw_buf body;
    size_t url_len;
    int error_status; /* set by a callback that rejects the request */
    bool field_open;
    bool in_trailers; /* chunked trailer fields: not headers, never seen by the app */
    bool in_message;  /* between the first byte of a request and its end */
    bool head_done;   /* the head of the request in progress is complete */
    bool undecided;   /* a body chunked or over max_body_size, before the app chose how to take it */
    bool over_limit;  /* its Content-Length is over max_body_size */
    bool expect_continue; /* the client waits for "100 Continue" before sending the body */
    int64_t content_length; /* as the head said it; -1 for chunked */
    bool stream_body; /* the body is read in pieces: no max_body_size, consumed from body_off */
    size_t body_off;
    size_t body_charged; /* of the worker's budget, for the body taken whole (budget.h) */
    bool upgrade;     /* the request asked for Upgrade or CONNECT: nothing after it is HTTP */
    const gw_limits *limits;
    const request_parser_events *ev;
    void *owner;
} request_parser;

enum parse_outcome {
    PARSE_MORE,    /* all bytes taken, the request is not complete */
    PARSE_REQUEST, /* a request is complete: request_parser_build fills it */
    PARSE_HEAD,    /* (conn.c) a head is complete and its body is to come: built the same way */
    PARSE_FAILED,  /* the bytes are not an acceptable request: answer parse_status */
    PARSE_CLOSE,   /* bytes after an Upgrade request: not HTTP for us, close */
};

void request_parser_init(request_parser *p, const gw_limits *limits, const request_parser_events *ev, void *owner);
void request_parser_free(request_parser *p);
/* Feed bytes; *used: how many were taken (up to the end of a complete request). */
enum parse_outcome request_parser_execute(request_parser *p, const char *data, size_t len, size_t *used);
/* After PARSE_FAILED: the status to answer (400, 413, 431, 500, 501, 503) and a short reason. */
int request_parser_status(const request_parser *p, const char **message);
/* After PARSE_REQUEST, or once head_done for a body still arriving: fill req (pointers into the
 * parser's buffers, valid until the next request begins). id_out (65 bytes) gets the client's
 * X-Request-Id when it is sane, else "". Returns 0, or an HTTP status to fail with. */
int request_parser_build(request_parser *p, gw_request *req, char *id_out);
/* The head is complete and its body is still to come. */
bool request_parser_expects_body(const request_parser *rp);
/* The body cannot be buffered: its Content-Length, or what arrived of it, is over max_body_size. */
bool request_parser_body_too_large(const request_parser *rp);
/* Between requests: give back buffers a large request grew. */
void request_parser_trim(request_parser *p);

#endif
