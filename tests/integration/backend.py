#!/usr/bin/env python3
"""A real HTTP/1.1 origin server for sluice's integration tests.

Raw sockets, one thread per connection, keep-alive, chunked bodies in both directions, constant
memory for any body size. Run it standalone:

    backend.py --port N [--port M ...] [--idle-close S] [--drop-reused]

`--port 0` picks a free port. When every port listens it prints one line, "ready P1 P2 ...", on
stdout (the actual ports, in the order given) and flushes.

Endpoints (any method unless said otherwise; the request body is always read in full, streamed,
before the answer; HEAD gets the same headers as GET and no body):

  /echo... (and any path not listed here)
                        200 JSON: method, target, path, query, version, headers (list of pairs),
                        raw_head, body_length, body_sha256, connection_id, request_on_connection,
                        port (the listening port that accepted the connection), peer.
  /upload               200 JSON {bytes, sha256, method, connection_id, port}; ?delay=S sleeps S
                        seconds *before* reading the body (to exercise backpressure).
  /download?bytes=N     N bytes of a fixed pattern (see pattern_block) with Content-Length;
                        &chunked=1 chunked; &close=1 no framing, Connection: close, ends at close;
                        &delay=S sleep before the head; &gap=S sleep before each 64 KiB block
                        after the first (a slow but steady stream).
  /slow?delay=S         sleeps S seconds, then 200 JSON {"slept": S}.
  /status?code=N        that status (no body for 1xx/204/304).
  /info100              "103 Early Hints" first, then 200.
  /close-after          200 with Connection: close, then closes.
  /hop-response         200 carrying hop-by-hop response headers (Connection: X-Backend-Hop,
                        X-Backend-Hop, Keep-Alive) and X-End-To-End.
  /bad-response         an invalid status line, then close.
  /truncated            Content-Length: 1000 but only 500 bytes, then close.
  /close-now            closes without answering.
  /count                JSON of what this process saw (not itself counted): accepted
                        (connections), connections (those that carried a request other than
                        /count), heads / complete (per method), dropped, malformed, paths
                        (recent targets).

Options:
  --idle-close S   close a keep-alive connection that stays idle S seconds between requests.
  --drop-reused    on a keep-alive connection, read any request after the first in full and close
                   the connection without answering (a reused-but-dead upstream connection).
"""

import argparse
import collections
import hashlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http1  # noqa: E402
from servers import ThreadedServer  # noqa: E402

BLOCK_SIZE = 64 * 1024


def pattern_block():
    """The 64 KiB block /download repeats (and truncates at the end)."""
    return bytes(range(256)) * (BLOCK_SIZE // 256)


PATTERN = pattern_block()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0  # accepted
        self.used = set()  # connection ids that carried a counted request
        self.heads = collections.Counter()
        self.complete = collections.Counter()
        self.dropped = 0
        self.malformed = 0
        self.paths = collections.deque(maxlen=500)

    def new_connection(self):
        with self.lock:
            self.connections += 1
            return self.connections

    def snapshot(self):
        with self.lock:
            return {
                "accepted": self.connections,
                "connections": len(self.used),
                "heads": dict(self.heads),
                "complete": dict(self.complete),
                "dropped": self.dropped,
                "malformed": self.malformed,
                "paths": list(self.paths),
            }


STATS = Stats()


def head_bytes(status, reason, headers):
    out = ["HTTP/1.1 %d %s\r\n" % (status, reason)]
    for k, v in headers:
        out.append("%s: %s\r\n" % (k, v))
    out.append("\r\n")
    return "".join(out).encode("latin-1")


REASONS = {100: "Continue", 103: "Early Hints", 200: "OK", 201: "Created", 202: "Accepted",
           204: "No Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
           400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Content Too Large",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


def send_simple(sock, req, status, body, ctype="application/json", close=False, extra=()):
    headers = [("Content-Type", ctype)] + list(extra)
    no_body = status < 200 or status in (204, 304)
    if not no_body:
        headers.append(("Content-Length", str(len(body))))
    if close:
        headers.append(("Connection", "close"))
    data = head_bytes(status, REASONS.get(status, "Status"), headers)
    if req.method != "HEAD" and not no_body:
        data += body
    sock.sendall(data)


def send_json(sock, req, obj, status=200, close=False, extra=()):
    send_simple(sock, req, status, (json.dumps(obj) + "\n").encode(), close=close, extra=extra)


def send_download(sock, req, n, chunked, close_delimited, gap=0.0):
    """`gap`: seconds of silence before each block after the first (a slow, steady stream)."""
    headers = [("Content-Type", "application/octet-stream")]
    if close_delimited:
        headers.append(("Connection", "close"))
    elif chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(n)))
    sock.sendall(head_bytes(200, "OK", headers))
    if req.method == "HEAD":
        return
    view = memoryview(PATTERN)
    left = n
    while left > 0:
        piece = view[: min(left, BLOCK_SIZE)]
        if gap and left < n:
            time.sleep(gap)
        if chunked and not close_delimited:
            sock.sendall(b"%x\r\n" % len(piece))
            sock.sendall(piece)
            sock.sendall(b"\r\n")
        else:
            sock.sendall(piece)
        left -= len(piece)
    if chunked and not close_delimited:
        sock.sendall(b"0\r\n\r\n")


def handle(sock, req, conn_id, index, port, peer):
    """Answers one request whose body was already read. Returns False to close the connection."""
    keep = req.keep_alive()
    path = req.path
    method = req.method
    if path.startswith("/echo") or path not in ENDPOINTS:
        send_json(sock, req, {
            "method": method, "target": req.target, "path": path,
            "query": {k: v[0] for k, v in req.query.items()},
            "version": req.version, "headers": req.headers,
            "raw_head": req.raw_head.decode("latin-1"),
            "body_length": req.body_length, "body_sha256": req.body_sha256,
            "connection_id": conn_id, "request_on_connection": index,
            "port": port, "peer": list(peer),
        }, close=not keep)
        return keep
    if path == "/upload":
        send_json(sock, req, {"bytes": req.body_length, "sha256": req.body_sha256,
                              "method": method, "connection_id": conn_id, "port": port},
                  close=not keep)
        return keep
    if path == "/download":
        n = int(req.q("bytes", "0"))
        delay = float(req.q("delay", "0"))
        if delay:
            time.sleep(delay)
        close_delimited = req.q("close") == "1"
        send_download(sock, req, n, req.q("chunked") == "1", close_delimited,
                      float(req.q("gap", "0")))
        return keep and not close_delimited
    if path == "/slow":
        delay = float(req.q("delay", "1"))
        time.sleep(delay)
        send_json(sock, req, {"slept": delay, "connection_id": conn_id, "port": port},
                  close=not keep)
        return keep
    if path == "/status":
        code = int(req.q("code", "200"))
        send_simple(sock, req, code, b"status %d\n" % code, ctype="text/plain", close=not keep)
        return keep
    if path == "/info100":
        sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        time.sleep(0.05)
        send_json(sock, req, {"final": True, "port": port}, close=not keep)
        return keep
    if path == "/close-after":
        send_simple(sock, req, 200, b"bye\n", ctype="text/plain", close=True)
        return False
    if path == "/hop-response":
        send_simple(sock, req, 200, b"hop\n", ctype="text/plain", close=not keep, extra=[
            ("Connection", "X-Backend-Hop"), ("X-Backend-Hop", "secret"),
            ("Keep-Alive", "timeout=99"), ("X-End-To-End", "kept")])
        return keep
    if path == "/bad-response":
        sock.sendall(b"HTTP/1.1 2x0 Weird\r\nContent-Length: 2\r\n\r\nok")
        return False
    if path == "/truncated":
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"t" * 500)
        return False
    if path == "/close-now":
        return False
    raise AssertionError("unreachable: %s" % path)


ENDPOINTS = {"/upload", "/download", "/slow", "/status", "/info100", "/close-after",
             "/hop-response", "/bad-response", "/truncated", "/close-now", "/count"}


def serve_connection(sock, port, peer, opts):
    conn_id = STATS.new_connection()
    stream = http1.Stream(sock)
    index = 0
    while True:
        if opts.idle_close and not stream.buf:
            try:
                if stream.fill(time.monotonic() + opts.idle_close) == 0:
                    return
            except TimeoutError:
                return
        try:
            head = stream.read_head_bytes(None)
        except http1.Incomplete:
            return
        if head is None:
            return
        index += 1
        try:
            req = http1.parse_request_head(head)
        except http1.ProtocolError as e:
            return bad_request(sock, "GET", e)
        counted = req.path != "/count"
        if counted:
            with STATS.lock:
                STATS.used.add(conn_id)
                STATS.heads[req.method] += 1
                STATS.paths.append(req.target)
        if req.path == "/upload":
            delay = float(req.q("delay", "0"))
            if delay:
                time.sleep(delay)
        hasher = hashlib.sha256()
        try:
            framing, length = http1.request_framing(req)
            if (framing == "chunked" or length) and \
                    (req.header("expect") or "").lower() == "100-continue":
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.body_length, _ = http1.read_body(stream, framing, length, None, hasher.update)
        except http1.ProtocolError as e:
            return bad_request(sock, req.method, e)
        req.body_sha256 = hasher.hexdigest()
        if counted:
            with STATS.lock:
                STATS.complete[req.method] += 1
        if opts.drop_reused and index > 1 and counted:
            with STATS.lock:
                STATS.dropped += 1
            return
        if req.path == "/count":
            send_json(sock, req, STATS.snapshot(), close=not req.keep_alive())
            if not req.keep_alive():
                return
            continue
        if not handle(sock, req, conn_id, index, port, peer):
            return


def bad_request(sock, method, error):
    with STATS.lock:
        STATS.malformed += 1
    req = http1.Request(method, "/", "HTTP/1.1", [], b"")
    send_simple(sock, req, 400, (str(error) + "\n").encode(), ctype="text/plain", close=True)


class Backend(ThreadedServer):
    def __init__(self, port, opts):
        self.opts = opts
        super().__init__(port=port, backlog=256, lifetime=None)

    def handle(self, sock, peer):
        serve_connection(sock, self.port, peer, self.opts)

    def on_error(self, e):
        # A peer that went away (reset, broken pipe, closed mid-message) is no news.
        if not isinstance(e, (OSError, http1.Incomplete)):
            import traceback
            traceback.print_exception(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, action="append", required=True)
    ap.add_argument("--idle-close", type=float, default=0.0)
    ap.add_argument("--drop-reused", action="store_true")
    opts = ap.parse_args()
    servers = [Backend(p, opts) for p in opts.port]
    print("ready " + " ".join(str(s.port) for s in servers), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
