"""Many requests at once: fetch must not block the loop, so 200 one-second proxied requests take
about one second in all (it would take 200 s if each blocked), and other requests stay fast."""
import asyncio
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import parse_responses, request_bytes  # noqa: E402

N_SLOW = 200
SLOW = "/v1/proxy?path=%2Fslow%3Fs%3D1"


async def exchange(port, data, timeout=10.0):
    """Open a connection, send data, read until the server closes: the bytes received."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


@harness.require_binary
class ConcurrencyTest(harness.GatewayTestCase):

    def test_200_concurrent_slow_proxied_requests(self):
        port = self.gw.port
        timings = {}

        async def run():
            all_sent = asyncio.Event()
            sent = []

            async def slow(i):
                data = request_bytes("GET", SLOW, {"X-Request-Id": "c%03d" % i, "Connection": "close"})
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                try:
                    writer.write(data)
                    await writer.drain()
                    sent.append(i)
                    if len(sent) == N_SLOW:
                        all_sent.set()
                    return await asyncio.wait_for(reader.read(), 10)
                finally:
                    writer.close()

            async def hello_while_busy():
                # Once all 200 are sent (and waiting on their upstream), /hello must still be quick.
                await all_sent.wait()
                t = time.monotonic()
                data = await exchange(port, request_bytes("GET", "/hello", {"Connection": "close"}))
                timings["hello"] = time.monotonic() - t
                timings["hello_done"] = time.monotonic()
                return data

            hello = asyncio.ensure_future(hello_while_busy())
            results = await asyncio.gather(*(slow(i) for i in range(N_SLOW)))
            timings["batch_done"] = time.monotonic()
            return results, await hello

        t0 = time.monotonic()
        results, hello = asyncio.run(run())
        elapsed = time.monotonic() - t0

        statuses = {}
        for i, data in enumerate(results):
            (r,) = parse_responses(data, 1)
            statuses[r.status] = statuses.get(r.status, 0) + 1
            self.assertEqual(r.header("X-Request-Id"), "c%03d" % i)
            if r.status == 200:
                self.assertEqual(r.json(), {"ok": True, "slow": True, "seconds": 1})
        self.assertEqual(statuses, {200: N_SLOW}, "every request answered 200")
        self.assertGreaterEqual(elapsed, 1.0, "each request really waited 1 s")
        self.assertLess(elapsed, 3.0, "%d one-second requests took %.2fs: fetch blocks?" % (N_SLOW, elapsed))

        (h,) = parse_responses(hello, 1)
        self.assertEqual((h.status, h.body), (200, b'{"hello":"world"}'))
        self.assertLess(timings["hello"], 0.5, "/hello took %.2fs while 200 requests waited" % timings["hello"])
        self.assertLess(timings["hello_done"], timings["batch_done"], "/hello answered before the slow batch")

    def test_concurrent_requests_keep_their_own_request_id(self):
        port = self.gw.port

        async def one(i):
            rid = "mix-%03d" % i
            path = "/v1/proxy?path=%%2Fecho%%3Fi%%3D%d" % i
            return rid, i, await exchange(port, request_bytes("GET", path, {"X-Request-Id": rid, "Connection": "close"}))

        async def main():
            return await asyncio.gather(*(one(i) for i in range(100)))

        for rid, i, data in asyncio.run(main()):
            (r,) = parse_responses(data, 1)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Request-Id"), rid)
            doc = r.json()
            self.assertEqual(doc["request_id"], rid, "the upstream saw this request's id")
            self.assertEqual(doc["query"], {"i": str(i)})

    def test_many_keepalive_connections(self):
        conns, per_conn = 50, 20
        port = self.gw.port

        async def client(i):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            got = []
            try:
                for k in range(per_conn):
                    path = "/hello" if k % 2 == 0 else "/v1/proxy?path=/json"
                    writer.write(request_bytes("GET", path, {"X-Request-Id": "k%d-%d" % (i, k)}))
                    await writer.drain()
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    body = await asyncio.wait_for(reader.readexactly(length), 10)
                    got.append(parse_responses(head + body, 1)[0])
            finally:
                writer.close()
            return got

        async def main():
            return await asyncio.gather(*(client(i) for i in range(conns)))

        t0 = time.monotonic()
        all_responses = asyncio.run(main())
        self.assertLess(time.monotonic() - t0, 20)
        for i, rs in enumerate(all_responses):
            self.assertEqual([r.status for r in rs], [200] * per_conn)
            self.assertEqual([r.header("X-Request-Id") for r in rs], ["k%d-%d" % (i, k) for k in range(per_conn)])
            for k, r in enumerate(rs):
                if k % 2:
                    self.assertEqual(r.json()["name"], "demo")
                else:
                    self.assertEqual(r.body, b'{"hello":"world"}')


if __name__ == "__main__":
    unittest.main()
