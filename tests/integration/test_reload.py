"""SIGHUP reloads: a new generation of workers starts from the config and scripts as they are now,
and the old one drains once the new one is ready; a broken config or script, or a worker that is
not ready in time, leaves the old generation serving. Also kill -9 of a worker under load, and
`luagate -s` / `-t`.

The reload-under-load test prints its figures (requests, failures, each reload's time) to stderr."""
import os
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402

# A version in a header of every answer (global middleware), /t/slow waiting 1 s on its upstream
# (the gateway's own /demo/slow), /t/nap waiting 1 s with no upstream, and /t/whoami.
VERSIONED = r'''
local gw = require "luagate"
local V = "%s"
gw.use { after = function(req, res) res.headers["X-Version"] = V end }
gw.get("/t/slow", function()
  local r, err = gw.fetch("api", "/slow?s=1")
  if not r then return gw.upstream_error(err) end
  return r.status, "slow " .. V
end)
gw.get("/t/nap", function() gw.sleep(1) return 200, "nap " .. V end)
gw.get("/t/whoami", function()
  local s, names = gw.stats(), {}
  for name in pairs(gw.upstreams()) do names[#names + 1] = name end
  table.sort(names)
  s.upstreams = table.concat(names, ",")
  return 200, s
end)
'''


def versioned(v):
    return VERSIONED % v


def whoami(gw, port=None):
    with harness.RawConn(port or gw.port, host=gw.host) as c:
        c.send(request_bytes("GET", "/t/whoami", {"Connection": "close"}))
        r = c.read_response()
    assert r.status == 200, r
    return r.json()["pid"], r.header("X-Version")


def worker_pids(gw, n=40):
    """The workers that answered n requests on new connections (the kernel spreads them unevenly:
    to know every worker, use child_pids)."""
    return {whoami(gw)[0] for _ in range(n)}


def child_pids(gw):
    """The master's live children (its workers, when no reload check is running)."""
    return harness.child_pids(gw.proc.pid)


alive = harness.alive


def client_ports_of(pid, port):
    """The client ports of the connections process pid holds on the server port."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[1] == "0100007F:%04X" % port:
                ports.add(int(fields[2].split(":")[1], 16))
    return ports


def listen_inode(port):
    """The inode of the socket listening on 127.0.0.1:port (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and local == "0100007F:%04X" % port:
                return inode
    return None


class Load:
    """Client threads, each on a keep-alive connection (a new one when the server says close),
    recording (start, connection opened, status, X-Version, error) per request."""

    def __init__(self, gw, paths, per_path):
        self.gw, self.stop_flag, self.records, self.lock = gw, False, [], threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(p,)) for p in paths for _ in range(per_path)]

    def run(self, path):
        conn, opened, out = None, 0.0, []
        while not self.stop_flag:
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn, opened = self.gw.connect(timeout=10), t0
                conn.send(request_bytes("GET", path))
                r = conn.read_response(timeout=10)
                out.append((t0, opened, r.status, r.header("X-Version"), None))
                if (r.header("Connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, harness.ConnectionClosed, AssertionError) as e:
                out.append((t0, opened, None, None, "%s: %s" % (type(e).__name__, e)))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()
        with self.lock:
            self.records.extend(out)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag = True
        for t in self.threads:
            t.join(20)


class ReloadTestCase(unittest.TestCase):

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")

    def gateway(self, settings=None, version="1", **kw):
        return harness.Gateway(settings=settings, extra_routes={"zz_versioned.lua": versioned(version)}, **kw)

    def write_version(self, gw, v):
        harness.write_file(os.path.join(gw.routes_dir, "zz_versioned.lua"), versioned(v))


@harness.require_binary
class ReloadUnderLoadTest(ReloadTestCase):

    def test_ten_reloads_under_load_lose_nothing_and_switch_code(self):
        reloads, drained_at = [], []
        with self.gateway({"workers": 2}) as gw:
            gw.wait_for_log(r"generation 1 listening")
            version, periods = "1", []  # [old workers stopped accepting at, drained at, next HUP at, version]
            t_start = time.monotonic()
            with Load(gw, ["/v1/proxy?path=%2Fjson", "/t/slow"], 25) as load:
                time.sleep(1.0)
                for k in range(10):
                    changed = k % 2 == 0
                    if changed:
                        version = str(k + 2)
                        self.write_version(gw, version)
                    t_hup = time.monotonic()
                    if periods:
                        periods[-1][2] = t_hup
                    line = gw.reload()
                    self.assertIn("reloaded in", line)
                    reloads.append((int(re.search(r"reloaded in (\d+) ms", line).group(1)), changed))
                    old = k + 1
                    harness.wait_until(lambda: gw.log().count("[gen %d]: SIGTERM: graceful stop" % old) == 2, 10,
                                       message="the old workers stopped accepting")
                    t_closed = time.monotonic()
                    gw.wait_for_log(r"generation %d drained" % old, timeout=10)
                    t_drained = time.monotonic()
                    drained_at.append(t_drained - t_hup)
                    periods.append([t_closed, t_drained, None, version])
                    time.sleep(0.3)
                periods[-1][2] = time.monotonic()
                time.sleep(0.5)
            elapsed = time.monotonic() - t_start
            self.assertEqual(gw.stop(), 0)

        records = load.records
        errors = [r for r in records if r[4]]
        bad = [r for r in records if not r[4] and r[2] != 200]
        # New code for every request started after the old generation drained, and for every request
        # on a connection opened after the old workers stopped accepting (until the next SIGHUP).
        checked, wrong = 0, []
        for t0, opened, status, v, err in records:
            for closed, drained, end, want in periods:
                if (drained < t0 < end) or (closed < opened and t0 < end):
                    checked += 1
                    if v != want:
                        wrong.append((t0 - drained, opened - closed, v, want))
        sys.stderr.write("\nreload under load: %d requests in %.1f s over 50 connections, %d failed, "
                         "%d unexpected statuses; %d reloads (%d with a changed route script), each "
                         "ready in %s ms, old generation drained %s s after SIGHUP; %d requests "
                         "checked for the new code\n" % (
                             len(records), elapsed, len(errors), len(bad), len(reloads),
                             sum(1 for _, c in reloads if c), [ms for ms, _ in reloads],
                             ["%.2f" % d for d in drained_at], checked))
        self.assertEqual(errors, [], "connection errors")
        self.assertEqual(bad, [], "unexpected statuses")
        self.assertEqual(len(reloads), 10)
        self.assertEqual(wrong, [], "requests started after a reload finished got old code")
        self.assertGreater(checked, 1000, "the test must see many requests after the reloads")
        self.assertGreater(len({r[3] for r in records}), 5, "the versions changed")


@harness.require_binary
class ReloadTest(ReloadTestCase):

    def test_a_broken_config_or_script_keeps_the_old_generation(self):
        with self.gateway({"workers": 2}) as gw:
            pids = child_pids(gw)
            conf = harness.read_file(gw.conf_path)
            # A config error: file, line and key.
            harness.write_file(gw.conf_path, conf + "max_body_size = \"big\"\n")
            line = gw.reload()
            n = len(conf.splitlines()) + 1
            self.assertIn("reload refused: %s:%d: max_body_size: expected an integer" % (gw.conf_path, n), line)
            self.assertIn("generation 1 keeps serving", line)
            harness.write_file(gw.conf_path, conf)
            # A route script that fails to load: its file and line.
            script = os.path.join(gw.routes_dir, "zz_versioned.lua")
            harness.write_file(script, versioned("2") + "\nerror('boom')\n")
            line = gw.reload()
            self.assertRegex(line, r"reload refused: %s: %s:\d+: boom; generation 1 keeps serving"
                             % (re.escape(script), re.escape(script)))
            self.assertIn("check: stack traceback:", gw.log())
            # Meanwhile and after, the same workers serve the old code.
            self.assertEqual(child_pids(gw), pids)
            self.assertEqual({whoami(gw)[1] for _ in range(10)}, {"1"})
            self.assertNotIn("generation 2", gw.log())
            self.assertEqual(gw.stop(), 0)

    def test_a_worker_not_ready_in_time_is_stopped_and_the_old_generation_serves(self):
        with self.gateway({"workers": 2, "reload_timeout": 1}) as gw:
            pids = child_pids(gw)
            # Top-level code that hangs in workers only (the check, worker 0, passes).
            hang = "\nif gw.stats().worker > 0 then while true do end end\n"
            harness.write_file(os.path.join(gw.routes_dir, "zz_versioned.lua"), versioned("2") + hang)
            t0 = time.monotonic()
            line = gw.reload()
            self.assertLess(time.monotonic() - t0, 3)
            self.assertIn("reload failed: generation 2: not every worker was ready within reload_timeout (1.0 s); "
                          "generation 1 keeps serving", line)
            self.assertNotRegex(gw.log(), r"of generation 2 ready", "no worker of generation 2 reported ready")
            harness.wait_until(lambda: len(re.findall(r"of generation 2 stopped", gw.log())) == 2, 5,
                               message="the stuck workers stopped")
            gen2 = [int(p) for p in re.findall(r"worker \d \(pid (\d+)\) of generation 2 stopped", gw.log())]
            self.assertFalse(any(alive(p) for p in gen2))
            self.assertEqual(child_pids(gw), pids)
            self.assertEqual({whoami(gw)[1] for _ in range(10)}, {"1"})
            # Fixed, the next reload goes through.
            self.write_version(gw, "3")
            self.assertIn("reloaded in", gw.reload())
            harness.wait_until(lambda: whoami(gw)[1] == "3", 5, message="the new code")
            self.assertEqual(gw.stop(), 0)

    def test_a_listen_address_in_use_refuses_the_reload(self):
        with self.gateway() as gw, socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            conf = harness.read_file(gw.conf_path)
            harness.write_file(gw.conf_path, conf.replace('listen = "127.0.0.1:%d"' % gw.port,
                                                          'listen = { "127.0.0.1:%d", "127.0.0.1:%d" }' % (gw.port, port)))
            line = gw.reload()
            self.assertIn("reload refused: %s: listen on 127.0.0.1:%d: address already in use" % (gw.conf_path, port),
                          line)
            self.assertEqual(whoami(gw)[1], "1")
            self.assertEqual(gw.stop(), 0)

    def test_listen_workers_limits_and_code_change_and_a_kept_address_keeps_its_socket(self):
        with self.gateway({"workers": 1, "max_body_size": 100}) as gw:
            inode = listen_inode(gw.port)
            self.assertIsNotNone(inode)
            self.assertEqual(len(worker_pids(gw, 10)), 1)
            status = gw.request("POST", "/t/whoami", body=b"x" * 200)[0]
            self.assertEqual(status, 413)
            second = harness.free_port()
            conf = harness.read_file(gw.conf_path)
            conf = conf.replace('listen = "127.0.0.1:%d"' % gw.port,
                                'listen = { "127.0.0.1:%d", "127.0.0.1:%d" }' % (gw.port, second))
            conf = conf.replace("workers = 1", "workers = 2").replace("max_body_size = 100", "max_body_size = 1000")
            conf = conf.replace("upstreams = { ", 'upstreams = { extra = { url = "http://127.0.0.1:1" }, ')
            harness.write_file(gw.conf_path, conf)
            self.write_version(gw, "2")
            line = gw.reload()
            self.assertRegex(line, r"reloaded in \d+ ms: generation 2 listening on http://127.0.0.1:%d, "
                                   r"http://127.0.0.1:%d \(config .*\), 2 workers, \d+ routes, 2 upstreams"
                                   % (gw.port, second))
            self.assertEqual(listen_inode(gw.port), inode, "the address that stays keeps its socket")
            gw.wait_for_log(r"generation 1 drained")
            self.assertEqual(whoami(gw)[1], "2")
            self.assertEqual(whoami(gw, second)[1], "2")
            self.assertEqual(len(child_pids(gw)), 2)
            for pid in child_pids(gw):
                with harness.only_worker(gw, pid):
                    self.assertEqual(whoami(gw), (pid, "2"), "each new worker answers with the new code")
            with harness.RawConn(gw.port) as c:
                c.send(request_bytes("GET", "/t/whoami", {"Connection": "close"}))
                self.assertEqual(c.read_response().json()["upstreams"], "api,extra")
            self.assertEqual(gw.request("POST", "/t/whoami", body=b"x" * 200)[0], 405)  # no POST route: not 413
            # The second address goes away again: its socket is closed once generation 2 has drained.
            harness.write_file(gw.conf_path, conf.replace(', "127.0.0.1:%d"' % second, ""))
            self.assertIn("reloaded in", gw.reload())
            gw.wait_for_log(r"generation 2 drained")
            gw.wait_for_log(r"closed the listening socket on http://127.0.0.1:%d" % second)
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", second), timeout=1).close()
            self.assertEqual(listen_inode(gw.port), inode)
            self.assertEqual(gw.stop(), 0)

    def test_an_idle_connection_gets_a_grace_and_a_request_in_it_is_answered(self):
        with self.gateway({"keepalive_min_timeout": 1}) as gw:
            just_used, long_idle = gw.connect(), gw.connect()
            try:
                long_idle.send(request_bytes("GET", "/hello"))
                self.assertEqual(long_idle.read_response().status, 200)
                time.sleep(1.2)
                just_used.send(request_bytes("GET", "/hello"))
                self.assertEqual(just_used.read_response().status, 200)
                self.assertIn("reloaded in", gw.reload())
                gw.wait_for_log(r"worker 1 \[gen 1\]: SIGTERM: graceful stop")
                # Idle for longer than the grace: closed at once. Just used: a request sent within
                # the grace is answered by the old worker, with Connection: close.
                self.assertTrue(long_idle.is_closed_by_peer(0.5))
                just_used.send(request_bytes("GET", "/t/whoami"))
                r = just_used.read_response()
                self.assertEqual((r.status, r.header("Connection")), (200, "close"))
                self.assertTrue(just_used.is_closed_by_peer(2))
            finally:
                just_used.close()
                long_idle.close()
            self.assertEqual(gw.stop(), 0)

    def test_signal_names_and_pid_file(self):
        with self.gateway() as gw:
            pid = int(harness.read_file(gw.pid_path()))
            self.assertEqual(pid, gw.proc.pid)
            r = harness.run_luagate(["-s", "reload", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 0, r.stderr)
            gw.wait_for_log(r"reloaded in \d+ ms: generation 2")
            r = harness.run_luagate(["-s", "bogus", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 2)
            self.assertIn("expected reload, stop, quit or reopen", r.stderr)
            for sig in (signal.SIGWINCH,):
                gw.send_signal(sig)
            gw.wait_for_log(r"master: Window changed: ignored")
            r = harness.run_luagate(["-s", "quit", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(gw.wait(), 0)
            self.assertIn("master: SIGQUIT: stopping the workers gracefully, without a time limit", gw.log())
            self.assertFalse(os.path.exists(gw.pid_path()), "the pid file is removed at exit")
            r = harness.run_luagate(["-s", "stop", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 1)
            self.assertIn("pid file %s: No such file or directory" % gw.pid_path(), r.stderr)

    def test_sigquit_waits_without_a_time_limit(self):
        with self.gateway({"shutdown_timeout": 0.2}, probe=True) as gw:
            with gw.connect(timeout=10) as c:
                c.send(request_bytes("GET", "/t/slow"))
                gw.wait_for_log(r"probe: start GET /demo/slow")  # the upstream leg has started
                gw.send_signal(signal.SIGQUIT)
                r = c.read_response(timeout=5)  # 1 s: well past shutdown_timeout
                self.assertEqual((r.status, r.body), (200, b"slow 1"))
            self.assertEqual(gw.wait(), 0)
            self.assertIn("SIGQUIT: graceful stop, finishing requests in flight however long they take", gw.log())


@harness.require_binary
class WorkerCrashTest(ReloadTestCase):

    def test_kill_9_of_a_worker_loses_only_its_requests_in_flight(self):
        with self.gateway({"workers": 2}, probe=True) as gw:
            harness.wait_until(lambda: len(re.findall(r"worker \d \(pid \d+\) of generation 1 ready", gw.log())) == 2,
                               10, message="both workers ready")
            results, lock, stop = [], threading.Lock(), threading.Event()

            def client(n):
                i = 0
                while not stop.is_set():
                    i += 1
                    rid = "c%d-%d" % (n, i)
                    port = None
                    try:
                        with gw.connect(timeout=10) as c:
                            port = c.sock.getsockname()[1]
                            # /t/nap, not /t/slow: an upstream leg to this gateway could be the victim's.
                            c.send(request_bytes("GET", "/t/nap", {"X-Request-Id": rid, "Connection": "close"}))
                            r = c.read_response()
                            out = (rid, port, r.status, None)
                    except (OSError, harness.ConnectionClosed) as e:
                        out = (rid, port, None, repr(e))
                    with lock:
                        results.append(out)

            threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            # The victim: the worker that has started the most requests (both have some in flight).
            started = re.findall(r"worker (\d) \[gen 1\]: request \S+: probe: start GET /t/nap", gw.log())
            busiest = max(set(started), key=started.count)
            victim = int(re.search(r"worker %s \(pid (\d+)\) of generation 1 ready" % busiest, gw.log()).group(1))
            # Stopped first, so that the connections it holds (accepted: in flight for it) can be
            # listed before it dies; connections arriving meanwhile stay queued in the kernel.
            os.kill(victim, signal.SIGSTOP)
            harness.wait_until(lambda: harness.read_file("/proc/%d/stat" % victim).split(")")[1].split()[0] == "T",
                               5, message="the victim stopped")
            held = client_ports_of(victim, gw.port)
            os.kill(victim, signal.SIGKILL)
            gw.wait_for_log(r"worker \d \(pid %d\) was killed by signal 9" % victim)
            time.sleep(2.5)
            stop.set()
            for t in threads:
                t.join(15)
            failed = [(rid, port, err) for rid, port, status, err in results if status != 200]
            self.assertGreater(len(results), 60)
            self.assertTrue(failed, "the victim had requests in flight")
            self.assertEqual([f for f in failed if f[1] not in held], [],
                             "only the connections the victim held failed (%d held)" % len(held))
            self.assertEqual(gw.stop(), 0)


@harness.require_binary
class LogAndUpgradeTest(ReloadTestCase):

    def test_sigusr1_reopens_the_log_after_it_was_moved(self):
        with self.gateway({"workers": 2, "error_log": "error.log"}, probe=True) as gw:
            path = os.path.join(gw.dir, "error.log")
            self.assertIn("generation 1 listening", harness.read_file(path))
            os.rename(path, path + ".1")
            r = harness.run_luagate(["-s", "reopen", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 0, r.stderr)
            harness.wait_until(lambda: os.path.exists(path) and harness.read_file(path).count("log reopened") == 3,
                               5, message="master and both workers reopened")
            self.assertEqual(gw.request("GET", "/hello")[0], 200)
            harness.wait_until(lambda: "probe: start GET /hello" in harness.read_file(path), 5,
                               message="a worker's line in the new file")
            self.assertNotIn("probe: start GET /hello", harness.read_file(path + ".1"))
            self.assertIn("master: SIGUSR1: log reopened", harness.read_file(path))
            self.assertEqual(gw.stop(), 0)

    def test_sigusr2_starts_the_binary_anew_on_the_same_sockets_and_the_old_master_drains(self):
        new = None
        with self.gateway({"workers": 2}) as gw:
            try:
                inode, old = listen_inode(gw.port), gw.proc.pid
                with Load(gw, ["/v1/proxy?path=%2Fjson", "/t/slow"], 10) as load:
                    time.sleep(1)
                    gw.send_signal(signal.SIGUSR2)
                    new = int(gw.wait_for_log(r"upgrade: the new master \(pid (\d+)\) serves", timeout=15).group(1))
                    self.assertEqual(gw.wait(10), 0, "the old master drains its workers and exits")
                    time.sleep(1)
                self.assertEqual([r for r in load.records if r[4] or r[2] != 200], [], "failed requests")
                self.assertGreater(len(load.records), 200)
                self.assertNotEqual(new, old)
                self.assertEqual(int(harness.read_file(gw.pid_path())), new)
                self.assertFalse(os.path.exists(gw.pid_path() + ".oldbin"))
                self.assertEqual(listen_inode(gw.port), inode, "the same listening socket")
                self.assertIn("upgraded binary serving in", gw.log())
                self.assertEqual(whoami(gw)[1], "1")
            finally:
                if new and alive(new):
                    os.kill(new, signal.SIGTERM)
                    harness.wait_until(lambda: not alive(new), 10, message="the new master gone")
            self.assertIn("master: all workers stopped; exiting", gw.log().split("upgrade: the new master")[1])


@harness.require_binary
class CheckTest(ReloadTestCase):

    def test_t_counts_routes_per_script_and_refuses_a_route_registered_twice(self):
        gw = self.gateway()
        try:
            harness.write_file(os.path.join(gw.routes_dir, "zz_more.lua"),
                               'local gw = require "luagate"\ngw.get("/t/y", function() return 200 end)\n'
                               'gw.post("/t/x", function() return 200 end)\n')
            harness.write_file(gw.conf_path, gw.config_text(harness.free_port()))
            r = harness.run_luagate(["-t", "-c", gw.conf_path])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("luagate: %s/zz_more.lua: 2 routes" % gw.routes_dir, r.stdout)
            self.assertIn("luagate: %s/hello.lua: 1 route\n" % gw.routes_dir, r.stdout)
            self.assertRegex(r.stdout, r"luagate: \d+ routes in 6 scripts")
            # A second registration of a method and path would silently win: -t (and a start, and
            # a reload) refuses it, naming both places, as nginx refuses a duplicate location.
            harness.write_file(os.path.join(gw.routes_dir, "zz_twice.lua"),
                               'local gw = require "luagate"\ngw.get("/hello", function() return 200 end)\n')
            r = harness.run_luagate(["-t", "-c", gw.conf_path])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("route GET /hello is registered twice: at %s/hello.lua:4 and at %s/zz_twice.lua:2"
                          % (gw.routes_dir, gw.routes_dir), r.stderr)
        finally:
            gw.close()

if __name__ == "__main__":
    unittest.main()
