"""WebSocket helpers for sluice's integration tests (test_websocket*.py).

- WsBackend: ws_backend.py (python websockets echo server) as a child process, with its events
  file (what it received and how each connection closed);
- WsClient: a raw-socket WebSocket client that sends exact frames (including invalid ones) and
  parses what comes back strictly;
- FakeBackend: a raw-socket WebSocket "backend" whose handshake answer and behaviour a test
  chooses (bad 101s, protocol violations, counting pings and pongs);
- WsTestCase: SluiceTestCase plus a one-call setup of ws_backend + sluice with a WebSocket route.

Only 127.0.0.1. Every wait is bounded in time.
"""

import base64
import hashlib
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import threading
import time

import harness
from harness import LOCALHOST, PYTHON, SluiceTestCase, Table

HERE = os.path.dirname(os.path.abspath(__file__))
WS_BACKEND = os.path.join(HERE, "ws_backend.py")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def new_key():
    return base64.b64encode(os.urandom(16)).decode("ascii")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None):
    """One frame. rsv: the three RSV bits as a number 0..7 (4 = RSV1). mask: client-style."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + mask_bytes(payload, key)


def mask_bytes(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = fin, rsv, opcode, masked, payload

    @property
    def code(self):
        """Close code (None without one)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def reason(self):
        return self.payload[2:]

    def __repr__(self):
        return "<Frame op=%#x fin=%s rsv=%d masked=%s len=%d %r>" % (
            self.opcode, self.fin, self.rsv, self.masked, len(self.payload), self.payload[:60])


class PeerClosed(Exception):
    """The TCP connection ended (EOF or reset) before a complete frame."""


class FrameSocket:
    """A socket carrying WebSocket frames: exact bytes out, strictly parsed frames in."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = bytearray(buf)
        self.eof = False

    def send(self, data, timeout=5.0):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            raise PeerClosed("connection closed (have %d bytes)" % len(self.buf))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete frame in time (have %r)" % bytes(self.buf[:80]))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no complete frame in time (have %r)" % bytes(self.buf[:80]))
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise PeerClosed("connection closed (have %d bytes)" % len(self.buf))
        self.buf += data

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)

    def read_frame(self, timeout=5.0):
        """The next frame. Raises TimeoutError, or PeerClosed at EOF."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = None
        if masked:
            self._need(pos + 4, deadline)
            key = bytes(self.buf[pos:pos + 4])
            pos += 4
        self._need(pos + n, deadline)
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        if masked:
            payload = mask_bytes(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload)

    def wait_eof(self, timeout=3.0):
        """True when EOF (or a reset) comes within timeout; bytes before it are discarded."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except PeerClosed:
                return True
            except TimeoutError:
                return False
            self.buf.clear()
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_http_head(sock, buf, deadline):
    """(status, headers as list of (name, value), rest of buffer)."""
    buf = bytearray(buf)
    while b"\r\n\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no HTTP response head in time (have %r)" % bytes(buf[:300]))
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no HTTP response head in time (have %r)" % bytes(buf[:300]))
        except ConnectionResetError:
            data = b""
        if not data:
            raise PeerClosed("closed before a response head (have %r)" % bytes(buf[:300]))
        buf += data
    i = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return int(m.group(1)), headers, bytes(buf[i + 4:])


def header(headers, name, default=None):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return default


class WsClient(FrameSocket):
    """A raw WebSocket client through sluice. After the constructor, .status and .headers hold the
    handshake answer; frames can be sent only when .status == 101."""

    def __init__(self, port, path="/ws", headers=(), key=None, timeout=5.0, request=None):
        sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock)
        self.key = key or new_key()
        if request is None:
            lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                     "Connection: Upgrade", "Sec-WebSocket-Key: " + self.key,
                     "Sec-WebSocket-Version: 13"]
            lines += ["%s: %s" % kv for kv in headers]
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            sock.settimeout(timeout)
            sock.sendall(request)
            self.status, self.headers, rest = read_http_head(sock, b"", time.monotonic() + timeout)
        except BaseException:
            sock.close()
            raise
        self.buf = bytearray(rest)

    def header(self, name, default=None):
        return header(self.headers, name, default)

    def send_frame(self, opcode, payload=b"", **kw):
        self.send(build_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(TEXT, text.encode("utf-8"))

    def send_binary(self, data):
        self.send_frame(BINARY, data)

    def recv_message(self, timeout=5.0, answer_pings=True):
        """(opcode, payload) of the next data message, fragments joined. Pings are answered (and
        collected in .pings_seen). A close frame raises AssertionError."""
        deadline = time.monotonic() + timeout
        parts = []
        opcode = None
        while True:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f.masked or f.rsv:
                raise AssertionError("server frame with mask or RSV bits: %r" % f)
            if f.opcode == PING:
                self.pings_seen = getattr(self, "pings_seen", 0) + 1
                if answer_pings:
                    self.send_frame(PONG, f.payload)
                continue
            if f.opcode == PONG:
                continue
            if f.opcode == CLOSE:
                raise AssertionError("close frame %s %r instead of a message" % (f.code, f.reason))
            if opcode is None:
                opcode = f.opcode
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def answer_close_and_wait_eof(self, close, timeout=5.0):
        """Completes a closing handshake that the server started (echoes the close code, as a
        real client does), then waits for the server to end the TCP connection. True on EOF."""
        try:
            self.send_frame(CLOSE, close.payload[:2])
        except OSError:
            pass
        return self.wait_eof(timeout)

    def read_close(self, timeout=5.0):
        """Reads frames until a close frame; returns (close frame, frames before it)."""
        deadline = time.monotonic() + timeout
        before = []
        for _ in range(100000):
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f.opcode == CLOSE:
                return f, before
            before.append(f)
        raise AssertionError("no close frame among %d frames" % len(before))


def raw_upgrade(port, request, timeout=5.0):
    """Sends request bytes; returns (status, headers). For handshake rejections."""
    sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
    try:
        sock.sendall(request)
        status, headers, _ = read_http_head(sock, b"", time.monotonic() + timeout)
        return status, headers
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# ws_backend.py as a process


class WsBackend:
    """ws_backend.py on a free port; .events() reads what it recorded."""

    def __init__(self, tmpdir, name="wsbackend"):
        self.name = name
        self.events_path = os.path.join(tmpdir, name + ".events")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        open(self.events_path, "w").close()
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([PYTHON, WS_BACKEND, "--port", "0", "--events", self.events_path],
                                     stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        line = b""
        deadline = time.monotonic() + 15
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if sel.select(timeout=max(0.01, deadline - time.monotonic())):
                b = os.read(self.proc.stdout.fileno(), 4096)
                if not b:
                    break
                line += b
        sel.close()
        if not line.startswith(b"ready "):
            self.stop()
            raise RuntimeError("ws_backend did not start: %r\n%s" % (line, self.stderr()))
        self.port = int(line.split()[1])
        self.address = "%s:%d" % (LOCALHOST, self.port)

    def events(self):
        with open(self.events_path, encoding="utf-8") as f:
            text = f.read()
        # Only complete lines: the backend may be halfway through writing the last one.
        return [json.loads(l) for l in text.split("\n")[:-1] if l.strip()]

    def conn_id(self, path, timeout=5.0):
        """Id of the (last) connection opened on this exact path."""
        def find():
            ids = [e["id"] for e in self.events() if e["ev"] == "open" and e["path"] == path]
            return ids[-1] if ids else None
        cid = harness.wait_until(find, timeout)
        if cid is None:
            raise AssertionError("backend saw no WebSocket on %s; events: %r" % (path, self.events()[-10:]))
        return cid

    def open_event(self, cid):
        return [e for e in self.events() if e["ev"] == "open" and e["id"] == cid][0]

    def messages(self, cid):
        return [e for e in self.events() if e["ev"] == "msg" and e["id"] == cid]

    def wait_close(self, cid, timeout=5.0):
        """The close event of connection cid (None if it did not come in time)."""
        def find():
            ev = [e for e in self.events() if e["ev"] == "close" and e["id"] == cid]
            return ev[0] if ev else None
        return harness.wait_until(find, timeout)

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        try:
            self.proc.stdout.close()
        except Exception:
            pass
        self._err.close()


# ---------------------------------------------------------------------------------------------
# A raw-socket backend with chosen misbehaviour


class FakeBackendConn(FrameSocket):
    def __init__(self, sock, request_head, rest):
        super().__init__(sock, rest)
        self.request_head = request_head
        lines = request_head.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        self.headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers.append((k.strip(), v.strip()))

    def header(self, name, default=None):
        return header(self.headers, name, default)

    def send_frame(self, opcode, payload=b"", mask=False, **kw):
        self.send(build_frame(opcode, payload, mask=mask, **kw))

    def respond_101(self, accept=None, extra=()):
        key = self.header("Sec-WebSocket-Key", "")
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Accept: " + (accept if accept is not None else accept_key(key))]
        lines += ["%s: %s" % kv for kv in extra]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


class FakeBackend:
    """Listens on 127.0.0.1:<free>; each accepted connection's request head is read, then
    behaviour(conn, record) runs in its own thread. record(dict) appends to .records (thread-safe).
    Connections live at most `lifetime` seconds."""

    def __init__(self, behaviour, lifetime=20.0):
        self.behaviour = behaviour
        self.lifetime = lifetime
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOCALHOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.address = "%s:%d" % (LOCALHOST, self.port)
        self.socks = []
        self.threads = []
        self.errors = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def record(self, obj):
        with self.lock:
            self.records.append(obj)

    def recorded(self, kind=None):
        with self.lock:
            return [r for r in self.records if kind is None or r.get("ev") == kind]

    def _accept(self):
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.socks.append(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, s):
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + 5
            buf = b""
            while b"\r\n\r\n" not in buf:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            i = buf.index(b"\r\n\r\n")
            conn = FakeBackendConn(s, buf[:i], buf[i + 4:])
            self.record({"ev": "request", "head": buf[:i].decode("latin-1")})
            self.behaviour(conn, self.record)
        except Exception as e:  # recorded, shown by the test on failure
            self.record({"ev": "error", "error": repr(e)})
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.stopping.set()
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads + [self.acceptor]:
            t.join(timeout=2)

    # harness-compatible bits (SluiceTestCase.tearDown stops .backends)
    name = "fakebackend"

    def stop(self):
        self.close()

    def stderr(self):
        return "records: %r\n" % (self.recorded(),)


def serve_frames(conn, record, lifetime=20.0, echo=True, answer_pings=True):
    """A backend loop: records every frame (ping, pong, data, close); echoes data frames
    unmasked; answers pings; answers a close and returns. Bounded by lifetime."""
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            f = conn.read_frame(max(0.01, deadline - time.monotonic()))
        except PeerClosed:
            record({"ev": "eof"})
            return
        except TimeoutError:
            return
        ev = {"ev": {PING: "ping", PONG: "pong", CLOSE: "close"}.get(f.opcode, "data"),
              "opcode": f.opcode, "fin": f.fin, "rsv": f.rsv, "masked": f.masked,
              "payload": f.payload.hex()}
        if f.opcode == CLOSE:
            ev["code"] = f.code
            ev["reason"] = f.reason.decode("utf-8", "replace")
        record(ev)
        if f.opcode == CLOSE:
            try:
                conn.send_frame(CLOSE, f.payload[:2])
            except OSError:
                pass
            conn.wait_eof(2.0)
            record({"ev": "eof"})
            return
        if f.opcode == PING and answer_pings:
            conn.send_frame(PONG, f.payload)
        elif f.opcode in (TEXT, BINARY, CONT) and echo:
            conn.send_frame(f.opcode, f.payload, fin=f.fin)


# ---------------------------------------------------------------------------------------------
# unittest base


def ws_route(path_prefix="/", filters=None, pool="app", **ws):
    """A [[routes]] dict with [routes.websocket] enabled and the given websocket keys."""
    r = {"pool": pool, "path_prefix": path_prefix}
    if filters:
        r["filters"] = list(filters)
    table = Table(enabled=True)
    table.update(ws)
    r["websocket"] = table
    return r


class WsTestCase(SluiceTestCase):
    def start_ws_backend(self, name=None):
        b = WsBackend(self.tmpdir, name=name or "wsbackend%d" % len(self.backends))
        self.backends.append(b)
        return b

    def start_fake_backend(self, behaviour):
        b = FakeBackend(behaviour)
        b.name = "fakebackend%d" % len(self.backends)
        self.backends.append(b)
        return b

    def start_ws_proxy(self, routes=None, extra="", backend=None, server=None, listener=None, **ws):
        """ws_backend (or `backend`) behind sluice. routes: list of route dicts (default: one
        catch-all WebSocket route with the websocket keys **ws)."""
        b = backend or self.start_ws_backend()
        spec = {"pools": [{"name": "app", "backends": [{"address": b.address}]}],
                "routes": routes if routes is not None else [ws_route(**ws)],
                "extra": extra}
        if server:
            spec["server"] = server
        if listener:
            spec["listener"] = listener
        s = self.start_sluice(spec)
        return b, s

    def ws_client(self, sluice, path="/ws", headers=(), **kw):
        c = WsClient(sluice.port, path=path, headers=headers, **kw)
        self.conns.append(c)
        return c

    def assertUpgraded(self, c, msg=None):
        if c.status != 101:
            self.fail((msg + ": " if msg else "") + "handshake answered %s %r" % (c.status, c.headers))
        self.assertEqual(c.header("Sec-WebSocket-Accept"), accept_key(c.key))
