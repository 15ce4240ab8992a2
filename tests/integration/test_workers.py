"""workers = N: a master that owns the listening socket and N worker processes accepting on it; a
worker that dies is replaced; SIGTERM stops them all gracefully; the workers do not outlive a killed
master."""
import os
import re
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import request_bytes  # noqa: E402

WHOAMI = '''
local gw = require "luagate"
gw.get("/whoami", function() return 200, gw.stats() end)
gw.get("/nap", function() gw.sleep(1) return 200, gw.stats() end)
gw.get("/long-nap", function() gw.sleep(10) return 200, gw.stats() end)
'''


def children(pid):
    """The pids whose parent is pid, sorted."""
    return sorted(harness.child_pids(pid))


alive = harness.alive


def serving(gw, n=2):
    """Wait until n workers are ready (a worker signalled before that dies without a graceful stop):
    their pids."""
    def ready():
        listening = set(re.findall(r"master: worker (\d+) \(pid (\d+)\) of generation \d+ ready", gw.log()))
        pids = children(gw.proc.pid)
        return len(pids) == n and {int(p) for _, p in listening} >= set(pids) and pids
    return harness.wait_until(ready, 10, message="%d workers listening" % n)


def whoami(gw):
    """One request on a new connection (the kernel picks the worker per connection)."""
    with gw.connect() as c:
        c.send(request_bytes("GET", "/whoami", {"Connection": "close"}))
        r = c.read_response()
    assert r.status == 200, r
    return r.json()


def workers_seen(gw, n=60):
    return {(s["worker"], s["pid"]) for s in (whoami(gw) for _ in range(n))}


def live_workers(gw):
    """{worker number: pid} of the master's live workers, from its "ready" lines."""
    pids = set(children(gw.proc.pid))
    found = re.findall(r"master: worker (\d+) \(pid (\d+)\) of generation \d+ ready", gw.log())
    return {int(n): int(p) for n, p in found if int(p) in pids}


def answered_by_each(gw):
    """Each live worker answers a request of its own: {(number, pid)}."""
    seen = set()
    for pid in sorted(live_workers(gw).values()):
        with harness.only_worker(gw, pid):
            s = whoami(gw)
        seen.add((s["worker"], s["pid"]))
    return seen


class WorkersTestCase(unittest.TestCase):

    def setUp(self):
        if not harness.binary_available():
            self.skipTest("no luagate binary")

    def gateway(self, workers=2, **kw):
        return harness.Gateway(settings={"workers": workers}, extra_routes={"whoami.lua": WHOAMI}, **kw)


@harness.require_binary
class WorkersTest(WorkersTestCase):

    def test_two_workers_share_the_port_and_both_serve(self):
        with self.gateway() as gw:
            pids = serving(gw)
            seen = answered_by_each(gw)
            self.assertEqual({w for w, _ in seen}, {1, 2})
            self.assertEqual(sorted(p for _, p in seen), pids, "the workers are the master's children")
            self.assertEqual(gw.stop(), 0)
            self.assertFalse(any(alive(p) for p in pids), "workers exited with the master")
            log = gw.log()
            self.assertRegex(log, r"started in \d+ ms: generation 1 listening on http://127.0.0.1:%d "
                                  r"\(config .*\), 2 workers, \d+ routes, 1 upstream; luagate \S+, master pid %d"
                                  % (gw.port, gw.proc.pid))
            self.assertRegex(log, r"worker 1 \[gen 1\]: ready")
            self.assertRegex(log, r"worker 2 \[gen 1\]: ready")
            self.assertIn("master: all workers stopped; exiting", log)

    def test_a_dead_worker_is_replaced_and_the_others_keep_serving(self):
        with self.gateway() as gw:
            serving(gw)
            before = answered_by_each(gw)
            victim_id, victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            gw.wait_for_log(r"\[error\] master: worker %d \(pid %d\) was killed by signal 9; starting another"
                            % (victim_id, victim))
            # Every request made meanwhile is answered: the survivor holds the port alone.
            after = harness.wait_until(lambda: len(live_workers(gw)) == 2 and answered_by_each(gw), 10,
                                       message="a new worker answering")
            self.assertEqual({w for w, _ in after}, {1, 2}, "the new worker takes the dead one's number")
            self.assertNotIn(victim, {p for _, p in after})
            self.assertIn(victim_id, {w for w, p in after if p not in {q for _, q in before}})
            self.assertEqual(gw.stop(), 0)

    def test_a_worker_that_cannot_start_is_retried_once_a_second(self):
        with self.gateway() as gw:
            serving(gw)
            before = answered_by_each(gw)
            # A restarted worker loads the config and the routes again: break a route script first.
            script = os.path.join(gw.routes_dir, "whoami.lua")
            harness.write_file(script, WHOAMI + "\nthis is not Lua\n")
            victim_id, victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            gw.wait_for_log(r"worker %d \(pid \d+\) exited with status 1; starting another" % victim_id)
            time.sleep(2.5)
            failures = gw.log().count("exited with status 1; starting another")
            self.assertIn(failures, (2, 3, 4), "about one restart a second, not a fork loop")
            self.assertIn("whoami.lua", gw.log())
            # The other worker serves meanwhile, and once the script is fixed the slot is filled again.
            self.assertEqual(len(workers_seen(gw, 10)), 1)
            harness.write_file(script, WHOAMI)
            harness.wait_until(lambda: len(live_workers(gw)) == 2 and len(answered_by_each(gw)) == 2, 10,
                               message="the worker back")
            self.assertEqual(gw.stop(), 0)

    def test_graceful_stop_finishes_requests_in_flight_on_every_worker(self):
        with self.gateway(probe=True) as gw:
            serving(gw)  # the kernel spreads connections only over the workers already listening
            results, conns = [], []
            lock = threading.Lock()

            def nap(c):
                r = c.read_response(timeout=10)
                with lock:
                    results.append((r.status, r.json()["worker"]))

            def napping():
                # (a handler registered with gw.get may log its start twice: count requests)
                found = re.findall(r"worker (\d) \[gen 1\]: request (\S+): probe: start GET /nap", gw.log())
                return {rid: int(w) for w, rid in found}

            # A nap in flight on each worker: each taken while the other cannot accept.
            threads = []
            for number in (1, 2):
                with harness.only_worker(gw, live_workers(gw)[number]):
                    c = gw.connect(timeout=10)
                    conns.append(c)
                    c.send(request_bytes("GET", "/nap"))
                    harness.wait_until(lambda: len(napping()) == len(conns), 5, message="the nap in flight")
                t = threading.Thread(target=nap, args=(c,))
                t.start()
                threads.append(t)
            self.assertEqual(set(napping().values()), {1, 2}, "both workers have a request in flight")
            gw.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(15)
            for c in conns:
                c.close()
            self.assertEqual(len(results), len(conns))
            self.assertTrue(all(s == 200 for s, _ in results), results)
            self.assertEqual({w for _, w in results}, {1, 2})
            self.assertEqual(gw.wait(), 0)
            log = gw.log()
            self.assertIn("worker 1 [gen 1]: SIGTERM: graceful stop", log)
            self.assertIn("worker 2 [gen 1]: SIGTERM: graceful stop", log)

    def test_sigint_stops_like_sigterm(self):
        with self.gateway() as gw:
            pids = serving(gw)
            self.assertEqual(gw.stop(signal.SIGINT), 0)
            self.assertIn("master: SIGINT: stopping the workers gracefully", gw.log())
            # Each worker was asked once: a second signal would have cut its connections.
            self.assertNotIn("second signal", gw.log())
            self.assertFalse(any(alive(p) for p in pids))

    def test_a_second_sigint_is_a_second_signal(self):
        with self.gateway(probe=True) as gw:
            serving(gw)
            with gw.connect(timeout=10) as c:
                # Long enough that only the second signal can end it, however slow the machine.
                c.send(request_bytes("GET", "/long-nap"))
                gw.wait_for_log(r"probe: start GET /long-nap")
                # Both signals reach the master while the workers cannot run: what it passes on must
                # not merge into one (two SIGTERMs pending at once are one), or "now" is lost.
                workers = sorted(live_workers(gw).values())
                for p in workers:
                    os.kill(p, signal.SIGSTOP)
                try:
                    gw.send_signal(signal.SIGINT)
                    gw.wait_for_log(r"master: SIGINT: stopping the workers gracefully")
                    gw.send_signal(signal.SIGINT)  # a second Ctrl-C: stop now, as with one process
                    gw.wait_for_log(r"master: SIGINT: second signal")
                finally:
                    for p in workers:
                        os.kill(p, signal.SIGCONT)
                self.assertEqual(gw.wait(), 0)
                self.assertTrue(c.is_closed_by_peer(2), "the nap in flight was cut")
            log = gw.log()
            self.assertIn("master: SIGINT: second signal", log)
            self.assertIn("master: all workers stopped; exiting", log)

    def test_listen_on_every_ipv6_address_takes_ipv4_clients_too(self):
        with self.gateway(listen_host="::") as gw:
            serving(gw)
            for host in ("::1", "127.0.0.1"):
                with harness.RawConn(gw.port, host=host) as c:
                    c.send(request_bytes("GET", "/whoami", {"Connection": "close"}))
                    self.assertEqual(c.read_response().status, 200, host)
            self.assertEqual(gw.stop(), 0)

    def test_a_second_gateway_on_the_same_port_is_refused(self):
        with self.gateway() as gw:
            serving(gw)
            r = harness.run_luagate(["-c", gw.conf_path], timeout=10)
            self.assertEqual(r.returncode, 1)
            self.assertIn("listen on 127.0.0.1:%d: address already in use" % gw.port, r.stderr)
            self.assertEqual(len(answered_by_each(gw)), 2, "the first one still serves alone")
            self.assertEqual(gw.stop(), 0)

    def test_workers_stop_when_the_master_is_killed(self):
        with self.gateway() as gw:
            pids = serving(gw)
            gw.proc.kill()
            gw.proc.wait(5)
            harness.wait_until(lambda: not any(alive(p) for p in pids), 10, message="workers gone")
            self.assertEqual(gw.log().count("SIGTERM: graceful stop"), 2)

    def test_auto_runs_one_worker_per_cpu(self):
        with self.gateway(workers="auto") as gw:
            n = len(os.sched_getaffinity(0))
            serving(gw, n)
            self.assertIn("listening on http://127.0.0.1:%d (config %s), %d workers" % (gw.port, gw.conf_path, n),
                          gw.log())
            self.assertEqual(gw.stop(), 0)

    def test_one_worker_is_a_master_and_one_worker(self):
        with self.gateway(workers=1) as gw:
            pids = serving(gw, 1)
            self.assertEqual(whoami(gw), dict(whoami(gw), worker=1, pid=pids[0]))
            self.assertNotEqual(pids[0], gw.proc.pid, "the master serves no request itself")
            self.assertEqual(gw.stop(), 0)
            self.assertFalse(alive(pids[0]))


@harness.require_binary
class WorkersConfigTest(unittest.TestCase):

    def check(self, value):
        """Start with `workers = value`: (exit code, stderr, the line the key is on, the config's path)."""
        gw = harness.Gateway(settings={"workers": value})
        try:
            text = gw.config_text(harness.free_port())
            harness.write_file(gw.conf_path, text)
            line = [i for i, l in enumerate(text.splitlines(), 1) if l.startswith("workers")][0]
            r = harness.run_luagate(["-c", gw.conf_path])
            return r.returncode, r.stderr, line, gw.conf_path
        finally:
            gw.close()

    def test_bad_worker_counts_are_refused_with_file_line_and_key(self):
        for value, got in ((0, "integer 0"), (257, "integer 257"), ("many", 'string "many"'), (1.5, "number")):
            with self.subTest(value=value):
                rc, err, line, path = self.check(value)
                self.assertEqual(rc, 1)
                self.assertIn('%s:%d: workers: expected an integer from 1 to 256 or "auto", got %s'
                              % (path, line, got), err)


if __name__ == "__main__":
    unittest.main()
