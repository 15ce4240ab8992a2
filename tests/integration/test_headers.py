"""Headers across the gateway, with both upstream clients: hop-by-hop headers (Connection and what
it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) are not passed on either
way, streamed or buffered; X-Forwarded-For, -Proto and -Host tell the upstream who the client is,
believing what a client says of itself only from trusted_proxies; a Host line replaces the
upstream's host:port."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402
import upstreams  # noqa: E402

ROUTES = r'''
local gw = require "luagate"
-- The client's headers passed on wholesale (but its Host: a Host line would replace the
-- upstream's): the gateway must still drop what is not for upstream.
gw.get("/t/pass", function(req)
  local headers = {}
  for k, v in pairs(req.headers) do if k ~= "host" then headers[k] = v end end
  local res, err = gw.fetch(req.query.up or "api", "/echo", { headers = headers })
  if not res then return gw.upstream_error(err) end
  return res.status, res.body
end)
-- The upstream's answer passed on whole (buffered: the Lua path; /v1/proxy streams: the C path).
gw.get("/t/whole", function(req)
  local res, err = gw.fetch("api", req.query.path)
  if not res then return gw.upstream_error(err) end
  return res.status, res
end)
'''

HOP_ANSWER = {
    "Connection": "X-Internal-Trace, keep-alive",
    "X-Internal-Trace": "upstream-secret",
    "Keep-Alive": "timeout=5, max=100",
    "Proxy-Authenticate": 'Basic realm="inner"',
    "Proxy-Connection": "keep-alive",
    "Upgrade": "h2c",
    "Trailer": "X-Checksum",
    "X-Kept": "yes",
}


def header_upstream(seen):
    """Answers /echo with the request's headers as JSON (and records them in seen), anything else
    with a hop-by-hop-laden answer."""
    def handler(conn):
        while True:
            req = conn.read_request()
            if req is None:
                return
            method, target, headers, _ = req
            seen.append(conn.header_names)
            if target.startswith("/echo"):
                conn.respond(200, json.dumps(headers).encode(), {"Content-Type": "application/json"})
            else:
                conn.respond(200, b"hop", HOP_ANSWER)
    return handler


class HeadersCase(unittest.TestCase):
    CLIENT = "native"

    @classmethod
    def setUpClass(cls):
        if not harness.binary_available():
            raise unittest.SkipTest("luagate binary not found at %s" % harness.LUAGATE_BIN)
        cls.seen = []
        cls.up = upstreams.Scripted(header_upstream(cls.seen)).start()
        cls.gw = harness.Gateway(
            api={"url": cls.up.url, "auth": None, "client": cls.CLIENT},
            upstreams={"hosted": {"url": cls.up.url, "client": cls.CLIENT, "headers": {"Host": "api.internal"}},
                       "quiet": {"url": cls.up.url, "client": cls.CLIENT, "forwarded": False}},
            settings={"trusted_proxies": ["127.0.0.2", "10.0.0.0/8"]},
            extra_routes={"zz_headers.lua": ROUTES}, listen_host="0.0.0.0").start()
        cls.gw.host = "127.0.0.1"  # where clients connect

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()
        harness.finish_gateway(cls.gw, cls.__name__)

    def upstream_saw(self, headers, target="/t/pass", source="127.0.0.1"):
        """Send a request with headers from a client at source (the gateway listens on every
        address); the headers the upstream received."""
        with harness.RawConn(self.gw.port, timeout=10, source=source) as c:
            c.send(request_bytes("GET", target, headers))
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_hop_by_hop_request_headers_are_not_passed_on(self):
        got = self.upstream_saw({
            "Connection": "X-Client-Secret", "X-Client-Secret": "s3cret", "Keep-Alive": "timeout=9",
            "TE": "trailers", "Upgrade": "websocket", "Proxy-Authorization": "Basic eDp5",
            "Proxy-Connection": "keep-alive", "X-Passed": "yes"})
        for name in ("x-client-secret", "keep-alive", "te", "upgrade", "proxy-authorization", "proxy-connection"):
            self.assertNotIn(name, got)
        self.assertNotEqual(got.get("connection", "").lower(), "x-client-secret")
        self.assertEqual(got["x-passed"], "yes")
        self.assertEqual(got["host"], "127.0.0.1:%d" % self.up.port)

    def check_hop_answer(self, target):
        with self.gw.connect(timeout=10) as c:
            c.send(request_bytes("GET", target))
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"hop"))
        names = {k.lower() for k, _ in r.header_list}
        for name in ("x-internal-trace", "keep-alive", "proxy-authenticate", "proxy-connection", "upgrade", "trailer"):
            self.assertNotIn(name, names, target)
        self.assertNotIn("x-internal-trace", (r.header("connection") or "").lower())
        self.assertEqual(r.header("x-kept"), "yes")

    def test_hop_by_hop_answer_headers_are_not_passed_on_streamed(self):
        self.check_hop_answer("/v1/proxy?path=/hop")

    def test_hop_by_hop_answer_headers_are_not_passed_on_buffered(self):
        self.check_hop_answer("/t/whole?path=/hop")

    def test_forwarded_headers_say_who_the_client_is(self):
        got = self.upstream_saw({"Host": "shop.example"})
        self.assertEqual(got["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(got["x-forwarded-proto"], "http")
        self.assertEqual(got["x-forwarded-host"], "shop.example")

    def test_a_clients_own_claims_are_replaced_unless_it_is_a_trusted_proxy(self):
        claims = {"Host": "gw.example", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Host": "evil.example"}
        got = self.upstream_saw(claims)  # from 127.0.0.1: not trusted
        self.assertEqual((got["x-forwarded-for"], got["x-forwarded-proto"], got["x-forwarded-host"]),
                         ("127.0.0.1", "http", "gw.example"))
        got = self.upstream_saw(claims, source="127.0.0.2")  # a trusted proxy: appended to, believed
        self.assertEqual((got["x-forwarded-for"], got["x-forwarded-proto"], got["x-forwarded-host"]),
                         ("6.6.6.6, 127.0.0.2", "https", "evil.example"))

    def test_an_upstream_can_be_told_nothing_and_can_have_its_own_host(self):
        got = self.upstream_saw({"X-Forwarded-For": "6.6.6.6"}, target="/t/pass?up=quiet")
        self.assertEqual(got["x-forwarded-for"], "6.6.6.6")  # passed on as the route said
        self.assertNotIn("x-forwarded-proto", got)
        got = self.upstream_saw({}, target="/t/pass?up=hosted")
        self.assertEqual(got["host"], "api.internal")
        self.assertEqual(self.seen[-1].count("host"), 1)


@harness.require_binary
class NativeHeadersTest(HeadersCase):
    CLIENT = "native"


@harness.require_binary
class CurlHeadersTest(HeadersCase):
    CLIENT = "curl"


del HeadersCase

if __name__ == "__main__":
    unittest.main()
