"""The process: --version, --check (exit codes and FILE:LINE:COLUMN diagnostics), graceful
shutdown on SIGTERM, and [server] max_connections."""

import os
import re
import signal
import socket
import time
import unittest

from harness import LOCALHOST, SluiceTestCase, build_request, free_port, run_sluice

GOOD = """\
[server]
workers = 1
access_log = "off"

[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "public"
listen = "127.0.0.1:8080"
header_timeout = "10s"

[[routes]]
listener = "public"
host = "*"
path_prefix = "/"
pool = "app"

[[pools]]
name = "app"
backends = [ { address = "127.0.0.1:9001" } ]
"""


class CommandLine(SluiceTestCase):
    def write(self, name, text):
        # --check binds the listen addresses: use free ports, not GOOD's fixed ones.
        text = text.replace("127.0.0.1:9901", "127.0.0.1:%d" % free_port())
        if "127.0.0.1:8080" in text:
            text = text.replace("127.0.0.1:8080", "127.0.0.1:%d" % free_port())
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def diagnostics(self, p, path):
        """(line, column, message) for every 'FILE:LINE:COLUMN: error: message' line."""
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        found = []
        for line in out.splitlines():
            m = re.match(r"^(.+?):(\d+):(\d+): error: (.+)$", line)
            if m and os.path.basename(m.group(1)) == os.path.basename(path):
                found.append((int(m.group(2)), int(m.group(3)), m.group(4)))
        return found, out

    def test_version(self):
        p = run_sluice(["--version"])
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex((p.stdout + p.stderr).decode(), r"\d+\.\d+\.\d+")

    def test_check_good_config(self):
        path = self.write("good.toml", GOOD)
        p = run_sluice(["--check", path])
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode())

    def test_check_fails_on_a_busy_port(self):
        # --check fails on what a start would fail on: a port another process listens on (it
        # binds without SO_REUSEPORT, then lets go: nothing running is disturbed).
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind((LOCALHOST, 0))
            holder.listen(1)
            port = holder.getsockname()[1]
            path = self.write("busy.toml", GOOD.replace("127.0.0.1:8080", "127.0.0.1:%d" % port))
            p = run_sluice(["--check", path])
            self.assertEqual(p.returncode, 1, (p.stdout + p.stderr).decode())
            self.assertIn(b"already in use", p.stderr)
        finally:
            holder.close()

    def test_check_unknown_key_with_suggestion(self):
        path = self.write("typo.toml", GOOD.replace("workers = 1", "workrs = 1"))
        p = run_sluice(["--check", path])
        self.assertEqual(p.returncode, 1, (p.stdout + p.stderr).decode())
        diags, out = self.diagnostics(p, path)
        self.assertTrue(diags, "no FILE:LINE:COLUMN: error: line in:\n" + out)
        line, col, msg = diags[0]
        self.assertEqual(line, 2, out)
        self.assertEqual(col, 1, out)
        self.assertIn("workrs", msg)
        self.assertIn("did you mean 'workers'", msg)

    def test_check_reports_every_error(self):
        text = GOOD.replace("workers = 1", "workers = 1\nshutdown_timeout = \"soon\"")
        text = text.replace('header_timeout = "10s"', 'header_timout = "10s"')
        path = self.write("two.toml", text)
        p = run_sluice(["--check", path])
        self.assertEqual(p.returncode, 1)
        diags, out = self.diagnostics(p, path)
        lines = sorted(d[0] for d in diags)
        self.assertIn(3, lines, "bad duration on line 3 not reported:\n" + out)
        self.assertIn(12, lines, "misspelt header_timeout on line 12 not reported:\n" + out)
        self.assertTrue(any("header_timeout" in d[2] for d in diags), out)

    def test_check_syntax_error(self):
        path = self.write("syntax.toml", GOOD.replace('name = "app"', 'name = "app'))
        p = run_sluice(["--check", path])
        self.assertEqual(p.returncode, 1)
        diags, out = self.diagnostics(p, path)
        self.assertTrue(diags, out)
        self.assertEqual(diags[0][0], GOOD.splitlines().index('name = "app"') + 1, out)

    def test_check_unknown_pool_reference(self):
        path = self.write("ref.toml", GOOD.replace('pool = "app"', 'pool = "ap"'))
        p = run_sluice(["--check", path])
        self.assertEqual(p.returncode, 1)
        diags, out = self.diagnostics(p, path)
        self.assertTrue(diags, out)
        self.assertEqual(diags[0][0], GOOD.splitlines().index('pool = "app"') + 1, out)

    def test_check_missing_file(self):
        p = run_sluice(["--check", os.path.join(self.tmpdir, "nope.toml")])
        self.assertEqual(p.returncode, 1)
        self.assertTrue((p.stdout + p.stderr).strip())

    def test_run_with_bad_config_exits_nonzero(self):
        path = self.write("typo.toml", GOOD.replace("workers = 1", "workrs = 1"))
        p = run_sluice(["--config", path])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"did you mean", p.stdout + p.stderr)


class GracefulShutdown(SluiceTestCase):
    def test_in_flight_request_completes(self):
        b, s = self.start_proxy(server={"shutdown_timeout": "10s"})
        c = self.connect(s, timeout=10)
        c.send(build_request("GET", "/slow?delay=2"))
        time.sleep(0.5)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        # New connections are refused once the signal is handled.
        with self.assertRaises(ConnectionRefusedError, msg="listener still accepting after SIGTERM"):
            probe = socket.create_connection((LOCALHOST, s.port), timeout=1)
            probe.close()
        r = c.read_response(timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["slept"], 2.0)
        code = s.wait_exit(10)
        self.assertIsNotNone(code, "sluice still running 10s after SIGTERM")
        self.assertEqual(code, 0)
        self.assertGreater(time.monotonic() - t0, 1.0, "exited before the in-flight request ended")

    def test_idle_connections_do_not_delay_exit(self):
        b, s = self.start_proxy(server={"shutdown_timeout": "20s"})
        c = self.connect(s)
        self.assertEqual(c.request("GET", "/echo").status, 200)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        code = s.wait_exit(10)
        self.assertIsNotNone(code, "sluice still running 10s after SIGTERM")
        self.assertEqual(code, 0)
        self.assertLess(time.monotonic() - t0, 3.0, "an idle keep-alive connection held up exit")
        self.assertClosed(c, timeout=1)

    def test_shutdown_timeout_bounds_exit(self):
        b, s = self.start_proxy(server={"shutdown_timeout": "1s"})
        c = self.connect(s, timeout=10)
        c.send(build_request("GET", "/slow?delay=6"))
        time.sleep(0.3)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        code = s.wait_exit(8)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(code, "sluice ignored shutdown_timeout=1s")
        self.assertLess(elapsed, 4.0)
        self.assertClosed(c, timeout=2)

    def test_sigint_also_stops(self):
        b, s = self.start_proxy()
        s.signal(signal.SIGINT)
        code = s.wait_exit(10)
        self.assertEqual(code, 0)


class MaxConnections(SluiceTestCase):
    def test_third_connection_waits_for_a_free_slot(self):
        b, s = self.start_proxy(server={"max_connections": 2})
        time.sleep(0.3)  # let sluice notice the readiness probe's close
        c1 = self.connect(s)
        c2 = self.connect(s)
        self.assertEqual(c1.request("GET", "/echo/1").status, 200)
        self.assertEqual(c2.request("GET", "/echo/2").status, 200)
        c3 = self.connect(s)  # the kernel backlog completes the handshake
        c3.send(build_request("GET", "/echo/3"))
        self.assertFalse(c3.has_data(1.5), "a third connection was served at max_connections=2")
        # Connections over the limit are queued, not dropped.
        self.assertFalse(c3.eof)
        c1.close()
        r = c3.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/echo/3")
        self.assertEqual(c2.request("GET", "/echo/2b").status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
