#!/usr/bin/python3
"""Authentication at the edge through the real binary: the `jwt` and `api_key` filters.

- HTTP: a Bearer token let through with its claims forwarded; 401 with RFC 6750 challenges for
  a missing, expired or badly signed token, 403 without a required claim; the access log's
  `auth` field and sluice_auth_decisions_total; a token in the query never in the log;
- WebSocket upgrades with the token in a header and in a subprotocol, from Python `websockets`
  and Node `ws`: the app's real subprotocol is answered, the token never reaches the backend;
  the same statuses before any 101;
- headless Chromium opening WebSockets with the token in a cookie and in the query;
- on_expiry = "close": a token expiring mid-session closes the socket with 1008 at exp;
- a JWKS endpoint over TLS (jwks_server.py) rotating its keys while clients connect (a new kid
  works at the first try), then going down (the last good set keeps working, failures are
  counted), and a reload while it is down;
- API keys from a file, changed and reloaded.

Tokens are signed here: HS256 with the standard library, ES256 and RS256 with the openssl command
line and the committed test keys (tests/unit/data/jwt/).

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_auth.py -v
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import websockets  # noqa: E402
from harness import RawConn, wait_until  # noqa: E402
from jwks_server import JwksServer  # noqa: E402
from servers import PageServer  # noqa: E402
from tlsutil import Pki  # noqa: E402
from harness import SluiceTestCase, ws_route  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(harness.SOURCE_DIR, "tests", "unit", "data", "jwt")
NODE = shutil.which("node") or "/usr/bin/node"
CHROMIUM = "/usr/bin/chromium"
SECRET = b"an-hs256-secret-for-the-integration-tests"

# ---------------------------------------------------------------------------------------------
# Tokens


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def openssl_sign(key_file, data):
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file], input=data,
                          capture_output=True, check=True).stdout


def der_to_raw(der, size=32):
    """An ECDSA signature as DER (SEQUENCE of two INTEGERs) -> r || s, each `size` bytes."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02
        n = der[pos + 1]
        out += der[pos + 2:pos + 2 + n].lstrip(b"\0").rjust(size, b"\0")
        pos += 2 + n
    return out


def token(claims, alg="HS256", kid=None, key=None):
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    data = (b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    if alg == "HS256":
        sig = hmac.new(key or SECRET, data, hashlib.sha256).digest()
    elif alg == "ES256":
        sig = der_to_raw(openssl_sign(key or os.path.join(KEYS, "ec256.key"), data))
    elif alg == "RS256":
        sig = openssl_sign(key or os.path.join(KEYS, "rsa.key"), data)
    else:
        raise ValueError(alg)
    return data.decode() + "." + b64u(sig)


def claims(ttl=300, **more):
    c = {"sub": "alice", "exp": int(time.time()) + ttl}
    c.update(more)
    return c


def jwk_ec(pub_file, kid):
    text = subprocess.run(["openssl", "pkey", "-pubin", "-in", pub_file, "-text", "-noout"],
                          capture_output=True, check=True, text=True).stdout
    hexes = text.split("pub:")[1].split("ASN1")[0]
    raw = bytes.fromhex("".join(c for c in hexes if c in "0123456789abcdef"))
    assert raw[0] == 4 and len(raw) == 65
    return {"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64u(raw[1:33]), "y": b64u(raw[33:])}


def jwk_rsa(pub_file, kid):
    out = subprocess.run(["openssl", "rsa", "-pubin", "-in", pub_file, "-modulus", "-noout"],
                         capture_output=True, check=True, text=True).stdout
    n = int(out.strip().split("=", 1)[1], 16)
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64u_int(n), "e": b64u_int(65537)}


# ---------------------------------------------------------------------------------------------
# Config and observation


def jwt_filter(name="auth", **keys):
    lines = ["[[filters]]", 'name = "%s"' % name, 'type = "jwt"']
    for k, v in keys.items():
        lines.append("%s = %s" % (k, v if isinstance(v, harness.Raw) else json.dumps(v)))
    return "\n".join(lines) + "\n"



def decisions(sluice, filter_name, result, reason):
    return sluice.admin.metrics().get("sluice_auth_decisions_total", filter=filter_name,
                                      reason=reason, result=result)


def refreshes(sluice, filter_name, result):
    return sluice.admin.metrics().get("sluice_filter_jwks_refreshes_total", filter=filter_name,
                                      result=result)


def log_entries(sluice):
    out = []
    for line in sluice.access_log_lines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def echo_header(echo, name):
    for k, v in echo["headers"]:
        if k.lower() == name.lower():
            return v
    return None


def ws_connect(url, timeout=10, **kw):
    """Connects with Python websockets, sends one text and reads its echo; returns
    (protocol, echo) or raises (InvalidStatusCode for a refused upgrade)."""
    async def run():
        async with websockets.connect(url, open_timeout=timeout, close_timeout=2, **kw) as ws:
            await ws.send("hello")
            echo = await asyncio.wait_for(ws.recv(), timeout)
            return ws.subprotocol, echo
    return asyncio.run(run())


def ws_status(url, **kw):
    """The HTTP status of a refused upgrade (None when it succeeded)."""
    try:
        ws_connect(url, **kw)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code, e.headers
    return None, None


# ---------------------------------------------------------------------------------------------


class JwtHttp(SluiceTestCase):
    def start(self, **keys):
        extra = jwt_filter(**keys)
        # One worker whatever SLUICE_TEST_WORKERS says: the verification cache is per worker,
        # and the tests count cached verifications.
        self.backend, self.sluice = self.start_proxy(route={"filters": ["auth"]}, extra=extra,
                                                     server={"workers": 1})
        self.sluice.wait_admin()

    def test_header_token_claims_and_refusals(self):
        secret = os.path.join(self.tmpdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET + b"\n")  # the line ending is not part of the secret
        self.start(secrets=[secret], algorithms=["HS256", "ES256"],
                   keys=[os.path.join(KEYS, "ec256.pub")], leeway="0s",
                   required_claims=["exp", "sub"],
                   forward_claims=harness.Raw('{ sub = "X-User-Id", tenant = "X-Tenant" }'))
        good = token(claims(tenant="acme"))
        r = self.sluice.request("GET", "/echo/ok", headers=[
            ("Authorization", "Bearer " + good), ("X-User-Id", "mallory")])
        self.assertEqual(r.status, 200, r)
        echo = r.json()
        self.assertEqual(echo_header(echo, "X-User-Id"), "alice")
        self.assertEqual(echo_header(echo, "X-Tenant"), "acme")
        self.assertEqual(sum(1 for k, _ in echo["headers"] if k.lower() == "x-user-id"), 1)
        # ES256 through the PEM key, twice: the second is answered by the cache.
        es = token(claims(), alg="ES256")
        for _ in range(2):
            r = self.sluice.request("GET", "/echo/es", headers=[("Authorization", "Bearer " + es)])
            self.assertEqual(r.status, 200, r)

        r = self.sluice.request("GET", "/echo/none")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
        r = self.sluice.request("GET", "/echo/expired", headers=[
            ("Authorization", "Bearer " + token(claims(ttl=-10)))])
        self.assertEqual(r.status, 401, r)
        self.assertRegex(r.header("WWW-Authenticate"),
                         r'^Bearer error="invalid_token", error_description="exp \d+ is 1\d s in '
                         r'the past"$')
        r = self.sluice.request("GET", "/echo/forged", headers=[
            ("Authorization", "Bearer " + token(claims(), key=b"x" * 40))])
        self.assertEqual(r.status, 401, r)
        r = self.sluice.request("GET", "/echo/nosub", headers=[
            ("Authorization", "Bearer " + token({"exp": int(time.time()) + 60}))])
        self.assertEqual(r.status, 403, r)
        self.assertIn('error="insufficient_scope"', r.header("WWW-Authenticate"))
        self.assertEqual(self.backend.count()["paths"], ["/echo/ok", "/echo/es", "/echo/es"])

        m = self.sluice.admin.metrics()
        get = lambda result, reason: m.get("sluice_auth_decisions_total",  # noqa: E731
                                           filter="auth", reason=reason, result=result)
        self.assertEqual(get("allow", "verified"), 2)
        self.assertEqual(get("allow", "cached"), 1)
        self.assertEqual(get("deny", "missing_token"), 1)
        self.assertEqual(get("deny", "expired"), 1)
        self.assertEqual(get("deny", "bad_signature"), 1)
        self.assertEqual(get("deny", "missing_claim"), 1)

        entries = wait_until(lambda: len(log_entries(self.sluice)) >= 7 and log_entries(self.sluice),
                             5)
        self.assertTrue(entries)
        by_path = {e["path"]: e for e in entries}
        self.assertEqual(by_path["/echo/ok"]["auth"], "auth:allow:verified")
        self.assertEqual(by_path["/echo/expired"]["auth"], "auth:deny:expired")
        self.assertEqual(by_path["/echo/expired"]["status"], 401)
        self.assertIn("expired", by_path["/echo/expired"]["error"])
        self.assertEqual(by_path["/echo/nosub"]["auth"], "auth:deny:missing_claim")
        log_text = "\n".join(self.sluice.access_log_lines())
        self.assertNotIn(good.split(".")[2], log_text)

    def test_query_token_stripped_and_never_logged(self):
        secret = os.path.join(self.tmpdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        self.start(secrets=[secret], token_from=["query:access_token"], strip_token=False)
        t = token(claims())
        r = self.sluice.request("GET", "/echo/q?a=1&access_token=%s&b=2" % t)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/echo/q?a=1&access_token=%s&b=2" % t)
        r = self.sluice.request("GET", "/echo/bad?access_token=%s" % token(claims(ttl=-100)))
        self.assertEqual(r.status, 401, r)
        entries = wait_until(lambda: len(log_entries(self.sluice)) >= 2 and log_entries(self.sluice),
                             5)
        self.assertEqual([e["path"] for e in entries],
                         ["/echo/q?a=1&access_token=REDACTED&b=2", "/echo/bad?access_token=REDACTED"])
        self.assertNotIn(t.split(".")[2], "\n".join(self.sluice.access_log_lines()))


class JwtWebSocket(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.secret = os.path.join(self.tmpdir, "secret")
        with open(self.secret, "wb") as f:
            f.write(SECRET)

    def start(self, **keys):
        keys.setdefault("secrets", [self.secret])
        keys.setdefault("token_from", ["header:Authorization", "subprotocol"])
        self.b, self.s = self.start_ws_proxy(routes=[ws_route(filters=["auth"])],
                                             extra=jwt_filter(**keys))
        self.s.wait_admin()
        return "ws://127.0.0.1:%d" % self.s.port

    def test_python_header_and_subprotocol(self):
        base = self.start()
        t = token(claims())
        proto, echo = ws_connect(base + "/ws/header", extra_headers={"Authorization": "Bearer " + t},
                                 subprotocols=["chat"])
        self.assertEqual((proto, echo), ("chat", "hello"))
        # The token as a subprotocol beside the app's own: the backend sees (and answers) only
        # "chat"; the token never reaches it.
        proto, echo = ws_connect(base + "/ws/proto", subprotocols=["chat", t])
        self.assertEqual((proto, echo), ("chat", "hello"))
        opens = [e for e in self.b.events() if e["ev"] == "open"]
        self.assertEqual([e["path"] for e in opens], ["/ws/header", "/ws/proto"])
        hdrs = {k.lower(): v for k, v in opens[1]["headers"]}
        self.assertEqual(hdrs.get("sec-websocket-protocol"), "chat")
        self.assertNotIn(t, json.dumps(opens[1]))
        # Refusals come before any 101, and the backend never sees them.
        status, headers = ws_status(base + "/ws/none", subprotocols=["chat"])
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("WWW-Authenticate"), "Bearer")
        status, headers = ws_status(base + "/ws/expired",
                                    subprotocols=["chat", token(claims(ttl=-120))])
        self.assertEqual(status, 401)
        self.assertIn("invalid_token", headers.get("WWW-Authenticate"))
        self.assertEqual(len([e for e in self.b.events() if e["ev"] == "open"]), 2)
        self.assertEqual(decisions(self.s, "auth", "deny", "missing_token"), 1)
        entries = wait_until(lambda: len(log_entries(self.s)) >= 4 and log_entries(self.s), 10)
        upgraded = [e for e in entries if e["status"] == 101]
        self.assertEqual([e["auth"] for e in upgraded], ["auth:allow:verified", "auth:allow:cached"])

    def test_node_header_and_subprotocol(self):
        # packaging/setup.sh test installs node and the ws module.
        self.assertTrue(os.path.isfile(NODE) and
                        os.path.isdir(os.path.join(HERE, "node_modules", "ws")),
                        "node and tests/integration/node_modules/ws are needed")
        base = self.start()
        t = token(claims(), alg="HS256")

        def node(path, *args):
            p = subprocess.run([NODE, os.path.join(HERE, "ws_client.js"), base + path] + list(args),
                               capture_output=True, timeout=60, cwd=HERE)
            lines = p.stdout.decode().strip().splitlines()
            self.assertTrue(lines, p.stderr.decode()[-2000:])
            return json.loads(lines[-1])

        r = node("/node/header", "--header", "Authorization: Bearer " + t, "--protocol", "chat")
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["protocol"], "chat")
        r = node("/node/proto", "--protocol", "chat", "--protocol", t)
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["protocol"], "chat")
        r = node("/node/none", "--protocol", "chat")
        self.assertFalse(r["ok"])
        self.assertEqual(r.get("http_status"), 401, r)
        opens = [e for e in self.b.events() if e["ev"] == "open"]
        self.assertEqual([e["path"] for e in opens], ["/node/header", "/node/proto"])
        for e in opens:
            self.assertEqual({k.lower(): v for k, v in e["headers"]}.get("sec-websocket-protocol"),
                             "chat")

    def test_token_expiring_mid_session_closes_with_1008(self):
        base = self.start(on_expiry="close", leeway="0s")
        exp = int(time.time()) + 3
        t = token({"sub": "alice", "exp": exp})

        async def run():
            async with websockets.connect(base + "/ws/expiring", subprotocols=["chat", t],
                                          close_timeout=2) as ws:
                await ws.send("still here")
                self.assertEqual(await ws.recv(), "still here")
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except websockets.exceptions.ConnectionClosed as e:
                    return time.time(), e.code, e.reason
                return time.time(), None, None

        closed_at, code, reason = asyncio.run(run())
        self.assertEqual((code, reason), (1008, "token expired"))
        # At exp: not before it, and soon after (an ASan build on a busy machine is slow).
        self.assertGreaterEqual(closed_at, exp - 0.05)
        self.assertLess(closed_at, exp + 1.5)
        cid = self.b.conn_id("/ws/expiring")
        ev = self.b.wait_close(cid)
        self.assertEqual(ev["code"], 1001)
        self.assertEqual(decisions(self.s, "auth", "deny", "session_expired"), 1)
        entries = wait_until(lambda: log_entries(self.s), 5)
        self.assertEqual(entries[-1]["ws_close_code"], 1008)
        self.assertEqual(entries[-1]["auth"], "auth:allow:verified auth:deny:session_expired")


class JwtBrowser(SluiceTestCase):
    PAGE = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>auth</title></head><body><script>
(function () {
  var log = [];
  function report(text) { fetch("/report?" + encodeURIComponent(text)).catch(function () {}); }
  function open(path, next) {
    var ws = new WebSocket("ws://127.0.0.1:%(port)d" + path, ["chat"]);
    ws.onopen = function () { ws.send("from " + path); };
    ws.onmessage = function (ev) { log.push(path + ":echo:" + ev.data + ":" + ws.protocol); ws.close(4000); };
    ws.onclose = function (ev) { log.push(path + ":close:" + ev.code); next(); };
  }
  document.cookie = "access_token=%(cookie)s; path=/";
  open("/ws/cookie", function () {
    document.cookie = "access_token=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/";
    open("/ws/query?access_token=%(query)s", function () {
      open("/ws/none", function () { report(log.join(",")); });
    });
  });
})();
</script></body></html>
"""

    def test_chromium_cookie_and_query(self):
        secret = os.path.join(self.tmpdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        port = harness.free_port()
        extra = jwt_filter(secrets=[secret], strip_token=True,
                           token_from=["cookie:access_token", "query:access_token"])
        self.b, s = self.start_ws_proxy(routes=[ws_route(filters=["auth"])], extra=extra,
                                        listener={"listen": "127.0.0.1:%d" % port})
        cookie_token = token(claims(sub="cookie-user"))
        query_token = token(claims(sub="query-user"))
        page = PageServer(self.PAGE % {"port": port, "cookie": cookie_token, "query": query_token})
        self.addCleanup(page.stop)
        report = self.run_chromium("http://127.0.0.1:%d/page" % page.port, page)
        self.assertEqual(report, "/ws/cookie:echo:from /ws/cookie:chat,/ws/cookie:close:4000,"
                                 "/ws/query?access_token=%s:echo:from /ws/query?access_token=%s:chat,"
                                 "/ws/query?access_token=%s:close:4000,/ws/none:close:1006"
                         % ((query_token,) * 3))
        opens = [e for e in self.b.events() if e["ev"] == "open"]
        # The query token was stripped before the backend; the cookie stays (strip_token covers
        # headers and query parameters).
        self.assertEqual([e["path"] for e in opens], ["/ws/cookie", "/ws/query"])
        cookie = {k.lower(): v for k, v in opens[0]["headers"]}.get("cookie")
        self.assertEqual(cookie, "access_token=" + cookie_token)

    def run_chromium(self, url, page, timeout=45.0):
        profile = os.path.join(self.tmpdir, "chromium-profile")
        os.makedirs(profile, exist_ok=True)
        out = open(os.path.join(self.tmpdir, "chromium.log"), "wb")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["HOME"] = self.tmpdir
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions",
               "--no-proxy-server", "--user-data-dir=" + profile, url]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)

        def reported():
            for r in list(page.requests):
                line = r.split("\r\n")[0]
                if line.startswith("GET /report?"):
                    return urllib.parse.unquote(line.split(" ")[1][len("/report?"):])
            return None
        try:
            report = wait_until(lambda: reported() or proc.poll() is not None, timeout, 0.1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            out.close()
        if isinstance(report, str):
            return report
        with open(os.path.join(self.tmpdir, "chromium.log"), "rb") as f:
            self.fail("no report from the page: %s" % f.read().decode("utf-8", "replace")[-3000:])


class RemoteJwks(SluiceTestCase):
    def setUp(self):
        super().setUp()
        self.pki = Pki()
        self.addCleanup(self.pki.remove)
        ca = self.pki.root("ca", "jwks test CA")
        cert, key = self.pki.leaf("jwks", ca, "/CN=jwks", sans=["IP:127.0.0.1"])
        self.ca = ca[0]
        self.k1 = jwk_ec(os.path.join(KEYS, "ec256.pub"), "k1")
        self.k2 = jwk_rsa(os.path.join(KEYS, "rsa.pub"), "k2")
        self.jwks = JwksServer(cert, key, document={"keys": [self.k1]})
        self.addCleanup(self.jwks.stop)

    def config(self):
        # A long interval: what refreshes the set here is an unknown kid, or a failure's retry.
        return jwt_filter(jwks_url=self.jwks.url, jwks_ca=self.ca, jwks_refresh="1h",
                          jwks_min_refresh="1s", jwks_timeout="2s", algorithms=["ES256", "RS256"],
                          token_from=["header:Authorization", "subprotocol"])

    def test_rotation_while_clients_connect_then_the_issuer_goes_down(self):
        self.b, self.s = self.start_ws_proxy(routes=[ws_route(filters=["auth"])],
                                             extra=self.config())
        self.s.wait_admin()
        base = "ws://127.0.0.1:%d" % self.s.port
        t1 = token(claims(), alg="ES256", kid="k1")
        t2 = token(claims(), alg="RS256", kid="k2", key=os.path.join(KEYS, "rsa.key"))
        # The first fetch may still be under way: the first upgrade waits for it.
        self.assertEqual(ws_connect(base + "/ws/a", subprotocols=["chat", t1]), ("chat", "hello"))
        self.assertEqual(ws_status(base + "/ws/b", subprotocols=["chat", t2])[0], 401)

        # Rotation: k2 published while clients keep connecting with k1; a token signed with
        # the new key works at its first try (its unknown kid makes sluice fetch at once).
        failures = []

        async def clients(n):
            for i in range(n):
                try:
                    async with websockets.connect(base + "/ws/loop", subprotocols=["chat", t1],
                                                  close_timeout=2) as ws:
                        await ws.send("x")
                        await ws.recv()
                except Exception as e:  # noqa: BLE001 (any failure counts)
                    failures.append(repr(e))
        time.sleep(1.2)  # past jwks_min_refresh since the refused k2 token asked for a fetch
        self.jwks.set({"keys": [self.k1, self.k2]})
        fetches = self.jwks.fetches

        async def both():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(clients(20))
            r2 = await loop.run_in_executor(None, lambda: ws_connect(base + "/ws/new",
                                                                     subprotocols=["chat", t2]))
            await task
            return r2
        self.assertEqual(asyncio.run(both()), ("chat", "hello"))
        self.assertEqual(failures, [])
        self.assertEqual(self.jwks.fetches, fetches + 1)

        # The issuer goes down: a token with an unknown kid makes sluice fetch, which fails
        # (counted, retried sooner than the interval); both keys keep working.
        self.jwks.stop()
        time.sleep(1.1)  # past jwks_min_refresh since k2's fetch
        t9 = token(claims(), alg="ES256", kid="k9")
        self.assertEqual(ws_status(base + "/ws/k9", subprotocols=["chat", t9])[0], 401)
        wait_until(lambda: refreshes(self.s, "auth", "error") >= 2, 10)
        self.assertGreaterEqual(refreshes(self.s, "auth", "error"), 2)
        for t in (t1, t2):
            self.assertEqual(ws_connect(base + "/ws/down", subprotocols=["chat", t]),
                             ("chat", "hello"))
        self.assertGreaterEqual(refreshes(self.s, "auth", "ok"), 2)
        self.assertIn("the last good key set stays in force", self.s.stderr())

        # A reload while it is down: the new filter starts with the last good set.
        c = RawConn(self.s.admin_port)
        r = c.request("POST", "/api/reload", headers=[("Connection", "close")])
        c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(ws_connect(base + "/ws/reloaded", subprotocols=["chat", t2]),
                         ("chat", "hello"))
        # Back up with k1 withdrawn: the next retry drops it.
        self.jwks.set({"keys": [self.k2]})
        self.jwks.start()
        wait_until(lambda: ws_status(base + "/ws/gone", subprotocols=["chat", t1])[0] == 401, 20)
        self.assertEqual(ws_status(base + "/ws/gone", subprotocols=["chat", t1])[0], 401)
        self.assertEqual(ws_connect(base + "/ws/k2", subprotocols=["chat", t2]), ("chat", "hello"))

    def test_start_with_the_issuer_down_refuses_then_recovers(self):
        self.jwks.stop()
        self.b, self.s = self.start_ws_proxy(routes=[ws_route(filters=["auth"])],
                                             extra=self.config())
        base = "ws://127.0.0.1:%d" % self.s.port
        t1 = token(claims(), alg="ES256", kid="k1")
        self.assertEqual(ws_status(base + "/ws/early", subprotocols=["chat", t1])[0], 401)
        self.jwks.start()
        wait_until(lambda: ws_status(base + "/ws/late", subprotocols=["chat", t1])[0] is None, 10)
        self.assertEqual(ws_connect(base + "/ws/late", subprotocols=["chat", t1]),
                         ("chat", "hello"))


class ApiKeys(SluiceTestCase):
    def write_keys(self, **keys):
        with open(self.keys_file, "w") as f:
            f.write("# name: sha256 of the key\n")
            for name, key in keys.items():
                f.write("%s: %s\n" % (name, hashlib.sha256(key.encode()).hexdigest()))

    def test_keys_from_a_file_changed_and_reloaded(self):
        self.keys_file = os.path.join(self.tmpdir, "api-keys.txt")
        self.write_keys(billing="key-one", reports="key-two")
        extra = ('[[filters]]\nname = "keys"\ntype = "api_key"\nkeys_file = "%s"\n'
                 'key_from = "header:X-API-Key"\n' % self.keys_file)
        self.backend, self.sluice = self.start_proxy(route={"filters": ["keys"]}, extra=extra)
        self.sluice.wait_admin()

        def get(key, path="/echo/k"):
            headers = [("X-API-Key", key), ("X-API-Key-Name", "forged")] if key else []
            return self.sluice.request("GET", path, headers=headers)

        r = get("key-one")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(echo_header(r.json(), "X-API-Key-Name"), "billing")
        self.assertEqual(get("key-three").status, 401)
        r = get(None)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("WWW-Authenticate"), "ApiKey")

        # The file changes: billing's key is revoked, a new one added; a reload picks it up.
        self.write_keys(reports="key-two", ingest="key-three")
        c = RawConn(self.sluice.admin_port)
        r = c.request("POST", "/api/reload", headers=[("Connection", "close")])
        c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(get("key-one").status, 401)
        r = get("key-three")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(echo_header(r.json(), "X-API-Key-Name"), "ingest")
        self.assertEqual(decisions(self.sluice, "keys", "allow", "ok"), 2)
        self.assertEqual(decisions(self.sluice, "keys", "deny", "unknown_key"), 2)
        self.assertEqual(decisions(self.sluice, "keys", "deny", "missing_key"), 1)
        # A broken keys file fails the reload and the running keys stay.
        with open(self.keys_file, "a") as f:
            f.write("not a key line\n")
        c = RawConn(self.sluice.admin_port)
        r = c.request("POST", "/api/reload", headers=[("Connection", "close")])
        c.close()
        self.assertEqual(r.status, 400, r)
        self.assertIn("api-keys.txt:4:", r.body.decode())
        self.assertEqual(get("key-three").status, 200)
        entries = wait_until(lambda: log_entries(self.sluice), 5)
        self.assertIn("keys:allow:ingest", [e.get("auth") for e in entries])
        self.assertNotIn("key-three", "\n".join(self.sluice.access_log_lines()))


if __name__ == "__main__":
    harness.main()
