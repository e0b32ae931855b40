"""Memory stays bounded while 1 GiB bodies stream through sluice in both directions, with and
without a stalled peer (backpressure). sluice's peak RSS (VmHWM) may exceed its RSS before the
transfer by at most SLUICE_RSS_LIMIT_MB (default 64 MiB): a body held in memory would cost 1 GiB.
The growth is what is measured, not the peak itself, because the idle process's RSS is mostly the
binary's own pages (an ASan debug build with the WAF engine and every filter maps ~60 MiB of text
and relocated data at start; the release build ~9 MiB).

AddressSanitizer builds: ASan's allocator keeps freed memory in a quarantine (256 MiB by default,
to catch use-after-free), so RSS there measures the quarantine more than sluice: a 1 GiB chunked
transfer peaks near 100 MiB with the default and 64-68 MiB even with a 16 MiB quarantine, while
the same binary with no quarantine grows by 3-5 MiB. So when the binary is ASan-instrumented and ASAN_OPTIONS does not
set a quarantine, these tests (only these) run sluice with quarantine_size_mb=
SLUICE_ASAN_QUARANTINE_MB (default 0) and keep the same limit. The numbers are printed either way."""

import hashlib
import os
import sys
import time
import unittest

from harness import SluiceTestCase, binary_has_asan, pattern_sha256, rss_env, sluice_bin

GIB = 1 << 30
SIZE = int(os.environ.get("SLUICE_MEMORY_TEST_BYTES", GIB))
LIMIT_MB = float(os.environ.get("SLUICE_RSS_LIMIT_MB", "64"))
TIMEOUT = 180.0


def generator(total, piece=256 * 1024, hasher=None, deadline=None):
    """Yields total bytes in pieces (a varying pattern, hashed as it goes); raises
    TimeoutError once the monotonic deadline (default: TIMEOUT from now) has passed."""
    base = os.urandom(piece)
    deadline = deadline or time.monotonic() + TIMEOUT
    sent = 0
    i = 0
    while sent < total:
        if time.monotonic() > deadline:
            raise TimeoutError("upload did not finish within %.0fs (%d bytes sent)" % (TIMEOUT, sent))
        n = min(piece, total - sent)
        # Rotate so consecutive pieces differ (a stuck buffer would change the hash).
        k = (i * 7919) % piece
        data = (base[k:] + base[:k])[:n]
        if hasher:
            hasher.update(data)
        yield data
        sent += n
        i += 1


class Memory(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = None, None

    def start(self):
        b = self.start_backend()
        s = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": b.address}],
                       "response_timeout": "120s"}],
            "routes": [{"pool": "app", "max_body_bytes": "4GiB"}],
        }, env=rss_env())
        self.backend, self.sluice = b, s
        self.before = s.rss()
        return b, s

    def report(self, what, seconds):
        after = self.sluice.rss()
        asan = ""
        if binary_has_asan(sluice_bin()):
            asan = " (ASan build, ASAN_OPTIONS=%s)" % (
                (self.sluice.env or {}).get("ASAN_OPTIONS") or os.environ.get("ASAN_OPTIONS", ""))
        sys.stderr.write("\n[memory] %s: %.1fs; sluice RSS before %.1f MiB, after %.1f MiB, "
                         "peak (VmHWM) %.1f MiB; limit %.0f MiB%s\n" % (
                             what, seconds, self.before["VmRSS"] / 1024, after["VmRSS"] / 1024,
                             after["VmHWM"] / 1024, LIMIT_MB, asan))
        growth = (after["VmHWM"] - self.before["VmRSS"]) / 1024
        self.assertLess(growth, LIMIT_MB,
                        "sluice RSS grew by %.1f MiB (over the %.0f MiB limit) during %s" % (
                            growth, LIMIT_MB, what))

    def upload(self, chunked, delay=0):
        b, s = self.start()
        c = self.connect(s, timeout=60)
        h = hashlib.sha256()
        t0 = time.monotonic()
        target = "/upload" + ("?delay=%s" % delay if delay else "")
        if chunked:
            c.send(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % target.encode())
            c.send_stream((b"%x\r\n" % len(p)) + p + b"\r\n" for p in generator(SIZE, hasher=h))
            c.send(b"0\r\n\r\n")
        else:
            c.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (target.encode(), SIZE))
            c.send_stream(generator(SIZE, hasher=h), timeout=60)
        self.assertLess(time.monotonic() - t0, TIMEOUT)
        r = c.read_response(timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["bytes"], SIZE)
        self.assertEqual(r.json()["sha256"], h.hexdigest())
        return elapsed

    def download(self, query, pause=0):
        b, s = self.start()
        c = self.connect(s, timeout=60)
        t0 = time.monotonic()
        c.send(b"GET /download?bytes=%d%s HTTP/1.1\r\nHost: x\r\n\r\n" % (SIZE, query.encode()))
        if pause:
            # Stall the reader: with backpressure sluice stops reading from the backend instead
            # of buffering what it cannot deliver.
            time.sleep(pause)
        h = hashlib.sha256()
        r = c.read_response(timeout=TIMEOUT, sink=h.update)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_length, SIZE)
        self.assertEqual(h.hexdigest(), pattern_sha256(SIZE))
        return elapsed

    def test_upload_content_length(self):
        self.report("1 GiB upload (Content-Length)", self.upload(chunked=False))

    def test_upload_chunked(self):
        self.report("1 GiB upload (chunked)", self.upload(chunked=True))

    def test_upload_to_stalled_backend(self):
        # The backend sleeps 3 s before reading the body.
        self.report("1 GiB upload, backend stalls 3 s", self.upload(chunked=False, delay=3))

    def test_download_content_length(self):
        self.report("1 GiB download (Content-Length)", self.download(""))

    def test_download_chunked(self):
        self.report("1 GiB download (chunked)", self.download("&chunked=1"))

    def test_download_to_stalled_client(self):
        self.report("1 GiB download, client stalls 3 s", self.download("", pause=3))


if __name__ == "__main__":
    unittest.main(verbosity=2)
