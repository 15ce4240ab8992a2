"""Graceful stop: on SIGTERM (or SIGINT) the gateway stops accepting, closes idle connections,
lets requests in flight finish and answers still queued for a slow client go out, then exits 0."""
import os
import re
import select
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import read_to_eof, request_bytes  # noqa: E402


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def readable(sock):
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


# /t/blob?n=N answers N bytes and logs that it did, so a test can count the answers handed over.
BLOB_ROUTES = r'''
local gw = require "luagate"
local blobs = {}
gw.get("/t/blob", function(req)
  local n = tonumber(req.query.n) or 0
  blobs[n] = blobs[n] or string.rep("x", n)
  gw.log("blob " .. n .. " answered")
  return 200, blobs[n]
end)
'''


def slow_reader(gw, rcvbuf=4096):
    """A client socket with a small receive buffer, so that what it does not read backs up into the
    gateway's write queue (the buffer must be set before connect to bound the window)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect((gw.host, gw.port))
    return s


def complete_responses(data):
    """The responses in data that arrived whole, and how many bytes trail them (a cut response)."""
    rest = harness.RawConn.__new__(harness.RawConn)
    rest.buf, rest.eof, rest.reset, rest.timeout = bytearray(data), True, False, 0
    out = []
    while rest.buf:
        try:
            out.append(rest.read_response())
        except harness.ConnectionClosed:
            break
    return out, len(rest.buf)


@harness.require_binary
class ShutdownTest(unittest.TestCase):

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")

    def test_sigterm_lets_in_flight_request_finish(self):
        with harness.Gateway(probe=True) as gw:
            idle = gw.connect()
            busy = gw.connect()
            try:
                # An idle keep-alive connection (it has had a request).
                idle.send(request_bytes("GET", "/hello"))
                self.assertEqual(idle.read_response().status, 200)

                # A request in flight: /v1/proxy -> the gateway's own /demo/slow, 2 s (longer than the
                # idle connection's grace).
                busy.send(request_bytes("GET", "/v1/proxy?path=%2Fslow%3Fs%3D2", {"X-Request-Id": "inflight-1"}))
                gw.wait_for_log(r"inflight-1: probe: start GET /demo/slow")  # both legs are in flight
                t0 = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: graceful stop")

                # Idle connections are closed, once idle for keepalive_min_timeout (1 s by default)...
                self.assertTrue(idle.is_closed_by_peer(2), "idle keep-alive connection closed on SIGTERM")
                # ...new connections refused...
                self.assertTrue(refused(gw.port), "connections refused after SIGTERM")
                # ...while the process still serves the request in flight.
                self.assertTrue(gw.alive(), "exited before the request in flight finished")
                self.assertFalse(readable(busy.sock), "the in-flight request was not cut short")

                r = busy.read_response(timeout=5)
                elapsed = time.monotonic() - t0
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json(), {"ok": True, "slow": True, "seconds": 2})
                self.assertEqual(r.header("X-Request-Id"), "inflight-1")
                self.assertEqual(r.header("Connection"), "close", "the last response on a stopping server")
                self.assertLess(elapsed, 4.0)
                self.assertTrue(busy.is_closed_by_peer(3))

                rc = gw.wait(timeout=5)
                self.assertEqual(rc, 0, gw.log())
                log = gw.log()
                self.assertIn("graceful stop", log)
                self.assertNotIn("handles left open", log)
            finally:
                idle.close()
                busy.close()

    def test_sigterm_when_idle_exits_promptly(self):
        with harness.Gateway() as gw:
            self.assertEqual(gw.request("GET", "/hello")[0], 200)
            t0 = time.monotonic()
            rc = gw.stop(signal.SIGTERM, timeout=5)
            self.assertEqual(rc, 0, gw.log())
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertIn("SIGTERM: graceful stop", gw.log())
            self.assertTrue(refused(gw.port))

    def test_sigint_is_graceful_too(self):
        with harness.Gateway() as gw:
            with gw.connect() as c:
                c.send(request_bytes("GET", "/hello"))
                self.assertEqual(c.read_response().status, 200)
                gw.send_signal(signal.SIGINT)
                self.assertTrue(c.is_closed_by_peer(3))
            self.assertEqual(gw.wait(timeout=5), 0, gw.log())
            self.assertIn("master: SIGINT: stopping the workers gracefully", gw.log())

    def test_shutdown_timeout_cuts_long_requests(self):
        with harness.Gateway(probe=True, settings={"shutdown_timeout": 0.5}) as gw:
            with gw.connect() as c:
                c.send(request_bytes("GET", "/v1/proxy?path=%2Fslow%3Fs%3D10", {"X-Request-Id": "long-1"}))
                gw.wait_for_log(r"long-1: probe: start GET /demo/slow")
                t0 = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                rc = gw.wait(timeout=5)
                elapsed = time.monotonic() - t0
                self.assertGreaterEqual(elapsed, 0.4, "in-flight requests get shutdown_timeout")
                self.assertLess(elapsed, 3.0, "but no more")
                self.assertEqual(rc, 0, gw.log())
                self.assertIn("shutdown_timeout", gw.log())
                try:
                    rest = c.read_until_closed(2)
                except OSError:
                    rest = b""
                self.assertNotIn(b"HTTP/1.1 200", rest)


@harness.require_binary
class ShutdownWithQueuedOutputTest(unittest.TestCase):
    """An answer handed to the socket but not yet taken by a slow client is part of the exchange:
    a graceful stop must let it go out whole before closing."""

    BIG = 8 << 20  # well beyond what the kernel's send buffer takes at once: most of it waits in libuv

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")

    def gateway(self, **settings):
        return harness.Gateway(extra_routes={"zz_blob.lua": BLOB_ROUTES}, settings=settings or None)

    def test_sigterm_lets_a_queued_answer_reach_a_slow_reader(self):
        with self.gateway() as gw:
            s = slow_reader(gw)
            try:
                s.sendall(request_bytes("GET", "/t/blob?n=%d" % self.BIG))
                gw.wait_for_log(r"blob %d answered" % self.BIG)
                time.sleep(0.3)  # the client reads nothing yet: the answer waits in the write queue
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: graceful stop")
                time.sleep(0.3)  # a connection taken for idle was closed by now
                responses, cut = complete_responses(read_to_eof(s))
            finally:
                s.close()
            self.assertEqual(cut, 0, "the answer was cut off")
            self.assertEqual(len(responses), 1)
            self.assertEqual(len(responses[0].body), self.BIG)
            self.assertEqual(gw.wait(timeout=10), 0, gw.log())

    def test_sigterm_with_requests_pipelined_behind_a_queued_answer(self):
        # 80 answers of 100 kB: the gateway stops parsing once 1 MiB waits unsent; the requests
        # behind stay unparsed. Every answer handed over must still arrive whole, then the close.
        n, size = 80, 100000
        with self.gateway() as gw:
            s = slow_reader(gw)
            try:
                s.sendall(request_bytes("GET", "/t/blob?n=%d" % size) * n)
                gw.wait_for_log(r"blob %d answered" % size)
                time.sleep(0.5)
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: graceful stop")
                time.sleep(0.3)
                responses, cut = complete_responses(read_to_eof(s))
            finally:
                s.close()
            self.assertEqual(gw.wait(timeout=10), 0, gw.log())
            answered = len(re.findall(r"blob %d answered" % size, gw.log()))
            self.assertLess(answered, n, "the test needs requests left unparsed behind the queue")
            self.assertEqual(cut, 0, "an answer was cut off")
            self.assertEqual(len(responses), answered, "every answer handed over arrives")
            self.assertTrue(all(len(r.body) == size for r in responses))

    def test_second_signal_closes_a_client_that_does_not_read(self):
        with self.gateway() as gw:
            s = slow_reader(gw)
            try:
                s.sendall(request_bytes("GET", "/t/blob?n=%d" % self.BIG))
                gw.wait_for_log(r"blob %d answered" % self.BIG)
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: graceful stop")
                time.sleep(0.2)
                self.assertTrue(gw.alive(), "the queued answer is still going out")
                t0 = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                self.assertEqual(gw.wait(timeout=5), 0, gw.log())
                self.assertLess(time.monotonic() - t0, 2.0)
                self.assertIn("second signal", gw.log())
            finally:
                s.close()

    def test_shutdown_timeout_closes_a_client_that_does_not_read(self):
        with self.gateway(shutdown_timeout=0.5) as gw:
            s = slow_reader(gw)
            try:
                s.sendall(request_bytes("GET", "/t/blob?n=%d" % self.BIG))
                gw.wait_for_log(r"blob %d answered" % self.BIG)
                t0 = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                self.assertEqual(gw.wait(timeout=5), 0, gw.log())
                elapsed = time.monotonic() - t0
                self.assertGreaterEqual(elapsed, 0.4)
                self.assertLess(elapsed, 3.0)
                self.assertIn("shutdown_timeout", gw.log())
            finally:
                s.close()


if __name__ == "__main__":
    unittest.main()
