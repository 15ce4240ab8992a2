"""Regressions of issue 11, point 6, against the running binary: each failed before its fix."""
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402

ROUTES = r'''
local gw = require "luagate"
gw.get("/t/items/:id", function(req) return 99 end)
gw.get("/t/slow", function(req) gw.sleep(2) return 200, "late" end)
gw.get("/t/ctype", { after = function(req, res) res.headers["content-type"] = "application/xml" end },
       function(req) return 200, "<a/>", { ["Content-Type"] = "text/html", ["X-A"] = "1" } end)
'''


@harness.require_binary
class DefectsTest(harness.GatewayTestCase):
    GATEWAY_ARGS = {"extra_routes": {"zz_defects.lua": ROUTES}, "log_level": "info", "probe": True}

    def test_invalid_status_logs_value_and_route(self):
        r = self.gw.raw(request_bytes("GET", "/t/items/5"))
        self.assertEqual(r.status, 500)
        self.gw.wait_for_log(r"invalid status 99 for GET /t/items/5 \(route /t/items/:id\)")

    def test_one_content_type_after_a_middleware_changes_its_spelling(self):
        r = self.gw.raw(request_bytes("GET", "/t/ctype"))
        self.assertEqual(r.headers_named("Content-Type"), ["application/xml"])
        self.assertEqual(r.headers_named("X-A"), ["1"])

    def test_client_caused_errors_and_aborts_are_not_logged_at_info(self):
        # A soak wrote an info line for every bad request and every client that left early.
        before = len(self.gw.log().splitlines())
        for junk in (b"BAD\r\n\r\n", b"GET /hello HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n x\r\n\r\n"):
            with self.gw.connect() as c:
                c.send(junk)
                c.read_until_closed(3)
        s = socket.create_connection((self.gw.host, self.gw.port))
        s.sendall(request_bytes("GET", "/t/slow"))
        self.gw.wait_for_log("probe: start GET /t/slow")
        s.close()
        time.sleep(0.3)
        self.assertEqual(self.gw.request("GET", "/hello")[0], 200)
        new = [line for line in self.gw.log().splitlines()[before:] if "probe:" not in line]
        self.assertEqual(new, [])


@harness.require_binary
class DuplicateRouteTest(unittest.TestCase):
    def test_a_route_registered_twice_stops_the_start_naming_both(self):
        gw = harness.Gateway(extra_routes={
            "a_one.lua": 'local gw = require "luagate"\ngw.get("/hello", function() return 200, "again" end)\n'})
        try:
            harness.write_file(gw.conf_path, gw.config_text(harness.free_port()))
            p = harness.run_luagate(["-t", "-c", gw.conf_path])
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("route GET /hello is registered twice", p.stderr)
            self.assertRegex(p.stderr, r"a_one\.lua:2 and at \S*hello\.lua:\d+")
        finally:
            gw.close()


if __name__ == "__main__":
    unittest.main()
