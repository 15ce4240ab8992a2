"""Bodies that stream, through /v1/proxy, against both upstream clients (the native one and
libcurl): 256 MiB from a real nginx to a fast client and to a slow one, a 256 MiB upload, checked
byte for byte (SHA-256), with the gateway's memory bounded all along; an upstream failing
mid-body; a client leaving mid-stream."""
import hashlib
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402
import upstreams  # noqa: E402

BIG = 256 << 20
# What the gateway may add to its memory while 256 MiB go through it: its stream buffers, a read
# slab or two, the kernel's socket buffers it does not own. A gateway that held the body would
# grow by 256 MiB.
MAX_GROWTH_MB = 48

STATS_ROUTE = '''
local gw = require "luagate"
gw.get("/stats", function() return 200, gw.stats() end)
'''


def pattern(n):
    """n deterministic bytes that are not all alike (a repeated counter block)."""
    block = b"".join(i.to_bytes(4, "big") for i in range(16384))  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def read_response_head(sock, buf=b""):
    """(status, headers {lower: value}, rest of the bytes read) of an answer's head."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed before the head: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ")[1]), headers, rest


def read_body(sock, headers, rest, pace=None):
    """Read a Content-Length body (hashing it) at full speed, or at `pace` = (bytes/s, seconds)
    first. Returns (sha256 hex, length, whether the connection closed early)."""
    h = hashlib.sha256()
    want = int(headers["content-length"])
    got = len(rest)
    h.update(rest)
    slow_until = time.monotonic() + pace[1] if pace else 0
    while got < want:
        if time.monotonic() < slow_until:
            n = pace[0] // 50
            time.sleep(0.02)
        else:
            n = 1 << 20
        chunk = sock.recv(min(n, want - got))
        if not chunk:
            return h.hexdigest(), got, True
        h.update(chunk)
        got += len(chunk)
    return h.hexdigest(), got, False


@harness.require_binary
@unittest.skipUnless(upstreams.nginx_available(), "nginx is not installed (scripts/deps test installs it)")
class NativeStreamingTest(unittest.TestCase):
    client = "native"

    @classmethod
    def setUpClass(cls):
        cls.data = pattern(BIG)
        cls.digest = hashlib.sha256(cls.data).hexdigest()
        cls.nginx = upstreams.Nginx({"big.bin": cls.data, "small.json": b'{"ok":true}'}).start()
        cls.sink = upstreams.Scripted(cls.hash_upload).start()
        cls.gw = harness.Gateway(
            api={"url": cls.nginx.url, "auth": None, "client": cls.client, "timeout": 30},
            upstreams={"sink": {"url": cls.sink.url, "client": cls.client, "timeout": 60}},
            extra_routes={"stats.lua": STATS_ROUTE, "upload.lua": cls.UPLOAD_ROUTE},
            log_level="debug",  # a client that left is logged at debug
        ).start()

    @classmethod
    def tearDownClass(cls):
        try:
            harness.finish_gateway(cls.gw, cls.__name__)
        finally:
            cls.sink.stop()
            cls.nginx.stop()

    UPLOAD_ROUTE = '''
local gw = require "luagate"
gw.post("/upload", { body = "stream" }, function(req)
  local res, err = gw.fetch("sink", "/hash", { method = "POST", body = req })
  if not res then return gw.upstream_error(err) end
  return res.status, res
end)
'''

    @staticmethod
    def hash_upload(conn):
        """The sink: answers each request with the SHA-256 of its body, read as it comes."""
        while True:
            conn.sock.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, rest = buf.split(b"\r\n\r\n", 1)
            headers = {k.strip().lower(): v.strip() for k, v in
                       (line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:])}
            h = hashlib.sha256()
            if "content-length" in headers:
                left = int(headers["content-length"]) - len(rest)
                h.update(rest)
                while left > 0:
                    chunk = conn.sock.recv(min(1 << 20, left))
                    if not chunk:
                        return
                    h.update(chunk)
                    left -= len(chunk)
            else:  # chunked
                conn.buf = rest
                while True:
                    size = int(conn._line().split(b";")[0], 16)
                    if size == 0:
                        conn._line()
                        break
                    while size > 0:
                        piece = conn.read_exactly(min(size, 1 << 20))
                        h.update(piece)
                        size -= len(piece)
                    conn._line()
            conn.respond(200, h.hexdigest().encode(), {"Content-Type": "text/plain",
                                                      "X-Framing": "length" if "content-length" in headers else "chunked"})

    def get_big(self, pace=None):
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=60) as s:
            s.sendall(request_bytes("GET", "/v1/proxy?path=/big.bin"))
            status, headers, rest = read_response_head(s)
            self.assertEqual(200, status)
            self.assertEqual(str(BIG), headers.get("content-length"))  # the upstream's length, passed on
            return read_body(s, headers, rest, pace)

    def test_256mib_to_a_fast_client(self):
        rss = upstreams.RssSampler(self.gw.proc.pid)
        digest, n, closed = self.get_big()
        growth = rss.stop()
        self.assertFalse(closed)
        self.assertEqual((BIG, self.digest), (n, digest))
        self.assertLess(growth, MAX_GROWTH_MB, "the gateway grew by %.1f MB" % growth)

    def test_256mib_to_a_client_reading_1mb_per_second(self):
        # 1 MB/s for 3 s: the gateway must stop reading the upstream, not buffer the body; then
        # the rest at full speed, and every byte must be there.
        rss = upstreams.RssSampler(self.gw.proc.pid)
        digest, n, closed = self.get_big(pace=(1 << 20, 3))
        growth = rss.stop()
        self.assertFalse(closed)
        self.assertEqual((BIG, self.digest), (n, digest))
        self.assertLess(growth, MAX_GROWTH_MB, "the gateway grew by %.1f MB" % growth)

    def upload(self, chunked):
        rss = upstreams.RssSampler(self.gw.proc.pid)
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=60) as s:
            framing = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(BIG))]
            s.sendall(request_bytes("POST", "/upload", framing))
            view = memoryview(self.data)
            for off in range(0, BIG, 1 << 20):
                piece = view[off:off + (1 << 20)]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
            if chunked:
                s.sendall(b"0\r\n\r\n")
            status, headers, rest = read_response_head(s)
            body = rest
            while len(body) < int(headers["content-length"]):
                body += s.recv(65536)
        growth = rss.stop()
        self.assertEqual(200, status, body)
        self.assertEqual(self.digest, body.decode())
        self.assertLess(growth, MAX_GROWTH_MB, "the gateway grew by %.1f MB" % growth)
        return headers

    def test_256mib_upload_with_a_length(self):
        headers = self.upload(chunked=False)
        self.assertEqual("length", headers.get("x-framing"))  # the client's length went on upstream

    def test_256mib_upload_chunked(self):
        headers = self.upload(chunked=True)
        self.assertEqual("chunked", headers.get("x-framing"))

    def stats(self):
        return json.loads(self.gw.request("GET", "/stats")[2])

    def test_a_client_leaving_mid_stream_stops_the_upstream_transfer(self):
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=10) as s:
            s.sendall(request_bytes("GET", "/v1/proxy?path=/big.bin"))
            read_response_head(s)
            s.recv(1 << 20)
        harness.wait_until(lambda: self.stats()["upstream_active"] == 0, 5, message="the upstream transfer stopped")
        self.gw.wait_for_log(r"client closed the connection")


class CurlStreamingTest(NativeStreamingTest):
    client = "curl"


@harness.require_binary
class NativeMidBodyFailureTest(unittest.TestCase):
    """An upstream that fails in the middle of its body: the client sees the cut (its connection
    closes before the body is whole), never a short body in valid framing; it is logged."""
    client = "native"

    @classmethod
    def setUpClass(cls):
        def handler(conn):
            while True:
                req = conn.read_request()
                if req is None:
                    return
                if req[1] == "/cut-length":
                    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300000)
                    return
                if req[1] == "/cut-chunked":
                    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"186a0\r\n" + b"y" * 100000 + b"\r\n")
                    return
                conn.respond(200, b"fine")
        cls.up = upstreams.Scripted(handler).start()
        cls.gw = harness.Gateway(api={"url": cls.up.url, "auth": None, "client": cls.client}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            harness.finish_gateway(cls.gw, cls.__name__)
        finally:
            cls.up.stop()

    def fetch_raw(self, path):
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=10) as s:
            s.sendall(request_bytes("GET", "/v1/proxy?path=" + path))
            return harness.read_to_eof(s)

    def test_cut_with_a_length(self):
        raw = self.fetch_raw("/cut-length")
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertIn(b"Content-Length: 1000000", head)
        self.assertLess(len(body), 1000000)  # closed short of its length: the client knows
        self.gw.wait_for_log(r"upstream failed mid-answer")

    def test_cut_chunked(self):
        raw = self.fetch_raw("/cut-chunked")
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertFalse(body.endswith(b"0\r\n\r\n"), "no last chunk: the client sees the cut")
        self.assertEqual(b"fine", self.gw.request("GET", "/v1/proxy?path=/ok")[2])  # and it goes on


class CurlMidBodyFailureTest(NativeMidBodyFailureTest):
    client = "curl"


if __name__ == "__main__":
    unittest.main()
