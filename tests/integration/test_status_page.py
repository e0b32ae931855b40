#!/usr/bin/python3
"""The status page on the admin listener: `GET /` and its script and style over plain HTTP; the
live feed `/api/live` from Python (a WebSocket on which sluice pushes the status document every
second: updates come, the numbers move under a small load, a bad handshake gets 400, a read token
guards it, a client flooding data frames is closed); and the page in headless Chromium, driven
over the DevTools protocol: it renders, its numbers update, the drain button refuses without
the admin token and drains a backend with it (a WebSocket through sluice on that backend gets
1012); a screenshot is saved in the test's tmpdir/artifacts (and, since a passing test's tmpdir
is removed, copied to $SLUICE_ARTIFACTS or /tmp/sluice-artifacts) and its path printed.

SLUICE_STATUS_PAGE_MEASURE=1 adds the cost measurement: sluice's CPU time (utime + stime from
/proc/PID/stat) over 30 s under the same small load, with ten /api/live clients open and with
none. Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_status_page.py -v
"""

import asyncio
import base64
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import HttpLoad, RawConn, SluiceTestCase, pool, wait_until, ws_route  # noqa: E402
from procs import CHROMIUM, Proc, env_without_proxy  # noqa: E402
from wsutil import CLOSE, PING, PONG, TEXT, WsClient, close_payload  # noqa: E402

TOKEN = "page-admin-token-0123456789"
READ_TOKEN = "page-read-token-42"


class StatusPageCase(SluiceTestCase):
    def start_status_proxy(self, admin=None):
        """An HTTP backend (pool "web", the catch-all route) and a WebSocket backend (pool "app",
        route /ws, drain_timeout 1s) behind sluice, whose admin API has the write token TOKEN."""
        self.web = self.start_backend()
        self.wsb = self.start_ws_backend()
        path = os.path.join(self.tmpdir, "admin.token")
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        a = {"token_file": path}
        a.update(admin or {})
        spec = {"pools": [pool("web", [self.web.address]), pool("app", [self.wsb.address])],
                "routes": [ws_route(path_prefix="/ws", pool="app"), {"pool": "web"}],
                "admin": a}
        self.s = self.start_sluice(spec)
        return self.s

    def live(self, headers=(), **kw):
        c = WsClient(self.s.admin.port, path="/api/live", headers=headers, **kw)
        self.conns.append(c)
        return c

    def load(self, threads=2, pause=0.01):
        ld = HttpLoad(self.s.port, path="/echo/load", threads=threads, pause=pause,
                      max_seconds=90)
        ld.start()
        self.addCleanup(ld.stop)
        return ld

    def backend_state(self, address):
        for p in self.s.admin.status()["pools"]:
            for b in p["backends"]:
                if b["address"] == address:
                    return b["state"]
        return None


def route_of(doc, name):
    return [r for r in doc["routes"] if r["name"] == name][0]


def total_requests(doc):
    return sum(r["requests"] for r in doc["routes"])


class PageOverHttp(StatusPageCase):
    def test_page_script_and_style_served_with_their_types(self):
        s = self.start_status_proxy()
        want = {"/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
                "/app.js": "text/javascript; charset=utf-8",
                "/style.css": "text/css; charset=utf-8"}
        bodies = {}
        for path, ctype in want.items():
            r = s.admin.get(path)
            self.assertEqual(r.status, 200, (path, r.status, r.body[:200]))
            self.assertEqual(r.header("content-type"), ctype, path)
            self.assertEqual(r.header("x-content-type-options"), "nosniff", path)
            self.assertIn("default-src 'none'", r.header("content-security-policy", ""), path)
            bodies[path] = r.body.decode("utf-8")
        self.assertIn('<script src="/app.js"', bodies["/"])
        self.assertIn('href="/style.css"', bodies["/"])
        self.assertIn("/api/live", bodies["/app.js"])
        self.assertIn("sessionStorage", bodies["/app.js"])
        self.assertNotIn("http://", bodies["/"] + bodies["/app.js"], "the page loads nothing else")
        self.assertEqual(s.admin.request("POST", "/").status, 405)
        self.assertEqual(s.admin.get("/nothing.js").status, 404)
        # The Host check applies to the page as to the API (DNS rebinding).
        r = s.admin.get("/", headers=[("Host", "evil.example")])
        self.assertEqual(r.status, 403)

    def test_status_has_the_page_additions(self):
        s = self.start_status_proxy()
        self.assertEqual(s.admin.reload(token=TOKEN)[0], 200)
        self.assertEqual(s.admin.reload()[0], 401)  # no token: refused, and not a reload
        doc = s.admin.status()
        hist = doc["reload_history"]
        self.assertEqual([(h["trigger"], h["result"], h["generation"]) for h in hist],
                         [("admin API", "success", 2)], hist)
        self.assertIsInstance(doc["last_errors"], list)
        self.assertIsInstance(doc["uptime_ms"], int)
        r = route_of(doc, doc["routes"][0]["name"])
        for key in ("requests", "websockets", "messages", "closes"):
            self.assertIn(key, r)
        # The existing fields are all still there.
        for key in ("version", "pid", "uptime_seconds", "config", "listeners", "routes", "pools"):
            self.assertIn(key, doc)


class LiveFeed(StatusPageCase):
    def test_updates_every_second_and_the_numbers_move_under_load(self):
        s = self.start_status_proxy()
        c = self.live()
        self.assertEqual(c.status, 101, c.headers)
        self.assertIsNone(c.header("sec-websocket-protocol"))
        t0 = time.monotonic()
        first = json.loads(c.recv_message(timeout=2.0)[1])
        self.assertEqual(first["pid"], s.pid)
        self.load()
        docs = [first]
        while time.monotonic() - t0 < 2.5:
            try:
                op, payload = c.recv_message(timeout=2.5 - (time.monotonic() - t0))
            except TimeoutError:
                break
            self.assertEqual(op, TEXT)
            docs.append(json.loads(payload))
        self.assertGreaterEqual(len(docs), 3, "updates in 2.5 s: %d" % len(docs))
        self.assertGreater(total_requests(docs[-1]), total_requests(docs[0]),
                           "request counts did not move under load")
        self.assertGreater(docs[-1]["uptime_ms"], docs[0]["uptime_ms"])
        # Pings are answered, a close is echoed.
        c.send_frame(PING, b"are you there")
        f = c.read_frame(3.0)
        while f.opcode == TEXT:
            f = c.read_frame(3.0)
        self.assertEqual((f.opcode, f.payload), (PONG, b"are you there"))
        c.send_frame(CLOSE, close_payload(1000, b"bye"))
        f, _ = c.read_close(3.0)
        self.assertEqual(f.code, 1000)
        c.wait_eof(3.0)

    def test_bad_handshakes_are_refused(self):
        s = self.start_status_proxy()
        port = s.admin.port
        # No Upgrade at all: a plain GET of a WebSocket endpoint.
        self.assertEqual(s.admin.get("/api/live").status, 400)
        for lines, status in (
                (["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"], 400),
                (["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: short",
                  "Sec-WebSocket-Version: 13"], 400),
                (["Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                  "Sec-WebSocket-Version: 13"], 400),
                (["Upgrade: websocket", "Connection: Upgrade",
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 8"],
                 426)):
            req = "\r\n".join(["GET /api/live HTTP/1.1", "Host: 127.0.0.1:%d" % port] + lines)
            c = self.live(request=(req + "\r\n\r\n").encode())
            self.assertEqual(c.status, status, lines)
        req = ("GET /api/live HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
        self.assertEqual(self.live(request=req.encode()).status, 403)

    def test_read_token_guards_the_feed(self):
        path = os.path.join(self.tmpdir, "read.token")
        with open(path, "w") as f:
            f.write(READ_TOKEN + "\n")
        self.start_status_proxy(admin={"read_token_file": path})
        self.assertEqual(self.live().status, 401)
        self.assertEqual(self.live(headers=[("Sec-WebSocket-Protocol", "sluice-live, bearer.x")])
                         .status, 401)
        self.assertEqual(self.live(headers=[("Authorization", "Bearer " + READ_TOKEN)]).status,
                         101)
        # A browser offers the token as a subprotocol; only "sluice-live" is chosen.
        for tok in (READ_TOKEN, TOKEN):
            c = self.live(headers=[("Sec-WebSocket-Protocol", "sluice-live, bearer." + tok)])
            self.assertEqual(c.status, 101)
            self.assertEqual(c.header("sec-websocket-protocol"), "sluice-live")
            self.assertIn("pools", json.loads(c.recv_message(timeout=2.0)[1]))

    def test_a_client_flooding_data_frames_is_closed(self):
        self.start_status_proxy()
        c = self.live()
        self.assertEqual(c.status, 101)
        closed = None
        try:
            for i in range(200):
                c.send_frame(TEXT, b"x" * 500)
        except OSError:
            pass  # sluice may close while we still send
        f, _ = c.read_close(5.0)
        closed = f.code
        self.assertEqual(closed, 1008)
        # One frame over the per-frame bound: 1009 at once.
        c2 = self.live()
        c2.send_frame(TEXT, b"y" * 4000)
        f, _ = c2.read_close(5.0)
        self.assertEqual(f.code, 1009)
        # A pusher that is not the page: the feed goes on for the others.
        c3 = self.live()
        self.assertIn("pools", json.loads(c3.recv_message(timeout=2.0)[1]))


# ---------------------------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol


class DevTools:
    """Chromium with --remote-debugging-port, and one page target driven over its WebSocket
    (python3-websockets on a private asyncio loop)."""

    def __init__(self, tmpdir):
        import websockets  # Debian's python3-websockets
        self.profile = os.path.join(tmpdir, "chromium-profile")
        os.makedirs(self.profile, exist_ok=True)
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--no-proxy-server", "--window-size=1280,1100", "--remote-debugging-port=0",
                "--remote-allow-origins=*", "--user-data-dir=" + self.profile, "about:blank"]
        self.browser = Proc(tmpdir, "chromium", argv, env=env_without_proxy(HOME=tmpdir)).spawn()
        port_file = os.path.join(self.profile, "DevToolsActivePort")

        def read_port():
            try:
                with open(port_file) as f:
                    return int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                return None
        port = wait_until(read_port, 30.0)
        if not port:
            raise AssertionError("chromium wrote no DevToolsActivePort:\n" +
                                 self.browser.stderr()[-2000:])
        conn = RawConn(port, timeout=10.0)
        try:
            # (Chromium builds the targets' URLs from the Host header.)
            targets = conn.request("GET", "/json/list", host="127.0.0.1:%d" % port).json()
        finally:
            conn.close()
        page = [t for t in targets if t["type"] == "page"][0]
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # websockets 10 looks the loop up
        self.ws = self.loop.run_until_complete(
            websockets.connect(page["webSocketDebuggerUrl"], max_size=None, ping_interval=None))
        self.next_id = 0
        self.call("Runtime.enable")

    def call(self, method, timeout=15.0, **params):
        self.next_id += 1
        want = self.next_id

        async def roundtrip():
            await self.ws.send(json.dumps({"id": want, "method": method, "params": params}))
            while True:
                msg = json.loads(await self.ws.recv())
                if msg.get("id") == want:
                    return msg
        msg = self.loop.run_until_complete(asyncio.wait_for(roundtrip(), timeout))
        if "error" in msg:
            raise AssertionError("%s: %r" % (method, msg["error"]))
        return msg["result"]

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %r" % (expression, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expression, timeout=10.0):
        """Polls expression in the page until it is truthy; returns its last value."""
        last = [None]

        def check():
            try:
                last[0] = self.eval(expression)
            except AssertionError as e:  # the page not loaded yet, say
                last[0] = None
                self.last_error = e
            return last[0]
        wait_until(check, timeout, interval=0.1)
        return last[0]

    def close(self):
        try:
            self.loop.run_until_complete(self.ws.close())
        except Exception:
            pass
        self.loop.close()
        asyncio.set_event_loop(None)
        self.browser.stop(timeout=10, group=True)


def save_artifact(tmpdir, name, data):
    """Writes data into tmpdir/artifacts and into a directory that outlives the test's tmpdir;
    returns both paths."""
    paths = []
    for d in (os.path.join(tmpdir, "artifacts"),
              os.environ.get("SLUICE_ARTIFACTS") or os.path.join(tempfile.gettempdir(),
                                                                   "sluice-artifacts")):
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    return paths


class PageInChromium(StatusPageCase):
    def test_page_renders_updates_and_drains_with_the_token_only(self):
        # packaging/setup.sh test installs Chromium: required, not skipped.
        self.assertTrue(os.path.isfile(CHROMIUM), "chromium is needed (packaging/setup.sh test)")
        s = self.start_status_proxy()
        held = WsClient(s.port, path="/ws/held")
        self.conns.append(held)
        self.assertEqual(held.status, 101)
        self.load()
        dt = DevTools(self.tmpdir)
        self.addCleanup(dt.close)
        dt.call("Page.navigate", url="http://127.0.0.1:%d/" % s.admin.port)

        # It renders, and updates come and move.
        self.assertTrue(dt.wait("document.body && Number(document.body.dataset.updates || 0) >= 2",
                                10.0), "no live updates in the page")
        self.assertEqual(dt.eval("document.getElementById('live').textContent"), "live")
        self.assertEqual(dt.eval("document.querySelectorAll('#pools tr[data-backend]').length"), 2)
        requests = int(dt.eval("document.getElementById('total-requests').textContent"))
        self.assertTrue(dt.wait("Number(document.getElementById('total-requests').textContent)"
                                " > %d" % requests, 5.0), "request count did not move")
        self.assertTrue(dt.wait("Number(document.getElementById('total-websockets')"
                                ".textContent) >= 1", 5.0))
        self.assertTrue(dt.wait("parseFloat(document.getElementById('total-rps').textContent)"
                                " > 0", 5.0), "no request rate shown")

        row = "document.querySelector('tr[data-backend=\"app|%s\"]')" % self.wsb.address
        # Without the token: sluice refuses, the page says so, nothing is drained.
        dt.eval(row + ".querySelector('button.drain').click()")
        msg = dt.wait("(m => m.includes('refused') && m)"
                      "(document.getElementById('message').textContent)", 5.0)
        self.assertIn("needs the admin token", msg or "")
        self.assertEqual(self.backend_state(self.wsb.address), "healthy")

        # With the token: the backend drains; the WebSocket on it gets 1012 after drain_timeout.
        dt.eval("document.getElementById('token').value = %s;"
                "document.getElementById('token-form').requestSubmit()" % json.dumps(TOKEN))
        self.assertEqual(dt.eval("sessionStorage.getItem('sluice-admin-token')"), TOKEN)
        self.assertNotIn(TOKEN, dt.eval("location.href"))
        self.assertTrue(dt.wait("document.getElementById('live').textContent === 'live'", 5.0))
        dt.eval("document.getElementById('message').textContent = '';" +
                row + ".querySelector('button.drain').click()")
        msg = dt.wait("(m => m.startsWith('drain') && m)"
                      "(document.getElementById('message').textContent)", 5.0)
        self.assertIn("draining", msg or "")
        self.assertEqual(self.backend_state(self.wsb.address), "draining")
        f, _ = held.read_close(5.0)
        self.assertEqual(f.code, 1012)
        self.assertTrue(dt.wait(row + ".querySelector('.state').textContent === 'draining'", 5.0),
                        "the page does not show the drain")
        shot = dt.call("Page.captureScreenshot", format="png")["data"]
        paths = save_artifact(self.tmpdir, "status-page.png", base64.b64decode(shot))
        sys.stderr.write("\n[screenshot: %s]\n" % " and ".join(paths))

        # Undrain from the page too.
        dt.eval(row + ".querySelector('button.undrain').click()")
        self.assertTrue(wait_until(lambda: self.backend_state(self.wsb.address) == "healthy", 5.0))


# ---------------------------------------------------------------------------------------------
# What ten open pages cost


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


# A measurement, not a check: it runs only when asked (SLUICE_STATUS_PAGE_MEASURE=1, about 70 s)
# and is otherwise not part of the suite at all.
class Cost(StatusPageCase):
    WINDOW = 30.0

    def measure(self, pages):
        clients = [self.live() for _ in range(pages)]
        for c in clients:
            self.assertEqual(c.status, 101)
        time.sleep(1.0)
        before = cpu_seconds(self.s.pid)
        t0 = time.monotonic()
        received = 0
        while time.monotonic() - t0 < self.WINDOW:
            for c in clients:  # read what came, as a page would
                try:
                    while True:
                        c.recv_message(timeout=0.001)
                        received += 1
                except Exception:
                    pass
            time.sleep(0.2)
        used = cpu_seconds(self.s.pid) - before
        for c in clients:
            c.close()
        return used, received

    def test_cpu_with_ten_pages_versus_none(self):
        self.start_status_proxy()
        ld = self.load(threads=2, pause=0.02)
        time.sleep(1.0)
        n0 = len(ld.records)
        none, _ = self.measure(0)
        n1 = len(ld.records)
        ten, received = self.measure(10)
        n2 = len(ld.records)
        sys.stderr.write(
            "\n[status page cost over %.0f s each, small load (%d and %d requests): sluice CPU "
            "%.2f s with no page, %.2f s with ten pages (%d updates received); difference "
            "%.2f s = %.1f ms per page per minute]\n"
            % (self.WINDOW, n1 - n0, n2 - n1, none, ten, received, ten - none,
               (ten - none) * 1000 / 10 / (self.WINDOW / 60)))
        self.assertGreaterEqual(received, 10 * (self.WINDOW - 2))


if not os.environ.get("SLUICE_STATUS_PAGE_MEASURE"):
    del Cost

if __name__ == "__main__":
    harness.main()
