"""Backend pools end to end, with real backends and [server] workers = 2: least_conn spreading
long-lived WebSockets (by weight, and toward the backend that has fewer); weighted round robin
and random with weight 0; sticky cookies for HTTP and WebSocket reconnects (moved, with a new
cookie, when the backend is drained, set to weight 0 or killed); consistent_hash on a header, a
cookie, a query parameter and the source address (same key, same backend; a reconnecting
WebSocket too; removing a backend moves only its keys; bounded load for a hot key); active
health checks (expect_status, tcp) and a backend killed under HTTP load (ejected, no failed
request after that, healthy again once restarted); 503 with a reason when no backend can take a
connection; draining (keep-alive upstream connections closed after their request, WebSockets
kept until drain_timeout then 1012, undrain cancelling it); gradual rebalance at the configured
rate.

Run: SLUICE_BIN=$PWD/build/sluice /usr/bin/python3 tests/integration/test_pools.py [-k name]
"""

import math
import sys
import time

import harness
from harness import HttpLoad, Table, pool, raise_nofile, route, tcp_established, wait_until
import wsutil
from wsutil import CloseWatcher
from poolutil import PoolCase, get, pending, sticky_token, windows_over

NOFILE = raise_nofile(4096)


def note(msg):
    sys.stderr.write("[test_pools] %s\n" % msg)
    sys.stderr.flush()


def counts(located, n):
    out = [0] * n
    for i in located.values():
        out[i] += 1
    return out


# ---------------------------------------------------------------------------------------------
# Balancing


class Balancing(PoolCase):
    def test_least_conn_spreads_websockets_by_weight_and_fills_the_emptier_backend(self):
        a, b, c, d = self.ws_backends(4)
        s = self.start_pools(
            [pool("even", [a.address, b.address], balance="least_conn", drain_timeout="60s"),
             pool("weighted", [{"address": c.address, "weight": 1},
                               {"address": d.address, "weight": 3}], balance="least_conn")],
            [route("even", "even", "/even", websocket=True),
             route("weighted", "weighted", "/weighted", websocket=True)])

        # Weights 1:3: 40 long-lived WebSockets split about 10 / 30.
        wpaths = ["/weighted/%d" % i for i in range(40)]
        for p in wpaths:
            self.ws(s.port, p)
        got = counts(self.locate([c, d], wpaths), 2)
        self.assertTrue(8 <= got[0] <= 12 and 28 <= got[1] <= 32,
                        "least_conn with weights 1:3 put %r of 40 WebSockets on (c, d)" % got)
        st = self.backends_status(s, "weighted")
        self.assertEqual([st[c.address]["websockets"], st[d.address]["websockets"]], got, st)

        # 10 WebSockets on a alone (b drained), then b takes new connections again: least_conn
        # must fill b first (round robin or random would split the next 30 evenly).
        self.drain(s, "even", b.address)
        first = ["/even/first/%d" % i for i in range(10)]
        held = [self.ws(s.port, p) for p in first]
        self.assertEqual(counts(self.locate([a, b], first), 2), [10, 0],
                         "new WebSockets reached the drained backend")
        self.undrain(s, "even", b.address)
        self.assertState(s, "even", b.address, "healthy")
        # Rebalance is off by default: nothing on a is closed to even things out.
        time.sleep(1.3)
        for i, conn in enumerate(held):
            self.assertFalse(pending(conn), "WebSocket %d on a got something" % i)
            self.assertEchoes(conn, "still %d" % i, "WebSocket on a after b came back")
        later = ["/even/later/%d" % i for i in range(30)]
        for p in later:
            self.ws(s.port, p)
        new = counts(self.locate([a, b], later), 2)
        total = [new[0] + 10, new[1]]
        self.assertGreaterEqual(new[1], 18, "least_conn put only %d of 30 new WebSockets on the "
                                "backend that had none (a had 10): %r" % (new[1], new))
        self.assertLessEqual(abs(total[0] - total[1]), 4, "least_conn left a / b at %r" % total)
        st = self.backends_status(s, "even")
        self.assertEqual([st[a.address]["websockets"], st[b.address]["websockets"]], total, st)
        self.assertEqual([st[a.address]["connections"], st[b.address]["connections"]], total, st)
        m = s.admin.metrics()
        for x, n in ((a, total[0]), (b, total[1])):
            self.assertEqual(m.get("sluice_backend_connections_open", pool="even",
                                   backend=x.address), n)

    def test_weighted_round_robin_and_random_skip_weight_zero(self):
        b0, b1, b2 = self.http_backends(3)
        backends = [{"address": b0.address, "weight": 1}, {"address": b1.address, "weight": 3},
                    {"address": b2.address, "weight": 0}]
        s = self.start_pools([pool("rr", backends, balance="round_robin"),
                              pool("rnd", backends, balance="random")],
                             [route("rr", "rr", "/rr"), route("rnd", "rnd", "/rnd")])
        for name, n in (("rr", 40), ("rnd", 120)):
            seen = {}
            for i in range(n):
                p = self.port_of(s, "/%s/%d" % (name, i))
                seen[p] = seen.get(p, 0) + 1
            self.assertNotIn(b2.port, seen, "%s: the weight-0 backend got requests: %r" % (name, seen))
            share = seen.get(b1.port, 0) / n
            lo, hi = (0.70, 0.80) if name == "rr" else (0.60, 0.90)
            self.assertTrue(lo <= share <= hi,
                            "%s: weight-3 backend got %.2f of requests (weights 1:3:0): %r"
                            % (name, share, seen))


# ---------------------------------------------------------------------------------------------
# Sticky cookies


class Sticky(PoolCase):
    COOKIE = "SLUICE_B"

    def test_http_client_stays_then_moves_with_a_new_cookie_when_drained_weight0_or_killed(self):
        bs = self.http_backends(3)
        addrs = [b.address for b in bs]

        def pools(weights=(1, 1, 1)):
            return [pool("app", [{"address": a, "weight": w} for a, w in zip(addrs, weights)],
                         balance="round_robin", sticky_cookie=self.COOKIE, drain_timeout="2s")]
        s = self.start_pools(pools(), [route("all", "app", "/")])
        port_index = {b.port: i for i, b in enumerate(bs)}

        # First requests (no cookie): round robin, each answer sets the cookie of its backend.
        token = {}
        for i in range(6):
            r = get(s.port, "/echo/first/%d" % i)
            self.assertEqual(r.status, 200, r)
            t = sticky_token(r, self.COOKIE)
            self.assertIsNotNone(t, "first response sets no %s cookie: %r" % (self.COOKIE, r.headers))
            k = port_index[r.json()["port"]]
            self.assertEqual(token.setdefault(k, t), t, "backend %d got two tokens" % k)
        self.assertEqual(len(token), 3, "6 requests did not reach all 3 backends: %r" % token)
        self.assertEqual(len(set(token.values())), 3, "tokens not distinct: %r" % token)

        def send(t, target, extra_cookie=False):
            cookie = "%s=%s" % (self.COOKIE, t)
            if extra_cookie:
                cookie = "theme=dark; %s; lang=en" % cookie
            r = get(s.port, target, [("Cookie", cookie)])
            self.assertEqual(r.status, 200, r)
            return port_index[r.json()["port"]], sticky_token(r, self.COOKIE)

        # Requests carrying a cookie (fresh connections, and among other cookies) stay.
        for k, t in token.items():
            for i in range(4):
                got, reissued = send(t, "/echo/stay/%d/%d" % (k, i), extra_cookie=(i % 2 == 1))
                self.assertEqual(got, k, "cookie of backend %d sent request %d to %d" % (k, i, got))
                self.assertIn(reissued, (None, t), "a sticky hit re-issued another cookie")
        # ... and on one keep-alive connection.
        c = self.connect(s)
        for i in range(5):
            r = c.request("GET", "/echo/ka/%d" % i, headers=[("Cookie", "%s=%s" % (self.COOKIE, token[1]))])
            self.assertEqual(port_index[r.json()["port"]], 1, r)
        c.close()
        # An unknown token: chosen by the balancer, and a valid cookie is issued.
        r = get(s.port, "/echo/unknown", [("Cookie", "%s=0123456789abcdef" % self.COOKIE)])
        self.assertEqual(r.status, 200)
        self.assertEqual(sticky_token(r, self.COOKIE), token[port_index[r.json()["port"]]])

        # Drained: the client is moved, with the cookie of its new backend.
        self.drain(s, "app", addrs[0])
        for i in range(3):
            got, reissued = send(token[0], "/echo/drained/%d" % i)
            self.assertNotEqual(got, 0, "a request with the cookie of the drained backend reached it")
            self.assertEqual(reissued, token[got], "moved client not given its new backend's cookie")
            got2, again = send(reissued, "/echo/drained-new/%d" % i)
            self.assertEqual(got2, got, "the re-issued cookie does not stick")
        self.undrain(s, "app", addrs[0])
        self.assertEqual(send(token[0], "/echo/undrained")[0], 0, "undrained backend not sticky again")

        # Weight 0 (reload): moved likewise.
        s.reconfigure(pools((1, 0, 1)))
        ok = wait_until(lambda: send(token[1], "/echo/w0")[0] != 1, 3.0)
        self.assertTrue(ok, "cookie still honoured for a backend with weight 0")
        got, reissued = send(token[1], "/echo/w0-moved")
        self.assertNotEqual(got, 1)
        self.assertEqual(reissued, token[got])
        s.reconfigure(pools())
        self.assertTrue(wait_until(lambda: send(token[1], "/echo/w1")[0] == 1, 3.0))

        # Killed (no active health checks: the connect fails, the request is retried on another
        # backend): the very first request succeeds and carries the cookie of where it went.
        bs[2].kill()
        got, reissued = send(token[2], "/echo/killed")
        self.assertNotEqual(got, 2)
        self.assertEqual(reissued, token[got],
                         "request with the cookie of a killed backend was served by backend %d "
                         "without re-issuing the cookie (Set-Cookie token %r)" % (got, reissued))
        for i in range(3):
            self.assertEqual(send(token[got], "/echo/after-kill/%d" % i)[0], got)

    def test_websocket_reconnect_stays_then_moves_with_a_new_cookie(self):
        ws = self.ws_backends(2)
        s = self.start_pools([pool("ws", [w.address for w in ws], balance="round_robin",
                                   sticky_cookie=self.COOKIE, drain_timeout="30s")],
                             [route("ws", "ws", "/", websocket=True)])
        c = self.ws(s.port, "/ws/first")
        tok = sticky_token(c.headers, self.COOKIE)
        self.assertIsNotNone(tok, "the 101 sets no %s cookie: %r" % (self.COOKIE, c.headers))
        home = self.locate(ws, ["/ws/first"])["/ws/first"]
        self.assertEchoes(c, "hi")
        self.close_ws(c)
        cookie = [("Cookie", "%s=%s" % (self.COOKIE, tok))]
        paths = ["/ws/again/%d" % i for i in range(4)]
        for p in paths:
            c = self.ws(s.port, p, headers=cookie)
            self.assertIn(sticky_token(c.headers, self.COOKIE), (None, tok))
            self.assertEchoes(c, "again")
            self.close_ws(c)
        self.assertEqual(set(self.locate(ws, paths).values()), {home},
                         "reconnects with the cookie did not all reach the same backend")

        # Its backend drained: the reconnect lands on the other one, with a new cookie.
        self.drain(s, "ws", ws[home].address)
        c = self.ws(s.port, "/ws/moved", headers=cookie)
        new = sticky_token(c.headers, self.COOKIE)
        self.assertIsNotNone(new, "moved WebSocket got no new cookie: %r" % c.headers)
        self.assertNotEqual(new, tok)
        self.assertEqual(self.locate(ws, ["/ws/moved"])["/ws/moved"], 1 - home)
        self.assertEchoes(c, "moved")
        self.close_ws(c)
        c = self.ws(s.port, "/ws/moved-again", headers=[("Cookie", "%s=%s" % (self.COOKIE, new))])
        self.assertEqual(self.locate(ws, ["/ws/moved-again"])["/ws/moved-again"], 1 - home)
        self.close_ws(c)

        # The other one killed (and the first undrained): the next reconnect with its cookie is
        # retried onto the first and re-issued the first's cookie.
        self.undrain(s, "ws", ws[home].address)
        ws[1 - home].kill()
        c = self.ws(s.port, "/ws/after-kill", headers=[("Cookie", "%s=%s" % (self.COOKIE, new))])
        self.assertEqual(self.locate(ws, ["/ws/after-kill"])["/ws/after-kill"], home)
        self.assertEqual(sticky_token(c.headers, self.COOKIE), tok,
                         "WebSocket moved off a killed backend without its new backend's cookie: %r"
                         % c.headers)
        self.assertEchoes(c, "alive")


# ---------------------------------------------------------------------------------------------
# Consistent hashing


class ConsistentHash(PoolCase):
    def test_http_keys_header_cookie_query_source_ip_and_removal_moves_only_its_keys(self):
        bs = self.http_backends(3)
        addrs = [b.address for b in bs]
        port_index = {b.port: i for i, b in enumerate(bs)}
        kinds = {"hdr": "header:X-User", "ck": "cookie:sid", "qs": "query:room", "ip": "source_ip"}

        # Bounded load is taken out of the picture here (a large factor), although it is off by
        # default and never moves a key off a backend with fewer than 4 requests in flight.
        def pools(members):
            return [pool(n, members, balance="consistent_hash", hash_key=k, hash_balance_factor=10)
                    for n, k in kinds.items()]
        s = self.start_pools(pools(addrs), [route(n, n, "/" + n) for n in kinds])

        def where(kind, key, tag):
            if kind == "hdr":
                r = get(s.port, "/hdr/%s" % tag, [("X-User", key)])
            elif kind == "ck":
                r = get(s.port, "/ck/%s" % tag, [("Cookie", "a=1; sid=%s; z=2" % key)])
            elif kind == "qs":
                r = get(s.port, "/qs/%s?x=1&room=%s&y=2" % (tag, key))
            else:
                r = get(s.port, "/ip/%s" % tag)
            self.assertEqual(r.status, 200, r)
            return port_index[r.json()["port"]]

        keys = ["user-%d" % i for i in range(48)]
        first = {k: where("hdr", k, "a") for k in keys}
        again = {k: where("hdr", k, "b") for k in reversed(keys)}
        self.assertEqual(again, first, "header:X-User: the same key reached different backends")
        spread = counts(first, 3)
        self.assertTrue(min(spread) >= 4, "48 keys over 3 backends: %r" % spread)
        # No key: round robin.
        self.assertEqual(len({self.port_of(s, "/hdr/nokey/%d" % i) for i in range(9)}), 3,
                         "requests without the key did not fall back to round robin")
        for kind in ("ck", "qs"):
            m1 = {k: where(kind, k, "a") for k in keys[:20]}
            m2 = {k: where(kind, k, "b") for k in keys[:20]}
            self.assertEqual(m1, m2, "%s: the same key reached different backends" % kinds[kind])
            self.assertGreaterEqual(len(set(m1.values())), 2, "%s: 20 keys, one backend" % kind)
        self.assertEqual(len({where("ip", None, "x%d" % i) for i in range(8)}), 1,
                         "source_ip: requests from 127.0.0.1 reached several backends")

        # Removing backend 2 moves its keys and (almost) only those; adding it back restores
        # the mapping exactly.
        s.reconfigure(pools(addrs[:2]))
        self.assertTrue(wait_until(lambda: all(where("hdr", k, "r") != 2 for k in keys[:6]), 3.0))
        after = {k: where("hdr", k, "c") for k in keys}
        self.assertNotIn(2, after.values())
        stayed = [k for k in keys if first[k] != 2]
        moved = [k for k in stayed if after[k] != first[k]]
        self.assertLessEqual(len(moved), max(2, len(stayed) // 10),
                             "removing one of 3 backends moved %d of the %d keys of the others"
                             % (len(moved), len(stayed)))
        s.reconfigure(pools(addrs))
        self.assertTrue(wait_until(lambda: where("hdr", keys[0], "r") == first[keys[0]], 3.0))
        restored = {k: where("hdr", k, "d") for k in keys}
        self.assertEqual(restored, first, "adding the backend back did not restore the mapping")

    def test_websocket_reconnect_same_key_same_backend_and_hot_key_bounded(self):
        ws = self.ws_backends(3)
        s = self.start_pools([pool("wsh", [w.address for w in ws], balance="consistent_hash",
                                   hash_key="header:X-User", hash_balance_factor=0.25)],
                             [route("ws", "wsh", "/", websocket=True)])
        for u in range(5):
            paths = ["/ws/u%d/%d" % (u, i) for i in range(3)]
            for p in paths:
                c = self.ws(s.port, p, headers=[("X-User", "user-%d" % u)])
                self.assertEchoes(c, "hello")
                self.close_ws(c)
                self.wait_ws_gone(s, "wsh")
            homes = set(self.locate(ws, paths).values())
            self.assertEqual(len(homes), 1, "user-%d reconnecting reached backends %r" % (u, homes))

        # One hot key, 12 concurrent WebSockets: no backend above (1 + 0.25) x the average.
        hot = ["/ws/hot/%d" % i for i in range(12)]
        for p in hot:
            self.ws(s.port, p, headers=[("X-User", "celebrity")])
        spread = counts(self.locate(ws, hot), 3)
        self.assertLessEqual(max(spread), math.ceil(1.25 * 12 / 3),
                             "bounded load: one hot key put %r of 12 WebSockets on 3 backends" % spread)


# ---------------------------------------------------------------------------------------------
# Health


class Health(PoolCase):
    def test_active_checks_expect_status_and_tcp_and_503_with_reason(self):
        b = self.start_status_server()
        other = self.http_backend()
        dead = "127.0.0.1:%d" % harness.closed_port()

        def hc(**kw):
            h = Table(interval="200ms", timeout="500ms", healthy_threshold=1, unhealthy_threshold=2)
            h.update(kw)
            return h
        cases = [  # (pool, health, expected state)
            ("ok200", hc(path="/code/200", expect_status=200), "healthy"),
            ("ok2xx", hc(path="/code/204", expect_status="2xx"), "healthy"),
            ("bad2xx", hc(path="/code/302", expect_status="2xx"), "unhealthy"),
            ("ok399", hc(path="/code/302", expect_status="200-399"), "healthy"),
            ("bad200", hc(path="/code/204", expect_status=200), "unhealthy"),
            ("bad5xx", hc(path="/code/503"), "unhealthy"),
            ("tcpok", hc(type="tcp"), "healthy"),
        ]
        pools = [pool(n, [b.address], health=h) for n, h, _ in cases]
        pools.append(pool("tcpdead", [dead, other.address], health=hc(type="tcp")))
        pools.append(pool("none", [{"address": b.address, "weight": 0}, other.address]))
        s = self.start_pools(pools, [route(n, n, "/" + n) for n, _, _ in cases] +
                             [route("tcpdead", "tcpdead", "/tcpdead"), route("none", "none", "/none")])
        for n, _, want in cases:
            self.assertState(s, n, b.address, want, msg="pool %s" % n)
        self.assertState(s, "tcpdead", dead, "unhealthy")
        self.assertState(s, "tcpdead", other.address, "healthy")
        time.sleep(0.5)  # several more rounds: states stay
        m = s.admin.metrics()
        for n, _, want in cases:
            self.assertEqual(self.backend_status(s, n, b.address)["state"], want, n)
            for st in ("healthy", "unhealthy", "draining"):
                self.assertEqual(m.get("sluice_backend_state", pool=n, backend=b.address, state=st),
                                 1 if st == want else 0, "pool %s state %s" % (n, st))
        log = self.log(s)
        self.assertRegex(log, r"health: pool 'bad2xx' backend %s is unhealthy" % b.address)
        self.assertRegex(log, r"health: pool 'tcpdead' backend %s is unhealthy" % dead)
        self.assertNotRegex(log, r"health: pool 'ok2xx' backend \S+ is unhealthy")
        # The checks are real requests on the path given, every interval.
        seen = b.seen()
        for path in ("/code/200", "/code/204", "/code/302", "/code/503"):
            self.assertGreaterEqual(seen.count("GET %s HTTP/1.1" % path), 3, path)

        # Unhealthy backends take nothing; with none left: 503 and a log line saying why.
        for i in range(6):
            self.assertEqual(self.port_of(s, "/tcpdead/%d" % i), other.port)
        n_before = len(b.seen())
        r = get(s.port, "/bad2xx/x")
        self.assertEqual(r.status, 503, r)
        self.assertNotIn("GET /bad2xx/x HTTP/1.1", b.seen()[n_before:])
        self.assertIn(b"no backend available", r.body)
        self.drain(s, "none", other.address)
        r = get(s.port, "/none/x")
        self.assertEqual(r.status, 503, r)
        self.assertIn(b"no backend available", r.body)
        log = self.log(s)
        self.assertRegex(log, r"pool 'bad2xx'.*%s unhealthy" % b.address)
        self.assertRegex(log, r"pool 'none'.*%s weight 0.*%s draining" % (b.address, other.address))
        self.undrain(s, "none", other.address)
        self.assertEqual(self.port_of(s, "/none/y"), other.port)

    def test_passive_ejection_after_consecutive_5xx_or_connect_failures_for_5s(self):
        bad = self.start_status_server()  # answers /code/500 with 500
        good = self.http_backend()  # answers anything with 200
        dead = "127.0.0.1:%d" % harness.closed_port()
        s = self.start_pools([pool("fivexx", [bad.address, good.address], balance="round_robin"),
                              pool("refused", [dead, good.address], balance="round_robin")],
                             [route("fivexx", "fivexx", "/code"), route("refused", "refused", "/r")])
        statuses = [get(s.port, "/code/500").status for _ in range(14)]
        t_ejected = time.monotonic()
        self.assertEqual(statuses.count(500), 3, "3 consecutive 5xx should eject the backend: %r"
                         % statuses)
        self.assertEqual(statuses[-6:], [200] * 6, statuses)
        self.assertState(s, "fivexx", bad.address, "unhealthy", timeout=0.5)
        # Connect failures: each request is retried on the other backend, none fails; the third
        # failure ejects.
        for i in range(8):
            self.assertEqual(self.port_of(s, "/r/%d" % i), good.port)
        self.assertState(s, "refused", dead, "unhealthy", timeout=0.5)
        self.assertRegex(self.log(s), r"backend %s ejected after consecutive failures" % bad.address)
        # Ejected for 5 s: still out after 4 s, back by 7 s.
        time.sleep(max(0.0, t_ejected + 4.0 - time.monotonic()))
        self.assertEqual(self.backend_status(s, "fivexx", bad.address)["state"], "unhealthy")
        self.assertEqual([get(s.port, "/code/500").status for _ in range(4)], [200] * 4)
        self.assertState(s, "fivexx", bad.address, "healthy", timeout=max(0.1, t_ejected + 7.0 - time.monotonic()))
        self.assertIn(500, [get(s.port, "/code/500").status for _ in range(4)],
                      "the backend gets no requests after its ejection ended")

    def test_backend_killed_under_load_is_ejected_then_healthy_again_after_restart(self):
        bs = self.http_backends(3)
        addrs = [b.address for b in bs]
        victim = bs[2]
        s = self.start_pools(
            [pool("app", addrs, balance="round_robin",
                  health=Table(path="/echo/health", interval="200ms", timeout="500ms",
                               healthy_threshold=2, unhealthy_threshold=2))],
            [route("all", "app", "/")])
        load = HttpLoad(s.port, threads=3, per_connection=5, pause=0.003, max_seconds=40).start()
        try:
            self.assertTrue(wait_until(
                lambda: {r[2] for r in load.snapshot()} >= {b.port for b in bs}, 5.0),
                "load did not reach all 3 backends")
            time.sleep(0.5)
            victim.kill()
            t_kill = time.monotonic()
            entry = self.wait_status(s, "app", victim.address, timeout=5.0, state="unhealthy")
            t_ejected = time.monotonic()
            self.assertEqual(entry["state"], "unhealthy", "killed backend not ejected: %r" % entry)
            note("ejected %.2fs after the kill" % (t_ejected - t_kill))
            time.sleep(1.0)  # traffic on the other two only
            m = s.admin.metrics()
            self.assertEqual(m.get("sluice_backend_state", pool="app", backend=victim.address,
                                   state="unhealthy"), 1)
            restarted = self.http_backend(port=victim.port, name="backend-restarted")
            t_restart = time.monotonic()
            entry = self.wait_status(s, "app", victim.address, timeout=12.0, state="healthy")
            self.assertEqual(entry["state"], "healthy", "restarted backend not healthy again: %r" % entry)
            note("healthy again %.2fs after the restart" % (time.monotonic() - t_restart))
            t_healthy = time.monotonic()
            self.assertTrue(wait_until(
                lambda: any(r[2] == victim.port and r[0] > t_healthy for r in load.snapshot()), 3.0),
                "the restarted backend gets no traffic")
            time.sleep(0.3)
        finally:
            load.stop()
        recs = load.snapshot()
        before = [r for r in recs if r[0] < t_ejected and r[3]]
        after = [r for r in recs if r[0] >= t_ejected and r[3]]
        note("%d requests; %d failed between the kill and the ejection, %d after"
             % (len(recs), len(before), len(after)))
        self.assertEqual(after, [], "requests failed after the ejection")
        self.assertGreater(len([r for r in recs if r[0] >= t_ejected]), 50, "too little load")
        self.assertRegex(self.log(s), r"health: pool 'app' backend %s is unhealthy" % victim.address)
        self.assertIn("/echo/health", restarted.count()["paths"], "no health check reached it")


# ---------------------------------------------------------------------------------------------
# Draining


class Draining(PoolCase):
    def test_http_keepalive_upstreams_closed_after_their_request_new_requests_elsewhere(self):
        a, b = self.http_backends(2)
        s = self.start_pools([pool("app", [a.address, b.address], balance="round_robin",
                                   sticky_cookie="S", drain_timeout="30s")],
                             [route("all", "app", "/")])
        for x in ("/api/pools/nope/backends/%s/drain" % a.address,
                  "/api/pools/app/backends/127.0.0.1:1/drain",
                  "/api/pools/app/backends/127.0.0.1:1/undrain"):
            self.assertEqual(s.admin.post(x).status, 404, x)
        token = {}
        for i in range(4):
            r = get(s.port, "/echo/t%d" % i)
            token[r.json()["port"]] = sticky_token(r, "S")
        self.assertEqual(set(token), {a.port, b.port})
        to_a = [("Cookie", "S=%s" % token[a.port])]
        # Idle keep-alive upstream connections to a (several requests on one client connection).
        k0 = self.connect(s)
        for i in range(3):
            r = k0.request("GET", "/echo/warm/%d" % i, headers=to_a)
            self.assertEqual(r.json()["port"], a.port)
        self.assertGreaterEqual(tcp_established(a.port), 1)
        # One request in flight on a when the drain starts.
        k1 = self.connect(s, timeout=10)
        k1.send(harness.build_request("GET", "/slow?delay=1.5&tag=inflight", headers=to_a))
        self.assertTrue(wait_until(lambda: "/slow?delay=1.5&tag=inflight" in a.count()["paths"], 3.0))
        time.sleep(0.1)
        self.drain(s, "app", a.address)
        t0 = time.monotonic()
        self.assertEqual(self.backend_status(s, "app", a.address)["state"], "draining")
        # Idle ones close at once; the busy one stays until its response is done. (Recorded,
        # asserted at the end, so that the rest is checked too.)
        problems = []
        if not wait_until(lambda: tcp_established(a.port) == 1, 1.0):
            problems.append("1 s after the drain, %d connections to the draining backend, "
                            "expected only the busy one (idle keep-alive ones not closed)"
                            % tcp_established(a.port))
        # New requests, even with a's cookie and on a's downstream connection, go to b.
        for i in range(4):
            r = get(s.port, "/echo/during/%d" % i, to_a)
            self.assertEqual((r.status, r.json()["port"]), (200, b.port))
            self.assertEqual(sticky_token(r, "S"), token[b.port])
        r = k0.request("GET", "/echo/k0-during", headers=to_a)
        self.assertEqual(r.json()["port"], b.port, "keep-alive client sent to the draining backend")
        busy_and_idle = tcp_established(a.port)
        r = k1.read_response(timeout=5)
        self.assertEqual(r.status, 200, "the in-flight request on the draining backend: %r" % r)
        self.assertEqual(r.json()["slept"], 1.5)
        self.assertLess(time.monotonic() - t0, 3.0)
        if not wait_until(lambda: tcp_established(a.port) < busy_and_idle, 2.0):
            problems.append("the busy upstream connection to the draining backend was kept after "
                            "its request (%d connections before, %d after)"
                            % (busy_and_idle, tcp_established(a.port)))
        if not wait_until(lambda: tcp_established(a.port) == 0, 1.0):
            problems.append("2.5 s after the drain, after its last request, %d connections to "
                            "the draining backend remain" % tcp_established(a.port))
        self.assertEqual(k1.request("GET", "/echo/k1-after", headers=to_a).json()["port"], b.port)
        entry = self.wait_status(s, "app", a.address, connections=0, timeout=1.0)
        if (entry["state"], entry["connections"]) != ("draining", 0):
            problems.append("/api/status of the drained backend after its last request: %r" % entry)
        m = s.admin.metrics()
        self.assertEqual(m.get("sluice_backend_state", pool="app", backend=a.address, state="draining"), 1)
        self.assertEqual(m.get("sluice_backend_state", pool="app", backend=a.address, state="healthy"), 0)
        self.undrain(s, "app", a.address)
        self.assertEqual(self.backend_status(s, "app", a.address)["state"], "healthy")
        self.assertEqual(self.port_of(s, "/echo/back", to_a), a.port)
        self.assertEqual(problems, [])

    def _websockets_on_a(self, n, drain_timeout):
        a, b = self.ws_backends(2)
        s = self.start_pools([pool("ws", [a.address, b.address], balance="round_robin",
                                   drain_timeout=drain_timeout)],
                             [route("ws", "ws", "/", websocket=True)])
        self.drain(s, "ws", b.address)
        paths = ["/ws/a/%d" % i for i in range(n)]
        conns = [self.ws(s.port, p) for p in paths]
        self.assertEqual(set(self.locate([a, b], paths).values()), {0})
        self.undrain(s, "ws", b.address)
        for i, c in enumerate(conns):
            self.assertEchoes(c, "hello %d" % i)
        return a, b, s, conns

    def test_websockets_kept_until_drain_timeout_then_1012_new_ones_elsewhere(self):
        n = 6
        a, b, s, conns = self._websockets_on_a(n, "2s")
        self.drain(s, "ws", a.address)
        t0 = time.monotonic()
        entry = self.backend_status(s, "ws", a.address)
        self.assertEqual((entry["state"], entry["websockets"]), ("draining", n), entry)
        during = ["/ws/during/%d" % i for i in range(4)]
        for p in during:
            self.assertEchoes(self.ws(s.port, p), "new")
        self.assertEqual(set(self.locate([a, b], during).values()), {1},
                         "new WebSockets reached the draining backend")
        for rnd in range(2):
            for i, c in enumerate(conns):
                self.assertEchoes(c, "draining %d %d" % (rnd, i), "WebSocket %d during the drain" % i)
            time.sleep(0.5)
        self.assertLess(time.monotonic() - t0, 1.8, "test too slow to check before drain_timeout")
        w = CloseWatcher(dict(enumerate(conns)))
        w.poll(6.0, until=lambda: len(w.closes) == n)
        self.assertEqual(len(w.closes), n, "closes seen: %r" % w.closes)
        for key, code, reason, t in w.closes:
            self.assertEqual(code, 1012, "WebSocket %s closed with %s %r" % (key, code, reason))
            self.assertGreaterEqual(t - t0, 1.9, "WebSocket %s closed before drain_timeout" % key)
            self.assertLess(t - t0, 4.5, "WebSocket %s closed late" % key)
        self.assertEqual(w.unexpected, [])
        w.close_all()
        # The backend got a clean close for each.
        ids = [a.conn_id("/ws/a/%d" % i) for i in range(n)]
        for cid in ids:
            ev = a.wait_close(cid, timeout=5)
            self.assertIsNotNone(ev, "backend saw no close of connection %d" % cid)
            self.assertNotIn(ev["code"], (None, 1006), "backend connection %d: %r" % (cid, ev))
        m = s.admin.wait_metric(lambda m: m.get("sluice_ws_closes_total", route="ws", code="1012",
                                                by="sluice") == n)
        self.assertEqual(m.get("sluice_ws_closes_total", route="ws", code="1012", by="sluice"), n)
        # Clients reconnect: elsewhere while a drains; after the undrain a takes some again.
        again = ["/ws/again/%d" % i for i in range(n)]
        for p in again:
            self.ws(s.port, p)
        self.assertEqual(set(self.locate([a, b], again).values()), {1})
        self.undrain(s, "ws", a.address)
        back = ["/ws/back/%d" % i for i in range(4)]
        for p in back:
            self.assertEchoes(self.ws(s.port, p), "back")
        self.assertIn(0, self.locate([a, b], back).values(), "undrained backend gets nothing")

    def test_undrain_before_drain_timeout_keeps_websockets_open(self):
        n = 4
        a, b, s, conns = self._websockets_on_a(n, "2s")
        self.drain(s, "ws", a.address)
        t0 = time.monotonic()
        time.sleep(0.7)
        self.undrain(s, "ws", a.address)
        self.assertEqual(self.backend_status(s, "ws", a.address)["state"], "healthy")
        w = CloseWatcher(dict(enumerate(conns)))
        w.poll(max(0.0, t0 + 3.0 - time.monotonic()))
        self.assertEqual((w.closes, w.unexpected), ([], []),
                         "WebSockets closed although the drain was cancelled")
        for i, c in enumerate(conns):
            self.assertEchoes(c, "kept %d" % i)
        self.assertEqual(self.backend_status(s, "ws", a.address)["websockets"], n)


# ---------------------------------------------------------------------------------------------
# Rebalance


class Rebalance(PoolCase):
    def test_rebalance_closes_at_most_n_per_second_and_clients_spread(self):
        n, rate = 30, 5
        a, b = self.ws_backends(2)
        s = self.start_pools([pool("ws", [a.address, b.address], balance="least_conn",
                                   drain_timeout="60s", rebalance={"max_per_second": rate})],
                             [route("ws", "ws", "/", websocket=True)])
        self.drain(s, "ws", b.address)
        paths = ["/ws/r/%d/0" % i for i in range(n)]
        conns = {i: self.ws(s.port, p) for i, p in enumerate(paths)}
        self.assertEqual(set(self.locate([a, b], paths).values()), {0})
        time.sleep(1.2)  # b drained: nothing to rebalance onto
        self.assertFalse(any(pending(c) for c in conns.values()), "a WebSocket got something")
        gen = {}
        reconnected = []

        def reconnect(key):
            i = key[0] if isinstance(key, tuple) else key
            g = gen[i] = gen.get(i, 0) + 1
            p = "/ws/r/%d/%d" % (i, g)
            c = wsutil.WsClient(s.port, path=p)
            self.conns.append(c)
            if c.status != 101:
                raise AssertionError("reconnect %s answered %s" % (p, c.status))
            reconnected.append(p)
            return (i, g), c

        w = CloseWatcher(conns, reconnect=reconnect)
        self.undrain(s, "ws", b.address)
        t0 = time.monotonic()

        def balanced():
            st = self.backends_status(s, "ws")
            return abs(st[a.address]["websockets"] - st[b.address]["websockets"]) <= 1

        w.poll(12.0, until=balanced)
        t_bal = time.monotonic()
        w.poll(2.0)  # and then it stops
        st = self.backends_status(s, "ws")
        w.close_all()
        times = [t for _, _, _, t in w.closes]
        note("%d closes at %s s after the undrain; balanced after %.2fs" % (
            len(times), ["%.2f" % (t - t0) for t in times], t_bal - t0))
        self.assertEqual(w.reconnect_errors, [])
        self.assertEqual(w.unexpected, [])
        self.assertEqual([c for _, c, _, _ in w.closes if c != 1012], [],
                         "rebalance closed WebSockets with other codes")
        loads = [st[a.address]["websockets"], st[b.address]["websockets"]]
        self.assertEqual(sum(loads), n, st)
        self.assertLessEqual(abs(loads[0] - loads[1]), 1, "not rebalanced: %r" % loads)
        self.assertTrue(13 <= len(times) <= 17, "%d WebSockets closed to move 15" % len(times))
        self.assertLessEqual(windows_over(times, 0.9), rate + 1,
                             "more than %d closes within 1 s: %r" % (rate, [t - t0 for t in times]))
        self.assertGreaterEqual(max(times) - min(times), 1.5,
                                "15 closes at <= 5/s spread over less than 1.5 s")
        self.assertEqual(set(self.locate([a, b], reconnected).values()), {1},
                         "reconnecting clients did not land on the emptier backend")
        self.assertRegex(self.log(s), r"rebalance: pool 'ws' backend %s" % a.address)


if __name__ == "__main__":
    harness.main()
