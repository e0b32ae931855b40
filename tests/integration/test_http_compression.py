"""gzip and brotli responses ([routes.http_compression]) through sluice, checked with curl
--compressed and by decoding the raw bytes: chosen by the client's Accept-Encoding and the
route's order, Vary and weak ETags, never for responses the backend compressed already, ranges,
no-transform, small or non-compressible bodies, HEAD; streamed chunked."""

import gzip
import json
import unittest

from harness import SluiceTestCase, run_curl


class HttpCompression(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy(
            route={"http_compression": {"enabled": True, "codings": ["br", "gzip"],
                                        "min_length": 64}})

    def get(self, path, headers=()):
        c = self.connect(self.sluice)
        return c.request("GET", path, headers=list(headers))

    def test_gzip_when_asked(self):
        r = self.get("/echo/" + "a" * 300, [("Accept-Encoding", "gzip")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Encoding"), "gzip", r)
        self.assertIn("Accept-Encoding", r.header("Vary", ""))
        self.assertIsNone(r.header("Content-Length"))  # re-chunked
        body = json.loads(gzip.decompress(r.body))
        self.assertEqual(body["path"], "/echo/" + "a" * 300)

    def test_brotli_first_in_the_routes_order(self):
        r = self.get("/echo/x", [("Accept-Encoding", "gzip, br")])
        self.assertEqual(r.header("Content-Encoding"), "br", r)
        # curl decodes it itself.
        out = run_curl(["-s", "--compressed", "-H", "Accept-Encoding: br",
                        "http://127.0.0.1:%d/echo/curl" % self.sluice.port])
        self.assertEqual(json.loads(out.stdout)["path"], "/echo/curl")

    def test_identity_when_not_asked_but_vary_is_set(self):
        r = self.get("/echo/plain")
        self.assertIsNone(r.header("Content-Encoding"))
        self.assertIn("Accept-Encoding", r.header("Vary", ""))
        self.assertEqual(r.json()["path"], "/echo/plain")

    def test_not_for_binary_types_ranges_or_no_transform(self):
        r = self.get("/download?bytes=5000", [("Accept-Encoding", "gzip")])
        self.assertIsNone(r.header("Content-Encoding"), "application/octet-stream is not compressed")
        self.assertEqual(len(r.body), 5000)
        r = self.get("/echo/range", [("Accept-Encoding", "gzip"), ("Range", "bytes=0-10")])
        self.assertIsNotNone(r)  # the echo backend ignores ranges; compression must not care
        r = self.get("/status?code=200", [("Accept-Encoding", "gzip")])
        self.assertIsNone(r.header("Content-Encoding"), "under min_length")

    def test_head_has_no_body(self):
        c = self.connect(self.sluice)
        r = c.request("HEAD", "/echo/head", headers=[("Accept-Encoding", "gzip")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        r = c.request("GET", "/echo/after", headers=[("Accept-Encoding", "gzip")])
        self.assertEqual(json.loads(gzip.decompress(r.body))["path"], "/echo/after")


class Off(SluiceTestCase):
    def test_off_by_default(self):
        _, s = self.start_proxy()
        r = s.request("GET", "/echo/x", headers=[("Accept-Encoding", "gzip, br")])
        self.assertIsNone(r.header("Content-Encoding"))
        self.assertIsNone(r.header("Vary"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
