"""Limits: max_header_bytes (431), max_body_bytes (413), header_timeout (408, slowloris),
listener idle_timeout."""

import hashlib
import time
import unittest

from harness import SluiceTestCase, build_request, pattern_sha256


class HeaderSize(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(listener={"max_header_bytes": "4KiB"})

    def test_head_within_limit_is_served(self):
        r = self.sluice.request("GET", "/echo/ok", headers=[("X-Pad", "a" * 2000)])
        self.assertEqual(r.status, 200, r)

    def test_oversized_head_is_431_and_closes(self):
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/echo/big", headers=[("X-Pad", "a" * 8192)]))
        r = c.read_response()
        self.assertEqual(r.status, 431, r)
        self.assertLess(len(r.body), 1024)
        self.assertClosed(c)
        self.assertEqual(self.backend.count()["heads"], {})

    def test_many_small_headers_over_limit_is_431(self):
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/echo/many",
                             headers=[("X-H%d" % i, "v" * 40) for i in range(200)]))
        r = c.read_response()
        self.assertEqual(r.status, 431, r)
        self.assertClosed(c)

    def test_oversized_head_without_end_is_431(self):
        # The head never ends; sluice must not wait for it (or buffer it) past the limit.
        c = self.connect(self.sluice)
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 16384)
        r = c.read_response(timeout=5)
        self.assertEqual(r.status, 431, r)
        self.assertClosed(c)


class BodySize(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(route={"max_body_bytes": 1024})

    def test_body_at_limit_is_served(self):
        body = b"x" * 1024
        r = self.sluice.request("POST", "/upload", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["bytes"], 1024)

    def test_declared_length_over_limit_is_413_immediately(self):
        c = self.connect(self.sluice)
        # Only the head is sent: the answer must not wait for the body.
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        r = c.read_response(timeout=3)
        self.assertEqual(r.status, 413, r)
        self.assertLess(len(r.body), 1024)
        self.assertEqual(self.backend.count()["heads"], {}, "an oversized request reached the backend")

    def test_expect_100_with_oversized_length_gets_413_not_100(self):
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response(timeout=3, keep_interim=True)
        self.assertEqual(r.status, 413, r)

    def test_chunked_body_over_limit_is_rejected(self):
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        status = None
        try:
            for _ in range(6):
                c.send(b"1f4\r\n" + b"y" * 500 + b"\r\n")
                time.sleep(0.05)
            c.send(b"0\r\n\r\n")
        except OSError:
            pass  # sluice may already have answered and closed
        try:
            status = c.read_response(timeout=5).status
        except Exception:
            status = None  # connection closed without a response: acceptable
        self.assertIn(status, (413, None), "chunked body over max_body_bytes was not rejected")
        count = self.backend.count()
        self.assertEqual(count["complete"].get("POST", 0), 0,
                         "the backend received a complete over-limit body: %r" % count)
        if status == 413:
            self.assertClosed(c)


class HeaderTimeout(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(listener={"header_timeout": "1s"})

    def test_partial_head_gets_408_and_close(self):
        c = self.connect(self.sluice)
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 408, r)
        self.assertGreaterEqual(elapsed, 0.8, "408 came before header_timeout")
        self.assertLess(elapsed, 3.5)
        self.assertClosed(c)
        self.assertEqual(self.backend.count()["heads"], {})

    def test_slowloris_trickle_does_not_extend_the_deadline(self):
        # One byte every 200 ms keeps the connection busy; the head still never completes.
        c = self.connect(self.sluice)
        t0 = time.monotonic()
        head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        got = None
        for i in range(len(head)):
            if time.monotonic() - t0 > 4.0:
                break
            try:
                c.send(head[i:i + 1])
            except OSError:
                break
            if c.has_data(0.2):
                break
        elapsed = time.monotonic() - t0
        try:
            got = c.read_response(timeout=1)
        except Exception as e:  # closed without response
            got = e
        self.assertLess(elapsed, 3.0, "trickled head kept the connection open for %.1fs" % elapsed)
        self.assertEqual(getattr(got, "status", None), 408, got)

    def test_complete_request_is_not_affected(self):
        c = self.connect(self.sluice)
        c.send(b"GET /echo/slow-but-ok HTTP/1.1\r\n")
        time.sleep(0.5)
        c.send(b"Host: x\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        # The timeout covers the head only: a slow upstream is not a header timeout.
        r = c.request("GET", "/slow?delay=1.5", timeout=5)
        self.assertEqual(r.status, 200, r)


class IdleTimeout(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(
            listener={"idle_timeout": "1s", "header_timeout": "5s"})

    def test_idle_keepalive_connection_closed(self):
        c = self.connect(self.sluice)
        self.assertEqual(c.request("GET", "/echo/1").status, 200)
        time.sleep(0.5)
        # Activity restarts the idle clock.
        self.assertEqual(c.request("GET", "/echo/2").status, 200)
        t0 = time.monotonic()
        closed, extra = c.wait_closed(4.0)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "idle connection still open after 4s (idle_timeout=1s)")
        self.assertGreaterEqual(elapsed, 0.8, "closed before idle_timeout")
        self.assertNotIn(b"HTTP/1.1 200", extra)

    def test_slow_response_is_not_idle(self):
        # A request in flight is not an idle connection.
        c = self.connect(self.sluice)
        r = c.request("GET", "/slow?delay=2", timeout=5)
        self.assertEqual(r.status, 200, r)

    def test_steady_slow_body_is_not_idle(self):
        # idle_timeout bounds each gap inside a request body, not the whole body: six pieces
        # 0.4 s apart take 2 s, twice idle_timeout, and the upload is served whole.
        pieces = [bytes([65 + i]) * 1000 for i in range(6)]
        body = b"".join(pieces)
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for p in pieces:
            time.sleep(0.4)
            c.send(p)
        r = c.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_stalled_body_gets_408(self):
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        c.send(b"x" * 500)
        time.sleep(0.5)
        t0 = time.monotonic()
        c.send(b"x" * 500)  # then nothing
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 408, r)
        self.assertGreaterEqual(elapsed, 0.8, "408 before idle_timeout after the last piece")
        self.assertClosed(c)


def upload_head(n, delay):
    return b"POST /upload?delay=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        str(delay).encode(), n)


class BackpressureClientSide(SluiceTestCase):
    """A pause that sluice imposes on the client, because the backend does not keep up, is not the
    client's delay; a client that leaves a response unread is cut after idle_timeout."""

    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(
            listener={"idle_timeout": "1s", "header_timeout": "5s"})

    def test_backend_slow_to_read_the_body_is_not_a_client_timeout(self):
        # 24 MiB fill sluice's queue and the sockets' buffers: sluice stops reading the client
        # while the backend sleeps 2.5 s before reading; idle_timeout (1 s) must not fire.
        body = bytes(range(256)) * (24 * 4096)
        c = self.connect(self.sluice, timeout=30)
        c.send(upload_head(len(body), 2.5))
        c.send_stream([body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)])
        r = c.read_response(timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_client_not_reading_the_response_is_cut(self):
        n = 64 << 20
        c = self.connect(self.sluice, timeout=30)
        c.send(build_request("GET", "/download?bytes=%d" % n))
        time.sleep(3)  # reads nothing: sluice's queue and the sockets' buffers fill up
        try:
            rest = c.read_until_close(timeout=10, limit=2 * n)
        except TimeoutError:
            self.fail("a client that read nothing for 3 s was not cut (idle_timeout 1s)")
        self.assertLess(len(rest), n)


class BackpressureBackendSide(SluiceTestCase):
    """A pause that sluice imposes on the backend, because the client does not keep up, is not the
    backend's delay; a backend that does not read the request body is given response_timeout."""

    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(
            listener={"idle_timeout": "5s", "header_timeout": "5s"}, pool={"response_timeout": "1s"})

    def test_client_pausing_longer_than_response_timeout_gets_everything(self):
        n = 32 << 20
        c = self.connect(self.sluice, timeout=30)
        c.send(build_request("GET", "/download?bytes=%d" % n))
        head = c.read_head(timeout=5)
        self.assertEqual(head.status, 200, head)
        self.assertEqual(head.header("Content-Length"), str(n))
        time.sleep(2)  # longer than response_timeout, shorter than idle_timeout
        h = hashlib.sha256()
        left = n
        while left > 0:
            piece = c.recv_some(timeout=10)
            self.assertTrue(piece, "connection ended with %d bytes missing" % left)
            h.update(piece[:left])
            left -= len(piece)
        self.assertEqual(h.hexdigest(), pattern_sha256(n))

    def test_backend_not_reading_the_body_gets_504(self):
        body = b"b" * (24 << 20)
        c = self.connect(self.sluice, timeout=30)
        c.send(upload_head(len(body), 4))
        t0 = time.monotonic()
        try:
            c.send_stream([body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)], timeout=10)
        except OSError:
            pass  # sluice answered and closed while the body was still coming
        r = c.read_response(timeout=10)
        self.assertEqual(r.status, 504, r)
        self.assertLess(time.monotonic() - t0, 3.5, "504 only after the backend woke up")


if __name__ == "__main__":
    unittest.main(verbosity=2)
