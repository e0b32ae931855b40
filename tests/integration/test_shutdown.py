"""Graceful shutdown on SIGTERM/SIGINT: sluice stops accepting, /healthz answers 503 (the admin
listener stays up until the end), in-flight HTTP requests finish, open WebSockets keep working
until [server] shutdown_timeout and then get close 1001, and the process exits 0. WebSockets
that end by themselves let it exit early; a second signal exits at once."""

import signal
import sys
import time

import harness
from harness import (RawConn, SluiceTestCase, build_request, can_connect, config, free_port, pool,
                     route, wait_until)
import wsutil
from wsutil import WsClient


class ShutdownCase(SluiceTestCase):
    def setup_proxy(self, shutdown_timeout):
        self.b = self.start_backend()
        self.w = self.start_ws_backend(name="wsbackend")
        self.admin_port, self.public = free_port(), free_port()
        text = config(self.admin_port, {"public": self.public},
                      [pool("app", [self.b.address]), pool("wspool", [self.w.address])],
                      [route("chat", "wspool", "/ws", websocket=True), route("web", "app", "/")],
                      server={"shutdown_timeout": shutdown_timeout})
        self.s = self.start_config_sluice(text, self.admin_port, {"public": self.public})
        self.admin = self.s.admin
        return self.s

    def ws(self, path):
        c = WsClient(self.public, path=path)
        self.conns.append(c)
        self.assertEqual(c.status, 101, c.headers)
        return c

    def healthz_status(self):
        try:
            return self.admin.healthz(timeout=2).status
        except (OSError, TimeoutError, harness.IncompleteResponse) as e:
            return repr(e)


class Graceful(ShutdownCase):
    def test_sigterm_in_flight_request_websocket_healthz_exit_code(self):
        self.setup_proxy("2s")
        c = self.ws("/ws/1")
        self.assertEchoes(c, "before")
        ws_id = self.w.conn_id("/ws/1")
        slow = RawConn(self.public, timeout=15)
        self.conns.append(slow)
        slow.send(build_request("GET", "/slow?delay=1"))
        self.assertTrue(wait_until(lambda: "/slow?delay=1" in self.b.count().get("paths", []), 3),
                        "the slow request did not reach the backend")
        self.assertEqual(self.healthz_status(), 200)

        t0 = time.monotonic()
        self.s.signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: self.healthz_status() == 503, 1.0),
                        "/healthz not 503 after SIGTERM: %r" % self.healthz_status())
        self.assertIs(self.admin.status()["shutting_down"], True)
        self.assertTrue(wait_until(lambda: not can_connect(self.public), 1.0),
                        "still accepting new connections while shutting down")
        self.assertEchoes(c, "during", "WebSocket stopped working as shutdown began")

        r = slow.read_response(timeout=10)
        self.assertEqual(r.status, 200, "in-flight request: %r" % r)
        self.assertEqual(r.json()["slept"], 1.0)
        t_slow = time.monotonic() - t0

        self.assertTrue(self.s.alive(), "exited while a WebSocket was open (after %.1fs)"
                        % (time.monotonic() - t0))
        self.assertEchoes(c, "still during", "WebSocket stopped working before shutdown_timeout")
        self.assertEqual(self.healthz_status(), 503, "admin listener gone before the end")
        self.assertLess(time.monotonic() - t0, 1.8, "test too slow to check before the timeout")

        f, _ = c.read_close(timeout=8)
        t_close = time.monotonic() - t0
        self.assertEqual(f.code, 1001, "close %s %r" % (f.code, f.reason))
        self.assertGreaterEqual(t_close, 1.8, "1001 came before shutdown_timeout (2s)")
        self.assertLess(t_close, 5.0)
        c.send_frame(wsutil.CLOSE, f.payload[:2])  # as a client does: answer the close
        code = self.s.wait_exit(timeout=10)
        t_exit = time.monotonic() - t0
        self.assertEqual(code, 0, "exit code after a graceful shutdown")
        ev = self.w.wait_close(ws_id, timeout=5)
        self.assertIsNotNone(ev, "the backend's WebSocket was not closed")
        self.assertNotEqual(ev["code"], 1006, "the backend got no close frame")
        self.assertLess(t_exit - t_close, 3.0, "exit long after the last WebSocket closed")
        sys_note = "in-flight done at %.2fs, 1001 at %.2fs, exit at %.2fs" % (t_slow, t_close, t_exit)
        sys.stderr.write("[test_shutdown] %s\n" % sys_note)

    def test_sigint_closes_websockets_with_1001_and_exits_0(self):
        self.setup_proxy("1s")
        conns = [self.ws("/ws/%d" % i) for i in range(4)]  # spread over both workers
        for i, c in enumerate(conns):
            self.assertEchoes(c, "hi %d" % i)
        t0 = time.monotonic()
        self.s.signal(signal.SIGINT)
        self.assertTrue(wait_until(lambda: self.healthz_status() == 503, 1.0))
        for c in conns:
            self.assertEchoes(c, "during")
        for c in conns:
            f, _ = c.read_close(timeout=8)
            self.assertEqual(f.code, 1001)
            c.send_frame(wsutil.CLOSE, f.payload[:2])
        self.assertGreaterEqual(time.monotonic() - t0, 0.8)
        self.assertEqual(self.s.wait_exit(timeout=10), 0)

    def test_websocket_ending_early_lets_sluice_exit_before_the_timeout(self):
        self.setup_proxy("20s")
        c = self.ws("/ws/early")
        self.assertEchoes(c, "hello")
        t0 = time.monotonic()
        self.s.signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: self.healthz_status() == 503, 1.0))
        time.sleep(0.3)
        self.assertTrue(self.s.alive())
        self.assertEchoes(c, "still here")
        c.send_frame(wsutil.CLOSE, wsutil.close_payload(1000, "done"))
        f, _ = c.read_close(timeout=5)
        self.assertEqual(f.code, 1000)
        self.assertEqual(self.s.wait_exit(timeout=8), 0)
        self.assertLess(time.monotonic() - t0, 8.0, "waited for shutdown_timeout with nothing open")

    def test_idle_sluice_exits_0_promptly(self):
        self.setup_proxy("30s")
        keep = RawConn(self.public, timeout=10)
        self.conns.append(keep)
        self.assertEqual(keep.request("GET", "/echo/x").status, 200)  # an idle keep-alive
        t0 = time.monotonic()
        self.s.signal(signal.SIGTERM)
        self.assertEqual(self.s.wait_exit(timeout=8), 0)
        self.assertLess(time.monotonic() - t0, 8.0)

    def test_second_signal_exits_at_once(self):
        self.setup_proxy("30s")
        c = self.ws("/ws/held")
        self.assertEchoes(c, "hello")
        self.s.signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: self.healthz_status() == 503, 1.0))
        time.sleep(0.5)
        self.assertTrue(self.s.alive(), "exited although a WebSocket was open")
        t0 = time.monotonic()
        self.s.signal(signal.SIGTERM)
        code = self.s.wait_exit(timeout=5)
        self.assertIsNotNone(code, "a second SIGTERM did not end the process")
        self.assertLess(time.monotonic() - t0, 3.0)


if __name__ == "__main__":
    harness.main()
