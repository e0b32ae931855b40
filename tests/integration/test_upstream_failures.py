"""Upstream failures: refused (502), response timeout (504), connect timeout, broken responses,
and retries on reused upstream connections that the backend closed (never twice for a POST)."""

import hashlib
import time
import unittest

from harness import (BLOCK_SIZE, Blackhole, IncompleteResponse, SluiceTestCase, build_request,
                     closed_port, pattern_sha256)


class Unreachable(SluiceTestCase):
    def test_refused_is_502(self):
        s = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": "127.0.0.1:%d" % closed_port()}]}],
            "routes": [{"pool": "app"}],
        })
        c = self.connect(s)
        t0 = time.monotonic()
        r = c.request("GET", "/echo", timeout=10)
        self.assertEqual(r.status, 502, r)
        self.assertLess(len(r.body), 1024)
        self.assertLess(time.monotonic() - t0, 5.0)
        # An upstream failure is not the client's fault: sluice may keep the connection.
        # The first request's connect and its retry were two consecutive failures; the third
        # ejects the only backend (passive health), after which the pool has no backend: 503.
        if "close" not in r.connection_tokens():
            r = c.request("GET", "/echo", timeout=10)
            self.assertIn(r.status, (502, 503), r)
            if r.status == 503:
                self.assertIn(b"no backend available", r.body)
            r = c.request("GET", "/echo", timeout=10)
            self.assertEqual(r.status, 503, r)
            self.assertIn(b"no backend available", r.body)

    def test_connect_timeout(self):
        hole = Blackhole()
        self.addCleanup(hole.close)
        if not hole.works():
            self.skipTest("cannot make a connect() hang on this kernel")
        s = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": hole.address}],
                       "connect_timeout": "500ms"}],
            "routes": [{"pool": "app"}],
        })
        t0 = time.monotonic()
        r = s.request("GET", "/echo", timeout=10)
        elapsed = time.monotonic() - t0
        self.assertIn(r.status, (502, 504), r)
        self.assertLess(len(r.body), 1024)
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 3.0, "connect_timeout=500ms not honoured (%.1fs)" % elapsed)


class ResponseTimeout(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(pool={"response_timeout": "1s"})

    def test_slow_backend_is_504(self):
        c = self.connect(self.sluice)
        t0 = time.monotonic()
        r = c.request("GET", "/slow?delay=3", timeout=10)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 504, r)
        self.assertLess(len(r.body), 1024)
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 2.5)

    def test_steady_slow_response_is_served_whole(self):
        # response_timeout bounds each gap between response reads, not the whole response: four
        # blocks 0.5 s apart take 1.5 s, longer than response_timeout.
        n = 4 * BLOCK_SIZE
        c = self.connect(self.sluice)
        r = c.request("GET", "/download?bytes=%d&gap=0.5" % n, timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), pattern_sha256(n))

    def test_stalled_response_body_is_cut(self):
        # A body that stops for longer than response_timeout is not presented as complete.
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/download?bytes=%d&gap=2.5" % (2 * BLOCK_SIZE)))
        head = c.read_head(timeout=5)
        self.assertEqual(head.status, 200, head)
        t0 = time.monotonic()
        closed, rest = c.wait_closed(6.0)
        self.assertTrue(closed, "connection still open after a 2.5 s stall (response_timeout=1s)")
        self.assertLess(len(rest), 2 * BLOCK_SIZE, "stalled body was delivered whole")
        self.assertLess(time.monotonic() - t0, 2.4, "cut only after the backend resumed")

    def test_late_response_is_not_served_to_the_next_request(self):
        c = self.connect(self.sluice)
        r = c.request("GET", "/slow?delay=2", timeout=10)
        self.assertEqual(r.status, 504, r)
        time.sleep(1.5)  # the backend's late answer has arrived on its old connection by now
        if "close" in r.connection_tokens() or (c.has_data(0.1) and c.eof):
            c = self.connect(self.sluice)
        for i in range(3):
            r = c.request("GET", "/echo/fresh-%d" % i, timeout=5)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["target"], "/echo/fresh-%d" % i,
                             "a stale upstream response was served")

    def test_fast_responses_unaffected(self):
        r = self.sluice.request("GET", "/slow?delay=0.3", timeout=5)
        self.assertEqual(r.status, 200, r)


class BrokenBackends(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def test_invalid_response_is_502(self):
        r = self.sluice.request("GET", "/bad-response", timeout=10)
        self.assertEqual(r.status, 502, r)

    def test_close_without_response_is_502(self):
        r = self.sluice.request("GET", "/close-now", timeout=10)
        self.assertEqual(r.status, 502, r)

    def test_truncated_body_is_not_presented_as_complete(self):
        c = self.connect(self.sluice)
        c.send(b"GET /truncated HTTP/1.1\r\nHost: x\r\n\r\n")
        with self.assertRaises(IncompleteResponse, msg="truncated upstream body looked complete"):
            r = c.read_response(timeout=5)
            self.fail("got a complete response: %r" % r)
        # sluice lives on.
        self.assertEqual(self.sluice.request("GET", "/echo").status, 200)


class Retries(SluiceTestCase):
    def test_get_after_backend_closed_idle_connection(self):
        b, s = self.start_proxy(backend_args=["--idle-close", "1"])
        c = self.connect(s)
        first = c.request("GET", "/echo/1")
        self.assertEqual(first.status, 200, first)
        time.sleep(1.5)
        second = c.request("GET", "/echo/2", timeout=10)
        self.assertEqual(second.status, 200, second)
        self.assertEqual(second.json()["target"], "/echo/2")
        self.assertNotEqual(first.json()["connection_id"], second.json()["connection_id"])

    def test_post_after_backend_closed_idle_connection_sent_once(self):
        b, s = self.start_proxy(backend_args=["--idle-close", "1"])
        c = self.connect(s)
        statuses = []
        for i in range(3):
            r = c.request("POST", "/upload", body=b"payload-%d" % i, timeout=10)
            statuses.append(r.status)
            if "close" in r.connection_tokens():
                c = self.connect(s)
            time.sleep(1.2)
        self.assertEqual(b.count()["heads"].get("POST", 0), 3, "POSTs at the backend != POSTs sent")
        self.assertEqual(statuses, [200, 200, 200])

    def test_get_retried_when_reused_connection_dies(self):
        # --drop-reused: the backend reads any second request on a connection and closes without
        # answering, the way a keep-alive connection that died under a request looks. A GET is
        # idempotent: sluice retries it on a fresh connection.
        b, s = self.start_proxy(backend_args=["--drop-reused"])
        c = self.connect(s)
        for i in range(3):
            r = c.request("GET", "/echo/%d" % i, timeout=10)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["target"], "/echo/%d" % i)

    def test_post_never_sent_twice_when_reused_connection_dies(self):
        b, s = self.start_proxy(backend_args=["--drop-reused"])
        statuses = []
        for i in range(3):
            r = s.request("POST", "/upload", body=b"once-%d" % i, timeout=10)
            statuses.append(r.status)
        count = b.count()
        self.assertEqual(count["heads"].get("POST", 0), 3,
                         "the backend saw %s POSTs for 3 sent (statuses %s)" % (
                             count["heads"].get("POST", 0), statuses))
        for st in statuses:
            self.assertIn(st, (200, 502))


if __name__ == "__main__":
    unittest.main(verbosity=2)
