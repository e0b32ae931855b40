"""TLS helpers for sluice's integration tests (test_tls.py).

- Pki: throw-away certificates made with the openssl CLI in a temp dir (never committed): a root
  CA, an intermediate CA, ECDSA P-256 and RSA leaves with chosen SANs, client certificates, an
  expired and a not-yet-valid certificate (via `openssl ca -startdate/-enddate`), and a key that
  does not match its certificate;
- s_client(): `openssl s_client` as a real peer, with the fields of its report parsed;
- client_context() / TlsConn: Python ssl clients (http1.RawConn over TLS);
- client_hello(): the bytes of a real ClientHello (Python ssl over memory BIOs), to truncate;
- TlsBackend: a servers.ThreadedServer speaking HTTPS/1.1 that answers JSON describing the TLS
  session sluice opened toward it: SNI, version, resumption, client certificate subject.

Only 127.0.0.1. Every loop and wait is bounded in count and time.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

import http1
from http1 import RawConn
from net import LOCALHOST
from procs import env_without_proxy, run_tool
from servers import ThreadedServer

OPENSSL = "/usr/bin/openssl"

# A minimal config of our own, so that the system openssl.cnf adds nothing unexpected.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[root_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[intermediate_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ca]
default_ca = ca_section
[ca_section]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
organizationName = optional
"""


class Pki:
    """Certificates under `directory` (a fresh temp dir by default; remove() deletes it)."""

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="sluice-tls-pki-")
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(_OPENSSL_CNF.format(dir=self.dir))
        os.makedirs(os.path.join(self.dir, "newcerts"), exist_ok=True)
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        self._serial = int.from_bytes(os.urandom(6), "big")

    def path(self, name):
        return os.path.join(self.dir, name)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def openssl(self, *args, input=None):
        env = dict(os.environ, OPENSSL_CONF=self.cnf)
        r = subprocess.run([OPENSSL] + list(args), capture_output=True, timeout=60, env=env,
                           input=input, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                              r.stderr.decode(errors="replace")))
        return r.stdout

    def _next_serial(self):
        self._serial += 1
        return "0x%x" % self._serial

    def key(self, name, kind="ec"):
        path = self.path(name + ".key")
        if kind == "ec":
            self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out", path)
        else:
            self.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                         "-out", path)
        os.chmod(path, 0o600)
        return path

    def root(self, name, cn, days=30):
        """A self-signed CA: (cert path, key path)."""
        key = self.key(name)
        cert = self.path(name + ".pem")
        self.openssl("req", "-x509", "-new", "-key", key, "-out", cert, "-days", str(days),
                     "-subj", "/CN=" + cn, "-config", self.cnf, "-extensions", "root_ext",
                     "-set_serial", self._next_serial())
        return cert, key

    def _csr(self, name, subj, kind):
        key = self.key(name, kind)
        csr = self.path(name + ".csr")
        self.openssl("req", "-new", "-key", key, "-out", csr, "-subj", subj, "-config", self.cnf)
        return key, csr

    def _ext(self, name, lines):
        path = self.path(name + ".ext")
        with open(path, "w") as f:
            f.write("[ext]\n" + "\n".join(lines) + "\n")
        return path

    def intermediate(self, name, cn, issuer, days=30):
        key, csr = self._csr(name, "/CN=" + cn, "ec")
        cert = self.path(name + ".pem")
        self.openssl("x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1],
                     "-set_serial", self._next_serial(), "-days", str(days), "-sha256",
                     "-extfile", self.cnf, "-extensions", "intermediate_ext", "-out", cert)
        return cert, key

    def _leaf_ext(self, name, sans, client):
        lines = ["basicConstraints = critical, CA:FALSE",
                 "keyUsage = critical, digitalSignature, keyEncipherment",
                 "extendedKeyUsage = " + ("clientAuth" if client else "serverAuth, clientAuth"),
                 "authorityKeyIdentifier = keyid"]
        if sans:
            lines.append("subjectAltName = " + ",".join(sans))
        return self._ext(name, lines)

    def leaf(self, name, issuer, subj, sans=(), client=False, kind="ec", days=30, chain=()):
        """A certificate signed by issuer (cert, key). The .crt file holds the leaf followed by
        `chain` (paths of intermediate certificates). Returns (cert path, key path)."""
        key, csr = self._csr(name, subj, kind)
        leaf_only = self.path(name + ".leaf.pem")
        ext = self._leaf_ext(name, sans, client)
        self.openssl("x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1],
                     "-set_serial", self._next_serial(), "-days", str(days), "-sha256",
                     "-extfile", ext, "-extensions", "ext", "-out", leaf_only)
        cert = self.path(name + ".crt")
        with open(cert, "w") as out:
            for p in [leaf_only] + list(chain):
                with open(p) as f:
                    out.write(f.read())
        return cert, key

    def dated_leaf(self, name, issuer, subj, sans, startdate, enddate):
        """A leaf with an explicit validity period (YYYYMMDDHHMMSSZ), through `openssl ca`:
        expired (both dates in the past) or not valid yet (both in the future)."""
        key, csr = self._csr(name, subj, "ec")
        ext = self._leaf_ext(name, sans, False)
        cert = self.path(name + ".crt")
        self.openssl("ca", "-batch", "-config", self.cnf, "-cert", issuer[0], "-keyfile",
                     issuer[1], "-in", csr, "-out", cert, "-notext", "-startdate", startdate,
                     "-enddate", enddate, "-extfile", ext, "-extensions", "ext")
        return cert, key

    # -- facts about a certificate

    def der(self, cert):
        """DER bytes of the first certificate in a PEM file."""
        with open(cert) as f:
            text = f.read()
        m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
        return base64.b64decode("".join(m.group(1).split()))

    def fingerprint(self, cert):
        return hashlib.sha256(self.der(cert)).hexdigest()

    def spki_sha256_b64(self, cert):
        """base64(sha256(SubjectPublicKeyInfo)) of the leaf: Chromium's
        --ignore-certificate-errors-spki-list format."""
        pub = self.openssl("x509", "-in", cert, "-noout", "-pubkey")
        der = self.openssl("pkey", "-pubin", "-outform", "DER", input=pub)
        return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# openssl s_client


class SClient:
    """The result of one s_client run: .rc, .out (stdout), .err (stderr), parsed fields."""

    def __init__(self, rc, out, err):
        self.rc = rc
        self.out = out
        self.err = err
        self.text = out + "\n" + err

    def field(self, pattern):
        m = re.search(pattern, self.text, re.M)
        return m.group(1).strip() if m else None

    @property
    def subject(self):
        """The leaf's subject line, e.g. 'CN = a.test'."""
        return self.field(r"^subject=(.*)$")

    @property
    def protocol(self):
        return self.field(r"^\s*Protocol\s*:\s*(\S+)")

    @property
    def cipher(self):
        return self.field(r"^\s*Cipher\s*:\s*(\S+)")

    @property
    def alpn(self):
        if re.search(r"^No ALPN negotiated", self.text, re.M):
            return None
        return self.field(r"^ALPN protocol: (.*)$")

    @property
    def reused(self):
        """'Reused' or 'New' (the line 'Reused, TLSv1.3, Cipher is ...'), None if no session."""
        return self.field(r"^(New|Reused), ")

    @property
    def verify_code(self):
        v = self.field(r"Verify return code: (\d+)")
        return int(v) if v is not None else None

    @property
    def public_key_bits(self):
        v = self.field(r"^Server public key is (\d+) bit")
        return int(v) if v is not None else None

    @property
    def handshake_ok(self):
        """A full handshake happened: a session with a real cipher was reported."""
        c = self.cipher
        return c is not None and c not in ("0000", "(NONE)")

    def __repr__(self):
        return "<s_client rc=%s\n--- stdout\n%s\n--- stderr\n%s>" % (self.rc, self.out[-3000:],
                                                                     self.err[-2000:])


def s_client(port, args=(), stdin=b"", timeout=20, ca=None):
    """Runs `openssl s_client -connect 127.0.0.1:port` with args; stdin is sent and then the
    tool exits at its EOF (after -ign_eof, it waits for the server to close)."""
    cmd = [OPENSSL, "s_client", "-connect", "%s:%d" % (LOCALHOST, port)]
    if ca:
        cmd += ["-CAfile", ca]
    cmd += list(args)
    r = run_tool(cmd, input=stdin, timeout=timeout)
    return SClient(r.returncode, r.stdout.decode("utf-8", "replace"),
                   r.stderr.decode("utf-8", "replace"))


def s_client_renegotiate(port, args, timeout=15.0):
    """Runs s_client (TLS 1.2 args), waits for its handshake, types "R" (renegotiate), waits for
    the outcome, and returns the whole transcript (stdout and stderr)."""
    cmd = [OPENSSL, "s_client", "-connect", "%s:%d" % (LOCALHOST, port)] + list(args)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env_without_proxy())
    chunks = []

    def pump():
        for _ in range(100000):
            data = proc.stdout.read1(65536)
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    text = lambda: b"".join(chunks).decode("utf-8", "replace")  # noqa: E731
    deadline = time.monotonic() + timeout
    try:
        # The session summary ends the handshake report.
        while "Verify return code" not in text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            proc.stdin.write(b"R\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        while not re.search(r"no renegotiation|alert|RENEGOTIATING[\s\S]*---", text()) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        reader.join(timeout=5)
        proc.stdout.close()
    return text()


# ---------------------------------------------------------------------------------------------
# Python ssl clients


def client_context(ca=None, cert=None, key=None, verify=True, minimum=None, maximum=None,
                   alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TlsConn(RawConn):
    """A RawConn (strict HTTP/1.1 client) over TLS: same request()/read_response() API;
    .ragged_eof tells whether the server ended without close_notify."""

    def __init__(self, port, ctx, server_hostname="a.test", timeout=5.0, session=None):
        super().__init__(port, timeout=timeout, connect_timeout=timeout, ssl_context=ctx,
                         server_hostname=server_hostname, session=session)

    def peer_der(self):
        return self.sock.getpeercert(binary_form=True)


def client_hello(server_hostname="a.test", minimum=None, maximum=None):
    """The bytes of the ClientHello Python's OpenSSL sends (memory BIOs, no socket)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def legacy_client_hello(version=0x0301):
    """A hand-made ClientHello offering only TLS 1.0 (version 0x0301) or 1.1 (0x0302), with
    ECDHE suites and the groups/point-format extensions a TLS 1.0 client would send."""
    suites = [0xC013, 0xC014, 0xC009, 0xC00A, 0x002F, 0x0035]
    body = version.to_bytes(2, "big") + os.urandom(32) + b"\x00"
    body += (2 * len(suites)).to_bytes(2, "big") + b"".join(s.to_bytes(2, "big") for s in suites)
    body += b"\x01\x00"  # compression: null
    groups = b"\x00\x1d\x00\x17"
    ext = b"\x00\x0a" + (len(groups) + 2).to_bytes(2, "big") + len(groups).to_bytes(2, "big") + groups
    ext += b"\x00\x0b\x00\x02\x01\x00"  # ec_point_formats: uncompressed
    body += len(ext).to_bytes(2, "big") + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


# ---------------------------------------------------------------------------------------------
# A TLS backend (Python ssl), in threads


class TlsBackend(ThreadedServer):
    """An HTTPS/1.1 server on 127.0.0.1:<free>. Every request is answered with JSON: path,
    headers, and the TLS facts of its connection (sni, version, reused, client_subject,
    connection number). `?close=1` answers with Connection: close and closes; `?delay=S` waits
    S seconds (at most 5) before answering. .connections: one dict per completed handshake;
    handshake and later errors are recorded in .errors. ctx: a server SSLContext (cert loaded,
    verify mode set)."""

    def __init__(self, ctx, name="tlsbackend", lifetime=60.0):
        self.ctx = ctx
        self.connections = []
        self.errors = []
        self._sni = {}
        ctx.sni_callback = self._on_sni
        super().__init__(backlog=32, lifetime=lifetime, name=name)

    def _on_sni(self, sslsock, name, ctx):
        with self.lock:
            self._sni[id(sslsock)] = name
        return None

    def handle(self, raw, peer):
        raw.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.errors.append(repr(e))
            return
        self.track(tls)
        with self.lock:
            sni = self._sni.pop(id(tls), None)
        peer_cert = tls.getpeercert()
        subject = None
        if peer_cert:
            short = {"commonName": "CN", "organizationName": "O", "countryName": "C"}
            subject = "/" + "/".join("%s=%s" % (short.get(k, k), v)
                                     for rdn in peer_cert.get("subject", ()) for k, v in rdn)
        info = {"sni": sni, "version": tls.version(), "reused": tls.session_reused,
                "client_subject": subject}
        with self.lock:
            info["n"] = len(self.connections) + 1
            self.connections.append(info)
        stream = http1.Stream(tls)
        try:
            for _ in range(1000):
                req = http1.read_request(stream, time.monotonic() + 10)
                if req is None:
                    return
                close = req.q("close") is not None
                if req.q("delay") is not None:
                    time.sleep(min(5.0, float(req.q("delay"))))
                body = json.dumps({"backend": self.name, "method": req.method,
                                   "target": req.target, "headers": req.headers,
                                   "tls": info}).encode()
                resp = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n%s\r\n" % (len(body),
                                                        "Connection: close\r\n" if close else ""))
                tls.sendall(resp.encode("latin-1") + body)
                if close:
                    try:
                        tls.unwrap()
                    except (ssl.SSLError, OSError):
                        pass
                    return
        except (ssl.SSLError, OSError, ValueError, http1.Incomplete) as e:
            with self.lock:
                self.errors.append("after handshake: %r" % e)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def stderr(self):
        return "connections: %r\nerrors: %r\n" % (self.connections, self.errors)


def server_context(cert, key, client_ca=None, maximum=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if maximum:
        ctx.maximum_version = maximum
    return ctx
