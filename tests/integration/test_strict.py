"""Strict HTTP/1.1 parsing against the running binary, over raw sockets: what RFC 9112 and RFC 9110
say a recipient MUST reject gets 400 (431 over the head limit, 501 for an unknown transfer coding)
and the connection is closed, as soon as the violation is known; nothing smuggled behind it is
served. The tolerated forms still work."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DEMO_AUTH_HEADER  # noqa: E402

HELLO = b'{"hello":"world"}'
ECHO = b"POST /demo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: " + DEMO_AUTH_HEADER.encode() + b"\r\n"
CHUNKED = ECHO + b"Transfer-Encoding: chunked\r\n\r\n"
SMUGGLED = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: smuggled\r\n\r\n"

# name -> bytes: each must be answered 400 and closed. Each is followed on the wire by a second,
# well-formed request that must never be answered.
REFUSED = {
    # obs-fold: llhttp 8.1.0 folds the line into Host, hiding a Content-Length (CVE-2024-27982)
    "obs-fold hiding Content-Length": b"GET /hello HTTP/1.1\r\nHost: x\r\n Content-Length: 5\r\n\r\nhello",
    "obs-fold with a tab": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    "whitespace after the start line": b"GET /hello HTTP/1.1\r\n Host: x\r\n\r\n",
    # bare CR: llhttp 8.1.0 takes "\r\n\r" + any byte as the end of the head (CVE-2025-23167)
    "bare CR ending the head": b"GET /hello HTTP/1.1\r\nHost: x\r\n\rX",
    "bare CR in a value": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "bare CR after an empty value": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A:\rContent-Length: 5\r\n\r\nhello",
    "bare CR after the start line": b"GET /hello HTTP/1.1\rHost: x\r\n\r\n",
    "space before the colon": b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "tab before the colon": b"GET /hello HTTP/1.1\r\nHost\t: x\r\n\r\n",
    "non-token name": b"GET /hello HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
    "non-ASCII name": b"GET /hello HTTP/1.1\r\nHost: x\r\nX\xc3\xa9: b\r\n\r\n",
    "empty name": b"GET /hello HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n",
    "NUL in a value": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "control character in a value": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n",
    "DEL in a value": b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    # bare LF: RFC 9112 2.2 makes it a MAY; llhttp refuses it in fields, luagate everywhere
    "bare LF after the request line": b"GET /hello HTTP/1.1\nHost: x\r\n\r\n",
    "bare LF after a field": b"GET /hello HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "bare LF ending the head": b"GET /hello HTTP/1.1\r\nHost: x\r\n\n",
    "HTTP/2's preface method": b"PRI * HTTP/1.1\r\nHost: x\r\n\r\n",
    "two spaces in the request line": b"GET  /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "control character in the target": b"GET /hel\x01lo HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length and Transfer-Encoding": ECHO + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding and Content-Length": ECHO + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "differing Content-Length": ECHO + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "repeated Content-Length": ECHO + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "Content-Length list": ECHO + b"Content-Length: 5, 5\r\n\r\nhello",
    "signed Content-Length": ECHO + b"Content-Length: +5\r\n\r\nhello",
    "overflowing Content-Length": ECHO + b"Content-Length: 18446744073709551621\r\n\r\nhello",
    "chunked not last": ECHO + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "chunked twice": ECHO + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "coding without chunked": ECHO + b"Transfer-Encoding: gzip\r\n\r\n",
    "chunked with a parameter": ECHO + b"Transfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n",
    "chunked in HTTP/1.0": (b"POST /demo/echo HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: "
                            + DEMO_AUTH_HEADER.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    "invalid chunk size": CHUNKED + b"z\r\nhello\r\n0\r\n\r\n",
    "negative chunk size": CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",
    "overflowing chunk size": CHUNKED + b"1000000000000000a\r\nhello\r\n0\r\n\r\n",
    "space after the chunk size": CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
    "bare LF after the chunk size": CHUNKED + b"5\nhello\r\n0\r\n\r\n",
    "bare LF after chunk data": CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    "chunk data longer than its size": CHUNKED + b"5\r\nhello!\r\n0\r\n\r\n",
    "LF in a quoted chunk extension": CHUNKED + b'5;a="x\nb"\r\nhello\r\n0\r\n\r\n',
    "malformed chunk extension": CHUNKED + b"5;=x\r\nhello\r\n0\r\n\r\n",
    "obs-fold in a trailer": CHUNKED + b"5\r\nhello\r\n0\r\nT: a\r\n b\r\n\r\n",
    "bare CR ending the trailers": CHUNKED + b"5\r\nhello\r\n0\r\nT: a\r\n\rX",
    "no Host in HTTP/1.1": b"GET /hello HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two Hosts": b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two Hosts in HTTP/1.0": b"GET /hello HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
    "invalid Host": b"GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n",
    "Host with a path": b"GET /hello HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "CONNECT with content": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello",
}


@harness.require_binary
class StrictTest(harness.GatewayTestCase):
    GATEWAY_ARGS = {"settings": {"read_timeout": 5}}

    def assert_refused(self, data, status=400, name=""):
        with self.gw.connect(timeout=3) as c:
            c.send(data + SMUGGLED)
            r = c.read_response()
            self.assertEqual(r.status, status, "%s: %r" % (name, r))
            self.assertEqual(r.header("Connection"), "close", name)
            self.assertEqual(r.json()["request_id"], r.header("X-Request-Id"))
            self.assertTrue(c.is_closed_by_peer(3), "%s: the connection is closed after %d" % (name, status))
        return r

    def test_refused(self):
        for name, data in REFUSED.items():
            with self.subTest(name):
                self.assert_refused(data, name=name)
        self.assertNotIn("smuggled", self.gw.log())
        self.assertEqual(self.gw.request("GET", "/hello")[0], 200)

    def test_refused_byte_by_byte(self):
        # The same verdicts when every byte arrives in a packet of its own.
        for name in ("obs-fold hiding Content-Length", "bare CR ending the head", "chunked in HTTP/1.0",
                     "bare LF after chunk data", "Content-Length and Transfer-Encoding"):
            with self.subTest(name), self.gw.connect(timeout=5) as c:
                for b in REFUSED[name]:
                    try:
                        c.send(bytes([b]))
                    except OSError:
                        break  # refused before the end: the gateway has closed
                r = c.read_response()
                self.assertEqual(r.status, 400, name)
                self.assertTrue(c.is_closed_by_peer(3), name)

    def test_unknown_transfer_coding_501(self):
        self.assert_refused(ECHO + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501)

    def test_missing_host_is_refused_when_the_head_ends(self):
        # The body is announced but never sent: the answer cannot wait for it.
        with self.gw.connect(timeout=3) as c:
            t0 = time.monotonic()
            c.send(b"POST /demo/echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 400)
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertTrue(c.is_closed_by_peer(3))

    def test_chunked_http10_keepalive_does_not_stay_open(self):
        with self.gw.connect(timeout=3) as c:
            c.send(REFUSED["chunked in HTTP/1.0"])
            self.assertEqual(c.read_response().status, 400)
            self.assertTrue(c.is_closed_by_peer(2))

    # ---- tolerated forms

    def exchange(self, data, n=1):
        with self.gw.connect(timeout=5) as c:
            c.send(data)
            return c.read_responses(n)

    def test_whitespace_forms_are_tolerated(self):
        r, = self.exchange(b"GET /hello HTTP/1.1\r\nHost:x\r\nX-A:   b  \t\r\nX-B:\r\nX-C: \t\r\n\r\n")
        self.assertEqual((r.status, r.body), (200, HELLO))

    def test_empty_lines_before_a_request_are_skipped(self):
        r, = self.exchange(b"\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((r.status, r.body), (200, HELLO))

    def test_obs_text_in_values_is_tolerated(self):
        r, = self.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n")
        self.assertEqual(r.status, 200)

    def test_chunked_with_extensions_and_trailers(self):
        # One extension per chunk: llhttp 8.1.0 refuses a second one after a name=value, and a
        # quoted-pair (\") in a quoted value, both valid (fixed in llhttp 9.1).
        body = b'5;d="quoted ;"\r\nhello\r\n6;a=b\r\n world\r\n0;c\r\nX-T: t\r\n\r\n'
        r1, r2 = self.exchange(CHUNKED + body + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 2)
        self.assertEqual((r1.status, r1.json()["body"]), (200, "hello world"))
        self.assertEqual((r2.status, r2.body), (200, HELLO))

    def test_transfer_encoding_case_and_empty_elements(self):
        r, = self.exchange(ECHO + b"Transfer-Encoding: , Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual((r.status, r.json()["body"]), (200, "hello"))

    def test_pipelined_after_a_body(self):
        r1, r2 = self.exchange(ECHO + b"Content-Length: 5\r\n\r\nhello" + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 2)
        self.assertEqual((r1.status, r1.json()["body"], r2.status), (200, "hello", 200))


@harness.require_binary
class StrictLimitsTest(harness.GatewayTestCase):
    """Chunk extensions and trailers count against max_header_size, with the head."""
    GATEWAY_ARGS = {"settings": {"max_header_size": 1024}}

    def refused_431(self, data):
        with self.gw.connect(timeout=3) as c:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, 431, r)
            self.assertTrue(c.is_closed_by_peer(3))

    def test_long_chunk_extension_431(self):
        self.refused_431(CHUNKED + b"5;x=" + b"e" * 1100 + b"\r\nhello\r\n0\r\n\r\n")

    def test_many_chunk_extensions_431(self):
        self.refused_431(CHUNKED + b"".join(b"1;x=" + b"e" * 60 + b"\r\nh\r\n" for _ in range(20)) + b"0\r\n\r\n")

    def test_large_trailers_431(self):
        self.refused_431(CHUNKED + b"5\r\nhello\r\n0\r\n" + b"".join(b"T%d: %s\r\n" % (i, b"t" * 60) for i in range(20))
                         + b"\r\n")

    def test_extensions_within_the_limit(self):
        with self.gw.connect(timeout=3) as c:
            c.send(CHUNKED + b"5;x=" + b"e" * 200 + b"\r\nhello\r\n0\r\nT: t\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.status, r.json()["body"]), (200, "hello"))


if __name__ == "__main__":
    unittest.main()


PATH_ROUTES = r'''
local gw = require "luagate"
gw.use(function(req)
  if req.path:find("^/admin") and req.headers["x-key"] ~= "k" then return 403, { denied = req.path } end
end)
gw.get("/admin", function(req) return 200, { admin = true } end)
gw.get("/files/*rest", function(req) return 200, { rest = req.params.rest, path = req.path, target = req.target } end)
'''


@harness.require_binary
class PathTest(harness.GatewayTestCase):
    """req.path is decoded and normalised before routing and middleware (README: "Paths")."""
    GATEWAY_ARGS = {"extra_routes": {"zz_paths.lua": PATH_ROUTES}}

    def get(self, target, headers=b""):
        with self.gw.connect(timeout=3) as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            return c.read_response()

    def test_dot_segments_cannot_walk_around_a_rule(self):
        for target in (b"/files/%2e%2e/admin", b"/files/../admin", b"/files/%2E%2E/admin", b"//admin",
                       b"/admin/./", b"/admin/.", b"/./admin", b"/files/.%2e//admin", b"/x/y/../../admin"):
            r = self.get(target)
            self.assertEqual(r.status, 403, target)
            self.assertTrue(r.json()["denied"].startswith("/admin"), r.json())
        self.assertEqual(self.get(b"/files/../admin", b"X-Key: k\r\n").status, 200)

    def test_encoded_slash_and_climbing_above_the_root_are_400(self):
        for target in (b"/files/..%2Fadmin", b"/files/a%2fb", b"/..", b"/files/../../admin", b"/files/%2e%2e/%2e%2e/x",
                       b"/a%00", b"/a%zz", b"/a%u002e"):
            with self.gw.connect(timeout=3) as c:
                c.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                r = c.read_response()
                self.assertEqual(r.status, 400, target)
                self.assertTrue(c.is_closed_by_peer(3), target)

    def test_path_is_normalised_target_is_raw(self):
        r = self.get(b"/files/a/./b//c/%2e%2e/d?q=%2e")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"rest": "a/b/d", "path": "/files/a/b/d", "target": "/files/a/./b//c/%2e%2e/d?q=%2e"})
