"""Observability, for real: access log lines parsed field by field (200, 404, 499, 502, 504; combined
and JSON), the error log's warn line for a failed upstream call, /metrics parsed by the Prometheus
client's own parser with counts matching the requests sent (2 workers, after one is killed -9, after
a reload), gw.metrics, health and readiness, and W3C traceparent through a real upstream that echoes
the headers it got."""
import datetime
import http.server
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

import harness

TEST_ROUTES = r'''
local gw = require "luagate"
local hits = gw.metrics.counter("test_hits_total", "Hits of /t/count")
local by = gw.metrics.counter("test_results_total", "Results by kind", { labels = { "result" } })
local hit, miss = by:labels("hit"), by:labels("miss")
local depth = gw.metrics.gauge("test_depth", "A gauge each worker sets")
local lat = gw.metrics.histogram("test_seconds", "A histogram", { buckets = { 0.1, 1 } })

gw.use { log = function(req, info)
  local ups = {}
  for i, u in ipairs(info.upstreams) do ups[i] = u.name .. ":" .. (u.status or u.error) end
  gw.log(("logphase id=%s status=%d route=%s ua=%s bytes=%d ups=%s slow=%s"):format(req.id, info.status,
    tostring(req.route), tostring(req.headers["user-agent"]), info.bytes_sent, table.concat(ups, ","),
    tostring(info.duration > 0.15)))
end }

gw.get("/t/count", function(req)
  hits:inc()
  if req.query.r == "hit" then hit:inc() else miss:inc(2) end
  depth:set(7)
  lat:observe(0.5)
  return 200, "counted"
end)
gw.get("/t/late_label", function()
  local ok, err = pcall(by.labels, by, "new")
  return 200, tostring(ok) .. " " .. tostring(err)
end)
gw.get("/t/down", function()
  local res, err = gw.fetch("down", "/x")
  if not res then return gw.upstream_error(err) end
  return res.status
end)
gw.get("/t/sleepy", function() gw.sleep(2) return 200, "late" end)
gw.get("/t/timeout", function()
  local res, err = gw.fetch("self", "/t/sleepy", { timeout = 0.2 })
  if not res then return gw.upstream_error(err) end
  return res.status
end)
gw.get("/t/hold", function() gw.sleep(2) return 200, "held" end)
-- A body that takes 2 s, and a route passing it on as it comes (a client may leave in the middle).
gw.get("/t/drip", function()
  return 200, function(write)
    for _ = 1, 20 do
      if not write(("x"):rep(100)) then return end
      gw.sleep(0.1)
    end
  end
end)
gw.get("/t/pass", function()
  local res, err = gw.fetch("self", "/t/drip", { stream = true })
  if not res then return gw.upstream_error(err) end
  return res.status, res
end)
gw.get("/t/echo", function()
  local res, err = gw.fetch("echo", "/anything")
  if not res then return gw.upstream_error(err) end
  return 200, { upstream = res:json(), trace = gw.trace() }
end)
'''

COMBINED = re.compile(
    r'^(?P<addr>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) (?P<proto>[^"]+)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)" rt=(?P<rt>\d+\.\d{3}) '
    r'id=(?P<id>\S+) route="(?P<route>[^"]*)" up="(?P<up>[^"]*)" trace=(?P<trace>[0-9a-f]{32}|-) '
    r'reason="(?P<reason>[^"]*)"$')


class EchoUpstream:
    """A real HTTP upstream on loopback that answers every GET with the headers it received, as JSON."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def gateway_args(**settings):
    return dict(extra_routes={"50_observe.lua": TEST_ROUTES}, probe=True, settings=settings,
                upstreams={"down": {"url": "http://127.0.0.1:1", "retries": 0},
                           "self": {"url": "{gateway}"}})


class ObservedGateway(harness.GatewayTestCase):
    """A gateway with the test routes and an echo upstream started before it."""

    SETTINGS = {}

    @classmethod
    def setUpClass(cls):
        cls.echo = EchoUpstream()
        args = gateway_args(**cls.SETTINGS)
        args["upstreams"]["echo"] = {"url": cls.echo.url}
        cls.GATEWAY_ARGS = args
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.echo.close()

    def access_text(self):
        return harness.read_file(self.gw.out_path)

    def access_line(self, request_id, path, timeout=5.0):
        """The access log line of the request with this id and path (flushed within ~100 ms). The id
        alone is not enough: it is passed on to upstreams, and the gateway may be its own upstream."""
        def find():
            for line in self.access_text().splitlines():
                if ((" id=%s " % request_id) in line and (" %s HTTP/" % path) in line) or (
                        '"request_id":"%s"' % request_id in line and '"uri":"%s"' % path in line):
                    return line
            return None
        return harness.wait_until(find, timeout, message="the access log line of %s" % request_id)

    def parse(self, request_id, path):
        line = self.access_line(request_id, path)
        m = COMBINED.match(line)
        self.assertIsNotNone(m, "not a combined line with luagate's fields: %r" % line)
        return m.groupdict()

    def get(self, path, rid, headers=None):
        hs = {"X-Request-Id": rid, "User-Agent": "obs-test/1.0", "Referer": "http://ref.example/p"}
        hs.update(headers or {})
        return self.gw.request("GET", path, headers=hs)

    def check_common(self, f, rid, target, status, body):
        self.assertEqual(f["addr"], "127.0.0.1")
        self.assertEqual(f["method"], "GET")
        self.assertEqual(f["target"], target)
        self.assertEqual(f["proto"], "HTTP/1.1")
        self.assertEqual(int(f["status"]), status)
        self.assertEqual(int(f["bytes"]), len(body))
        self.assertEqual(f["id"], rid)
        when = datetime.datetime.strptime(f["time"], "%d/%b/%Y:%H:%M:%S %z")
        self.assertLess(abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()), 120)
        self.assertRegex(f["trace"], r"^[0-9a-f]{32}$")


@harness.require_binary
class AccessLogCombinedTest(ObservedGateway):

    def test_200_every_field(self):
        status, _, body = self.get("/hello", "obs-200")
        self.assertEqual(status, 200)
        f = self.parse("obs-200", "/hello")
        self.check_common(f, "obs-200", "/hello", 200, body)
        self.assertEqual(f["referer"], "http://ref.example/p")
        self.assertEqual(f["ua"], "obs-test/1.0")
        self.assertEqual(f["route"], "/hello")
        self.assertEqual(f["up"], "-")
        self.assertEqual(f["reason"], "-")
        self.assertLess(float(f["rt"]), 5.0)
        self.gw.wait_for_log(r"logphase id=obs-200 status=200 route=/hello ua=obs-test/1.0 bytes=%d ups= slow=false"
                             % len(body))

    def test_404_has_no_route(self):
        status, _, body = self.get("/no/such/path?x=1", "obs-404")
        self.assertEqual(status, 404)
        f = self.parse("obs-404", "/no/such/path?x=1")
        self.check_common(f, "obs-404", "/no/such/path?x=1", 404, body)
        self.assertEqual(f["route"], "-")
        self.assertEqual(f["reason"], "-")

    def test_502_names_the_upstream_and_the_kind_and_warns_in_the_error_log(self):
        status, _, body = self.get("/t/down", "obs-502")
        self.assertEqual(status, 502)
        f = self.parse("obs-502", "/t/down")
        self.check_common(f, "obs-502", "/t/down", 502, body)
        self.assertEqual(f["route"], "/t/down")
        name, kind, secs = f["up"].split(":")
        self.assertEqual((name, kind), ("down", "connection refused"))
        self.assertLess(float(secs), 5.0)
        self.assertEqual(f["reason"], "upstream down: connection refused")
        self.gw.wait_for_log(r"\[warn\] worker \d \[gen 1\]: request obs-502: upstream down failed: connection refused: ")

    def test_504_after_the_upstream_timed_out(self):
        status, _, body = self.get("/t/timeout", "obs-504")
        self.assertEqual(status, 504)
        f = self.parse("obs-504", "/t/timeout")
        self.check_common(f, "obs-504", "/t/timeout", 504, body)
        name, kind, secs = f["up"].split(":")
        self.assertEqual((name, kind), ("self", "timeout"))
        self.assertGreaterEqual(float(secs), 0.19)
        self.assertLess(float(secs), 1.5)
        self.assertGreaterEqual(float(f["rt"]), 0.19)
        self.assertEqual(f["reason"], "upstream self: timeout")
        self.gw.wait_for_log(r"\[warn\] .*request obs-504: upstream self failed: timeout: ")
        self.gw.wait_for_log(r"logphase id=obs-504 status=504 route=/t/timeout ua=obs-test/1.0 bytes=\d+ "
                             r"ups=self:timeout slow=true")

    def test_499_when_the_client_leaves_before_the_answer(self):
        with self.gw.connect() as c:
            c.send(harness.request_bytes("GET", "/t/hold", {"X-Request-Id": "obs-499", "User-Agent": "leaver"}))
            self.gw.wait_for_log(r"probe: start GET /t/hold")
        f = self.parse("obs-499", "/t/hold")
        self.check_common(f, "obs-499", "/t/hold", 499, b"")
        self.assertEqual(f["route"], "/t/hold")
        self.assertEqual(f["ua"], "leaver")
        self.assertEqual(f["referer"], "-")
        self.assertEqual(f["reason"], "client closed the connection")
        self.gw.wait_for_log(r"logphase id=obs-499 status=499 route=/t/hold ua=leaver bytes=0 ups= slow=false")

    def test_a_client_leaving_mid_answer_lists_the_stream_it_cut_as_cancelled_with_its_time(self):
        with self.gw.connect() as c:
            c.send(harness.request_bytes("GET", "/t/pass", {"X-Request-Id": "obs-499-mid"}))
            harness.wait_until(lambda: c._fill(time.monotonic() + 5) and b"\r\n\r\n" in c.buf, 5, 0, "the head")
            time.sleep(0.4)
        f = self.parse("obs-499-mid", "/t/pass")
        self.assertEqual(f["status"], "200", "the status sent, as nginx logs it")
        self.assertEqual(f["reason"], "client closed the connection mid-answer")
        name, kind, secs = f["up"].split(":")
        self.assertEqual((name, kind), ("self", "cancelled"))
        self.assertGreater(float(secs), 0.3, "the call's time until the client left, not 0")
        self.assertLess(float(secs), 1.9)
        self.gw.wait_for_log(r"logphase id=obs-499-mid status=200 route=/t/pass ua=nil bytes=\d+ ups=self:cancelled ")

    def test_the_upstream_call_is_listed_with_its_status_and_time(self):
        status, _, body = self.get("/v1/proxy?path=/json", "obs-proxy")
        self.assertEqual(status, 200)
        f = self.parse("obs-proxy", "/v1/proxy?path=/json")
        name, code, secs = f["up"].split(":")
        self.assertEqual((name, code), ("api", "200"))
        self.assertLessEqual(float(secs), float(f["rt"]) + 0.001)
        # The demo upstream is this gateway: its own line for the call carries the same trace id.
        inner = [COMBINED.match(l) for l in self.access_text().splitlines() if '"GET /demo/json ' in l]
        self.assertIn(f["trace"], [m.group("trace") for m in inner if m])


@harness.require_binary
class AccessLogJsonTest(ObservedGateway):
    SETTINGS = {"access_log": "access.log", "access_log_format": "json"}

    def access_text(self):
        return harness.read_file(os.path.join(self.gw.dir, "access.log")) if os.path.exists(
            os.path.join(self.gw.dir, "access.log")) else ""

    def entry(self, rid, path="/hello"):
        return json.loads(self.access_line(rid, path))

    def test_json_lines_field_by_field(self):
        status, _, body = self.get("/hello", "json-200")
        e = self.entry("json-200")
        self.assertEqual((e["method"], e["uri"], e["protocol"], e["status"]), ("GET", "/hello", "HTTP/1.1", 200))
        self.assertEqual(e["body_bytes_sent"], len(body))
        self.assertGreater(e["bytes_sent"], len(body))
        self.assertEqual((e["route"], e["request_id"], e["remote_addr"]), ("/hello", "json-200", "127.0.0.1"))
        self.assertEqual((e["user_agent"], e["referer"]), ("obs-test/1.0", "http://ref.example/p"))
        self.assertEqual((e["upstreams"], e["reason"], e["more_upstreams"]), ([], None, 0))
        self.assertRegex(e["trace_id"], r"^[0-9a-f]{32}$")
        self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertIn(e["worker"], (1,))

        self.get("/t/down", "json-502")
        e = self.entry("json-502", "/t/down")
        self.assertEqual((e["status"], e["route"], e["reason"]), (502, "/t/down", "upstream down: connection refused"))
        self.assertEqual([(u["name"], u["status"], u["error"]) for u in e["upstreams"]],
                         [("down", None, "connection refused")])
        self.get("/t/timeout", "json-504")
        e = self.entry("json-504", "/t/timeout")
        self.assertEqual((e["status"], e["reason"]), (504, "upstream self: timeout"))
        self.assertEqual(e["upstreams"][0]["error"], "timeout")
        self.assertGreaterEqual(e["upstreams"][0]["time"], 0.19)

    def test_control_characters_and_quotes_stay_valid_json(self):
        ua = 'say "hi" \\ \t caf\xe9'
        with self.gw.connect() as c:
            c.send(harness.request_bytes("GET", "/hello", {"X-Request-Id": "json-esc", "User-Agent": ua}))
            self.assertEqual(c.read_response().status, 200)
        self.assertEqual(self.entry("json-esc")["user_agent"], ua)

    def test_reopened_on_sigusr1_after_the_file_was_moved(self):
        self.get("/hello", "json-before")
        self.entry("json-before")
        path = os.path.join(self.gw.dir, "access.log")
        os.rename(path, path + ".1")
        self.gw.send_signal(signal.SIGUSR1)
        self.gw.wait_for_log(r"worker 1 \[gen 1\]: SIGUSR1: log reopened")
        self.get("/hello", "json-after")
        self.entry("json-after")
        self.assertIn("json-before", harness.read_file(path + ".1"))
        self.assertNotIn("json-before", harness.read_file(path))


def scrape(gw):
    status, headers, body = gw.metrics_get("/metrics")
    assert status == 200, (status, body)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"]
    samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@harness.require_binary
class MetricsTest(ObservedGateway):
    SETTINGS = {"workers": 2}

    def send(self, path, n, method="GET"):
        for _ in range(n):
            status, _, _ = self.gw.request(method, path)
            self.assertLess(status, 600)

    def workers(self):
        _, _, body = self.gw.metrics_get("/status.json")
        return json.loads(body)["workers"]

    def check_counts(self, hello):
        s = scrape(self.gw)
        self.assertEqual(value(s, "luagate_requests_total", route="/hello", method="GET", status="2xx"), hello)
        self.assertEqual(value(s, "luagate_request_duration_seconds_count", route="/hello"), hello)
        self.assertEqual(value(s, "luagate_request_duration_seconds_bucket", route="/hello", le="+Inf"), hello)
        self.assertEqual(value(s, "luagate_requests_total", route="(unmatched)", method="GET", status="4xx"), 7)
        self.assertEqual(value(s, "luagate_requests_total", route="(unmatched)", method="DELETE", status="4xx"), 3)
        self.assertEqual(value(s, "luagate_requests_total", route="/t/down", method="GET", status="5xx"), 4)
        self.assertEqual(value(s, "luagate_upstream_requests_total", upstream="down", outcome="refused"), 4)
        self.assertEqual(value(s, "luagate_upstream_requests_total", upstream="api", outcome="2xx"), 5)
        self.assertEqual(value(s, "luagate_upstream_request_duration_seconds_count", upstream="api"), 5)
        self.assertEqual(value(s, "luagate_requests_total", route="/v1/proxy", method="GET", status="2xx"), 5)
        # /v1/proxy's upstream is this gateway's own /demo: 5 more requests, on their route.
        self.assertEqual(value(s, "luagate_requests_total", route="/demo/json", method="GET", status="2xx"), 5)
        self.assertEqual(value(s, "test_hits_total"), 10)
        self.assertEqual(value(s, "test_results_total", result="hit"), 6)
        self.assertEqual(value(s, "test_results_total", result="miss"), 8)
        self.assertEqual(value(s, "test_seconds_count"), 10)
        self.assertEqual(value(s, "test_seconds_bucket", le="0.1"), 0)
        self.assertEqual(value(s, "test_seconds_bucket", le="1"), 10)
        self.assertAlmostEqual(value(s, "test_seconds_sum"), 5.0)
        return s

    def test_counts_match_across_workers_a_kill_and_a_reload(self):
        self.send("/hello", 30)
        self.send("/nope", 7)
        self.send("/hello", 3, method="DELETE")  # routed path, wrong method: 405, counted unmatched
        self.send("/t/down", 4)
        self.send("/v1/proxy?path=/json", 5)
        self.send("/t/count?r=hit", 6)
        self.send("/t/count?r=miss", 4)
        s = self.check_counts(30)
        self.assertEqual(value(s, "luagate_workers"), 2)
        # /v1/proxy's upstream is plain http://: the native client's connections are counted too
        # (a gauge-like figure each worker publishes on its 100 ms tick).
        harness.wait_until(lambda: value(scrape(self.gw), "luagate_upstream_connections_opened_total") >= 1, 2,
                           0.05, "the native client's connections counted")
        self.assertIn(value(s, "test_depth"), (7, 14))  # set to 7 by each worker that served /t/count
        self.assertEqual(value(s, "luagate_ready"), 1)
        self.assertEqual(value(s, "luagate_config_generation"), 1)
        self.assertEqual(value(s, "luagate_build_info", version="0.1.0"), 1)

        # kill -9 the busiest worker: what it counted stays.
        busiest = max(self.workers(), key=lambda w: w["pid"])
        os.kill(busiest["pid"], signal.SIGKILL)
        self.gw.wait_for_log(r"worker \d \(pid %d\) was killed by signal 9" % busiest["pid"])
        harness.wait_until(lambda: len(self.workers()) == 2 and busiest["pid"] not in [w["pid"] for w in self.workers()],
                           10, interval=0.1, message="the replacement worker")
        s = self.check_counts(30)
        self.assertEqual(value(s, "luagate_worker_restarts_total"), 1)
        self.send("/hello", 10)
        self.check_counts(40)

        # A reload: a new generation; the old one's counts are kept when it exits.
        self.assertRegex(self.gw.reload(), r"reloaded in")
        self.gw.wait_for_log(r"generation 1 drained")
        s = self.check_counts(40)
        self.assertEqual(value(s, "luagate_reloads_total", result="ok"), 1)
        self.assertEqual(value(s, "luagate_config_generation"), 2)
        self.send("/hello", 5)
        self.check_counts(45)

    def test_label_values_are_declared_when_scripts_load(self):
        status, _, body = self.gw.request("GET", "/t/late_label")
        self.assertEqual(status, 200)
        self.assertRegex(body.decode(), r"^false .*label values are declared when a script loads")
        self.assertNotIn('result="new"', self.gw.metrics_get("/metrics")[2].decode())


@harness.require_binary
class HealthTest(unittest.TestCase):

    def test_liveness_and_readiness_then_draining(self):
        with harness.Gateway(**gateway_args()) as gw:
            self.assertEqual(gw.metrics_get("/healthz")[0], 200)
            status, _, body = gw.metrics_get("/readyz")
            self.assertEqual((status, body), (200, b"ready\n"))
            self.assertEqual(gw.metrics_get("/nothing")[0], 404)
            with gw.connect(timeout=10) as c:
                c.send(harness.request_bytes("GET", "/t/hold"))
                gw.wait_for_log(r"probe: start GET /t/hold")
                gw.send_signal(signal.SIGTERM)
                gw.wait_for_log(r"SIGTERM: stopping the workers gracefully")
                status, _, body = gw.metrics_get("/readyz")
                self.assertEqual((status, body), (503, b"draining\n"))
                self.assertEqual(gw.metrics_get("/healthz")[0], 200)
                self.assertEqual(c.read_response().status, 200)
            self.assertEqual(gw.wait(), 0)


@harness.require_binary
class TraceTest(ObservedGateway):
    TRACE = "0af7651916cd43dd8448eb211c80319c"
    PARENT = "b7ad6b7169203331"

    def call(self, rid, traceparent=None):
        headers = {"traceparent": traceparent} if traceparent else {}
        status, _, body = self.get("/t/echo", rid, headers)
        self.assertEqual(status, 200, body)
        out = json.loads(body)
        return out["upstream"], out["trace"], self.parse(rid, "/t/echo")

    def test_the_clients_trace_goes_on_with_a_child_span(self):
        up, trace, line = self.call("tr-1", "00-%s-%s-01" % (self.TRACE, self.PARENT))
        m = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$", up["traceparent"])
        self.assertIsNotNone(m, up)
        self.assertEqual(m.group(1), self.TRACE)
        self.assertNotIn(m.group(2), (self.PARENT, trace["span_id"], "0" * 16))
        self.assertEqual((trace["trace_id"], trace["parent_id"], trace["sampled"]), (self.TRACE, self.PARENT, True))
        self.assertEqual(trace["traceparent"], "00-%s-%s-01" % (self.TRACE, trace["span_id"]))
        self.assertEqual(up["x-request-id"], "tr-1")
        self.assertEqual(line["trace"], self.TRACE)

    def test_each_call_has_a_span_of_its_own_and_flags_are_kept(self):
        up1, _, _ = self.call("tr-2a", "00-%s-%s-00" % (self.TRACE, self.PARENT))
        up2, trace, _ = self.call("tr-2b", "00-%s-%s-00" % (self.TRACE, self.PARENT))
        self.assertTrue(up1["traceparent"].endswith("-00") and up2["traceparent"].endswith("-00"))
        self.assertNotEqual(up1["traceparent"], up2["traceparent"])
        self.assertFalse(trace["sampled"])

    def test_a_trace_starts_here_without_or_with_a_bad_header(self):
        for rid, header in (("tr-3", None), ("tr-4", "00-%s-%s-01" % (self.TRACE.upper(), self.PARENT)),
                            ("tr-5", "00-%s-%s-01" % ("0" * 32, self.PARENT)), ("tr-6", "ff-%s-%s-01" % (self.TRACE, self.PARENT))):
            up, trace, line = self.call(rid, header)
            self.assertNotEqual(trace["trace_id"], self.TRACE.lower())
            self.assertNotIn("parent_id", trace)
            self.assertTrue(trace["sampled"])
            self.assertEqual(up["traceparent"][:36], "00-%s-" % trace["trace_id"])
            self.assertEqual(line["trace"], trace["trace_id"])


@harness.require_binary
class ObservabilityConfigTest(unittest.TestCase):

    def refused(self, line):
        d = tempfile.mkdtemp(prefix="luagate-obs-conf-")
        path = harness.write_file(os.path.join(d, "gw.conf"), 'listen = "127.0.0.1:1"\nroutes = %s\n%s\n'
                                  % (harness.to_lua(harness.ROUTES), line))
        try:
            p = harness.run_luagate(["-t", "-c", path])
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            return p.stderr
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_bad_values_are_refused_with_file_line_and_key(self):
        self.assertIn("gw.conf:3: metrics_listen: expected \"host:port\"", self.refused('metrics_listen = "9145"'))
        self.assertIn("gw.conf:3: metrics_listen: expected \"host:port\" or \"off\"", self.refused("metrics_listen = 9145"))
        self.assertIn("gw.conf:3: access_log_format: expected one of combined, json", self.refused('access_log_format = "xml"'))
        self.assertIn("gw.conf:3: access_log: expected a string", self.refused("access_log = false"))


if __name__ == "__main__":
    unittest.main()
