"""Logs an operator can rotate and correlate: SIGUSR1 reopens the access and error logs after a
rename (logrotate), a reload applies a new access_log, X-Request-Id comes back to the client and
names the request in the access log and in error-log lines, the access log's new fields (user
agent, referer, TLS, upstream timings, why sluice closed a WebSocket), the text format, per-route
access_log = false, lines in time order across workers, and --log-level debug.

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_logs.py -v
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (LOCALHOST, RawConn, SluiceTestCase, closed_port, free_port, ws_route,  # noqa: E402
                     render_config, sluice_bin, wait_until)
from wsutil import CLOSE  # noqa: E402

COMBINED = re.compile(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "([^"]*)" (\d{3}) '
                      r'(\d+) "([^"]*)" "([^"]*)"(.*)$')


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def entries(path):
    return [json.loads(l) for l in read(path).splitlines() if l.strip()]


class Rotation(SluiceTestCase):
    def test_sigusr1_reopens_both_logs_after_a_rename(self):
        error_log = os.path.join(self.tmpdir, "error.log")
        b, s = self.start_proxy(server={"error_log": error_log})
        self.assertEqual(s.request("GET", "/before").status, 200)
        wait_until(lambda: "/before" in read(s.access_log), 3)
        os.rename(s.access_log, s.access_log + ".1")
        os.rename(error_log, error_log + ".1")
        s.signal(signal.SIGUSR1)
        # The reopen is logged (in the new error log), then requests go to the new access log.
        self.assertTrue(wait_until(lambda: "log files reopened" in read(error_log), 3),
                        read(error_log + ".1"))
        self.assertEqual(s.request("GET", "/after").status, 200)
        self.assertTrue(wait_until(lambda: "/after" in read(s.access_log), 3))
        self.assertIn("/before", read(s.access_log + ".1"))
        self.assertNotIn("/after", read(s.access_log + ".1"))
        self.assertNotIn("/before", read(s.access_log))
        self.assertIn("started", read(error_log + ".1"))
        self.assertTrue(s.alive())

    def test_reload_applies_a_new_access_log_and_format(self):
        b, s = self.start_proxy()
        self.assertEqual(s.request("GET", "/one").status, 200)
        new = os.path.join(self.tmpdir, "new-access.log")
        text = s.config_text().replace(s.access_log, new)
        text = text.replace("[server]", '[server]\naccess_log_format = "text"', 1)
        with open(s.config_path, "w") as f:
            f.write(text)
        a = RawConn(s.admin_port)
        self.assertEqual(a.request("POST", "/api/reload").status, 200)
        a.close()
        self.assertEqual(s.request("GET", "/two", headers=[("User-Agent", "probe/1.0")]).status,
                         200)
        self.assertTrue(wait_until(lambda: "/two" in read(new), 3))
        m = COMBINED.match(read(new).splitlines()[0])
        self.assertIsNotNone(m, read(new))
        self.assertEqual((m.group(1), m.group(3), m.group(4), m.group(7)),
                         ("127.0.0.1", "GET /two HTTP/1.1", "200", "probe/1.0"))
        self.assertIn("/one", read(s.access_log))
        self.assertNotIn("/two", read(s.access_log))


class Correlation(SluiceTestCase):
    def test_request_id_comes_back_and_names_the_request_everywhere(self):
        b, s = self.start_proxy()
        r = s.request("GET", "/echo", headers=[("User-Agent", "agent/7"),
                                               ("Referer", "https://ref.example/")])
        rid = r.header("X-Request-Id")
        self.assertRegex(rid or "", r"^[0-9a-f]{32}$")
        self.assertEqual(r.json()["headers"], r.json()["headers"])
        sent = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
        self.assertEqual(sent, [rid])
        # A client's own id is kept and returned; a junk one is replaced.
        r = s.request("GET", "/echo", headers=[("X-Request-Id", "trace-abc.1")])
        self.assertEqual(r.header("X-Request-Id"), "trace-abc.1")
        r = s.request("GET", "/echo", headers=[("X-Request-Id", "bad id\"<script>")])
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")
        wait_until(lambda: len(entries(s.access_log)) >= 3, 3)
        e = entries(s.access_log)[0]
        self.assertEqual((e["request_id"], e["user_agent"], e["referer"]),
                         (rid, "agent/7", "https://ref.example/"))
        self.assertGreaterEqual(e["upstream_connect_ms"], 0)
        self.assertGreaterEqual(e["upstream_response_ms"], 0)
        self.assertNotIn("upstream_connect_ms", entries(s.access_log)[1],
                         "a reused upstream connection has no connect time")

    def test_error_log_lines_carry_the_request(self):
        port = closed_port()
        s = self.start_sluice({"pools": [{"name": "app",
                                          "backends": [{"address": "127.0.0.1:%d" % port}]}],
                               "routes": [{"pool": "app", "name": "api"}]})
        r = s.request("GET", "/x")
        self.assertEqual(r.status, 502, r)
        rid = r.header("X-Request-Id")
        self.assertTrue(rid)
        line = wait_until(lambda: [l for l in s.stderr().splitlines() if rid in l], 3)
        self.assertTrue(line, s.stderr())
        self.assertRegex(line[0], r"502 .*\[listener=public route=api client=127\.0\.0\.1 "
                                  r"request_id=%s\]" % rid)

    def test_websocket_close_cause_is_logged(self):
        b = self.start_ws_backend()
        s = self.start_sluice({"pools": [{"name": "app", "drain_timeout": "0s",
                                          "backends": [{"address": b.address}]}],
                               "routes": [ws_route()]})
        s.wait_admin()
        c = self.ws_client(s)
        self.assertUpgraded(c)
        c.send_text("hi")
        self.assertEqual(c.recv_message()[1], b"hi")
        a = RawConn(s.admin_port)
        r = a.request("POST", "/api/pools/app/backends/%s/drain" % b.address)
        a.close()
        self.assertEqual(r.status, 200, r)
        close, _ = c.read_close(timeout=5)
        self.assertEqual(close.code, 1012)
        self.assertTrue(wait_until(lambda: entries(s.access_log), 5))
        e = entries(s.access_log)[-1]
        self.assertEqual((e["status"], e["ws_close_code"], e["ws_closed_by"], e["ws_close_cause"]),
                         (101, 1012, "sluice", "drain"), e)
        self.assertEqual(e["ws_close_reason"], "backend draining; please reconnect")


class Formats(SluiceTestCase):
    def test_route_access_log_off_and_lines_in_time_order(self):
        b = self.start_backend()
        s = self.start_sluice({
            "server": {"workers": 4},
            "pools": [{"name": "app", "backends": [{"address": b.address}]}],
            "routes": [{"pool": "app", "path_prefix": "/quiet", "access_log": False},
                       {"pool": "app"}]})
        self.assertEqual(s.request("GET", "/quiet/x").status, 200)

        def load(n):
            for i in range(n):
                s.request("GET", "/loud/%d" % i)
        threads = [threading.Thread(target=load, args=(40,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertTrue(wait_until(lambda: len(entries(s.access_log)) >= 240, 5))
        es = entries(s.access_log)
        self.assertEqual(len(es), 240)
        self.assertFalse([e for e in es if e["path"].startswith("/quiet")])
        times = [e["time"] for e in es]
        self.assertEqual(times, sorted(times), "access log lines out of time order")

    def test_debug_log_says_what_a_connection_does(self):
        b = self.start_backend()
        s = self.start_sluice({"server": {"log_level": "debug"},
                               "pools": [{"name": "app", "backends": [{"address": b.address}]}]})
        r = s.request("GET", "/hello")
        rid = r.header("X-Request-Id")
        err = wait_until(lambda: s.stderr() if "closed" in s.stderr() else "", 3) or s.stderr()
        for pattern in [r"debug c0\.\d+: accepted 127\.0\.0\.1 on listener 'public'",
                        r"GET /hello host 'localhost' -> route '0' \(client 127\.0\.0\.1, "
                        r"request %s\)" % rid,
                        r"request %s -> 127\.0\.0\.1:\d+ \(pool 'app', new connection\)" % rid,
                        r"request %s <- 200 from" % rid,
                        r"debug c0\.\d+: closed"]:
            self.assertRegex(err, pattern)


if __name__ == "__main__":
    unittest.main(verbosity=2)
