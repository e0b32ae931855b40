"""Plain HTTP/1.1 proxying: methods, bodies, framing, keep-alive on both sides, pipelining,
Expect: 100-continue, headers toward the backend, routing, the access log; curl as a real peer."""

import hashlib
import json
import os
import re
import time
import unittest

from harness import (SluiceTestCase, build_request, chunked, pattern_bytes, pattern_sha256,
                     run_curl, wait_until)


def hdrs(echo):
    """Echo JSON headers -> {lower name: [values]}."""
    out = {}
    for k, v in echo["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class PlainProxying(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def test_get_reaches_backend_intact(self):
        r = self.sluice.request("GET", "/echo/some/path?x=1&y=two")
        self.assertEqual(r.status, 200, r)
        e = r.json()
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["target"], "/echo/some/path?x=1&y=two")
        self.assertEqual(e["port"], self.backend.port)
        self.assertEqual(e["body_length"], 0)

    def test_post_and_put_bodies(self):
        body = os.urandom(300 * 1024)
        digest = hashlib.sha256(body).hexdigest()
        c = self.connect(self.sluice)
        for method in ("POST", "PUT"):
            r = c.request(method, "/upload", body=body)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), dict(r.json(), bytes=len(body), sha256=digest, method=method))
        # Empty bodies too (Content-Length: 0).
        r = c.request("POST", "/upload", body=b"")
        self.assertEqual((r.status, r.json()["bytes"]), (200, 0))

    def test_head_has_headers_but_no_body_and_connection_stays_usable(self):
        c = self.connect(self.sluice)
        r = c.request("HEAD", "/download?bytes=12345")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Length"), "12345")
        # If sluice wrongly waited for (or sent) a body, the next response would be garbled.
        r = c.request("GET", "/echo/after-head")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/echo/after-head")
        self.assertEqual(r.json()["method"], "GET")

    def test_statuses_pass_through(self):
        c = self.connect(self.sluice)
        for code in (201, 202, 204, 301, 304, 404, 500, 503):
            r = c.request("GET", "/status?code=%d" % code)
            self.assertEqual(r.status, code, r)
            if code in (204, 304):
                self.assertEqual(r.body, b"")
            else:
                self.assertEqual(r.body, b"status %d\n" % code)

    def test_download_content_length(self):
        n = 3 * 1024 * 1024 + 17
        r = self.sluice.request("GET", "/download?bytes=%d" % n, timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), n)
        self.assertTrue(r.body == pattern_bytes(0, n), "body differs from what the backend sent")

    def test_chunked_response_arrives_intact(self):
        n = 1024 * 1024 + 3
        c = self.connect(self.sluice)
        r = c.request("GET", "/download?bytes=%d&chunked=1" % n, timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), n)
        self.assertTrue(r.body == pattern_bytes(0, n))
        if r.framing != "close":
            # A properly framed response keeps the client connection usable.
            r = c.request("GET", "/echo/next")
            self.assertEqual(r.json()["target"], "/echo/next")

    def test_close_delimited_response_arrives_intact(self):
        n = 700 * 1024 + 5
        c = self.connect(self.sluice)
        r = c.request("GET", "/download?bytes=%d&close=1" % n, timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), n, "close-delimited body truncated or padded")
        self.assertTrue(r.body == pattern_bytes(0, n))

    def test_info_1xx_then_final_response(self):
        c = self.connect(self.sluice)
        r = c.request("GET", "/info100")
        # 103 may be relayed or dropped; the final response must come through intact.
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["final"])
        for i in r.interim:
            self.assertEqual(i.status, 103)
        r = c.request("GET", "/echo/after-103")
        self.assertEqual(r.json()["target"], "/echo/after-103")

    def test_backend_connection_close_does_not_break_client(self):
        c = self.connect(self.sluice)
        r = c.request("GET", "/close-after")
        self.assertEqual((r.status, r.body), (200, b"bye\n"))
        # The backend's Connection: close is hop-by-hop; the client may keep its connection.
        if "close" in r.connection_tokens() or c.has_data(0.2) and c.eof:
            c = self.connect(self.sluice)
        r = c.request("GET", "/echo/after-close")
        self.assertEqual((r.status, r.json()["target"]), (200, "/echo/after-close"))

    def test_hop_by_hop_response_headers_removed(self):
        r = self.sluice.request("GET", "/hop-response")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-End-To-End"), "kept")
        self.assertIsNone(r.header("X-Backend-Hop"), "header named by Connection was forwarded")
        self.assertNotIn("timeout=99", r.header_all("Keep-Alive"), "backend Keep-Alive forwarded")
        self.assertNotIn("x-backend-hop", r.connection_tokens())


class KeepAliveAndPipelining(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def test_many_requests_on_one_client_connection(self):
        c = self.connect(self.sluice)
        for i in range(10):
            r = c.request("GET", "/echo/%d" % i)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["target"], "/echo/%d" % i)
            self.assertNotIn("close", r.connection_tokens())
        self.assertFalse(c.eof)

    def test_upstream_connection_is_reused(self):
        # Idle upstream connections are kept per worker: one worker here, whatever
        # SLUICE_TEST_WORKERS says, so that every client lands on the same pool.
        self.backend, self.sluice = self.start_proxy(server={"workers": 1})
        c = self.connect(self.sluice)
        ids = [c.request("GET", "/echo/%d" % i).json()["connection_id"] for i in range(5)]
        self.assertEqual(len(set(ids)), 1, "sluice opened a new upstream connection per request: %s" % ids)
        # Across client connections too (same worker, sequential requests).
        for i in range(3):
            r = self.sluice.request("GET", "/echo/other-client-%d" % i)
            ids.append(r.json()["connection_id"])
        self.assertEqual(len(set(ids)), 1, "upstream connection not reused across clients: %s" % ids)
        self.assertEqual(self.backend.count()["connections"], 1)

    def test_pipelined_requests_answered_in_order(self):
        c = self.connect(self.sluice)
        c.send(build_request("GET", "/echo/1") + build_request("GET", "/echo/2") +
               build_request("GET", "/echo/3"))
        got = [c.read_response().json()["target"] for _ in range(3)]
        self.assertEqual(got, ["/echo/1", "/echo/2", "/echo/3"])

    def test_pipelined_mixed_with_bodies_and_slow_first(self):
        c = self.connect(self.sluice)
        body = b"0123456789" * 1000
        c.send(build_request("GET", "/slow?delay=0.5") +
               build_request("POST", "/upload", body=body) +
               build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")],
                             body=chunked([body[:3000], body[3000:]])) +
               build_request("GET", "/echo/last"))
        r1 = c.read_response(timeout=10)
        self.assertEqual(r1.json()["slept"], 0.5)
        for _ in range(2):
            r = c.read_response(timeout=10)
            self.assertEqual(r.json()["bytes"], len(body))
            self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(c.read_response(timeout=10).json()["target"], "/echo/last")


class RequestBodies(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def test_chunked_request_body_streamed(self):
        body = os.urandom(2 * 1024 * 1024 + 11)
        pieces, i, size = [], 0, 1
        while i < len(body):  # chunk sizes 1, 3, 9, ... up to 256 KiB
            pieces.append(body[i:i + size])
            i += size
            size = min(size * 3, 256 * 1024)
        c = self.connect(self.sluice, timeout=20)
        c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        payload = chunked(pieces)
        # Sent in odd slices so that chunk headers straddle TCP writes.
        for j in range(0, len(payload), 99991):
            c.send(payload[j:j + 99991])
        r = c.read_response(timeout=20)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["bytes"], len(body))
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_chunk_extensions_and_trailers(self):
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" +
               chunked([b"hello ", b"world"], trailers=[("X-Checksum", "abc")], ext=b"name=value"))
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(b"hello world").hexdigest())
        r = c.request("GET", "/echo/after-trailers")
        self.assertEqual(r.json()["target"], "/echo/after-trailers")

    def test_expect_100_continue_raw(self):
        body = os.urandom(50000)
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
               b"Expect: 100-continue\r\n\r\n" % len(body))
        first = c.read_response(timeout=5, keep_interim=True)
        self.assertEqual(first.status, 100, "expected 100 Continue before sending the body: %r" % first)
        c.send(body)
        r = c.read_response(timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())
        # Exactly one 100 Continue: no stray interim response left on the connection.
        r = c.request("GET", "/echo/after-expect")
        self.assertEqual(r.interim, [])
        self.assertEqual(r.json()["target"], "/echo/after-expect")


class WithCurl(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def test_curl_get_and_keepalive(self):
        url1 = self.sluice.url("/echo/a")
        url2 = self.sluice.url("/echo/b")
        p = run_curl(["-v", "--fail", url1, url2], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        out = p.stdout.decode()
        docs = [json.loads(x) for x in out.splitlines() if x.strip()]
        self.assertEqual([d["target"] for d in docs], ["/echo/a", "/echo/b"])
        self.assertIn("Re-using existing connection", p.stderr.decode(),
                      "curl could not reuse the client connection")

    def test_curl_download(self):
        n = 5 * 1024 * 1024
        out = os.path.join(self.tmpdir, "dl.bin")
        p = run_curl(["--fail", "-o", out, self.sluice.url("/download?bytes=%d&chunked=1" % n)])
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), pattern_sha256(n))

    def test_curl_upload_with_expect_100(self):
        data = os.urandom(3 * 1024 * 1024)
        path = os.path.join(self.tmpdir, "up.bin")
        with open(path, "wb") as f:
            f.write(data)
        t0 = time.monotonic()
        # A long --expect100-timeout: if sluice never sends 100 Continue, curl waits and we see it.
        p = run_curl(["--fail", "-H", "Expect: 100-continue", "--expect100-timeout", "8",
                      "--data-binary", "@" + path, "-w", "\n%{http_code}", self.sluice.url("/upload")],
                     timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        body, code = p.stdout.decode().rsplit("\n", 1)
        self.assertEqual(code, "200")
        self.assertEqual(json.loads(body)["sha256"], hashlib.sha256(data).hexdigest())
        self.assertLess(elapsed, 5.0, "curl waited for a 100 Continue that never came")

    def test_curl_put_chunked(self):
        data = os.urandom(1024 * 1024 + 1)
        p = run_curl(["--fail", "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary",
                      "@-", self.sluice.url("/upload")], input=data, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        doc = json.loads(p.stdout)
        self.assertEqual((doc["method"], doc["bytes"], doc["sha256"]),
                         ("PUT", len(data), hashlib.sha256(data).hexdigest()))

    def test_curl_head(self):
        p = run_curl(["-I", "--fail", self.sluice.url("/download?bytes=777")], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertRegex(p.stdout.decode(), r"(?i)content-length: 777\r\n")


class HeadersTowardBackend(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend, self.sluice = self.start_proxy()

    def echo(self, headers, host="app.test:8080"):
        r = self.sluice.request("GET", "/echo/h", headers=headers, host=host)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_hop_by_hop_removed(self):
        e = self.echo([
            ("Connection", "keep-alive, X-Hop-Named"),
            ("X-Hop-Named", "drop me"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("X-End-To-End", "keep me"),
        ])
        h = hdrs(e)
        for name in ("x-hop-named", "keep-alive", "te", "trailer", "proxy-authorization",
                     "proxy-connection", "upgrade"):
            self.assertNotIn(name, h, "hop-by-hop header %s reached the backend" % name)
        for v in h.get("connection", []):
            self.assertNotIn("x-hop-named", v.lower())
            self.assertNotIn("upgrade", v.lower())
        self.assertEqual(h.get("x-end-to-end"), ["keep me"])

    def test_host_preserved(self):
        e = self.echo([], host="app.test:8080")
        self.assertEqual(hdrs(e).get("host"), ["app.test:8080"])

    def test_forwarded_headers_added(self):
        h = hdrs(self.echo([], host="app.test:8080"))
        self.assertEqual(len(h.get("x-forwarded-for", [])), 1, h)
        self.assertEqual(h["x-forwarded-for"][0].strip(), "127.0.0.1")
        self.assertEqual(h.get("x-forwarded-proto"), ["http"])
        self.assertEqual(h.get("x-forwarded-host"), ["app.test:8080"])
        self.assertEqual(len(h.get("x-request-id", [])), 1, h)
        self.assertRegex(h["x-request-id"][0], r"^\S{8,}$")

    def test_x_forwarded_for_from_an_untrusted_client_is_replaced(self):
        # Without trusted_proxies nobody's forwarding headers are believed (test_client_address
        # covers trusted chains).
        h = hdrs(self.echo([("X-Forwarded-For", "203.0.113.7")]))
        xff = ",".join(h.get("x-forwarded-for", []))
        self.assertEqual([p.strip() for p in xff.split(",")], ["127.0.0.1"])

    def test_request_id_kept_when_present_and_unique_when_absent(self):
        h = hdrs(self.echo([("X-Request-Id", "client-chosen-42")]))
        self.assertEqual(h.get("x-request-id"), ["client-chosen-42"])
        a = hdrs(self.echo([]))["x-request-id"][0]
        b = hdrs(self.echo([]))["x-request-id"][0]
        self.assertNotEqual(a, b, "generated request ids repeat")


class Routing(SluiceTestCase):
    def test_host_and_prefix_choose_the_backend(self):
        b = self.start_backend(nports=6)
        names = ["exact", "exact_v2", "wild", "wild_eu", "any", "any_static"]
        pools = [{"name": n, "backends": [{"address": a}]} for n, a in zip(names, b.addresses)]
        port_of = dict(zip(names, b.ports))
        routes = [
            {"host": "api.example.com", "path_prefix": "/", "pool": "exact"},
            {"host": "api.example.com", "path_prefix": "/v2/", "pool": "exact_v2"},
            {"host": "*.example.com", "path_prefix": "/", "pool": "wild"},
            {"host": "*.eu.example.com", "path_prefix": "/", "pool": "wild_eu"},
            {"host": "*", "path_prefix": "/", "pool": "any"},
            {"host": "*", "path_prefix": "/static/", "pool": "any_static"},
        ]
        s = self.start_sluice({"pools": pools, "routes": routes})
        cases = [
            ("api.example.com", "/x", "exact"),
            ("api.example.com", "/v2/x", "exact_v2"),
            ("api.example.com", "/v2", "exact"),  # "/v2/" is not a prefix of "/v2"
            ("API.Example.COM:%d" % s.port, "/v2/x", "exact_v2"),
            ("www.example.com", "/v2/x", "wild"),
            ("a.b.example.com", "/x", "wild"),
            ("x.eu.example.com", "/x", "wild_eu"),
            ("example.com", "/x", "any"),  # *.example.com does not match example.com
            ("other.org", "/x", "any"),
            ("other.org", "/static/img.png", "any_static"),
        ]
        c = self.connect(s)
        for host, path, want in cases:
            with self.subTest(host=host, path=path):
                r = c.request("GET", path, host=host)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["port"], port_of[want],
                                 "%s%s went to the wrong backend" % (host, path))
                self.assertEqual(r.json()["target"], path)

    def test_no_matching_route_is_404(self):
        b = self.start_backend()
        s = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": b.address}]}],
            "routes": [{"host": "api.example.com", "path_prefix": "/", "pool": "app"},
                       {"host": "*.example.com", "path_prefix": "/echo/", "pool": "app"}],
        })
        c = self.connect(s)
        for host, path in (("other.org", "/echo/x"), ("example.com", "/echo/x"),
                           ("www.example.com", "/nope")):
            with self.subTest(host=host, path=path):
                r = c.request("GET", path, host=host)
                self.assertEqual(r.status, 404, r)
                self.assertLess(len(r.body), 1024)
        self.assertEqual(b.count()["heads"], {}, "an unrouted request reached the backend")
        # 404 is an ordinary answer: the connection stays usable.
        r = c.request("GET", "/echo/ok", host="api.example.com")
        self.assertEqual((r.status, r.json()["target"]), (200, "/echo/ok"))


class AccessLog(SluiceTestCase):
    def test_one_json_line_per_request(self):
        b, s = self.start_proxy()
        c = self.connect(s)
        c.request("GET", "/echo/one")
        c.request("POST", "/upload", body=b"abc")
        c.request("GET", "/status?code=503")
        c.close()
        lines = wait_until(lambda: s.access_log_lines() if len(s.access_log_lines()) >= 3 else None,
                           5.0)
        self.assertTrue(lines, "access log has fewer than 3 lines: %r" % s.access_log_lines())
        time.sleep(0.3)
        lines = s.access_log_lines()
        self.assertEqual(len(lines), 3, lines)
        docs = [json.loads(l) for l in lines]
        want = [("GET", "/echo/one", 200), ("POST", "/upload", 200), ("GET", "/status", 503)]
        for d, (method, path, status) in zip(docs, want):
            self.assertEqual(d.get("method"), method, d)
            self.assertTrue(str(d.get("path", "")).startswith(path), d)
            self.assertEqual(int(d.get("status")), status, d)
            dur = [k for k in d if re.search(r"duration|latency|request_time|elapsed", k)]
            self.assertTrue(dur, "no duration field in %r" % d)
            self.assertIsInstance(d[dur[0]], (int, float), d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
