"""The real client address: X-Forwarded-For, X-Forwarded-Proto/-Host and Forwarded believed only
from trusted_proxies (walked from the right), replaced from anyone else; the PROXY protocol (v1,
v2 with TLVs, v2 LOCAL, before TLS) only from trusted_proxies, with a header timeout; the
resolved address in the access log and in source_ip hashing.

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_client_address.py -v
"""

import json
import os
import socket
import ssl
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import LOCALHOST, RawConn, SluiceTestCase, Table, build_request, wait_until  # noqa: E402
import tlsutil  # noqa: E402
from http1 import Stream  # noqa: E402
from tlsutil import TlsConn, client_context  # noqa: E402

PKI = None


def setUpModule():
    global PKI
    pki = tlsutil.Pki()
    root = pki.root("root", "client address test CA")
    leaf = pki.leaf("a", root, "/CN=a.test", ["DNS:a.test", "IP:127.0.0.1"])
    PKI = (pki, root[0], leaf)


def tearDownModule():
    if PKI is not None:
        PKI[0].remove()


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, dst="127.0.0.1", sport=40000, dport=443):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (src, dst, sport, dport)).encode()


def proxy_v2(src=None, dst="10.0.0.1", sport=40000, dport=443, local=False, tlvs=b""):
    """A v2 header: PROXY over TCP4 (or LOCAL, without addresses)."""
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def echoed(r):
    """{lower-case header name: [values]} the echo backend saw."""
    out = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class ClientAddressCase(SluiceTestCase):
    def access_entries(self, s, n, timeout=5):
        """The first n access log entries (the log is written in batches)."""
        wait_until(lambda: len(s.access_log_lines()) >= n, timeout)
        lines = s.access_log_lines()
        self.assertGreaterEqual(len(lines), n, lines)
        return [json.loads(l) for l in lines]

    def metric(self, s, name, **labels):
        c = RawConn(s.admin_port)
        try:
            body = c.request("GET", "/metrics", headers=[("Connection", "close")]).body.decode()
        finally:
            c.close()
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in body.splitlines():
            if line.startswith(name + "{"):
                got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
                if got == want:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


class ForwardingHeaders(ClientAddressCase):
    def test_spoofed_headers_from_an_untrusted_client_are_replaced(self):
        b, s = self.start_proxy(listener={"trusted_proxies": ["10.0.0.0/8"]})
        r = s.request("GET", "/echo", headers=[("X-Forwarded-For", "6.6.6.6"),
                                               ("X-Forwarded-Proto", "https"),
                                               ("X-Forwarded-Host", "evil.example"),
                                               ("Forwarded", "for=6.6.6.6;proto=https")])
        self.assertEqual(r.status, 200, r)
        h = echoed(r)
        self.assertEqual(h["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(h["x-forwarded-proto"], ["http"])
        self.assertEqual(h["x-forwarded-host"], ["localhost"])
        self.assertNotIn("forwarded", h)
        self.assertEqual(self.access_entries(s, 1)[0]["client"], "127.0.0.1")

    def test_trusted_chain_is_walked_from_the_right(self):
        # sluice's peer (127.0.0.1) and 10.1.2.3 are trusted proxies: the client is the first
        # address from the right that is not one; what a client wrote left of it is dropped.
        b, s = self.start_proxy(listener={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]})
        r = s.request("GET", "/echo", headers=[
            ("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.1.2.3"),
            ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "app.example.com")])
        h = echoed(r)
        self.assertEqual(h["x-forwarded-for"], ["203.0.113.9, 10.1.2.3, 127.0.0.1"])
        self.assertEqual(h["x-forwarded-proto"], ["https"])
        self.assertEqual(h["x-forwarded-host"], ["app.example.com"])
        e = self.access_entries(s, 1)[0]
        self.assertEqual(e["client"], "203.0.113.9")

    def test_forwarded_header_when_the_proxies_write_it(self):
        b, s = self.start_proxy(listener={"trusted_proxies": ["127.0.0.0/8"],
                                          "forwarded_header": "forwarded"})
        r = s.request("GET", "/echo", headers=[
            ("Forwarded", 'for="[2001:db8::7]";proto=https;host=app.example.com'),
            ("X-Forwarded-For", "6.6.6.6")])  # not the header these proxies write: ignored
        h = echoed(r)
        self.assertEqual(h["x-forwarded-for"], ["2001:db8::7, 127.0.0.1"])
        self.assertEqual(h["forwarded"],
                         ['for="[2001:db8::7]", for=127.0.0.1;proto=https;host="app.example.com"'])
        self.assertEqual(self.access_entries(s, 1)[0]["client"], "2001:db8::7")

    def test_source_ip_hashing_uses_the_resolved_client(self):
        b = self.start_backend(nports=2)
        s = self.start_sluice({
            "listener": {"trusted_proxies": ["127.0.0.1"]},
            "pools": [{"name": "app", "balance": "consistent_hash", "hash_key": "source_ip",
                       "backends": [{"address": a} for a in b.addresses]}]})
        seen = {}
        for i in range(24):
            client = "198.51.100.%d" % (i % 12)
            r = s.request("GET", "/whoami", headers=[("X-Forwarded-For", client)])
            port = r.json()["port"]
            seen.setdefault(client, set()).add(port)
        self.assertTrue(all(len(p) == 1 for p in seen.values()), seen)
        self.assertEqual(len(set().union(*seen.values())), 2, "every client on one backend")


class ProxyProtocol(ClientAddressCase):
    def start(self, trusted=("127.0.0.1",), tls=False, **listener):
        l = {"proxy_protocol": True, "trusted_proxies": list(trusted), "header_timeout": "1s"}
        if tls:
            l["tls"] = Table(cert=PKI[2][0], key=PKI[2][1])
        l.update(listener)
        b = self.start_backend()
        s = self.start_sluice({"listener": l,
                               "pools": [{"name": "app", "backends": [{"address": b.address}]}]})
        s.wait_admin()
        return b, s

    def raw(self, s):
        sock = socket.create_connection((LOCALHOST, s.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_v1_sets_the_client(self):
        b, s = self.start()
        c = RawConn(s.port)
        self.conns.append(c)
        # The header and the request in one write: the bytes after the header are HTTP.
        c.send(proxy_v1("192.0.2.44") + build_request("GET", "/echo"))
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(echoed(r)["x-forwarded-for"], ["192.0.2.44"])
        # The next request on the connection is the same client's.
        r = c.request("GET", "/echo")
        self.assertEqual(echoed(r)["x-forwarded-for"], ["192.0.2.44"])
        self.assertEqual([e["client"] for e in self.access_entries(s, 2)],
                         ["192.0.2.44", "192.0.2.44"])

    def test_v2_with_tlvs_before_tls(self):
        b, s = self.start(tls=True)
        raw = socket.create_connection((LOCALHOST, s.port), timeout=5)
        tlvs = tlv(0x05, b"unique-id-123") + tlv(0x20, b"\x01\x00\x00\x00\x00")  # skipped
        raw.sendall(proxy_v2("198.51.100.7", tlvs=tlvs))
        # A TlsConn over the socket that carried the PROXY header.
        c = TlsConn.__new__(TlsConn)
        tls = client_context(PKI[1]).wrap_socket(raw, server_hostname="a.test",
                                                 suppress_ragged_eofs=False)
        tls.settimeout(5)
        Stream.__init__(c, tls, timeout=5.0)
        c.port = s.port
        self.conns.append(c)
        r = c.request("GET", "/echo", host="a.test")
        self.assertEqual(r.status, 200, r)
        h = echoed(r)
        self.assertEqual(h["x-forwarded-for"], ["198.51.100.7"])
        self.assertEqual(h["x-forwarded-proto"], ["https"])
        e = self.access_entries(s, 1)[0]
        self.assertEqual(e["client"], "198.51.100.7")
        self.assertTrue(e["tls_version"].startswith("TLSv1."), e)

    def test_v2_local_is_the_balancers_own_check(self):
        b, s = self.start(health_path="/healthz")
        c = RawConn(s.port)
        self.conns.append(c)
        c.send(proxy_v2(local=True) + build_request("GET", "/healthz"))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"200 OK: ok\n"), r)
        # An ordinary request over LOCAL is the peer's own.
        r = c.request("GET", "/echo")
        self.assertEqual(echoed(r)["x-forwarded-for"], ["127.0.0.1"])

    def test_truncated_header_is_closed_after_header_timeout(self):
        b, s = self.start()
        sock = self.raw(s)
        sock.sendall(proxy_v2("192.0.2.1")[:20])
        t0 = time.monotonic()
        sock.settimeout(5)
        self.assertEqual(sock.recv(100), b"")
        self.assertGreater(time.monotonic() - t0, 0.8)
        self.assertEqual(self.metric(s, "sluice_proxy_protocol_rejected_total", listener="public",
                                     reason="timeout"), 1)
        self.assertEqual(sum(b.count()["heads"].values()), 0)

    def test_invalid_header_is_refused(self):
        b, s = self.start()
        sock = self.raw(s)
        sock.sendall(build_request("GET", "/echo"))  # HTTP where the PROXY header belongs
        sock.settimeout(5)
        self.assertEqual(sock.recv(100), b"")
        self.assertEqual(self.metric(s, "sluice_proxy_protocol_rejected_total", listener="public",
                                     reason="invalid"), 1)
        sock2 = self.raw(s)
        sock2.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[:-2] + b"\n")  # bare LF
        self.assertEqual(sock2.recv(100), b"")
        self.assertEqual(sum(b.count()["heads"].values()), 0)

    def test_untrusted_peer_is_closed_at_once(self):
        b, s = self.start(trusted=("10.0.0.0/8",))
        before = self.metric(s, "sluice_proxy_protocol_rejected_total", listener="public",
                             reason="untrusted")  # the harness's readiness probe was one
        sock = self.raw(s)
        sock.sendall(proxy_v1("192.0.2.9") + build_request("GET", "/echo"))
        sock.settimeout(5)
        t0 = time.monotonic()
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"")
        self.assertLess(time.monotonic() - t0, 0.8)
        self.assertEqual(self.metric(s, "sluice_proxy_protocol_rejected_total", listener="public",
                                     reason="untrusted"), before + 1)
        self.assertEqual(sum(b.count()["heads"].values()), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
