"""How the gateway talks to upstreams, against both clients (the native one and libcurl): kept
connections that the upstream closes at random or resets when reused (no request may fail), the
forms an answer takes (HEAD, 204, 304, 1xx, chunked with trailers, EOF-delimited), and each
deadline (connect, first byte, idle, whole call)."""
import json
import os
import random
import socket
import sys
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402
import upstreams  # noqa: E402

ROUTES = '''
local gw = require "luagate"
-- A buffered call, for the deadlines of a whole answer.
gw.get("/whole", function(req)
  local res, err = gw.fetch("api", req.query.path)
  if not res then return gw.upstream_error(err) end
  return res.status, res.body, { ["X-Trailer-Seen"] = tostring(res.headers["x-trailer"]) }
end)
gw.get("/stats", function() return 200, gw.stats() end)
'''


def keepalive_server(rng, close_rate, reset_reused, mode):
    """A keep-alive upstream. close_rate: the chance that it closes a connection at a random moment
    (0-30 ms) after an answer, as a server's idle timeout does. reset_reused: every request after a
    connection's first is met by a close (mode "fin") or a reset (mode "rst") instead of an answer."""
    def handler(conn):
        while True:
            req = conn.read_request()
            if req is None:
                return
            if reset_reused and conn.requests > 1:
                if mode == "rst":
                    conn.reset()
                return
            conn.respond(200, b'{"ok":true}', {"Content-Type": "application/json"})
            if rng.random() < close_rate:
                time.sleep(rng.random() * 0.03)
                return
    return handler


@harness.require_binary
class NativeReuseTest(unittest.TestCase):
    """Kept connections that die: a request on a reused connection that the upstream closed before
    answering is sent again on a fresh one (it is a GET); none fails."""
    client = "native"

    def run_load(self, up, n, conns=8):
        gw = harness.Gateway(api={"url": up.url, "auth": None, "client": self.client, "retries": 0}).start()
        try:
            def one(_):
                status, _, body = gw.request("GET", "/v1/proxy?path=/x")
                return status
            with ThreadPoolExecutor(conns) as pool:
                statuses = list(pool.map(one, range(n)))
            return statuses, gw
        finally:
            rc = gw.stop()
            log = gw.log()
            gw.close()
            self.assertEqual(0, rc, log[-3000:])

    def assert_all_answered(self, handler, n):
        """n GETs through /v1/proxy to an upstream run by handler: every one answered 200."""
        up = upstreams.Scripted(handler).start()
        try:
            statuses, _ = self.run_load(up, n)
        finally:
            up.stop()
        self.assertEqual({200: n}, {s: statuses.count(s) for s in set(statuses)})

    def test_an_upstream_closing_kept_connections_at_random_moments(self):
        self.assert_all_answered(keepalive_server(random.Random(7), 0.3, False, None), 1500)

    def test_an_upstream_closing_every_reused_connection(self):
        self.assert_all_answered(keepalive_server(random.Random(1), 0, True, "fin"), 300)

    def test_an_upstream_resetting_every_reused_connection(self):
        self.assert_all_answered(keepalive_server(random.Random(2), 0, True, "rst"), 300)


class CurlReuseTest(NativeReuseTest):
    client = "curl"


def forms_handler(conn):
    """Each path answers in one of the forms HTTP/1.1 allows."""
    while True:
        req = conn.read_request()
        if req is None:
            return
        method, target = req[0], req[1].split("?")[0]
        if target == "/head":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12345\r\n\r\n"
                      + (b"" if method == "HEAD" else b"z" * 12345))
        elif target == "/204":
            conn.send(b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n")
        elif target == "/304":
            conn.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
        elif target == "/1xx":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x.css>\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        elif target == "/chunked":
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
                      b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: late\r\n\r\n")
        elif target == "/eof":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end")
            return
        else:
            conn.respond(404, b"no")


@harness.require_binary
class NativeAnswerFormsTest(unittest.TestCase):
    client = "native"

    @classmethod
    def setUpClass(cls):
        cls.up = upstreams.Scripted(forms_handler).start()
        cls.gw = harness.Gateway(api={"url": cls.up.url, "auth": None, "client": cls.client},
                                 extra_routes={"whole.lua": ROUTES}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            harness.finish_gateway(cls.gw, cls.__name__)
        finally:
            cls.up.stop()

    def raw(self, method, path):
        return self.gw.raw(request_bytes(method, path), head=(method == "HEAD"))

    def test_head_keeps_the_length_and_sends_no_body(self):
        r = self.raw("HEAD", "/v1/proxy?path=/head")
        self.assertEqual((200, "12345", b""), (r.status, r.header("Content-Length"), r.body))
        r = self.raw("GET", "/v1/proxy?path=/head")  # the connection to the upstream is sound after
        self.assertEqual((200, 12345), (r.status, len(r.body)))

    def test_204_and_304_have_no_body(self):
        r = self.raw("GET", "/v1/proxy?path=/204")
        self.assertEqual((204, b"", "none", None), (r.status, r.body, r.header("X-Kind"), r.header("Content-Length")))
        r = self.raw("GET", "/v1/proxy?path=/304")
        self.assertEqual((304, b"", '"v1"'), (r.status, r.body, r.header("ETag")))

    def test_1xx_answers_are_skipped(self):
        r = self.raw("GET", "/v1/proxy?path=/1xx")
        self.assertEqual((200, b"final", None), (r.status, r.body, r.header("Link")))

    def test_chunked_with_extensions_and_trailers(self):
        r = self.raw("GET", "/v1/proxy?path=/chunked")
        self.assertEqual((200, b"hello world", None), (r.status, r.body, r.header("X-Trailer")))
        r = self.raw("GET", "/whole?path=/chunked")  # buffered: trailers are not headers either
        self.assertEqual((200, b"hello world", "nil"), (r.status, r.body, r.header("X-Trailer-Seen")))

    def test_an_answer_delimited_by_eof(self):
        r = self.raw("GET", "/v1/proxy?path=/eof")
        self.assertEqual((200, b"until the end"), (r.status, r.body))
        opened = self.up.connections
        r = self.raw("GET", "/v1/proxy?path=/eof")
        self.assertEqual((200, b"until the end"), (r.status, r.body))
        self.assertEqual(opened + 1, self.up.connections)  # not reused: its end was the close


class CurlAnswerFormsTest(NativeAnswerFormsTest):
    client = "curl"


def stalling_handler(conn):
    """/first-byte never answers; /idle sends its head and half its body, then nothing; /drip sends
    a byte every 100 ms (each read is progress, the whole call is too slow)."""
    while True:
        req = conn.read_request()
        if req is None:
            return
        target = req[1].split("?")[0]
        if target == "/first-byte":
            time.sleep(10)
            return
        if target == "/idle":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
            time.sleep(10)
            return
        if target == "/drip":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                conn.send(b"y")
                time.sleep(0.1)
            return
        conn.respond(200, b"ok")


@harness.require_binary
class NativeDeadlinesTest(unittest.TestCase):
    """Each deadline, with its answer (504, kind timeout) and its time bound."""
    client = "native"

    @classmethod
    def setUpClass(cls):
        cls.up = upstreams.Scripted(stalling_handler).start()
        # A listener whose accept queue is full: a connect to it waits until its deadline.
        cls.full = socket.socket()
        cls.full.bind(("127.0.0.1", 0))
        cls.full.listen(0)
        cls.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(cls.full.getsockname())
            cls.fillers.append(s)
        time.sleep(0.1)
        blackhole = "http://127.0.0.1:%d" % cls.full.getsockname()[1]
        cls.gw = harness.Gateway(
            api={"url": cls.up.url, "auth": None, "client": cls.client, "timeout": 2, "connect_timeout": 0.5,
                 "first_byte_timeout": 0.6, "read_timeout": 0.7, "retries": 0},
            upstreams={"blackhole": {"url": blackhole, "client": cls.client, "connect_timeout": 0.5, "retries": 0}},
            extra_routes={"whole.lua": ROUTES + '''
gw.get("/blackhole", function()
  local res, err = gw.fetch("blackhole", "/")
  if not res then return gw.upstream_error(err) end
  return res.status, res.body
end)
'''}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            harness.finish_gateway(cls.gw, cls.__name__)
        finally:
            cls.up.stop()
            for s in cls.fillers:
                s.close()
            cls.full.close()

    def timed(self, path, lo, hi):
        t0 = time.monotonic()
        status, headers, body = self.gw.request("GET", path, timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(504, status, body)
        self.assertEqual("timeout", json.loads(body)["kind"])
        self.assertNotIn(b"127.0.0.1", body)
        self.assertTrue(lo <= took < hi, "took %.2f s, expected %.1f to %.1f" % (took, lo, hi))

    def test_connect(self):
        self.timed("/blackhole", 0.45, 1.5)
        self.gw.wait_for_log(r"connecting to blackhole took over 0.5 s")

    def test_first_byte(self):
        self.timed("/whole?path=/first-byte", 0.55, 1.6)
        self.gw.wait_for_log(r"api sent no answer within 0.6 s")

    def test_idle_between_reads(self):
        self.timed("/whole?path=/idle", 0.65, 1.7)
        self.gw.wait_for_log(r"api sent nothing for 0.7 s")

    def test_whole_call(self):
        self.timed("/whole?path=/drip", 1.95, 3.2)
        self.gw.wait_for_log(r"api took over 2 s")

    def test_idle_mid_stream_cuts_the_answer(self):
        # A streamed answer is under way: the deadline cannot be a 504 any more, it cuts the answer.
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(request_bytes("GET", "/v1/proxy?path=/idle"))
            raw = harness.read_to_eof(s)
            took = time.monotonic() - t0
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertIn(b"Content-Length: 100", head)
        self.assertEqual(b"x" * 50, body)
        self.assertTrue(0.65 <= took < 2, took)


class CurlDeadlinesTest(NativeDeadlinesTest):
    client = "curl"


if __name__ == "__main__":
    unittest.main()
