"""The live status page in a real headless Chromium (Debian's chromium): it loads from the master's
metrics listener with no external asset, shows the gateway's figures, and they move under load; a
screenshot is taken. Chromium is driven from the command line (--dump-dom, --screenshot) with a
virtual time budget, so that the page's own fetch of /status.json has run before the DOM is read."""
import html.parser
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Cells(html.parser.HTMLParser):
    """The text of each table row by its data-name, per table id; and the text of elements by id."""

    def __init__(self):
        super().__init__()
        self.tables, self.by_id = {}, {}
        self.table = self.row = self.current_id = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = {}
        elif tag == "tr" and "data-name" in a and self.table:
            self.row = a["data-name"]
            self.tables[self.table][self.row] = []
        elif tag == "td" and self.row is not None:
            self.cell = ""
        if "id" in a and tag != "table":
            self.current_id = a["id"]
            self.by_id[self.current_id] = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.tables[self.table][self.row].append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.row = None
        elif tag == "table":
            self.table = None
        if self.current_id and tag in ("span", "div"):
            self.current_id = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.current_id:
            self.by_id[self.current_id] += data


class ChromiumTest(unittest.TestCase):
    """One gateway with two workers, and Chromium run against its status page."""

    @classmethod
    def setUpClass(cls):
        if not harness.binary_available():
            raise unittest.SkipTest("luagate binary not found at %s" % harness.LUAGATE_BIN)
        if not os.access(CHROMIUM, os.X_OK):
            raise AssertionError("chromium not found: scripts/deps test installs it")
        cls.gw = harness.Gateway(settings={"workers": 2, "access_log": "off"}).start()
        cls.base = "http://127.0.0.1:%d" % cls.gw.metrics_port()
        cls.profile = tempfile.mkdtemp(prefix="luagate-chromium-")

    @classmethod
    def tearDownClass(cls):
        try:
            harness.finish_gateway(cls.gw, cls.__name__)
        finally:
            shutil.rmtree(cls.profile, ignore_errors=True)

    def chromium(self, *args, budget=2500):
        """Run headless Chromium on the status page: its stdout (the DOM with --dump-dom)."""
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--user-data-dir=" + tempfile.mkdtemp(dir=self.profile), "--virtual-time-budget=%d" % budget]
        r = subprocess.run(cmd + list(args) + [self.base + "/status"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        return r.stdout

    def page(self):
        dom = self.chromium("--dump-dom")
        self.assertRegex(dom, r'data-updates="\d+"', "the page never rendered /status.json:\n" + dom[-3000:])
        cells = Cells()
        cells.feed(dom)
        return cells, dom

    def load(self, path, seconds):
        """Requests on 4 keep-alive connections for that long: how many were answered."""
        done, stop = [0], time.monotonic() + seconds

        def client():
            with self.gw.connect() as c:
                while time.monotonic() < stop:
                    c.send(harness.request_bytes("GET", path))
                    self.assertEqual(c.read_response().status, 200)
                    done[0] += 1
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return done[0]

    def test_the_page_shows_live_figures_that_move_under_load(self):
        status, headers, body = self.gw.metrics_get("/status")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        # Self-contained: nothing fetched from elsewhere (no src= or href= to any URL).
        self.assertIsNone(re.search(rb'(src|href)\s*=\s*["\']?(https?:)?//', body))

        before, _ = self.page()
        self.assertEqual(before.by_id["ready"], "ready")
        self.assertEqual(before.by_id["generation"], "1")
        self.assertEqual(len(before.tables["workers"]), 2)
        hello_before = int(before.tables["routes"].get("/hello", ["", "", "", "", "", "", "0"])[6])

        sent = self.load("/hello", 2.5)
        self.assertGreater(sent, 50)
        after, dom = self.page()
        row = after.tables["routes"]["/hello"]
        self.assertEqual(int(row[6]), hello_before + sent)       # total: every request, from both workers
        self.assertGreater(float(row[1]), 0)                     # requests/s over the window
        self.assertNotEqual(row[3], "-")                         # a p50
        self.assertGreater(float(after.by_id["rps"]), 0)
        self.assertGreaterEqual(int(after.by_id["total"]), hello_before + sent)
        self.assertRegex(dom, r'<polyline id="line"[^>]* points="[0-9.,]+ ')

        shot = os.path.join(self.profile, "status.png")
        self.chromium("--screenshot=" + shot, "--window-size=1200,1000")
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 10000)
        keep = os.environ.get("LUAGATE_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)


if __name__ == "__main__":
    unittest.main()
