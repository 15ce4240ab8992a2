"""Test harness for luagate's integration tests: the real binary, on loopback, Python stdlib only.

    gw = Gateway(settings={"max_body_size": 1000}).start()
    status, headers, body = gw.request("GET", "/hello")
    with gw.connect() as c:                       # a raw socket
        c.send(b"GET /hello HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        r = c.read_response()
    rc = gw.stop()                                # SIGTERM, returns the exit code
    gw.close()                                    # kills it if still alive, removes the temp dir

The binary is $LUAGATE_BIN, by default <repo>/build/luagate. Set LUAGATE_KEEP_TMP=1 to keep each
gateway's temp dir (config, routes, stderr log) for inspection.
"""
import email.utils
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ROUTES = os.path.join(REPO, "routes")
LUAGATE_BIN = os.environ.get("LUAGATE_BIN") or os.path.join(REPO, "build", "luagate")

DEMO_AUTH = {"user": "demo", "password": "demo-secret"}
# "Basic " + base64("demo:demo-secret")
DEMO_AUTH_HEADER = "Basic ZGVtbzpkZW1vLXNlY3JldA=="

START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0

# An extra route script the tests add next to the shipped ones: it logs "probe: start METHOD PATH"
# when a route handler starts (after any middleware let the request through), so that a test can
# wait, by polling the log, until a request is really in flight inside the gateway. It wraps the
# handler (the last argument) of gw.route and gw.get/post/...; its name sorts before the shipped
# scripts so that the wrappers are in place when they load. (A handler may log twice when gw.get
# goes through gw.route: harmless.)
PROBE_ROUTE = r'''
local gw = require "luagate"
local function wrap(register, nfixed)
  return function(...)
    local args, n = { ... }, select("#", ...)
    local handler = args[n]
    if n > nfixed and type(handler) == "function" then
      args[n] = function(req, ...)
        gw.log("probe: start " .. req.method .. " " .. req.path)
        return handler(req, ...)
      end
    end
    return register(unpack(args, 1, n))
  end
end
gw.route = wrap(gw.route, 2)
for _, m in ipairs { "get", "post", "put", "patch", "delete", "options", "head" } do
  if gw[m] then gw[m] = wrap(gw[m], 1) end
end
'''


def binary_available():
    return os.path.isfile(LUAGATE_BIN) and os.access(LUAGATE_BIN, os.X_OK)


def require_binary(testcase_cls):
    """Class decorator: skip (loudly) when the binary has not been built."""
    return unittest.skipUnless(binary_available(), "luagate binary not found at %s (set LUAGATE_BIN)"
                               % LUAGATE_BIN)(testcase_cls)


def free_port(host="127.0.0.1"):
    """A loopback port nobody listens on right now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host != "localhost" else "127.0.0.1", 0))
        return s.getsockname()[1]


def to_lua(value, indent=""):
    """A Python value as a Lua literal (str, int, float, bool, dict with name keys, list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ord(ch) < 32:
                out.append("\\%03d" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, dict):
        items = ["%s = %s" % (k, to_lua(v)) for k, v in value.items()]
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, (list, tuple)):
        return "{ " + ", ".join(to_lua(v) for v in value) + " }"
    if isinstance(value, LuaRaw):
        return value.text
    raise TypeError("cannot write %r as Lua" % (value,))


class LuaRaw:
    """Lua source written as is into a config (e.g. a deliberately wrong expression)."""

    def __init__(self, text):
        self.text = text


def read_file(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_file(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def run_luagate(args, cwd=None, timeout=20):
    """Run the binary to completion (for -t, --help, bad configs): CompletedProcess with text."""
    return subprocess.run([LUAGATE_BIN] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def wait_until(predicate, timeout, interval=0.01, message="condition"):
    """Poll predicate() until it is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message))
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Raw HTTP over a socket

class Response:
    """One parsed HTTP response."""

    def __init__(self, version, status, reason, header_list, body, raw):
        self.version = version          # "HTTP/1.1"
        self.status = status            # 200
        self.reason = reason            # "OK"
        self.header_list = header_list  # [(name, value)] as sent
        self.body = body                # bytes
        self.raw = raw                  # the bytes of the whole response

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.header_list:
            if k.lower() == name:
                return v
        return default

    def headers_named(self, name):
        name = name.lower()
        return [v for k, v in self.header_list if k.lower() == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %d %r %r>" % (self.version, self.status, self.header_list, self.body[:200])


class ConnectionClosed(Exception):
    """The peer closed before a whole response arrived."""


class RawConn:
    """A client socket with a read buffer, for bytes-exact requests and responses."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, source=None):
        """source: the local address to connect from (another loopback address: another client)."""
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()  # appended to in place: a large body must not cost O(n^2)
        self.eof = False
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read more into buf; False on EOF/reset. Raises socket.timeout past the deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for the response")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, head=False, timeout=None):
        """Read one response. head=True: the request was HEAD (no body whatever the headers say)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed after %r" % self.buf)
        end = self.buf.index(b"\r\n\r\n")
        head_bytes = self.buf[:end].decode("latin-1")
        lines = head_bytes.split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        version, status, reason = m.group(1), int(m.group(2)), m.group(3)
        header_list = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise AssertionError("bad header line %r in %r" % (line, head_bytes))
            header_list.append((name, value.strip()))
        pos = end + 4
        lengths = [v for k, v in header_list if k.lower() == "content-length"]
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in header_list)
        if head or status < 200 or status in (204, 304):
            body_len = 0
        elif lengths:
            body_len = int(lengths[0])
        elif chunked:
            return self._read_chunked(version, status, reason, header_list, pos, deadline)
        else:
            body_len = None  # until close
        if body_len is None:
            while self._fill(deadline):
                pass
            body_len = len(self.buf) - pos
        while len(self.buf) < pos + body_len:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed in the body: %r" % self.buf)
        raw = bytes(self.buf[:pos + body_len])
        body = bytes(self.buf[pos:pos + body_len])
        del self.buf[:pos + body_len]
        return Response(version, status, reason, header_list, body, raw)

    def _read_chunked(self, version, status, reason, header_list, pos, deadline):
        """A chunked body (luagate streams answers of unknown length so): the chunks, joined; the
        connection closing before the last chunk raises ConnectionClosed."""
        body, at = bytearray(), pos
        while True:
            while b"\r\n" not in self.buf[at:]:
                if not self._fill(deadline):
                    raise ConnectionClosed("connection closed in a chunked body: %r" % self.buf)
            eol = self.buf.index(b"\r\n", at)
            size = int(bytes(self.buf[at:eol]).split(b";")[0], 16)
            at = eol + 2
            if size == 0:
                while b"\r\n" not in self.buf[at:]:  # trailers until an empty line
                    if not self._fill(deadline):
                        raise ConnectionClosed("connection closed in the trailers: %r" % self.buf)
                while not self.buf[at:].startswith(b"\r\n"):
                    at = self.buf.index(b"\r\n", at) + 2
                    while b"\r\n" not in self.buf[at:]:
                        if not self._fill(deadline):
                            raise ConnectionClosed("connection closed in the trailers: %r" % self.buf)
                at += 2
                raw = bytes(self.buf[:at])
                del self.buf[:at]
                return Response(version, status, reason, header_list, bytes(body), raw)
            while len(self.buf) < at + size + 2:
                if not self._fill(deadline):
                    raise ConnectionClosed("connection closed in a chunk: %r" % self.buf)
            body += self.buf[at:at + size]
            at += size + 2

    def read_responses(self, n, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        return [self.read_response(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def read_until_closed(self, timeout=None):
        """Everything until the peer closes: bytes. Raises socket.timeout if it does not close."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while self._fill(deadline):
            pass
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def is_closed_by_peer(self, timeout=2.0):
        """True when the peer closes (FIN or RST) within timeout with no more bytes; False when it
        is still open at the deadline. Extra bytes raise AssertionError."""
        try:
            rest = self.read_until_closed(timeout)
        except socket.timeout:
            return False
        if rest:
            raise AssertionError("unexpected bytes before close: %r" % rest)
        return True


def read_to_eof(sock):
    """Everything a plain socket receives until the peer closes; a reset ends it too (the bytes so
    far are returned)."""
    got = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got.append(chunk)
    return b"".join(got)


def parse_responses(data, n=None, head=False):
    """Parse responses from bytes already received (a whole exchange read until close).
    n: how many to expect (default: as many as there are)."""
    p = RawConn.__new__(RawConn)
    p.buf, p.eof, p.reset, p.timeout = bytearray(data), True, False, 0
    out = []
    while p.buf and (n is None or len(out) < n):
        out.append(p.read_response(head=head))
    if n is not None and len(out) < n:
        raise AssertionError("expected %d responses, got %d in %r" % (n, len(out), data))
    return out


def request_bytes(method, target, headers=None, body=b"", version="HTTP/1.1", host="test"):
    """A request as bytes. headers: list of (name, value) or dict; Host and Content-Length are
    added (unless given, or host is None, or there is no body for Content-Length)."""
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hs}
    if host is not None and "host" not in names:
        hs.insert(0, ("Host", host))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hs.append(("Content-Length", str(len(body))))
    out = "%s %s %s\r\n" % (method, target, version)
    out += "".join("%s: %s\r\n" % (k, v) for k, v in hs)
    return out.encode("latin-1") + b"\r\n" + body


def chunked(body, sizes):
    """body as chunked transfer coding, cut into the given chunk sizes (then the rest)."""
    out, pos = b"", 0
    for n in sizes:
        piece = body[pos:pos + n]
        if not piece:
            break
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        pos += n
    if pos < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\n\r\n"


def parse_http_date(value):
    """The datetime of an IMF-fixdate (RFC 9110 5.6.7), or AssertionError."""
    if not re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
                    r"Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$", value or ""):
        raise AssertionError("not an IMF-fixdate: %r" % value)
    return email.utils.parsedate_to_datetime(value)


def rss_kb(pid):
    """Resident memory of a process, from /proc (kB)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child_pids(pid):
    """A process's live children, from /proc (a gateway's master: its workers)."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.add(int(name))
    return out


class only_worker:
    """Within the block only the worker `pid` of gateway `gw` can accept: the master's other live
    children are stopped (SIGSTOP), then continued. Every worker accepts on the one socket and the
    first awake takes a connection, so which one answers is otherwise the scheduler's choice: on a
    loaded machine one worker may take them all."""

    def __init__(self, gw, pid):
        self.others = sorted(child_pids(gw.proc.pid) - {pid})

    def __enter__(self):
        for p in self.others:
            os.kill(p, signal.SIGSTOP)
        for p in self.others:  # stopped for sure before the caller connects
            wait_until(lambda: process_state(p) in ("T", None), 5, 0.005, "worker %d stopped" % p)
        return self

    def __exit__(self, *exc):
        for p in self.others:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass


def alive(pid):
    """Is the process there and not a zombie?"""
    return process_state(pid) not in (None, "Z")


def process_state(pid):
    """A process's state letter (R, S, T, Z...), None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def tree_rss_kb(pid):
    """Resident memory of a process and its children (a master and its workers, which serve the
    requests: the master's own RSS alone would say nothing of them), kB."""
    total = 0
    for p in {pid} | child_pids(pid):
        try:
            total += rss_kb(p)
        except OSError:  # exited meanwhile
            pass
    return total


# --------------------------------------------------------------------------------------------
# A misbehaving upstream

# Answers that RFC 9112 says a recipient must refuse (llhttp 8.1 lets several of them through).
MALFORMED_ANSWERS = {
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 2\r\n\r\nok",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "control-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "bad-name": b"HTTP/1.1 200 OK\r\nX(A): 1\r\nContent-Length: 2\r\n\r\nok",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "chunked-not-last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n",
}


class FaultUpstream:
    """An HTTP upstream on a loopback port that misbehaves as the request's path says:

        /close-mid-body   chunked, one chunk, then closes
        /short-body       Content-Length: 1000, 10 bytes, then closes
        /bad-status       a malformed status line
        /endless-chunked  chunks until the peer leaves
        /drip-headers     its head one byte every 0.5 s
        /too-large        Content-Length: 70 MiB and all of it (more than luagate buffers)
        /big?mb=N         N MiB (a well-formed answer, for memory tests)
        /silent           reads the request, never answers
        /status-NNN       status NNN with a 2-byte body
        /malformed-NAME   one of MALFORMED_ANSWERS: framing a strict recipient must refuse
        /switch           an unsolicited "101 Switching Protocols"
        anything else     200 "ok"

    Each connection has a thread of its own and serves one request. with FaultUpstream() as up: up.url
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.stopping = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(65536)
                if not chunk:
                    return
                head += chunk
            target = head.split(b" ", 2)[1].decode("latin-1")
            self._answer(c, target)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
            if c in self.conns:
                self.conns.remove(c)

    def _answer(self, c, target):
        path, _, query = target.partition("?")
        if path == "/close-mid-body":
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        elif path == "/short-body":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        elif path == "/bad-status":
            c.sendall(b"HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.2)
        elif path == "/endless-chunked":
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"e" * 65536)
            while not self.stopping.is_set():
                c.sendall(chunk)
        elif path == "/drip-headers":
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                if self.stopping.wait(0.5):
                    return
                c.sendall(bytes([b]))
        elif path == "/too-large":
            n = 70 << 20
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            block = b"L" * (1 << 20)
            for _ in range(n >> 20):
                c.sendall(block)
        elif path == "/big":
            mb = int(query.partition("mb=")[2] or 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (mb << 20))
            block = b"B" * (1 << 20)
            for _ in range(mb):
                c.sendall(block)
        elif path == "/silent":
            self.stopping.wait(30)
        elif path.startswith("/malformed-"):
            c.sendall(MALFORMED_ANSWERS[path[len("/malformed-"):]])
            self.stopping.wait(0.5)
        elif path.startswith("/status-"):
            c.sendall(b"HTTP/1.1 %s Odd\r\nContent-Length: 2\r\n\r\nok" % path[8:].encode())
        elif path == "/switch":
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
            self.stopping.wait(2)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


# --------------------------------------------------------------------------------------------
# The gateway process

class Gateway:
    """One luagate process with its own temp dir, config and stderr log.

    settings: top-level config keys to add or override (values as Python, or LuaRaw).
    api: dict merged over the default "api" upstream (which points at this gateway's own /demo),
         or None to drop it. upstreams: extra upstreams by name ("{gateway}" in a url: this gateway).
    extra_routes: {"name.lua": source} written next to copies of the shipped route scripts.
    probe: add PROBE_ROUTE (logs "probe: start METHOD PATH" when a gw.route handler starts).
    routes_setting: the config's routes value as written (default: the absolute routes dir).
    cwd: the process's working directory (default: its temp dir).
    listen_host: the host part of `listen` ("::1" is written as "[::1]"); clients connect there.
    """

    def __init__(self, settings=None, api=None, upstreams=None, extra_routes=None, probe=False,
                 log_level="info", no_api=False, routes_setting=None, cwd=None, listen_host="127.0.0.1"):
        self.listen_host = listen_host
        self.host = listen_host.strip("[]")  # where the clients connect
        self.routes_setting = routes_setting
        self.cwd = cwd
        self.settings = dict(settings or {})
        self.api = dict(api or {})
        self.no_api = no_api
        self.upstreams = dict(upstreams or {})
        self.extra_routes = dict(extra_routes or {})
        if probe:
            self.extra_routes["00_test_probe.lua"] = PROBE_ROUTE
        self.log_level = log_level
        self.dir = tempfile.mkdtemp(prefix="luagate-it-")
        self.conf_path = os.path.join(self.dir, "gw.conf")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.proc = None
        self.port = None
        self.returncode = None
        if self.extra_routes:
            self.routes_dir = os.path.join(self.dir, "routes")
            os.mkdir(self.routes_dir)
            for name in os.listdir(ROUTES):
                if name.endswith(".lua"):
                    shutil.copy(os.path.join(ROUTES, name), self.routes_dir)
            for name, src in self.extra_routes.items():
                write_file(os.path.join(self.routes_dir, name), src)
        else:
            self.routes_dir = ROUTES

    # -- config

    def config_text(self, port):
        routes = self.routes_setting if self.routes_setting is not None else self.routes_dir
        host = "[%s]" % self.host if ":" in self.host else self.host
        lines = ['listen = "%s:%d"' % (host, port), "routes = %s" % to_lua(routes)]
        ups = {}
        if not self.no_api:
            api = {"url": "http://%s:%d/demo" % (host, port), "timeout": 10, "connect_timeout": 2,
                   "auth": dict(DEMO_AUTH)}
            api.update(self.api)
            ups["api"] = {k: v for k, v in api.items() if v is not None}
        for name, up in self.upstreams.items():  # "{gateway}" in a url: this gateway itself
            if isinstance(up, dict) and isinstance(up.get("url"), str):
                up = dict(up, url=up["url"].replace("{gateway}", "http://%s:%d" % (host, port)))
            ups[name] = up
        lines.append("upstreams = %s" % to_lua(ups))
        # The master's metrics listener on a port of its own (metrics_port() reads it from the log),
        # so that gateways running at once never contend for the default 9145.
        settings = {"log_level": self.log_level, "metrics_listen": "%s:0" % host}
        settings.update(self.settings)
        for k, v in settings.items():
            lines.append("%s = %s" % (k, to_lua(v)))
        return "\n".join(lines) + "\n"

    # -- life cycle

    def start(self):
        last = ""
        for _ in range(5):  # another process may take the free port before we bind it
            self.port = free_port(self.host)
            write_file(self.conf_path, self.config_text(self.port))
            with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out:
                self.proc = subprocess.Popen([LUAGATE_BIN, "-c", self.conf_path], stdout=out,
                                             stderr=err, stdin=subprocess.DEVNULL, cwd=self.cwd or self.dir)
            if self._wait_accepting():
                return self
            last = self.log()
            self.proc.wait(5)
            if "address already in use" not in last.lower():
                break
        raise AssertionError("luagate did not start (exit %s); stderr:\n%s\nconfig:\n%s"
                             % (self.proc.returncode, last, self.config_text(self.port)))

    def _wait_accepting(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                # Ours, not another process's: it logs that it listens on this port.
                if ":%d (config" % self.port in self.log():
                    return True
            except OSError:
                pass
            time.sleep(0.01)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=STOP_TIMEOUT):
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal (SIGTERM) and wait: the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def close(self):
        """Kill if still alive, remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not os.environ.get("LUAGATE_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        report = self.sanitizer_report()
        self.close()
        if exc_type is None and report:
            raise AssertionError("sanitizer report from luagate:\n" + report)

    # -- the log

    def log(self):
        """stderr, then the error_log file if the settings name one (relative to the temp dir)."""
        out = ""
        paths = [self.log_path]
        if isinstance(self.settings.get("error_log"), str) and self.settings["error_log"] != "stderr":
            paths.append(os.path.join(self.dir, self.settings["error_log"]))
        for path in paths:
            try:
                with open(path, "rb") as f:
                    out += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return out

    def rss_kb(self):
        """The master's and its workers' resident memory, kB."""
        return tree_rss_kb(self.proc.pid)

    def metrics_port(self, timeout=5.0):
        """The port of the master's metrics listener (/metrics, /healthz, /readyz, /status)."""
        m = self.wait_for_log(r"metrics on http://[^ ]*:(\d+)/metrics", timeout)
        return int(m.group(1))

    def metrics_get(self, path, timeout=10.0):
        """GET path on the metrics listener: (status, headers, body bytes)."""
        conn = http.client.HTTPConnection(self.host, self.metrics_port(), timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def pid_path(self):
        return os.path.join(self.dir, self.settings.get("pid", "luagate.pid"))

    def reload(self, timeout=15.0):
        """SIGHUP, and wait until the master says how it ended: the log line (reloaded, refused or
        failed)."""
        done = re.compile(r"master: (reloaded in|reload refused|reload failed)")
        before = len(done.findall(self.log()))
        self.send_signal(signal.SIGHUP)
        wait_until(lambda: len(done.findall(self.log())) > before, timeout, message="the reload's end")
        return [l for l in self.log().splitlines() if done.search(l)][before]

    def wait_for_log(self, pattern, timeout=5.0, flags=0):
        """Poll stderr until the regex matches: the match."""
        rx = re.compile(pattern, flags)

        def found():
            return rx.search(self.log())

        try:
            return wait_until(found, timeout, message="log %r" % pattern)
        except AssertionError:
            raise AssertionError("log never matched %r; stderr:\n%s" % (pattern, self.log()[-4000:]))

    def sanitizer_report(self):
        log = self.log()
        m = re.search(r"(ERROR: (Address|Leak|Thread)Sanitizer|\.c:\d+:\d+: runtime error:|handles left open)", log)
        return log[m.start():m.start() + 3000] if m else None

    # -- clients

    def connect(self, timeout=5.0):
        return RawConn(self.port, host=self.host, timeout=timeout)

    def raw(self, data, n=1, timeout=5.0, head=False):
        """Send bytes on a new connection, read n responses: list (or the one when n == 1)."""
        with self.connect(timeout) as c:
            c.send(data)
            if n == 1:
                return c.read_response(head=head)
            return c.read_responses(n)

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        """With http.client on a new connection: (status, HTTPMessage headers, body bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def server_side_established(self, client_port):
        """Is the gateway's end of the connection from client_port still ESTABLISHED (not closed
        by the gateway)? From /proc/net/tcp: local gateway port, remote client port."""
        want = (":%04X" % self.port, ":%04X" % client_port)
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                local, remote, state = line.split()[1:4]
                if local.endswith(want[0]) and remote.endswith(want[1]):
                    return state == "01"
        return False

    def server_side_held(self, client_port):
        """Does the gateway still hold a descriptor for its end of the connection from client_port
        (any state, lingering included)? A socket closed by its process stays in /proc/net/tcp
        (FIN_WAIT2, TIME_WAIT) with no inode."""
        want = (":%04X" % self.port, ":%04X" % client_port)
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want[0]) and fields[2].endswith(want[1]) and fields[9] != "0":
                    return True
        return False

    def url(self, path):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d%s" % (host, self.port, path)


class GatewayTestCase(unittest.TestCase):
    """One gateway for the whole class (GATEWAY_ARGS are Gateway's keyword arguments). At the end it
    is stopped with SIGTERM and must exit 0 with no sanitizer report: a crash fails the class."""

    GATEWAY_ARGS = {}
    gw = None

    @classmethod
    def setUpClass(cls):
        if not binary_available():
            raise unittest.SkipTest("luagate binary not found at %s (set LUAGATE_BIN)" % LUAGATE_BIN)
        cls.gw = Gateway(**cls.GATEWAY_ARGS)
        try:
            cls.gw.start()
        except Exception:
            cls.gw.close()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.gw is not None:
            finish_gateway(cls.gw, cls.__name__)


def finish_gateway(gw, who):
    """The end of a class's gateway: stopped with SIGTERM and closed. It must have lived to the end,
    exited 0 and left no sanitizer report, else AssertionError naming `who`, with its log's tail."""
    try:
        alive = gw.alive()
        rc = gw.stop() if alive else gw.proc.returncode
        report = gw.sanitizer_report()
        if not alive or rc != 0 or report:
            what = ("exited with %s on SIGTERM" % rc) if alive else ("died during the tests (exit %s)" % rc)
            raise AssertionError("%s: luagate %s%s\nstderr tail:\n%s" % (
                who, what, "\n" + report if report else "", gw.log()[-3000:]))
    finally:
        gw.close()
