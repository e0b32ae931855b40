"""Helpers for the backend-pool tests (test_pools.py): balancing, sticky routing, health checks,
draining and rebalance, end to end with real backends.

- PoolCase: SluiceTestCase plus HTTP backends (backend.py, optionally on a fixed port, so that a
  killed backend can come back where it was), WebSocket backends (ws_backend.py), a sluice
  started from config text with fixed ports (so that it can be reconfigured and reloaded), the
  drain API, /api/status per backend, and where each WebSocket landed;
- get(): one HTTP request on a fresh connection; sticky cookie parsing;
- CloseWatcher: many raw WebSocket clients watched at once (selectors) for the close frames the
  server sends, with the time each one came, and an optional reconnect on every close;
- TimedLoad: a few client threads sending requests through sluice, every request recorded with
  its start time, so that failures can be judged against the moment a backend was ejected.

Only 127.0.0.1. Every loop and wait is bounded in count and time.
"""

import re
import select
import selectors
import socket
import threading
import time

import harness
from harness import Backend, RawConn, SluiceTestCase, free_port, wait_until
from reloadutil import config, start_config_sluice
import wsutil
from wsutil import CLOSE, TEXT, PeerClosed, WsBackend, WsClient

COOKIE_RE = re.compile(r"^([A-Za-z0-9_]+)=([0-9a-f]{16}); Path=/; HttpOnly; SameSite=Lax$")


def get(port, target, headers=(), timeout=10.0):
    """GET target on a fresh connection (Connection: close); the Response."""
    c = RawConn(port, timeout=timeout)
    try:
        return c.request("GET", target, headers=list(headers) + [("Connection", "close")],
                         timeout=timeout)
    finally:
        c.close()


def sticky_token(headers_or_response, name):
    """The value of the sticky cookie `name` set by a response (Response or a list of header
    pairs), None when it sets none. Fails on a malformed or repeated Set-Cookie."""
    if isinstance(headers_or_response, list):
        values = [v for k, v in headers_or_response if k.lower() == "set-cookie"]
    else:
        values = headers_or_response.header_all("set-cookie")
    mine = [v for v in values if v.startswith(name + "=")]
    if not mine:
        return None
    if len(mine) != 1:
        raise AssertionError("%d Set-Cookie headers for %s: %r" % (len(mine), name, mine))
    m = COOKIE_RE.match(mine[0])
    if not m or m.group(1) != name:
        raise AssertionError("Set-Cookie not of the form %s=<16 hex>; Path=/; HttpOnly; "
                             "SameSite=Lax: %r" % (name, mine[0]))
    return m.group(2)


def pending(client):
    """True when a raw client (FrameSocket) has bytes waiting or its peer closed."""
    if client.buf or client.eof:
        return True
    r, _, _ = select.select([client.sock], [], [], 0)
    return bool(r)


def windows_over(times, width):
    """The largest number of the given instants that fall in one half-open window of `width`
    seconds (the window starting at each instant)."""
    ts = sorted(times)
    best = 0
    j = 0
    for i in range(len(ts)):
        while j < len(ts) and ts[j] < ts[i] + width:
            j += 1
        best = max(best, j - i)
    return best


class PoolCase(SluiceTestCase):
    WORKERS = 2

    # -- backends

    def http_backend(self, port=0, name=None):
        """backend.py on one port (0: a free one), its own process (so it can be killed alone)."""
        b = Backend(self.tmpdir, name=name or "backend%d" % len(self.backends), nports=0,
                    args=("--port", str(port)))
        self.backends.append(b)
        return b

    def http_backends(self, n):
        return [self.http_backend() for _ in range(n)]

    def ws_backend(self, name=None):
        b = WsBackend(self.tmpdir, name=name or "wsbackend%d" % len(self.backends))
        self.backends.append(b)
        return b

    def status_server(self):
        srv = StatusServer()
        self.backends.append(srv)
        return srv

    def ws_backends(self, n):
        return [self.ws_backend() for _ in range(n)]

    @staticmethod
    def kill(backend):
        """SIGKILL a backend process (no goodbye to its connections' peers beyond the kernel's)."""
        if backend.proc.poll() is None:
            backend.proc.kill()
            backend.proc.wait(timeout=5)

    # -- sluice

    def start_pools(self, pools, routes, server=None, extra=""):
        """sluice with these pools and routes (reloadutil.pool / reloadutil.route dicts) on a
        listener "public", every port fixed; .admin is its admin client; .reconfigure(pools,
        routes) rewrites the file and reloads."""
        admin_port, public = free_port(), free_port()
        srv = {"workers": self.WORKERS}
        srv.update(server or {})
        text = config(admin_port, {"public": public}, pools, routes, server=srv, extra=extra)
        s = start_config_sluice(self, text, admin_port, {"public": public})
        case = self

        def reconfigure(new_pools, new_routes=None):
            s.write_config(config(admin_port, {"public": public}, new_pools,
                                  new_routes if new_routes is not None else routes, server=srv,
                                  extra=extra))
            code, body = s.admin.reload()
            case.assertEqual((code, body.get("result")), (200, "success"),
                             "reload failed: %r" % (body,))
            return body["generation"]
        s.reconfigure = reconfigure
        return s

    def drain(self, s, pool, address, action="drain"):
        """POST .../drain (or undrain); asserts the 200 and its JSON; returns the JSON."""
        r = s.admin.post("/api/pools/%s/backends/%s/%s" % (pool, address, action))
        self.assertEqual(r.status, 200, "%s %s/%s answered %r" % (action, pool, address, r))
        body = r.json()
        self.assertEqual((body.get("pool"), body.get("backend")), (pool, address), body)
        if action == "drain":
            self.assertEqual(body.get("state"), "draining", body)
        else:
            self.assertNotEqual(body.get("state"), "draining", body)
        return body

    def undrain(self, s, pool, address):
        return self.drain(s, pool, address, "undrain")

    @staticmethod
    def backends_status(s, pool):
        """{address: backend entry of /api/status} for one pool."""
        for p in s.admin.status()["pools"]:
            if p["name"] == pool:
                return {b["address"]: b for b in p["backends"]}
        raise AssertionError("pool %s not in /api/status" % pool)

    def backend_status(self, s, pool, address):
        st = self.backends_status(s, pool)
        self.assertIn(address, st, "backend %s not in pool %s of /api/status" % (address, pool))
        return st[address]

    def wait_status(self, s, pool, address, timeout=5.0, **want):
        """Polls /api/status until the backend's entry has every key=value of `want`; returns
        the last entry (the caller asserts)."""
        last = [None]

        def check():
            last[0] = self.backend_status(s, pool, address)
            return all(last[0].get(k) == v for k, v in want.items())
        wait_until(check, timeout, interval=0.05)
        return last[0]

    def assertState(self, s, pool, address, state, timeout=5.0, msg=None):
        entry = self.wait_status(s, pool, address, timeout=timeout, state=state)
        self.assertEqual(entry.get("state"), state, (msg + ": " if msg else "") +
                         "backend %s of pool %s: %r" % (address, pool, entry))
        return entry

    def log(self, s):
        return s.stderr() + s.stdout()

    # -- HTTP

    def port_of(self, s, target="/echo/probe", headers=()):
        r = get(s.port, target, headers)
        self.assertEqual(r.status, 200, "GET %s answered %r" % (target, r))
        return r.json()["port"]

    # -- WebSockets

    def ws(self, port, path, headers=(), msg=None):
        """A raw WebSocket client through sluice; asserts the 101."""
        c = WsClient(port, path=path, headers=headers)
        self.conns.append(c)
        self.assertEqual(c.status, 101, (msg + ": " if msg else "") + "handshake on %s answered "
                         "%s %r" % (path, c.status, c.headers))
        return c

    def assertEchoes(self, c, text, msg=None):
        c.send_text(text)
        op, payload = c.recv_message(timeout=5)
        self.assertEqual((op, payload), (TEXT, text.encode()), msg)

    def close_ws(self, c, timeout=5.0):
        """The client closes (1000), reads the answering close and the end of the connection."""
        c.send_frame(CLOSE, wsutil.close_payload(1000))
        f, _ = c.read_close(timeout=timeout)
        c.wait_eof(timeout)
        c.close()
        return f

    def locate(self, backends, paths, timeout=5.0):
        """{path: index into backends} of the WebSocket backend that saw each path opened."""
        paths = list(paths)
        found = {}

        def scan():
            for i, b in enumerate(backends):
                for e in b.events():
                    if e["ev"] == "open" and e["path"] in paths_set:
                        found.setdefault(e["path"], i)
            return len(found) == len(paths_set)
        paths_set = set(paths)
        wait_until(scan, timeout, interval=0.05)
        missing = [p for p in paths if p not in found]
        self.assertEqual(missing, [], "no backend saw these WebSockets open")
        return found

    def wait_ws_gone(self, s, pool, timeout=5.0):
        """Waits until no backend of the pool has an open connection (status)."""
        ok = wait_until(lambda: all(b["connections"] == 0 and b["websockets"] == 0
                                    for b in self.backends_status(s, pool).values()),
                        timeout, interval=0.05)
        self.assertTrue(ok, "connections of pool %s still open: %r"
                        % (pool, self.backends_status(s, pool)))


class StatusServer:
    """A tiny HTTP origin on 127.0.0.1:<free>: GET /code/NNN answers status NNN (no body for
    1xx/204/304), anything else 200; every request line is recorded in .requests; each
    connection carries one request (Connection: close). For health checks, whose path cannot
    carry a query."""

    name = "statusserver"

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((harness.LOCALHOST, 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.address = "%s:%d" % (harness.LOCALHOST, self.port)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        deadline = time.monotonic() + 300
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            s.settimeout(5)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            line = buf.split(b"\r\n", 1)[0].decode("latin-1")
            with self.lock:
                self.requests.append(line)
            parts = line.split(" ")
            m = re.match(r"^/code/(\d{3})$", parts[1] if len(parts) > 1 else "")
            code = int(m.group(1)) if m else 200
            if code < 200 or code in (204, 304):
                head = "HTTP/1.1 %d Status\r\nConnection: close\r\n\r\n" % code
                body = b""
            else:
                body = b"status %d\n" % code
                head = ("HTTP/1.1 %d Status\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                        % (code, len(body)))
            s.sendall(head.encode("latin-1") + body)
        except OSError:
            pass
        finally:
            s.close()

    def seen(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=2)

    def stderr(self):
        return "requests: %r\n" % (self.seen()[-20:],)


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


class TimedLoad:
    """`threads` client threads sending GET path?t=T&n=N through sluice (a fresh connection
    every `per_connection` requests). Every request is recorded as (start, end, port or None,
    problem or None); a request counts as good when it got a 200 whose JSON echoes its target."""

    def __init__(self, port, path="/echo/load", threads=3, per_connection=5, pause=0.003,
                 max_seconds=60.0):
        self.port = port
        self.path = path
        self.per_connection = per_connection
        self.pause = pause
        self.max_seconds = max_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.records = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=20.0):
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def _record(self, start, port, problem):
        with self.lock:
            self.records.append((start, time.monotonic(), port, problem))

    def _run(self, tid):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        used = 0
        conn = None
        while not self.stopping.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            if conn is None or used >= self.per_connection:
                if conn is not None:
                    conn.close()
                used = 0
                try:
                    conn = RawConn(self.port, timeout=10.0)
                except OSError as e:
                    self._record(start, None, "connect: %r" % e)
                    conn = None
                    time.sleep(0.05)
                    continue
            target = "%s?t=%d&n=%d" % (self.path, tid, n)
            n += 1
            used += 1
            try:
                r = conn.request("GET", target, timeout=10.0)
                if r.status != 200:
                    self._record(start, None, "%s: status %s %r" % (target, r.status, r.body[:200]))
                else:
                    body = r.json()
                    if body.get("target") != target:
                        self._record(start, None, "%s: backend saw %r" % (target, body.get("target")))
                    else:
                        self._record(start, body.get("port"), None)
                if "close" in r.connection_tokens():
                    conn.close()
                    conn = None
            except Exception as e:  # every failure counts; the connection is replaced
                self._record(start, None, "%s: %r" % (target, e))
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
