"""Upstreams for integration tests, on loopback: a real nginx serving files, and a scripted TCP
server whose every connection is handled by a test's own function (to misbehave exactly as asked).

    with Nginx({"big.bin": data}) as ng:          # nginx on a free port, files under its root
        url = ng.url                              # http://127.0.0.1:PORT
    up = Scripted(handler).start()                # handler(conn) runs in a thread per connection
    ...
    up.stop()

Everything started here is stopped by PID (nginx) or by closing its sockets (Scripted).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available():
    return os.path.isfile(NGINX) and os.access(NGINX, os.X_OK)


class Nginx:
    """nginx on a loopback port, serving the given files (name -> bytes) with keep-alive. The
    files are written under its own temp root; stopped with SIGQUIT, then SIGKILL, by PID."""

    CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log %(dir)s/error.log warn;
pid %(dir)s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(dir)s/tmp;
    proxy_temp_path %(dir)s/tmp;
    fastcgi_temp_path %(dir)s/tmp;
    uwsgi_temp_path %(dir)s/tmp;
    scgi_temp_path %(dir)s/tmp;
    keepalive_requests 100000;
    sendfile on;
    server {
        listen 127.0.0.1:%(port)d;
        root %(dir)s/www;
        location / { }
    }
}
"""

    def __init__(self, files):
        self.dir = tempfile.mkdtemp(prefix="luagate-nginx-")
        os.mkdir(os.path.join(self.dir, "www"))
        os.mkdir(os.path.join(self.dir, "tmp"))
        for name, data in files.items():
            with open(os.path.join(self.dir, "www", name), "wb") as f:
                f.write(data)
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.port = harness.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        harness.write_file(conf, self.CONF % {"dir": self.dir, "port": self.port})
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: %s" % harness.read_file(os.path.join(self.dir, "error.log")))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError("nginx did not listen on %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Scripted:
    """A TCP server on loopback: handler(conn) runs in a thread for each connection accepted
    (conn is an UpstreamConn). Counts connections. stop() closes the listener and every socket."""

    def __init__(self, handler, backlog=128):
        self.handler = handler
        self.backlog = backlog
        self.connections = 0
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None
        self.stopped = False

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(self.backlog)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self.stopped:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        conn = UpstreamConn(s)
        try:
            self.handler(conn)
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass


class UpstreamConn:
    """One connection to a Scripted upstream: read requests, write raw bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.requests = 0

    def read_request(self, timeout=10):
        """(method, target, headers {lower name: value}, body) of the next request, or None when the
        client closed. Reads a Content-Length or chunked body whole."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        self.header_names = []  # as sent, in order, repeats included
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.header_names.append(k.strip().lower())
            headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = self.read_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self.read_chunked()
        self.requests += 1
        return method, target, headers, body

    def read_exactly(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_chunked(self):
        out = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():
                    pass
                return b"".join(out)
            out.append(self.read_exactly(size))
            self._line()

    def send(self, data):
        self.sock.sendall(data)

    def respond(self, status=200, body=b"", headers=None, reason="OK"):
        hs = dict(headers or {})
        hs.setdefault("Content-Length", str(len(body)))
        head = "HTTP/1.1 %d %s\r\n" % (status, reason) + "".join("%s: %s\r\n" % kv for kv in hs.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1") + body)

    def reset(self):
        """Close with a RST (SO_LINGER 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class RssSampler:
    """Samples the RSS of a process and its children (a gateway's master and workers) every 20 ms
    in a thread; .peak_kb and .start_kb once stopped."""

    def __init__(self, pid):
        self.pid = pid
        self.start_kb = harness.tree_rss_kb(pid)
        self.peak_kb = self.start_kb
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.peak_kb = max(self.peak_kb, harness.tree_rss_kb(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return (self.peak_kb - self.start_kb) / 1024.0
