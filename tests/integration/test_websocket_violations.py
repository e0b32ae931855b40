#!/usr/bin/python3
"""RFC 6455 violations through sluice: every bad frame from a client gets the right close code
from sluice, and the backend gets 1001 without ever seeing the bad frame; a backend that breaks
the protocol gets 1002 and the client 1014; limits and the message_limits filter.

Raw sockets send the exact bytes (wsutil.WsClient); the backend is ws_backend.py (python
websockets), whose events file shows what reached it. Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_websocket_violations.py -v
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import SluiceTestCase, ws_route  # noqa: E402
from wsutil import (BINARY, CLOSE, CONT, PING, PONG, TEXT,  # noqa: E402
                    build_frame, close_payload, serve_frames)


def f(opcode, payload=b"", **kw):
    return build_frame(opcode, payload, **kw)


# name -> (bytes sent after a good exchange, expected close code)
CLIENT_VIOLATIONS = [
    ("unmasked text frame", f(TEXT, b"not masked", mask=False), 1002),
    ("unmasked binary frame", f(BINARY, b"\x01\x02", mask=False), 1002),
    ("unmasked ping", f(PING, b"p", mask=False), 1002),
    ("RSV1 without extension", f(TEXT, b"rsv1", rsv=4), 1002),
    ("RSV2", f(BINARY, b"rsv2", rsv=2), 1002),
    ("RSV3", f(TEXT, b"rsv3", rsv=1), 1002),
    ("RSV on a ping", f(PING, b"x", rsv=4), 1002),
    ("opcode 3", f(3, b"reserved"), 1002),
    ("opcode 7", f(7, b"reserved"), 1002),
    ("opcode 0xB", f(0xB, b"reserved"), 1002),
    ("opcode 0xF", f(0xF, b""), 1002),
    ("ping of 126 bytes", f(PING, b"p" * 126), 1002),
    ("close of 126 bytes", f(CLOSE, close_payload(1000, b"r" * 124)), 1002),
    ("fragmented ping", f(PING, b"frag", fin=False), 1002),
    ("fragmented close", f(CLOSE, close_payload(1000), fin=False), 1002),
    ("continuation without a start", f(CONT, b"orphan"), 1002),
    ("final continuation without a start", f(CONT, b"orphan", fin=True), 1002),
    ("text inside a fragmented message",
     f(TEXT, b"first", fin=False) + f(TEXT, b"second"), 1002),
    ("binary inside a fragmented message",
     f(BINARY, b"first", fin=False) + f(BINARY, b"second"), 1002),
    ("invalid UTF-8 (overlong)", f(TEXT, b"\xc0\xaf"), 1007),
    ("invalid UTF-8 (surrogate)", f(TEXT, b"ok \xed\xa0\x80"), 1007),
    ("invalid UTF-8 (0xFF)", f(TEXT, b"\xff"), 1007),
    ("invalid UTF-8 (above U+10FFFF)", f(TEXT, b"\xf4\x90\x80\x80"), 1007),
    ("UTF-8 truncated at the end", f(TEXT, b"caf\xc3"), 1007),
    ("invalid UTF-8 across fragments",
     f(TEXT, b"ab\xe2\x82", fin=False) + f(CONT, b"(", fin=True), 1007),
    ("UTF-8 truncated at the last fragment",
     f(TEXT, b"ab", fin=False) + f(CONT, b"\xe2\x82", fin=True), 1007),
    ("close with a 1-byte payload", f(CLOSE, b"\x03"), 1002),
    ("close code 1005", f(CLOSE, close_payload(1005)), 1002),
    ("close code 1006", f(CLOSE, close_payload(1006)), 1002),
    ("close code 1015", f(CLOSE, close_payload(1015)), 1002),
    ("close code 1004", f(CLOSE, close_payload(1004)), 1002),
    ("close code 999", f(CLOSE, close_payload(999)), 1002),
    ("close code 0", f(CLOSE, close_payload(0)), 1002),
    ("close code 2000", f(CLOSE, close_payload(2000)), 1002),
    ("close code 5000", f(CLOSE, close_payload(5000)), 1002),
    ("close reason not UTF-8", f(CLOSE, close_payload(1000, b"bad \xff reason")), 1007),
    ("message over max_message_bytes", f(BINARY, b"z" * 5000), 1009),
    ("text over max_message_bytes", f(TEXT, b"z" * 4097), 1009),
    ("fragmented message over max_message_bytes",
     f(BINARY, b"a" * 2000, fin=False) + f(CONT, b"b" * 2000, fin=False) + f(CONT, b"c" * 2000),
     1009),
]

MAX = 4096


class ClientViolations(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.b, self.s = self.start_ws_proxy(max_message_bytes=MAX)

    def check_violation(self, tag, data, code):
        """Opens a session, exchanges one good message, sends `data`; expects close `code` to the
        client, 1001 to the backend, and nothing of `data` reaching the backend."""
        path = "/v/%s" % tag
        c = self.ws_client(self.s, path)
        self.assertUpgraded(c)
        c.send_text("hello " + tag)
        self.assertEqual(c.recv_message(), (TEXT, ("hello " + tag).encode()))
        cid = self.b.conn_id(path)
        c.send(data)
        close, before = c.read_close(timeout=5)
        self.assertEqual(close.code, code, "close frame %r (frames before it: %r)" % (close, before))
        self.assertFalse(close.masked, "a server-to-client close frame must not be masked")
        self.assertEqual(before, [], "sluice relayed something back before closing")
        try:
            close.reason.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("close reason from sluice is not UTF-8: %r" % close.reason)
        self.assertTrue(c.answer_close_and_wait_eof(close),
                        "sluice did not end the TCP connection after the closing handshake")
        ev = self.b.wait_close(cid)
        self.assertIsNotNone(ev, "the backend connection was not closed")
        self.assertEqual(ev["code"], 1001, "backend close %r" % (ev,))
        self.assertEqual([m.get("text") for m in self.b.messages(cid)], ["hello " + tag],
                         "the backend saw more than the good message")
        c.close()

    def test_client_violations(self):
        for i, (name, data, code) in enumerate(CLIENT_VIOLATIONS):
            with self.subTest(name):
                self.check_violation("c%d" % i, data, code)

    def test_violation_as_the_first_frame(self):
        # No good exchange first: the very first frame is unmasked.
        c = self.ws_client(self.s, "/first")
        self.assertUpgraded(c)
        c.send(f(TEXT, b"hello", mask=False))
        close, before = c.read_close()
        self.assertEqual((close.code, before), (1002, []))
        cid = self.b.conn_id("/first")
        ev = self.b.wait_close(cid)
        self.assertIsNotNone(ev)
        self.assertEqual(ev["code"], 1001)
        self.assertEqual(self.b.messages(cid), [])

    def test_bad_frame_split_across_reads(self):
        # An invalid UTF-8 text frame delivered one byte at a time.
        c = self.ws_client(self.s, "/slow")
        self.assertUpgraded(c)
        data = f(TEXT, b"slow \xc0\xaf bytes")
        sent = 0
        for i in range(len(data)):
            try:
                c.send(data[i:i + 1])
            except OSError:
                break  # sluice may judge (and close) as soon as the bad byte arrives
            sent += 1
            time.sleep(0.005)
        self.assertGreaterEqual(sent, 8, "closed before the bad byte was sent")
        close, _ = c.read_close()
        self.assertEqual(close.code, 1007)
        cid = self.b.conn_id("/slow")
        self.assertEqual(self.b.wait_close(cid)["code"], 1001)
        self.assertEqual(self.b.messages(cid), [])

    def test_close_code_survives_a_client_still_sending(self):
        """A client still sending when sluice closes gets the close code and a clean TCP end.

        sluice judges a message from its frame header (over max_message_bytes) while the client
        is still sending it. The client must still get the 1009 close frame and a clean end of the
        connection: sluice reads and discards what follows its close frame until the client's
        close (or a timeout), instead of closing a socket with unread input, which makes the
        kernel answer with a TCP reset. Browsers that see the reset (Chromium fails its pending
        write) report 1006 instead of 1009; test_websocket_browser.py shows it with a real
        browser. Same for a protocol error followed by more frames already in flight."""
        cases = [
            ("oversize", [build_frame(BINARY, b"z" * (256 * 1024))], 1009),
            ("unmasked-then-more", [f(TEXT, b"x", mask=False)] +
             [f(BINARY, b"y" * 8192) for _ in range(32)], 1002),
        ]
        for name, frames, code in cases:
            with self.subTest(name):
                c = self.ws_client(self.s, "/inflight/" + name)
                self.assertUpgraded(c)
                data = b"".join(frames)
                send_error = None
                for i in range(0, len(data), 16384):
                    try:
                        c.send(data[i:i + 16384], timeout=5)
                    except OSError as e:
                        send_error = e
                        break
                    time.sleep(0.001)
                close, _ = c.read_close(timeout=5)
                self.assertEqual(close.code, code)
                if send_error is None:
                    try:
                        c.send(f(CLOSE, close_payload(code)))
                    except OSError as e:
                        send_error = e
                # The end of the connection: a FIN, not a reset.
                reset = None
                c.sock.settimeout(5)
                try:
                    for _ in range(1000):
                        if not c.sock.recv(65536):
                            break
                except ConnectionResetError as e:
                    reset = e
                except socket.timeout:
                    self.fail("sluice did not end the connection after the close handshake")
                self.assertIsNone(send_error, "the client could not finish sending: sluice reset "
                                  "the connection (%r)" % (send_error,))
                self.assertIsNone(reset, "sluice ended the connection with a TCP reset")

    def test_valid_edge_cases_are_not_violations(self):
        # Controls for the cases above: the same shapes, legal.
        c = self.ws_client(self.s, "/legal")
        self.assertUpgraded(c)
        c.send(f(PING, b"p" * 125))
        pong = c.read_frame()
        self.assertEqual((pong.opcode, pong.payload), (PONG, b"p" * 125))
        c.send(f(TEXT, "\U0010FFFF \u00e9 \ufeff".encode("utf-8")))
        self.assertEqual(c.recv_message(), (TEXT, "\U0010FFFF \u00e9 \ufeff".encode("utf-8")))
        c.send(f(TEXT, b"\xe2", fin=False) + f(CONT, b"\x82", fin=False) + f(CONT, b"\xac"))
        self.assertEqual(c.recv_message(), (TEXT, "\u20ac".encode("utf-8")))
        c.send(f(BINARY, b"\xc0\xaf\xff"))  # binary is not UTF-8 checked
        self.assertEqual(c.recv_message(), (BINARY, b"\xc0\xaf\xff"))
        c.send(f(BINARY, b"m" * MAX))  # exactly the limit
        self.assertEqual(c.recv_message(), (BINARY, b"m" * MAX))
        c.send(f(CLOSE, close_payload(3000, "fine \u00e9")))
        close, before = c.read_close()
        self.assertEqual((close.code, close.reason), (3000, "fine \u00e9".encode("utf-8")))
        cid = self.b.conn_id("/legal")
        ev = self.b.wait_close(cid)
        self.assertEqual((ev["code"], ev["reason"]), (3000, "fine \u00e9"))
        self.assertEqual(len(self.b.messages(cid)), 4)

    def test_close_without_code_is_legal(self):
        c = self.ws_client(self.s, "/empty-close")
        self.assertUpgraded(c)
        c.send(f(CLOSE, b""))
        close, _ = c.read_close()
        self.assertIn(close.code, (None, 1000), close)
        ev = self.b.wait_close(self.b.conn_id("/empty-close"))
        self.assertIsNotNone(ev)
        self.assertEqual(ev["code"], 1005, "an empty close reaches the backend as an empty close")


class Utf8ValidationOff(SluiceTestCase):
    def test_invalid_utf8_passes_when_validation_is_off(self):
        # Control for the 1007 cases: with validate_utf8 = false sluice does not judge text
        # (the python backend then closes with 1007 itself; sluice relays that close).
        b, s = self.start_ws_proxy(validate_utf8=False)
        c = self.ws_client(s, "/noval")
        self.assertUpgraded(c)
        c.send(f(TEXT, b"\xc0\xaf"))
        close, _ = c.read_close()
        self.assertEqual(close.code, 1007)
        # The close came from the backend (which got the frame), not from sluice.
        line = harness.wait_until(
            lambda: [l for l in self.sluices[0].access_log_lines() if '"/noval"' in l], 3)
        self.assertTrue(line, "no access log line")
        self.assertIn('"ws_closed_by":"upstream"', line[0])
        self.assertIn('"ws_close_code":1007', line[0])


LIMITS_FILTER = """
[[filters]]
name = "limits"
type = "message_limits"
max_message_bytes = 100
allow_types = ["text"]
"""


class MessageLimitsFilter(SluiceTestCase):
    def test_message_limits_filter(self):
        b, s = self.start_ws_proxy(routes=[ws_route("/limited", filters=["limits"]), ws_route("/")],
                                   extra=LIMITS_FILTER)
        cases = [("binary", f(BINARY, b"\x00\x01"), 1003),
                 ("big-text", f(TEXT, b"t" * 101), 1009),
                 ("big-fragmented", f(TEXT, b"t" * 60, fin=False) + f(CONT, b"t" * 60), 1009)]
        for name, data, code in cases:
            with self.subTest(name):
                path = "/limited/" + name
                c = self.ws_client(s, path)
                self.assertUpgraded(c)
                c.send(f(TEXT, b"t" * 100))  # within the limits
                self.assertEqual(c.recv_message(), (TEXT, b"t" * 100))
                c.send(data)
                close, before = c.read_close()
                self.assertEqual(close.code, code, (close, before))
                cid = b.conn_id(path)
                ev = b.wait_close(cid)
                self.assertIsNotNone(ev)
                self.assertEqual(ev["code"], 1001)
                self.assertEqual([m["len"] for m in b.messages(cid)], [100])
        # The route without the filter takes binary and bigger text.
        c = self.ws_client(s, "/free")
        self.assertUpgraded(c)
        c.send(f(BINARY, b"\x00\x01"))
        self.assertEqual(c.recv_message(), (BINARY, b"\x00\x01"))
        c.send(f(TEXT, b"t" * 1000))
        self.assertEqual(c.recv_message(), (TEXT, b"t" * 1000))


def recording(conn, record):
    """A fake backend that records every frame it gets, exactly (no echo)."""
    conn.respond_101()
    serve_frames(conn, record, lifetime=8, echo=False)


class FramesInOneRead(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.fb = self.start_fake_backend(recording)
        # Control frames relayed end to end, so that the ping between fragments shows where the
        # in-place forwarding puts it.
        _, self.s = self.start_ws_proxy(backend=self.fb, ping_relay=True)

    def test_good_frames_before_a_bad_one_reach_the_backend(self):
        # Text frames that arrive whole in one read are validated and forwarded where they lie;
        # the frames before the bad one still reach the backend, unchanged and in order, and
        # nothing after it does.
        c = self.ws_client(self.s, "/batch")
        self.assertUpgraded(c)
        frames = [f(TEXT, "d\u00e9j\u00e0 vu \u2713".encode()), f(TEXT, b"two"),
                  f(BINARY, b"\x00\x01"), f(TEXT, b"thr", fin=False), f(PING, b"mid"),
                  f(CONT, b"ee"), f(TEXT, b"")]
        c.send(frames[0][:1])  # a header split across reads takes the copying path
        time.sleep(0.05)
        c.send(frames[0][1:] + b"".join(frames[1:]) + f(TEXT, b"bad \xff") + f(TEXT, b"never"))
        close, _ = c.read_close()
        self.assertEqual(close.code, 1007)
        self.assertTrue(c.answer_close_and_wait_eof(close))
        closes = harness.wait_until(lambda: self.fb.recorded("close"), 5)
        self.assertEqual(closes[0]["code"], 1001)
        got = [(x["opcode"], x["fin"], bytes.fromhex(x["payload"]))
               for x in self.fb.recorded() if x["ev"] in ("data", "ping")]
        self.assertEqual(got, [(TEXT, True, "d\u00e9j\u00e0 vu \u2713".encode()), (TEXT, True, b"two"),
                               (BINARY, True, b"\x00\x01"), (TEXT, False, b"thr"),
                               (PING, True, b"mid"), (CONT, True, b"ee"), (TEXT, True, b"")])
        # The backend answered the close: sluice waited for it (a lingering close), so nothing it
        # had sent was destroyed by a reset.
        self.assertTrue(harness.wait_until(lambda: self.fb.recorded("eof"), 5))


def talks_after_close(conn, record):
    """Answers sluice's close late, with one more data frame first, and records whether its
    connection was still there for that ("clean") or had been reset ("reset")."""
    conn.respond_101()
    while True:
        fr = conn.read_frame(timeout=8)
        if fr.opcode == CLOSE:
            record({"ev": "close", "code": fr.code})
            break
    how = "clean"
    try:
        time.sleep(0.2)
        conn.send_frame(TEXT, b"late news")
        time.sleep(0.2)  # a reset provoked by the frame above has arrived by now
        conn.send_frame(CLOSE, close_payload(1000))
    except OSError:
        how = "reset"
    record({"ev": "end", "how": how})
    conn.close()


class BackendClosedLingering(SluiceTestCase):
    def test_backend_still_sending_gets_a_clean_close(self):
        # sluice ends a session (here for a client's bad frame) while the backend still has
        # something to say: sluice sends its close, then FIN, and reads on until the backend's
        # EOF, so that the backend's late bytes never meet a closed socket (which would answer
        # with a reset, destroying whatever the backend had not read yet).
        fb = self.start_fake_backend(talks_after_close)
        _, s = self.start_ws_proxy(backend=fb)
        c = self.ws_client(s, "/late")
        self.assertUpgraded(c)
        c.send(f(TEXT, b"\xff"))
        close, _ = c.read_close()
        self.assertEqual(close.code, 1007)
        ends = harness.wait_until(lambda: fb.recorded("end"), 5)
        self.assertEqual(fb.recorded("close")[0]["code"], 1001)
        self.assertEqual(ends[0]["how"], "clean")


# ---------------------------------------------------------------------------------------------
# Backends that break the protocol or vanish


def misbehaving(conn, record):
    """A fake backend whose misbehaviour is named by the request path."""
    conn.respond_101()
    path = conn.request_line.split()[1]
    # Wait for the client's first message so the session is established end to end.
    first = conn.read_frame(timeout=5)
    record({"ev": "first", "opcode": first.opcode, "payload": first.payload.hex(),
            "masked": first.masked})
    conn.send_frame(TEXT, b"good")
    bad = {
        "/masked": lambda: conn.send_frame(TEXT, b"masked by backend", mask=True),
        "/rsv1": lambda: conn.send_frame(TEXT, b"rsv", rsv=4),
        "/opcode": lambda: conn.send_frame(0xB, b"x"),
        "/bad-utf8": lambda: conn.send_frame(TEXT, b"\xc0\xaf"),
        "/big-ping": lambda: conn.send_frame(PING, b"p" * 126),
        "/close-code": lambda: conn.send_frame(CLOSE, close_payload(1005)),
        "/drop": lambda: None,
        "/garbage-after-close": lambda: None,
    }[path]
    bad()
    if path == "/drop":
        conn.sock.shutdown(2)  # TCP FIN without a close frame
        return
    serve_frames(conn, record, lifetime=8, echo=False)


class BackendViolations(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.fb = self.start_fake_backend(misbehaving)
        _, self.s = self.start_ws_proxy(backend=self.fb)

    def session(self, path):
        c = self.ws_client(self.s, path)
        self.assertUpgraded(c)
        c.send_text("hi")
        self.assertEqual(c.recv_message(), (TEXT, b"good"))
        return c

    def backend_close(self, n_before, timeout=5):
        closes = harness.wait_until(lambda: self.fb.recorded("close")[n_before:], timeout)
        self.assertTrue(closes, "the backend got no close frame: %r" % self.fb.recorded())
        return closes[0]

    def test_backend_violations(self):
        cases = [("/masked", 1002), ("/rsv1", 1002), ("/opcode", 1002), ("/big-ping", 1002),
                 ("/close-code", 1002), ("/bad-utf8", 1007)]
        for path, backend_code in cases:
            with self.subTest(path):
                n = len(self.fb.recorded("close"))
                c = self.session(path)
                close, before = c.read_close()
                self.assertEqual(close.code, 1014, (close, before))
                self.assertEqual(before, [], "the bad frame reached the client")
                self.assertTrue(c.answer_close_and_wait_eof(close))
                ev = self.backend_close(n)
                self.assertEqual(ev["code"], backend_code, ev)
                self.assertTrue(ev["masked"], "a close toward the backend must be masked")
                c.close()
        firsts = self.fb.recorded("first")
        self.assertTrue(all(x["masked"] and x["payload"] == b"hi".hex() for x in firsts), firsts)

    def test_backend_closing_tcp_without_close_frame(self):
        c = self.session("/drop")
        close, before = c.read_close()
        self.assertEqual((close.code, before), (1014, []))
        self.assertTrue(c.answer_close_and_wait_eof(close))


if __name__ == "__main__":
    harness.main()
