"""Graceful stop: on SIGTERM (or SIGINT) the gateway stops accepting, closes idle connections,
lets requests in flight finish, then exits 0."""
import os
import select
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def readable(sock):
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


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

                # A request in flight: /v1/proxy -> the gateway's own /demo/slow, 1 s.
                busy.send(request_bytes("GET", "/v1/proxy?path=%2Fslow%3Fs%3D1", {"X-Request-Id": "inflight-1"}))
                gw.wait_for_log(r"inflight-1: probe: start GET /demo/slow")  # both legs are in flight
                t0 = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: graceful stop")

                # Idle connections are closed...
                self.assertTrue(idle.is_closed_by_peer(0.8), "idle keep-alive connection closed on SIGTERM")
                # ...new connections refused...
                harness.wait_until(lambda: refused(gw.port), 0.5, message="connections refused after SIGTERM")
                # ...while the process still serves the request in flight.
                self.assertTrue(gw.alive(), "exited before the request in flight finished")
                self.assertFalse(readable(busy.sock), "the in-flight request was not cut short")

                r = busy.read_response(timeout=5)
                elapsed = time.monotonic() - t0
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json(), {"ok": True, "slow": True, "seconds": 1})
                self.assertEqual(r.header("X-Request-Id"), "inflight-1")
                self.assertEqual(r.header("Connection"), "close", "the last response on a stopping server")
                self.assertLess(elapsed, 3.0)
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
            self.assertIn("SIGINT: graceful stop", gw.log())

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


if __name__ == "__main__":
    unittest.main()
