"""HTTP/1.x protocol behaviour of the server, over raw sockets: keep-alive, pipelining, HTTP/1.0,
HEAD, request bodies, the errors the server makes itself (400, 404, 405, 413, 431) and timeouts."""
import datetime
import os
import re
import select
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DEMO_AUTH_HEADER, chunked, request_bytes  # noqa: E402

HELLO = b'{"hello":"world"}'
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def get(target, headers=None, **kw):
    return request_bytes("GET", target, headers, **kw)


class CommonAsserts:
    def assert_well_formed(self, r, body_len=None):
        """Date, Content-Length (matching the body) and X-Request-Id, each exactly once."""
        for name in ("Date", "Content-Length", "X-Request-Id"):
            self.assertEqual(len(r.headers_named(name)), 1, "%s once in %r" % (name, r))
        date = harness.parse_http_date(r.header("Date"))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - date).total_seconds()), 120, "Date is now: %r" % r.header("Date"))
        self.assertEqual(int(r.header("Content-Length")), len(r.body) if body_len is None else body_len)
        self.assertRegex(r.header("X-Request-Id"), r"^[A-Za-z0-9._:-]{1,64}$")

    def assert_json_error(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("Content-Type"), "application/json", r)
        doc = r.json()
        self.assertIn("error", doc)
        self.assertEqual(doc.get("request_id"), r.header("X-Request-Id"), r)
        self.assert_well_formed(r)


@harness.require_binary
class HttpTest(CommonAsserts, harness.GatewayTestCase):
    # ---- basics

    def test_get_hello(self):
        r = self.gw.raw(get("/hello"))
        self.assertEqual((r.version, r.status, r.reason), ("HTTP/1.1", 200, "OK"))
        self.assertEqual(r.body, HELLO)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(r.header("Content-Length"), "17")
        self.assertRegex(r.header("X-Request-Id"), HEX16)
        self.assertIsNone(r.header("Connection"), "keep-alive is the HTTP/1.1 default: no header")
        self.assert_well_formed(r)

    def test_query_string_and_encoded_path(self):
        for target in ("/hello?x=1&y=%20", "/hell%6F", "/hello?"):
            r = self.gw.raw(get(target))
            self.assertEqual((r.status, r.body), (200, HELLO), target)

    def test_absolute_form_target(self):
        # RFC 9112 3.2.2: a server MUST accept the absolute form.
        r = self.gw.raw(get("http://gateway.example/hello"))
        self.assertEqual((r.status, r.body), (200, HELLO))

    def test_generated_request_ids_are_unique(self):
        with self.gw.connect() as c:
            c.send(get("/hello") * 5)
            ids = [r.header("X-Request-Id") for r in c.read_responses(5)]
        for i in ids:
            self.assertRegex(i, HEX16)
        self.assertEqual(len(set(ids)), 5, ids)

    def test_client_request_id_is_echoed(self):
        r = self.gw.raw(get("/hello", {"X-Request-Id": "client-id_1.2:3"}))
        self.assertEqual(r.header("X-Request-Id"), "client-id_1.2:3")

    def test_client_request_id_uuid_is_echoed(self):
        # A UUID (36 characters of [0-9a-f-]) is the most common request id there is: sane.
        rid = "123e4567-e89b-12d3-a456-426614174000"
        r = self.gw.raw(get("/hello", {"X-Request-Id": rid}))
        self.assertEqual(r.header("X-Request-Id"), rid)

    def test_insane_client_request_id_is_replaced(self):
        for bad in ("<script>", "a b", "x" * 200, ""):
            r = self.gw.raw(get("/hello", {"X-Request-Id": bad}))
            self.assertEqual(r.status, 200)
            self.assertRegex(r.header("X-Request-Id"), HEX16, "replaced: %r" % bad)

    def test_unknown_path_404(self):
        r = self.gw.raw(get("/no/such/path"))
        self.assert_json_error(r, 404)

    def test_wrong_method_405(self):
        for method in ("POST", "DELETE", "PUT"):
            r = self.gw.raw(request_bytes(method, "/hello", {"Content-Length": "0"}))
            self.assert_json_error(r, 405)
            self.assertEqual(r.header("Allow"), "GET, HEAD")

    # ---- keep-alive and closing

    def test_keepalive_sequential_requests(self):
        with self.gw.connect() as c:
            for i in range(3):
                c.send(get("/hello"))
                r = c.read_response()
                self.assertEqual((r.status, r.body), (200, HELLO), "request %d" % i)
                self.assertNotEqual((r.header("Connection") or "").lower(), "close")
            self.assertEqual(c.buf, b"")

    def test_connection_close_request(self):
        with self.gw.connect() as c:
            c.send(get("/hello", {"Connection": "close"}))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, HELLO))
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(c.is_closed_by_peer(3), "server closes after Connection: close")

    def test_a_last_request_read_whole_frees_its_descriptor_with_the_answer(self):
        # Nothing more can come from a client that said Connection: close and sent all of its
        # request, so the gateway does not wait for its FIN (as nginx): a burst of one-request
        # clients holds no descriptor past its answers, even while the clients are slow to close.
        with self.gw.connect() as c:
            c.send(get("/hello", {"Connection": "close"}))
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.is_closed_by_peer(3))
            port = c.sock.getsockname()[1]
            # (within 1 s: a gateway waiting for the FIN would hold it for its 2 s linger)
            harness.wait_until(lambda: not self.gw.server_side_held(port), 1, 0.02,
                               "the gateway's end closed while the client's is still open")

    def test_input_after_the_last_request_is_lingered_over(self):
        # Bytes after a Connection: close request: closing at once with them unread would send a
        # reset, which can destroy the answer before the client reads it. The gateway lingers
        # until the client's FIN.
        with self.gw.connect() as c:
            c.send(get("/hello", {"Connection": "close"}) + get("/hello"))
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.is_closed_by_peer(3))
            port = c.sock.getsockname()[1]
            time.sleep(0.3)
            self.assertTrue(self.gw.server_side_held(port), "lingering for the client's FIN")
            c.sock.shutdown(socket.SHUT_WR)
            harness.wait_until(lambda: not self.gw.server_side_held(port), 2, 0.02, "closed on the client's FIN")

    def test_http10_closes_by_default(self):
        with self.gw.connect() as c:
            c.send(b"GET /hello HTTP/1.0\r\n\r\n")  # no Host: fine in HTTP/1.0
            r = c.read_response()
            self.assertEqual((r.version, r.status, r.body), ("HTTP/1.0", 200, HELLO))
            self.assertNotEqual((r.header("Connection") or "").lower(), "keep-alive")
            self.assert_well_formed(r)
            self.assertTrue(c.is_closed_by_peer(3), "HTTP/1.0 without keep-alive: closed")

    def test_http10_keepalive(self):
        with self.gw.connect() as c:
            c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.version, r.status, r.body), ("HTTP/1.0", 200, HELLO))
            self.assertEqual((r.header("Connection") or "").lower(), "keep-alive")
            c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.version, r.status), ("HTTP/1.0", 200))
            c.send(b"GET /hello HTTP/1.0\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.version, r.status), ("HTTP/1.0", 200))
            self.assertTrue(c.is_closed_by_peer(3))

    # ---- HEAD

    def test_head_has_headers_and_no_body(self):
        with self.gw.connect() as c:
            c.send(request_bytes("HEAD", "/hello", {"Connection": "close"}))
            data = c.read_until_closed(3)
        head, sep, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(sep, data)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertIn(b"\r\nContent-Length: 17", head)
        self.assertIn(b"\r\nContent-Type: application/json", head)
        self.assertEqual(rest, b"", "HEAD response must have no body")

    def test_head_404_has_no_body(self):
        with self.gw.connect() as c:
            c.send(request_bytes("HEAD", "/nowhere") + get("/hello"))
            h = c.read_response(head=True)
            g = c.read_response()
        self.assertEqual(h.status, 404)
        self.assertGreater(int(h.header("Content-Length")), 0)
        self.assertEqual((g.status, g.body), (200, HELLO), "no stray body bytes before the next response")

    def test_head_then_get_pipelined(self):
        with self.gw.connect() as c:
            c.send(request_bytes("HEAD", "/hello") + get("/hello"))
            h = c.read_response(head=True)
            g = c.read_response()
        self.assertEqual((h.status, h.header("Content-Length"), h.body), (200, "17", b""))
        self.assertEqual((g.status, g.body), (200, HELLO))

    # ---- pipelining

    def test_pipelining_answers_in_order(self):
        reqs = [
            ("p1", "/hello"),
            ("p2", "/v1/proxy?path=%2Fslow%3Fs%3D0.2"),
            ("p3", "/hello"),
            ("p4", "/v1/proxy?path=/json"),
            ("p5", "/nowhere"),
            ("p6", "/hello"),
        ]
        data = b"".join(get(t, {"X-Request-Id": rid}) for rid, t in reqs)
        t0 = time.monotonic()
        with self.gw.connect(timeout=10) as c:
            c.send(data)
            rs = c.read_responses(len(reqs))
            self.assertEqual(c.buf, b"")
        elapsed = time.monotonic() - t0
        self.assertEqual([r.header("X-Request-Id") for r in rs], [rid for rid, _ in reqs])
        self.assertEqual([r.status for r in rs], [200, 200, 200, 200, 404, 200])
        self.assertEqual(rs[0].body, HELLO)
        self.assertEqual(rs[1].json(), {"ok": True, "slow": True, "seconds": 0.2})
        self.assertEqual(rs[2].body, HELLO)
        self.assertEqual(rs[3].json()["name"], "demo")
        self.assertEqual(rs[5].body, HELLO)
        self.assertGreaterEqual(elapsed, 0.19, "the slow request really waited")

    def test_pipelining_stops_after_connection_close(self):
        data = (get("/hello", {"X-Request-Id": "a1"}) + get("/hello", {"X-Request-Id": "a2", "Connection": "close"})
                + get("/hello", {"X-Request-Id": "a3"}))
        with self.gw.connect() as c:
            c.send(data)
            rs = c.read_responses(2)
            self.assertEqual([r.header("X-Request-Id") for r in rs], ["a1", "a2"])
            self.assertEqual(rs[1].header("Connection"), "close")
            self.assertEqual(c.read_until_closed(3), b"", "nothing is answered after Connection: close")

    def test_request_split_across_many_packets(self):
        data = get("/hello", {"X-Request-Id": "split-1"})
        with self.gw.connect() as c:
            for i in range(0, len(data), 3):
                c.send(data[i:i + 3])
            r = c.read_response()
        self.assertEqual((r.status, r.header("X-Request-Id"), r.body), (200, "split-1", HELLO))

    # ---- request bodies

    def echo(self, body_bytes, extra_headers=None, framing=None):
        hs = [("Authorization", DEMO_AUTH_HEADER)] + list(extra_headers or [])
        if framing is not None:
            hs.append(("Transfer-Encoding", "chunked"))
            return request_bytes("POST", "/demo/echo?x=1", hs, framing)
        return request_bytes("POST", "/demo/echo?x=1", hs, body_bytes)

    def test_body_content_length(self):
        body = b'{"name":"luagate","n":[1,2,3]}' + b"x" * 5000
        r = self.gw.raw(self.echo(body))
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["method"], "POST")
        self.assertEqual(doc["path"], "/demo/echo")
        self.assertEqual(doc["query"], {"x": "1"})
        self.assertEqual(doc["body"].encode(), body)

    def test_body_chunked(self):
        body = b"hello, chunked world! " * 300
        r = self.gw.raw(self.echo(body, framing=chunked(body, [1, 10, 100, 1000])))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"].encode(), body)

    def test_body_chunked_with_extensions_and_trailers(self):
        framing = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        with self.gw.connect() as c:
            c.send(self.echo(None, framing=framing) + get("/hello"))
            r1, r2 = c.read_responses(2)
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(r1.json()["body"], "hello world")
        self.assertEqual((r2.status, r2.body), (200, HELLO))

    def test_body_chunked_then_next_request_on_same_connection(self):
        body = b"abc" * 50
        with self.gw.connect() as c:
            c.send(self.echo(body, framing=chunked(body, [7, 7])) + get("/hello"))
            r1, r2 = c.read_responses(2)
        self.assertEqual(r1.json()["body"].encode(), body)
        self.assertEqual((r2.status, r2.body), (200, HELLO))

    def test_large_response_then_pipelined_request(self):
        body = bytes(range(97, 123)) * 35000  # 910 KB: the echo is written in many pieces
        with self.gw.connect(timeout=10) as c:
            c.send(self.echo(body) + get("/hello", {"X-Request-Id": "after-big"}))
            r1, r2 = c.read_responses(2)
        self.assertEqual(r1.status, 200)
        self.assertEqual(r1.json()["body"].encode(), body)
        self.assertEqual((r2.status, r2.header("X-Request-Id"), r2.body), (200, "after-big", HELLO))

    def test_expect_100_continue(self):
        body = b"z" * 3000
        head = self.echo(body, [("Expect", "100-continue")])[:-len(body)]
        with self.gw.connect() as c:
            c.send(head)
            cont = c.read_response()
            self.assertEqual(cont.status, 100, "100 Continue before the body is sent")
            c.send(body)
            r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body"].encode(), body)

    # ---- errors the server makes itself

    def assert_error_then_closed(self, c, status):
        r = c.read_response()
        self.assert_json_error(r, status)
        self.assertEqual(r.header("Connection"), "close", r)
        self.assertTrue(c.is_closed_by_peer(3), "closed after %d" % status)
        return r

    def test_malformed_header_line_400(self):
        with self.gw.connect() as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            self.assert_error_then_closed(c, 400)

    def test_garbage_400(self):
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", b"HELLO THERE\r\n\r\n",
                     b"GET /hello HTTP/9.9\r\n\r\n"):
            with self.gw.connect() as c:
                c.send(junk)
                self.assert_error_then_closed(c, 400)

    def test_error_after_good_pipelined_request(self):
        with self.gw.connect() as c:
            c.send(get("/hello", {"X-Request-Id": "good-1"}) + b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.status, r.header("X-Request-Id")), (200, "good-1"))
            self.assert_error_then_closed(c, 400)

    def test_ambiguous_body_framing_400(self):
        # Request smuggling vectors: both framings, or two different lengths.
        for head in (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                     b"Content-Length: 5\r\nContent-Length: 6\r\n"):
            with self.gw.connect() as c:
                c.send(b"POST /demo/echo HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n0\r\n\r\nhello!")
                self.assert_error_then_closed(c, 400)

    def test_http11_without_host_400(self):
        with self.gw.connect() as c:
            c.send(b"GET /hello HTTP/1.1\r\nAccept: */*\r\n\r\n")
            self.assert_error_then_closed(c, 400)

    def test_duplicate_host_400(self):
        # RFC 9112 3.2: a server MUST answer 400 to a request with more than one Host line (the
        # same rule as for no Host at all).
        with self.gw.connect() as c:
            c.send(b"GET /hello HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
            self.assert_error_then_closed(c, 400)

    def test_headers_too_large_431(self):
        with self.gw.connect() as c:
            c.send(get("/hello", {"X-Pad": "a" * 17000}))
            self.assert_error_then_closed(c, 431)

    def test_headers_just_under_limit_ok(self):
        r = self.gw.raw(get("/hello", {"X-Pad": "a" * 15000}))
        self.assertEqual((r.status, r.body), (200, HELLO))

    def test_content_length_over_limit_413_without_reading_body(self):
        with self.gw.connect() as c:
            c.send(request_bytes("POST", "/demo/echo", {"Authorization": DEMO_AUTH_HEADER,
                                                        "Content-Length": str(1048576 + 1)}))
            # no body sent: the 413 must come from the headers alone
            self.assert_error_then_closed(c, 413)

    def test_server_still_serves_after_errors(self):
        for junk in (b"BAD\r\n\r\n", b"GET /hello HTTP/1.1\r\n\r\n"):
            with self.gw.connect() as c:
                c.send(junk)
                c.read_until_closed(3)
        r = self.gw.raw(get("/hello"))
        self.assertEqual((r.status, r.body), (200, HELLO))


@harness.require_binary
class LimitsTest(CommonAsserts, harness.GatewayTestCase):
    """max_body_size and max_header_size from the config."""
    GATEWAY_ARGS = {"settings": {"max_body_size": 1000, "max_header_size": 1024}}

    def post(self, hs, body):
        return request_bytes("POST", "/demo/echo", [("Authorization", DEMO_AUTH_HEADER)] + hs, body)

    def test_body_at_limit_accepted(self):
        body = b"b" * 1000
        r = self.gw.raw(self.post([], body))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"].encode(), body)

    def test_chunked_body_at_limit_accepted(self):
        body = b"c" * 1000
        r = self.gw.raw(self.post([("Transfer-Encoding", "chunked")], chunked(body, [300, 300, 300])))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"].encode(), body)

    def test_content_length_over_limit_413(self):
        with self.gw.connect() as c:
            c.send(self.post([], b"b" * 1001))
            r = c.read_response()
            self.assert_json_error(r, 413)
            self.assertTrue(c.is_closed_by_peer(3))

    def test_chunked_over_limit_413(self):
        with self.gw.connect() as c:
            c.send(self.post([("Transfer-Encoding", "chunked")], chunked(b"c" * 1001, [400, 400, 201])))
            r = c.read_response()
            self.assert_json_error(r, 413)
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(c.is_closed_by_peer(3))

    def test_chunked_far_over_limit_413(self):
        # The client keeps sending after the 413: it must still get the response, not a reset.
        with self.gw.connect() as c:
            c.send(self.post([("Transfer-Encoding", "chunked")], chunked(b"c" * 200000, [4096] * 60)))
            r = c.read_response()
            self.assert_json_error(r, 413)

    def test_expect_100_continue_over_limit_gets_413_not_100(self):
        with self.gw.connect() as c:
            c.send(self.post([("Expect", "100-continue"), ("Content-Length", "5000")], b""))
            r = c.read_response()
            self.assert_json_error(r, 413)

    def test_header_limit(self):
        r = self.gw.raw(request_bytes("GET", "/hello", {"X-Pad": "p" * 800}))
        self.assertEqual(r.status, 200)
        with self.gw.connect() as c:
            c.send(request_bytes("GET", "/hello", {"X-Pad": "p" * 1100}))
            r = c.read_response()
            self.assert_json_error(r, 431)
            self.assertTrue(c.is_closed_by_peer(3))

    def test_many_small_headers_over_limit_431(self):
        hs = [("X-H%02d" % i, "v" * 20) for i in range(60)]  # ~1.5 KB of headers in small pieces
        with self.gw.connect() as c:
            c.send(request_bytes("GET", "/hello", hs))
            self.assert_json_error(c.read_response(), 431)


@harness.require_binary
class TimeoutsTest(harness.GatewayTestCase):
    """keepalive_timeout, read_timeout and header_timeout from the config."""
    GATEWAY_ARGS = {"settings": {"keepalive_timeout": 0.3, "read_timeout": 0.3, "header_timeout": 0.5}}

    def test_idle_keepalive_connection_closed(self):
        with self.gw.connect() as c:
            c.send(get("/hello"))
            self.assertEqual(c.read_response().status, 200)
            t0 = time.monotonic()
            self.assertTrue(c.is_closed_by_peer(3), "idle connection closed after keepalive_timeout")
            self.assertGreaterEqual(time.monotonic() - t0, 0.2, "not before keepalive_timeout")

    def test_connection_without_request_closed(self):
        # A new connection has header_timeout for its first request's head, as nginx's
        # client_header_timeout, not keepalive_timeout.
        with self.gw.connect() as c:
            t0 = time.monotonic()
            self.assertTrue(c.is_closed_by_peer(3))
            self.assertGreaterEqual(time.monotonic() - t0, 0.4, "not before header_timeout")

    def test_incomplete_request_closed_after_read_timeout(self):
        with self.gw.connect() as c:
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # headers never finish
            try:
                data = c.read_until_closed(3)
            except OSError as e:
                self.fail("connection not closed after read_timeout: %s" % e)
            self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 408"), data)

    def test_active_connection_not_cut(self):
        # Requests spaced below the timeout keep the connection: the timer restarts each time.
        with self.gw.connect() as c:
            for _ in range(4):
                c.send(get("/hello"))
                self.assertEqual(c.read_response().status, 200)
                r, _, _ = select.select([c.sock], [], [], 0.15)
                self.assertEqual(r, [], "no close or bytes while in use")


if __name__ == "__main__":
    unittest.main()
