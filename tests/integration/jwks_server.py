#!/usr/bin/python3
"""A JWKS endpoint over TLS for sluice's integration tests (test_auth.py): an HTTPS server on
127.0.0.1 (threads, Python's ssl) that answers GET /jwks.json with the current document, which
the test replaces at will (key rotation), counts the fetches, and can stop and start again on
the same port (the issuer going down and coming back).

    server = JwksServer(cert, key)        # listening at once; server.url is the JWKS URL
    server.set({"keys": [...]})           # what the next fetches get
    server.stop(); server.start()         # down, then up again on the same port
    server.fetches                        # how many GETs it answered

Standalone: jwks_server.py --cert C --key K --jwks FILE prints "ready PORT" and serves FILE
(re-read on every request) until killed.
"""

import argparse
import http.server
import json
import socket
import ssl
import sys
import threading
import time

LOCALHOST = "127.0.0.1"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        owner = self.server.owner
        body = owner.document()
        if self.path.split("?")[0] != "/jwks.json" or body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with owner.lock:
            owner.fetches += 1
        if owner.delay:
            time.sleep(owner.delay)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class JwksServer:
    def __init__(self, cert, key, port=0, document=None, path=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.lock = threading.Lock()
        self.fetches = 0
        self.delay = 0.0
        self._doc = json.dumps(document or {"keys": []}).encode()
        self._path = path
        self.port = port
        self.httpd = None
        self.start()

    @property
    def url(self):
        return "https://%s:%d/jwks.json" % (LOCALHOST, self.port)

    def set(self, document):
        with self.lock:
            self._doc = json.dumps(document).encode()

    def document(self):
        if self._path:
            try:
                with open(self._path, "rb") as f:
                    return f.read()
            except OSError:
                return None
        with self.lock:
            return self._doc

    def start(self):
        self.httpd = _Server((LOCALHOST, self.port), _Handler, bind_and_activate=False)
        self.httpd.socket = self.context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.httpd.server_bind()
        self.httpd.server_activate()
        self.port = self.httpd.server_address[1]
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.httpd = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--jwks", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = JwksServer(args.cert, args.key, port=args.port, path=args.jwks)
    sys.stdout.write("ready %d\n" % server.port)
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
