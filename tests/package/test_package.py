"""The Debian package: `dpkg-buildpackage -us -uc -b` on a copy of the source tree builds a .deb
that holds the binary, the Lua library, the default config and the systemd unit; the extracted
package checks and serves its default config from any directory; `systemd-analyze verify` accepts
the unit. Run once per suite (ctest label `package`), against no build dir: it builds its own."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import harness  # noqa: E402


def run(args, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600, **kw)


class PackageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for tool in ("dpkg-buildpackage", "dpkg-deb", "systemd-analyze", "git"):
            if shutil.which(tool) is None:
                raise AssertionError("%s is missing: scripts/deps test installs it" % tool)
        cls.tmp = tempfile.mkdtemp(prefix="luagate-deb-")
        src = os.path.join(cls.tmp, "luagate")
        # The files git knows (tracked, or new and not ignored), as they are in the work tree.
        files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO).stdout
        for f in filter(None, files.split("\0")):
            if os.path.isfile(os.path.join(REPO, f)):
                os.makedirs(os.path.join(src, os.path.dirname(f)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, f), os.path.join(src, f))
        env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=%d" % len(os.sched_getaffinity(0)))
        r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        debs = [f for f in os.listdir(cls.tmp) if f.startswith("luagate_") and f.endswith(".deb")]
        assert len(debs) == 1, os.listdir(cls.tmp)
        cls.deb = os.path.join(cls.tmp, debs[0])
        cls.root = os.path.join(cls.tmp, "root")
        assert run(["dpkg-deb", "-x", cls.deb, cls.root]).returncode == 0

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_contents(self):
        r = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(r.returncode, 0, r.stderr)
        paths = {line.split()[-1] for line in r.stdout.splitlines()}
        for p in ("./usr/bin/luagate", "./usr/share/luagate/luagate/init.lua", "./usr/share/luagate/luagate/testing.lua",
                  "./usr/share/luagate/luagate/status.html",
                  "./etc/luagate/gateway.conf", "./etc/luagate/routes/hello.lua", "./etc/luagate/lib/",
                  "./lib/systemd/system/luagate.service", "./usr/share/doc/luagate/README.md.gz"):
            self.assertIn(p, paths)
        info = run(["dpkg-deb", "-f", self.deb, "Depends"]).stdout
        for dep in ("libuv1", "libcurl4", "libluajit", "lua-cjson"):
            self.assertIn(dep, info)
        conffiles = run(["dpkg-deb", "-I", self.deb, "conffiles"]).stdout.split()
        self.assertIn("/etc/luagate/gateway.conf", conffiles)

    def test_the_unit_verifies(self):
        unit = harness.read_file(os.path.join(self.root, "lib/systemd/system/luagate.service"))
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed",
                     "ExecStart=/usr/bin/luagate -c /etc/luagate/gateway.conf"):
            self.assertIn(line + "\n", unit)
        # verify wants the binary where the unit says: point it at the extracted one.
        local = harness.write_file(os.path.join(self.tmp, "luagate.service"),
                                   unit.replace("/usr/bin/luagate", os.path.join(self.root, "usr/bin/luagate")))
        r = run(["systemd-analyze", "verify", local])
        self.assertEqual((r.returncode, r.stderr), (0, ""), r.stdout)
        broken = harness.write_file(os.path.join(self.tmp, "broken.service"), unit.replace("KillMode=mixed", "KillMode=no"))
        self.assertIn("kill mode", run(["systemd-analyze", "verify", broken]).stderr, "verify reads the unit")

    def test_the_extracted_package_checks_and_serves_its_default_config(self):
        conf = os.path.join(self.root, "etc/luagate/gateway.conf")
        binary = os.path.join(self.root, "usr/bin/luagate")
        env = {k: v for k, v in os.environ.items() if k != "LUAGATE_LUA_DIR"}
        r = run([binary, "-t", "-c", conf], cwd="/", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("routes/hello.lua: 1 route", r.stdout)
        # Served on a free port, with the pid file in the temp dir (not /run).
        port = harness.free_port()
        text = harness.read_file(conf).replace('"127.0.0.1:8080"', '"127.0.0.1:%d"' % port)
        text = text.replace('"/run/luagate/luagate.pid"', '"%s/luagate.pid"' % self.tmp)
        mine = harness.write_file(os.path.join(self.root, "etc/luagate/test.conf"), text)
        log = open(os.path.join(self.tmp, "serve.log"), "wb")
        p = subprocess.Popen([binary, "-c", mine], cwd="/", env=env, stdout=log, stderr=log)
        try:
            harness.wait_until(lambda: "started in" in harness.read_file(log.name), 15, message="started")
            with harness.RawConn(port) as c:
                c.send(harness.request_bytes("GET", "/hello", {"Connection": "close"}))
                self.assertEqual(c.read_response().json(), {"hello": "world"})
            p.send_signal(signal.SIGHUP)
            harness.wait_until(lambda: "reloaded in" in harness.read_file(log.name), 15, message="reloaded")
        finally:
            p.terminate()
            self.assertEqual(p.wait(15), 0, harness.read_file(log.name))
            log.close()


if __name__ == "__main__":
    unittest.main()
