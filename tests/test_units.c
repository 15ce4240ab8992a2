/* Unit tests for the pure C modules: buffers, the Date header, response heads. The I/O paths are
 * tested for real by the integration suite (tests/integration) against the running binary. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "buf.h"
#include "fds.h"
#include "http_date.h"
#include "metrics_agg.h"
#include "response.h"
#include "trace.h"
#include <unistd.h>

#include "check.h"

static void test_buf(void) {
    gw_buf b = {0};
    CHECK(buf_append_str(&b, "hello") == 0);
    CHECK(buf_append(&b, ", world", 7) == 0);
    CHECK(b.len == 12 && memcmp(b.data, "hello, world", 12) == 0);
    for (int i = 0; i < 1000; i++) CHECK(buf_append(&b, "0123456789", 10) == 0);
    CHECK(b.len == 10012 && b.cap >= b.len);
    buf_consume(&b, 12);
    CHECK(b.len == 10000 && memcmp(b.data, "0123456789", 10) == 0);
    buf_reset(&b, 64); /* grew past 64: released */
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    CHECK(buf_append_str(&b, "x") == 0);
    buf_reset(&b, 1 << 20); /* small: kept for reuse */
    CHECK(b.data != NULL && b.len == 0);
    buf_free(&b);
    CHECK(b.data == NULL);
}

static void test_http_date(void) {
    gw_http_date d = {0};
    http_date_update(&d, 784111777); /* RFC 9110's example instant */
    CHECK(strcmp(d.text, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
    CHECK(strlen(d.text) == HTTP_DATE_LEN);
    http_date_update(&d, 4102444799); /* the last second of 2099 */
    CHECK(strcmp(d.text, "Thu, 31 Dec 2099 23:59:59 GMT") == 0);
}

/* The head is not NUL-terminated: search only its own bytes. */
static int head_has(const gw_buf *b, const char *s) {
    return memmem(b->data, b->len, s, strlen(s)) != NULL;
}

static void test_response_head(void) {
    gw_buf out = {0};
    gw_header extra[] = {{"Set-Cookie", 10, "a=1", 3}, {"Set-Cookie", 10, "b=2", 3}};
    gw_response r = {.status = 201, .content_type = "application/json", .content_type_len = 16,
                     .body = "{}", .body_len = 2, .headers = extra, .nheaders = 2};
    CHECK(response_format_head(&out, &r, "Sun, 06 Nov 1994 08:49:37 GMT", "abc", true, 1) == 0);
    const char *want = "HTTP/1.1 201 Created\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                       "Content-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: abc\r\n"
                       "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    CHECK(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0);

    out.len = 0; /* closing an HTTP/1.1 connection says so; HTTP/1.0 keep-alive says so */
    gw_response plain = {.status = 404, .body = "", .body_len = 0};
    CHECK(response_format_head(&out, &plain, "D", NULL, false, 1) == 0);
    CHECK(head_has(&out, "Connection: close\r\n"));
    CHECK(head_has(&out, "Content-Length: 0\r\n"));
    out.len = 0;
    CHECK(response_format_head(&out, &plain, "D", NULL, true, 0) == 0);
    CHECK(memcmp(out.data, "HTTP/1.0 404 Not Found\r\n", 24) == 0);
    CHECK(head_has(&out, "Connection: keep-alive\r\n"));

    out.len = 0; /* 204 and 304 carry no Content-Length */
    gw_response none = {.status = 204};
    CHECK(response_format_head(&out, &none, "D", NULL, true, 1) == 0);
    CHECK(!head_has(&out, "Content-Length"));
    buf_free(&out);

    CHECK(strcmp(response_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(response_reason(299), "Unknown") == 0);
}

static void test_header_validation(void) {
    gw_header ok = {"X-Thing", 7, "a value; with=stuff", 19};
    gw_header crlf = {"X-Thing", 7, "a\r\nInjected: 1", 15};
    gw_header lf = {"X-Thing", 7, "a\nb", 3};
    gw_header nul = {"X-Thing", 7, "a\0b", 3};
    gw_header badname = {"X Thing", 7, "v", 1};
    gw_header colon = {"X:Thing", 7, "v", 1};
    gw_header empty = {"", 0, "v", 1};
    CHECK(!response_header_invalid(&ok));
    CHECK(response_header_invalid(&crlf));
    CHECK(response_header_invalid(&lf));
    CHECK(response_header_invalid(&nul));
    CHECK(response_header_invalid(&badname));
    CHECK(response_header_invalid(&colon));
    CHECK(response_header_invalid(&empty));
}

static void test_fds(void) {
    char list[64] = "";
    CHECK(fds_add(list, sizeof list, "listen", 3) == 0);
    CHECK(fds_add(list, sizeof list, "listen", 4) == 0);
    CHECK(fds_add(list, sizeof list, "ready", 5) == 0);
    CHECK(strcmp(list, "listen=3,listen=4,ready=5") == 0);
    char tiny[8] = "";
    CHECK(fds_add(tiny, sizeof tiny, "listen", 3) == -1);
    setenv(FDS_ENV, list, 1);
    int fds[4] = {0};
    CHECK(fds_get("listen", fds, 4) == 2 && fds[0] == 3 && fds[1] == 4);
    CHECK(fds_get("ready", fds, 4) == 1 && fds[0] == 5);
    CHECK(fds_get("listen", fds, 1) == 2 && fds[0] == 3); /* counts past max, stores max */
    CHECK(fds_get("upgrade", fds, 4) == 0);
    char **env = fds_env("ready=9");
    int found = 0;
    for (char **e = env; *e; e++) found += strncmp(*e, FDS_ENV "=", strlen(FDS_ENV) + 1) == 0;
    CHECK(found == 1);
    fds_env_free(env);
    setenv(FDS_ENV, "listen=x", 1);
    CHECK(fds_get("listen", fds, 4) == -1);
    setenv(FDS_ENV, "listen", 1);
    CHECK(fds_get("listen", fds, 4) == -1);
    fds_forget();
    CHECK(getenv(FDS_ENV) == NULL && fds_get("listen", fds, 4) == 0);
}

static void test_trace(void) {
    gw_trace t = {0};
    const char *ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    CHECK(trace_parse(&t, ok, strlen(ok)));
    CHECK(t.trace_hi == 0x0af7651916cd43ddULL && t.trace_lo == 0x8448eb211c80319cULL);
    CHECK(t.parent == 0xb7ad6b7169203331ULL && t.flags == 1);
    char out[TRACEPARENT_LEN + 1];
    trace_format(&t, 0xb7ad6b7169203331ULL, out);
    CHECK(strcmp(out, ok) == 0);
    const char *bad[] = {
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", /* upper case */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01", /* zero trace */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", /* zero parent */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", /* version ff */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", /* 00 with more */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",   /* short */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(!trace_parse(&t, bad[i], strlen(bad[i])));
    const char *later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more";
    CHECK(trace_parse(&t, later, strlen(later)) && t.flags == 0); /* a later version: read as 00 */
    trace_begin(&t, NULL, 0);
    CHECK((t.trace_hi | t.trace_lo) != 0 && t.span != 0 && t.parent == 0 && t.flags == 1);
    uint64_t vs[] = {0, 1, 0xdeadbeefcafef00dULL, UINT64_MAX, 0x0123456789abcdefULL};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        char hex[17] = {0}, want[17];
        trace_hex64(vs[i], hex);
        snprintf(want, sizeof want, "%016llx", (unsigned long long)vs[i]);
        CHECK(strcmp(hex, want) == 0);
    }
}

/* A combined line, escapes included, as a log parser reads it. */
static void test_access_log(void) {
    char path[] = "/tmp/luagate-unit-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(access_log_open(path, ACCESS_COMBINED) == 0);
    gw_header hs[] = {{"user-agent", 10, "a \"b\" \\ \x01\xe9", 10}, {"referer", 7, "http://r/", 9}};
    gw_request req = {.method = "GET", .target = "/x?q=\"1\"", .target_len = 8, .headers = hs, .nheaders = 2,
                      .id = "abc-1", .remote = "10.0.0.7:5555", .http_minor = 1};
    gw_request_end end = {.status = 502, .body_bytes = 17, .duration_ns = 1234567};
    access_call calls[] = {{.upstream = "api", .error = "connection refused", .us = 2000},
                           {.upstream = "b", .status = 200, .us = 999}};
    access_entry e = {.req = &req, .end = &end, .route = "/x", .trace_id = "0af7651916cd43dd8448eb211c80319c",
                      .calls = calls, .ncalls = 2, .reason = "upstream api: connection refused"};
    access_log_write(&e);
    access_log_close();
    char line[1024] = {0};
    FILE *f = fopen(path, "r");
    CHECK(f && fgets(line, sizeof line, f));
    if (f) fclose(f);
    unlink(path);
    const char *rest = strstr(line, "] ");
    CHECK(strncmp(line, "10.0.0.7 - - [", 14) == 0 && rest);
    CHECK(rest && strcmp(rest, "] \"GET /x?q=\\x221\\x22 HTTP/1.1\" 502 17 \"http://r/\" "
                               "\"a \\x22b\\x22 \\x5C \\x01\\xE9\" rt=0.001 id=abc-1 route=\"/x\" "
                               "up=\"api:connection refused:0.002,b:200:0.001\" trace=0af7651916cd43dd8448eb211c80319c "
                               "reason=\"upstream api: connection refused\"\n") == 0);
}

static void test_quantile(void) {
    uint64_t b[MS_BUCKETS] = {0};
    CHECK(agg_quantile_ms(b, 0.5) < 0);
    b[0] = 100; /* all under 1 ms */
    CHECK(agg_quantile_ms(b, 0.5) == 0.5 && agg_quantile_ms(b, 1) == 1);
    b[0] = 0, b[3] = 10; /* all in (5 ms, 10 ms] */
    CHECK(agg_quantile_ms(b, 0.5) == 7.5);
}

int main(void) {
    test_trace();
    test_access_log();
    test_quantile();
    test_buf();
    test_fds();
    test_http_date();
    test_response_head();
    test_header_validation();
    return check_summary();
}
