"""/v1/proxy through the gateway into its own demo API (routes/demo.lua), upstream errors, the
request id passed upstream, and Lua errors in handlers."""
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DEMO_AUTH_HEADER, request_bytes  # noqa: E402

DEMO_JSON = {"ok": True, "items": [1, 2, 3], "name": "demo"}
HEX16 = r"^[0-9a-f]{16}$"


def get(target, headers=None):
    return request_bytes("GET", target, headers)


@harness.require_binary
class ProxyTest(harness.GatewayTestCase):

    def test_proxy_json(self):
        status, headers, body = self.gw.request("GET", "/v1/proxy?path=/json")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(json.loads(body), DEMO_JSON)
        self.assertEqual(int(headers["Content-Length"]), len(body))

    def test_proxy_encoded_path_and_query(self):
        r = self.gw.raw(get("/v1/proxy?path=%2Fecho%3Fa%3D1%26b%3Dtwo%2520words"))
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["method"], "GET")
        self.assertEqual(doc["path"], "/demo/echo")
        self.assertEqual(doc["query"], {"a": "1", "b": "two words"})

    def test_upstream_status_passed_through(self):
        for code in (201, 404, 418, 503):
            r = self.gw.raw(get("/v1/proxy?path=/status/%d" % code))
            self.assertEqual(r.status, code, r)
            self.assertEqual(r.json(), {"status": code})
            self.assertEqual(r.header("Content-Type"), "application/json")

    def test_head_through_proxy(self):
        with self.gw.connect() as c:
            c.send(request_bytes("HEAD", "/v1/proxy?path=/json") + get("/hello"))
            h = c.read_response(head=True)
            g = c.read_response()
        self.assertEqual(h.status, 200)
        self.assertEqual(int(h.header("Content-Length")), len(json.dumps(DEMO_JSON, separators=(",", ":"))))
        self.assertEqual(h.body, b"")
        self.assertEqual(g.body, b'{"hello":"world"}')

    # ---- auth: the demo API needs it, the gateway adds it from the config

    def test_demo_requires_auth(self):
        r = self.gw.raw(get("/demo/json"))
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("WWW-Authenticate"), 'Basic realm="demo"')
        r = self.gw.raw(get("/demo/json", {"Authorization": "Basic ZGVtbzp3cm9uZw=="}))  # demo:wrong
        self.assertEqual(r.status, 401)
        r = self.gw.raw(get("/demo/json", {"Authorization": DEMO_AUTH_HEADER}))
        self.assertEqual((r.status, r.json()), (200, DEMO_JSON))

    def test_proxy_sends_configured_auth(self):
        # The client sends no credentials: the 200 proves the gateway added the configured ones.
        r = self.gw.raw(get("/v1/proxy?path=/json"))
        self.assertEqual((r.status, r.json()), (200, DEMO_JSON))

    def test_client_authorization_not_forwarded(self):
        # The client's own (wrong) credentials must not replace the configured ones.
        r = self.gw.raw(get("/v1/proxy?path=/json", {"Authorization": "Basic ZGVtbzp3cm9uZw=="}))
        self.assertEqual(r.status, 200, r)

    # ---- request id

    def test_request_id_propagated_upstream(self):
        r = self.gw.raw(get("/v1/proxy?path=/echo", {"X-Request-Id": "trace-42.a_b:c"}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Request-Id"), "trace-42.a_b:c")
        self.assertEqual(r.json()["request_id"], "trace-42.a_b:c")

    def test_generated_request_id_propagated_upstream(self):
        r = self.gw.raw(get("/v1/proxy?path=/echo"))
        self.assertEqual(r.status, 200, r)
        rid = r.header("X-Request-Id")
        self.assertRegex(rid, HEX16)
        self.assertEqual(r.json()["request_id"], rid)

    def test_request_ids_do_not_leak_between_requests(self):
        # Handler state (coroutines may be reused) must not carry one request's id into the next.
        with self.gw.connect() as c:
            for i, rid in enumerate(["leak-a", None, "leak-b", None, None, "leak-c"]):
                c.send(get("/v1/proxy?path=/echo", {"X-Request-Id": rid} if rid else {}))
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                if rid:
                    self.assertEqual(r.header("X-Request-Id"), rid)
                else:
                    self.assertRegex(r.header("X-Request-Id"), HEX16)
                self.assertEqual(r.json()["request_id"], r.header("X-Request-Id"), "request %d" % i)

    def test_uuid_request_id_propagated_upstream(self):
        rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
        r = self.gw.raw(get("/v1/proxy?path=/echo", {"X-Request-Id": rid}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Request-Id"), rid)
        self.assertEqual(r.json()["request_id"], rid)

    # ---- bad paths: never sent upstream

    def test_bad_paths_400(self):
        bad = {
            "no leading slash": "json",
            "empty": "",
            "protocol-relative": "%2F%2Fevil.example%2Fjson",
            "dot-dot": "%2F..%2F..%2Fetc%2Fpasswd",
            "dot-dot at end": "%2Fdemo%2F..",
            "encoded dot-dot": "%2F%252e%252e%2Fjson",
            "space": "%2Fjs%20on",
            "tab": "%2Fjson%09",
            "newline": "%2Fjson%0D%0AX-Injected%3A%201",
            "backslash": "%2F%5Cevil.example",
            "absolute URL": "http%3A%2F%2Fevil.example%2F",
        }
        for what, value in bad.items():
            r = self.gw.raw(get("/v1/proxy?path=" + value))
            self.assertEqual(r.status, 400, "%s (%r): %r" % (what, value, r))
            self.assertIn("error", r.json())
        r = self.gw.raw(get("/v1/proxy"))
        self.assertEqual(r.status, 400, "no path parameter")


STATS_ROUTE = 'local gw = require "luagate"\ngw.get("/t/stats", function() return 200, gw.stats() end)\n'


@harness.require_binary
class ClientGoneTest(harness.GatewayTestCase):
    # probe: logs "probe: start GET /demo/slow" when the upstream side starts; a client that left
    # is logged at debug
    GATEWAY_ARGS = {"probe": True, "extra_routes": {"zz_stats.lua": STATS_ROUTE}, "log_level": "debug"}

    def stats(self):
        s = self.gw.raw(get("/t/stats")).json()
        return {k: s[k] for k in ("handlers", "upstream_active")}

    def test_client_gone_while_in_flight(self):
        for i in range(5):
            with self.gw.connect() as c:
                c.send(get("/v1/proxy?path=%2Fslow%3Fs%3D5", {"X-Request-Id": "gone-%d" % i}))
                self.gw.wait_for_log(r"gone-%d: probe: start GET /demo/slow" % i)
        # Both ends of each abandoned call stop: the proxy's handler, and (because its transfer is
        # aborted, closing the upstream connection) the demo's /demo/slow handler too. Nothing is
        # left waiting: no handler but the stats one, no transfer in flight.
        harness.wait_until(lambda: self.gw.log().count("gone-4: client closed") >= 2, 5, message="both ends stopped")
        harness.wait_until(lambda: self.stats() == {"handlers": 1, "upstream_active": 0}, 5,
                           message="no handler or transfer left")
        s = self.stats()
        self.assertEqual((s["handlers"], s["upstream_active"]), (1, 0))
        r = self.gw.raw(get("/v1/proxy?path=/json"))
        self.assertEqual(r.status, 200)


@harness.require_binary
class UpstreamErrorsTest(unittest.TestCase):
    """502 and 504: each with its own gateway config."""

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")

    def test_refused_502(self):
        dead = harness.free_port()  # nobody listens there
        with harness.Gateway(api={"url": "http://127.0.0.1:%d/demo" % dead}) as gw:
            t0 = time.monotonic()
            r = gw.raw(get("/v1/proxy?path=/json", {"X-Request-Id": "refused-1"}))
            self.assertEqual(r.status, 502, r)
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(r.header("Content-Type"), "application/json")
            self.assertIn("error", r.json())
            self.assertEqual(r.header("X-Request-Id"), "refused-1")
            self.assertEqual(gw.raw(get("/hello")).status, 200)
            self.assertEqual(gw.stop(), 0)

    def test_timeout_504(self):
        with harness.Gateway(api={"timeout": 0.5}) as gw:
            t0 = time.monotonic()
            r = gw.raw(get("/v1/proxy?path=%2Fslow%3Fs%3D3"), timeout=5)
            elapsed = time.monotonic() - t0
            self.assertEqual(r.status, 504, r)
            self.assertIn("error", r.json())
            self.assertGreaterEqual(elapsed, 0.45, "not before the timeout")
            self.assertLess(elapsed, 2.0, "at the timeout, not when the upstream answers")
            # Within the timeout it works.
            r = gw.raw(get("/v1/proxy?path=%2Fslow%3Fs%3D0.1"))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(gw.stop(), 0)

    def test_wrong_upstream_credentials_passed_through(self):
        with harness.Gateway(api={"auth": {"user": "demo", "password": "nope"}}) as gw:
            r = gw.raw(get("/v1/proxy?path=/json"))
            self.assertEqual(r.status, 401, r)
            self.assertEqual(gw.stop(), 0)


BOOM = r'''
local gw = require "luagate"
gw.get("/boom", function() error("kaboom") end)
gw.get("/boom-after-fetch", function()
  local res = gw.fetch("api", "/json")
  error("kaboom after fetch " .. tostring(res and res.status))
end)
gw.get("/boom-table", function() error({ code = 1 }) end)
gw.get("/inject", function() return 200, "x", { ["X-Evil"] = "a\r\nSet-Cookie: pwned=1" } end)
'''


@harness.require_binary
class LuaErrorTest(harness.GatewayTestCase):
    GATEWAY_ARGS = {"extra_routes": {"boom.lua": BOOM}}

    def assert_500(self, r, rid):
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        doc = r.json()
        self.assertEqual(doc.get("request_id"), rid)
        self.assertIn("error", doc)
        self.assertNotIn("kaboom", r.body.decode(), "the error itself is not shown to clients")

    def log_entry(self, rid):
        """The log entry (a line and its continuation lines) that names request rid."""
        m = self.gw.wait_for_log(r"\n?[^\n]*%s[^\n]*\n(?:(?!\d{4}/\d\d/\d\d )[^\n]*\n)*" % re.escape(rid))
        return m.group(0)

    def test_error_gives_500_and_logs_traceback(self):
        r = self.gw.raw(get("/boom", {"X-Request-Id": "boom-1"}))
        self.assert_500(r, "boom-1")
        entry = self.log_entry("boom-1")
        self.assertIn("kaboom", entry)
        self.assertIn("stack traceback", entry)
        self.assertIn("boom.lua:3", entry, "the traceback points at the script line")

    def test_error_after_fetch_gives_500(self):
        r = self.gw.raw(get("/boom-after-fetch", {"X-Request-Id": "boom-2"}))
        self.assert_500(r, "boom-2")
        entry = self.log_entry("boom-2")
        self.assertIn("kaboom after fetch 200", entry)
        self.assertIn("stack traceback", entry)

    def test_non_string_error_gives_500(self):
        r = self.gw.raw(get("/boom-table", {"X-Request-Id": "boom-3"}))
        self.assert_500(r, "boom-3")
        self.assertIn("stack traceback", self.log_entry("boom-3"))

    def test_header_injection_refused(self):
        r = self.gw.raw(get("/inject", {"X-Request-Id": "inject-1"}))
        self.assertEqual(r.status, 500, r)
        self.assertIsNone(r.header("Set-Cookie"))
        self.assertIsNone(r.header("X-Evil"))
        self.assertEqual(r.json()["request_id"], "inject-1")

    def test_server_and_connection_survive(self):
        with self.gw.connect() as c:
            c.send(get("/boom", {"X-Request-Id": "boom-4"}) + get("/hello") + get("/v1/proxy?path=/json"))
            r1, r2, r3 = c.read_responses(3)
        self.assertEqual([r1.status, r2.status, r3.status], [500, 200, 200])
        self.assertEqual(r3.json(), DEMO_JSON)
        for _ in range(20):
            self.assertEqual(self.gw.raw(get("/boom")).status, 500)
        self.assertEqual(self.gw.raw(get("/hello")).status, 200)


if __name__ == "__main__":
    unittest.main()
