"""Faults, against the running binary: misbehaving upstreams (harness.FaultUpstream, reached through
/v1/proxy) and misbehaving clients. Each case asserts the client's answer, a time bound, that the
gateway still serves a normal request afterwards, and that its memory stayed bounded."""
import json
import os
import socket
import sys
import time
import unittest
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402

MB = 1024

ROUTES = r'''
local gw = require "luagate"
local big = string.rep("x", 1024 * 1024)
gw.get("/t/big", function() return 200, big end)
gw.get("/t/slow", function() gw.sleep(1) return 200, "slow" end)
gw.get("/t/stuck", { timeout = 0.5 }, function() gw.sleep(10) return 200, "never" end)
gw.post("/t/sink", function(req) return 200, tostring(#req.body) end)
-- /v1/proxy with a timeout of the test's choosing (the upstream's is 1.5 s)
gw.get("/t/fetch", function(req)
  local res, err = gw.fetch("api", req.query.path, { timeout = tonumber(req.query.timeout) })
  if not res then return gw.upstream_error(err) end
  return res.status, res.body
end)
'''


class FaultCase(unittest.TestCase):
    """A gateway (one per class) whose "api" upstream is a FaultUpstream."""
    SETTINGS = {}

    @classmethod
    def setUpClass(cls):
        if not harness.binary_available():
            raise unittest.SkipTest("luagate binary not found at %s" % harness.LUAGATE_BIN)
        cls.up = harness.FaultUpstream()
        cls.gw = harness.Gateway(api={"url": cls.up.url, "timeout": 1.5, "connect_timeout": 1, "retries": 0,
                                      "auth": None},
                                 extra_routes={"zz_faults.lua": ROUTES}, settings=cls.SETTINGS)
        try:
            cls.gw.start()
        except Exception:
            cls.gw.close()
            cls.up.close()
            raise

    def setUp(self):
        self.rss_before = self.gw.rss_kb()

    @classmethod
    def tearDownClass(cls):
        cls.up.close()
        harness.finish_gateway(cls.gw, cls.__name__)

    def assert_healthy(self, rss_margin_mb=40):
        """A normal request succeeds, and the test grew memory by less than a margin (RSS
        seldom shrinks after a peak: each test is measured from its own start)."""
        self.assertEqual(self.gw.request("GET", "/hello", timeout=5)[0], 200)
        grown = (self.gw.rss_kb() - self.rss_before) / MB
        self.assertLess(grown, rss_margin_mb, "RSS grew by %.0f MiB" % grown)


@harness.require_binary
class UpstreamFaultsTest(FaultCase):
    def proxy(self, path, statuses, seconds, timeout=None):
        """GET path on the upstream through /v1/proxy (timeout: the upstream's, 1.5 s, or this)."""
        t0 = time.monotonic()
        target = "/v1/proxy?path=" + quote(path, safe="")
        if timeout:
            target = "/t/fetch?timeout=%s&path=%s" % (timeout, quote(path, safe=""))
        with self.gw.connect(timeout=seconds + 5) as c:
            c.send(request_bytes("GET", target))
            r = c.read_response()
        elapsed = time.monotonic() - t0
        self.assertIn(r.status, statuses, r)
        self.assertLess(elapsed, seconds, "answered after %.1f s" % elapsed)
        return r, elapsed

    def cut(self, path, seconds):
        """Through /v1/proxy, which streams: the head went out before the fault, so the client must
        see the answer cut (its connection closes short of the body), never a whole-looking one."""
        t0 = time.monotonic()
        with self.gw.connect(timeout=seconds + 5) as c:
            c.send(request_bytes("GET", "/v1/proxy?path=" + quote(path, safe="")))
            with self.assertRaises(harness.ConnectionClosed):
                c.read_response()
        self.assertLess(time.monotonic() - t0, seconds)

    def test_closing_mid_body_502_or_cut(self):
        self.proxy("/close-mid-body", (502,), 2, timeout=1.5)  # buffered: nothing was sent yet
        self.cut("/close-mid-body", 2)
        self.assert_healthy()

    def test_content_length_larger_than_the_body_502_or_cut(self):
        self.proxy("/short-body", (502,), 2, timeout=1.5)
        self.cut("/short-body", 2)
        self.assert_healthy()

    def test_malformed_status_line_502(self):
        self.proxy("/bad-status", (502,), 2)
        self.assert_healthy()

    def test_endless_chunked_body_502_or_504(self):
        # Buffered: cut at max_response_body (64 MiB by default), or at the timeout. (Streamed through
        # /v1/proxy it would flow as long as the client reads: that is what a stream is.)
        self.proxy("/endless-chunked", (502, 504), 3, timeout=1.5)
        self.assert_healthy(rss_margin_mb=150)

    def test_body_larger_than_the_limit_502(self):
        # (a timeout long enough for 70 MiB on a loaded machine under ASan: the limit must cut it)
        r, _ = self.proxy("/too-large", (502,), 20, timeout=20)
        self.assertIn(b"too large", r.body)
        self.assert_healthy(rss_margin_mb=150)

    def test_headers_one_byte_every_half_second_504(self):
        _, elapsed = self.proxy("/drip-headers", (504,), 3)
        self.assertGreater(elapsed, 1.4, "not before the upstream's timeout (1.5 s)")
        self.assert_healthy()

    def test_accepting_and_never_answering_504(self):
        _, elapsed = self.proxy("/silent", (504,), 3)
        self.assertGreater(elapsed, 1.4)
        self.assert_healthy()

    def test_status_outside_100_599_502(self):
        for status in ("600", "700", "999"):
            self.proxy("/status-" + status, (502,), 2)
        self.assert_healthy()

    def test_framing_a_strict_recipient_refuses_is_502(self):
        for name in harness.MALFORMED_ANSWERS:
            with self.subTest(name):
                r, _ = self.proxy("/malformed-" + name, (502,), 3, timeout=2)
                self.assertEqual(r.json()["kind"], "bad response")
        self.gw.wait_for_log(r"invalid HTTP from the upstream: ")
        self.assert_healthy()

    def test_unsolicited_101_502(self):
        self.proxy("/switch", (502,), 3)
        self.assert_healthy()

    def test_clients_not_reading_large_proxied_answers_bounded_memory(self):
        socks, peak = [], 0
        try:
            for _ in range(4):
                s = socket.create_connection((self.gw.host, self.gw.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(request_bytes("GET", "/v1/proxy?path=" + quote("/big?mb=24", safe="")))
                socks.append(s)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                peak = max(peak, self.gw.rss_kb())
                time.sleep(0.05)
        finally:
            for s in socks:
                s.close()
        grown = (peak - self.rss_before) / MB
        self.assertLess(grown, 64, "peak RSS grew by %.0f MiB for 4 x 24 MiB answers nobody read" % grown)


@harness.require_binary
class ClientFaultsTest(FaultCase):
    SETTINGS = {"read_timeout": 1, "keepalive_timeout": 5, "header_timeout": 2, "body_timeout": 2}

    def test_client_never_reading_is_cut_with_bounded_memory(self):
        s = socket.create_connection((self.gw.host, self.gw.port))
        client_port = s.getsockname()[1]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        t0 = time.monotonic()
        s.sendall(request_bytes("GET", "/t/big") * 20)
        try:
            time.sleep(0.5)
            grown = (self.gw.rss_kb() - self.rss_before) / MB
            # No progress for longer than read_timeout (1 s): the gateway closes its side, while
            # this client still holds its own open and reads nothing.
            harness.wait_until(lambda: not self.gw.server_side_established(client_port), 4, 0.05,
                               "the gateway to close the connection")
            self.assertGreater(time.monotonic() - t0, 0.8, "not before read_timeout")
        finally:
            s.close()
        self.assertLess(grown, 40, "RSS grew by %.0f MiB for a client that reads nothing" % grown)
        self.assert_healthy()

    def test_clients_resetting_mid_request(self):
        for i in range(30):
            s = socket.create_connection((self.gw.host, self.gw.port))
            if i % 2:
                s.sendall(request_bytes("POST", "/t/sink", {"Content-Length": "100000"}) + b"x" * 5000)
            else:
                s.sendall(request_bytes("GET", "/t/slow"))  # in flight in its handler
                time.sleep(0.02)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST
        time.sleep(0.2)
        self.assert_healthy()

    def test_body_within_read_timeout_between_bytes_is_taken(self):
        with self.gw.connect(timeout=5) as c:
            c.send(request_bytes("POST", "/t/sink", {"Content-Length": "4"}))
            for b in b"abcd":
                time.sleep(0.3)
                c.send(bytes([b]))
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"4"))
        self.assert_healthy()

    def trickle(self, head, body, seconds):
        """Send head, then body one byte every 0.25 s for at most `seconds`: True when the gateway
        closed the connection (or answered) by then."""
        with self.gw.connect(timeout=seconds) as c:
            c.send(head)
            deadline = time.monotonic() + seconds
            for b in body:
                if time.monotonic() > deadline:
                    return False
                try:
                    c.send(bytes([b]))
                except OSError:
                    return True
                time.sleep(0.25)
                c.sock.setblocking(False)
                try:
                    if c.sock.recv(1 << 16, socket.MSG_PEEK) is not None:
                        return True
                except BlockingIOError:
                    pass
                except OSError:
                    return True
                finally:
                    c.sock.setblocking(True)
            return False

    def test_trickled_body_is_cut_by_a_body_deadline(self):
        t0 = time.monotonic()
        cut = self.trickle(request_bytes("POST", "/t/sink", {"Content-Length": "200"}), b"b" * 200, 4)
        self.assertTrue(cut, "a body trickled for %.1f s is still being taken" % (time.monotonic() - t0))
        self.assert_healthy()

    def test_dripped_headers_are_cut_by_a_head_deadline(self):
        head = b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(40))
        cut = self.trickle(b"", head, 4)
        self.assertTrue(cut, "a head dripped for 4 s is still being read")
        self.assert_healthy()

    def test_a_route_timeout_answers_504_and_stops_the_handler(self):
        t0 = time.monotonic()
        status, _, body = self.gw.request("GET", "/t/stuck", timeout=5)
        took = time.monotonic() - t0
        self.assertEqual((504, "handler timed out"), (status, json.loads(body)["error"]))
        self.assertTrue(0.45 <= took < 2, "took %.2f s for a 0.5 s route timeout" % took)
        self.gw.wait_for_log(r"GET /t/stuck: no answer within its deadline")
        self.assert_healthy()

    def test_connection_sending_nothing_is_closed_before_keepalive_timeout(self):
        with self.gw.connect() as c:
            self.assertTrue(c.is_closed_by_peer(3), "open after 3 s (header_timeout 2 s)")


if __name__ == "__main__":
    unittest.main()
