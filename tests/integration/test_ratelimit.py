"""The ratelimit filter through the real binary (local store): 429s with Retry-After and the
RateLimit fields, shadow mode, limits on new and concurrent connections per client address, a
flooding WebSocket client shaped to its rate while another client on the same route keeps its
latency, messages dropped and sessions closed, and a flood of new keys leaving memory flat.
Decisions are read from sluice_ratelimit_decisions_total{filter,scope,decision}."""

import os
import socket
import threading
import time
import unittest

from harness import LOCALHOST, RawConn, SluiceTestCase, binary_has_asan, sluice_bin, wait_until
from harness import ws_route
from test_auth import SECRET, claims, jwt_filter, token
from wsutil import BINARY, CLOSE, TEXT, WsClient, build_frame


def rl_toml(name="rl", **keys):
    lines = ["[[filters]]", 'name = "%s"' % name, 'type = "ratelimit"']
    for k, v in keys.items():
        if isinstance(v, str):
            v = '"%s"' % v
        elif isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, list):
            v = "[" + ", ".join('"%s"' % x for x in v) + "]"
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"



def decisions(sluice, scope, decision, name="rl"):
    return sluice.admin.metrics().get("sluice_ratelimit_decisions_total", decision=decision,
                                      filter=name, scope=scope)


def asan_env():
    """Under ASan, no quarantine (freed memory would otherwise show as growth; see
    test_memory.py)."""
    if not binary_has_asan(sluice_bin()) or "quarantine_size_mb" in os.environ.get("ASAN_OPTIONS", ""):
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    extra = "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    return {"ASAN_OPTIONS": (opts + ":" + extra) if opts else extra}


class HttpLimits(SluiceTestCase):
    def start(self, server=None, env=None, **keys):
        b = self.start_backend()
        spec = {"pools": [{"name": "app", "backends": [{"address": b.address}]}],
                "routes": [{"pool": "app", "filters": ["rl"]}], "extra": rl_toml(**keys)}
        if server:
            spec["server"] = server
        s = self.start_sluice(spec, env=env)
        s.wait_admin()
        return s

    def test_429_with_retry_after_and_ratelimit_fields(self):
        s = self.start(requests_per_second=2, burst=3)
        c = self.connect(s)
        statuses = [c.request("GET", "/echo/%d" % i).status for i in range(3)]
        self.assertEqual(statuses, [200, 200, 200])
        r = c.request("GET", "/echo/over")
        self.assertEqual(r.status, 429, r)
        retry = int(r.header("Retry-After"))
        self.assertTrue(1 <= retry <= 1, r.headers)
        # draft-ietf-httpapi-ratelimit-headers-10: 3 per 2 s (burst / rate), none left.
        self.assertEqual(r.header("RateLimit-Policy"), '"rl";q=3;w=2', r.headers)
        self.assertRegex(r.header("RateLimit"), r'^"rl";r=0;t=[12]$')
        # The connection stays usable (a request limit is not a connection limit).
        time.sleep(0.6)
        self.assertEqual(c.request("GET", "/echo/later").status, 200)
        self.assertEqual(decisions(s, "requests_per_second", "reject"), 1)
        self.assertEqual(decisions(s, "requests_per_second", "allow"), 4)
        self.assertIn("rate limited (requests_per_second)", s.access_log_lines()[3])

    def test_shadow_mode_counts_and_logs_but_never_blocks(self):
        s = self.start(requests_per_second=1, burst=1, mode="shadow")
        c = self.connect(s)
        for i in range(6):
            self.assertEqual(c.request("GET", "/echo/%d" % i).status, 200)
        self.assertEqual(decisions(s, "requests_per_second", "shadow"), 5)
        self.assertEqual(decisions(s, "requests_per_second", "reject"), 0)
        self.assertTrue(wait_until(lambda: "(shadow)" in s.stderr(), 3), s.stderr())

    def test_connection_rate_per_ip_counts_new_connections_only(self):
        s = self.start(connections_per_second=0.5, burst=2, server={"workers": 2})
        a = self.connect(s)
        b = self.connect(s)
        for _ in range(3):  # keep-alive requests are not new connections
            self.assertEqual(a.request("GET", "/echo").status, 200)
            self.assertEqual(b.request("GET", "/echo").status, 200)
        c = self.connect(s)
        r = c.request("GET", "/echo")
        self.assertEqual(r.status, 429, r)
        self.assertIn("close", r.connection_tokens())
        self.assertClosed(c)  # a refused connection ends
        self.assertEqual(a.request("GET", "/echo").status, 200)
        self.assertEqual(decisions(s, "connections_per_second", "allow"), 2)
        self.assertEqual(decisions(s, "connections_per_second", "reject"), 1)


class WsLimits(SluiceTestCase):
    def start(self, env=None, server=None, **keys):
        b, s = self.start_ws_proxy(routes=[ws_route(filters=["rl"])], extra=rl_toml(**keys),
                                   server=server)
        s.wait_admin()
        return b, s

    def test_concurrent_connections_per_ip_released_when_sessions_end(self):
        _, s = self.start(concurrent_connections=2, server={"workers": 2})
        a = self.ws_client(s, "/ws/a")
        b = self.ws_client(s, "/ws/b")
        self.assertUpgraded(a)
        self.assertUpgraded(b)
        c = self.ws_client(s, "/ws/c")
        self.assertEqual(c.status, 429)
        self.assertEqual(c.header("Retry-After"), "1")
        a.send_frame(CLOSE, b"\x03\xe8")
        a.read_close()
        a.close()
        # The ended session's slot comes back (released exactly once, in onDestroy).
        def upgrade():
            d = WsClient(s.port, "/ws/d")
            self.conns.append(d)
            return d.status == 101
        self.assertTrue(wait_until(upgrade, 3))
        e = self.ws_client(s, "/ws/e")
        self.assertEqual(e.status, 429)
        self.assertEqual(decisions(s, "concurrent_connections", "reject"), 2)

    def test_flooding_client_is_shaped_and_another_keeps_its_latency(self):
        rate = 40
        _, s = self.start(messages_per_second=rate, burst=10, action="shape",
                          key="header:X-User")
        flood = self.ws_client(s, "/ws/flood", headers=[("X-User", "flooder")])
        calm = self.ws_client(s, "/ws/calm", headers=[("X-User", "calm")])
        self.assertUpgraded(flood)
        self.assertUpgraded(calm)
        payload = b"x" * 64
        stop = threading.Event()
        sent = [0]
        received = []

        def writer():
            flood.sock.settimeout(0.2)
            frame = build_frame(BINARY, payload)
            while not stop.is_set():
                try:
                    flood.sock.sendall(frame)  # blocks when sluice stops reading: backpressure
                    sent[0] += 1
                except socket.timeout:
                    continue
                except OSError:
                    return

        def reader():
            while not stop.is_set():
                try:
                    op, data = flood.recv_message(timeout=0.5)
                except Exception:
                    continue
                received.append(time.monotonic())

        threads = [threading.Thread(target=writer, daemon=True),
                   threading.Thread(target=reader, daemon=True)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        latencies = []
        while time.monotonic() - t0 < 4.0:
            start = time.monotonic()
            calm.send_text("ping %d" % len(latencies))
            op, data = calm.recv_message(timeout=5)
            latencies.append(time.monotonic() - start)
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(5)
        n = len(received)
        latencies.sort()
        print("shaping: the flooder wrote %d messages and got %d echoes in %.1f s (limit %d/s, "
              "burst 10); the other client's median round trip %.1f ms" %
              (sent[0], n, elapsed, rate, 1000 * latencies[len(latencies) // 2]))
        # The flooder got about rate x time + burst (one read's worth at most beyond the bucket,
        # paid back by a longer pause), while it wrote far more than that.
        self.assertLessEqual(n, rate * elapsed + 10 + 60, "shaped to %d msg/s?" % rate)
        self.assertGreaterEqual(n, rate * (elapsed - 1.5), "starved below the rate")
        self.assertGreater(sent[0], n)
        # The other client on the same route kept its latency.
        self.assertLess(latencies[len(latencies) // 2], 0.05, latencies)
        self.assertGreater(decisions(s, "messages_per_second", "shape"), 0)
        self.assertEqual(decisions(s, "messages_per_second", "drop"), 0)

    def test_messages_over_the_limit_are_dropped(self):
        _, s = self.start(messages_per_second=2, burst=3, action="drop")
        c = self.ws_client(s, "/ws/d")
        self.assertUpgraded(c)
        for i in range(8):
            c.send_text("m%d" % i)
        got = []
        try:
            while True:
                got.append(c.recv_message(timeout=0.5)[1])
        except Exception:
            pass
        self.assertEqual(got, [b"m0", b"m1", b"m2"])
        self.assertEqual(decisions(s, "messages_per_second", "drop"), 5)

    def test_close_with_1013(self):
        _, s = self.start(messages_per_second=1, burst=2, action="close", close_code=1013)
        c = self.ws_client(s, "/ws/c")
        self.assertUpgraded(c)
        for i in range(3):
            c.send_text("m%d" % i)
        close, before = c.read_close(timeout=5)
        self.assertEqual(close.code, 1013)
        self.assertEqual(decisions(s, "messages_per_second", "close"), 1)


class KeyFlood(SluiceTestCase):
    def test_a_flood_of_new_keys_leaves_memory_flat(self):
        b = self.start_backend()
        spec = {"pools": [{"name": "app", "backends": [{"address": b.address}]}],
                "routes": [{"pool": "app", "filters": ["rl"]}],
                "extra": rl_toml(requests_per_second=0.01, burst=1, key="header:X-Key",
                                 max_keys=1024)}
        s = self.start_sluice(spec, env=asan_env())
        s.wait_admin()

        def flood(first, n, batch=50):
            c = RawConn(s.port, timeout=30)
            try:
                for start in range(first, first + n, batch):
                    reqs = b"".join(
                        b"GET /status?code=204 HTTP/1.1\r\nHost: x\r\nX-Key: k%d\r\n\r\n" % k
                        for k in range(start, start + batch))
                    c.send(reqs)
                    for _ in range(batch):
                        self.assertEqual(c.read_response().status, 204)
            finally:
                c.close()

        flood(0, 5000)
        rss_warm = s.rss()["VmRSS"]
        flood(5000, 20000)
        rss_after = s.rss()["VmRSS"]
        m = s.admin.metrics()
        keys = m.get("sluice_ratelimit_table_keys", None, filter="rl")
        evicted = m.get("sluice_ratelimit_evictions_total", None, filter="rl")
        print("key flood: RSS %.1f MiB after 5000 keys, %.1f MiB after 25000; table %d slots, "
              "%d evictions" % (rss_warm / 1024, rss_after / 1024, keys, evicted))
        self.assertLessEqual(keys, 1024)
        self.assertGreater(evicted, 20000)
        self.assertLess(rss_after - rss_warm, 4 * 1024, "RSS grew by %d KiB" % (rss_after - rss_warm))
        self.assertEqual(decisions(s, "requests_per_second", "allow"), 25000)


class ClaimKeys(SluiceTestCase):
    """A limit keyed on a claim the jwt filter before it verified: each user has their own
    bucket, whatever address or connection they come from."""

    def test_each_user_has_their_own_bucket(self):
        secret = os.path.join(self.tmpdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        b = self.start_backend()
        extra = jwt_filter(secrets=[secret], algorithms=["HS256"]) + rl_toml(
            requests_per_second=0.5, burst=2, key="claim:sub")
        s = self.start_sluice({"pools": [{"name": "app", "backends": [{"address": b.address}]}],
                               "routes": [{"pool": "app", "filters": ["auth", "rl"]}],
                               "extra": extra})
        s.wait_admin()

        def get(user):
            c = self.connect(s)
            auth = "Bearer " + token(claims(sub=user))
            return c.request("GET", "/echo/" + user, headers=[("Authorization", auth)]).status

        # alice spends her burst from three connections; bob's bucket is untouched.
        self.assertEqual([get("alice") for _ in range(3)], [200, 200, 429])
        self.assertEqual([get("bob") for _ in range(2)], [200, 200])
        self.assertEqual(get("bob"), 429)
        self.assertEqual(decisions(s, "requests_per_second", "reject"), 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
