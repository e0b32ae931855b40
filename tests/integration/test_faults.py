"""Faults between sluice and its peers, injected with a small relay of our own (tc netem is not
available on these machines): one byte at a time, delays, a bandwidth cap, a stall in the middle
of a frame, a reset in the middle of a body; a backend paused with SIGSTOP; half-closed sockets
both ways; the process out of file descriptors. Each behaves as documented, and other
connections are unaffected."""

import os
import resource
import signal
import socket
import threading
import time
import unittest

from harness import LOCALHOST, RawConn, SluiceTestCase, build_request, ws_route
from servers import ThreadedServer


F = "faulty.test"  # the host routed through the fault relay


class FaultRelay(ThreadedServer):
    """A TCP relay on 127.0.0.1 in front of `target`: what goes from the sluice side toward the
    target ("up") and back ("down") passes through `shape(direction, data)`, which may sleep,
    cut data up, or return None to reset the connection. `mode` can be changed while running."""

    name = "faultrelay"

    def __init__(self, target_port):
        self.target = target_port
        self.mode = {}
        self.transferred = {"up": 0, "down": 0}
        super().__init__()

    def handle(self, a, peer):
        b = socket.create_connection((LOCALHOST, self.target), timeout=5)
        b.settimeout(None)
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.track(b)
        down = threading.Thread(target=self._pump, args=(b, a, "down"), daemon=True)
        down.start()
        try:
            self._pump(a, b, "up")
            down.join()  # ends with its peer, or at close()
        finally:
            b.close()

    def _pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)  # half-close passes through
                    return
                m = self.mode.get(direction, {})
                if m.get("stall_after") is not None and \
                        self.transferred[direction] + len(data) > m["stall_after"]:
                    keep = max(0, m["stall_after"] - self.transferred[direction])
                    dst.sendall(data[:keep])
                    self.transferred[direction] += keep
                    self._stopping.wait(m.get("stall_for", 3600))  # ends at close()
                    data = data[keep:]
                if m.get("reset_after") is not None and \
                        self.transferred[direction] + len(data) > m["reset_after"]:
                    keep = max(0, m["reset_after"] - self.transferred[direction])
                    dst.sendall(data[:keep])
                    for s in (src, dst):  # SO_LINGER 0: a reset, not a FIN
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                    return
                if m.get("delay"):
                    time.sleep(m["delay"])
                step = m.get("bytes_per_write") or len(data)
                rate = m.get("bytes_per_second")
                for i in range(0, len(data), step):
                    piece = data[i:i + step]
                    dst.sendall(piece)
                    self.transferred[direction] += len(piece)
                    if rate:
                        time.sleep(len(piece) / rate)
                    elif m.get("bytes_per_write"):
                        time.sleep(0.001)
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


class HttpFaults(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend = self.start_backend()
        self.relay = FaultRelay(self.backend.port)
        self.addCleanup(self.relay.close)
        # Two routes: host faulty.test through the relay, anything else straight to the backend.
        self.sluice = self.start_sluice({
            "pools": [{"name": "faulty", "backends": [{"address": self.relay.address}],
                       "response_timeout": "2s", "keepalive_connections": 0},
                      {"name": "direct", "backends": [{"address": self.backend.address}]}],
            "routes": [{"host": "faulty.test", "pool": "faulty"}, {"pool": "direct"}],
        })

    def direct_ok(self):
        t0 = time.monotonic()
        r = self.sluice.request("GET", "/echo/other", timeout=5)
        self.assertEqual(r.status, 200, r)
        return time.monotonic() - t0

    def test_one_byte_at_a_time_both_ways(self):
        self.relay.mode = {"up": {"bytes_per_write": 1}, "down": {"bytes_per_write": 1}}
        c = self.connect(self.sluice)
        r = c.request("GET", "/echo/%s" % ("x" * 200), host=F, timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/echo/" + "x" * 200)
        self.assertLess(self.direct_ok(), 1.0)

    def test_client_sends_one_byte_at_a_time(self):
        c = self.connect(self.sluice)
        data = build_request("POST", "/echo/slow-client", body=b"b" * 300)
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
        r = c.read_response()
        self.assertEqual((r.status, r.json()["body_length"]), (200, 300))

    def test_bandwidth_cap_does_not_slow_others(self):
        self.relay.mode = {"down": {"bytes_per_second": 100000}}
        done = {}

        def slow():
            r = RawConn(self.sluice.port).request("GET", "/download?bytes=300000", host=F,
                                                  timeout=30)
            done["slow"] = (r.status, len(r.body))
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        worst = max(self.direct_ok() for _ in range(10))
        self.assertLess(worst, 1.0, "a capped backend slowed another route")
        t.join(30)
        self.assertEqual(done.get("slow"), (200, 300000))

    def test_reset_in_the_middle_of_a_response_body(self):
        self.relay.mode = {"down": {"reset_after": 2000}}
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/download?bytes=100000", host=F))
        with self.assertRaises(Exception):
            c.read_response(timeout=5)  # cut: never presented as complete
        self.assertLess(self.direct_ok(), 1.0)
        self.assertTrue(self.sluice.alive())

    def test_stall_in_the_middle_of_a_body_gets_504_or_a_cut(self):
        self.relay.mode = {"down": {"stall_after": 100, "stall_for": 10}}
        c = self.connect(self.sluice)
        t0 = time.monotonic()
        c.send(build_request("GET", "/echo/stall", host=F))
        try:
            r = c.read_response(timeout=6)
            self.assertEqual(r.status, 504, r)  # the head never came
        except Exception:
            pass  # the head came and the body stalled: cut after response_timeout
        self.assertLess(time.monotonic() - t0, 5)
        self.assertLess(self.direct_ok(), 1.0)

    def test_backend_paused_with_sigstop(self):
        backend = self.start_backend()
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": backend.address}],
                                          "response_timeout": "1s"}],
                               "routes": [{"pool": "app"}]})
        os.kill(backend.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = s.request("GET", "/echo/stopped", timeout=10)
            self.assertEqual(r.status, 504, r)
            self.assertLess(time.monotonic() - t0, 3)
        finally:
            os.kill(backend.proc.pid, signal.SIGCONT)
        r = s.request("GET", "/echo/again", timeout=10)
        self.assertEqual(r.status, 200, r)

    def test_client_half_closes_after_its_request(self):
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/echo/half"))
        c.shutdown_write()
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertClosed(c)

    def test_backend_half_closes_after_a_close_delimited_response(self):
        r = self.sluice.request("GET", "/download?bytes=5000&close=1", host=F, timeout=10)
        self.assertEqual((r.status, len(r.body)), (200, 5000))


class WebSocketFaults(SluiceTestCase):
    def test_frames_one_byte_at_a_time_and_a_stall_mid_frame(self):
        wsb = self.start_ws_backend()
        relay = FaultRelay(wsb.port)
        self.addCleanup(relay.close)
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": relay.address}]},
                                         {"name": "direct", "backends": [{"address": wsb.address}]}],
                               "routes": [ws_route(path_prefix="/slow/"),
                                          ws_route(path_prefix="/", pool="direct")]})
        relay.mode = {"up": {"bytes_per_write": 1}, "down": {"bytes_per_write": 1}}
        c = self.ws_client(s, "/slow/bytes")
        self.assertUpgraded(c)
        c.send_text("h\u00e9llo one byte at a time")
        self.assertEqual(c.read_frame(timeout=20).payload.decode(), "h\u00e9llo one byte at a time")
        # The backend's answer stalls in the middle of a frame: another session is unaffected.
        relay.mode = {"down": {"stall_after": relay.transferred["down"] + 5, "stall_for": 10}}
        c.send_text("x" * 100)
        other = self.ws_client(s, "/direct")
        self.assertUpgraded(other)
        t0 = time.monotonic()
        other.send_text("fine")
        self.assertEqual(other.read_frame(timeout=5).payload, b"fine")
        self.assertLess(time.monotonic() - t0, 1.0)


class OutOfDescriptors(SluiceTestCase):
    def test_keeps_serving_and_accepts_again_logging_once_a_second(self):
        backend = self.start_backend()

        limit = 64
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": backend.address}]}],
                               "routes": [{"pool": "app"}]},
                              wait_ready=False)
        # The harness starts the process itself; lower its limit now (soft and hard).
        resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
        s.wait_ready()
        keep = self.connect(s)
        r = keep.request("GET", "/echo/before")
        self.assertEqual(r.status, 200, r)
        # Fill the table: connections beyond what sluice can accept wait in the backlog.
        extra = []
        for _ in range(limit + 20):
            try:
                extra.append(socket.create_connection((LOCALHOST, s.port), timeout=2))
            except OSError:
                break
        time.sleep(3)
        r = keep.request("GET", "/echo/during", timeout=5)  # what it holds keeps working
        self.assertEqual(r.status, 200, r)
        warnings = [l for l in s.stderr().splitlines() if "accept on" in l]
        self.assertGreaterEqual(len(warnings), 1, "running out of descriptors was not logged")
        self.assertLessEqual(len(warnings), 5, "logged per attempt, not once a second: %d lines"
                             % len(warnings))
        for x in extra:
            x.close()
        time.sleep(0.5)
        fresh = self.connect(s)
        r = fresh.request("GET", "/echo/after", timeout=10)  # accepting again
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
