"""`cmake --install` into a DESTDIR: the installed binary finds its Lua library in share/luagate
relative to itself, runs from any directory, loads shared modules from the config's lua_path, and
`luagate busted` works from the installed copy. Also the systemd readiness message."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BUILD_DIR = os.path.dirname(os.path.abspath(harness.LUAGATE_BIN))

SHARED = '''
local M = {}
function M.greeting(name) return "hello, " .. name end
return M
'''

ROUTE = '''
local gw = require "luagate"
local shared = require "shared"
gw.get("/t/hi", function(req)
  return 200, { text = shared.greeting("installed"), library = package.searchpath("luagate", package.path) }
end)
'''

SPEC = '''
local testing = require "luagate.testing"
describe("an installed luagate", function()
  it("runs a route's spec", function()
    testing.load("routes/hi.lua")
    local res = testing.get("/t/hi")
    assert.equal(200, res.status)
    assert.equal("hello, installed", res:json().text)
  end)
end)
'''


@harness.require_binary
class InstallTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if shutil.which("cmake") is None or not os.path.exists(os.path.join(BUILD_DIR, "cmake_install.cmake")):
            raise unittest.SkipTest("no cmake build dir beside %s" % harness.LUAGATE_BIN)
        cls.tmp = tempfile.mkdtemp(prefix="luagate-install-")
        cls.dest = os.path.join(cls.tmp, "dest")
        r = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", "/usr"], env=dict(os.environ, DESTDIR=cls.dest),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0, r.stdout
        cls.bin = os.path.join(cls.dest, "usr", "bin", "luagate")
        # A project of its own, far from the source tree: config, routes, a shared module, a spec.
        cls.project = os.path.join(cls.tmp, "project")
        for d in ("routes", "lib", "spec"):
            os.makedirs(os.path.join(cls.project, d))
        harness.write_file(os.path.join(cls.project, "lib", "shared.lua"), SHARED)
        harness.write_file(os.path.join(cls.project, "routes", "hi.lua"), ROUTE)
        harness.write_file(os.path.join(cls.project, "spec", "hi_spec.lua"), SPEC)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def env(self):
        env = dict(os.environ)
        env.pop("LUAGATE_LUA_DIR", None)
        return env

    def test_the_layout(self):
        self.assertTrue(os.access(self.bin, os.X_OK))
        lib = os.path.join(self.dest, "usr", "share", "luagate", "luagate")
        self.assertEqual(sorted(os.listdir(lib)), ["config.lua", "init.lua", "json.lua", "metrics.lua", "middleware.lua",
                                                   "ratelimit.lua", "redis.lua", "redis_server.lua",
                                                   "request.lua", "router.lua", "status.html", "testing.lua"])

    def test_it_serves_from_any_directory_with_its_own_library_and_lua_path(self):
        port = harness.free_port()
        conf = harness.write_file(os.path.join(self.project, "gw.conf"),
                                  'listen = "127.0.0.1:%d"\nroutes = "routes"\nlua_path = "lib"\n' % port)
        r = subprocess.run([self.bin, "-t", "-c", conf], cwd="/", env=self.env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("routes/hi.lua: 1 route", r.stdout)
        log = open(os.path.join(self.tmp, "serve.log"), "wb")
        p = subprocess.Popen([self.bin, "-c", conf], cwd="/", env=self.env(), stdout=log, stderr=log)
        try:
            harness.wait_until(lambda: "started in" in harness.read_file(log.name), 10, message="started")
            with harness.RawConn(port) as c:
                c.send(harness.request_bytes("GET", "/t/hi", {"Connection": "close"}))
                res = c.read_response().json()
            self.assertEqual(res["text"], "hello, installed")
            self.assertEqual(res["library"], os.path.join(self.dest, "usr", "share", "luagate", "luagate", "init.lua"))
            self.assertTrue(os.path.exists(os.path.join(self.project, "luagate.pid")), "pid file beside the config")
        finally:
            p.terminate()
            self.assertEqual(p.wait(15), 0)
            log.close()

    def test_busted_runs_from_the_installed_copy(self):
        r = subprocess.run([self.bin, "busted", "--lpath=./lib/?.lua", "spec"], cwd=self.project, env=self.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("1 success / 0 failures / 0 errors", r.stdout)


@harness.require_binary
class SystemdNotifyTest(unittest.TestCase):

    def test_ready_once_the_workers_serve_with_the_main_pid(self):
        tmp = tempfile.mkdtemp(prefix="luagate-notify-")
        path = os.path.join(tmp, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(path)
            s.settimeout(10)
            gw = harness.Gateway(settings={"workers": 2})
            try:
                os.environ["NOTIFY_SOCKET"] = path
                try:
                    gw.start()
                finally:
                    del os.environ["NOTIFY_SOCKET"]
                msg = s.recv(4096).decode()
                self.assertEqual(msg, "MAINPID=%d\nREADY=1" % gw.proc.pid)
                self.assertIn("generation 1 listening", gw.log(), "ready only once serving")
                self.assertEqual(gw.stop(), 0)
            finally:
                gw.close()
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
