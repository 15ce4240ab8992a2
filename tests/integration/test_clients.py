"""Real clients: the curl command-line tool, and a short wrk run."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CURL = shutil.which("curl")
WRK = shutil.which("wrk")


def run(args, timeout=20):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


@harness.require_binary
class CurlTest(harness.GatewayTestCase):

    def setUp(self):
        if not CURL:
            self.skipTest("curl is not installed")

    def curl(self, *args):
        p = run([CURL, "-sS", "--max-time", "10", "--noproxy", "*"] + list(args))
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p

    def test_proxy_with_curl(self):
        p = self.curl("-i", "-H", "X-Request-Id: curl-1", self.gw.url("/v1/proxy?path=/json"))
        head, _, body = p.stdout.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), head)
        self.assertIn(b"\r\nX-Request-Id: curl-1", head)
        self.assertIn(b"\r\nContent-Type: application/json", head)
        self.assertEqual(json.loads(body), {"ok": True, "items": [1, 2, 3], "name": "demo"})

    def test_curl_reuses_the_connection(self):
        p = self.curl("-v", self.gw.url("/hello"), self.gw.url("/v1/proxy?path=/json"), self.gw.url("/hello"))
        err = p.stderr.decode()
        self.assertEqual(len(re.findall(r"Re-using existing connection", err)), 2, err)
        self.assertEqual(err.count("Connected to"), 1, err)
        # The three bodies in order (the JSON encoder's key order is its own business).
        self.assertTrue(p.stdout.startswith(b'{"hello":"world"}') and p.stdout.endswith(b'{"hello":"world"}'))
        self.assertEqual(json.loads(p.stdout[17:-17]), {"ok": True, "items": [1, 2, 3], "name": "demo"})

    def test_curl_post_large_body_with_expect(self):
        body = os.urandom(3000).hex()  # 6000 bytes: curl sends "Expect: 100-continue" for large bodies
        path = os.path.join(self.gw.dir, "body.txt")
        harness.write_file(path, body)
        p = self.curl("-v", "-u", "demo:demo-secret", "-H", "Expect: 100-continue", "-H", "Content-Type: text/plain",
                      "--data-binary", "@" + path, self.gw.url("/demo/echo"))
        doc = json.loads(p.stdout)
        self.assertEqual(doc["method"], "POST")
        self.assertEqual(doc["body"], body)
        self.assertIn("HTTP/1.1 100 Continue", p.stderr.decode())

    def test_curl_http10(self):
        p = self.curl("-i", "--http1.0", self.gw.url("/hello"))
        self.assertTrue(p.stdout.startswith(b"HTTP/1.0 200 OK"), p.stdout)
        self.assertTrue(p.stdout.endswith(b'{"hello":"world"}'))

    def test_curl_head(self):
        p = self.curl("-I", self.gw.url("/hello"))
        self.assertTrue(p.stdout.startswith(b"HTTP/1.1 200 OK"), p.stdout)
        self.assertIn(b"Content-Length: 17", p.stdout)

    def test_curl_fail_on_404(self):
        p = run([CURL, "-sS", "--fail", "--max-time", "10", self.gw.url("/missing")])
        self.assertEqual(p.returncode, 22, "curl --fail exits 22 on HTTP >= 400")


@harness.require_binary
class WrkTest(harness.GatewayTestCase):

    @unittest.skipUnless(WRK, "wrk is not installed")
    def test_wrk_hello(self):
        p = run([WRK, "-t1", "-c10", "-d1s", self.gw.url("/hello")], timeout=30)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out + p.stderr.decode())
        m = re.search(r"(\d+) requests in", out)
        self.assertTrue(m, out)
        self.assertGreater(int(m.group(1)), 500, out)
        self.assertNotIn("Socket errors", out)
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.assertEqual(int(m.group(1)) if m else 0, 0, out)
        # And the gateway is still fine afterwards.
        self.assertEqual(self.gw.request("GET", "/hello")[0], 200)


STATS_ROUTE = 'local gw = require "luagate"\ngw.get("/t/stats", function() return 200, gw.stats() end)\n'


@harness.require_binary
class WrkKeepaliveTest(harness.GatewayTestCase):
    """Sustained load above the upstream pool's size: the pool's connections are still reused."""

    GATEWAY_ARGS = {"settings": {"upstream_keepalive": 2}, "extra_routes": {"zz_stats.lua": STATS_ROUTE}}

    @unittest.skipUnless(WRK, "wrk is not installed")
    def test_pool_smaller_than_the_load_keeps_reusing(self):
        opened = lambda: self.gw.raw(harness.request_bytes("GET", "/t/stats")).json()["upstream_connections_opened"]
        before = opened()
        p = run([WRK, "-t1", "-c3", "-d1s", self.gw.url("/v1/proxy?path=/json")], timeout=30)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out + p.stderr.decode())
        n = int(re.search(r"(\d+) requests in", out).group(1))
        self.assertNotIn("Non-2xx", out)
        self.assertGreater(n, 200, out)
        # Three clients, two kept connections: about one fetch in three needs a connection of its
        # own. Opening a fresh one whenever two transfers are in flight would be nearly one per fetch.
        new = opened() - before
        self.assertLess(new, n * 0.6, "%d proxied requests opened %d upstream connections" % (n, new))


OTHER_ROUTE = 'local gw = require "luagate"\ngw.get("/t/other", function() local r = assert(gw.fetch("other", "/json")) return r.status, r.body end)\n'


@harness.require_binary
class KeepaliveAcrossUpstreamsTest(harness.GatewayTestCase):
    """Idle connections one upstream's server closed must not take keep-alive from another."""

    GATEWAY_ARGS = {"settings": {"upstream_keepalive": 2, "keepalive_timeout": 0.5},
                    "extra_routes": {"zz_stats.lua": STATS_ROUTE, "zz_other.lua": OTHER_ROUTE},
                    "upstreams": {"other": {"url": "{gateway}/demo", "auth": harness.DEMO_AUTH}}}

    @unittest.skipUnless(WRK, "wrk is not installed")
    def test_another_upstream_keeps_its_connections(self):
        gw = self.gw
        opened = lambda: gw.raw(harness.request_bytes("GET", "/t/stats")).json()["upstream_connections_opened"]
        # Fill api's pool, then let its server (this gateway, keepalive_timeout 0.5 s) close them.
        p = run([WRK, "-t1", "-c3", "-d1s", gw.url("/v1/proxy?path=/json")], timeout=30)
        self.assertEqual(p.returncode, 0)
        time.sleep(1.2)
        before = opened()
        for _ in range(30):
            self.assertEqual(gw.raw(harness.request_bytes("GET", "/t/other")).status, 200)
        self.assertLessEqual(opened() - before, 2, "30 fetches in a row to another upstream")


if __name__ == "__main__":
    unittest.main()
