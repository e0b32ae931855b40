#!/usr/bin/python3
"""WebSocket through sluice: handshake checks, relaying, close codes, heartbeats, access log.

Peers: Python `websockets` (Debian python3-websockets) as client and as backend (ws_backend.py),
raw sockets where exact bytes matter (wsutil.py). Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_websocket.py -v
"""

import asyncio
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

import harness  # noqa: E402
from harness import SluiceTestCase, ws_route  # noqa: E402
from wsutil import (BINARY, CLOSE, CONT, PING, PONG, TEXT, PeerClosed,  # noqa: E402
                    accept_key, header, new_key, raw_upgrade, serve_frames)


def run(coro, timeout=60):
    """Runs a coroutine with an overall time bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(sluice, path="/ws", **kw):
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    return websockets.connect("ws://127.0.0.1:%d%s" % (sluice.port, path), **kw)


def upgrade_request(path="/ws", method="GET", version="HTTP/1.1", key="default", ws_version="13",
                    connection="Upgrade", upgrade="websocket", extra=()):
    lines = ["%s %s %s" % (method, path, version), "Host: 127.0.0.1"]
    if upgrade is not None:
        lines.append("Upgrade: " + upgrade)
    if connection is not None:
        lines.append("Connection: " + connection)
    if key == "default":
        key = new_key()
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if ws_version is not None:
        lines.append("Sec-WebSocket-Version: " + ws_version)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


ORIGIN_FILTER = """
[[filters]]
name = "origin"
type = "origin"
allow = ["http://good.example"]
allow_missing = false
"""


class Handshake(SluiceTestCase):
    def test_upgrade_on_route_without_websocket_is_403(self):
        b, s = self.start_ws_proxy(routes=[{"pool": "app", "path_prefix": "/plain"}, ws_route("/")])
        c = self.ws_client(s, "/plain/ws")
        self.assertEqual(c.status, 403, c.headers)
        ok = self.ws_client(s, "/ws")
        self.assertUpgraded(ok, "the WebSocket route (control)")
        b.conn_id("/ws")
        self.assertEqual([e["path"] for e in b.events() if e["ev"] == "open"], ["/ws"],
                         "the refused upgrade must not reach the backend")

    def test_bad_handshakes_are_400(self):
        b, s = self.start_ws_proxy()
        cases = {
            "POST": upgrade_request(method="POST", extra=["Content-Length: 0"]),
            "HTTP/1.0": upgrade_request(version="HTTP/1.0"),
            "no Connection: Upgrade": upgrade_request(connection="keep-alive"),
            "no Connection header": upgrade_request(connection=None),
            "no Sec-WebSocket-Key": upgrade_request(key=None),
            "key not base64": upgrade_request(key="not base64 at all!!"),
            "key of 15 bytes": upgrade_request(key="MDEyMzQ1Njc4OWFiY2Rl"),
            "key of 17 bytes": upgrade_request(key="MDEyMzQ1Njc4OWFiY2RlZmc="),
            "empty key": upgrade_request(key=""),
        }
        self.assertEqual(len("MDEyMzQ1Njc4OWFiY2Rl"), 20)
        for name, req in cases.items():
            with self.subTest(name):
                status, headers = raw_upgrade(s.port, req)
                self.assertEqual(status, 400, "%s: %r" % (name, headers))
        # A well-formed one on the same sluice works, and none of the bad ones reached the backend.
        c = self.ws_client(s, "/good")
        self.assertUpgraded(c)
        b.conn_id("/good")
        self.assertEqual([e["path"] for e in b.events() if e["ev"] == "open"], ["/good"])

    def test_unsupported_version_is_426(self):
        b, s = self.start_ws_proxy()
        for v in ("8", "14", "12"):
            with self.subTest(version=v):
                status, headers = raw_upgrade(s.port, upgrade_request(ws_version=v))
                self.assertEqual(status, 426, headers)
                self.assertEqual(header(headers, "Sec-WebSocket-Version"), "13", headers)
        self.assertEqual([e for e in b.events() if e["ev"] == "open"], [])

    def test_origin_filter(self):
        b, s = self.start_ws_proxy(routes=[ws_route(filters=["origin"])], extra=ORIGIN_FILTER)
        bad = self.ws_client(s, "/bad", headers=[("Origin", "http://evil.example")])
        self.assertEqual(bad.status, 403, bad.headers)
        missing = self.ws_client(s, "/missing")
        self.assertEqual(missing.status, 403, missing.headers)
        almost = self.ws_client(s, "/almost", headers=[("Origin", "http://good.example.evil.example")])
        self.assertEqual(almost.status, 403, almost.headers)
        good = self.ws_client(s, "/good", headers=[("Origin", "http://good.example")])
        self.assertUpgraded(good)
        good.send_text("through the origin filter")
        self.assertEqual(good.recv_message(), (TEXT, b"through the origin filter"))
        self.assertEqual([e["path"] for e in b.events() if e["ev"] == "open"], ["/good"])

    def test_subprotocol_is_negotiated_by_the_backend(self):
        b, s = self.start_ws_proxy()

        async def go():
            async with connect(s, "/proto", subprotocols=["superchat", "chat"]) as ws:
                self.assertEqual(ws.subprotocol, "chat")
                await ws.send("x")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "x")
            async with connect(s, "/noproto") as ws:
                self.assertIsNone(ws.subprotocol)
                await ws.send("y")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "y")
        run(go())
        ev = b.open_event(b.conn_id("/proto"))
        offered = [v for k, v in ev["headers"] if k.lower() == "sec-websocket-protocol"]
        self.assertEqual([t.strip() for v in offered for t in v.split(",")], ["superchat", "chat"])
        self.assertEqual(ev["subprotocol"], "chat")
        ev = b.open_event(b.conn_id("/noproto"))
        self.assertIsNone(ev["subprotocol"])

    def test_extension_offers_are_stripped(self):
        b, s = self.start_ws_proxy()
        text = "compressible " * 1000

        async def go():
            # The python client offers permessage-deflate by default.
            async with connect(s, "/ext") as ws:
                self.assertEqual(ws.extensions, [])
                await ws.send(text)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), text)
        run(go())
        ev = b.open_event(b.conn_id("/ext"))
        self.assertEqual([v for k, v in ev["headers"] if k.lower() == "sec-websocket-extensions"], [])
        self.assertEqual([m["len"] for m in b.messages(ev["id"])], [len(text)])

    def test_bad_101_from_backend_is_502(self):
        def behaviour(conn, record):
            path = conn.request_line.split()[1]
            if path == "/bad-accept":
                conn.respond_101(accept=accept_key(new_key()))
            elif path == "/unoffered-protocol":
                conn.respond_101(extra=[("Sec-WebSocket-Protocol", "other")])
            elif path == "/protocol-without-offer":
                conn.respond_101(extra=[("Sec-WebSocket-Protocol", "chat")])
            elif path == "/extension":
                conn.respond_101(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")])
            elif path == "/no-accept":
                conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\n\r\n")
            else:
                conn.respond_101(extra=[("Sec-WebSocket-Protocol", "chat")]
                                 if conn.header("Sec-WebSocket-Protocol") else [])
                serve_frames(conn, record, lifetime=5)
                return
            conn.wait_eof(5)

        fb = self.start_fake_backend(behaviour)
        _, s = self.start_ws_proxy(backend=fb)
        cases = [("/bad-accept", [("Sec-WebSocket-Protocol", "chat")]),
                 ("/no-accept", []),
                 ("/unoffered-protocol", [("Sec-WebSocket-Protocol", "chat")]),
                 ("/protocol-without-offer", []),
                 ("/extension", [("Sec-WebSocket-Extensions", "permessage-deflate")])]
        for path, hdrs in cases:
            with self.subTest(path):
                c = self.ws_client(s, path, headers=hdrs)
                self.assertEqual(c.status, 502, "%s: %r" % (path, c.headers))
                c.close()
        # Control: the same fake backend answering correctly is relayed.
        c = self.ws_client(s, "/good", headers=[("Sec-WebSocket-Protocol", "chat")])
        self.assertUpgraded(c)
        self.assertEqual(c.header("Sec-WebSocket-Protocol"), "chat")
        c.send_text("hi")
        self.assertEqual(c.recv_message(), (TEXT, b"hi"))


class Messages(SluiceTestCase):
    def test_text_and_binary_are_relayed_intact(self):
        b, s = self.start_ws_proxy()
        msgs = ["hello", "h\u00e9llo \u2713 \U0001F680 \u4e2d\u6587", "", "x" * 126, "y" * 65536,
                bytes(range(256)), b"", b"\x00", os.urandom(70000), "a"]

        async def go():
            async with connect(s, "/msgs") as ws:
                for m in msgs:
                    await ws.send(m)
                    got = await asyncio.wait_for(ws.recv(), 10)
                    self.assertEqual(type(got), type(m))
                    self.assertEqual(got, m)
                await ws.close(1000)
        run(go())
        got = b.messages(b.conn_id("/msgs"))
        self.assertEqual(len(got), len(msgs))
        for m, e in zip(msgs, got):
            raw = m.encode("utf-8") if isinstance(m, str) else m
            self.assertEqual(e["type"], "text" if isinstance(m, str) else "binary")
            self.assertEqual(e["sha256"], hashlib.sha256(raw).hexdigest())

    def test_one_byte_messages(self):
        b, s = self.start_ws_proxy()
        c = self.ws_client(s, "/one")
        self.assertUpgraded(c)
        for i in range(20):
            c.send_binary(bytes([i * 13 % 256]))
            self.assertEqual(c.recv_message(), (BINARY, bytes([i * 13 % 256])))
            c.send_text(chr(ord("a") + i))
            self.assertEqual(c.recv_message(), (TEXT, chr(ord("a") + i).encode()))
        self.assertEqual(len(b.messages(b.conn_id("/one"))), 40)

    def test_fragmented_messages(self):
        b, s = self.start_ws_proxy()
        c = self.ws_client(s, "/frag")
        self.assertUpgraded(c)
        # Client to backend: text in three fragments (a multi-byte character split across two of
        # them) with a ping between fragments, which is legal.
        word = "fr\u00e4gmented \U0001F680".encode("utf-8")
        c.send_frame(TEXT, word[:3], fin=False)
        c.send_frame(PING, b"mid")
        c.send_frame(CONT, word[3:15], fin=False)
        c.send_frame(CONT, word[15:], fin=True)
        pong = c.read_frame()
        self.assertEqual((pong.opcode, pong.payload), (PONG, b"mid"))
        self.assertEqual(c.recv_message(), (TEXT, word))
        c.send_frame(BINARY, b"\x01\x02", fin=False)
        c.send_frame(CONT, b"", fin=False)
        c.send_frame(CONT, b"\x03", fin=True)
        self.assertEqual(c.recv_message(), (BINARY, b"\x01\x02\x03"))
        cid = b.conn_id("/frag")
        got = b.messages(cid)
        self.assertEqual([(m["type"], m.get("text"), m.get("hex")) for m in got],
                         [("text", word.decode(), None), ("binary", None, "010203")])

        # Backend to client: ws_backend sends one message in three fragments.
        async def go():
            async with connect(s, "/frag2") as ws:
                await ws.send(["one", "two", "three"])  # fragmented by the client library
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "onetwothree")
                await ws.send("fragments:ab|\u00e9|cd")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "ab\u00e9cd")
        run(go())
        self.assertEqual([m["text"] for m in b.messages(b.conn_id("/frag2"))],
                         ["onetwothree", "fragments:ab|\u00e9|cd"])

    def test_16MiB_messages(self):
        b, s = self.start_ws_proxy(max_message_bytes="32MiB")
        big_bin = os.urandom(16 << 20)
        big_text = ("0123456789abcd\u00e9" * ((16 << 20) // 16))
        self.assertEqual(len(big_text.encode()), 16 << 20)

        async def go():
            async with connect(s, "/big") as ws:
                await ws.send(big_bin)
                got = await asyncio.wait_for(ws.recv(), 30)
                self.assertEqual(len(got), len(big_bin))
                self.assertTrue(got == big_bin, "16 MiB binary echo differs")
                await ws.send(big_text)
                got = await asyncio.wait_for(ws.recv(), 30)
                self.assertEqual(len(got), len(big_text))
                self.assertTrue(got == big_text, "16 MiB text echo differs")
        t0 = time.monotonic()
        run(go(), timeout=90)
        sys.stderr.write("[16 MiB each way, twice: %.1fs] " % (time.monotonic() - t0))
        got = b.messages(b.conn_id("/big"))
        self.assertEqual([(m["len"], m["sha256"]) for m in got],
                         [(len(big_bin), hashlib.sha256(big_bin).hexdigest()),
                          (16 << 20, hashlib.sha256(big_text.encode()).hexdigest())])

    def test_client_ping_gets_pong(self):
        b, s = self.start_ws_proxy()

        async def go():
            async with connect(s, "/ping") as ws:
                waiter = await ws.ping(b"are you there")
                await asyncio.wait_for(waiter, 5)
                await ws.send("after ping")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "after ping")
        run(go())

    def test_client_ping_is_relayed_to_the_backend(self):
        # Control frames travel end to end only with ping_relay (per leg by default: see
        # test_client_ping_is_answered_by_sluice).
        fb = self.start_fake_backend(lambda conn, record: (conn.respond_101(),
                                                           serve_frames(conn, record, lifetime=10)))
        _, s = self.start_ws_proxy(backend=fb, ping_relay=True)
        c = self.ws_client(s, "/ping")
        self.assertUpgraded(c)
        c.send_frame(PING, b"client ping")
        f = c.read_frame()
        self.assertEqual((f.opcode, f.payload, f.masked), (PONG, b"client ping", False))
        pings = harness.wait_until(lambda: fb.recorded("ping"), 3)
        self.assertEqual([(p["payload"], p["masked"]) for p in pings],
                         [(b"client ping".hex(), True)],
                         "the backend must see the client's ping, masked")

    def test_client_ping_is_answered_by_sluice(self):
        fb = self.start_fake_backend(lambda conn, record: (conn.respond_101(),
                                                           serve_frames(conn, record, lifetime=10)))
        _, s = self.start_ws_proxy(backend=fb)
        c = self.ws_client(s, "/ping")
        self.assertUpgraded(c)
        c.send_frame(PING, b"client ping")
        f = c.read_frame()
        self.assertEqual((f.opcode, f.payload, f.masked), (PONG, b"client ping", False))
        c.send_frame(PONG, b"unsolicited")
        c.send_text("after")
        self.assertEqual(c.read_frame().payload, b"after")
        time.sleep(0.2)
        self.assertEqual(fb.recorded("ping"), [], "the backend must not see the client's ping")
        self.assertEqual(fb.recorded("pong"), [], "nor its unsolicited pong")

    def test_close_codes_propagate_both_ways(self):
        b, s = self.start_ws_proxy()

        async def go():
            async with connect(s, "/client-closes") as ws:
                await ws.send("hi")
                await asyncio.wait_for(ws.recv(), 5)
                await ws.close(4001, "bye")
                self.assertEqual(ws.close_code, 4001)
            async with connect(s, "/backend-closes") as ws:
                await ws.send("close:4002:server bye")
                with self.assertRaises(websockets.exceptions.ConnectionClosed) as cm:
                    await asyncio.wait_for(ws.recv(), 5)
                self.assertEqual((cm.exception.rcvd.code, cm.exception.rcvd.reason),
                                 (4002, "server bye"))
        run(go())
        ev = b.wait_close(b.conn_id("/client-closes"))
        self.assertEqual((ev["code"], ev["reason"]), (4001, "bye"))
        ev = b.wait_close(b.conn_id("/backend-closes"))
        self.assertEqual(ev["code"], 4002, "the client's answering close reaches the backend")

    def test_backend_dropping_the_connection_gives_1014(self):
        b, s = self.start_ws_proxy()

        async def go():
            async with connect(s, "/die") as ws:
                await ws.send("die")
                with self.assertRaises(websockets.exceptions.ConnectionClosed) as cm:
                    await asyncio.wait_for(ws.recv(), 5)
                self.assertIsNotNone(cm.exception.rcvd, "no close frame from sluice")
                self.assertEqual(cm.exception.rcvd.code, 1014)
        run(go())

    def test_backend_process_killed_gives_1014(self):
        b, s = self.start_ws_proxy()
        c = self.ws_client(s, "/killed")
        self.assertUpgraded(c)
        c.send_text("before")
        self.assertEqual(c.recv_message(), (TEXT, b"before"))
        b.kill()
        f, before = c.read_close(timeout=5)
        self.assertEqual(f.code, 1014, (f, before))
        self.assertFalse(f.masked)
        self.assertTrue(c.answer_close_and_wait_eof(f), "sluice keeps the client connection open after 1014")


class Heartbeats(SluiceTestCase):
    def test_unanswered_pings_close_the_connection(self):
        b, s = self.start_ws_proxy(ping_interval="1s", pong_timeout="1s")
        c = self.ws_client(s, "/silent")
        t0 = time.monotonic()
        self.assertUpgraded(c)
        f = c.read_frame(timeout=4)
        t_ping = time.monotonic() - t0
        self.assertEqual(f.opcode, PING, f)
        self.assertFalse(f.masked)
        self.assertLessEqual(len(f.payload), 125)
        self.assertLess(t_ping, 2.5, "first ping came after %.1fs with ping_interval=1s" % t_ping)
        # Never answered: sluice gives up after pong_timeout, ending the connection (a close
        # frame 1001 first is fine too; this client would not answer it either).
        frames = []
        ended = None
        deadline = t0 + 6
        while time.monotonic() < deadline and ended is None:
            try:
                fr = c.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except PeerClosed:
                ended = "eof"
                break
            except TimeoutError:
                break
            frames.append(fr)
            if fr.opcode == CLOSE:
                ended = "close frame"
        t_end = time.monotonic() - t0
        self.assertIsNotNone(ended, "connection still open %.1fs after the upgrade (frames %r)"
                             % (t_end, frames))
        self.assertLess(t_end, 4.5, "ended only after %.1fs" % t_end)
        self.assertTrue(all(fr.opcode == PING for fr in frames[:-1]), frames)
        if ended == "close frame":
            self.assertEqual(frames[-1].code, 1001, frames[-1])
        ev = b.wait_close(b.conn_id("/silent"))
        self.assertIsNotNone(ev, "the backend saw no close")
        self.assertEqual(ev["code"], 1001)

    def test_client_answering_pings_stays_connected(self):
        b, s = self.start_ws_proxy(ping_interval="1s", pong_timeout="1s")

        async def go():
            # The python client answers pings by itself (its own pings are off).
            async with connect(s, "/lively") as ws:
                await asyncio.sleep(5)
                await ws.send("still here")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "still here")
        run(go())
        # And a raw client that answers saw several pings meanwhile.
        c = self.ws_client(s, "/raw-lively")
        self.assertUpgraded(c)
        pings = 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                f = c.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            self.assertEqual(f.opcode, PING, f)
            pings += 1
            c.send_frame(PONG, f.payload)
        self.assertGreaterEqual(pings, 2)
        c.send_text("alive")
        self.assertEqual(c.recv_message(), (TEXT, b"alive"))

    def test_pongs_to_sluice_pings_are_not_relayed(self):
        def behaviour(conn, record):
            conn.respond_101()
            conn.send_frame(PING, b"backend ping")
            serve_frames(conn, record, lifetime=15)
        fb = self.start_fake_backend(behaviour)
        _, s = self.start_ws_proxy(backend=fb, ping_interval="1s", pong_timeout="1s")
        c = self.ws_client(s, "/pongs")
        self.assertUpgraded(c)
        sluice_pings = 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                f = c.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            self.assertEqual(f.opcode, PING, f)
            if f.payload != b"backend ping":
                sluice_pings += 1
            c.send_frame(PONG, f.payload)
        self.assertGreaterEqual(sluice_pings, 2)
        c.send_text("alive")
        self.assertEqual(c.recv_message(), (TEXT, b"alive"))
        # The pong answering the backend's own ping is relayed; those answering sluice's are not.
        time.sleep(0.3)
        self.assertEqual([p["payload"] for p in fb.recorded("pong")], [b"backend ping".hex()],
                         fb.recorded())

    def test_idle_timeout(self):
        b, s = self.start_ws_proxy(idle_timeout="1s", ping_interval="0s")
        c = self.ws_client(s, "/idle")
        t0 = time.monotonic()
        self.assertUpgraded(c)
        f, before = c.read_close(timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(before, [], "no pings with ping_interval=0s")
        self.assertEqual(f.code, 1001, f)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)
        self.assertTrue(c.answer_close_and_wait_eof(f))
        ev = b.wait_close(b.conn_id("/idle"))
        self.assertIsNotNone(ev)
        self.assertEqual(ev["code"], 1001)

    def test_idle_timeout_spares_a_busy_connection(self):
        b, s = self.start_ws_proxy(idle_timeout="1s", ping_interval="0s")
        c = self.ws_client(s, "/busy")
        self.assertUpgraded(c)
        for i in range(8):  # 8 x 0.4 s = 3.2 s, well past the idle timeout
            time.sleep(0.4)
            c.send_text("tick %d" % i)
            self.assertEqual(c.recv_message(), (TEXT, b"tick %d" % i))


class AccessLog(SluiceTestCase):
    def wait_ws_line(self, s, path, timeout=5.0):
        def find():
            for line in s.access_log_lines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("path") == path and obj.get("status") == 101:
                    return obj
            return None
        obj = harness.wait_until(find, timeout)
        self.assertIsNotNone(obj, "no access log line with status 101 for %s: %r"
                             % (path, s.access_log_lines()))
        return obj

    def test_access_log_records_websocket_sessions(self):
        b, s = self.start_ws_proxy()

        async def go():
            async with connect(s, "/logged") as ws:
                for m in ("one", b"two", "three"):
                    await ws.send(m)
                    await asyncio.wait_for(ws.recv(), 5)
                await ws.close(4001, "bye")
            async with connect(s, "/logged-upstream") as ws:
                await ws.send("close:4002:done")
                with self.assertRaises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
        run(go())
        obj = self.wait_ws_line(s, "/logged")
        self.assertEqual((obj.get("ws_messages_in"), obj.get("ws_messages_out"),
                          obj.get("ws_close_code"), obj.get("ws_closed_by")),
                         (3, 3, 4001, "downstream"), obj)
        obj = self.wait_ws_line(s, "/logged-upstream")
        self.assertEqual((obj.get("ws_messages_in"), obj.get("ws_messages_out"),
                          obj.get("ws_close_code"), obj.get("ws_closed_by")),
                         (1, 0, 4002, "upstream"), obj)
        # A violation: sluice closed it.
        c = self.ws_client(s, "/logged-violation")
        self.assertUpgraded(c)
        c.send_frame(TEXT, b"unmasked", mask=False)
        f, _ = c.read_close()
        self.assertEqual(f.code, 1002)
        obj = self.wait_ws_line(s, "/logged-violation")
        self.assertEqual((obj.get("ws_close_code"), obj.get("ws_closed_by")), (1002, "sluice"), obj)


if __name__ == "__main__":
    harness.main()
