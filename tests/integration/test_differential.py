"""Parser differential: the same request bytes go to sluice, and what sluice forwards is read by
a strict backend parser (RecordingBackend: Content-Length or chunked framing only, no lenience).
For every input, the backend must parse exactly the requests sluice says it forwarded (its access
log), with no parse error: a request whose framing the two see differently is how smuggling
starts. Inputs: the fuzz corpora for request parsing, the classic smuggling shapes, and
pipelined and chunked variants built here."""

import json
import os
import socket
import time
import unittest

from harness import LOCALHOST, SOURCE_DIR, SluiceTestCase, wait_until

CORPORA = [os.path.join(SOURCE_DIR, "tests", "fuzz", "corpus", d)
           for d in ("http_request", "http_split")]

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def handmade():
    post = b"POST /p HTTP/1.1\r\nHost: x\r\n"
    yield b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    yield post + b"Content-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    yield post + b"Transfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    yield post + b"Content-Length: 0\r\n\r\n"
    yield post + b"Connection: content-length\r\nContent-Length: %d\r\n\r\n%s" % (
        len(SMUGGLED), SMUGGLED)
    yield post + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    # A tab is whitespace before a field value (RFC 9110 5.6.3): this one is chunked, and what
    # follows its last chunk is a second request in its own right, which sluice may forward.
    yield post + b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    yield post + b"X: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: chunked\r\n\r\n5\r\rhello\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    yield post + b"Content-Length: +5\r\n\r\nhello" + SMUGGLED
    yield post + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost: x\r\n\rX: y\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\nHost: x\n\n" + SMUGGLED
    yield b"GET / HTTP/1.0\r\n\r\n"
    yield b"GET http://x/abs HTTP/1.1\r\nHost: y\r\n\r\n" + SMUGGLED
    yield b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"
    yield b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"


def inputs():
    for d in CORPORA:
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            yield "%s/%s" % (os.path.basename(d), name), data
            if os.path.basename(d) == "http_split" and len(data) > 2:
                yield "%s/%s+2" % (os.path.basename(d), name), data[2:]
    for i, data in enumerate(handmade()):
        yield "handmade/%d" % i, data


class Differential(SluiceTestCase):
    def test_sluice_and_a_strict_backend_agree_on_framing(self):
        backend = self.start_recording_backend()
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": backend.address}]}],
                               "routes": [{"pool": "app"}]})
        checked = 0
        for name, data in inputs():
            before_reqs = len(backend.requests)
            before_log = len(s.access_log_lines())
            c = socket.create_connection((LOCALHOST, s.port), timeout=5)
            try:
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    try:
                        if not c.recv(65536):
                            break
                    except (socket.timeout, ConnectionError):
                        break
            finally:
                c.close()
            # sluice's access log is flushed every 200 ms.
            wait_until(lambda: True, 0.3)
            time.sleep(0.3)
            lines = [json.loads(l) for l in s.access_log_lines()[before_log:]]
            # Forwarded and answered by the backend (not cut short, not answered by sluice).
            forwarded = [l for l in lines if l.get("upstream") and not l.get("error")]
            got = backend.requests[before_reqs:]
            errors = [c.error for c in backend.connections if c.error]
            self.assertEqual(errors, [], "%s: the backend could not parse what sluice sent" % name)
            self.assertEqual(len(got), len(forwarded),
                             "%s: sluice forwarded %d request(s), the backend read %d: %r"
                             % (name, len(forwarded), len(got), got))
            self.assertNotIn("/smuggled", [r.target for r in got], name)
            checked += 1
        self.assertGreater(checked, 50)


if __name__ == "__main__":
    unittest.main(verbosity=2)
