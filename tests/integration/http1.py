"""HTTP/1.1 on the wire, for both ends of a test connection (clients, in-process servers and
backend.py alike).

- Stream: a socket (plain or TLS) with a read buffer; every read has a deadline (None blocks,
  for server threads that end with their peer), bodies pass through in constant memory;
- parse_request_head() / parse_response_head(): the one head parser, strict (CRLF only, no
  obs-fold, nothing around a field name); request_framing() / response_framing(): the one
  reading of Content-Length and Transfer-Encoding (ambiguity is an error); read_body();
  read_request() for servers;
- Request, Response: parsed messages; build_request(), chunked(): exact bytes to send;
- RawConn: a client connection to 127.0.0.1 (optionally TLS) that sends exact bytes and reads
  strictly parsed responses.

Peers that break the rules raise ProtocolError (a ValueError); a connection that ends in the
middle of a message raises Incomplete; a deadline that passes raises TimeoutError.
"""

import json
import re
import socket
import sys
import time
import urllib.parse

from net import LOCALHOST

MAX_HEAD = 1 << 20
SCRATCH = 256 * 1024


class ProtocolError(ValueError):
    """The peer sent bytes that are not valid HTTP/1.1."""


class Incomplete(Exception):
    """The connection ended before a complete message arrived (.partial: what was read of it,
    when known)."""

    def __init__(self, msg, partial=None):
        super().__init__(msg)
        self.partial = partial


# ---------------------------------------------------------------------------------------------
# Messages


class Message:
    """A parsed head. .headers: (name, value) pairs in order, as received."""

    headers = ()
    body = b""

    def header(self, name, default=None):
        values = self.header_all(name)
        return values[0] if values else default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def connection_tokens(self):
        return [t.strip().lower() for v in self.header_all("connection") for t in v.split(",")]

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Response(Message):
    def __init__(self, version, status, reason, headers, raw_head):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.body_length = 0
        self.framing = None  # "none", "length", "chunked", "close"
        self.trailers = []
        self.interim = []  # 1xx responses received before this one

    def __repr__(self):
        body = self.body[:200] if self.body is not None else b""
        return "<Response %s %s %r framing=%s body[:200]=%r>" % (
            self.status, self.reason, self.headers, self.framing, body)


class Request(Message):
    def __init__(self, method, target, version, headers, raw_head):
        self.method, self.target, self.version = method, target, version
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""  # None when the body went to a sink
        self.body_length = 0
        self.trailers = []
        self.raw = raw_head  # the request's bytes as they came off the socket, when recorded
        parsed = urllib.parse.urlsplit(target)
        self.path = parsed.path
        self.query = urllib.parse.parse_qs(parsed.query)

    @property
    def request_line(self):
        return "%s %s %s" % (self.method, self.target, self.version)

    def q(self, key, default=None):
        v = self.query.get(key)
        return v[0] if v else default

    def keep_alive(self):
        tokens = self.connection_tokens()
        if "close" in tokens:
            return False
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return True

    def __repr__(self):
        return "<Request %r>" % self.raw[:400]


# ---------------------------------------------------------------------------------------------
# Parsing (strict)


def _split_head(raw):
    """(start line, [(name, value)]) of a head (with or without its final CRLF CRLF)."""
    if raw.endswith(b"\r\n\r\n"):
        raw = raw[:-4]
    lines = raw.split(b"\r\n")
    headers = []
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise ProtocolError("bare CR or LF in the head: %r" % line)
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obs-fold in the head: %r" % line)
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("bad header line %r" % line)
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return lines[0], headers


def parse_response_head(raw):
    line, headers = _split_head(raw)
    m = re.fullmatch(rb"HTTP/(\d)\.(\d) (\d{3})(?: (.*))?", line)
    if not m:
        raise ProtocolError("bad status line %r" % line)
    return Response("HTTP/%s.%s" % (m.group(1).decode(), m.group(2).decode()), int(m.group(3)),
                    (m.group(4) or b"").decode("latin-1"), headers, raw)


def parse_request_head(raw):
    line, headers = _split_head(raw)
    m = re.fullmatch(rb"(\S+) (\S+) (HTTP/\d\.\d)", line)
    if not m:
        raise ProtocolError("bad request line %r" % line)
    method, target, version = (g.decode("latin-1") for g in m.groups())
    return Request(method, target, version, headers, raw)


def _content_length(values):
    if len(values) != 1 or not re.fullmatch(r"[0-9]+", values[0]):
        raise ProtocolError("bad Content-Length %r" % values)
    return int(values[0])


def request_framing(req):
    """("chunked", None) or ("length", N) for a request: one Transfer-Encoding field that is
    exactly chunked, or one Content-Length of digits, never both (else ProtocolError)."""
    te = req.header_all("transfer-encoding")
    cl = req.header_all("content-length")
    if te:
        if cl or len(te) != 1 or te[0].lower() != "chunked":
            raise ProtocolError("ambiguous framing: Transfer-Encoding %r, Content-Length %r"
                                % (te, cl))
        return "chunked", None
    return "length", _content_length(cl) if cl else 0


def response_framing(resp, head_request=False):
    """(framing, length) of a response body: "none" (HEAD, 1xx, 204, 304), "chunked",
    "length" or "close" (no length, or a last transfer coding other than chunked)."""
    if head_request or resp.status in (204, 304) or resp.status < 200:
        return "none", 0
    te = [t.strip().lower() for v in resp.header_all("transfer-encoding") for t in v.split(",")]
    cl = resp.header_all("content-length")
    if te:
        if cl:
            raise ProtocolError("both Transfer-Encoding %r and Content-Length %r" % (te, cl))
        return ("chunked", None) if te[-1] == "chunked" else ("close", None)
    if cl:
        return "length", _content_length(cl)
    return "close", None


def read_body(stream, framing, length, deadline, sink):
    """Reads a body framed as response_framing()/request_framing() said, passing its pieces
    (memoryviews, valid only during the call) to sink. Returns (byte count, trailers)."""
    count = 0
    trailers = []

    def deliver(piece):
        nonlocal count
        count += len(piece)
        sink(piece)
    if framing == "length":
        stream.read_exact(length, deadline, deliver)
    elif framing == "close":
        stream.read_to_close(deadline, deliver)
    elif framing == "chunked":
        while True:
            line = stream.readline(deadline)
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                raise ProtocolError("bad chunk size line %r" % line)
            size = int(size_text, 16)
            if size == 0:
                lines = []
                while True:
                    t = stream.readline(deadline)
                    if t == b"":
                        break
                    lines.append(t)
                if lines:
                    trailers = _split_head(b"\r\n".join([b""] + lines))[1]
                break
            stream.read_exact(size, deadline, deliver)
            if stream.readline(deadline) != b"":
                raise ProtocolError("chunk data not followed by CRLF")
    return count, trailers


def read_request(stream, deadline=None):
    """The next request on a server-side stream, body included, or None when the peer closed
    before sending a byte of it. With stream.record, .raw holds its bytes as received."""
    start = stream.consumed()
    raw = stream.read_head_bytes(deadline)
    if raw is None:
        return None
    req = parse_request_head(raw)
    framing, length = request_framing(req)
    body = bytearray()
    req.body_length, req.trailers = read_body(stream, framing, length, deadline, body.extend)
    req.body = bytes(body)
    if stream.record is not None:
        req.raw = bytes(stream.record[start:stream.consumed()])
    return req


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


# ---------------------------------------------------------------------------------------------
# Streams


class Stream:
    """A connected socket (plain or TLS) with a read buffer .buf. Reads take an absolute
    monotonic deadline (None: block); .eof is set at EOF or a reset (and .ragged_eof when a TLS
    peer ended without close_notify). record: a bytearray that receives a copy of every byte
    read. timeout: the default bound of the convenience methods that take a timeout."""

    def __init__(self, sock, buf=b"", record=None, timeout=5.0):
        self.sock = sock
        self.buf = bytearray(buf)
        self.record = record
        self.timeout = timeout
        self.eof = False
        self.ragged_eof = False
        self._scratch = None

    def _deadline(self, timeout):
        return time.monotonic() + (timeout if timeout is not None else self.timeout)

    def consumed(self):
        """With record: how many recorded bytes were taken out of the buffer."""
        return len(self.record) - len(self.buf) if self.record is not None else 0

    def _recv_into(self, view, deadline):
        """One recv into view: the byte count, 0 at EOF. Raises TimeoutError."""
        if self.eof:
            return 0
        if deadline is None:
            self.sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for data (have %r)" % bytes(self.buf[:200]))
            self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(view)
        except TimeoutError:
            raise TimeoutError("timed out waiting for data (have %r)" % bytes(self.buf[:200]))
        except OSError as e:
            # A reset, or a TLS error (SSLEOFError: a FIN without close_notify). ssl is not
            # imported for plain connections: a TLS socket exists only once it was.
            ssl = sys.modules.get("ssl")
            if not isinstance(e, ConnectionResetError) and not (ssl and isinstance(e, ssl.SSLError)):
                raise
            self.eof = self.ragged_eof = True
            return 0
        if n == 0:
            self.eof = True
            return 0
        if self.record is not None:
            self.record += view[:n]
        return n

    def _view(self, n=SCRATCH):
        if self._scratch is None:
            self._scratch = bytearray(SCRATCH)
        return memoryview(self._scratch)[:min(n, SCRATCH)]

    def fill(self, deadline):
        """Appends what arrives next to .buf; returns the byte count (0 at EOF)."""
        view = self._view()
        n = self._recv_into(view, deadline)
        if n:
            self.buf += view[:n]
        return n

    def read_head_bytes(self, deadline, limit=MAX_HEAD):
        """The bytes up to and including the blank line; None if the peer closed before a byte
        of it. Raises Incomplete at EOF in the middle, ProtocolError beyond limit."""
        searched = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", max(0, searched - 3))
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > limit:
                raise ProtocolError("head larger than %d bytes" % limit)
            searched = len(self.buf)
            if self.fill(deadline) == 0:
                if not self.buf:
                    return None
                raise Incomplete("connection closed in the middle of a head (have %r)"
                                 % bytes(self.buf[:500]))

    def readline(self, deadline, limit=MAX_HEAD):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            if self.fill(deadline) == 0:
                raise Incomplete("connection closed mid-line (have %r)" % bytes(self.buf[:200]))

    def read_exact(self, n, deadline, sink=None):
        """Consumes exactly n bytes: passed to sink(memoryview), or returned without one."""
        out = bytearray() if sink is None else None
        deliver = out.extend if sink is None else sink
        while n > 0:
            if self.buf:
                take = min(n, len(self.buf))
                piece = memoryview(self.buf)[:take]
                deliver(piece)
                piece.release()
                del self.buf[:take]
                n -= take
                continue
            view = self._view(n)
            got = self._recv_into(view, deadline)
            if got == 0:
                raise Incomplete("connection closed with %d body bytes missing" % n)
            deliver(view[:got])
            n -= got
        return bytes(out) if out is not None else None

    def read_to_close(self, deadline, sink):
        if self.buf:
            piece = memoryview(self.buf)
            sink(piece)
            piece.release()
            self.buf.clear()
        view = self._view()
        while True:
            got = self._recv_into(view, deadline)
            if got == 0:
                return
            sink(view[:got])

    # -- conveniences for tests (bounded by timeout, default .timeout)

    def send(self, data, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        self.sock.sendall(data)

    def recv_some(self, timeout=None):
        """Whatever arrives next (b'' at EOF). Raises TimeoutError."""
        if not self.buf:
            self.fill(self._deadline(timeout))
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def wait_closed(self, timeout=3.0, discard=False):
        """(closed, bytes before the end): whether EOF or a reset came within timeout. Gives up
        after 1 MiB unless discard, which drops what arrives meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if discard:
                self.buf.clear()
            elif len(self.buf) > (1 << 20):
                return False, bytes(self.buf)
            try:
                self.fill(deadline)
            except TimeoutError:
                return False, bytes(self.buf)
        return True, bytes(self.buf)

    def has_data(self, timeout):
        """True when bytes (or EOF) arrive within timeout."""
        if self.buf or self.eof:
            return True
        try:
            self.fill(time.monotonic() + timeout)
        except TimeoutError:
            return False
        return True

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


# ---------------------------------------------------------------------------------------------
# The client


class RawConn(Stream):
    """One TCP connection to 127.0.0.1:port (TLS when ssl_context is given): exact bytes out,
    strictly parsed responses in. timeout bounds every read that is not given its own."""

    def __init__(self, port, timeout=5.0, connect_timeout=5.0, ssl_context=None,
                 server_hostname=None, session=None):
        sock = socket.create_connection((LOCALHOST, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname,
                                               session=session, suppress_ragged_eofs=False)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(timeout)
        super().__init__(sock, timeout=timeout)
        self.port = port

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

    def read_until_close(self, timeout=None, limit=64 << 20):
        """All bytes until EOF. Raises TimeoutError if the peer keeps the connection open."""
        out = bytearray()

        def keep(piece):
            if len(out) + len(piece) > limit:
                raise ProtocolError("more than %d bytes before close" % limit)
            out.extend(piece)
        self.read_to_close(self._deadline(timeout), keep)
        return bytes(out)

    def read_head(self, timeout=None, deadline=None):
        """One response head (may be 1xx), as a Response without body."""
        raw = self.read_head_bytes(deadline if deadline is not None else self._deadline(timeout))
        if raw is None:
            raise Incomplete("connection closed before a response head (port %d)" % self.port)
        return parse_response_head(raw)

    def read_response(self, timeout=None, head=False, sink=None, keep_interim=False):
        """Reads one complete response. 1xx responses are collected in .interim (or returned
        themselves when keep_interim). head=True: the request was HEAD (no body). sink: a
        callable receiving body pieces (memoryviews) instead of accumulating .body."""
        deadline = self._deadline(timeout)
        interim = []
        while True:
            r = self.read_head(deadline=deadline)
            if 100 <= r.status < 200 and r.status != 101:
                if keep_interim:
                    return r
                interim.append(r)
                continue
            break
        r.interim = interim
        r.framing, length = response_framing(r, head)
        body = bytearray() if sink is None else None
        try:
            r.body_length, r.trailers = read_body(self, r.framing, length, deadline,
                                                  body.extend if sink is None else sink)
        except Incomplete as e:
            r.body = bytes(body) if body is not None else None
            r.body_length = len(r.body or b"")
            e.partial = r
            raise
        r.body = bytes(body) if body is not None else None
        return r
