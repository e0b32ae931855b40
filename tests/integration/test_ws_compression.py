"""permessage-deflate through sluice (RFC 7692), per route mode, with real peers that speak it:
Python `websockets` (on by default), Node `ws` (perMessageDeflate by default), headless Chromium
(always offers it), and raw frames where the bytes matter. `terminate`: compressed between the
client and sluice, plain toward the backend; `terminate_both`: negotiated by sluice on each leg;
`passthrough`: negotiated end to end, frames forwarded as they came, inflated only as a copy
for limits and filters; `off` (the default) is covered by test_websocket.py. Every message filter
and max_message_bytes see the inflated payload; a decompression bomb stops at the bound."""

import asyncio
import json
import os
import sys
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

import harness  # noqa: E402
import test_websocket_browser as browser  # noqa: E402
from harness import SluiceTestCase, run_tool, ws_route  # noqa: E402
from wsutil import BINARY, CLOSE, TEXT  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else "node"
TAIL = b"\x00\x00\xff\xff"


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(data):
    return zlib.decompressobj(-15).decompress(data + TAIL)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def offered(backend, cid):
    hdrs = {k.lower(): v for k, v in backend.open_event(cid)["headers"]}
    return hdrs.get("sec-websocket-extensions")


class Terminate(SluiceTestCase):
    def start(self, **ws):
        ws.setdefault("compression", "terminate")
        self.b, self.s = self.start_ws_proxy(**ws)
        return self.s

    def test_python_client_negotiates_and_the_backend_sees_plain(self):
        s = self.start()
        text = "compress me " * 2000

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/py" % s.port, max_size=None,
                                          ping_interval=None) as ws:
                self.assertTrue(ws.extensions, "permessage-deflate was not negotiated")
                await ws.send(text)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), text)
                await ws.send(b"\x00" * 5000)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), b"\x00" * 5000)
        run(go())
        cid = self.b.conn_id("/py")
        self.assertIsNone(offered(self.b, cid), "terminate sends the backend no offer")
        msgs = self.b.messages(cid)
        self.assertEqual([(m["type"], m["len"]) for m in msgs],
                         [("text", len(text)), ("binary", 5000)])

    def test_raw_frames_on_the_wire(self):
        s = self.start()
        c = self.ws_client(s, "/raw", headers=[("Sec-WebSocket-Extensions",
                                               "permessage-deflate; client_max_window_bits")])
        self.assertUpgraded(c)
        answer = c.header("Sec-WebSocket-Extensions")
        self.assertIn("permessage-deflate", answer)
        self.assertIn("server_no_context_takeover", answer)
        self.assertIn("client_no_context_takeover", answer)
        big = b"x" * 4000
        c.send_frame(TEXT, deflate(big), rsv=4)
        f = c.read_frame()
        self.assertEqual((f.opcode, f.rsv), (TEXT, 4), "the echo comes back compressed")
        self.assertEqual(inflate(f.payload), big)
        self.assertLess(len(f.payload), 200)
        c.send_frame(TEXT, deflate(b"tiny"), rsv=4)
        f = c.read_frame()
        self.assertEqual((f.opcode, f.rsv, f.payload), (TEXT, 0, b"tiny"),
                         "under the threshold sluice sends it uncompressed")
        cid = self.b.conn_id("/raw")
        self.assertEqual([m.get("text") for m in self.b.messages(cid)], ["x" * 4000, "tiny"])

    def test_bomb_stops_at_the_bound(self):
        s = self.start(max_message_bytes="64KiB")
        c = self.ws_client(s, "/bomb", headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        self.assertUpgraded(c)
        bomb = deflate(b"\x00" * (8 << 20))  # 8 MiB of zeros in about 8 KiB
        self.assertLess(len(bomb), 64 * 1024)
        t0 = time.monotonic()
        c.send_frame(BINARY, bomb, rsv=4)
        f = c.read_frame()
        self.assertEqual((f.opcode, f.code), (CLOSE, 1009), f)
        self.assertLess(time.monotonic() - t0, 3)
        cid = self.b.conn_id("/bomb")
        self.assertEqual(self.b.messages(cid), [])

    def test_message_limit_applies_after_inflation(self):
        s = self.start(max_message_bytes="10KiB")
        c = self.ws_client(s, "/limit", headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        c.send_frame(TEXT, deflate(b"y" * (11 * 1024)), rsv=4)  # small on the wire, too big inflated
        f = c.read_frame()
        self.assertEqual((f.opcode, f.code), (CLOSE, 1009), f)

    def test_filters_see_the_inflated_message(self):
        extra = '[[filters]]\nname = "t"\ntype = "test"\nclose_containing = "forbidden"\n'
        self.b, s = self.start_ws_proxy(
            routes=[ws_route(filters=["t"], compression="terminate")], extra=extra)
        c = self.ws_client(s, "/f", headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        c.send_frame(TEXT, deflate(b"fine"), rsv=4)
        self.assertEqual(c.read_frame().payload, b"fine")
        c.send_frame(TEXT, deflate(b"a forbidden word"), rsv=4)
        f = c.read_frame()
        self.assertEqual((f.opcode, f.code), (CLOSE, 1008), f)

    def test_node_ws_client(self):
        s = self.start()
        p = run_tool([NODE, os.path.join(HERE, "ws_client.js"),
                      "ws://127.0.0.1:%d/node" % s.port, "--protocol", "chat"], timeout=60, cwd=HERE)
        r = json.loads(p.stdout.decode().strip().splitlines()[-1])
        self.assertTrue(r["ok"], r)
        self.assertIn("permessage-deflate", r["extensions"])
        cid = self.b.conn_id("/node")
        self.assertEqual([(m["type"], m["len"]) for m in self.b.messages(cid)][-1],
                         ("binary", 256 * 1024))


class TerminateBoth(SluiceTestCase):
    def test_each_leg_negotiates_with_sluice(self):
        self.b, s = self.start_ws_proxy(compression="terminate_both")
        text = "both legs " * 1000

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/both" % s.port, max_size=None,
                                          ping_interval=None) as ws:
                self.assertTrue(ws.extensions)
                await ws.send(text)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), text)
        run(go())
        cid = self.b.conn_id("/both")
        self.assertIn("permessage-deflate", offered(self.b, cid) or "",
                      "sluice offers the backend compression itself")
        self.assertEqual(self.b.messages(cid)[0]["len"], len(text))

    def test_client_without_compression(self):
        self.b, s = self.start_ws_proxy(compression="terminate_both")

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/plain" % s.port,
                                          compression=None, ping_interval=None) as ws:
                self.assertEqual(ws.extensions, [])
                await ws.send("hello " * 100)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "hello " * 100)
        run(go())


class Passthrough(SluiceTestCase):
    def test_negotiated_end_to_end_and_still_inspected(self):
        extra = '[[filters]]\nname = "t"\ntype = "test"\nclose_containing = "evil"\n'
        self.b, s = self.start_ws_proxy(
            routes=[ws_route(filters=["t"], compression="passthrough")], extra=extra)

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/pass" % s.port,
                                          ping_interval=None) as ws:
                self.assertTrue(ws.extensions)
                await ws.send("good " * 200)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "good " * 200)
                await ws.send("evil " * 200)
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                except websockets.exceptions.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
        self.assertEqual(run(go()), 1008)
        cid = self.b.conn_id("/pass")
        self.assertIn("permessage-deflate", offered(self.b, cid) or "",
                      "the client's own offer reaches the backend")


@unittest.skipUnless(os.path.isfile(browser.CHROMIUM), "chromium is not installed")
class ChromiumCompression(SluiceTestCase):
    start_for_page = browser.Browser.start_for_page

    def check(self, mode, backend_offer):
        s, _ = self.start_for_page(compression=mode)
        report = self.run_chromium("http://127.0.0.1:%d/page" % s.port, self.b)
        self.assertTrue(report.startswith("OK:open:chat:"), report)
        self.assertIn("permessage-deflate", report)  # the browser's extensions
        self.assertTrue(report.endswith(",text,binary,close:4000:browser done:true"), report)
        opens = [e for e in self.b.events() if e["ev"] == "open"]
        hdrs = {k.lower(): v for k, v in opens[0]["headers"]}
        self.assertEqual("permessage-deflate" in hdrs.get("sec-websocket-extensions", ""),
                         backend_offer)

    def test_terminate(self):
        self.check("terminate", False)

    def test_terminate_both(self):
        self.check("terminate_both", True)

    def test_passthrough(self):
        self.check("passthrough", True)


if __name__ == "__main__":
    harness.main()
