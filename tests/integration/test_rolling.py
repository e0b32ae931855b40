"""Rolling restarts: the lame duck (drain_delay: health checks fail while the listeners still
accept), the refusal of a second sluice on the same config or ports, a zero-downtime binary
upgrade under HTTP and WebSocket load (the new process takes the listening sockets over; not one
request fails and no WebSocket is cut before the old process's drain ends with 1001), the health
answer on a data listener, and [admin] read_token_file.

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_rolling.py -v
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from procs import _die_with_parent  # noqa: E402
from harness import (LOCALHOST, RawConn, SluiceTestCase, can_connect, ws_route,  # noqa: E402
                     free_port, sluice_bin, wait_until)
from wsutil import CLOSE, PONG, PING, TEXT, WsClient  # noqa: E402


def admin_get(s, path, token=None):
    c = RawConn(s.admin_port)
    try:
        h = [("Connection", "close")] + ([("Authorization", "Bearer " + token)] if token else [])
        return c.request("GET", path, headers=h)
    finally:
        c.close()


def slurp(path):
    with open(path) as f:
        return f.read()


class LameDuck(SluiceTestCase):
    def test_health_fails_first_then_listeners_close(self):
        b, s = self.start_proxy(server={"drain_delay": "1500ms", "shutdown_timeout": "5s"},
                                listener={"health_path": "/healthz"})
        s.wait_admin()
        self.assertEqual(s.request("GET", "/healthz").status, 200)
        keep = self.connect(s)
        self.assertEqual(keep.request("GET", "/echo").status, 200)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: admin_get(s, "/healthz").status == 503, 1),
                        "admin /healthz still 200 after SIGTERM")
        # During the lame duck: the data listener's health answer fails too, a client that
        # connects now is served (and told to close), a keep-alive client is told to close.
        self.assertEqual(s.request("GET", "/healthz").status, 503)
        c = self.connect(s)
        r = c.request("GET", "/echo/during")
        self.assertEqual(r.status, 200, r)
        self.assertIn("close", r.connection_tokens())
        r = keep.request("GET", "/echo/keep")
        self.assertEqual(r.status, 200, r)
        self.assertIn("close", r.connection_tokens())
        self.assertLess(time.monotonic() - t0, 1.4, "the lame duck test itself was too slow")
        # After drain_delay: not accepting any more, then the exit.
        self.assertTrue(wait_until(lambda: not can_connect(s.port), 3),
                        "still accepting after drain_delay")
        self.assertGreater(time.monotonic() - t0, 1.4, "stopped accepting before drain_delay")
        self.assertEqual(s.wait_exit(10), 0)


class DuplicateStart(SluiceTestCase):
    def test_second_sluice_on_the_same_config_is_refused(self):
        b, s = self.start_proxy()
        p = subprocess.run([sluice_bin(), "--config", s.config_path], capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn(b"another sluice (pid %d) is running" % s.pid, p.stderr)
        self.assertIn(b"--upgrade", p.stderr)
        # Every request still goes to the first one.
        for i in range(8):
            r = s.request("GET", "/echo/%d" % i)
            self.assertEqual(r.status, 200)
        self.assertEqual(len(s.access_log_lines()) if wait_until(
            lambda: len(s.access_log_lines()) >= 8, 3) else 0, 8)

    def test_another_config_on_the_same_port_is_refused(self):
        b, s = self.start_proxy()
        other = os.path.join(self.tmpdir, "other.toml")
        with open(other, "w") as f:
            f.write(s.config_text().replace("127.0.0.1:%d" % s.admin_port,
                                            "127.0.0.1:%d" % free_port()))
        p = subprocess.run([sluice_bin(), "--config", other], capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn(b"127.0.0.1:%d: Address already in use" % s.port, p.stderr)

    def test_upgrade_without_a_running_sluice_fails(self):
        b, s = self.start_proxy()
        other = os.path.join(self.tmpdir, "alone.toml")
        with open(other, "w") as f:
            f.write("[[listeners]]\nname = \"x\"\nlisten = \"127.0.0.1:%d\"\n" % free_port())
        p = subprocess.run([sluice_bin(), "--upgrade", "--config", other], capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn(b"no sluice is running with this config", p.stderr)


class HealthAndTokens(SluiceTestCase):
    def test_read_token_guards_gets_but_not_healthz(self):
        read = os.path.join(self.tmpdir, "read.token")
        write = os.path.join(self.tmpdir, "write.token")
        with open(read, "w") as f:
            f.write("r34d\n")
        with open(write, "w") as f:
            f.write("wr1te\n")
        b, s = self.start_proxy()
        s.stop()
        s.spec["admin"] = {"read_token_file": read, "token_file": write}
        s.start()
        s.wait_admin()
        self.assertEqual(admin_get(s, "/healthz").status, 200)
        for path in ("/metrics", "/api/status"):
            self.assertEqual(admin_get(s, path).status, 401, path)
            self.assertEqual(admin_get(s, path, token="nope").status, 401, path)
            self.assertEqual(admin_get(s, path, token="r34d").status, 200, path)
            self.assertEqual(admin_get(s, path, token="wr1te").status, 200, path)
        c = RawConn(s.admin_port)
        r = c.request("POST", "/api/reload", headers=[("Authorization", "Bearer r34d")])
        c.close()
        self.assertEqual(r.status, 401, "the read token must not reload")

    def test_health_path_on_a_data_listener(self):
        b, s = self.start_proxy(listener={"health_path": "/lb-check"})
        r = s.request("GET", "/lb-check?probe=1")
        self.assertEqual((r.status, r.body), (200, b"200 OK: ok\n"))
        self.assertEqual(s.request("HEAD", "/lb-check").status, 200)
        self.assertEqual(s.request("GET", "/lb-check/deeper").status, 200)  # proxied
        self.assertEqual(b.count()["paths"], ["/lb-check/deeper"])
        time.sleep(0.4)
        self.assertEqual([json.loads(l)["path"] for l in s.access_log_lines()],
                         ["/lb-check/deeper"], "health checks are not logged")


class BinaryUpgrade(SluiceTestCase):
    """`sluice --upgrade --config FILE` under load."""

    def test_upgrade_under_http_and_websocket_load(self):
        ws_backend = self.start_ws_backend()
        http_backend = self.start_backend()
        s = self.start_sluice({
            "server": {"workers": 2, "shutdown_timeout": "3s"},
            "pools": [{"name": "ws", "backends": [{"address": ws_backend.address}]},
                      {"name": "app", "backends": [{"address": http_backend.address}]}],
            "routes": [ws_route(path_prefix="/ws", pool="ws"), {"pool": "app"}]})
        s.wait_admin()
        old_pid = s.pid

        stop = threading.Event()
        http_results = []  # (ok, what)
        lock = threading.Lock()

        def http_load():
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    c = RawConn(s.port, timeout=10)
                    try:
                        r = c.request("GET", "/echo/%d" % n, timeout=10)
                        ok = (r.status == 200, r.status)
                    finally:
                        c.close()
                except Exception as e:  # noqa: BLE001 (any failure counts)
                    ok = (False, repr(e))
                with lock:
                    http_results.append(ok)

        ws_events = {}  # index -> {"closed_at", "code", "messages", "error"}

        def ws_load(i, client):
            ev = ws_events[i]
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    client.send_text("m%d-%d" % (i, k))
                    while True:
                        f = client.read_frame(10)
                        if f.opcode == PING:
                            client.send_frame(PONG, f.payload)
                            continue
                        break
                except Exception as e:  # noqa: BLE001
                    ev["error"] = repr(e)
                    ev["closed_at"] = time.monotonic()
                    return
                if f.opcode == CLOSE:
                    ev["closed_at"] = time.monotonic()
                    ev["code"] = f.code
                    try:
                        client.send_frame(CLOSE, f.payload[:2])
                    except OSError:
                        pass
                    return
                if f.payload != ("m%d-%d" % (i, k)).encode():
                    ev["error"] = "wrong echo %r" % f.payload
                    return
                ev["messages"] += 1
                time.sleep(0.05)

        clients = []
        for i in range(8):
            c = self.ws_client(s, path="/ws/%d" % i)
            self.assertUpgraded(c)
            clients.append(c)
            ws_events[i] = {"closed_at": None, "code": None, "messages": 0, "error": None}
        threads = [threading.Thread(target=http_load) for _ in range(4)]
        threads += [threading.Thread(target=ws_load, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)

        # The upgrade: the same binary here (a new one in production), the same config.
        out = open(os.path.join(self.tmpdir, "upgrade.stderr"), "wb")
        self.addCleanup(out.close)
        new = subprocess.Popen([sluice_bin(), "--upgrade", "--config", s.config_path],
                               stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                               cwd=self.tmpdir, start_new_session=True, preexec_fn=_die_with_parent)

        def stop_new():
            if new.poll() is None:
                new.send_signal(signal.SIGTERM)
                try:
                    new.wait(10)
                except subprocess.TimeoutExpired:
                    new.kill()
                    new.wait(5)
        self.addCleanup(stop_new)
        upgrade_log = os.path.join(self.tmpdir, "upgrade.stderr")
        self.assertTrue(wait_until(lambda: "started" in slurp(upgrade_log), 15),
                        slurp(upgrade_log))
        handed_over = time.monotonic()

        # A WebSocket opened now lands on the new process.
        fresh = self.ws_client(s, path="/ws/new")
        self.assertUpgraded(fresh)
        fresh.send_text("on the new one")
        self.assertEqual(fresh.recv_message()[1], b"on the new one")

        # The old process drains: its WebSockets run on until shutdown_timeout (3 s), then 1001.
        self.assertEqual(s.wait_exit(15), 0, "the old process did not exit cleanly")
        old_exit = time.monotonic()
        time.sleep(1.0)  # HTTP load goes on against the new process alone
        stop.set()
        for t in threads:
            t.join(20)

        failures = [r for r in http_results if not r[0]]
        self.assertGreater(len(http_results), 50, "too little HTTP load to show anything")
        self.assertEqual(failures, [], "%d of %d requests failed" % (len(failures),
                                                                    len(http_results)))
        for i, ev in ws_events.items():
            self.assertIsNone(ev["error"], (i, ev))
            self.assertEqual(ev["code"], 1001, (i, ev))
            self.assertGreater(ev["closed_at"] - handed_over, 2.5,
                               "WebSocket %d cut before the old process's drain ended" % i)
            self.assertGreater(ev["messages"], 20, (i, ev))
        self.assertLess(old_exit - handed_over, 10)
        self.assertIn("has taken the listening sockets over", s.stderr())
        self.assertIn("handed over 3 listening sockets", slurp(upgrade_log))
        # The admin API is the new process's now, and so is the next upgrade's control socket.
        status = json.loads(admin_get(s, "/api/status").body)
        self.assertEqual(status["pid"], new.pid)
        self.assertNotEqual(new.pid, old_pid)
        p = subprocess.run([sluice_bin(), "--config", s.config_path], capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        self.assertIn(b"another sluice (pid %d)" % new.pid, p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
