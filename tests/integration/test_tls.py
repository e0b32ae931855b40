#!/usr/bin/python3
"""TLS termination and TLS toward backends, with real peers.

Downstream: curl and `openssl s_client` (SNI selection among an ECDSA and an RSA certificate,
a served intermediate chain, ALPN, TLS 1.2 and 1.3, TLS 1.0/1.1 and weak suites refused,
renegotiation refused, resumption by ticket and by session cache reported as "Reused", client
certificates required/optional, accepted and rejected, with the subject passed to the backend and
a client-sent X-Client-Cert-Subject removed), close_notify both ways, HSTS, X-Forwarded-Proto,
redirect_to_https on a plain listener, Python `websockets` over wss://, headless Chromium loading
an https:// page that opens wss:// (the test CA's leaf allowed by its SPKI hash). Bad input on a
TLS port (plain HTTP, garbage, truncated and stalled handshakes, a TLS 1.0-only hello, resets)
is closed cleanly while a keep-alive TLS client keeps working, and each failure is counted in
sluice_tls_handshakes_total{listener,result}. Certificate errors (missing file, mismatched key,
expired, not yet valid) are reported by `--check` and by a reload as FILE:LINE:COLUMN naming the
file; a reload picks up a replaced certificate file without a restart.

Upstream: a Python ssl backend verified against the test CA (200), with a name or CA that does
not verify (502), verify = false (200), mTLS (the backend sees sluice's client certificate), and
TLS sessions resumed across upstream connections (TLS 1.2 and 1.3 backends).

Certificates are generated per run with the openssl CLI into a temp dir (tlsutil.Pki); no key is
committed. Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_tls.py -v
"""

import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (LOCALHOST, Admin, HttpLoad, PageServer, RawConn, SluiceTestCase,  # noqa: E402
                     Table, build_request, config, free_port, pool, route, run_curl, run_sluice,
                     wait_until, ws_route)
import http1  # noqa: E402
import tlsutil  # noqa: E402
from tlsutil import TlsBackend, TlsConn, client_context, s_client, server_context  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PKI = None  # the module's certificates (see setUpModule)


class Certs:
    """Every certificate the tests use, made once per run."""

    def __init__(self):
        p = self.pki = tlsutil.Pki()
        self.root = p.root("root", "sluice test root CA")
        self.inter = p.intermediate("inter", "sluice test intermediate CA", self.root)
        # a.test: ECDSA P-256, signed by the intermediate; the .crt holds leaf + intermediate.
        self.a = p.leaf("a", self.inter, "/CN=a.test",
                        ["DNS:a.test", "DNS:localhost", "IP:127.0.0.1"], chain=[self.inter[0]])
        # The same names with a new key: a renewed certificate for the reload test.
        self.a2 = p.leaf("a2", self.inter, "/CN=a.test",
                         ["DNS:a.test", "DNS:localhost", "IP:127.0.0.1"], chain=[self.inter[0]])
        # b.test and *.wild.test: RSA 2048, signed by the root.
        self.b = p.leaf("b", self.root, "/CN=b.test", ["DNS:b.test", "DNS:*.wild.test"],
                        kind="rsa")
        # Client certificates.
        self.client_ca = p.root("clientca", "sluice test client CA")
        self.alice = p.leaf("alice", self.client_ca, "/O=sluice tests/CN=alice", client=True)
        self.rogue_ca = p.root("rogueca", "rogue CA")
        self.mallory = p.leaf("mallory", self.rogue_ca, "/CN=mallory", client=True)
        # Backends (upstream TLS).
        self.backend = p.leaf("backend", self.root, "/CN=backend.test",
                              ["DNS:backend.test", "IP:127.0.0.1"])
        self.rogue_backend = p.leaf("roguebackend", self.rogue_ca, "/CN=backend.test",
                                    ["DNS:backend.test", "IP:127.0.0.1"])
        self.upstream_client = p.leaf("upstreamclient", self.client_ca, "/CN=sluice-upstream",
                                      client=True)
        # Out of their validity period (openssl ca -startdate/-enddate).
        self.expired = p.dated_leaf("expired", self.root, "/CN=a.test", ["DNS:a.test"],
                                    "20200101000000Z", "20200102000000Z")
        self.future = p.dated_leaf("future", self.root, "/CN=a.test", ["DNS:a.test"],
                                   "20990101000000Z", "20991231000000Z")

    @property
    def ca(self):
        return self.root[0]


def setUpModule():
    global PKI
    t0 = time.monotonic()
    PKI = Certs()
    sys.stderr.write("[test_tls] certificates made in %.1fs\n" % (time.monotonic() - t0))


def tearDownModule():
    if PKI is not None:
        PKI.pki.remove()


def tls_table(cert=None, certificates=None, **kw):
    """A [listeners.tls] table: one certificate (cert=(crt, key)) or several."""
    t = Table()
    if certificates is not None:
        t["certificates"] = [{"cert": c, "key": k} for c, k in certificates]
    else:
        c, k = cert or PKI.a
        t["cert"] = c
        t["key"] = k
    t.update(kw)
    return t


class CurlResult:
    def __init__(self, proc):
        self.proc = proc
        self.rc = proc.returncode
        self.stderr = proc.stderr.decode("utf-8", "replace")
        out = proc.stdout
        self.status = None
        self.headers = []
        self.body = b""
        # -D - puts the response head(s) first; skip interim 1xx heads.
        while out.startswith(b"HTTP/"):
            head, _, out = out.partition(b"\r\n\r\n")
            r = http1.parse_response_head(head)
            self.status, self.headers = r.status, r.headers
            if self.status >= 200:
                break
        self.body = out

    def header(self, name):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<curl rc=%s status=%s headers=%r body=%r stderr=%r>" % (
            self.rc, self.status, self.headers, self.body[:300], self.stderr[-1500:])


def backend_headers(body):
    """{lower-case name: [values]} of the headers backend.py saw."""
    out = {}
    for k, v in body["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class TlsCase(SluiceTestCase):
    def start_tls_proxy(self, tls=None, plain=False, plain_listener=None, routes=None,
                        backend_args=(), listener=None, extra="", pools=None):
        """backend.py behind sluice whose "public" listener has [listeners.tls] `tls` (default:
        the a.test certificate); plain=True adds a plain listener "plain" routed to the same
        pool. Returns (backend, sluice, admin)."""
        b = self.start_backend(args=backend_args)
        pub = {"name": "public", "tls": tls if tls is not None else tls_table()}
        pub.update(listener or {})
        listeners = [pub]
        rts = list(routes) if routes is not None else [{"pool": "app"}]
        if plain or plain_listener:
            pl = {"name": "plain"}
            pl.update(plain_listener or {})
            listeners.append(pl)
            rts.append({"pool": "app", "listener": "plain"})
        spec = {"listeners": listeners, "routes": rts, "extra": extra,
                "pools": [{"name": "app", "backends": [{"address": b.address}]}] + list(pools or [])}
        s = self.start_sluice(spec)
        s.wait_admin()
        admin = Admin(s.admin_port)
        self.take_baseline(admin)
        return b, s, admin

    # -- clients

    def curl(self, s, path, host="a.test", listener="public", args=(), ca=True, timeout=20):
        port = s.ports[listener]
        a = ["--resolve", "%s:%d:%s" % (host, port, LOCALHOST), "-D", "-", "--max-time", "10"]
        if ca:
            a += ["--cacert", PKI.ca]
        a += list(args)
        a.append("https://%s:%d%s" % (host, port, path))
        return CurlResult(run_curl(a, timeout=timeout))

    def tls_conn(self, s, sni="a.test", listener="public", timeout=5.0, **ctx):
        ctx.setdefault("ca", PKI.ca)
        c = TlsConn(s.ports[listener], client_context(**ctx), server_hostname=sni, timeout=timeout)
        self.conns.append(c)
        return c

    def sc(self, s, args=(), stdin=b"", listener="public", ca=True):
        """s_client; with stdin (a request with Connection: close), -ign_eof makes it wait
        for sluice's answer and close instead of leaving at the end of its input."""
        args = list(args)
        if stdin and "-ign_eof" not in args:
            args.append("-ign_eof")
        return s_client(s.ports[listener], args, stdin=stdin, ca=PKI.ca if ca else None)

    # -- metrics

    def raw_handshakes(self, admin, listener="public"):
        m = admin.metrics()
        return {dict(k)["result"]: v
                for k, v in m.matching("sluice_tls_handshakes_total", listener=listener).items()}

    def take_baseline(self, admin, listeners=("public",)):
        """The harness's readiness probe (connect, then close without a byte) counts as one
        "eof" per TLS listener: wait for it, then count from there (handshakes() is relative)."""
        self._baseline = getattr(self, "_baseline", {})
        for name in listeners:
            got = wait_until(lambda: self.raw_handshakes(admin, name).get("eof", 0) >= 1, 1.0)
            self._baseline[(admin.port, name)] = self.raw_handshakes(admin, name) if got else {}

    def handshakes(self, admin, listener="public"):
        """Counts since take_baseline(), zeros left out."""
        base = getattr(self, "_baseline", {}).get((admin.port, listener), {})
        got = self.raw_handshakes(admin, listener)
        out = {k: v - base.get(k, 0) for k, v in got.items()}
        return {k: v for k, v in out.items() if v}

    def wait_handshakes(self, admin, want, listener="public", timeout=5.0):
        """Waits until every result in `want` has reached its count; returns the counts."""
        last = [None]

        def check():
            last[0] = self.handshakes(admin, listener)
            return all(last[0].get(k, 0) >= v for k, v in want.items())
        wait_until(check, timeout, interval=0.05)
        return last[0]

    def assertCounts(self, got, want, msg=""):
        """got has exactly the counts of want for every result in want, and nothing else that
        is not zero."""
        extra = {k: v for k, v in got.items() if v and k not in want}
        self.assertEqual(({k: got.get(k, 0) for k in want}, extra), (want, {}),
                         "sluice_tls_handshakes_total %s" % msg)


def request_bytes(path, host="a.test", headers=()):
    return build_request("GET", path, list(headers) + [("Connection", "close")], host=host)


def http_body(sc_out):
    """(status, JSON body) of the HTTP response in an s_client transcript ((None, None) if
    there is none). s_client may print a session ticket that arrives meanwhile in the middle of
    the response, so the status line and backend.py's one-line JSON are looked for apart."""
    m = re.search(r"HTTP/1\.1 (\d{3}) ", sc_out)
    if not m:
        return None, None
    for line in sc_out[m.end():].split("\n"):
        if line.startswith('{"'):
            try:
                return int(m.group(1)), json.loads(line)
            except ValueError:
                continue
    return int(m.group(1)), None


# =============================================================================================
# Termination basics


class Termination(TlsCase):
    def test_curl_chain_alpn_forwarded_proto_and_plain_listener(self):
        b, s, admin = self.start_tls_proxy(plain=True)
        # curl trusts only the root: this verifies only if sluice serves the intermediate.
        r = self.curl(s, "/echo/curl?x=1", args=["-v", "-H", "X-Forwarded-Proto: http",
                                                  "-H", "X-Client-Cert-Subject: /CN=forged"])
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertIn("ALPN: server accepted http/1.1", r.stderr)
        got = r.json()
        self.assertEqual(got["target"], "/echo/curl?x=1")
        h = backend_headers(got)
        self.assertEqual(h.get("x-forwarded-proto"), ["https"], got["headers"])
        self.assertNotIn("x-client-cert-subject", h, "a client-sent X-Client-Cert-Subject passed")
        self.assertIsNone(r.header("Strict-Transport-Security"), "HSTS without hsts configured")
        # The chain on the wire: leaf then intermediate.
        sc = self.sc(s, ["-servername", "a.test", "-showcerts"], stdin=request_bytes("/echo/chain"))
        self.assertEqual(sc.verify_code, 0, sc)
        self.assertRegex(sc.out, r"(?m)^ 0 s:CN = a\.test\n\s+i:CN = sluice test intermediate CA")
        self.assertRegex(sc.out, r"(?m)^ 1 s:CN = sluice test intermediate CA\n"
                                 r"\s+i:CN = sluice test root CA")
        # The plain listener of the same sluice: X-Forwarded-Proto http, forged subject removed.
        c = self.connect(s, port=s.ports["plain"])
        rr = c.request("GET", "/echo/plain", headers=[("X-Forwarded-Proto", "https"),
                                                       ("X-Client-Cert-Subject", "/CN=forged")])
        self.assertEqual(rr.status, 200, rr)
        h = backend_headers(rr.json())
        self.assertEqual(h.get("x-forwarded-proto"), ["http"], rr.json()["headers"])
        self.assertNotIn("x-client-cert-subject", h)
        self.assertIsNone(rr.header("Strict-Transport-Security"))
        counts = self.wait_handshakes(admin, {"ok": 2})
        self.assertCounts(counts, {"ok": 2})
        self.assertEqual(self.handshakes(admin, "plain"), {})

    def test_sni_picks_certificate_ecdsa_and_rsa(self):
        b, s, admin = self.start_tls_proxy(tls=tls_table(certificates=[PKI.a, PKI.b]))
        cases = [  # (args, expected subject CN, key bits)
            (["-servername", "a.test"], "a.test", 256),
            (["-servername", "b.test"], "b.test", 2048),
            (["-servername", "B.Test"], "b.test", 2048),           # names are case-insensitive
            (["-servername", "x.wild.test"], "b.test", 2048),      # *.wild.test
            (["-servername", "y.x.wild.test"], "a.test", 256),     # a wildcard is one label
            (["-servername", "wild.test"], "a.test", 256),         # *.wild.test is not wild.test
            (["-servername", "unknown.test"], "a.test", 256),      # unknown: the default
            (["-noservername"], "a.test", 256),                    # no SNI: the default
        ]
        for args in ([], ["-tls1_2"]):
            for sni_args, cn, bits in cases:
                sc = self.sc(s, sni_args + args, stdin=request_bytes("/echo/sni"))
                what = "%s %s" % (" ".join(sni_args + args), sc)
                self.assertEqual(sc.subject, "CN = " + cn, what)
                self.assertEqual(sc.public_key_bits, bits, what)
                self.assertTrue(sc.handshake_ok, what)
        # Both verify with curl (RSA over TLS 1.2 negotiates ECDHE-RSA).
        for host, extra in (("a.test", []), ("b.test", ["--tls-max", "1.2", "-v"]),
                            ("q.wild.test", [])):
            r = self.curl(s, "/echo/" + host, host=host, args=extra)
            self.assertEqual((r.rc, r.status), (0, 200), r)
            self.assertEqual(r.json()["target"], "/echo/" + host)
        r = self.curl(s, "/echo/rsa", host="b.test", args=["--tls-max", "1.2", "-v"])
        self.assertRegex(r.stderr, r"SSL connection using TLSv1\.2 / ECDHE-RSA-(AES|CHACHA)")
        # Python ssl sees exactly the configured leaves.
        for sni, cert in (("a.test", PKI.a[0]), ("b.test", PKI.b[0]), ("zz.wild.test", PKI.b[0])):
            c = self.tls_conn(s, sni=sni)
            self.assertEqual(c.peer_der(), PKI.pki.der(cert), sni)
            self.assertEqual(c.request("GET", "/echo/py", host=sni).status, 200)
            c.close()

    def test_alpn(self):
        b, s, admin = self.start_tls_proxy()
        for offer, want in (("http/1.1", "http/1.1"), ("h2,http/1.1", "http/1.1"),
                            ("h2", None), ("http/1.1,h2", "http/1.1"), (None, None)):
            args = ["-servername", "a.test"] + (["-alpn", offer] if offer else [])
            sc = self.sc(s, args, stdin=request_bytes("/echo/alpn"))
            self.assertTrue(sc.handshake_ok, sc)
            self.assertEqual(sc.alpn, want, "offered %s: %r" % (offer, sc))
            status, body = http_body(sc.out)
            self.assertEqual(status, 200, sc)

    def test_versions_ciphers_and_renegotiation(self):
        b, s, admin = self.start_tls_proxy(tls=tls_table(certificates=[PKI.a, PKI.b]))
        ok = 0
        sc = self.sc(s, ["-servername", "a.test", "-tls1_2"], stdin=request_bytes("/echo/v12"))
        self.assertEqual(sc.protocol, "TLSv1.2", sc)
        self.assertRegex(sc.cipher, r"^ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")
        self.assertEqual(http_body(sc.out)[0], 200, sc)
        sc = self.sc(s, ["-servername", "a.test", "-tls1_3"], stdin=request_bytes("/echo/v13"))
        self.assertEqual(sc.protocol, "TLSv1.3", sc)
        self.assertEqual(http_body(sc.out)[0], 200, sc)
        ok += 2
        # TLS 1.0 and 1.1 are refused (the client allows them with SECLEVEL=0).
        for v in ("-tls1", "-tls1_1"):
            sc = self.sc(s, ["-servername", "a.test", v, "-cipher", "DEFAULT@SECLEVEL=0"],
                         stdin=request_bytes("/echo/old"))
            self.assertFalse(sc.handshake_ok, "%s accepted: %r" % (v, sc))
            self.assertIn("alert protocol version", sc.err, sc)
        # Weak TLS 1.2 suites: static RSA key exchange, CBC, even with ECDHE.
        refused = [("b.test", "AES128-SHA"), ("b.test", "AES128-GCM-SHA256"),
                   ("b.test", "ECDHE-RSA-AES128-SHA"), ("b.test", "ECDHE-RSA-AES256-SHA384"),
                   ("a.test", "ECDHE-ECDSA-AES128-SHA"), ("a.test", "ECDHE-ECDSA-AES256-SHA384")]
        for sni, cipher in refused:
            sc = self.sc(s, ["-servername", sni, "-tls1_2", "-cipher", cipher],
                         stdin=request_bytes("/echo/weak"))
            self.assertFalse(sc.handshake_ok, "%s with %s accepted: %r" % (cipher, sni, sc))
        accepted = [("b.test", "ECDHE-RSA-AES128-GCM-SHA256"),
                    ("b.test", "ECDHE-RSA-CHACHA20-POLY1305"),
                    ("a.test", "ECDHE-ECDSA-AES256-GCM-SHA384"),
                    ("a.test", "ECDHE-ECDSA-CHACHA20-POLY1305")]
        for sni, cipher in accepted:
            sc = self.sc(s, ["-servername", sni, "-tls1_2", "-cipher", cipher],
                         stdin=request_bytes("/echo/strong"))
            self.assertEqual(sc.cipher, cipher, sc)
            self.assertEqual(http_body(sc.out)[0], 200, sc)
            ok += 1
        # Renegotiation (TLS 1.2, s_client's "R" command) is refused; sluice stays up.
        text = tlsutil.s_client_renegotiate(s.port, ["-servername", "a.test", "-tls1_2",
                                                     "-CAfile", PKI.ca])
        ok += 1
        self.assertIn("RENEGOTIATING", text)
        self.assertIn("no renegotiation", text, text[-2000:])
        self.assertEqual(text.count("New, TLSv1.2"), 1, "a second handshake happened: " + text[-2000:])
        counts = self.wait_handshakes(admin, {"ok": ok, "protocol_version": 2,
                                              "no_shared_cipher": len(refused)})
        self.assertCounts(counts, {"ok": ok, "protocol_version": 2,
                                   "no_shared_cipher": len(refused)})
        # Still serving.
        r = self.curl(s, "/echo/still")
        self.assertEqual((r.rc, r.status), (0, 200), r)

    def test_min_version_1_3(self):
        b, s, admin = self.start_tls_proxy(tls=tls_table(min_version="1.3"))
        sc = self.sc(s, ["-servername", "a.test", "-tls1_2"], stdin=request_bytes("/echo/v12"))
        self.assertFalse(sc.handshake_ok, sc)
        self.assertIn("alert protocol version", sc.err, sc)
        sc = self.sc(s, ["-servername", "a.test", "-tls1_3"], stdin=request_bytes("/echo/v13"))
        self.assertEqual(sc.protocol, "TLSv1.3", sc)
        self.assertEqual(http_body(sc.out)[0], 200, sc)
        r = self.curl(s, "/echo/v", args=["--tls-max", "1.2"])
        self.assertNotEqual(r.rc, 0, r)
        counts = self.wait_handshakes(admin, {"ok": 1, "protocol_version": 2})
        self.assertCounts(counts, {"ok": 1, "protocol_version": 2})

    def test_session_resumption_reported_as_reused(self):
        b, s, admin = self.start_tls_proxy(tls=tls_table(certificates=[PKI.a, PKI.b]))
        variants = [("a.test", ["-tls1_2"]),                 # TLS 1.2 session ticket
                    ("a.test", ["-tls1_2", "-no_ticket"]),   # TLS 1.2 session cache (id)
                    ("a.test", ["-tls1_3"]),                 # TLS 1.3 ticket
                    ("b.test", ["-tls1_3"]),                 # ... on an SNI-selected context
                    ("b.test", ["-tls1_2", "-no_ticket"])]
        for sni, args in variants:
            sess = os.path.join(self.tmpdir, "sess-%s-%s.pem" % (sni, "".join(args)))
            what = "%s %s" % (sni, " ".join(args))
            base = ["-servername", sni, "-ign_eof"] + args
            first = self.sc(s, base + ["-sess_out", sess], stdin=request_bytes("/echo/first"))
            self.assertEqual(first.reused, "New", "%s: %r" % (what, first))
            self.assertEqual(http_body(first.out)[0], 200, "%s: %r" % (what, first))
            second = self.sc(s, base + ["-sess_in", sess], stdin=request_bytes("/echo/second"))
            self.assertEqual(second.reused, "Reused", "%s: %r" % (what, second))
            status, body = http_body(second.out)
            self.assertEqual((status, body and body["target"]), (200, "/echo/second"),
                             "%s: %r" % (what, second))
        counts = self.wait_handshakes(admin, {"ok": 2 * len(variants)})
        self.assertCounts(counts, {"ok": 2 * len(variants)})
        # Python's ssl reports a resumed session too (TLS 1.2, ticket).
        ctx = client_context(ca=PKI.ca, maximum=ssl.TLSVersion.TLSv1_2)
        c1 = TlsConn(s.port, ctx, server_hostname="a.test")
        self.conns.append(c1)
        self.assertEqual(c1.request("GET", "/echo/py1", host="a.test").status, 200)
        c2 = TlsConn(s.port, ctx, server_hostname="a.test", session=c1.sock.session)
        self.conns.append(c2)
        self.assertTrue(c2.sock.session_reused)
        self.assertEqual(c2.request("GET", "/echo/py2", host="a.test").status, 200)

    def test_close_notify_both_ways(self):
        b, s, admin = self.start_tls_proxy()
        # sluice ends a Connection: close exchange with close_notify before its FIN.
        c = self.tls_conn(s)
        r = c.request("GET", "/echo/cn", host="a.test", headers=[("Connection", "close")])
        self.assertEqual(r.status, 200)
        closed, extra = c.wait_closed(5)
        self.assertTrue(closed, "sluice kept the connection open")
        self.assertFalse(c.ragged_eof, "sluice closed without close_notify")
        # The client's close_notify is answered with sluice's (unwrap waits for it).
        c = self.tls_conn(s)
        self.assertEqual(c.request("GET", "/echo/cn2", host="a.test").status, 200)
        c.sock.settimeout(5)
        try:
            raw = c.sock.unwrap()
        except (ssl.SSLError, OSError) as e:
            self.fail("no close_notify back from sluice: %r" % e)
        raw.settimeout(5)
        try:
            self.assertEqual(raw.recv(100), b"", "bytes after close_notify")
        except ConnectionResetError:
            pass
        raw.close()
        self.assertTrue(s.alive())

    def test_hsts_on_proxied_responses_and_upgrades(self):
        hsts = "max-age=600; includeSubDomains"
        wsb = self.start_ws_backend(name="wsbackend")
        b, s, admin = self.start_tls_proxy(
            tls=tls_table(hsts=hsts), plain=True,
            routes=[{"pool": "app"}, ws_route(path_prefix="/ws", pool="ws")],
            pools=[{"name": "ws", "backends": [{"address": wsb.address}]}])
        r = self.curl(s, "/echo/hsts")
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertEqual(r.header_all("Strict-Transport-Security"), [hsts])
        # Several responses on one keep-alive connection: each carries it once.
        c = self.tls_conn(s)
        for i in range(3):
            rr = c.request("GET", "/echo/k%d" % i, host="a.test")
            self.assertEqual(rr.status, 200)
            self.assertEqual(rr.header_all("Strict-Transport-Security"), [hsts], rr)
        # The 101 of a WebSocket upgrade too.
        c = self.tls_conn(s)
        c.send(("GET /ws/hsts HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = c.read_head(timeout=5)
        self.assertEqual(head.status, 101, head)
        self.assertEqual(head.header_all("Strict-Transport-Security"), [hsts], head)
        # Never on the plain listener.
        rr = self.connect(s, port=s.ports["plain"]).request("GET", "/echo/plain")
        self.assertEqual(rr.status, 200)
        self.assertIsNone(rr.header("Strict-Transport-Security"))

    def test_hsts_on_responses_sluice_makes_itself(self):
        # 404 (no route) and 502 (backend down) come from sluice, on the same TLS listener.
        hsts = "max-age=600"
        dead = harness.closed_port()
        b, s, admin = self.start_tls_proxy(
            tls=tls_table(hsts=hsts),
            routes=[{"pool": "app", "host": "a.test", "path_prefix": "/echo"},
                    {"pool": "dead", "host": "a.test", "path_prefix": "/dead"}],
            pools=[{"name": "dead", "backends": [{"address": "127.0.0.1:%d" % dead}]}])
        c = self.tls_conn(s)
        for path, status in (("/echo/x", 200), ("/nowhere", 404), ("/dead/x", 502)):
            rr = c.request("GET", path, host="a.test", headers=[("Connection", "close")])
            self.assertEqual(rr.status, status, rr)
            self.assertEqual(rr.header_all("Strict-Transport-Security"), [hsts],
                             "GET %s (%d) without HSTS: %r" % (path, status, rr))
            c = self.tls_conn(s)


# =============================================================================================
# Client certificates


class ClientCertificates(TlsCase):
    def start_mtls(self, verify):
        return self.start_tls_proxy(tls=tls_table(certificates=[PKI.a, PKI.b],
                                                  client_ca=PKI.client_ca[0], verify=verify))

    def test_required(self):
        b, s, admin = self.start_mtls("require")
        forged = [("X-Client-Cert-Subject", "/CN=admin")]
        counts = {"ok": 0, "no_client_certificate": 0, "certificate_verify_failed": 0}
        # Accepted: curl with alice's certificate, on the default and the SNI-chosen context.
        for host in ("a.test", "b.test"):
            r = self.curl(s, "/echo/alice", host=host,
                          args=["--cert", PKI.alice[0], "--key", PKI.alice[1],
                                "-H", "X-Client-Cert-Subject: /CN=admin"])
            self.assertEqual((r.rc, r.status), (0, 200), r)
            h = backend_headers(r.json())
            self.assertEqual(h.get("x-client-cert-subject"), ["/O=sluice tests/CN=alice"],
                             r.json()["headers"])
            counts["ok"] += 1
        # s_client with the certificate, TLS 1.2 and 1.3: the CA name is advertised.
        for v in ("-tls1_2", "-tls1_3"):
            sc = self.sc(s, ["-servername", "a.test", v, "-ign_eof", "-cert", PKI.alice[0],
                             "-key", PKI.alice[1]],
                         stdin=request_bytes("/echo/sc-alice", headers=forged))
            self.assertIn("CN = sluice test client CA", sc.out, sc)
            status, body = http_body(sc.out)
            self.assertEqual(status, 200, sc)
            self.assertEqual(backend_headers(body).get("x-client-cert-subject"),
                             ["/O=sluice tests/CN=alice"])
            counts["ok"] += 1
        before = b.count()
        # Rejected: no certificate (curl; s_client 1.2 and 1.3; on both contexts).
        for host in ("a.test", "b.test"):
            r = self.curl(s, "/echo/nocert", host=host)
            self.assertNotEqual(r.rc, 0, "no client certificate accepted on %s: %r" % (host, r))
            self.assertIsNone(r.status, r)
            counts["no_client_certificate"] += 1
            for v in ("-tls1_2", "-tls1_3"):
                sc = self.sc(s, ["-servername", host, v, "-ign_eof"],
                             stdin=request_bytes("/echo/sc-nocert"))
                self.assertNotIn("HTTP/1.1", sc.out, "%s %s: %r" % (host, v, sc))
                counts["no_client_certificate"] += 1
        # Rejected: a certificate from a CA sluice does not trust.
        for host in ("a.test", "b.test"):
            r = self.curl(s, "/echo/mallory", host=host,
                          args=["--cert", PKI.mallory[0], "--key", PKI.mallory[1]])
            self.assertNotEqual(r.rc, 0, "mallory accepted on %s: %r" % (host, r))
            counts["certificate_verify_failed"] += 1
            sc = self.sc(s, ["-servername", host, "-tls1_3", "-ign_eof", "-cert", PKI.mallory[0],
                             "-key", PKI.mallory[1]], stdin=request_bytes("/echo/sc-mallory"))
            self.assertNotIn("HTTP/1.1", sc.out, sc)
            counts["certificate_verify_failed"] += 1
        after = b.count()
        self.assertEqual(after["connections"], before["connections"],
                         "a rejected client's request reached the backend")
        got = self.wait_handshakes(admin, counts)
        self.assertCounts(got, counts)

    def test_optional(self):
        b, s, admin = self.start_mtls("optional")
        # No certificate: served, and a forged subject header never reaches the backend.
        for host in ("a.test", "b.test"):
            r = self.curl(s, "/echo/anon", host=host, args=["-H", "X-Client-Cert-Subject: /CN=admin"])
            self.assertEqual((r.rc, r.status), (0, 200), r)
            self.assertNotIn("x-client-cert-subject", backend_headers(r.json()), r.json()["headers"])
        # A valid certificate: its subject is passed on.
        for host in ("a.test", "b.test"):
            r = self.curl(s, "/echo/alice", host=host,
                          args=["--cert", PKI.alice[0], "--key", PKI.alice[1],
                                "-H", "X-Client-Cert-Subject: /CN=admin"])
            self.assertEqual((r.rc, r.status), (0, 200), r)
            self.assertEqual(backend_headers(r.json()).get("x-client-cert-subject"),
                             ["/O=sluice tests/CN=alice"])
        # An untrusted certificate is never passed on as a verified subject.
        r = self.curl(s, "/echo/mallory", args=["--cert", PKI.mallory[0], "--key", PKI.mallory[1]])
        if r.rc == 0:
            self.assertNotIn("x-client-cert-subject", backend_headers(r.json()))
        got = self.wait_handshakes(admin, {"ok": 4})
        self.assertEqual(got.get("ok"), 4 + (1 if r.rc == 0 else 0), got)


# =============================================================================================
# Bad input on a TLS port


def reset_mid_handshake(port, data):
    """Connects, sends data, and resets the connection (SO_LINGER 0)."""
    sock = socket.create_connection((LOCALHOST, port), timeout=5)
    if data:
        sock.sendall(data)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.05)
    sock.close()


class BadInput(TlsCase):
    def closed_within(self, conn, lo, hi, t0, what):
        closed, extra = conn.wait_closed(hi + 1.0)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "%s: still open after %.1fs" % (what, elapsed))
        self.assertGreaterEqual(elapsed, lo, "%s: closed after %.2fs" % (what, elapsed))
        self.assertLessEqual(elapsed, hi, "%s: closed after %.2fs" % (what, elapsed))
        return extra

    def test_bad_input_closed_cleanly_others_unaffected(self):
        b, s, admin = self.start_tls_proxy(tls=tls_table(handshake_timeout="1s"))
        # A TLS keep-alive client, one request after the other, on one connection.
        ka = HttpLoad(s.port, path="/echo/keepalive", threads=1, pause=0.02, max_seconds=60,
                      host="a.test", keep_connection=True,
                      connect=lambda: TlsConn(s.port, client_context(ca=PKI.ca), timeout=10)).start()
        self.addCleanup(ka.stop)
        hello = tlsutil.client_hello("a.test")
        self.assertGreater(len(hello), 100)
        self.assertEqual(hello[0], 0x16)

        # Stalled: one sends nothing, one half a ClientHello, one a whole ClientHello and then
        # nothing more (never its Finished). Each is closed after handshake_timeout.
        t0 = time.monotonic()
        stalled = []
        for data in (b"", hello[:len(hello) // 2], hello):
            c = RawConn(s.port, timeout=5)
            self.conns.append(c)
            if data:
                c.send(data)
            stalled.append(c)

        # Immediate failures, each closed at once.
        immediate = [
            ("plain HTTP", b"GET /echo/plain HTTP/1.1\r\nHost: a.test\r\n\r\n", "http_request"),
            ("plain HTTP POST", b"POST /echo/p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc",
             "http_request"),
            ("garbage", b"\xde\xad\xbe\xef" * 256, None),
            ("garbage in a handshake record", b"\x16\x03\x01\x00\x40" + b"\xff" * 64, None),
            ("TLS 1.0-only ClientHello", tlsutil.legacy_client_hello(0x0301), "protocol_version"),
            ("TLS 1.1-only ClientHello", tlsutil.legacy_client_hello(0x0302), "protocol_version"),
        ]
        for what, data, _ in immediate:
            c = RawConn(s.port, timeout=5)
            self.conns.append(c)
            c.send(data)
            extra = self.assertClosed(c, timeout=3.0, msg=what)
            self.assertNotIn(b"HTTP/1.", extra, what)
            if extra:  # at most a TLS alert record
                self.assertEqual(extra[0], 0x15, "%s: answered %r" % (what, extra[:100]))
        # Truncated handshakes that end with a FIN: closed at once, counted as eof.
        for cut in (5, 50, len(hello) - 1):
            c = RawConn(s.port, timeout=5)
            self.conns.append(c)
            c.send(hello[:cut])
            c.shutdown_write()
            self.assertClosed(c, timeout=3.0, msg="truncated ClientHello (%d bytes) + FIN" % cut)
        # Connect and FIN without a byte.
        c = RawConn(s.port, timeout=5)
        self.conns.append(c)
        c.shutdown_write()
        self.assertClosed(c, timeout=3.0, msg="FIN without a ClientHello")
        # Vanishing with a reset mid-handshake (SO_LINGER 0).
        for cut in (0, 60):
            reset_mid_handshake(s.port, hello[:cut])

        for i, c in enumerate(stalled):
            self.closed_within(c, 0.8, 3.0, t0, "stalled handshake #%d" % i)

        # Many clients vanishing mid-handshake at once.
        socks = []
        for i in range(40):
            sock = socket.create_connection((LOCALHOST, s.port), timeout=5)
            sock.sendall(hello[:(i * 13) % len(hello) or 1])
            socks.append(sock)
        for sock in socks:
            sock.close()

        # Meanwhile the keep-alive client kept working, and still does.
        time.sleep(0.2)
        ka.stop()
        self.assertEqual(ka.failures, [], "keep-alive TLS client disturbed")
        self.assertGreater(ka.ok, 10)
        r = self.curl(s, "/echo/after")
        self.assertEqual((r.rc, r.status), (0, 200), r)
        self.assertTrue(s.alive())
        paths = [p for p in b.count()["paths"] if not p.startswith("/echo/keepalive")]
        self.assertEqual(paths, ["/echo/after"], "bad input reached the backend")

        # Every connection is gone (listener's open connections back to 0).
        def open_conns():
            st = admin.status()
            return [l["connections"] for l in st["listeners"] if l["name"] == "public"][0]
        self.assertEqual(wait_until(lambda: open_conns() == 0, 5.0) and open_conns(), 0,
                         "connections left open after bad input")
        # Counted by reason: known reasons exactly, the garbage among the failure reasons.
        counts = self.handshakes(admin)
        self.assertEqual(counts.get("timeout", 0), 3, counts)
        self.assertEqual(counts.get("http_request", 0), 2, counts)
        self.assertGreaterEqual(counts.get("protocol_version", 0), 2, counts)
        self.assertGreaterEqual(counts.get("eof", 0), 4, counts)
        self.assertEqual(counts.get("ok", 0), 2, counts)  # the keep-alive client and curl
        failures = sum(v for k, v in counts.items() if k != "ok")
        bad = 3 + len(immediate) + 3 + 1 + 40  # (the two resets: see the next test)
        self.assertGreaterEqual(failures, bad, "every failed handshake counted: %r" % counts)
        self.assertLessEqual(failures, bad + 2, "failed handshakes counted twice? %r" % counts)
        allowed = {"ok", "handshake_failed", "no_shared_cipher", "protocol_version",
                   "http_request", "no_client_certificate", "certificate_verify_failed", "eof",
                   "timeout"}
        self.assertLessEqual(set(counts), allowed)

    def test_reset_mid_handshake_is_counted(self):
        # A client that resets its connection in the middle of the handshake is a failed
        # handshake like one that closes it: counted once (eof or handshake_failed).
        b, s, admin = self.start_tls_proxy(tls=tls_table(handshake_timeout="2s"))
        hello = tlsutil.client_hello("a.test")
        for cut in (60, len(hello)):
            reset_mid_handshake(s.port, hello[:cut])
        wait_until(lambda: sum(self.handshakes(admin).values()) >= 2, 10.0)
        counts = self.handshakes(admin)
        self.assertEqual(sum(counts.values()), 2,
                         "2 handshakes ended by a reset (after 60 bytes and after a whole "
                         "ClientHello), counted: %r" % counts)
        self.assertLessEqual(set(counts), {"eof", "handshake_failed"}, counts)
        self.assertTrue(s.alive())

    def test_handshake_timeout_does_not_cut_established_connections(self):
        # handshake_timeout covers the handshake only: a TLS client idle after it is governed
        # by the listener's header_timeout.
        b, s, admin = self.start_tls_proxy(tls=tls_table(handshake_timeout="1s"),
                                           listener={"header_timeout": "4s"})
        c = self.tls_conn(s)
        time.sleep(1.8)
        r = c.request("GET", "/echo/late", host="a.test")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.handshakes(admin), {"ok": 1})


# =============================================================================================
# Certificate errors: --check and reload


class CertificateErrors(TlsCase):
    def write_config(self, name, tls=None, pool_tls=None, listener_tls_text=None):
        """A config file with one TLS listener (and optionally a pool with [pools.tls]);
        returns (path, text)."""
        admin = free_port()
        listener = {"name": "public", "listen": "127.0.0.1:%d" % free_port()}
        if listener_tls_text is None:
            listener["tls"] = tls
        pool = {"name": "app", "backends": [{"address": "127.0.0.1:%d" % free_port()}]}
        if pool_tls is not None:
            pool["tls"] = pool_tls
        route = {"listener": "public", "host": "*", "path_prefix": "/", "pool": "app"}
        text = config(admin, [listener], [pool], [route], server={"workers": 1})
        if listener_tls_text is not None:
            text = text.replace("[[pools]]", listener_tls_text + "\n[[pools]]", 1)
        path = os.path.join(self.tmpdir, name + ".toml")
        with open(path, "w") as f:
            f.write(text)
        return path, text

    def check(self, path):
        p = run_sluice(["--check", path], timeout=60)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def assertCertError(self, path, text, out, named, lines, why=None):
        """An error line FILE:LINE:COL: error: naming `named`, at one of `lines`."""
        pat = re.compile(r"^%s:(\d+):(\d+): error: (.*)$" % re.escape(path), re.M)
        errs = [(int(m.group(1)), int(m.group(2)), m.group(3)) for m in pat.finditer(out)]
        names = [named] if isinstance(named, str) else list(named)
        hits = [e for e in errs if any(n in e[2] for n in names)]
        self.assertTrue(hits, "no error naming %s in:\n%s\n--- config\n%s" % (named, out, text))
        line, col, msg = hits[0]
        self.assertIn(line, lines, "error at line %d, expected one of %s: %s\n%s" % (
            line, lines, msg, text))
        self.assertGreaterEqual(col, 1)
        if why:
            self.assertRegex(msg, why)

    def tls_lines(self, text, start="[listeners.tls]"):
        """Line numbers of the table header `start` and of the lines in that table."""
        lines = text.split("\n")
        first = lines.index(start)
        out = [first + 1]
        for i in range(first + 1, len(lines)):
            if lines[i].startswith("["):
                break
            out.append(i + 1)
        return out

    def test_check_reports_certificate_errors_naming_the_file(self):
        d = self.tmpdir
        missing = os.path.join(d, "missing.crt")
        cases = [
            ("missing-cert", {"cert": missing, "key": PKI.a[1]}, missing, None),
            ("missing-key", {"cert": PKI.a[0], "key": os.path.join(d, "missing.key")},
             os.path.join(d, "missing.key"), None),
            ("mismatch", {"cert": PKI.a[0], "key": PKI.b[1]}, PKI.a, r"(?i)match"),
            ("expired", {"cert": PKI.expired[0], "key": PKI.expired[1]}, PKI.expired[0],
             r"(?i)expired"),
            ("future", {"cert": PKI.future[0], "key": PKI.future[1]}, PKI.future[0],
             r"(?i)not (yet )?valid|not before|future"),
        ]
        for name, tls, named, why in cases:
            path, text = self.write_config(name, tls=Table(tls))
            rc, out = self.check(path)
            self.assertEqual(rc, 1, "%s: --check exited %d:\n%s" % (name, rc, out))
            self.assertCertError(path, text, out, named, self.tls_lines(text), why)
        # Among several certificates, the error points at the bad entry.
        entries = "\n".join([
            "[listeners.tls]",
            "certificates = [",
            '  { cert = "%s", key = "%s" },' % PKI.a,
            '  { cert = "%s", key = "%s" },' % PKI.expired,
            "]"])
        path, text = self.write_config("entries", listener_tls_text=entries)
        rc, out = self.check(path)
        self.assertEqual(rc, 1, out)
        bad_line = text.split("\n").index('  { cert = "%s", key = "%s" },' % PKI.expired) + 1
        self.assertCertError(path, text, out, PKI.expired[0], [bad_line], r"(?i)expired")
        # [pools.tls]: a missing CA file, a client certificate with the wrong key.
        for name, ptls, named in (
                ("pool-ca", {"ca": missing}, missing),
                ("pool-cert", {"ca": PKI.ca, "cert": PKI.upstream_client[0], "key": PKI.a[1]},
                 (PKI.upstream_client[0], PKI.a[1]))):
            path, text = self.write_config(name, tls=tls_table(), pool_tls=Table(ptls))
            rc, out = self.check(path)
            self.assertEqual(rc, 1, "%s: %s" % (name, out))
            self.assertCertError(path, text, out, named, self.tls_lines(text, "[pools.tls]"))
        # sluice does not start with an expired certificate either.
        path, text = self.write_config("start-expired", tls=Table(cert=PKI.expired[0],
                                                                  key=PKI.expired[1]))
        try:
            p = run_sluice(["--config", path], timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("sluice started (and ran) with an expired certificate")
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, out)
        self.assertCertError(path, text, out, PKI.expired[0], self.tls_lines(text), r"(?i)expired")
        # And a good one passes.
        path, text = self.write_config("good", tls=tls_table(certificates=[PKI.a, PKI.b],
                                                             client_ca=PKI.client_ca[0]),
                                       pool_tls=Table(ca=PKI.ca, cert=PKI.upstream_client[0],
                                                      key=PKI.upstream_client[1]))
        rc, out = self.check(path)
        self.assertEqual(rc, 0, out)

    def test_reload_replaces_certificate_and_rejects_bad_ones(self):
        crt = os.path.join(self.tmpdir, "server.crt")
        key = os.path.join(self.tmpdir, "server.key")

        def install(pair):
            for src, dst in zip(pair, (crt, key)):
                tmp = dst + ".new"
                shutil.copyfile(src, tmp)
                os.rename(tmp, dst)
        install(PKI.a)
        b = self.start_backend()
        admin_port, port = free_port(), free_port()
        text = config(
            admin_port, [{"name": "public", "listen": "127.0.0.1:%d" % port,
                          "tls": Table(cert=crt, key=key)}],
            [pool("app", [b.address])], [route("r", "app")])
        s = self.start_config_sluice(text, admin_port, {"public": port})
        old = self.tls_conn(s)
        self.assertEqual(old.peer_der(), PKI.pki.der(PKI.a[0]))
        self.assertEqual(old.request("GET", "/echo/1", host="a.test").status, 200)

        # A renewed certificate in the same files: new connections get it after the reload.
        install(PKI.a2)
        code, body = s.admin.reload()
        self.assertEqual((code, body.get("result")), (200, "success"), body)
        c = self.tls_conn(s)
        self.assertEqual(c.peer_der(), PKI.pki.der(PKI.a2[0]), "reload did not load the new cert")
        self.assertEqual(c.request("GET", "/echo/2", host="a.test").status, 200)
        # The connection made before the reload still works.
        self.assertEqual(old.request("GET", "/echo/3", host="a.test").status, 200)

        cfg = s.config_path
        bad = [("expired", PKI.expired, crt, r"(?i)expired"),
               ("mismatched key", (PKI.a[0], PKI.b[1]), key, r"(?i)match")]
        for what, pair, named, why in bad:
            install(pair)
            code, body = s.admin.reload()
            self.assertEqual((code, body.get("result")), (400, "failure"), "%s: %r" % (what, body))
            errs = [e for e in body.get("errors", []) if named in e or crt in e]
            self.assertTrue(errs, "%s: no error naming %s: %r" % (what, named, body))
            self.assertRegex(errs[0], r"^%s:\d+:\d+: error: " % re.escape(cfg))
            self.assertRegex(errs[0], why)
            # Still serving the last good certificate.
            c = self.tls_conn(s)
            self.assertEqual(c.peer_der(), PKI.pki.der(PKI.a2[0]), what)
            self.assertEqual(c.request("GET", "/echo/4", host="a.test").status, 200)
        os.unlink(crt)
        code, body = s.admin.reload()
        self.assertEqual(code, 400, body)
        self.assertTrue([e for e in body.get("errors", []) if crt in e], body)
        st = s.admin.status()
        self.assertEqual(st["config"]["last_reload"]["result"], "failure")
        # Fixed again: back to a, through another reload.
        install(PKI.a)
        code, body = s.admin.reload()
        self.assertEqual(code, 200, body)
        c = self.tls_conn(s)
        self.assertEqual(c.peer_der(), PKI.pki.der(PKI.a[0]))
        m = s.admin.metrics()
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 3)
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), 2)


# =============================================================================================
# redirect_to_https


class Redirect(TlsCase):
    def test_plain_listener_redirects_with_308(self):
        b, s, admin = self.start_tls_proxy(plain_listener={"redirect_to_https": True, "https_port": 443})
        plain = s.ports["plain"]
        before = b.count()
        cases = [("GET", "/a/b?x=1&y=%20z", "example.com:8080", "https://example.com/a/b?x=1&y=%20z"),
                 ("GET", "/", "example.com", "https://example.com/"),
                 ("HEAD", "/h?q", "a.test:%d" % plain, "https://a.test/h?q"),
                 ("POST", "/form", "example.org", "https://example.org/form")]
        c = self.connect(s, port=plain)
        for method, target, host, location in cases:
            body = b"k=v" if method == "POST" else None
            r = c.request(method, target, host=host, body=body)
            self.assertEqual(r.status, 308, "%s %s: %r" % (method, target, r))
            self.assertEqual(r.header("Location"), location, r)
            if "close" in r.connection_tokens():
                c = self.connect(s, port=plain)
        self.assertEqual(b.count()["connections"], before["connections"],
                         "a redirected request reached the backend")
        # curl follows it to the TLS listener (same port map through --resolve and --connect-to).
        r = run_curl(["-D", "-", "-o", "/dev/null", "http://127.0.0.1:%d/p?q=1" % plain,
                      "-H", "Host: a.test"])
        self.assertIn(b"308", r.stdout.split(b"\r\n")[0], r)
        self.assertIn(b"\r\nLocation: https://a.test/p?q=1\r\n", r.stdout)
        # The TLS listener itself serves normally.
        r = self.curl(s, "/echo/tls")
        self.assertEqual((r.rc, r.status), (0, 200), r)

    def test_redirect_keeps_ipv6_brackets(self):
        b, s, admin = self.start_tls_proxy(plain_listener={"redirect_to_https": True, "https_port": 443})
        c = self.connect(s, port=s.ports["plain"])
        r = c.request("GET", "/v6?x=1", host="[::1]:8080")
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header("Location"), "https://[::1]/v6?x=1", r)


# =============================================================================================
# WebSockets over TLS


class WebSocketsOverTls(TlsCase):
    def start_wss(self, extra_routes=(), extra_pools=()):
        wsb = self.start_ws_backend(name="wsbackend")
        spec = {"listeners": [{"name": "public", "tls": tls_table()}],
                "pools": [{"name": "app", "backends": [{"address": wsb.address}]}] + list(extra_pools),
                "routes": list(extra_routes) + [ws_route()]}
        s = self.start_sluice(spec)
        s.wait_admin()
        return wsb, s

    def test_python_websockets_over_wss(self):
        import websockets
        wsb, s = self.start_wss()
        ctx = client_context(ca=PKI.ca)
        big = bytes((i * 7) & 255 for i in range(1 << 20))  # 1 MiB: many TLS records

        async def run():
            sock = socket.create_connection((LOCALHOST, s.port), timeout=5)
            ws = await asyncio.wait_for(websockets.connect(
                "wss://a.test:%d/ws/py-tls" % s.port, ssl=ctx, sock=sock,
                server_hostname="a.test", subprotocols=["chat"], max_size=None,
                ping_interval=None, close_timeout=5), 10)
            got = {"subprotocol": ws.subprotocol}
            await ws.send("h\u00e9llo over wss")
            got["text"] = await asyncio.wait_for(ws.recv(), 10)
            await ws.send(big)
            echoed = await asyncio.wait_for(ws.recv(), 20)
            got["big_ok"] = echoed == big
            for i in range(200):
                await ws.send("m%d" % i)
            got["burst"] = [await asyncio.wait_for(ws.recv(), 10) for _ in range(200)]
            await ws.close(4000, "tls bye")
            got["close"] = (ws.close_code, ws.close_reason)
            return got

        got = asyncio.run(asyncio.wait_for(run(), 60))
        self.assertEqual(got["subprotocol"], "chat")
        self.assertEqual(got["text"], "h\u00e9llo over wss")
        self.assertTrue(got["big_ok"], "1 MiB binary echo differs")
        self.assertEqual(got["burst"], ["m%d" % i for i in range(200)])
        self.assertEqual(got["close"], (4000, "tls bye"))
        cid = wsb.conn_id("/ws/py-tls")
        hdrs = {k.lower(): v for k, v in wsb.open_event(cid)["headers"]}
        self.assertEqual(hdrs.get("x-forwarded-proto"), "https")
        ev = wsb.wait_close(cid)
        self.assertEqual((ev["code"], ev["reason"]), (4000, "tls bye"))
        self.assertEqual(len(wsb.messages(cid)), 202)

    def test_chromium_https_page_and_wss(self):
        page = PageServer(CHROMIUM_PAGE)
        self.backends.append(page)
        wsb, s = self.start_wss(extra_routes=[{"pool": "page", "path_prefix": "/tlspage"}],
                                extra_pools=[{"name": "page", "backends": [{"address": page.address}]}])
        spki = PKI.pki.spki_sha256_b64(PKI.a[0])
        url = "https://a.test:%d/tlspage" % s.port
        t0 = time.monotonic()
        report = self.run_chromium(url, wsb, ["--ignore-certificate-errors-spki-list=" + spki,
                                              "--host-resolver-rules=MAP a.test 127.0.0.1"])
        sys.stderr.write("[chromium over TLS: %.1fs] " % (time.monotonic() - t0))
        self.assertEqual(report, "OK:https:,open:chat,text,binary,close:4000:tls done:true")
        cid = wsb.conn_id("/ws/chromium-tls")
        hdrs = {k.lower(): v for k, v in wsb.open_event(cid)["headers"]}
        self.assertEqual(hdrs.get("origin"), "https://a.test:%d" % s.port)
        self.assertEqual(hdrs.get("x-forwarded-proto"), "https")
        self.assertIn("HeadlessChrome", hdrs.get("user-agent", ""))
        self.assertEqual([(m["type"], m["len"]) for m in wsb.messages(cid)],
                         [("text", len("hello over wss \u2713".encode())), ("binary", 200 * 1024)])
        self.assertEqual(page.requests[0].split("\r\n")[0], "GET /tlspage HTTP/1.1")


CHROMIUM_PAGE = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pending</title></head>
<body><pre id="result">pending</pre>
<script>
(function () {
  var log = [];
  var reported = false;
  function done(text) {
    if (reported) return;
    reported = true;
    document.getElementById("result").textContent = text;
    fetch("/report?" + encodeURIComponent(text)).catch(function () {});
  }
  setTimeout(function () { done("FAIL:timeout:" + log.join(",")); }, 20000);
  log.push(location.protocol);
  if (location.protocol !== "https:") { done("FAIL:" + log.join(",")); return; }
  var text = "hello over wss \u2713";
  var big = new Uint8Array(200 * 1024);
  for (var i = 0; i < big.length; i++) big[i] = (i * 31) & 255;
  var ws = new WebSocket("wss://" + location.host + "/ws/chromium-tls", ["chat"]);
  ws.binaryType = "arraybuffer";
  var step = 0;
  ws.onopen = function () { log.push("open:" + ws.protocol); ws.send(text); };
  ws.onmessage = function (ev) {
    if (step === 0) {
      if (ev.data !== text) { done("FAIL:text:" + ev.data); return; }
      log.push("text");
      step = 1;
      ws.send(big.buffer);
    } else if (step === 1) {
      var got = new Uint8Array(ev.data);
      var ok = got.length === big.length;
      for (var j = 0; ok && j < got.length; j++) ok = got[j] === big[j];
      if (!ok) { done("FAIL:binary:" + got.length); return; }
      log.push("binary");
      step = 2;
      ws.close(4000, "tls done");
    }
  };
  ws.onerror = function () { log.push("error"); };
  ws.onclose = function (ev) {
    log.push("close:" + ev.code + ":" + ev.reason + ":" + ev.wasClean);
    done((step === 2 && ev.code === 4000 ? "OK:" : "FAIL:") + log.join(","));
  };
})();
</script>
</body></html>
"""


# =============================================================================================
# TLS toward backends


class UpstreamTls(TlsCase):
    def tls_backend(self, cert=None, client_ca=None, maximum=None, name=None):
        cert = cert or PKI.backend
        tb = TlsBackend(server_context(cert[0], cert[1], client_ca=client_ca, maximum=maximum),
                        name=name or "tlsbackend%d" % len(self.backends))
        self.backends.append(tb)
        return tb

    def start_upstream(self, pools):
        """A plain listener; pool i is routed at /p<i>/. pools: list of (backend, tls dict or
        None)."""
        spec = {"pools": [], "routes": []}
        for i, (tb, tls) in enumerate(pools):
            p = {"name": "p%d" % i, "backends": [{"address": tb.address}]}
            if tls is not None:
                p["tls"] = Table(tls)
            spec["pools"].append(p)
            spec["routes"].append({"pool": "p%d" % i, "path_prefix": "/p%d/" % i})
        s = self.start_sluice(spec)
        return s

    def get(self, s, path, headers=()):
        c = self.connect(s)
        return c.request("GET", path, headers=list(headers) + [("Connection", "close")],
                         timeout=10)

    def test_verified_backend_and_sni(self):
        # One backend per pool: each pool's own connection (and handshake) is seen.
        by_ip = self.tls_backend(name="by-ip")
        by_name = self.tls_backend(name="by-name")
        s = self.start_upstream([(by_ip, {"ca": PKI.ca}),                          # IP SAN
                                 (by_name, {"ca": PKI.ca, "sni": "backend.test"})])  # DNS SAN
        r = self.get(s, "/p0/x")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["target"], "/p0/x")
        self.assertIsNone(body["tls"]["sni"], "SNI sent for an IP address")
        self.assertIn(body["tls"]["version"], ("TLSv1.2", "TLSv1.3"))
        h = {k.lower(): v for k, v in body["headers"]}
        self.assertEqual(h.get("x-forwarded-proto"), "http")
        r = self.get(s, "/p1/y")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["backend"], "by-name")
        self.assertEqual(r.json()["tls"]["sni"], "backend.test")
        self.assertEqual((by_ip.errors, by_name.errors), ([], []))

    def test_failed_verification_is_502(self):
        cases = [  # (name, backend cert, tls, expected status)
            ("untrusted-issuer", PKI.rogue_backend, {"ca": PKI.ca}, 502),
            ("name-mismatch", PKI.backend, {"ca": PKI.ca, "sni": "wrong.test"}, 502),
            ("system-cas", PKI.backend, {}, 502),
            ("wrong-ca", PKI.backend, {"ca": PKI.rogue_ca[0]}, 502),
            ("verify-false", PKI.rogue_backend, {"ca": PKI.ca, "verify": False}, 200),
            ("verify-false-name", PKI.backend, {"sni": "wrong.test", "verify": False}, 200),
        ]
        backends = [self.tls_backend(cert=cert, name=name) for name, cert, _, _ in cases]
        s = self.start_upstream([(b, tls) for b, (_, _, tls, _) in zip(backends, cases)])
        for i, (name, _, _, want) in enumerate(cases):
            r = self.get(s, "/p%d/v" % i)
            self.assertEqual(r.status, want, "%s: %r" % (name, r))
            if want == 200:
                self.assertEqual(r.json()["backend"], name)
            # The backend completed a handshake only where verification is off.
            self.assertEqual(len(backends[i].connections), 1 if want == 200 else 0,
                             "%s: %s" % (name, backends[i].stderr()))
        log = wait_until(lambda: "certificate_verify_failed" in s.stderr() + s.stdout(), 3)
        self.assertTrue(log, "no log line for the failed verification")
        self.assertTrue(s.alive())

    def test_idle_connection_not_shared_between_pools_with_different_tls(self):
        # Two pools to the same address: an idle keep-alive connection opened for one must not
        # carry the other's requests when their TLS settings differ.
        rogue = self.tls_backend(cert=PKI.rogue_backend, name="rogue")
        s = self.start_upstream([(rogue, {"verify": False}), (rogue, {"ca": PKI.ca})])
        r = self.get(s, "/p0/first")
        self.assertEqual(r.status, 200, r)
        r = self.get(s, "/p1/must-verify")
        self.assertEqual(r.status, 502, "pool p1 (verify against the test CA) was served over "
                         "pool p0's unverified connection: %r" % r)

    def test_idle_plain_connection_not_used_by_tls_pool(self):
        # A plain pool and a TLS pool to the same plain backend: the TLS pool must not send
        # its request in cleartext over the plain pool's idle connection. (Its own TLS
        # connection gets no ServerHello from a plain backend: 502 or, after the short
        # response_timeout, 504 -- anything but the backend's answer.)
        b = self.start_backend()
        s2 = self.start_sluice({"pools": [{"name": "plain", "backends": [{"address": b.address}]},
                                          {"name": "tls", "backends": [{"address": b.address}],
                                           "connect_timeout": "2s", "response_timeout": "2s",
                                           "tls": Table(ca=PKI.ca)}],
                                "routes": [{"pool": "plain", "path_prefix": "/plain/"},
                                           {"pool": "tls", "path_prefix": "/tls/"}]})
        r = self.get(s2, "/plain/first")
        self.assertEqual(r.status, 200, r)
        r = self.get(s2, "/tls/secret")
        self.assertIn(r.status, (502, 504),
                      "a [pools.tls] pool sent its request in cleartext: %r" % r)
        self.assertNotIn("/tls/secret", b.count()["paths"])

    def test_mutual_tls(self):
        strict = self.tls_backend(client_ca=PKI.client_ca[0], name="strict")
        strict2 = self.tls_backend(client_ca=PKI.client_ca[0], name="strict-no-cert")
        s = self.start_upstream([
            (strict, {"ca": PKI.ca, "cert": PKI.upstream_client[0], "key": PKI.upstream_client[1]}),
            (strict2, {"ca": PKI.ca}),
        ])
        r = self.get(s, "/p0/m", headers=[("X-Client-Cert-Subject", "/CN=forged")])
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["tls"]["client_subject"], "/CN=sluice-upstream")
        self.assertNotIn("x-client-cert-subject", {k.lower() for k, v in body["headers"]})
        r = self.get(s, "/p1/m")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(strict2.connections, [], strict2.stderr())
        self.assertEqual(len(strict.connections), 1, strict.stderr())

    def test_session_reuse_across_upstream_connections(self):
        b13 = self.tls_backend(name="tls13")
        b12 = self.tls_backend(name="tls12", maximum=ssl.TLSVersion.TLSv1_2)
        s = self.start_upstream([(b13, {"ca": PKI.ca, "sni": "backend.test"}),
                                 (b12, {"ca": PKI.ca, "sni": "backend.test"})])
        for i, version in ((0, "TLSv1.3"), (1, "TLSv1.2")):
            with self.subTest(version=version):
                seen = []
                for n in range(4):
                    # ?close: the backend closes after answering, so each request needs a new
                    # upstream connection (and handshake).
                    r = self.get(s, "/p%d/r%d?close=1" % (i, n))
                    self.assertEqual(r.status, 200, r)
                    t = r.json()["tls"]
                    seen.append((t["n"], t["version"], t["reused"]))
                self.assertEqual([x[0] for x in seen], [1, 2, 3, 4], seen)
                self.assertEqual({x[1] for x in seen}, {version})
                self.assertEqual([x[2] for x in seen], [False, True, True, True],
                                 "%s upstream sessions not resumed: %r" % (version, seen))


if __name__ == "__main__":
    harness.main()
