"""Bounds, against the running binary: max_connections (503 past it, logged at most once a second,
the listener always taken up again), the worker's memory budget max_buffered_size (503 for a
buffered body or answer that does not fit, clients that stopped reading cut, "gateway busy" for a
buffered upstream answer), and descriptors (max_open_files: max_connections kept within it, an
upstream call without a descriptor failing as "too many open files", accept recovering)."""
import json
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402

MiB = 1 << 20

ROUTES = r'''
local gw = require "luagate"
local blocks = {}
-- n MiB, answered whole (buffered: all of it may wait in the gateway for a slow client)
gw.get("/t/big", function(req)
  local n = tonumber(req.query.mb)
  blocks[n] = blocks[n] or string.rep("b", n * 1024 * 1024)
  return 200, blocks[n]
end)
gw.post("/t/sink", function(req) return 200, tostring(#req.body) end)
-- a buffered upstream call
gw.get("/t/fetch", function(req)
  local res, err = gw.fetch("api", req.query.path)
  if not res then return gw.upstream_error(err) end
  return res.status, tostring(#res.body)
end)
-- n calls at once to a silent upstream: how each ended, by kind
gw.get("/t/fanout", function(req)
  local calls = {}
  for i = 1, tonumber(req.query.n) do calls[i] = { "api", "/silent", { timeout = 1.5, retries = 0 } } end
  local _, errs = gw.fetch_all(calls)
  local kinds = {}
  for _, e in pairs(errs or {}) do
    local kind = tostring(e):match("^([%w ]+):") or tostring(e)
    kinds[kind] = (kinds[kind] or 0) + 1
  end
  return 200, kinds
end)
'''


def count(pattern, text):
    return len(re.findall(pattern, text))


class BoundsCase(unittest.TestCase):
    SETTINGS = {}

    @classmethod
    def setUpClass(cls):
        if not harness.binary_available():
            raise unittest.SkipTest("luagate binary not found at %s" % harness.LUAGATE_BIN)
        cls.up = harness.FaultUpstream()
        cls.gw = harness.Gateway(api={"url": cls.up.url, "timeout": 3, "retries": 0, "auth": None},
                                 extra_routes={"zz_bounds.lua": ROUTES}, settings=cls.SETTINGS)
        try:
            cls.gw.start()
        except Exception:
            cls.gw.close()
            cls.up.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.up.close()
        harness.finish_gateway(cls.gw, cls.__name__)

    def hello(self):
        return self.gw.request("GET", "/hello", timeout=10)[0]


@harness.require_binary
class MaxConnectionsTest(BoundsCase):
    SETTINGS = {"max_connections": 4}

    def held(self, n):
        """n keep-alive connections that have been answered once: open, idle, counted."""
        conns = []
        for _ in range(n):
            c = self.gw.connect(timeout=5)
            c.send(request_bytes("GET", "/hello"))
            self.assertEqual(c.read_response().status, 200)
            conns.append(c)
        return conns

    def test_past_max_connections_a_client_gets_503_and_is_served_once_there_is_room(self):
        held = self.held(4)
        try:
            with self.gw.connect(timeout=5) as c:
                c.send(request_bytes("GET", "/hello"))
                r = c.read_response()
                self.assertEqual(r.status, 503)
                self.assertEqual(r.header("connection"), "close")
                body = r.json()
                self.assertEqual(body["error"], "too many connections")
                self.assertEqual(body["request_id"], r.header("x-request-id"))
                self.assertTrue(c.is_closed_by_peer())
        finally:
            for c in held:
                c.close()
        harness.wait_until(lambda: self.hello() == 200, 5, 0.05, "a client served again")
        self.gw.wait_for_log(r"max_connections \(4\) reached: answering new clients 503")

    def test_refusals_are_logged_at_most_once_a_second(self):
        held = self.held(4)
        time.sleep(1.1)  # a refusal of an earlier test may have had its line just now
        before = count(r"max_connections \(4\) reached", self.gw.log())
        try:
            for _ in range(3):
                refused = [self.gw.connect(timeout=5) for _ in range(10)]
                for c in refused:
                    c.send(request_bytes("GET", "/hello"))
                    self.assertEqual(c.read_response().status, 503)
                    c.close()
        finally:
            for c in held:
                c.close()
        lines = count(r"max_connections \(4\) reached", self.gw.log()) - before
        self.assertGreaterEqual(lines, 1)
        self.assertLessEqual(lines, 2, "30 refusals within a second or so")

    def test_a_flood_past_max_connections_waits_in_the_listener_and_is_answered(self):
        """More clients than are answered 503 at once (32): the rest wait in the listen queue
        (libuv stops watching it until we take one) and get their answer once the refused ones
        are gone, never left unanswered for good."""
        held = self.held(4)
        flood = []
        try:
            for _ in range(50):
                c = self.gw.connect(timeout=8)
                c.send(request_bytes("GET", "/hello"))
                flood.append(c)  # held open: each refusal lingers until its client closes
            statuses = []
            for c in flood[:32]:
                statuses.append(c.read_response().status)
            for c in flood[:32]:  # room for the waiting ones
                c.close()
            for c in flood[32:]:
                statuses.append(c.read_response().status)
            self.assertEqual(statuses, [503] * 50)
        finally:
            for c in flood + held:
                c.close()
        harness.wait_until(lambda: self.hello() == 200, 5, 0.05, "a client served again")


@harness.require_binary
class BudgetTest(BoundsCase):
    SETTINGS = {"max_buffered_size": 8 * MiB, "max_body_size": 4 * MiB, "read_timeout": 30}

    def test_a_buffered_body_that_does_not_fit_gets_503_before_it_is_sent(self):
        started = []
        try:
            for _ in range(2):  # 3 MiB each: 6 of 8 MiB charged as their heads arrive
                c = self.gw.connect(timeout=5)
                c.send(request_bytes("POST", "/t/sink", {"Content-Length": str(3 * MiB)}) + b"x" * 1000)
                started.append(c)
            time.sleep(0.2)
            with self.gw.connect(timeout=5) as c:
                c.send(request_bytes("POST", "/t/sink", {"Content-Length": str(3 * MiB)}))
                r = c.read_response()
                self.assertEqual(r.status, 503)
                self.assertEqual(r.json()["error"], "server busy")
            for c in started:
                c.send(b"x" * (3 * MiB - 1000))
                r = c.read_response(timeout=10)
                self.assertEqual((r.status, r.body), (200, str(3 * MiB).encode()))
        finally:
            for c in started:
                c.close()
        # Given back: the same body is taken now.
        status, _, body = self.gw.request("POST", "/t/sink", body=b"y" * (3 * MiB))
        self.assertEqual((status, body), (200, str(3 * MiB).encode()))
        self.gw.wait_for_log(r"max_buffered_size reached")

    def test_clients_that_stopped_reading_are_cut_and_the_next_answer_fits(self):
        # A 7 MiB answer nobody reads: the kernel takes at most 4 MiB (tcp_wmem), the rest waits
        # in the gateway, charged to its 8 MiB.
        s = socket.create_connection((self.gw.host, self.gw.port))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request_bytes("GET", "/t/big?mb=7"))
            time.sleep(1.5)  # stalled for longer than the cut's 1 s
            status, _, body = self.gw.request("GET", "/t/big?mb=7")
            self.assertEqual(status, 503, "a 7 MiB answer while a stalled client holds 3 MiB or more of 8")
            self.assertEqual(json.loads(body)["error"], "server busy")
            # The stalled client is cut (the gateway closes its end; the client still holds its
            # own), and then the answer fits.
            port = s.getsockname()[1]
            harness.wait_until(lambda: not self.gw.server_side_established(port), 3, 0.05,
                               "the gateway to cut a client that stopped reading")
            status, _, body = self.gw.request("GET", "/t/big?mb=7")
            self.assertEqual((status, len(body)), (200, 7 * MiB))
        finally:
            s.close()
        self.gw.wait_for_log(r"cut: \d+ bytes queued and unread")

    def test_a_buffered_upstream_answer_over_the_budget_is_gateway_busy(self):
        status, _, body = self.gw.request("GET", "/t/fetch?path=/big%3Fmb%3D12")
        self.assertEqual(status, 503)
        body = json.loads(body)
        self.assertEqual((body["error"], body["kind"]), ("gateway busy", "gateway busy"))
        status, _, body = self.gw.request("GET", "/t/fetch?path=/big%3Fmb%3D2")
        self.assertEqual((status, body), (200, str(2 * MiB).encode()))


@harness.require_binary
class DescriptorsTest(BoundsCase):
    SETTINGS = {"max_open_files": 160, "max_connections": 1000}

    def test_max_connections_is_kept_within_the_descriptors(self):
        self.gw.wait_for_log(r"max_connections 1000 is more than 160 open files allow: 96")

    def test_upstream_calls_without_a_descriptor_fail_as_their_own_kind_and_accept_recovers(self):
        got = {}

        def fanout():
            got["answer"] = self.gw.request("GET", "/t/fanout?n=200", timeout=20)

        import threading
        t = threading.Thread(target=fanout)
        t.start()
        try:
            # While the calls hold every descriptor, clients are closed unanswered: logged, not
            # once per client.
            harness.wait_until(lambda: "too many open files" in self.gw.log(), 5, 0.02, "descriptors to run out")
            for _ in range(20):
                try:
                    with self.gw.connect(timeout=2) as c:
                        c.send(request_bytes("GET", "/hello"))
                        c.read_response()
                except (OSError, harness.ConnectionClosed):
                    pass
        finally:
            t.join(20)
        status, _, body = got["answer"]
        self.assertEqual(status, 200)
        kinds = json.loads(body)
        self.assertGreater(kinds.get("too many open files", 0), 0, kinds)
        self.assertNotIn("connection refused", kinds)
        self.assertEqual(sum(kinds.values()), 200, kinds)  # the rest timed out on the silent upstream
        self.assertLessEqual(count(r"accept: too many open files", self.gw.log()), 4)
        harness.wait_until(lambda: self.hello() == 200, 5, 0.05, "accepting again")


if __name__ == "__main__":
    unittest.main()
