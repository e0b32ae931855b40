"""Servers on 127.0.0.1 that share one accept loop (in the test process, and in backend.py).

- ThreadedServer: a listener, an accept thread and one thread per connection running
  handle(sock, peer); the accept loop ends after `lifetime` seconds; close() shuts down every
  connection and joins the threads (bounded);
- RecordingBackend: a strict HTTP/1.1 server (http1.read_request) that keeps the raw bytes of
  every connection and answers each request with respond(request, connection);
- StatusServer: GET /code/NNN answers status NNN, one request per connection (health checks);
- PageServer: one HTML page for any request;
- Blackhole: a port whose connects hang.

Every server has .port, .address, .name, stop() and stderr() (what SluiceTestCase prints when a
test fails).
"""

import re
import socket
import threading
import time

import http1
from net import LOCALHOST, wait_until


class ThreadedServer:
    name = "server"

    def __init__(self, port=0, backlog=64, lifetime=300.0, name=None):
        if name:
            self.name = name
        self.lock = threading.Lock()
        self.accepted = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOCALHOST, port))
        self.listener.listen(backlog)
        self.listener.settimeout(0.25)
        self.port = self.listener.getsockname()[1]
        self.address = "%s:%d" % (LOCALHOST, self.port)
        self._lifetime = lifetime
        self._stopping = threading.Event()
        self._socks = set()
        self._threads = set()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def handle(self, sock, peer):
        raise NotImplementedError

    def on_error(self, e):
        """An exception that ended a connection's handler (the connection is closed after)."""

    def track(self, sock):
        """Registers a socket made from a connection (e.g. its TLS wrapper) so that close()
        shuts it down too."""
        with self.lock:
            self._socks.add(sock)

    def _accept_loop(self):
        deadline = time.monotonic() + self._lifetime if self._lifetime else None
        while not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                sock, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._run, args=(sock, peer), daemon=True)
            with self.lock:
                self.accepted += 1
                self._socks.add(sock)
                self._threads.add(t)
            t.start()

    def _run(self, sock, peer):
        try:
            self.handle(sock, peer)
        except Exception as e:  # the handler's business; recorded where the server says
            self.on_error(e)
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self.lock:
                self._socks.discard(sock)
                self._threads.discard(threading.current_thread())

    def close(self, timeout=5.0):
        self._stopping.set()
        for s in [self.listener] + self._live_socks():
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        with self.lock:
            threads = list(self._threads)
        for t in threads + [self._acceptor]:
            t.join(timeout=max(0.01, deadline - time.monotonic()))

    def _live_socks(self):
        with self.lock:
            return list(self._socks)

    stop = close

    def stderr(self):
        return ""


class RecordedConnection:
    def __init__(self):
        self.raw = bytearray()  # every byte received, in order
        self.requests = []
        self.error = None  # why the strict parser gave up, if it did


class RecordingBackend(ThreadedServer):
    """A backend in the test process that keeps the raw bytes of every connection and reads them
    as a strict HTTP/1.1 server does (Content-Length or chunked framing; any other
    Transfer-Encoding, two lengths, a bare LF are errors): what a backend behind sluice really
    receives, byte for byte. respond(request, conn) returns the bytes to answer each request with
    (None: close the connection); the default is 200 with the target as the body. Each request's
    .raw holds its own bytes."""

    name = "recordingbackend"
    close_after_answer = False

    def __init__(self, respond=None, name=None):
        self.respond = respond or self.default_response
        self.connections = []
        super().__init__(name=name)

    @staticmethod
    def default_response(req, conn):
        body = req.target.encode("latin-1")
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    @property
    def requests(self):
        with self.lock:
            return [r for c in self.connections for r in c.requests]

    def wait_requests(self, n, timeout=5.0):
        wait_until(lambda: len(self.requests) >= n, timeout)
        return self.requests

    def handle(self, sock, peer):
        conn = RecordedConnection()
        with self.lock:
            self.connections.append(conn)
        stream = http1.Stream(sock, record=conn.raw)
        try:
            while True:
                req = http1.read_request(stream, time.monotonic() + 60)
                if req is None:
                    return
                with self.lock:
                    conn.requests.append(req)
                answer = self.respond(req, conn)
                if answer is None:
                    return
                sock.sendall(answer)
                if self.close_after_answer:
                    return
        except http1.Incomplete:
            pass  # the peer closed in the middle of a request: not a framing error
        except (OSError, ValueError) as e:
            conn.error = conn.error or repr(e)

    def stderr(self):
        return "requests: %r\n" % ([r.request_line for r in self.requests][-20:],)


class StatusServer(RecordingBackend):
    """A tiny HTTP origin: GET /code/NNN answers status NNN (no body for 1xx/204/304), anything
    else 200; each connection carries one request (Connection: close). For health checks,
    whose path cannot carry a query. seen(): the request lines received."""

    name = "statusserver"
    close_after_answer = True

    def __init__(self, name=None):
        super().__init__(self.answer, name=name)

    @staticmethod
    def answer(req, conn):
        m = re.match(r"^/code/(\d{3})$", req.target)
        code = int(m.group(1)) if m else 200
        if code < 200 or code in (204, 304):
            return b"HTTP/1.1 %d Status\r\nConnection: close\r\n\r\n" % code
        body = b"status %d\n" % code
        return (b"HTTP/1.1 %d Status\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (code, len(body), body))

    def seen(self):
        return [r.request_line for r in self.requests]


class PageServer(RecordingBackend):
    """Serves `html` for any request (Connection: close). .requests: the heads received, as
    text."""

    name = "pageserver"
    close_after_answer = True

    def __init__(self, html, name=None):
        page = html.encode("utf-8")
        self.page = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(page) + page)
        super().__init__(lambda req, conn: self.page, name=name)

    @property
    def requests(self):
        return [r.raw_head[:-4].decode("latin-1") for r in RecordingBackend.requests.fget(self)]


class Blackhole:
    """A 127.0.0.1 port whose connects hang: a listener with backlog 0 that never accepts, its
    single queue slot taken by a filler connection. Linux drops further SYNs, so connect() to it
    waits until the caller's own timeout (a loopback stand-in for an unreachable backend)."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((LOCALHOST, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.address = "%s:%d" % (LOCALHOST, self.port)
        self.fillers = []
        # Fill the accept queue; stop at the first connect that does not complete at once.
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.3)
            try:
                s.connect((LOCALHOST, self.port))
            except OSError:
                s.close()
                break
            self.fillers.append(s)

    def works(self):
        """True when a connect to the port indeed hangs."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.3)
        try:
            s.connect((LOCALHOST, self.port))
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            s.close()
        return False

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()
