"""The entry point of sluice's integration tests: SluiceTestCase, and everything the tests use
from the library, re-exported.

The library (each module documents itself):
  net.py      127.0.0.1 ports, connection counts, bounded waits
  http1.py    HTTP/1.1 on the wire: the strict head parser, body framing, RawConn (the client)
  config.py   TOML rendering and the defaults of a test config (build(spec), config())
  procs.py    child processes (Proc): backend.py, sluice, one-shot tools, Chromium
  servers.py  in-process servers on one accept loop: RecordingBackend, StatusServer, PageServer
  admin.py    the admin API client and the /metrics parser
  load.py     HttpLoad, the HTTP load generator
  wsutil.py   WebSocket framing, clients, ws_backend.py, fake backends, fleets
  tlsutil.py  certificates, openssl s_client, TLS clients and a TLS backend

Typical test:

    class T(SluiceTestCase):
        def test_x(self):
            backend, sluice = self.start_proxy(listener={"header_timeout": "1s"})
            c = self.connect(sluice)                  # RawConn, closed at cleanup
            r = c.request("GET", "/echo/x")           # Response: .status .headers .body .json()
            c.send(b"raw bytes"); r = c.read_response()
            backend.count()                           # what the backend saw (asked directly)

Each test gets a temp dir; every process, server and connection it starts through the
SluiceTestCase methods is stopped at cleanup, and on failure the config and every log are
printed. Environment: SLUICE_BIN (the binary), SLUICE_SOURCE_DIR. Every wait is bounded in time.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import backend as _backend  # noqa: E402  (the /download pattern)
from admin import Admin, Metrics  # noqa: E402,F401
from config import (Raw, Table, config, pool, position, render_config, route,  # noqa: E402,F401
                    toml_table, write_file, ws_route)
from http1 import (Incomplete, ProtocolError, RawConn, Response, build_request,  # noqa: E402,F401
                   chunked)
from load import HttpLoad  # noqa: E402,F401
from net import (LOCALHOST, addr, can_connect, closed_port, free_port,  # noqa: E402,F401
                 tcp_established, wait_until)
from procs import (PYTHON, SANITIZER_RE, SOURCE_DIR, Backend, Sluice,  # noqa: E402,F401
                   binary_has_asan, proc_status, raise_nofile, rss_env, run_chromium, run_curl,
                   run_sluice, run_tool, sluice_bin)
from servers import Blackhole, PageServer, RecordingBackend, StatusServer  # noqa: E402,F401

IncompleteResponse = Incomplete  # the name the HTTP tests use
PATTERN_BLOCK = _backend.PATTERN
BLOCK_SIZE = _backend.BLOCK_SIZE


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


def vm_rss_kib(pid):
    return proc_status(pid)["VmRSS"]


def _ws():
    """wsutil, imported on first use (it pulls in asyncio, which most tests do not need)."""
    import wsutil
    return wsutil


def _tail(text, n=12000):
    return text if len(text) <= n else "...(%d bytes cut)...\n%s" % (len(text) - n, text[-n:])


class SluiceTestCase(unittest.TestCase):
    """Each test gets a temp dir and tears down every process it started. On failure the
    config, the logs of sluice and of the backends are printed to stderr."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="sluice-it-")
        self.backends = []  # processes and servers: anything with name, stop() and stderr()
        self.sluices = []
        self.conns = []
        # A cleanup, not tearDown: it also runs when a subclass's setUp fails half-way.
        self.addCleanup(self._stop_everything)

    def _backend(self, b):
        self.backends.append(b)
        return b

    # -- peers

    def start_backend(self, nports=1, args=(), name=None, ports=None):
        """backend.py (procs.Backend) on nports free ports, or on the given ports."""
        return self._backend(Backend(self.tmpdir, name=name or "backend%d" % len(self.backends),
                                     nports=nports, args=args, ports=ports))

    def start_ws_backend(self, name=None):
        return self._backend(_ws().WsBackend(self.tmpdir,
                                              name=name or "wsbackend%d" % len(self.backends)))

    def start_fake_backend(self, behaviour):
        return self._backend(_ws().FakeBackend(behaviour,
                                                name="fakebackend%d" % len(self.backends)))

    def start_recording_backend(self, respond=None):
        """A RecordingBackend (raw bytes, strict parsing)."""
        return self._backend(RecordingBackend(respond))

    def start_status_server(self):
        return self._backend(StatusServer())

    # -- sluice

    def start_sluice(self, spec=None, name=None, env=None, wait_ready=True):
        """sluice running the config of a spec (config.build), on fresh ports."""
        s = Sluice(self.tmpdir, spec or {}, name=name or "sluice%d" % len(self.sluices), env=env)
        self.sluices.append(s)
        s.start(wait_ready=wait_ready)
        return s

    def start_config_sluice(self, text, admin_port, ports, name=None, env=None):
        """sluice running config text whose ports the test chose (admin_port, {listener name:
        port}), so that the test can rewrite and reload it; waits for every listener, the admin
        one included."""
        s = Sluice(self.tmpdir, name=name or "sluice%d" % len(self.sluices), env=env, text=text,
                   admin_port=admin_port, ports=ports)
        self.sluices.append(s)
        s.start()
        s.wait_admin()
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

    # -- clients

    def connect(self, sluice, timeout=5.0, port=None):
        c = sluice.connect(port=port, timeout=timeout)
        self.conns.append(c)
        return c

    def ws_client(self, sluice, path="/ws", headers=(), **kw):
        c = _ws().WsClient(sluice.port, path=path, headers=headers, **kw)
        self.conns.append(c)
        return c

    def run_chromium(self, url, wsb, flags=(), timeout=45.0):
        """Loads url in headless Chromium until ws_backend `wsb` records the page's report (the
        page's GET /report); returns the report text. Fails the test with the browser's log when
        none comes within timeout."""
        def reports():
            return [e["text"] for e in wsb.events() if e["ev"] == "report"]
        got, code, log = run_chromium(self.tmpdir, url, flags, reports, timeout)
        if got:
            return got[0]
        self.fail("no report from the page within %.0fs (chromium exit %s); events: %r\n"
                  "chromium log tail:\n%s" % (timeout, code, wsb.events()[-10:], log[-3000:]))

    # -- teardown

    def _failed(self):
        """Whether this test has failed so far (called from a cleanup, where unittest's own
        outcome flag is reset; the result object already holds the failure)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        for test, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def _stop_everything(self):
        failed = self._failed()
        for c in self.conns:
            c.close()
        sanitizer = []
        crashed = []
        for s in self.sluices:
            if s.proc is not None and not s.alive() and not s.stopped_by_test:
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

    def assertUpgraded(self, c, msg=None):
        if c.status != 101:
            self.fail((msg + ": " if msg else "") + "handshake answered %s %r" % (c.status, c.headers))
        self.assertEqual(c.header("Sec-WebSocket-Accept"), _ws().accept_key(c.key))

    def assertEchoes(self, c, text, msg=None):
        """A text message on WebSocket c comes back unchanged."""
        c.send_text(text)
        op, payload = c.recv_message(timeout=5)
        self.assertEqual((op, payload), (_ws().TEXT, text.encode()), msg)



def main():
    unittest.main(verbosity=2)
