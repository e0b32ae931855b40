"""Helpers for the backend-pool tests (test_pools.py): balancing, sticky routing, health checks,
draining and rebalance, end to end with real backends.

- PoolCase: SluiceTestCase plus groups of backends, a sluice started from config text with
  fixed ports (so that it can be reconfigured and reloaded), the drain API, /api/status per
  backend, and where each WebSocket landed;
- get(): one HTTP request on a fresh connection; sticky cookie parsing; windows_over().

The clients, servers and load generator come from the shared library (harness.py).

Only 127.0.0.1. Every loop and wait is bounded in count and time.
"""

import re
import select

from harness import RawConn, SluiceTestCase, config, free_port, wait_until
import wsutil
from wsutil import CLOSE, WsClient

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
        return self.start_backend(ports=[port], name=name)

    def http_backends(self, n):
        return [self.http_backend() for _ in range(n)]

    def ws_backends(self, n):
        return [self.start_ws_backend() for _ in range(n)]

    # -- sluice

    def start_pools(self, pools, routes, server=None, extra=""):
        """sluice with these pools and routes (config.pool / config.route dicts) on a
        listener "public", every port fixed; .admin is its admin client; .reconfigure(pools,
        routes) rewrites the file and reloads."""
        admin_port, public = free_port(), free_port()
        srv = {"workers": self.WORKERS}
        srv.update(server or {})
        text = config(admin_port, {"public": public}, pools, routes, server=srv, extra=extra)
        s = self.start_config_sluice(text, admin_port, {"public": public})
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
