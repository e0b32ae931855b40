"""The admin API and metrics: /metrics parsed by prometheus_client with numbers that match the
traffic sent (workers = 2, so per-worker counters must be summed), /api/status fields, /healthz,
/api/reload answers, token auth for POST endpoints, 404/405."""

import os
import time

import harness
from harness import (Metrics, RawConn, SluiceTestCase, addr, config, free_port, pool, position,
                     route, run_sluice, wait_until)
import wsutil
from wsutil import WsClient

GOOD_ORIGIN = "https://good.example"


class AdminCase(SluiceTestCase):
    def setup_proxy(self, admin=None, extra_files=None):
        """backend + ws backend behind sluice (workers = 2) with routes: "api" /api, an unnamed
        route /plain (label "1"), "st" /status, and "chat" /ws (WebSocket, origin filter)."""
        self.b = self.start_backend()
        self.w = self.start_ws_backend()
        self.admin_port, self.public = free_port(), free_port()
        routes = [route("api", "app", "/api"),
                  {"listener": "public", "host": "*", "path_prefix": "/plain", "pool": "app"},
                  route("st", "app", "/status"),
                  dict(route("chat", "wspool", "/ws", websocket=True), filters=["origin-check"])]
        extra = ('[[filters]]\nname = "origin-check"\ntype = "origin"\nallow = ["%s"]\n'
                 % GOOD_ORIGIN)
        self.text = config(self.admin_port, {"public": self.public},
                           [pool("app", [self.b.address]), pool("wspool", [self.w.address])],
                           routes, admin=admin, extra=extra)
        self.s = self.start_config_sluice(self.text, self.admin_port, {"public": self.public})
        self.admin = self.s.admin
        # The harness's readiness probe connected once; let sluice count (and close) it first.
        self.admin.wait_metric(
            lambda m: m.get("sluice_connections_accepted_total", listener="public") >= 1 and
            m.get("sluice_connections_open", listener="public") == 0)
        return self.s

    def ws(self, path="/ws/m", origin=GOOD_ORIGIN):
        c = WsClient(self.public, path=path, headers=[("Origin", origin)] if origin else ())
        self.conns.append(c)
        return c

    def get(self, target, conn=None):
        c = conn or RawConn(self.public, timeout=10)
        try:
            return c.request("GET", target)
        finally:
            if conn is None:
                c.close()


# ---------------------------------------------------------------------------------------------


class MetricsMatchTraffic(AdminCase):
    def delta(self, before, after, name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)

    def test_families_types_and_start_values(self):
        self.setup_proxy()
        r = self.admin.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r.headers)
        m = Metrics(r.body.decode())
        types = {
            "sluice_connections_open": "gauge",
            "sluice_connections_accepted": "counter",
            "sluice_http_requests": "counter",
            "sluice_upstream_response_seconds": "histogram",
            "sluice_ws_connections_open": "gauge",
            "sluice_ws_messages": "counter",
            "sluice_ws_bytes": "counter",
            "sluice_ws_message_bytes": "histogram",
            "sluice_ws_closes": "counter",
            "sluice_filter_decisions": "counter",
            "sluice_backend_state": "gauge",
            "sluice_backend_connections_open": "gauge",
            "sluice_config_reloads": "counter",
            "sluice_config_generation": "gauge",
            "sluice_tls_handshakes": "counter",
        }
        for name, typ in types.items():
            self.assertIn(name, m.families, "metric family %s missing" % name)
            self.assertEqual(m.families[name].type, typ, name)
        self.assertEqual(m.get("sluice_config_generation", default=None), 1)
        self.assertEqual(m.get("sluice_config_reloads_total", default=None, result="success"), 0)
        self.assertEqual(m.get("sluice_config_reloads_total", default=None, result="failure"), 0)
        self.assertEqual(m.families["sluice_tls_handshakes"].samples, [])
        for backend, p in ((self.b.address, "app"), (self.w.address, "wspool")):
            self.assertEqual(m.get("sluice_backend_state", None, pool=p, backend=backend,
                                   state="healthy"), 1)
            for st in ("unhealthy", "draining"):
                self.assertEqual(m.get("sluice_backend_state", 0, pool=p, backend=backend,
                                       state=st), 0)
        self.assertEqual(m.get("sluice_connections_open", None, listener="public"), 0)
        # (The harness's readiness probe connected once.)
        self.assertEqual(m.get("sluice_connections_accepted_total", None, listener="public"), 1)

    def test_http_requests_by_route_and_class(self):
        self.setup_proxy()
        m0 = self.admin.metrics()
        n_api, n_plain = 20, 3
        conns = 0
        for i in range(n_api):  # each on a fresh connection: both workers get some
            self.assertEqual(self.get("/api/x%d" % i).status, 200)
            conns += 1
        keep = RawConn(self.public, timeout=10)
        self.conns.append(keep)
        conns += 1
        for i in range(n_plain):  # the unnamed route (index 1), on one keep-alive connection
            self.assertEqual(keep.request("GET", "/plain/%d" % i).status, 200)
        for code in (503, 503, 404):
            self.assertEqual(self.get("/status?code=%d" % code).status, code)
            conns += 1
        for i in range(2):  # no route matches
            self.assertEqual(self.get("/nothing/here").status, 404)
            conns += 1
        expect = {("api", "2xx"): n_api, ("1", "2xx"): n_plain, ("st", "5xx"): 2,
                  ("st", "4xx"): 1, ("", "4xx"): 2}

        def done(m):
            return all(self.delta(m0, m, "sluice_http_requests_total", route=rt, code=c) >= n
                       for (rt, c), n in expect.items())
        m = self.admin.wait_metric(done, timeout=5)
        time.sleep(0.3)
        m = self.admin.metrics()
        for (rt, c), n in expect.items():
            self.assertEqual(self.delta(m0, m, "sluice_http_requests_total", route=rt, code=c), n,
                             "sluice_http_requests_total{route=%r,code=%r}" % (rt, c))
        # Nothing else was counted.
        self.assertEqual(sum(m.matching("sluice_http_requests_total").values()) -
                         sum(m0.matching("sluice_http_requests_total").values()),
                         sum(expect.values()))
        self.assertEqual(self.delta(m0, m, "sluice_connections_accepted_total", listener="public"),
                         conns)
        self.assertEqual(m.get("sluice_connections_open", listener="public"), 1)  # `keep`
        upstream = n_api + n_plain + 3
        self.assertEqual(self.delta(m0, m, "sluice_upstream_response_seconds_count", pool="app"),
                         upstream)
        buckets = sorted(((float(dict(k)["le"]), v) for k, v in
                          m.matching("sluice_upstream_response_seconds_bucket", pool="app").items()))
        self.assertGreater(len(buckets), 3)
        self.assertEqual(buckets[-1], (float("inf"), m.get("sluice_upstream_response_seconds_count",
                                                           pool="app")))
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets), "not cumulative")
        self.assertGreater(m.get("sluice_upstream_response_seconds_sum", pool="app"), 0)
        keep.close()
        m = self.admin.wait_metric(lambda m: m.get("sluice_connections_open", listener="public") == 0)
        self.assertEqual(m.get("sluice_connections_open", listener="public"), 0)

    def test_counters_survive_a_reload(self):
        self.setup_proxy()
        for i in range(5):
            self.assertEqual(self.get("/api/%d" % i).status, 200)
        m = self.admin.wait_metric(
            lambda m: m.get("sluice_http_requests_total", route="api", code="2xx") >= 5)
        self.assertEqual(m.get("sluice_http_requests_total", route="api", code="2xx"), 5)
        accepted = m.get("sluice_connections_accepted_total", listener="public")
        self.s.write_config(self.text.replace('shutdown_timeout = "5s"', 'shutdown_timeout = "6s"'))
        code, body = self.admin.reload()
        self.assertEqual(code, 200, body)
        for i in range(4):
            self.assertEqual(self.get("/api/after%d" % i).status, 200)
        m = self.admin.wait_metric(
            lambda m: m.get("sluice_http_requests_total", route="api", code="2xx") >= 9)
        self.assertEqual(m.get("sluice_http_requests_total", route="api", code="2xx"), 9,
                         "a counter went back or lost counts across a reload")
        self.assertEqual(m.get("sluice_connections_accepted_total", listener="public"),
                         accepted + 4)
        self.assertEqual(m.get("sluice_config_generation"), 2)
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), 1)

    def test_websocket_messages_bytes_and_closes(self):
        self.setup_proxy()
        m0 = self.admin.metrics()
        c = self.ws()
        self.assertEqual(c.status, 101, c.headers)
        m = self.admin.wait_metric(lambda m: m.get("sluice_ws_connections_open", route="chat") == 1)
        self.assertEqual(m.get("sluice_ws_connections_open", route="chat"), 1)
        self.assertEqual(m.get("sluice_backend_connections_open", pool="wspool",
                               backend=self.w.address), 1)
        sizes = [1, 10, 200, 3000, 70000]
        for i, n in enumerate(sizes):
            payload = bytes((i + j) % 256 for j in range(n))
            c.send_binary(payload)
            self.assertEqual(c.recv_message(timeout=10), (wsutil.BINARY, payload))
        c.send_frame(wsutil.CLOSE, wsutil.close_payload(1000, "bye"))
        f, _ = c.read_close(timeout=5)
        self.assertEqual(f.code, 1000)
        # The backend closes the second session.
        c2 = self.ws("/ws/m2")
        self.assertEqual(c2.status, 101)
        c2.send_text("close:4001:bye")
        f, _ = c2.read_close(timeout=5)
        self.assertEqual(f.code, 4001)
        # A handshake the origin filter rejects.
        bad = self.ws("/ws/bad", origin="https://evil.example")
        self.assertEqual(bad.status, 403, bad.headers)

        k = len(sizes)
        total = sum(sizes)
        d2u, u2d = "downstream_to_upstream", "upstream_to_downstream"
        expect = [
            ("sluice_ws_messages_total", {"route": "chat", "direction": d2u}, k + 1),
            ("sluice_ws_messages_total", {"route": "chat", "direction": u2d}, k),
            ("sluice_ws_bytes_total", {"route": "chat", "direction": d2u},
             total + len("close:4001:bye")),
            ("sluice_ws_bytes_total", {"route": "chat", "direction": u2d}, total),
            ("sluice_ws_message_bytes_count", {"route": "chat", "direction": d2u}, k + 1),
            ("sluice_ws_message_bytes_count", {"route": "chat", "direction": u2d}, k),
            ("sluice_ws_message_bytes_sum", {"route": "chat", "direction": u2d}, total),
            ("sluice_ws_closes_total", {"route": "chat", "code": "1000", "by": "downstream"}, 1),
            ("sluice_ws_closes_total", {"route": "chat", "code": "4001", "by": "upstream"}, 1),
            ("sluice_filter_decisions_total", {"filter": "origin-check", "decision": "reject"}, 1),
        ]

        def done(m):
            return all(self.delta(m0, m, n, **l) >= v for n, l, v in expect) and \
                m.get("sluice_ws_connections_open", route="chat") == 0
        m = self.admin.wait_metric(done, timeout=5)
        time.sleep(0.3)
        m = self.admin.metrics()
        for name, labels, value in expect:
            self.assertEqual(self.delta(m0, m, name, **labels), value, "%s%r" % (name, labels))
        self.assertEqual(sum(m.matching("sluice_ws_closes_total").values()), 2,
                         m.matching("sluice_ws_closes_total"))
        self.assertEqual(self.delta(m0, m, "sluice_filter_decisions_total",
                                    filter="origin-check", decision="continue"), 2,
                         "origin filter: two handshakes allowed")
        self.assertEqual(m.get("sluice_ws_connections_open", route="chat"), 0)
        self.assertEqual(m.get("sluice_backend_connections_open", pool="wspool",
                               backend=self.w.address), 0)
        # Histogram buckets: the 1-byte message is in every bucket, the 70000-byte one only in
        # buckets >= 70000.
        buckets = {float(dict(k)["le"]): v for k, v in
                   m.matching("sluice_ws_message_bytes_bucket", route="chat", direction=u2d).items()}
        self.assertEqual(buckets[float("inf")], k)
        for le, v in buckets.items():
            self.assertEqual(v, sum(1 for n in sizes if n <= le), "bucket le=%s" % le)
        # Three WebSocket handshakes, one 403 of them, all counted as accepted connections.
        self.assertEqual(self.delta(m0, m, "sluice_connections_accepted_total", listener="public"), 3)


# ---------------------------------------------------------------------------------------------


class Status(AdminCase):
    def test_status_fields(self):
        self.setup_proxy()
        # The first line is "sluice X.Y.Z (commit ...)"; compiler and libraries follow.
        version = run_sluice(["--version"], timeout=10).stdout.decode().split()[1]
        r = self.admin.get("/api/status")
        self.assertEqual(r.status, 200)
        self.assertIn("json", r.header("Content-Type", ""))
        st = r.json()
        self.assertEqual(st["version"], version)
        self.assertIsInstance(st["uptime_seconds"], int)
        self.assertIs(st["shutting_down"], False)
        cfg = st["config"]
        self.assertEqual(cfg["path"], self.s.config_path)
        self.assertEqual(cfg["generation"], 1)
        self.assertEqual(cfg["files"], [self.s.config_path])
        self.assertEqual(set(cfg["last_reload"]), {"result", "time", "errors"})
        self.assertEqual(st["listeners"], [{"name": "public", "listen": addr(self.public),
                                            "connections": 0}])
        # An unnamed route is shown with its metrics label (its index) or an empty name.
        self.assertIn(st["routes"][1]["name"], ("", "1"))
        st["routes"][1]["name"] = ""
        for r in st["routes"]:  # the status page's totals (test_status_page.py checks them)
            self.assertEqual((r.pop("requests"), r.pop("websockets"), r.pop("closes")), (0, 0, {}))
            r.pop("messages")
        self.assertEqual(st["routes"], [
            {"name": "api", "listener": "public", "host": "*", "path_prefix": "/api",
             "pool": "app", "filters": [], "websocket": False},
            {"name": "", "listener": "public", "host": "*", "path_prefix": "/plain",
             "pool": "app", "filters": [], "websocket": False},
            {"name": "st", "listener": "public", "host": "*", "path_prefix": "/status",
             "pool": "app", "filters": [], "websocket": False},
            {"name": "chat", "listener": "public", "host": "*", "path_prefix": "/ws",
             "pool": "wspool", "filters": ["origin-check"], "websocket": True}])
        self.assertEqual(st["pools"], [
            {"name": "app", "balance": "round_robin", "backends": [
                {"address": self.b.address, "weight": 1, "state": "healthy", "connections": 0,
                 "websockets": 0}]},
            {"name": "wspool", "balance": "round_robin", "backends": [
                {"address": self.w.address, "weight": 1, "state": "healthy", "connections": 0,
                 "websockets": 0}]}])

        # Live counts: two idle client connections and one WebSocket.
        idle = [RawConn(self.public, timeout=10) for _ in range(2)]
        self.conns.extend(idle)
        c = self.ws()
        self.assertEqual(c.status, 101)

        def counts():
            s = self.admin.status()
            return (s["listeners"][0]["connections"], s["pools"][1]["backends"][0]["websockets"],
                    s["pools"][1]["backends"][0]["connections"])
        self.assertTrue(wait_until(lambda: counts() == (3, 1, 1), 5), counts())
        for x in idle:
            x.close()
        c.send_frame(wsutil.CLOSE, wsutil.close_payload(1000))
        c.read_close()
        self.assertTrue(wait_until(lambda: counts() == (0, 0, 0), 5), counts())
        time.sleep(1.1)
        self.assertGreaterEqual(self.admin.status()["uptime_seconds"], 1)

    def test_reload_answers_and_last_reload(self):
        self.setup_proxy()
        code, body = self.admin.reload()
        self.assertEqual((code, body), (200, {"result": "success", "generation": 2}))
        st = self.admin.status()["config"]
        self.assertEqual(st["generation"], 2)
        self.assertEqual(st["last_reload"]["result"], "success")
        self.assertEqual(st["last_reload"]["errors"], [])
        self.assertRegex(st["last_reload"]["time"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
        bad = self.text.replace('pool = "app"', 'pool = "apps"', 1)
        line, col = position(bad, '"apps"')
        self.s.write_config(bad)
        code, body = self.admin.reload()
        self.assertEqual(code, 400)
        self.assertEqual(body["result"], "failure")
        self.assertEqual(body["generation"], 2)
        self.assertEqual(len(body["errors"]), 1, body)
        self.assertTrue(body["errors"][0].startswith("%s:%d:%d: error: " % (self.s.config_path,
                                                                           line, col)), body)
        self.assertIn("apps", body["errors"][0])
        st = self.admin.status()["config"]
        self.assertEqual(st["generation"], 2)
        self.assertEqual(st["last_reload"]["result"], "failure")
        self.assertEqual(st["last_reload"]["errors"], body["errors"])
        m = self.admin.metrics()
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 1)
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), 1)
        self.assertEqual(m.get("sluice_config_generation"), 2)
        self.assertEqual(self.get("/api/still").status, 200)

    def test_healthz(self):
        self.setup_proxy()
        r = self.admin.healthz()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.strip(), b"ok")


class Routing(AdminCase):
    def test_unknown_paths_are_404(self):
        self.setup_proxy()
        for method, path in (("GET", "/index.htm"), ("GET", "/api"), ("GET", "/api/nope"),
                             ("GET", "/metricsx"), ("POST", "/api/nope"),
                             ("POST", "/api/pools/nope/backends/127.0.0.1:1/drain"),
                             ("POST", "/api/pools/nope/backends/127.0.0.1:1/undrain"),
                             ("POST", "/api/pools/app/backends/127.0.0.1:1/drain"),
                             ("POST", "/api/pools/wspool/backends/%s/drain" % self.b.address),
                             ("POST", "/api/pools/app/backends/%s/explode" % self.b.address)):
            r = self.admin.request(method, path, body=b"" if method == "POST" else None)
            self.assertEqual(r.status, 404, "%s %s: %r" % (method, path, r))

    def test_wrong_methods_are_405(self):
        self.setup_proxy()
        for method, path in (("GET", "/api/reload"), ("PUT", "/api/reload"),
                             ("DELETE", "/api/reload"), ("POST", "/metrics"),
                             ("POST", "/api/status"), ("POST", "/healthz"),
                             ("GET", "/api/pools/app/backends/%s/drain" % self.b.address)):
            r = self.admin.request(method, path, body=b"" if method in ("POST", "PUT") else None)
            self.assertEqual(r.status, 405, "%s %s: %r" % (method, path, r))
        self.assertEqual(self.admin.generation(), 1, "a GET reloaded")


class Token(AdminCase):
    TOKEN = "tok-3f9a1c7e5b"

    def test_post_needs_bearer_token_gets_stay_open(self):
        path = os.path.join(self.tmpdir, "admin.token")
        with open(path, "w") as f:
            f.write(self.TOKEN + "\n")
        self.setup_proxy(admin={"token_file": path})
        for headers in ([], [("Authorization", "Bearer wrong")],
                        [("Authorization", "Bearer " + self.TOKEN + "x")],
                        [("Authorization", self.TOKEN)],
                        [("Authorization", "Basic " + self.TOKEN)]):
            r = self.admin.request("POST", "/api/reload", headers=headers, body=b"")
            self.assertEqual(r.status, 401, "%r: %r" % (headers, r))
            r = self.admin.request("POST", "/api/pools/app/backends/%s/drain" % self.b.address,
                                   headers=headers, body=b"")
            self.assertEqual(r.status, 401, "drain with %r: %r" % (headers, r))
        r = self.admin.request("POST", "/api/reload", body=b"")
        self.assertIn("bearer", r.header("WWW-Authenticate", "").lower())
        self.assertEqual(self.admin.generation(), 1, "an unauthorized POST reloaded")
        for p in ("/metrics", "/api/status", "/healthz"):
            self.assertEqual(self.admin.get(p).status, 200, p)
        code, body = self.admin.reload(token=self.TOKEN)
        self.assertEqual((code, body), (200, {"result": "success", "generation": 2}))
        r = self.admin.post("/api/pools/nope/backends/127.0.0.1:1/drain", token=self.TOKEN)
        self.assertEqual(r.status, 404)
        m = self.admin.metrics()
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), 1)
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 0)


if __name__ == "__main__":
    harness.main()
