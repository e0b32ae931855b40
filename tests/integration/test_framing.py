"""sluice decides the framing of every message it forwards and writes it itself: a Connection
line (any of them) cannot remove Content-Length, Transfer-Encoding, Host or a handshake's headers
on the way to the backend, nor a response's framing on the way back, and an upstream connection
whose state is in doubt never serves another request. The backend here records the raw bytes it
receives and reads them as a strict server does."""

import time
import unittest

from harness import SluiceTestCase
from wsutil import accept_key

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def ok(body):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class RequestFraming(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.backend = self.start_recording_backend()
        self.sluice = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": self.backend.address}]}],
            "routes": [{"pool": "app", "websocket": {"enabled": True}}],
        })

    def assert_one_request_with_body(self, before, body, framing_line):
        """Exactly one request more than `before` reached the backend, with `body`."""
        self.backend.wait_requests(before + 1)
        time.sleep(0.3)  # a smuggled second request would arrive by now
        reqs = self.backend.requests[before:]
        self.assertEqual(len(reqs), 1, "the backend read other than one request: %r" % reqs)
        self.assertEqual(reqs[0].body, body, reqs[0])
        self.assertIn(framing_line, reqs[0].raw, reqs[0])
        self.assertEqual([c.error for c in self.backend.connections if c.error], [])

    def send(self, head_lines, body):
        c = self.connect(self.sluice)
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.example\r\n" + head_lines + b"\r\n" + body)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        return c

    def test_connection_cannot_remove_content_length(self):
        for lines in (b"Connection: content-length\r\n",
                      b"Connection: keep-alive\r\nConnection: Content-Length\r\n",
                      b"Connection: close, content-length, transfer-encoding\r\n",
                      b"Connection: keep-alive\r\nX-A: 1\r\nconnection: content-length\r\n"):
            with self.subTest(lines=lines):
                before = len(self.backend.requests)
                self.send(lines + b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)
                self.assert_one_request_with_body(before, SMUGGLED, b"\r\nContent-Length: %d\r\n"
                                                  % len(SMUGGLED))

    def test_connection_cannot_remove_transfer_encoding(self):
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
        self.send(b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", body)
        self.assert_one_request_with_body(0, SMUGGLED, b"\r\nTransfer-Encoding: chunked\r\n")

    def test_connection_cannot_remove_host(self):
        c = self.connect(self.sluice)
        c.send(b"GET /h HTTP/1.1\r\nHost: app.example\r\nConnection: host\r\n"
               b"Connection: keep-alive, x-request-id\r\nX-Request-Id: rid-1\r\n\r\n")
        self.assertEqual(c.read_response().status, 200)
        req = self.backend.wait_requests(1)[0]
        self.assertEqual(req.header_all("Host"), ["app.example"], req)
        self.assertEqual(req.header_all("X-Request-Id"), ["rid-1"], req)

    def test_nominated_end_to_end_header_is_still_removed(self):
        # The mechanism still does its job for what it may remove.
        c = self.connect(self.sluice)
        c.send(b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
               b"Connection: x-private\r\nX-Private: secret\r\nX-Kept: 1\r\n\r\n")
        self.assertEqual(c.read_response().status, 200)
        req = self.backend.wait_requests(1)[0]
        self.assertEqual(req.header_all("X-Private"), [], req)
        self.assertEqual(req.header_all("X-Kept"), ["1"], req)

    def test_upgrade_keeps_handshake_headers(self):
        def respond(req, conn):
            key = req.header("Sec-WebSocket-Key")
            if key is None:
                return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
            return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade, Sec-WebSocket-Accept\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                    % accept_key(key).encode())
        self.backend.respond = respond
        c = self.connect(self.sluice)
        c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade, Sec-WebSocket-Key\r\nConnection: sec-websocket-version\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = c.read_response(head=True)
        self.assertEqual(r.status, 101, r)
        self.assertEqual(r.header("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r)
        req = self.backend.requests[0]
        self.assertEqual(req.header_all("Sec-WebSocket-Version"), ["13"], req)


class ResponseFraming(SluiceTestCase):
    def start(self, respond):
        self.backend = self.start_recording_backend(respond)
        self.sluice = self.start_sluice({
            "pools": [{"name": "app", "backends": [{"address": self.backend.address}]}],
            "routes": [{"pool": "app"}],
        })
        return self.connect(self.sluice)

    def test_connection_cannot_remove_content_length(self):
        def respond(req, conn):
            body = req.target.encode()
            return (b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: %d\r\n"
                    b"\r\n%s" % (len(body), body))
        c = self.start(respond)
        for path in ("/first", "/second", "/third"):
            r = c.request("GET", path)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Content-Length"), str(len(path)), r)
            self.assertEqual(r.body, path.encode(), r)
        self.assertEqual(len(self.backend.connections), 1)

    def test_connection_cannot_remove_transfer_encoding(self):
        def respond(req, conn):
            body = req.target.encode()
            return (b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding, keep-alive\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        c = self.start(respond)
        for path in ("/first", "/second"):
            r = c.request("GET", path)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Transfer-Encoding"), "chunked", r)
            self.assertEqual(r.body, path.encode(), r)

    def test_transfer_codings_other_than_chunked_are_refused(self):
        # As nginx does: 502, never a coded body passed on without its coding, nor a
        # keep-alive response turned close-delimited.
        for te in (b"gzip, chunked", b"identity", b"chunked\r\nTransfer-Encoding: chunked"):
            with self.subTest(te=te):
                c = self.start(lambda req, conn, te=te: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                               + te + b"\r\n\r\n0\r\n\r\n")
                r = c.request("GET", "/te")
                self.assertEqual(r.status, 502, r)
                self.assertIn(b"invalid response from backend", r.body)

    def test_extra_response_never_reaches_the_next_request(self):
        # A backend that answers once more than it was asked: the connection is in doubt and is
        # not reused; the next request gets its own answer on a new connection.
        def respond(req, conn):
            if req.target == "/twice":
                return ok(b"/twice") + ok(b"poison")
            return ok(req.target.encode())
        c = self.start(respond)
        self.assertEqual(c.request("GET", "/twice").body, b"/twice")
        other = self.connect(self.sluice)
        r = other.request("GET", "/victim")
        self.assertEqual(r.body, b"/victim", r)
        self.assertEqual(len(self.backend.connections), 2)


    def test_no_body_after_204_or_304_whatever_they_declare(self):
        # A 204 or 304 has no body even with a Content-Length: what follows its head is not
        # delivered to the client, and the connection it came on is not reused.
        def respond(req, conn):
            if req.target in ("/204", "/304"):
                status = b"204 No Content" if req.target == "/204" else b"304 Not Modified"
                return b"HTTP/1.1 " + status + b"\r\nContent-Length: 38\r\n\r\n" + ok(b"poison")
            return ok(req.target.encode())
        c = self.start(respond)
        for path, status in (("/204", 204), ("/304", 304)):
            r = c.request("GET", path)
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.body, b"", r)
            if status == 204:  # never a Content-Length (RFC 9110 8.6); a 304's is metadata
                self.assertIsNone(r.header("Content-Length"), r)
            r = c.request("GET", "/after" + path)  # the same client connection goes on
            self.assertEqual(r.body, ("/after" + path).encode(), r)
        # /204 and /304 each leave their connection in doubt: 3 connections for 4 requests.
        self.assertEqual(len(self.backend.connections), 3)


class ResponsePoisoning(SluiceTestCase):
    """The attack end to end, against the regular test backend: a request whose body is a second
    request, sent with its Content-Length nominated in Connection. Were the length dropped, the
    backend would read the smuggled slow request after the first one, sluice would return the
    connection to its pool with that answer still owed, and the next client would get it."""

    def test_victim_gets_its_own_response(self):
        backend, sluice = self.start_proxy()
        smuggled = b"GET /slow?delay=1.5 HTTP/1.1\r\nHost: x\r\n\r\n"
        attacker = self.connect(sluice)
        attacker.send(b"POST /echo/attacker HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        r = attacker.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_length"], len(smuggled), r)
        victim = self.connect(sluice)
        r = victim.request("GET", "/echo/victim", timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json().get("path"), "/echo/victim", r)
        time.sleep(0.2)
        paths = backend.count()["paths"]
        self.assertNotIn("/slow?delay=1.5", paths)
        self.assertEqual(paths, ["/echo/attacker", "/echo/victim"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
