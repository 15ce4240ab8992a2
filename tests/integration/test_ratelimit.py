"""gw.rate_limit across processes and hosts, against a real redis-server the test starts on a free
loopback port (its own temp dir, nothing saved) and stops by its PID: exactly `limit` admitted per
window and key by two gateways of two workers each; Redis killed (fail open, fail closed, no wait,
limiting back after it returns); Redis slow (DEBUG SLEEP: the timeout holds); the shared policy
across the workers of one gateway."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class RedisServer:
    """redis-server on a free loopback port: start(), kill() (SIGKILL, as a crash), command()."""

    def __init__(self):
        if not shutil.which("redis-server"):
            raise AssertionError("redis-server is not installed (scripts/deps test installs it)")
        self.dir = tempfile.mkdtemp(prefix="luagate-redis-")
        self.port = harness.free_port()
        self.proc = None
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        self.major = int(re.search(r"v=(\d+)", version).group(1))

    def start(self):
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", self.dir]
        if self.major >= 7:
            args += ["--enable-debug-command", "local"]
        with open(os.path.join(self.dir, "redis.log"), "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        harness.wait_until(self._answers, 5, message="redis-server answering on %d" % self.port)
        return self

    def _answers(self):
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def command(self, *words, timeout=5.0):
        """One command on a new connection; the reply's first line, without its type byte."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(words)
            for w in words:
                w = str(w).encode()
                out += b"$%d\r\n%s\r\n" % (len(w), w)
            s.sendall(out)
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.split(b"\r\n")[0][1:].decode()

    def sleep_in_background(self, seconds):
        """DEBUG SLEEP from another connection: Redis answers nobody meanwhile. Returns once it
        sleeps (a PING times out)."""
        t = threading.Thread(target=self.command, args=("DEBUG", "SLEEP", seconds), kwargs={"timeout": 30})
        t.start()

        def asleep():
            try:
                self.command("PING", timeout=0.05)
                return False
            except socket.timeout:
                return True
        harness.wait_until(asleep, 5, message="redis-server asleep")
        return t


ROUTES = r'''
local gw = require "luagate"
-- Which worker answered, on every answer (429s included).
gw.use { after = function(req, res) res.headers["X-Worker"] = tostring(gw.stats().worker) end }
local function who(req) return 200, "ok" end
gw.get("/exact", gw.rate_limit { limit = 100, period = 10, key = "header:X-Key", policy = "redis",
                                 redis = "main", name = "exact" }, who)
gw.get("/open", gw.rate_limit { limit = 3, period = 10, policy = "redis", redis = "main", name = "open",
                                fail = "open", timeout = 0.3 }, who)
gw.get("/closed", gw.rate_limit { limit = 3, period = 10, policy = "redis", redis = "main", name = "closed",
                                  fail = "closed", timeout = 0.3 }, who)
gw.get("/shared", gw.rate_limit { limit = 50, period = 10, policy = "shared" }, who)
gw.get("/wait-on-redis", function()
  local v, err = gw.redis("main"):call("DEBUG", "SLEEP", "0.5")
  return 200, tostring(v or err)
end)
'''


def gateway(redis, workers=2):
    # At debug: a client that leaves is logged at that level.
    return harness.Gateway(settings={"workers": workers, "redis": {"main": {"url": redis.url(), "timeout": 1}}},
                           extra_routes={"limits.lua": ROUTES}, log_level="debug")


def all_listening(gw, n):
    harness.wait_until(lambda: len(re.findall(r"master: worker \d+ \(pid \d+\) of generation \d+ ready",
                                              gw.log())) >= n, 10, message="%d workers ready" % n)


def get(gw, path, headers=None, timeout=10):
    """(status, headers, seconds taken) of one request on a new connection."""
    t0 = time.monotonic()
    status, hdrs, _ = gw.request("GET", path, headers=headers, timeout=timeout)
    return status, hdrs, time.monotonic() - t0


def burst(targets, clients, per_client, path, key_of):
    """clients threads at once, client i on targets[i % len], `per_client` keep-alive requests each
    with X-Key: key_of(i). Returns [(key, target index, status, headers)]."""
    results, lock = [], threading.Lock()
    start = threading.Barrier(clients)

    def client(i):
        gw = targets[i % len(targets)]
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=30)
        start.wait()
        try:
            for _ in range(per_client):
                conn.request("GET", path, headers={"X-Key": key_of(i)})
                r = conn.getresponse()
                r.read()
                with lock:
                    results.append((key_of(i), i % len(targets), r.status, r.headers))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@harness.require_binary
class RateLimitTest(unittest.TestCase):

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def started(self, workers=2):
        gw = gateway(self.redis, workers)
        gw.start()
        self.addCleanup(gw.close)
        if workers > 1:
            all_listening(gw, workers)
        return gw

    def stop_cleanly(self, gw):
        self.assertEqual(gw.stop(), 0, gw.log()[-3000:])
        self.assertIsNone(gw.sanitizer_report())

    def check_window(self, results, key, limit):
        """Exactly `limit` admitted for the key, Remaining limit-1 .. 0 once each, the rest 429."""
        mine = [(s, h) for k, _, s, h in results if k == key]
        admitted = [int(h["RateLimit-Remaining"]) for s, h in mine if s == 200]
        refused = [h for s, h in mine if s == 429]
        self.assertEqual(len(admitted) + len(refused), len(mine), "only 200 and 429")
        self.assertEqual(sorted(admitted), list(range(limit)), "each Remaining once, from %d to 0" % (limit - 1))
        for h in refused:
            self.assertEqual(h["RateLimit-Remaining"], "0")
            self.assertTrue(1 <= int(h["Retry-After"]) <= 10, h["Retry-After"])
        for _, h in mine:
            self.assertEqual(h["RateLimit-Limit"], str(limit))

    def test_exact_across_two_gateways_of_two_workers(self):
        gws = [self.started(), self.started()]
        keys = lambda i: "key-%d" % (i % 4 // 2)  # two keys, each on both gateways
        results = burst(gws, 200, 3, "/exact", keys)
        self.assertEqual(len(results), 600)
        for key in ("key-0", "key-1"):
            self.check_window(results, key, 100)
        decided = {(g, h["X-Worker"]) for _, g, s, h in results}
        self.assertEqual(decided, {(0, "1"), (0, "2"), (1, "1"), (1, "2")}, "every worker of both gateways decided")
        # The next window: exactly 100 again, once the first has ended.
        reset = max(int(h["RateLimit-Reset"]) for _, _, _, h in results)
        time.sleep(reset + 0.2)
        results = burst(gws, 200, 2, "/exact", keys)
        for key in ("key-0", "key-1"):
            self.check_window(results, key, 100)
        for gw in gws:
            self.stop_cleanly(gw)

    def test_redis_killed_fails_open_or_closed_at_once_then_limits_again(self):
        gw = self.started()
        status, h, _ = get(gw, "/closed")
        self.assertEqual((status, h["RateLimit-Remaining"]), (200, "2"))
        self.redis.kill()
        slowest = 0
        for _ in range(20):
            s_open, h_open, t_open = get(gw, "/open")
            s_closed, h_closed, t_closed = get(gw, "/closed")
            self.assertEqual((s_open, s_closed), (200, 503))
            self.assertIsNone(h_open["RateLimit-Remaining"], "no made-up counts")
            self.assertEqual(h_closed["Retry-After"], "1")
            slowest = max(slowest, t_open, t_closed)
        self.assertLess(slowest, 0.3 + 0.5, "no request waits longer than the limiter's timeout")
        # Logged, but not once per request.
        lines = re.findall(r"rate limit 'closed': cannot decide", gw.log())
        self.assertTrue(1 <= len(lines) <= 4, lines)
        self.redis.start()  # the same port: each worker reconnects by itself, within a second
        for worker in (1, 2):
            gw.wait_for_log(r"worker %d \[gen \d+\]: .*redis 'main' \(127\.0\.0\.1:\d+\): connected again" % worker, 10)
        statuses = [get(gw, "/closed")[0] for _ in range(4)]
        self.assertEqual(statuses, [200, 200, 200, 429], "limiting again (a new Redis: counts start over)")
        self.stop_cleanly(gw)

    def test_slow_redis_the_timeout_holds(self):
        gw = self.started(workers=1)
        self.assertEqual(get(gw, "/closed")[0], 200)
        sleeper = self.redis.sleep_in_background(1.5)
        for path, expected in (("/closed", 503), ("/open", 200)):
            status, _, took = get(gw, path)
            self.assertEqual(status, expected)
            self.assertTrue(0.25 <= took < 0.8, "%s took %.3f s for a 0.3 s timeout" % (path, took))
        # A client that leaves while its handler waits on Redis: the command is detached.
        with gw.connect() as c:
            c.send(harness.request_bytes("GET", "/wait-on-redis"))
            time.sleep(0.1)
        gw.wait_for_log(r"client closed the connection before the response; handler stopped")
        sleeper.join(10)
        # Limiting again (the decisions that timed out were still counted when Redis woke up).
        harness.wait_until(lambda: get(gw, "/closed")[0] in (200, 429), 5, message="Redis answering again")
        answers = [get(gw, "/closed") for _ in range(3)]
        self.assertEqual((answers[-1][0], answers[-1][1]["RateLimit-Remaining"]), (429, "0"))
        self.stop_cleanly(gw)

    def test_shared_policy_exact_across_workers(self):
        gw = self.started()
        results = burst([gw], 100, 2, "/shared", lambda i: "any")
        admitted = sorted(int(h["RateLimit-Remaining"]) for _, _, s, h in results if s == 200)
        self.assertEqual(admitted, list(range(50)))
        self.assertEqual(sum(1 for r in results if r[2] == 429), 150)
        self.assertEqual({h["X-Worker"] for _, _, s, h in results}, {"1", "2"}, "both workers decided")
        self.stop_cleanly(gw)


if __name__ == "__main__":
    unittest.main()
