"""The command line, `-t`, and bad configs and route scripts: each refused with exit code 1 and a
message naming the file, the line and the key."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import run_luagate  # noqa: E402


@harness.require_binary
class CommandLineTest(unittest.TestCase):

    def test_help(self):
        p = run_luagate(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("usage: luagate", p.stdout)
        self.assertIn("-c FILE", p.stdout)
        self.assertIn("-t", p.stdout)

    def test_version(self):
        p = run_luagate(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^luagate 0\.1\.0 ")
        for part in ("LuaJIT", "libuv", "libcurl", "llhttp"):
            self.assertIn(part, p.stdout)

    def test_unknown_argument(self):
        for arg in ("--bogus", "-x", "serve"):
            p = run_luagate([arg])
            self.assertEqual(p.returncode, 2, "%s: %s" % (arg, p.stderr))
            self.assertIn(arg, p.stderr)
            self.assertIn("usage", p.stderr)
            self.assertEqual(p.stdout, "")


class ConfigFiles(unittest.TestCase):
    """A temp dir per test, and helpers to write config files there."""

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")
        self.dir = tempfile.mkdtemp(prefix="luagate-conf-")
        self.port = harness.free_port()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, lines, name="gw.conf"):
        """lines: the config, one string per line (so line numbers are obvious in the tests)."""
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        harness.write_file(path, "\n".join(lines) + "\n")
        return path

    def listen(self):
        return 'listen = "127.0.0.1:%d"' % self.port

    def routes(self):
        return "routes = %s" % harness.to_lua(harness.ROUTES)

    def run_both(self, path, cwd=None):
        """`-t -c path`, then serving `-c path` (which must refuse too, not serve)."""
        out = []
        for args in (["-t", "-c", path], ["-c", path]):
            try:
                p = run_luagate(args, cwd=cwd, timeout=10)
            except subprocess.TimeoutExpired:
                self.fail("luagate %s did not exit: it accepted the config" % " ".join(args))
            out.append(p)
        return out

    def assert_refused(self, path, line, key, *fragments, cwd=None):
        """Exit code 1, and stderr says "<path>:<line>: <key>: ..." (plus fragments)."""
        for p in self.run_both(path, cwd):
            self.assertEqual(p.returncode, 1, "exit code; stderr: %s" % p.stderr)
            self.assertNotIn("successful", p.stdout)
            if key is None:
                self.assertIn("%s:%d:" % (path, line), p.stderr)
            else:
                self.assertIn("%s:%d: %s: " % (path, line, key), p.stderr)
            for f in fragments:
                self.assertIn(f, p.stderr)
            self.assertNotIn("listening", p.stderr)
            self.assertNotIn("Sanitizer", p.stderr)
        return p.stderr


@harness.require_binary
class BadConfigTest(ConfigFiles):

    def test_unknown_top_level_key(self):
        path = self.write([self.listen(), 'lisen = "127.0.0.1:8080"', self.routes()])
        err = self.assert_refused(path, 2, "lisen", "unknown key (known: ")
        self.assertIn("listen", err.split("known:")[1], "the known keys are listed")

    def test_unknown_key_after_comments_and_blank_lines(self):
        path = self.write(["-- a comment", "", self.listen(), "-- keepalive = 5 is not a key", "",
                           self.routes(), "keepalive = 5"])
        self.assert_refused(path, 7, "keepalive", "unknown key")

    def test_nested_wrong_type(self):
        path = self.write([self.listen(), self.routes(),
                           'upstreams = { api = { url = "http://127.0.0.1:1/demo", timeout = "x" } }'])
        self.assert_refused(path, 3, "upstreams.api.timeout", 'expected a number, got string "x"')

    def test_nested_value_on_its_own_line(self):
        path = self.write([
            self.listen(),            # 1
            "upstreams = {",          # 2
            "  users = {",            # 3
            '    url = "http://127.0.0.1:1/users",',  # 4
            "    connect_timeout = 1,",  # 5
            "  },",                   # 6
            "  api = {",              # 7
            '    url = "http://127.0.0.1:1/demo",',  # 8
            "    connect_timeout = -1,",  # 9
            "  },",                   # 10
            "}",                      # 11
            self.routes(),            # 12
        ])
        self.assert_refused(path, 9, "upstreams.api.connect_timeout", "must be at least")

    def test_nested_unknown_key(self):
        path = self.write([
            self.listen(),
            self.routes(),
            "upstreams = {",
            "  api = {",
            '    url = "http://127.0.0.1:1/demo",',
            "    tiemout = 3,",
            "  },",
            "}",
        ])
        err = self.assert_refused(path, 6, "upstreams.api.tiemout", "unknown key")
        self.assertIn("timeout", err.split("known:")[1])

    def test_auth_unknown_key(self):
        path = self.write([
            self.listen(),
            self.routes(),
            "upstreams = {",
            "  api = {",
            '    url = "http://127.0.0.1:1/demo",',
            '    auth = { user = "demo", pasword = "x" },',
            "  },",
            "}",
        ])
        self.assert_refused(path, 6, "upstreams.api.auth.pasword", "unknown key")

    def test_upstream_without_url(self):
        path = self.write([self.listen(), self.routes(), "upstreams = {", "  api = { timeout = 3 },", "}"])
        self.assert_refused(path, 4, "upstreams.api.url", "required")

    def test_upstream_bad_url(self):
        path = self.write([self.listen(), self.routes(), 'upstreams = { api = { url = "ftp://x/y" } }'])
        self.assert_refused(path, 3, "upstreams.api.url", "http://")

    def test_bad_listen(self):
        path = self.write([self.routes(), 'listen = "localhost"'])
        self.assert_refused(path, 2, "listen", "host:port")
        path = self.write([self.routes(), 'listen = "127.0.0.1:99999"'])
        self.assert_refused(path, 2, "listen")

    def test_integer_expected(self):
        path = self.write([self.listen(), self.routes(), "max_body_size = 1.5"])
        self.assert_refused(path, 3, "max_body_size", "expected an integer")

    def test_number_given_as_string(self):
        path = self.write([self.listen(), self.routes(), "", 'keepalive_timeout = "75"'])
        self.assert_refused(path, 4, "keepalive_timeout", 'expected a number, got string "75"')

    def test_enum(self):
        path = self.write([self.listen(), self.routes(), 'log_level = "loud"'])
        self.assert_refused(path, 3, "log_level", "debug", "error", "info", "warn")

    def test_routes_wrong_type(self):
        path = self.write([self.listen(), "routes = 5"])
        self.assert_refused(path, 2, "routes", "expected a string")

    def test_header_size_minimum(self):
        path = self.write([self.listen(), self.routes(), "max_header_size = 10"])
        self.assert_refused(path, 3, "max_header_size", "at least")

    def test_syntax_error(self):
        path = self.write([self.listen(), self.routes(), "read_timeout = = 5"])
        self.assert_refused(path, 3, None)

    def test_unclosed_table(self):
        path = self.write([self.listen(), self.routes(), "upstreams = {", '  api = { url = "http://x" }'])
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1)
            self.assertRegex(p.stderr, r"%s:\d+:" % path)

    def test_unknown_name_in_expression(self):
        path = self.write([self.listen(), self.routes(), "max_body_size = MB * 2"])
        self.assert_refused(path, 3, None, "MB")

    def test_later_assignment_of_same_key(self):
        # The value that is wrong is the one on line 4; line 2 was fine.
        path = self.write([self.listen(), 'log_level = "info"', self.routes(), 'log_level = "loud"'])
        self.assert_refused(path, 4, "log_level", "loud")

    def test_key_named_in_an_earlier_comment(self):
        # A commented-out setting above the real one must not be blamed.
        path = self.write([
            self.listen(),             # 1
            self.routes(),             # 2
            "upstreams = {",           # 3
            "  api = {",               # 4
            '    url = "http://127.0.0.1:1/demo",',  # 5
            "    -- timeout = 30,",    # 6
            '    timeout = "30",',     # 7
            "  },",                    # 8
            "}",                       # 9
        ])
        self.assert_refused(path, 7, "upstreams.api.timeout", "expected a number")

    def test_missing_config_file(self):
        path = os.path.join(self.dir, "nope.conf")
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1)
            self.assertIn(path, p.stderr)
            self.assertIn("cannot open", p.stderr)

    def test_default_config_file_is_gateway_conf(self):
        self.write([self.listen(), self.routes()], name="gateway.conf")
        p = run_luagate(["-t"], cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("gateway.conf", p.stdout)
        self.assertIn("test is successful", p.stdout)


@harness.require_binary
class RoutesAndCheckTest(ConfigFiles):

    def routes_dir(self, scripts, name="r"):
        d = os.path.join(self.dir, name)
        os.makedirs(d, exist_ok=True)
        for fname, src in scripts.items():
            harness.write_file(os.path.join(d, fname), src)
        return d

    def test_check_ok(self):
        path = self.write([self.listen(), self.routes(),
                           'upstreams = { api = { url = "http://127.0.0.1:1/demo", timeout = 10 } }'])
        p = run_luagate(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("test is successful", p.stdout)
        self.assertIn(path, p.stdout)
        self.assertNotIn("listening", p.stderr)

    def test_check_shipped_gateway_conf_copy(self):
        # The shipped gateway.conf, next to a copy of the shipped routes.
        shutil.copy(os.path.join(harness.REPO, "gateway.conf"), self.dir)
        shutil.copytree(harness.ROUTES, os.path.join(self.dir, "routes"))
        p = run_luagate(["-t", "-c", os.path.join(self.dir, "gateway.conf")], cwd="/")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("test is successful", p.stdout)

    def test_routes_dir_missing(self):
        path = self.write([self.listen(), 'routes = "no-such-dir"'])
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("no-such-dir", p.stderr)

    def test_route_script_syntax_error(self):
        d = self.routes_dir({"bad.lua": 'local gw = require "luagate"\n\ngw.get("/x", function()\n  return 200,\nend)\n'})
        path = self.write([self.listen(), "routes = %s" % harness.to_lua(d)])
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, r"bad\.lua:5:")

    def test_route_script_runtime_error(self):
        d = self.routes_dir({"oops.lua": 'local gw = require "luagate"\nlocal x = nil\nprint(x.y)\n'})
        path = self.write([self.listen(), "routes = %s" % harness.to_lua(d)])
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, r"oops\.lua:3:")

    def test_fetch_at_top_level_refused(self):
        src = harness.read_file(os.path.join(harness.ROUTES, "hello.lua"))
        d = self.routes_dir({"hello.lua": src,
                             "early.lua": 'local gw = require "luagate"\n'
                                          'local res = gw.fetch("api", "/json")\n'})
        path = self.write([self.listen(), "routes = %s" % harness.to_lua(d),
                           'upstreams = { api = { url = "http://127.0.0.1:%d/demo" } }' % self.port])
        for p in self.run_both(path):
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("early.lua", p.stderr)
            self.assertIn("only inside a request handler", p.stderr)
            self.assertNotIn("listening", p.stderr)

    def test_relative_routes_are_relative_to_the_config_file(self):
        # Serving, from a working directory that is not the config's: /hello must be there.
        hello = harness.read_file(os.path.join(harness.ROUTES, "hello.lua"))
        with harness.Gateway(extra_routes={"zz_extra.lua": 'local gw = require "luagate"\n'
                                           'gw.get("/extra", function() return 200, "extra" end)\n'},
                             routes_setting="routes", cwd="/") as gw:
            status, _, body = gw.request("GET", "/extra")
            self.assertEqual((status, body), (200, b"extra"))
            status, _, body = gw.request("GET", "/hello")
            self.assertEqual((status, body), (200, b'{"hello":"world"}'))
            self.assertEqual(gw.stop(), 0)
        self.assertTrue(hello)
        # -t with a relative config path, from the config's parent directory.
        sub = os.path.join(self.dir, "sub")
        self.routes_dir({"hello.lua": hello}, name="sub/r")
        self.write([self.listen(), 'routes = "r"'], name="sub/gw.conf")
        p = run_luagate(["-t", "-c", "sub/gw.conf"], cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.isdir(sub))

    def test_ipv6_listen(self):
        try:
            harness.free_port("::1")
        except OSError:
            self.skipTest("no IPv6 loopback")
        with harness.Gateway(listen_host="::1") as gw:
            status, _, body = gw.request("GET", "/hello")
            self.assertEqual((status, body), (200, b'{"hello":"world"}'))
            status, _, body = gw.request("GET", "/v1/proxy?path=/json")  # the api upstream is http://[::1]:port
            self.assertEqual(status, 200, body)
            self.assertEqual(gw.stop(), 0)

    def test_check_agrees_with_serving_for_a_host_name(self):
        # `listen = "localhost:PORT"`: either -t refuses it (naming file, line and key), or serving works.
        path = self.write(['listen = "localhost:%d"' % self.port, self.routes()])
        check = run_luagate(["-t", "-c", path])
        if check.returncode != 0:
            self.assertEqual(check.returncode, 1)
            self.assertIn("%s:1: listen: " % path, check.stderr)
            return
        gw = harness.Gateway(listen_host="localhost")
        try:
            try:
                gw.start()
            except AssertionError as e:
                self.fail("-t said the config is fine (exit 0) but serving it fails: %s" % e)
            self.assertEqual(gw.request("GET", "/hello")[0], 200)
            self.assertEqual(gw.stop(), 0)
        finally:
            gw.close()

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            path = self.write(['listen = "127.0.0.1:%d"' % port, self.routes()])
            p = run_luagate(["-c", path], timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(path, p.stderr)
        self.assertIn("127.0.0.1:%d" % port, p.stderr)
        self.assertIn("address already in use", p.stderr.lower())


if __name__ == "__main__":
    unittest.main()
