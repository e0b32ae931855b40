"""The filter chain (API v2) through the real binary, driven by the test-only `test` filter:
a request head paused on a timer and changed, response heads changed, whole bodies waited for,
WebSocket messages judged asynchronously, rewritten, dropped and closed on, across keep-alive,
pipelining, upgrades, reloads and shutdown. Every stream's filter instances must end exactly
once: the filter counts instances made, onDestroy calls and destructor runs in its own metrics,
and ASan (the test build) reports any instance used after its config was freed or leaked."""

import asyncio
import time
import unittest

import websockets

from harness import RawConn, SluiceTestCase, wait_until, ws_route


def filters_toml(name="t", **keys):
    lines = ["[[filters]]", 'name = "%s"' % name, 'type = "test"']
    for k, v in keys.items():
        lines.append("%s = %s" % (k, "true" if v is True else '"%s"' % v))
    return "\n".join(lines) + "\n"


def hdr(echo, name):
    """A header the echo backend saw (its JSON lists them as [name, value] pairs)."""
    for k, v in echo["headers"]:
        if k.lower() == name.lower():
            return v
    return None


def metrics(sluice):
    """{(sample name, sorted label pairs): value} of sluice's /metrics."""
    return {(name, tuple(sorted(labels))): v
            for (name, labels), v in sluice.admin.metrics().samples.items()}


def counter(sluice, name, filter_name="t"):
    return metrics(sluice).get((name, (("filter", filter_name),)), 0)


def lives(sluice, filter_name="t"):
    """(made, onDestroy calls, destructor runs) of the filter's instances."""
    return tuple(counter(sluice, "sluice_filter_test_%s_total" % n, filter_name)
                 for n in ("streams", "destroy_calls", "destructor_runs"))


class FilterChainHttp(SluiceTestCase):
    def start(self, **keys):
        self.backend, self.sluice = self.start_proxy(route={"filters": ["t"]},
                                                     extra=filters_toml(**keys))
        return self.sluice

    def assert_all_ended(self, n):
        wait_until(lambda: lives(self.sluice) == (n, n, n), 5,
                   what="%d filter instances made and ended" % n)

    def test_paused_head_changed_both_ways_on_keep_alive(self):
        self.start(pause_head="100ms", request_header="X-From-Filter: yes",
                   response_header="X-Filtered: 1")
        c = self.connect(self.sluice)
        for i in range(3):
            t0 = time.monotonic()
            r = c.request("GET", "/echo/%d" % i)
            self.assertGreaterEqual(time.monotonic() - t0, 0.09, "the head was not paused")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Filtered"), "1", r)
            self.assertEqual(hdr(r.json(), "X-From-Filter"), "yes", r.json())
        self.assertEqual(self.backend.count()["paths"], ["/echo/0", "/echo/1", "/echo/2"])
        self.assert_all_ended(3)

    def test_pipelined_requests_keep_their_order(self):
        self.start(pause_head="50ms")
        c = self.connect(self.sluice)
        c.send(b"".join(b"GET /echo/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(4)))
        for i in range(4):
            r = c.read_response()
            self.assertEqual(r.json()["path"], "/echo/p%d" % i)
        self.assert_all_ended(4)

    def test_local_reply_ends_the_stream(self):
        self.start(reject_path="/forbidden")
        c = self.connect(self.sluice)
        r = c.request("GET", "/forbidden/x")
        self.assertEqual(r.status, 451, r)
        r = c.request("GET", "/echo/fine")  # the connection goes on (no body was unread)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend.count()["paths"], ["/echo/fine"])
        m = metrics(self.sluice)
        self.assertEqual(m[("sluice_filter_decisions_total",
                            (("decision", "reject"), ("filter", "t")))], 1)
        self.assert_all_ended(2)

    def test_whole_body_waited_for_then_the_head_changed(self):
        self.start(buffer_body=True)
        body = b"x" * 300000
        c = self.connect(self.sluice)
        r = c.request("POST", "/echo/body", body=body, headers=[("Expect", "100-continue")])
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["body_length"], len(body))
        self.assertEqual(hdr(j, "X-Body-Bytes"), str(len(body)), j)
        # Chunked, and bodiless requests too.
        c.send(b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        j = c.read_response().json()
        self.assertEqual(hdr(j, "X-Body-Bytes"), "11", j)
        self.assertEqual(j["body_length"], 11)
        j = c.request("GET", "/echo/none").json()
        self.assertEqual(hdr(j, "X-Body-Bytes"), "0", j)
        self.assert_all_ended(3)

    def test_buffered_body_is_bounded(self):
        self.backend, self.sluice = self.start_proxy(
            route={"filters": ["t"], "max_body_bytes": 1000}, extra=filters_toml(buffer_body=True))
        c = self.connect(self.sluice)
        c.send(b"POST /echo/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"400\r\n" + b"y" * 1024 + b"\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 413, r)
        self.assertEqual(self.backend.count()["paths"], [])

    def test_paused_response_head(self):
        self.start(pause_response="100ms", response_header="X-Late: 1")
        r = self.sluice.request("GET", "/download?bytes=200000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), 200000)
        self.assertEqual(r.header("X-Late"), "1")
        self.assert_all_ended(1)

    def test_client_gone_while_paused(self):
        self.start(pause_head="300ms")
        c = self.connect(self.sluice)
        c.send(b"GET /echo/gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        c.close()
        self.assert_all_ended(1)
        time.sleep(0.4)  # the cancelled resume must not fire into a freed stream (ASan)
        self.assertEqual(self.backend.count()["paths"], [])

    def test_reload_while_paused(self):
        self.start(pause_head="700ms", request_header="X-Gen: one")
        c = self.connect(self.sluice)
        c.send(b"GET /echo/during HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        with open(self.sluice.config_path) as f:
            text = f.read()
        with open(self.sluice.config_path, "w") as f:
            f.write(text.replace("X-Gen: one", "X-Gen: two").replace('"700ms"', '"1ms"'))
        a = RawConn(self.sluice.admin_port)
        self.assertEqual(a.request("POST", "/api/reload").status, 200)
        a.close()
        r = c.read_response(timeout=5)  # the old generation's instance finishes its request
        self.assertEqual(hdr(r.json(), "X-Gen"), "one", r.json())
        r = c.request("GET", "/echo/after")  # the next request takes the new config
        self.assertEqual(hdr(r.json(), "X-Gen"), "two", r.json())
        self.assert_all_ended(2)

    def test_shutdown_while_paused(self):
        self.start(pause_head="5s")
        c = self.connect(self.sluice)
        c.send(b"GET /echo/x HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: lives(self.sluice)[0] == 1, 5, what="the paused request")
        self.sluice.signal(15)
        self.assertEqual(self.sluice.wait_exit(10), 0)
        # ASan's leak check at exit (the test build) fails the test if an instance leaked.


class FilterChainWebSocket(SluiceTestCase):
    def start(self, **keys):
        self.wsb, self.sluice = self.start_ws_proxy(routes=[ws_route(filters=["t"])],
                                                    extra=filters_toml(**keys))
        return self.sluice

    def run_client(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 30))

    async def exchange(self, messages):
        got = []
        async with websockets.connect("ws://127.0.0.1:%d/ws" % self.sluice.port,
                                      ping_interval=None, open_timeout=5,
                                      close_timeout=5) as ws:
            for m in messages:
                await ws.send(m)
            for _ in messages:
                try:
                    got.append(await asyncio.wait_for(ws.recv(), 1.5))
                except asyncio.TimeoutError:
                    got.append(None)
        return got

    def test_rewritten_after_an_async_verdict(self):
        self.start(rewrite="upper", pause_message="30ms")
        got = self.run_client(self.exchange(["hello", "wörld", b"\x00bin"]))
        # Rewritten on the way in and on the way back (upper-casing twice is once).
        self.assertEqual(got, ["HELLO", "WöRLD", b"\x00bin"])
        cid = self.wsb.conn_id("/ws")
        self.assertEqual([m.get("text") for m in self.wsb.messages(cid)][:2], ["HELLO", "WöRLD"])
        wait_until(lambda: lives(self.sluice) == (1, 1, 1), 5, what="the session's filter ended")

    def test_drop_and_close(self):
        self.start(drop_containing="secret", close_containing="evil")
        got = self.run_client(self.exchange(["a", "a secret", "b"]))
        self.assertEqual(got, ["a", "b", None])

        async def closed():
            async with websockets.connect("ws://127.0.0.1:%d/ws" % self.sluice.port,
                                          ping_interval=None) as ws:
                await ws.send("evil")
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                except websockets.exceptions.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
        self.assertEqual(self.run_client(closed()), 1008)
        wait_until(lambda: lives(self.sluice) == (2, 2, 2), 5, what="both sessions' filters ended")

    def test_many_messages_waiting_keep_their_order(self):
        self.start(pause_message="5ms", rewrite="prefix:>")
        msgs = ["m%d" % i for i in range(50)]
        got = self.run_client(self.exchange(msgs))
        self.assertEqual(got, [">>" + m for m in msgs])


if __name__ == "__main__":
    unittest.main(verbosity=2)
