"""Shared helpers for sluice's integration tests.

- ports on 127.0.0.1 (never anything else),
- the test backend (backend.py) and the sluice binary as child processes, with logs captured to
  files and printed when a test fails,
- a TOML config generator with a sensible template and overridable keys,
- a raw-socket HTTP/1.1 client that sends exact bytes and parses responses strictly,
- /proc helpers (RSS), curl as a real peer, a unittest base class that wires all of it.

Every wait is bounded in time. Environment: SLUICE_BIN (the binary), SLUICE_SOURCE_DIR.

Typical test:

    class T(SluiceTestCase):
        def test_x(self):
            backend, sluice = self.start_proxy(listener={"header_timeout": "1s"})
            c = self.connect(sluice)                  # RawConn, closed at cleanup
            r = c.request("GET", "/echo/x")           # Response: .status .headers .body .json()
            c.send(b"raw bytes"); r = c.read_response()
            backend.count()                           # what the backend saw (asked directly)

Processes are started with PR_SET_PDEATHSIG from the thread that starts them (start them from
the main thread): if the test process dies, they get SIGTERM.
"""

import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SLUICE_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
PYTHON = "/usr/bin/python3"
BACKEND = os.path.join(HERE, "backend.py")
CURL = "/usr/bin/curl"
LOCALHOST = "127.0.0.1"

sys.path.insert(0, HERE)
import backend as _backend  # noqa: E402  (for the download pattern)

PATTERN_BLOCK = _backend.PATTERN
BLOCK_SIZE = _backend.BLOCK_SIZE

SANITIZER_RE = re.compile(
    r"(ERROR: (Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|runtime error:)")


def sluice_bin():
    path = os.environ.get("SLUICE_BIN") or os.path.join(SOURCE_DIR, "build", "sluice")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError("sluice binary not found or not executable (set SLUICE_BIN): %s" % path)
    return path


def binary_has_asan(path=None):
    """True when the binary was linked with AddressSanitizer."""
    return _has_asan(path or sluice_bin())


@functools.lru_cache(maxsize=None)
def _has_asan(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"AddressSanitizer" in data


# ---------------------------------------------------------------------------------------------
# Ports, time


_handed_out = set()


def free_port():
    """A port that was free a moment ago on 127.0.0.1, never the same twice in one process
    (callers retry on collision with other processes)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOCALHOST, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 50 tries")


def closed_port():
    """A port with (very probably) no listener: bound, never listened on, then released."""
    return free_port()


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
        except (socket.timeout, TimeoutError):
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


def wait_until(predicate, timeout, interval=0.02, what="condition"):
    """Polls predicate() until truthy or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def can_connect(port, timeout=0.2):
    try:
        s = socket.create_connection((LOCALHOST, port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


def proc_status(pid):
    """VmRSS and VmHWM of pid, in KiB (dict with keys 'VmRSS', 'VmHWM')."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def pattern_bytes(offset, n):
    """Bytes [offset, offset+n) of what /download?bytes=... sends."""
    out = bytearray()
    while n > 0:
        start = offset % BLOCK_SIZE
        take = min(n, BLOCK_SIZE - start)
        out += PATTERN_BLOCK[start:start + take]
        offset += take
        n -= take
    return bytes(out)


def pattern_sha256(n):
    h = hashlib.sha256()
    view = memoryview(PATTERN_BLOCK)
    full, rest = divmod(n, BLOCK_SIZE)
    for _ in range(full):
        h.update(view)
    h.update(view[:rest])
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Raw HTTP client


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid HTTP/1.1 response."""


class IncompleteResponse(Exception):
    """The connection closed before a complete response arrived."""

    def __init__(self, msg, partial=None):
        super().__init__(msg)
        self.partial = partial


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = ""
        self.headers = []  # list of (name, value), as received
        self.raw_head = b""
        self.body = b""
        self.body_length = 0
        self.framing = None  # "none", "length", "chunked", "close"
        self.trailers = []
        self.interim = []  # 1xx responses received before this one

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def connection_tokens(self):
        return [t.strip().lower() for v in self.header_all("connection") for t in v.split(",")]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        body = self.body[:200] if self.body is not None else b""
        return "<Response %s %s %r framing=%s body[:200]=%r>" % (
            self.status, self.reason, self.headers, self.framing, body)


def build_request(method, target, headers=None, body=None, host="localhost", version="HTTP/1.1",
                  content_length=True):
    """Request bytes. headers: list of pairs (sent in order, after Host unless Host is given)."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None and content_length and "content-length" not in names \
            and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body
    return data


def chunked(pieces, trailers=None, ext=None):
    """Chunked-encodes an iterable of byte strings (empty pieces are skipped)."""
    out = bytearray()
    for p in pieces:
        if not p:
            continue
        out += b"%x" % len(p)
        if ext:
            out += b";" + ext
        out += b"\r\n" + p + b"\r\n"
    out += b"0\r\n"
    for k, v in (trailers or []):
        out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
    out += b"\r\n"
    return bytes(out)


class RawConn:
    """One TCP connection to 127.0.0.1:port; exact bytes out, strictly parsed responses in."""

    def __init__(self, port, timeout=5.0, connect_timeout=5.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((LOCALHOST, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.scratch = bytearray(256 * 1024)

    # -- sending

    def send(self, data, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        self.sock.sendall(data)

    def send_stream(self, pieces, timeout=30.0):
        """Sends each piece (bounded per piece by timeout). Returns the byte count."""
        total = 0
        self.sock.settimeout(timeout)
        for p in pieces:
            self.sock.sendall(p)
            total += len(p)
        return total

    def request(self, method, target, headers=None, body=None, host="localhost", timeout=None,
                **kw):
        self.send(build_request(method, target, headers, body, host=host, **kw))
        return self.read_response(timeout=timeout, head=(method == "HEAD"))

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- receiving primitives

    def _recv(self, deadline):
        """Appends what arrives to self.buf; returns bytes read (0 at EOF). Raises TimeoutError."""
        if self.eof:
            return 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from port %d" % self.port)
        self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(self.scratch)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from port %d" % self.port)
        except ConnectionResetError:
            self.eof = True
            return 0
        if n == 0:
            self.eof = True
            return 0
        self.buf += memoryview(self.scratch)[:n]
        return n

    def _deadline(self, timeout):
        return time.monotonic() + (timeout if timeout is not None else self.timeout)

    def _readline(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            if self._recv(deadline) == 0:
                raise IncompleteResponse("connection closed mid-line (have %r)" % bytes(self.buf[:200]))

    def _read_exact(self, n, deadline, sink):
        """Consumes n bytes; sink(memoryview) or accumulate. Returns bytes when no sink."""
        acc = bytearray() if sink is None else None
        while n > 0:
            if not self.buf:
                if self._recv(deadline) == 0:
                    raise IncompleteResponse("connection closed with %d body bytes missing" % n)
            take = min(n, len(self.buf))
            chunk = memoryview(self.buf)[:take]
            if sink is None:
                acc += chunk
            else:
                sink(chunk)
            chunk.release()
            del self.buf[:take]
            n -= take
        return bytes(acc) if acc is not None else None

    def recv_some(self, timeout=None):
        """Whatever arrives next (b'' at EOF). Raises TimeoutError."""
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            return data
        if self._recv(self._deadline(timeout)) == 0:
            return b""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_until_close(self, timeout=None, limit=64 << 20):
        """All bytes until EOF. Raises TimeoutError if the peer keeps the connection open."""
        deadline = self._deadline(timeout)
        while not self.eof:
            if len(self.buf) > limit:
                raise ProtocolError("more than %d bytes before close" % limit)
            self._recv(deadline)
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def wait_closed(self, timeout=3.0):
        """(closed, extra_bytes): whether EOF/RST came within timeout, and any bytes before it."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._recv(deadline)
            except TimeoutError:
                return False, bytes(self.buf)
            if len(self.buf) > (1 << 20):
                return False, bytes(self.buf)
        return True, bytes(self.buf)

    def has_data(self, timeout):
        """True when bytes (or EOF) arrive within timeout."""
        if self.buf or self.eof:
            return True
        try:
            self._recv(time.monotonic() + timeout)
        except TimeoutError:
            return False
        return True

    # -- responses

    def read_head(self, timeout=None):
        """Reads one response head (may be 1xx). Returns a Response without body."""
        deadline = self._deadline(timeout)
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > (1 << 20):
                raise ProtocolError("response head larger than 1 MiB")
            if self._recv(deadline) == 0:
                raise IncompleteResponse(
                    "connection closed before a complete response head (got %r)" % bytes(self.buf[:500]))
        raw = bytes(self.buf[:i + 4])
        del self.buf[:i + 4]
        lines = raw[:-4].split(b"\r\n")
        m = re.match(rb"^HTTP/(\d)\.(\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ProtocolError("bad status line %r" % lines[0])
        r = Response()
        r.raw_head = raw
        r.version = "HTTP/%s.%s" % (m.group(1).decode(), m.group(2).decode())
        r.status = int(m.group(3))
        r.reason = (m.group(4) or b"").decode("latin-1")
        for line in lines[1:]:
            if b"\n" in line or b"\r" in line:
                raise ProtocolError("bare CR/LF in response header %r" % line)
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError("obs-fold in response header %r" % line)
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ProtocolError("bad response header line %r" % line)
            r.headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return r

    def read_response(self, timeout=None, head=False, sink=None, keep_interim=False):
        """Reads one complete response. 1xx responses are collected in .interim (or returned
        themselves when keep_interim). head=True: the request was HEAD (no body). sink: a
        callable receiving body pieces (memoryviews) instead of accumulating .body."""
        deadline = self._deadline(timeout)
        interim = []
        while True:
            r = self.read_head(timeout=max(0.001, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101:
                if keep_interim:
                    return r
                interim.append(r)
                continue
            break
        r.interim = interim
        self._read_body(r, deadline, head, sink)
        return r

    def _read_body(self, r, deadline, head, sink):
        counter = [0]

        def counting(piece):
            counter[0] += len(piece)
            if sink is not None:
                sink(piece)
        te = [t.strip().lower() for v in r.header_all("transfer-encoding") for t in v.split(",")]
        cls = r.header_all("content-length")
        acc = bytearray()
        target = counting if sink is not None else (lambda p: (acc.extend(p), counting(p)))
        if head or r.status in (204, 304) or r.status < 200:
            r.framing = "none"
        elif te:
            if te[-1] != "chunked":
                r.framing = "close"
                self._read_close(deadline, target, r)
            else:
                r.framing = "chunked"
                while True:
                    line = self._readline(deadline)
                    size_text = line.split(b";", 1)[0].strip(b" \t")
                    if not size_text or not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                        raise ProtocolError("bad chunk size line %r" % line)
                    size = int(size_text, 16)
                    if size == 0:
                        while True:
                            t = self._readline(deadline)
                            if t == b"":
                                break
                            k, _, v = t.partition(b":")
                            r.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                        break
                    self._read_exact(size, deadline, target)
                    if self._readline(deadline) != b"":
                        raise ProtocolError("chunk data not followed by CRLF")
        elif cls:
            values = {v.strip() for c in cls for v in c.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError("bad Content-Length %r" % cls)
            r.framing = "length"
            n = int(next(iter(values)))
            try:
                self._read_exact(n, deadline, target)
            except IncompleteResponse as e:
                r.body = bytes(acc)
                r.body_length = counter[0]
                e.partial = r
                raise
        else:
            r.framing = "close"
            self._read_close(deadline, target, r)
        r.body_length = counter[0]
        r.body = bytes(acc) if sink is None else None

    def _read_close(self, deadline, target, r):
        while True:
            if self.buf:
                piece = memoryview(self.buf)
                target(piece)
                piece.release()
                self.buf.clear()
            if self._recv(deadline) == 0:
                if self.buf:
                    continue
                return


# ---------------------------------------------------------------------------------------------
# TOML generation


class Raw(str):
    """A TOML value written verbatim."""


class Table(dict):
    """A dict rendered as a sub-table ([parent.key]) instead of an inline table."""


def toml_value(v):
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, toml_value(x)) for k, x in v.items()) + " }"
    raise TypeError("no TOML for %r" % (v,))


def toml_table(header, d):
    lines = [header]
    subtables = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, Table):
            subtables.append((k, v))
            continue
        lines.append("%s = %s" % (k, toml_value(v)))
    text = "\n".join(lines) + "\n"
    for k, v in subtables:
        name = header.strip("[]")
        text += "\n" + toml_table("[%s.%s]" % (name, k), v)
    return text


def render_config(server, admin, listeners, routes, pools, extra=""):
    parts = [toml_table("[server]", server), toml_table("[admin]", admin)]
    for l in listeners:
        parts.append(toml_table("[[listeners]]", l))
    for p in pools:
        parts.append(toml_table("[[pools]]", p))
    for r in routes:
        parts.append(toml_table("[[routes]]", r))
    if extra:
        parts.append(extra)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Processes


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL, e.g. a
    ctest timeout), so no backend or sluice outlives its test."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Backend:
    """backend.py on one or more ports (actual ports in .ports; .port is the first)."""

    def __init__(self, tmpdir, name="backend", nports=1, args=()):
        self.name = name
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        cmd = [PYTHON, BACKEND] + sum((["--port", "0"] for _ in range(nports)), []) + list(args)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        line = b""
        deadline = time.monotonic() + 10
        # The backend prints one line once all ports listen.
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if sel.select(timeout=max(0.01, deadline - time.monotonic())):
                b = os.read(self.proc.stdout.fileno(), 4096)
                if not b:
                    break
                line += b
        sel.close()
        self._out.write(line)
        self._out.flush()
        if not line.startswith(b"ready"):
            self.stop()
            raise RuntimeError("backend did not start: %r\n%s" % (line, self.stderr()))
        self.ports = [int(x) for x in line.split()[1:]]
        self.port = self.ports[0]
        self.address = "%s:%d" % (LOCALHOST, self.port)

    @property
    def addresses(self):
        return ["%s:%d" % (LOCALHOST, p) for p in self.ports]

    def count(self):
        """The backend's own view (/count), asked directly, not through sluice."""
        c = RawConn(self.port, timeout=5)
        try:
            return c.request("GET", "/count", headers=[("Connection", "close")]).json()
        finally:
            c.close()

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

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
        self._out.close()
        self._err.close()


class RecordedRequest:
    """One request as a strict HTTP/1.1 server parsed it from the raw bytes it received."""

    def __init__(self, method, target, version, headers, body, raw):
        self.method, self.target, self.version = method, target, version
        self.headers = headers  # [(name, value)] in order, as received
        self.body = body
        self.raw = raw          # the request's bytes as they came off the socket

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name, default=None):
        values = self.header_all(name)
        return values[0] if values else default

    def __repr__(self):
        return "RecordedRequest(%r)" % self.raw[:400]


class RecordedConnection:
    def __init__(self):
        self.raw = b""
        self.requests = []
        self.error = None  # why the strict parser gave up, if it did


class RecordingBackend:
    """A backend in the test process that keeps the raw bytes of every connection and reads them
    as a strict HTTP/1.1 server does (Content-Length or chunked framing; any other
    Transfer-Encoding, two lengths, a bare LF are errors): what a backend behind sluice really
    receives, byte for byte. respond(request, conn) returns the bytes to answer each request with
    (None: close the connection); the default is 200 with the target as the body."""

    def __init__(self, respond=None):
        import threading
        self._threading = threading
        self.respond = respond or self.default_response
        self.lock = threading.Lock()
        self.connections = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = "%s:%d" % (LOCALHOST, self.port)
        self._closed = False
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def default_response(req, conn):
        body = req.target.encode("latin-1")
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    @property
    def requests(self):
        with self.lock:
            return [r for c in self.connections for r in c.requests]

    def wait_requests(self, n, timeout=5.0):
        wait_until(lambda: len(self.requests) >= n, timeout, what="%d requests at the backend" % n)
        return self.requests

    def close(self):
        self._closed = True
        for s in [self.sock] + self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self):
        while not self._closed:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            conn = RecordedConnection()
            with self.lock:
                self.connections.append(conn)
                self._socks.append(sock)
            self._threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def _serve(self, sock, conn):
        buf = b""
        try:
            while True:
                req, buf = self._parse(sock, conn, buf)
                if req is None:
                    return
                with self.lock:
                    conn.requests.append(req)
                answer = self.respond(req, conn)
                if answer is None:
                    return
                sock.sendall(answer)
        except (OSError, ValueError) as e:
            conn.error = conn.error or repr(e)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _more(self, sock, conn, buf):
        data = sock.recv(65536)
        if not data:
            raise EOFError
        with self.lock:
            conn.raw += data
        return buf + data

    def _parse(self, sock, conn, buf):
        """The next request from the connection, or (None, buf) when the peer closed."""
        start_raw = len(conn.raw) - len(buf)
        try:
            while b"\r\n\r\n" not in buf:
                buf = self._more(sock, conn, buf)
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            if any(b"\n" in l or b"\r" in l for l in lines):
                raise ValueError("bare CR or LF in the head")
            method, target, version = lines[0].decode("latin-1").split(" ")
            headers = []
            for line in lines[1:]:
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep or not name or name != name.strip():
                    raise ValueError("bad header line %r" % line)
                headers.append((name, value.strip(" \t")))
            te = [v for k, v in headers if k.lower() == "transfer-encoding"]
            cl = [v for k, v in headers if k.lower() == "content-length"]
            body = b""
            if te:
                if te != ["chunked"] or cl:
                    raise ValueError("ambiguous framing: TE %r, CL %r" % (te, cl))
                while True:
                    while b"\r\n" not in buf:
                        buf = self._more(sock, conn, buf)
                    size_line, buf = buf.split(b"\r\n", 1)
                    size = int(size_line.split(b";")[0], 16)
                    while len(buf) < size + 2:
                        buf = self._more(sock, conn, buf)
                    if buf[size:size + 2] != b"\r\n":
                        raise ValueError("chunk without CRLF")
                    body, buf = body + buf[:size], buf[size + 2:]
                    if size == 0:
                        break
            elif cl:
                if len(cl) != 1 or not cl[0].isdigit():
                    raise ValueError("bad Content-Length %r" % cl)
                n = int(cl[0])
                while len(buf) < n:
                    buf = self._more(sock, conn, buf)
                body, buf = buf[:n], buf[n:]
        except EOFError:
            return None, buf
        with self.lock:
            raw = conn.raw[start_raw:len(conn.raw) - len(buf)]
        return RecordedRequest(method, target, version, headers, body, raw), buf


class SluiceStartError(Exception):
    pass


class Sluice:
    """The sluice binary running a generated config.

    spec keys (all optional):
      server:   dict merged over {workers=1, access_log=<tmp>/access.log, shutdown_timeout="5s"}
      admin:    dict merged over {listen=127.0.0.1:<free>}
      listener: dict merged over the "public" listener {name, listen=127.0.0.1:<free>}
      listeners: full list of listener dicts instead (a "listen" key is filled when missing)
      pools:    list of pool dicts (name, backends=[{address=...}], ...)
      routes:   list of route dicts; listener defaults to "public", host "*", path_prefix "/"
      extra:    raw TOML appended
    """

    def __init__(self, tmpdir, spec, name="sluice", env=None, start=True, wait_ready=True):
        self.tmpdir = tmpdir
        self.spec = spec
        self.name = name
        self.env = env
        self.proc = None
        self.stopped_by_test = False
        self.returncode = None
        self.killed = False
        self.config_path = os.path.join(tmpdir, name + ".toml")
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        self.access_log = os.path.join(tmpdir, name + "-access.log")
        if start:
            self.start(wait_ready=wait_ready)

    def _render(self):
        spec = self.spec
        # SLUICE_TEST_WORKERS: run every test with more workers (the ThreadSanitizer run uses 2).
        workers = int(os.environ.get("SLUICE_TEST_WORKERS", "1"))
        server = {"workers": workers, "access_log": self.access_log, "shutdown_timeout": "5s"}
        server.update(spec.get("server", {}))
        if server.get("access_log") not in (None, "stdout", "off"):
            self.access_log = server["access_log"]
        self.admin_port = free_port()
        admin = {"listen": "%s:%d" % (LOCALHOST, self.admin_port)}
        admin.update(spec.get("admin", {}))
        if "listeners" in spec:
            listeners = [dict(l) for l in spec["listeners"]]
        else:
            listeners = [dict({"name": "public"}, **spec.get("listener", {}))]
        self.ports = {}
        for l in listeners:
            if "listen" not in l:
                l["listen"] = "%s:%d" % (LOCALHOST, free_port())
            self.ports[l["name"]] = int(l["listen"].rsplit(":", 1)[1])
        self.port = self.ports.get("public", next(iter(self.ports.values())))
        routes = []
        for r in spec.get("routes", [{"pool": "app"}]):
            rr = {"listener": "public", "host": "*", "path_prefix": "/"}
            rr.update(r)
            routes.append(rr)
        pools = spec.get("pools", [])
        text = render_config(server, admin, listeners, routes, pools, spec.get("extra", ""))
        with open(self.config_path, "w") as f:
            f.write(text)
        return text

    def start(self, wait_ready=True, attempts=3):
        for attempt in range(attempts):
            self._render()
            self._spawn()
            if not wait_ready:
                return
            try:
                self.wait_ready()
                return
            except SluiceStartError:
                err = self.stderr() + self.stdout()
                if attempt + 1 < attempts and re.search(r"(?i)in use|EADDRINUSE", err):
                    self.stop()
                    continue
                raise

    def _spawn(self):
        env = dict(os.environ)
        env.update(self.env or {})
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([sluice_bin(), "--config", self.config_path],
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env, cwd=self.tmpdir,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self.stopped_by_test = False
        self.returncode = None

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise SluiceStartError("sluice exited with %s before listening" % self.proc.returncode)
            for p in list(pending):
                if can_connect(p):
                    pending.discard(p)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise SluiceStartError("sluice not accepting on %s after %.0fs" % (sorted(pending), timeout))
            time.sleep(0.02)
        # (The admin listener is not waited for: tests that use it call wait_admin().)

    def wait_admin(self, timeout=5.0):
        if not wait_until(lambda: can_connect(self.admin_port) or not self.alive(), timeout) \
                or not self.alive():
            raise SluiceStartError("admin listener 127.0.0.1:%d not accepting" % self.admin_port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def connect(self, port=None, timeout=5.0):
        return RawConn(port or self.port, timeout=timeout)

    def request(self, method, target, headers=None, body=None, host="localhost", timeout=5.0, **kw):
        """One request on a fresh connection (closed afterwards)."""
        c = self.connect(timeout=timeout)
        try:
            return c.request(method, target, headers=headers, body=body, host=host, timeout=timeout,
                             **kw)
        finally:
            c.close()

    def url(self, path, listener="public"):
        return "http://%s:%d%s" % (LOCALHOST, self.ports[listener], path)

    def rss(self):
        return proc_status(self.pid)

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.stopped_by_test = True
        return self.returncode

    def stop(self, timeout=10.0):
        """SIGTERM, bounded wait, SIGKILL fallback. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_by_test = True
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()
        return self.returncode

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr(self):
        return self._read(self.stderr_path)

    def stdout(self):
        return self._read(self.stdout_path)

    def config_text(self):
        return self._read(self.config_path)

    def access_log_lines(self):
        text = self._read(self.access_log)
        return [l for l in text.splitlines() if l.strip()]

    def sanitizer_report(self):
        text = self.stderr() + self.stdout()
        m = SANITIZER_RE.search(text)
        return text[max(0, m.start() - 200):m.start() + 4000] if m else None


def run_curl(args, timeout=60, input=None):
    """Runs /usr/bin/curl with proxies disabled; returns CompletedProcess (bytes)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    cmd = [CURL, "--noproxy", "*", "-sS"] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, input=input)


# ---------------------------------------------------------------------------------------------
# unittest base


def _tail(text, n=12000):
    return text if len(text) <= n else "...(%d bytes cut)...\n%s" % (len(text) - n, text[-n:])


class SluiceTestCase(unittest.TestCase):
    """Each test gets a temp dir and tears down every process it started. On failure the
    config, the logs of sluice and of the backends are printed to stderr."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="sluice-it-")
        self.backends = []
        self.sluices = []
        self.conns = []
        # A cleanup, not tearDown: it also runs when a subclass's setUp fails half-way.
        self.addCleanup(self._stop_everything)

    def start_backend(self, nports=1, args=(), name=None):
        b = Backend(self.tmpdir, name=name or "backend%d" % len(self.backends), nports=nports,
                    args=args)
        self.backends.append(b)
        return b

    def start_sluice(self, spec=None, name=None, env=None, wait_ready=True):
        s = Sluice(self.tmpdir, spec or {}, name=name or "sluice%d" % len(self.sluices), env=env,
                   start=False)
        self.sluices.append(s)
        s.start(wait_ready=wait_ready)
        return s

    def start_proxy(self, backend_args=(), pool=None, route=None, server=None, listener=None,
                    extra_routes=(), extra=""):
        """One backend, one pool "app", one catch-all route: the common case."""
        b = self.start_backend(args=backend_args)
        p = {"name": "app", "backends": [{"address": b.address}]}
        p.update(pool or {})
        r = {"pool": "app"}
        r.update(route or {})
        spec = {"pools": [p], "routes": [r] + list(extra_routes), "extra": extra}
        if server:
            spec["server"] = server
        if listener:
            spec["listener"] = listener
        s = self.start_sluice(spec)
        return b, s

    def start_recording_backend(self, respond=None):
        """A RecordingBackend (raw bytes, strict parsing) closed at cleanup."""
        b = RecordingBackend(respond)
        self.addCleanup(b.close)
        return b

    def connect(self, sluice, timeout=5.0, port=None):
        c = sluice.connect(port=port, timeout=timeout)
        self.conns.append(c)
        return c

    def _failed(self):
        """Whether this test has failed so far (called from tearDown, where unittest's own
        outcome flag is reset; the result object already holds the failure)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        for test, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def tearDown(self):
        pass  # processes are stopped by the cleanup registered in setUp

    def _stop_everything(self):
        failed = self._failed()
        for c in self.conns:
            c.close()
        sanitizer = []
        crashed = []
        for s in self.sluices:
            was_alive = s.alive()
            if s.proc is not None and not was_alive and not s.stopped_by_test:
                crashed.append("%s exited on its own with code %s" % (s.name, s.proc.returncode))
            s.stop()
            if s.killed:
                sys.stderr.write("[%s] note: %s needed SIGKILL at teardown\n" % (self.id(), s.name))
            rep = s.sanitizer_report()
            if rep:
                sanitizer.append("%s:\n%s" % (s.name, rep))
        for b in self.backends:
            try:
                b.stop()
            except Exception as e:  # a backend that cannot stop must not hide the rest
                sys.stderr.write("[%s] could not stop %s: %r\n" % (self.id(), b.name, e))
        if failed or sanitizer or crashed:
            self._dump()
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if crashed:
            self.fail("sluice died during the test: " + "; ".join(crashed))
        if sanitizer:
            self.fail("sanitizer report in sluice output:\n" + "\n".join(sanitizer))

    def _dump(self):
        w = sys.stderr.write
        w("\n======== %s: logs (kept in %s) ========\n" % (self.id(), self.tmpdir))
        for s in self.sluices:
            w("---- %s config (%s)\n%s\n" % (s.name, s.config_path, s.config_text()))
            w("---- %s exit code %s%s\n" % (s.name, s.returncode, " (SIGKILLed)" if s.killed else ""))
            w("---- %s stderr\n%s\n" % (s.name, _tail(s.stderr())))
            w("---- %s stdout\n%s\n" % (s.name, _tail(s.stdout())))
            w("---- %s access log\n%s\n" % (s.name, _tail("\n".join(s.access_log_lines()), 4000)))
        for b in self.backends:
            err = b.stderr()
            if err.strip():
                w("---- %s stderr\n%s\n" % (b.name, _tail(err)))
        w("======== end of logs ========\n")

    # -- assertions

    def assertClosed(self, conn, timeout=3.0, msg=None):
        closed, extra = conn.wait_closed(timeout)
        if not closed:
            self.fail((msg + ": " if msg else "") +
                      "connection still open after %.1fs (received %r)" % (timeout, extra[:300]))
        return extra


def main():
    unittest.main(verbosity=2)
