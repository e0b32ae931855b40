"""WebSocket pieces for sluice's integration tests (test_websocket*.py and others).

- build_frame(), mask_bytes(), close_payload(), accept_key(), new_key(): exact bytes;
- FrameSocket: an http1.Stream carrying frames (read_frame() parses strictly);
- WsClient: a raw client through sluice (.status and .headers: the handshake answer, read by
  http1's strict parser); raw_upgrade() for handshakes that are meant to fail;
- WsBackend: ws_backend.py (python websockets echo server) as a procs.Proc, with its events file
  (what it received and how each connection closed);
- FakeBackend: a servers.ThreadedServer whose connections run a behaviour the test chooses (bad
  101s, protocol violations); serve_frames(): a recording echo loop for behaviours;
- CloseWatcher: many raw clients watched at once (selectors) for the close frames the server
  sends, with the time each came, and an optional reconnect on every close;
- WsFleet: many python-websockets clients held open by one asyncio loop in a thread, with a
  close watcher on each, echo checks and background chatter.

Only 127.0.0.1. Every wait is bounded in time.
"""

import asyncio
import base64
import hashlib
import json
import os
import selectors
import struct
import threading
import time

import http1
from http1 import RawConn, Stream
from net import LOCALHOST, wait_until
from procs import HERE, PYTHON, Proc
from servers import ThreadedServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# The TCP connection ended (EOF or reset) before a complete frame.
PeerClosed = http1.Incomplete


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


def header(headers, name, default=None):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return default


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


class FrameSocket(Stream):
    """A Stream carrying WebSocket frames: exact bytes out, strictly parsed frames in. Frames
    it sends are masked when .masks (a client)."""

    masks = True

    def send_frame(self, opcode, payload=b"", **kw):
        kw.setdefault("mask", self.masks)
        self.send(build_frame(opcode, payload, **kw))

    def _need(self, n, deadline):
        while len(self.buf) < n:
            if self.fill(deadline) == 0:
                raise PeerClosed("connection closed (have %d bytes)" % len(self.buf))

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
        return self.wait_closed(timeout, discard=True)[0]


class WsClient(RawConn, FrameSocket):
    """A raw WebSocket client through sluice. After the constructor, .status and .headers hold the
    handshake answer; frames can be sent only when .status == 101."""

    def __init__(self, port, path="/ws", headers=(), key=None, timeout=5.0, request=None):
        super().__init__(port, timeout=timeout, connect_timeout=timeout)
        self.key = key or new_key()
        if request is None:
            lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                     "Connection: Upgrade", "Sec-WebSocket-Key: " + self.key,
                     "Sec-WebSocket-Version: 13"]
            lines += ["%s: %s" % kv for kv in headers]
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.send(request)
            head = self.read_head()
        except BaseException:
            self.close()
            raise
        self.status, self.headers = head.status, head.headers
        self.pings_seen = 0

    def header(self, name, default=None):
        return header(self.headers, name, default)

    def send_text(self, text):
        self.send_frame(TEXT, text.encode("utf-8"))

    def send_binary(self, data):
        self.send_frame(BINARY, data)

    def recv_message(self, timeout=5.0, answer_pings=True):
        """(opcode, payload) of the next data message, fragments joined. Pings are answered (and
        counted in .pings_seen). A close frame raises AssertionError."""
        deadline = time.monotonic() + timeout
        parts = []
        opcode = None
        while True:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f.masked or f.rsv:
                raise AssertionError("server frame with mask or RSV bits: %r" % f)
            if f.opcode == PING:
                self.pings_seen += 1
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
    c = RawConn(port, timeout=timeout)
    try:
        c.send(request)
        head = c.read_head()
        return head.status, head.headers
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# ws_backend.py as a process


class WsBackend(Proc):
    """ws_backend.py on a free port; .events() reads what it recorded."""

    def __init__(self, tmpdir, name="wsbackend"):
        self.events_path = os.path.join(tmpdir, name + ".events")
        open(self.events_path, "w").close()
        super().__init__(tmpdir, name, [PYTHON, os.path.join(HERE, "ws_backend.py"), "--port", "0",
                                        "--events", self.events_path], ready="ready ")
        self.spawn()
        self.port = int(self.ready_line.split()[1])
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
        cid = wait_until(find, timeout)
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
        return wait_until(find, timeout)


# ---------------------------------------------------------------------------------------------
# A raw-socket backend with chosen misbehaviour


class FakeBackendConn(FrameSocket):
    """The backend side of one connection: .request (http1.Request) is the upgrade request."""

    masks = False

    def __init__(self, sock, request, rest):
        super().__init__(sock, rest)
        self.request = request
        self.request_line = request.request_line
        self.headers = request.headers

    def header(self, name, default=None):
        return self.request.header(name, default)

    def respond_101(self, accept=None, extra=()):
        key = self.header("Sec-WebSocket-Key", "")
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Accept: " + (accept if accept is not None else accept_key(key))]
        lines += ["%s: %s" % kv for kv in extra]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


class FakeBackend(ThreadedServer):
    """Each accepted connection's request head is read (strictly), then behaviour(conn,
    record) runs in its own thread. record(dict) appends to .records (thread-safe)."""

    name = "fakebackend"

    def __init__(self, behaviour, name=None):
        self.behaviour = behaviour
        self.records = []
        super().__init__(backlog=16, name=name)

    def record(self, obj):
        with self.lock:
            self.records.append(obj)

    def recorded(self, kind=None):
        with self.lock:
            return [r for r in self.records if kind is None or r.get("ev") == kind]

    def handle(self, sock, peer):
        stream = Stream(sock)
        try:
            raw = stream.read_head_bytes(time.monotonic() + 5)
        except http1.Incomplete:
            return
        if raw is None:
            return
        conn = FakeBackendConn(sock, http1.parse_request_head(raw), stream.buf)
        self.record({"ev": "request", "head": raw[:-4].decode("latin-1")})
        self.behaviour(conn, self.record)

    def on_error(self, e):  # recorded, shown by the test on failure
        self.record({"ev": "error", "error": repr(e)})

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
# Many clients at once


class CloseWatcher:
    """Raw WebSocket clients ({key: WsClient}) watched together for frames from the server.
    Each close frame is recorded as (key, code, reason, monotonic time) in .closes, answered, and
    the connection ended; a connection that ends without one is recorded with code None; any
    other frame goes to .unexpected. reconnect(key) -> (new key, WsClient) or None is called
    after each close (the new client is watched too)."""

    def __init__(self, clients, reconnect=None):
        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.closes = []
        self.unexpected = []
        self.reconnect_errors = []
        self.reconnect = reconnect
        for k, c in clients.items():
            self.add(k, c)

    def add(self, key, client):
        self.clients[key] = client
        self.sel.register(client.sock, selectors.EVENT_READ, key)

    def _drop(self, key):
        c = self.clients.pop(key)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        return c

    def _closed(self, key, code, reason):
        self.closes.append((key, code, reason, time.monotonic()))
        c = self._drop(key)
        c.close()
        if self.reconnect is not None:
            try:
                got = self.reconnect(key)
            except Exception as e:  # recorded; the test asserts there were none
                self.reconnect_errors.append((key, repr(e)))
                return
            if got is not None:
                self.add(*got)

    def poll(self, duration, until=None, max_events=100000):
        """Watches for up to `duration` seconds, or until until() is true (checked between
        events, at least every 0.1 s)."""
        deadline = time.monotonic() + duration
        events = 0
        while time.monotonic() < deadline and events < max_events:
            if until is not None and until():
                return True
            if not self.clients:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            for skey, _ in self.sel.select(timeout=min(0.1, max(0.0, deadline - time.monotonic()))):
                key = skey.data
                c = self.clients.get(key)
                if c is None:
                    continue
                events += 1
                # Frames already buffered and what just arrived (close frames are tiny).
                for _ in range(64):
                    try:
                        f = c.read_frame(timeout=2.0)
                    except PeerClosed:
                        self._closed(key, None, b"")
                        break
                    except TimeoutError:
                        self.unexpected.append((key, "partial frame"))
                        break
                    if f.opcode == CLOSE:
                        try:
                            c.send_frame(CLOSE, f.payload[:2])
                        except OSError:
                            pass
                        c.wait_eof(2.0)
                        self._closed(key, f.code, f.reason)
                        break
                    self.unexpected.append((key, repr(f)))
                    if not c.buf:
                        break
        return until() if until is not None else False

    def close_all(self):
        for k in list(self.clients):
            self._drop(k).close()
        self.sel.close()


class WsFleet:
    """n WebSocket clients (python websockets) to ws://127.0.0.1:port/path-i, held open by an
    asyncio loop in a background thread. A watcher per connection records when and how it
    closed (.closed: {index: (code, reason, monotonic time)}). chatter() sends messages on the
    connections round robin while the test does something else, and checks every echo."""

    def __init__(self, port, n, path="/ws/fleet", open_batch=50, open_timeout=20.0):
        import websockets  # Debian python3-websockets
        self.websockets = websockets
        self.port = port
        self.n = n
        self.path = path
        self.open_batch = open_batch
        self.open_timeout = open_timeout
        self.conns = []
        self.closed = {}
        self.chat_ok = 0
        self.chat_failures = []
        self.loop = asyncio.new_event_loop()
        self._stop_chatter = None
        self._chatter_future = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- opening

    async def _open_one(self, i):
        uri = "ws://%s:%d%s-%d" % (LOCALHOST, self.port, self.path, i)
        ws = await asyncio.wait_for(
            self.websockets.connect(uri, ping_interval=None, close_timeout=2, max_size=None,
                                    open_timeout=None), self.open_timeout)
        return ws

    async def _watch(self, i, ws):
        await ws.wait_closed()
        self.closed[i] = (ws.close_code, ws.close_reason, time.monotonic())

    async def _open_all(self):
        errors = []
        for start in range(0, self.n, self.open_batch):
            idx = list(range(start, min(self.n, start + self.open_batch)))
            results = await asyncio.gather(*(self._open_one(i) for i in idx),
                                           return_exceptions=True)
            for i, r in zip(idx, results):
                if isinstance(r, BaseException):
                    errors.append((i, repr(r)))
                    self.conns.append(None)
                else:
                    self.conns.append(r)
                    self.loop.create_task(self._watch(i, r))
        return errors

    def open(self, timeout=120.0):
        """Opens all n; returns the list of (index, error) of those that failed to open."""
        return self._run(self._open_all(), timeout)

    # -- echo checks

    async def _echo(self, i, tag, timeout):
        ws = self.conns[i]
        if ws is None:
            return "never opened"
        msg = "%s:%d:%s" % (tag, i, "x" * (i % 37))
        try:
            await asyncio.wait_for(ws.send(msg), timeout)
            got = await asyncio.wait_for(ws.recv(), timeout)
        except Exception as e:
            return "no echo: %r (close %s %r)" % (e, ws.close_code, ws.close_reason)
        if got != msg:
            return "wrong echo %r for %r" % (got[:80], msg[:80])
        return None

    async def _echo_all(self, tag, timeout, batch):
        problems = {}
        for start in range(0, len(self.conns), batch):
            idx = range(start, min(len(self.conns), start + batch))
            res = await asyncio.gather(*(self._echo(i, tag, timeout) for i in idx))
            for i, p in zip(idx, res):
                if p:
                    problems[i] = p
        return problems

    def echo_all(self, tag="final", timeout=10.0, batch=100):
        """{index: problem} for every connection that did not echo a message back."""
        return self._run(self._echo_all(tag, timeout, batch), timeout * (self.n // batch + 2))

    # -- background chatter

    async def _chatter(self, stop, pause):
        i = 0
        count = 0
        while not stop.is_set() and count < 100000:
            k = i % len(self.conns)
            i += 1
            if k in self.closed or self.conns[k] is None:
                continue
            p = await self._echo(k, "chat%d" % count, 10.0)
            count += 1
            if p:
                self.chat_failures.append((k, p))
            else:
                self.chat_ok += 1
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except asyncio.TimeoutError:
                pass

    def start_chatter(self, pause=0.02):
        async def make():
            return asyncio.Event()
        self._stop_chatter = self._run(make(), 5)
        self._chatter_future = asyncio.run_coroutine_threadsafe(
            self._chatter(self._stop_chatter, pause), self.loop)

    def stop_chatter(self, timeout=15.0):
        if self._stop_chatter is None:
            return
        self.loop.call_soon_threadsafe(self._stop_chatter.set)
        self._chatter_future.result(timeout)
        self._stop_chatter = None

    # -- teardown

    async def _close_all(self):
        await asyncio.gather(*(ws.close() for ws in self.conns if ws is not None),
                             return_exceptions=True)

    def close(self, timeout=30.0):
        try:
            if self._stop_chatter is not None:
                self.stop_chatter()
            self._run(self._close_all(), timeout)
        except Exception:
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
