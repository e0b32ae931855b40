"""The small correctness items an operator trial found, through the real binary: the sticky
cookie's Secure/SameSite/HttpOnly, redirect_to_https keeping a non-443 port, Unix-socket
backends, per-route response_timeout and idle_timeout, per-route header rules, process metrics
and sluice_build_info, certificate expiry as a metric, and certificates watched like the config
(a renewal goes live without a signal).

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_operator_http.py -v
"""

import http.server
import json
import os
import shutil
import socketserver
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import RawConn, SluiceTestCase, Table, build_request, wait_until  # noqa: E402
import tlsutil  # noqa: E402
from tlsutil import TlsConn, client_context  # noqa: E402

PKI = None


def setUpModule():
    global PKI
    pki = tlsutil.Pki()
    root = pki.root("root", "operator test CA")
    a = pki.leaf("a", root, "/CN=a.test", ["DNS:a.test", "IP:127.0.0.1"], days=30)
    a2 = pki.leaf("a2", root, "/CN=a.test", ["DNS:a.test", "IP:127.0.0.1"], days=90)
    PKI = {"pki": pki, "ca": root[0], "a": a, "a2": a2}


def tearDownModule():
    if PKI is not None:
        PKI["pki"].remove()


def metrics_text(s):
    c = RawConn(s.admin_port)
    try:
        return c.request("GET", "/metrics", headers=[("Connection", "close")]).body.decode()
    finally:
        c.close()


def echoed(r):
    out = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class UnixBackend(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"path": self.path, "via": "unix socket"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class OperatorHttp(SluiceTestCase):
    def tls_sluice(self, pool=None, listeners=None, routes=None):
        b = self.start_backend()
        p = {"name": "app", "backends": [{"address": b.address}]}
        p.update(pool or {})
        ls = listeners or [{"name": "public", "tls": Table(cert=PKI["a"][0], key=PKI["a"][1])}]
        s = self.start_sluice({"listeners": ls, "pools": [p],
                               "routes": routes or [{"pool": "app"}]})
        s.wait_admin()
        return b, s

    def tls_conn(self, s, port=None):
        c = TlsConn(port or s.port, client_context(PKI["ca"]))
        self.conns.append(c)
        return c

    def test_sticky_cookie_attributes(self):
        b, s = self.tls_sluice(
            pool={"sticky_cookie": "srv"},
            listeners=[{"name": "public", "tls": Table(cert=PKI["a"][0], key=PKI["a"][1])},
                       {"name": "plain"}],
            routes=[{"pool": "app"}, {"pool": "app", "listener": "plain"}])
        cookie = self.tls_conn(s).request("GET", "/x", host="a.test").header("Set-Cookie")
        self.assertRegex(cookie, r"^srv=[0-9a-f]{16}; Path=/; HttpOnly; SameSite=Lax; Secure$")
        plain = RawConn(s.ports["plain"])
        self.conns.append(plain)
        self.assertNotIn("Secure", plain.request("GET", "/x").header("Set-Cookie"))
        # Configured: Strict, no HttpOnly, Secure even in plain (a TLS terminator in front).
        s.stop()
        s.spec["pools"][0].update({"sticky_cookie_samesite": "Strict",
                                   "sticky_cookie_httponly": False,
                                   "sticky_cookie_secure": True})
        s.start()
        plain = RawConn(s.ports["plain"])
        self.conns.append(plain)
        self.assertRegex(plain.request("GET", "/x").header("Set-Cookie"),
                         r"^srv=[0-9a-f]{16}; Path=/; SameSite=Strict; Secure$")

    def test_redirect_keeps_the_https_port(self):
        b, s = self.tls_sluice(
            listeners=[{"name": "public", "tls": Table(cert=PKI["a"][0], key=PKI["a"][1])},
                       {"name": "plain", "redirect_to_https": True}],
            routes=[{"pool": "app"}, {"pool": "app", "listener": "plain"}])
        r = RawConn(s.ports["plain"]).request("GET", "/p?q=1", host="example.com:8080")
        self.assertEqual(r.status, 308)
        self.assertEqual(r.header("Location"), "https://example.com:%d/p?q=1" % s.port)

    def test_unix_socket_backend(self):
        os.chmod(self.tmpdir, 0o755)
        path = os.path.join(self.tmpdir, "app.sock")
        server = UnixBackend(path, Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        s = self.start_sluice({"pools": [{"name": "app",
                                          "backends": [{"address": "unix:" + path}],
                                          "health": Table(path="/health", interval="200ms")}]})
        r = s.request("GET", "/over/unix")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"path": "/over/unix", "via": "unix socket"})
        s.wait_admin()
        c = RawConn(s.admin_port)
        status = json.loads(c.request("GET", "/api/status").body)
        c.close()
        self.assertEqual(status["pools"][0]["backends"][0]["state"], "healthy")

    def test_route_timeouts_override(self):
        b = self.start_backend()
        s = self.start_sluice({
            "listener": {"idle_timeout": "30s"},
            "pools": [{"name": "app", "response_timeout": "30s",
                       "backends": [{"address": b.address}]}],
            "routes": [{"pool": "app", "host": "quick.test", "response_timeout": "300ms",
                        "idle_timeout": "400ms"},
                       {"pool": "app"}]})
        t0 = time.monotonic()
        r = s.request("GET", "/slow?delay=2", host="quick.test", timeout=10)
        self.assertEqual(r.status, 504, r)
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(s.request("GET", "/slow?delay=0.5", timeout=10).status, 200)
        # A body that stalls on the route: 408 after its idle_timeout, not the listener's.
        c = self.connect(s, timeout=10)
        c.send(build_request("POST", "/upload", host="quick.test",
                             headers=[("Content-Length", "100")]) + b"x" * 10)
        t0 = time.monotonic()
        r = c.read_response(timeout=10)
        self.assertEqual(r.status, 408, r)
        self.assertLess(time.monotonic() - t0, 2)

    def test_route_header_rules(self):
        b = self.start_backend()
        extra = """
[routes.request_headers]
set = { "X-Env" = "prod" }
add = { "X-Added" = "1" }
remove = ["X-Debug"]

[routes.response_headers]
set = { "X-Frame-Options" = "DENY" }
remove = ["Content-Type"]
"""
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": b.address}]}],
                               "routes": [],
                               "extra": '[[routes]]\nlistener = "public"\npool = "app"\n' + extra})
        r = s.request("GET", "/echo", headers=[("X-Env", "dev"), ("X-Debug", "1"),
                                               ("X-Added", "0")])
        self.assertEqual(r.status, 200, r)
        h = echoed(r)
        self.assertEqual(h["x-env"], ["prod"])
        self.assertNotIn("x-debug", h)
        self.assertEqual(h["x-added"], ["0", "1"])
        self.assertEqual(r.header("X-Frame-Options"), "DENY")
        self.assertIsNone(r.header("Content-Type"))

    def test_process_and_build_metrics(self):
        b, s = self.tls_sluice()
        text = metrics_text(s)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_start_time_seconds",
                     "process_open_fds", "process_max_fds"):
            line = [l for l in text.splitlines() if l.startswith(name + " ")]
            self.assertTrue(line, name)
            self.assertGreater(float(line[0].split()[1]), 0, line)
        start = [l for l in text.splitlines() if l.startswith("process_start_time_seconds ")]
        self.assertLess(abs(float(start[0].split()[1]) - time.time()), 120)
        self.assertRegex(text, r'\nsluice_build_info\{version="\d+\.\d+\.\d+",commit="[^"]+"\} 1\n')
        m = [l for l in text.splitlines()
             if l.startswith('sluice_tls_certificate_expiry_seconds{listener="public",name="a.test"}')]
        self.assertTrue(m, text)
        left = float(m[0].split()[1])
        self.assertLess(abs(left - 30 * 86400), 2 * 86400, m)

    def test_renewed_certificate_goes_live_without_a_signal(self):
        cert = os.path.join(self.tmpdir, "live", "fullchain.pem")
        key = os.path.join(self.tmpdir, "live", "privkey.pem")
        os.makedirs(os.path.dirname(cert))
        shutil.copy(PKI["a"][0], cert)
        shutil.copy(PKI["a"][1], key)
        b, s = self.tls_sluice(listeners=[{"name": "public", "tls": Table(cert=cert, key=key)}])
        first = self.tls_conn(s).peer_der()
        self.assertEqual(first, PKI["pki"].der(PKI["a"][0]))
        # As certbot does it: new files beside, then renamed into place.
        shutil.copy(PKI["a2"][1], key + ".new")
        shutil.copy(PKI["a2"][0], cert + ".new")
        os.rename(key + ".new", key)
        os.rename(cert + ".new", cert)
        renewed = PKI["pki"].der(PKI["a2"][0])
        self.assertTrue(wait_until(lambda: self.tls_conn(s).peer_der() == renewed, 5),
                        "the renewed certificate is not served")
        self.assertIn("a config or certificate file changed", s.stderr())
        m = [l for l in metrics_text(s).splitlines()
             if l.startswith("sluice_tls_certificate_expiry_seconds")]
        self.assertLess(abs(float(m[0].split()[1]) - 90 * 86400), 2 * 86400, m)


if __name__ == "__main__":
    unittest.main(verbosity=2)
