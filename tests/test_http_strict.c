/* Unit tests of the strict scanner (core/http_strict.c): every case is fed whole, byte by byte and
 * in every split in two, and must give the same verdict at the same byte each time. */
#include <stdio.h>
#include <string.h>

#include "http_strict.h"

static int failures, checks;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

typedef struct verdict {
    enum hs_step step; /* HS_DONE: a message ended; HS_ERROR: refused; HS_MORE: incomplete */
    enum hs_error error;
    size_t at; /* HS_DONE: bytes of the first message */
} verdict;

/* Scan msg in pieces cut at the offsets in cuts (ascending, 0-terminated list). Stops at the end
 * of the first message. */
static verdict scan_pieces(enum hs_kind kind, bool head, size_t max, const char *msg, size_t len, const size_t *cuts) {
    http_strict s;
    http_strict_init(&s, kind, max);
    if (head) http_strict_expect_no_content(&s);
    size_t off = 0;
    for (size_t k = 0;; k++) {
        size_t end = cuts[k] && cuts[k] < len ? cuts[k] : len;
        size_t used;
        enum hs_step st = http_strict_scan(&s, msg + off, end - off, &used);
        if (st == HS_ERROR) {
            const char *why;
            return (verdict){HS_ERROR, http_strict_error(&s, &why), 0};
        }
        if (st == HS_DONE) return (verdict){HS_DONE, HS_OK, off + used};
        off = end;
        if (end == len) return (verdict){HS_MORE, HS_OK, len};
    }
}

static verdict scan_all_ways(int line, enum hs_kind kind, bool head, size_t max, const char *msg) {
    size_t len = strlen(msg);
    size_t none[] = {0};
    verdict v = scan_pieces(kind, head, max, msg, len, none);
    size_t cuts[4096];
    size_t n = 0;
    for (size_t i = 1; i < len && n + 1 < sizeof cuts / sizeof cuts[0]; i++) cuts[n++] = i;
    cuts[n] = 0;
    verdict b = scan_pieces(kind, head, max, msg, len, cuts);
    CHECK(b.step == v.step && b.error == v.error && b.at == v.at, "line %d: byte by byte differs", line);
    for (size_t i = 1; i < len; i++) {
        size_t two[] = {i, 0};
        verdict t = scan_pieces(kind, head, max, msg, len, two);
        CHECK(t.step == v.step && t.error == v.error && t.at == v.at, "line %d: split at %zu differs", line, i);
    }
    return v;
}

#define REQ(msg) scan_all_ways(__LINE__, HS_REQUEST, false, 1024, (msg))

static void expect_done(int line, verdict v, size_t at) {
    CHECK(v.step == HS_DONE && v.at == at, "line %d: want done at %zu, got step %d error %d at %zu", line, at,
          v.step, v.error, v.at);
}

static void expect_error(int line, verdict v, enum hs_error e) {
    CHECK(v.step == HS_ERROR && v.error == e, "line %d: want error %d, got step %d error %d", line, e, v.step, v.error);
}

#define DONE_AT(msg, at) expect_done(__LINE__, REQ(msg), (at))
#define DONE_WHOLE(msg) expect_done(__LINE__, REQ(msg), strlen(msg))
#define REFUSED(msg, e) expect_error(__LINE__, REQ(msg), (e))

static void test_tolerated(void) {
    DONE_WHOLE("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    DONE_WHOLE("GET / HTTP/1.0\r\n\r\n");                       /* no Host in 1.0 */
    DONE_WHOLE("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");   /* empty lines before: skipped */
    DONE_WHOLE("GET / HTTP/1.1\r\nHost:x\r\nA:\r\nB: \t v \t\r\n\r\n"); /* OWS, empty values */
    DONE_WHOLE("GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n"); /* obs-text */
    DONE_WHOLE("GET /p?q=1#f HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    DONE_WHOLE("GET / HTTP/1.1\r\nHost:\r\n\r\n");               /* empty Host is valid */
    DONE_WHOLE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    DONE_WHOLE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    DONE_WHOLE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5;a=b;c;d=\"q \\\" ;\"\r\nhello\r\n0\r\nT: v\r\n\r\n");
    DONE_WHOLE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , Chunked ,\r\n\r\n0\r\n\r\n");
    DONE_WHOLE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000a\r\n0123456789\r\n0\r\n\r\n");
    /* pipelined: the first message ends where it ends */
    DONE_AT("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 28);
    DONE_AT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET", 49);
}

static void test_refused(void) {
    /* obs-fold: here it would hide a Content-Length inside Host (CVE-2024-27982's pattern) */
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n Content-Length: 5\r\n\r\nhello", HS_OBS_FOLD);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", HS_OBS_FOLD);
    REFUSED("GET / HTTP/1.1\r\n Host: x\r\n\r\n", HS_OBS_FOLD); /* whitespace after the start line */
    /* bare CR: as the end of the head (CVE-2025-23167's pattern), in a value, after the start line */
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n\rGET /smuggled HTTP/1.1\r\n\r\n", HS_BARE_CR);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n", HS_BARE_CR);
    REFUSED("GET / HTTP/1.1\rHost: x\r\n\r\n", HS_BARE_CR);
    REFUSED("\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", HS_BARE_CR);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nFoo:\rContent-Length: 1\r\n\r\n", HS_BARE_CR);
    /* bare LF: refused everywhere (see http_strict.c) */
    REFUSED("GET / HTTP/1.1\nHost: x\r\n\r\n", HS_BARE_LF);
    REFUSED("GET / HTTP/1.1\r\nHost: x\n\r\n", HS_BARE_LF);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n\n", HS_BARE_LF);
    REFUSED("\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", HS_BARE_LF);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nNoColon\n\r\n", HS_BARE_LF);
    /* field names */
    REFUSED("GET / HTTP/1.1\r\nHost : x\r\n\r\n", HS_SPACE_BEFORE_COLON);
    REFUSED("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", HS_SPACE_BEFORE_COLON);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nA(b): c\r\n\r\n", HS_BAD_FIELD_NAME);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n: c\r\n\r\n", HS_BAD_FIELD_NAME);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n", HS_SPACE_BEFORE_COLON);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nNocolon\r\n\r\n", HS_BAD_FIELD_NAME);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nA\xc3\xa9: c\r\n\r\n", HS_BAD_FIELD_NAME);
    /* field values: control characters but HTAB */
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nA: b\x01\r\n\r\n", HS_BAD_FIELD_VALUE);
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nA: b\x7f\r\n\r\n", HS_BAD_FIELD_VALUE);
    /* start line */
    REFUSED("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("GET / http/1.1\r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("GET / HTTP/2.0\r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("GET /\r\n\r\n", HS_BAD_START_LINE);
    REFUSED("PRI * HTTP/1.1\r\nHost: x\r\n\r\n", HS_BAD_START_LINE); /* HTTP/2's preface, not a request */
    DONE_WHOLE("PRIX * HTTP/1.1\r\nHost: x\r\n\r\n");
    DONE_WHOLE("CONNECTX a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 1\r\n\r\nx");
    /* Host */
    REFUSED("GET / HTTP/1.1\r\n\r\n", HS_NO_HOST);
    REFUSED("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HS_REPEATED_HOST);
    REFUSED("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", HS_REPEATED_HOST);
    REFUSED("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", HS_BAD_HOST);
    REFUSED("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", HS_BAD_HOST);
    REFUSED("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", HS_BAD_HOST);
    /* framing */
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", HS_LENGTH_AND_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", HS_LENGTH_AND_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", HS_BAD_CONTENT_LENGTH);
    REFUSED("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n", HS_BAD_TRANSFER_ENCODING);
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HS_UNKNOWN_TRANSFER_CODING);
    REFUSED("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 1\r\n\r\nx", HS_CONNECT_BODY);
    /* chunks */
    const char *te = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const struct { const char *body; enum hs_error e; } chunks[] = {
        {"5 \r\nhello\r\n0\r\n\r\n", HS_BAD_CHUNK_SIZE},
        {"5;a=b \r\nhello\r\n0\r\n\r\n", HS_BAD_CHUNK_EXT},
        {"5 ;a=b\r\nhello\r\n0\r\n\r\n", HS_BAD_CHUNK_SIZE},
        {"x\r\n", HS_BAD_CHUNK_SIZE},
        {"\r\n", HS_BAD_CHUNK_SIZE},
        {"-1\r\n", HS_BAD_CHUNK_SIZE},
        {"0x5\r\n", HS_BAD_CHUNK_SIZE},
        {"10000000000000000\r\n", HS_BAD_CHUNK_SIZE}, /* 17 digits: over 64 bits */
        {"00000000000000001\r\n", HS_BAD_CHUNK_SIZE}, /* 17 digits even with zeros */
        {"5\nhello\r\n", HS_BARE_LF},
        {"5\rhello\r\n", HS_BARE_CR},
        {"5\r\nhello\n0\r\n\r\n", HS_BAD_CHUNK_END},
        {"5\r\nhelloX\r\n", HS_BAD_CHUNK_END},
        {"5\r\nhello\r0\r\n\r\n", HS_BARE_CR},
        {"5;\r\nhello\r\n", HS_BAD_CHUNK_EXT},
        {"5;a=\r\nhello\r\n", HS_BAD_CHUNK_EXT},
        {"5;a=\"b\r\nhello\r\n", HS_BAD_CHUNK_EXT},     /* CR inside a quoted string */
        {"5;a=\"b\nX\"\r\nhello\r\n", HS_BAD_CHUNK_EXT}, /* LF inside a quoted string */
        {"5;a=\"b\"c\r\nhello\r\n", HS_BAD_CHUNK_EXT},
        {"5;a\nhello\r\n", HS_BARE_LF},
        {"5;a=b\nhello\r\n", HS_BARE_LF},
        {"0\r\n Folded: t\r\n\r\n", HS_OBS_FOLD},      /* trailers: the rules of fields */
        {"0\r\nT : t\r\n\r\n", HS_SPACE_BEFORE_COLON},
        {"0\r\nT: \x01\r\n\r\n", HS_BAD_FIELD_VALUE},
        {"0\r\nT: v\r\n\rX", HS_BARE_CR},
    };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s%s", te, chunks[i].body);
        verdict v = scan_all_ways(__LINE__, HS_REQUEST, false, 1024, msg);
        CHECK(v.step == HS_ERROR && v.error == chunks[i].e, "chunk case %zu (%s): step %d error %d", i,
              chunks[i].body, v.step, v.error);
    }
}

/* NUL cannot go through strlen: fed with explicit lengths. */
static void test_nul(void) {
    static const char msg[] = "GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n";
    size_t none[] = {0};
    verdict v = scan_pieces(HS_REQUEST, false, 1024, msg, sizeof msg - 1, none);
    CHECK(v.step == HS_ERROR && v.error == HS_BAD_FIELD_VALUE, "NUL in a value: step %d error %d", v.step, v.error);
    static const char target[] = "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n";
    v = scan_pieces(HS_REQUEST, false, 1024, target, sizeof target - 1, none);
    CHECK(v.step == HS_ERROR && v.error == HS_BAD_START_LINE, "NUL in the target: step %d error %d", v.step, v.error);
}

/* The head limit covers the start line and fields, and then chunk extensions and trailers. */
static void test_limits(void) {
    char msg[2048];
    const char *head = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
    size_t n = strlen(head);
    memcpy(msg, head, n);
    memset(msg + n, 'a', 100);
    memcpy(msg + n + 100, "\r\n\r\n", 5);
    size_t whole = strlen(msg);
    expect_done(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, whole, msg), whole);
    expect_error(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, whole - 1, msg), HS_TOO_LARGE);

    const char *ext = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
    size_t head_len = strstr(ext, "\r\n\r\n") - ext + 4;
    expect_done(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, head_len + 50, ext), strlen(ext));
    expect_error(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, head_len + 20, ext), HS_TOO_LARGE);
    const char *trailers = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "0\r\nT: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    expect_error(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, head_len + 40, trailers), HS_TOO_LARGE);
    /* endless empty lines before a request are metered too */
    char crlf[600];
    for (int i = 0; i < 299; i++) memcpy(crlf + 2 * i, "\r\n", 2);
    crlf[598] = '\0';
    expect_error(__LINE__, scan_all_ways(__LINE__, HS_REQUEST, false, 256, crlf), HS_TOO_LARGE);
    /* the next message gets the whole budget again */
    char two[2048];
    snprintf(two, sizeof two, "%s%s", msg, msg);
    http_strict s;
    http_strict_init(&s, HS_REQUEST, whole);
    size_t used;
    CHECK(http_strict_scan(&s, two, strlen(two), &used) == HS_DONE && used == whole, "first of two");
    CHECK(http_strict_scan(&s, two + whole, strlen(two) - whole, &used) == HS_DONE && used == whole, "second of two");
}

static void test_responses(void) {
#define RESP(msg) scan_all_ways(__LINE__, HS_RESPONSE, false, 1024, (msg))
    expect_done(__LINE__, RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP"), 40);
    expect_done(__LINE__, RESP("HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok"), 46);
    expect_done(__LINE__, RESP("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), 25);
    const char *chunked = "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    expect_done(__LINE__, RESP(chunked), strlen(chunked));
    expect_done(__LINE__, scan_all_ways(__LINE__, HS_RESPONSE, true, 1024, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"), 38);
    verdict v = RESP("HTTP/1.1 200 OK\r\n\r\nuntil the close");
    CHECK(v.step == HS_MORE, "no length: content until the close");
    v = RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nuntil the close");
    CHECK(v.step == HS_MORE, "not ending in chunked: content until the close");
    expect_error(__LINE__, RESP("HTTP/1.1 2000 OK\r\n\r\n"), HS_BAD_START_LINE);
    expect_error(__LINE__, RESP("HTTP/1.1 20 OK\r\n\r\n"), HS_BAD_START_LINE);
    expect_error(__LINE__, RESP("HTTP/1.1 200 O\x01K\r\n\r\n"), HS_BAD_START_LINE);
    expect_error(__LINE__, RESP("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"), HS_OBS_FOLD);
    expect_error(__LINE__, RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 HS_LENGTH_AND_ENCODING);
    expect_error(__LINE__, RESP("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), HS_BAD_TRANSFER_ENCODING);
    expect_error(__LINE__, RESP("ICY 200 OK\r\n\r\n"), HS_BAD_START_LINE);

    http_strict s;
    http_strict_init(&s, HS_RESPONSE, 1024);
    size_t used;
    const char *r = "HTTP/1.1 404 Not Found\r\n\r\nbody";
    CHECK(http_strict_scan(&s, r, strlen(r), &used) == HS_MORE, "until close");
    CHECK(http_strict_status(&s) == 404, "status %d", http_strict_status(&s));
    CHECK(http_strict_eof(&s) == HS_OK, "a close ends content without length");
    http_strict_init(&s, HS_RESPONSE, 1024);
    r = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
    CHECK(http_strict_scan(&s, r, strlen(r), &used) == HS_MORE, "short body");
    CHECK(http_strict_eof(&s) == HS_TRUNCATED, "a close in the content cuts it short");
}

static void test_status_codes(void) {
    CHECK(http_strict_request_status(HS_TOO_LARGE) == 431, "431");
    CHECK(http_strict_request_status(HS_UNKNOWN_TRANSFER_CODING) == 501, "501");
    CHECK(http_strict_request_status(HS_OBS_FOLD) == 400, "400");
    http_strict s;
    http_strict_init(&s, HS_REQUEST, 64);
    size_t used;
    CHECK(http_strict_scan(&s, "GET / HTTP/1.1\r\nA : b", 21, &used) == HS_ERROR, "error");
    const char *why;
    CHECK(http_strict_error(&s, &why) == HS_SPACE_BEFORE_COLON && strstr(why, "colon"), "reason %s", why);
    CHECK(http_strict_scan(&s, "x", 1, &used) == HS_ERROR && used == 0, "stays failed");
}

int main(void) {
    test_tolerated();
    test_refused();
    test_nul();
    test_limits();
    test_responses();
    test_status_codes();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
