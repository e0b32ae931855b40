"""Live reload: 200 reloads under HTTP load with 500 open WebSockets (nothing fails, nothing
drops, invalid configs are rejected with their position, RSS stays flat); listeners and
backends added and removed by reload; WebSockets whose route or backend went away get 1012 after
drain_timeout while the others stay; reload by SIGHUP, by a change of the config file and of an
included file; a keep-alive connection switches to the new config at its next request."""

import os
import re
import signal
import socket
import sys
import time

import harness
from harness import (LOCALHOST, HttpLoad, RawConn, SluiceTestCase, addr, can_connect, config,
                     free_port, pool, position, raise_nofile, route, rss_env, run_sluice,
                     tcp_established, vm_rss_kib, wait_until, write_file)
from wsutil import WsClient, WsFleet

NOFILE = raise_nofile(8192)


def note(msg):
    sys.stderr.write("[test_reload] %s\n" % msg)
    sys.stderr.flush()


class ReloadCase(SluiceTestCase):
    def ws(self, port, path):
        c = WsClient(port, path=path)
        self.conns.append(c)
        self.assertEqual(c.status, 101, "handshake on %s answered %s %r" % (path, c.status, c.headers))
        return c

    def reload_ok(self, s, expect_generation=None):
        code, body = s.admin.reload()
        self.assertEqual((code, body.get("result")), (200, "success"), "reload failed: %r" % body)
        if expect_generation is not None:
            self.assertEqual(body["generation"], expect_generation, body)
        return body["generation"]

    def port_of(self, port, target="/echo/probe"):
        """The backend port that answered a GET on a fresh connection (None if not 200)."""
        c = RawConn(port, timeout=10)
        try:
            r = c.request("GET", target, headers=[("Connection", "close")])
        finally:
            c.close()
        return r.json()["port"] if r.status == 200 else None

    def wait_port(self, port, want, target="/echo/probe", timeout=3.0):
        """Requests on fresh connections until one reaches backend port `want` (bounded): the
        workers take a new snapshot asynchronously, microseconds after the reload answers."""
        return wait_until(lambda: self.port_of(port, target) == want, timeout, interval=0.02)


# ---------------------------------------------------------------------------------------------


class Soak(ReloadCase):
    VALID_RELOADS = 200
    WEBSOCKETS = 500
    PAUSE = 0.06  # seconds between reloads

    def configs(self, admin_port, public, b, w):
        p0, p1, p2 = b.addresses
        a = config(admin_port, {"public": public},
                   [pool("app", [p0, p1]), pool("wspool", [w.address])],
                   [route("ws", "wspool", "/ws", websocket=True), route("web", "app", "/echo")])
        bb = config(admin_port, {"public": public},
                    [pool("app", [p1, p2]), pool("other", [p0]), pool("wspool", [w.address])],
                    [route("ws", "wspool", "/ws", websocket=True), route("web", "app", "/echo"),
                     route("extra", "other", "/extra")])
        return a, bb

    def invalid(self, text, kind, path):
        """(invalid text, expected 'FILE:LINE:COLUMN: error: ' prefix) for mutation `kind`."""
        if kind == 0:  # unknown key: the key's position
            t = text.replace("workers = 2", "workerz = 2", 1)
            pos = position(t, "workerz")
        elif kind == 1:  # unknown pool: the value's position
            t = text.replace('pool = "app"', 'pool = "nope"', 1)
            pos = position(t, '"nope"')
        elif kind == 2:  # bad duration
            t = text.replace('drain_timeout = "1s"', 'drain_timeout = "2 parsecs"', 1)
            pos = position(t, '"2 parsecs"')
        elif kind == 3:  # wrong type
            t = text.replace("workers = 2", 'workers = "two"', 1)
            pos = position(t, '"two"')
        else:  # TOML syntax error: an unterminated string, reported at the end of its line
            bad = 'x = "unterminated'
            t = text.replace("workers = 2\n", "workers = 2\n" + bad + "\n", 1)
            line, _ = position(t, bad)
            pos = (line, len(bad) + 1)
        self.assertNotEqual(t, text)
        return t, "%s:%d:%d: error: " % (path, pos[0], pos[1])

    def test_200_reloads_under_load_with_500_websockets(self):
        self.assertGreaterEqual(NOFILE, 2 * self.WEBSOCKETS + 200,
                                "RLIMIT_NOFILE too low for %d WebSockets" % self.WEBSOCKETS)
        b = self.start_backend(nports=3)
        w = self.start_ws_backend()
        admin_port, public = free_port(), free_port()
        cfg_a, cfg_b = self.configs(admin_port, public, b, w)
        env = rss_env()
        s = self.start_config_sluice(cfg_a, admin_port, {"public": public}, env=env)
        path = s.config_path
        # Every invalid variant is rejected by --check at the position the test expects.
        for kind in range(5):
            text, prefix = self.invalid(cfg_a, kind, path + ".check")
            with open(path + ".check", "w") as f:
                f.write(text)
            p = run_sluice(["--check", path + ".check"], timeout=30)
            self.assertEqual(p.returncode, 1)
            self.assertIn(prefix, p.stderr.decode() + p.stdout.decode(), "kind %d" % kind)
        os.unlink(path + ".check")

        fleet = WsFleet(public, self.WEBSOCKETS, path="/ws/fleet")
        self.addCleanup(fleet.close)
        t0 = time.monotonic()
        open_errors = fleet.open()
        self.assertEqual(open_errors, [], "WebSockets that did not open")
        note("%d WebSockets open in %.1fs" % (self.WEBSOCKETS, time.monotonic() - t0))
        problems = fleet.echo_all("first")
        self.assertEqual(problems, {}, "WebSockets without echo before the reloads")
        m0 = s.admin.metrics()
        self.assertEqual(m0.get("sluice_ws_connections_open", route="ws"), self.WEBSOCKETS)

        load = HttpLoad(public, threads=4, per_connection=10, pause=0.002)
        self.addCleanup(load.stop)
        load.start()
        fleet.start_chatter(pause=0.02)

        generation = 1
        valid = 0
        invalid = 0
        invalid_kind = 0
        rss = {}
        retries = 0
        reload_times = []
        t_start = time.monotonic()
        for i in range(self.VALID_RELOADS):
            use_b = (i % 2 == 0)
            s.write_config(cfg_b if use_b else cfg_a)
            t = time.monotonic()
            if i % 50 == 25:  # some by signal
                s.signal(signal.SIGHUP)
                st = s.admin.wait_generation(generation + 1, timeout=10)
                new_gen = st["config"]["generation"]
                self.assertEqual(st["config"]["last_reload"]["result"], "success", st)
            else:
                code, body = s.admin.reload()
                self.assertEqual((code, body.get("result")), (200, "success"),
                                 "reload %d failed: %r" % (i, body))
                new_gen = body["generation"]
            reload_times.append(time.monotonic() - t)
            self.assertGreater(new_gen, generation, "reload %d did not advance the generation" % i)
            generation = new_gen
            valid += 1
            # New requests see the new config: /extra exists only in config B.
            want = b.ports[0] if use_b else None
            for attempt in range(100):
                got = self.port_of(public, "/extra/probe")
                if got == want:
                    break
                retries += 1
                time.sleep(0.01)
            self.assertEqual(got, want, "reload %d: /extra answered by %r, want %r" % (i, got, want))
            # Paced, so that the reloads spread over seconds of traffic (~15 s in all).
            time.sleep(self.PAUSE)
            if valid == 20:
                rss["after_20"] = vm_rss_kib(s.pid)
            if valid == 100:
                rss["after_100"] = vm_rss_kib(s.pid)
            if i % 10 == 9:
                text, prefix = self.invalid(cfg_b if use_b else cfg_a, invalid_kind % 5, path)
                invalid_kind += 1
                s.write_config(text)
                code, body = s.admin.reload()
                self.assertEqual(code, 400, "invalid config (kind %d) accepted: %r\n%s"
                                 % (invalid_kind - 1, body, text))
                self.assertEqual(body.get("result"), "failure")
                self.assertEqual(body.get("generation"), generation, body)
                errors = body.get("errors")
                self.assertEqual(len(errors), 1, errors)
                self.assertTrue(errors[0].startswith(prefix),
                                "error %r does not start with %r" % (errors[0], prefix))
                st = s.admin.status()
                self.assertEqual(st["config"]["generation"], generation)
                self.assertEqual(st["config"]["last_reload"]["result"], "failure")
                self.assertEqual(st["config"]["last_reload"]["errors"], errors)
                invalid += 1
        rss["after_200"] = vm_rss_kib(s.pid)
        elapsed = time.monotonic() - t_start

        fleet.stop_chatter()
        self.assertTrue(load.stop(), "HTTP load threads did not stop")
        note("%d valid + %d invalid reloads in %.1fs (slowest reload %.3fs, %d extra probes "
             "before a new config showed); HTTP: %d ok, %d failed on %d connections; "
             "WebSocket chatter: %d echoes, %d failed"
             % (valid, invalid, elapsed, max(reload_times), retries, load.ok, len(load.failures),
                load.connections, fleet.chat_ok, len(fleet.chat_failures)))
        note("VmRSS (KiB): %r; growth 20->200: %d KiB (asan=%s, env %r)"
             % (rss, rss["after_200"] - rss["after_20"], harness.binary_has_asan(), env))

        self.assertEqual(load.failures, [], "failed HTTP requests during reloads")
        self.assertGreater(load.ok, 400, "too little HTTP load ran during the reloads")
        self.assertEqual(fleet.chat_failures, [], "WebSocket messages lost during reloads")
        self.assertGreater(fleet.chat_ok, 100)
        self.assertEqual(fleet.closed, {}, "WebSockets closed during reloads")
        problems = fleet.echo_all("final")
        self.assertEqual(problems, {}, "WebSockets that no longer echo after 200 reloads")
        self.assertEqual(len(fleet.conns), self.WEBSOCKETS)

        m = s.admin.metrics()
        self.assertEqual(m.get("sluice_config_generation"), generation)
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), generation - 1)
        self.assertGreaterEqual(m.get("sluice_config_reloads_total", result="failure"), invalid)
        self.assertEqual(m.get("sluice_ws_connections_open", route="ws"), self.WEBSOCKETS)
        self.assertEqual(invalid, 20)
        self.assertEqual(valid, self.VALID_RELOADS)

        growth_mib = (rss["after_200"] - rss["after_20"]) / 1024.0
        self.assertLess(growth_mib, 8.0, "VmRSS grew %.1f MiB from reload 20 to reload 200 (%r)"
                        % (growth_mib, rss))


# ---------------------------------------------------------------------------------------------


class Listeners(ReloadCase):
    def test_listener_added_then_removed(self):
        b = self.start_backend()
        admin_port, p1, p2 = free_port(), free_port(), free_port()
        one = config(admin_port, {"public": p1}, [pool("app", [b.address])],
                     [route("web", "app", "/")])
        two = config(admin_port, {"public": p1, "second": p2}, [pool("app", [b.address])],
                     [route("web", "app", "/"), route("web2", "app", "/", listener="second")])
        s = self.start_config_sluice(one, admin_port, {"public": p1})
        self.assertFalse(can_connect(p2), "port %d accepts before the listener exists" % p2)

        s.write_config(two)
        self.reload_ok(s, 2)
        self.assertTrue(wait_until(lambda: can_connect(p2), 3.0), "added listener not accepting")
        for _ in range(4):  # both workers' sockets serve
            self.assertEqual(self.port_of(p2), b.port)
        st = s.admin.status()
        self.assertEqual([(l["name"], l["listen"]) for l in st["listeners"]],
                         [("public", addr(p1)), ("second", addr(p2))])
        m = s.admin.wait_metric(
            lambda m: m.get("sluice_connections_accepted_total", listener="second") >= 4)
        self.assertGreaterEqual(m.get("sluice_connections_accepted_total", listener="second"), 4)

        # A keep-alive connection and an in-flight slow request on the listener to be removed.
        keep = RawConn(p2, timeout=10)
        self.conns.append(keep)
        self.assertEqual(keep.request("GET", "/echo/before").status, 200)
        slow = RawConn(p2, timeout=10)
        self.conns.append(slow)
        slow.send(harness.build_request("GET", "/slow?delay=1.5"))
        time.sleep(0.3)  # the slow request reached the backend

        s.write_config(one)
        self.reload_ok(s, 3)
        self.assertTrue(wait_until(lambda: not can_connect(p2), 3.0),
                        "removed listener still accepting")
        refused = sum(1 for _ in range(10) if not can_connect(p2))
        self.assertEqual(refused, 10, "a removed listener's socket still accepts (some worker)")
        r = slow.read_response(timeout=10)
        self.assertEqual(r.status, 200, "in-flight request on a removed listener: %r" % r)
        self.assertEqual(r.json()["slept"], 1.5)
        r = keep.request("GET", "/echo/after")
        self.assertEqual(r.status, 200, "keep-alive connection on a removed listener: %r" % r)
        self.assertEqual(self.port_of(p1), b.port)
        self.assertEqual([l["name"] for l in s.admin.status()["listeners"]], ["public"])

    def test_listener_on_a_busy_port_fails_the_reload(self):
        b = self.start_backend()
        admin_port, p1 = free_port(), free_port()
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        busy.bind((LOCALHOST, 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        bport = busy.getsockname()[1]
        one = config(admin_port, {"public": p1}, [pool("app", [b.address])],
                     [route("web", "app", "/")])
        two = config(admin_port, {"public": p1, "second": bport}, [pool("app", [b.address])],
                     [route("web", "app", "/"), route("web2", "app", "/", listener="second")])
        s = self.start_config_sluice(one, admin_port, {"public": p1})
        s.write_config(two)
        code, body = s.admin.reload()
        self.assertEqual((code, body.get("result"), body.get("generation")), (400, "failure", 1), body)
        # The error names the second listener's table in the file.
        first, _ = position(two, "[[listeners]]", occurrence=1)
        listen_line, _ = position(two, addr(bport))
        errs = body["errors"]
        self.assertEqual(len(errs), 1, errs)
        m = re.match(r"^(.+?):(\d+):(\d+): error: .*second", errs[0])
        self.assertTrue(m, errs)
        self.assertEqual(m.group(1), s.config_path)
        self.assertIn(int(m.group(2)), range(first, listen_line + 1), errs)
        self.assertEqual(self.port_of(p1), b.port)
        self.assertEqual([l["name"] for l in s.admin.status()["listeners"]], ["public"])


# ---------------------------------------------------------------------------------------------


class Backends(ReloadCase):
    def test_http_backend_added_then_removed(self):
        b = self.start_backend(nports=2)
        p0, p1 = b.ports
        a0, a1 = b.addresses
        admin_port, public = free_port(), free_port()
        cfg = lambda addrs: config(admin_port, {"public": public}, [pool("app", addrs)],
                                   [route("web", "app", "/")])
        s = self.start_config_sluice(cfg([a0]), admin_port, {"public": public})
        for _ in range(6):
            self.assertEqual(self.port_of(public), p0)
        self.assertTrue(wait_until(lambda: tcp_established(p0) >= 1, 3.0),
                        "no idle keep-alive connection to the backend (test premise)")

        s.write_config(cfg([a0, a1]))
        self.reload_ok(s, 2)
        self.assertTrue(self.wait_port(public, p1), "the added backend gets no traffic")
        seen = {self.port_of(public) for _ in range(12)}
        self.assertEqual(seen, {p0, p1})
        st = s.admin.status()
        self.assertEqual([x["address"] for x in st["pools"][0]["backends"]], [a0, a1])

        s.write_config(cfg([a1]))
        self.reload_ok(s, 3)
        self.assertTrue(self.wait_port(public, p1))
        seen = [self.port_of(public) for _ in range(12)]
        self.assertEqual(set(seen), {p1}, "the removed backend still gets requests")
        self.assertTrue(wait_until(lambda: tcp_established(p0) == 0, 3.0),
                        "idle keep-alive connections to the removed backend stay open (%d)"
                        % tcp_established(p0))

    def test_websockets_of_removed_backend_and_route_get_1012_others_stay(self):
        w1, w2, w3 = (self.start_ws_backend() for _ in range(3))
        admin_port, public = free_port(), free_port()
        before = config(admin_port, {"public": public},
                        [pool("wsa", [w1.address], drain_timeout="2s"), pool("wsb", [w2.address], drain_timeout="2s"),
                         pool("wsc", [w3.address], drain_timeout="2s")],
                        [route("ws-a", "wsa", "/ws/a", websocket=True),
                         route("ws-b", "wsb", "/ws/b", websocket=True),
                         route("ws-c", "wsc", "/ws/c", websocket=True),
                         route("ws-d", "wsb", "/ws/d", websocket=True)])
        # ws-a: its backend w1 left pool wsa (it is in wsb now); ws-b: untouched (its pool gained
        # a backend); ws-c: now points at another pool; ws-d: removed.
        after = config(admin_port, {"public": public},
                       [pool("wsa", [w3.address], drain_timeout="2s"), pool("wsb", [w2.address, w1.address], drain_timeout="2s"),
                        pool("wsc", [w3.address], drain_timeout="2s")],
                       [route("ws-a", "wsa", "/ws/a", websocket=True),
                        route("ws-b", "wsb", "/ws/b", websocket=True),
                        route("ws-c", "wsb", "/ws/c", websocket=True)])
        s = self.start_config_sluice(before, admin_port, {"public": public})
        a, bb, c, d = (self.ws(public, "/ws/%s/1" % k) for k in "abcd")
        for k, conn in zip("abcd", (a, bb, c, d)):
            self.assertEchoes(conn, "hello " + k)
        a_id = w1.conn_id("/ws/a/1")

        s.write_config(after)
        t0 = time.monotonic()
        self.reload_ok(s, 2)
        # Until drain_timeout (2s) passes every session keeps working.
        for k, conn in zip("abcd", (a, bb, c, d)):
            self.assertEchoes(conn, "still " + k, "session %s before drain_timeout" % k)
        self.assertLess(time.monotonic() - t0, 1.5, "test too slow to check before the drain")
        for k, conn in (("a", a), ("c", c), ("d", d)):
            f, frames = conn.read_close(timeout=8)
            elapsed = time.monotonic() - t0
            self.assertEqual(f.code, 1012, "session %s closed with %s %r" % (k, f.code, f.reason))
            self.assertGreaterEqual(elapsed, 1.9, "session %s closed before drain_timeout" % k)
            self.assertLess(elapsed, 6.0)
        self.assertEchoes(bb, "untouched", "session b (untouched route) after the drain")
        with self.assertRaises(TimeoutError, msg="untouched session got an unexpected frame"):
            bb.read_frame(timeout=0.3)
        ev = w1.wait_close(a_id, timeout=5)
        self.assertIsNotNone(ev, "backend w1 saw no close of the drained session")
        self.assertNotEqual(ev["code"], 1006, "the drained session's backend got no close frame")
        # New sessions follow the new config.
        n = self.ws(public, "/ws/a/2")
        self.assertEchoes(n, "new a")
        w3.conn_id("/ws/a/2")
        m = s.admin.wait_metric(lambda m: m.get("sluice_ws_closes_total", route="ws-a",
                                                code="1012", by="sluice") == 1)
        self.assertEqual(m.get("sluice_ws_closes_total", route="ws-a", code="1012", by="sluice"), 1)
        self.assertEqual(m.get("sluice_ws_connections_open", route="ws-b"), 1)
        time.sleep(1.0)
        self.assertEchoes(bb, "untouched later")


# ---------------------------------------------------------------------------------------------


class Triggers(ReloadCase):
    def test_keepalive_connection_switches_at_next_request(self):
        b = self.start_backend(nports=2)
        admin_port, public = free_port(), free_port()
        cfg = lambda name, a: config(admin_port, {"public": public}, [pool(name, [a])],
                                     [route("web", name, "/")])
        s = self.start_config_sluice(cfg("one", b.addresses[0]), admin_port, {"public": public})
        keep = self.connect(s)
        r = keep.request("GET", "/echo/1")
        self.assertEqual((r.status, r.json()["port"]), (200, b.ports[0]))
        s.write_config(cfg("two", b.addresses[1]))
        self.reload_ok(s, 2)
        self.assertTrue(self.wait_port(public, b.ports[1]))
        r = keep.request("GET", "/echo/2")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["port"], b.ports[1],
                         "a keep-alive connection kept the old config after its next request")

    def test_sighup_reloads(self):
        b = self.start_backend(nports=2)
        admin_port, public = free_port(), free_port()
        cfg = lambda a: config(admin_port, {"public": public}, [pool("app", [a])],
                               [route("web", "app", "/")])
        s = self.start_config_sluice(cfg(b.addresses[0]), admin_port, {"public": public})
        # Rewritten, then SIGHUP at once (before the watcher's 300 ms debounce).
        s.write_config(cfg(b.addresses[1]))
        s.signal(signal.SIGHUP)
        st = s.admin.wait_generation(2, timeout=5)
        self.assertEqual(st["config"]["generation"], 2, "SIGHUP did not reload")
        self.assertEqual(st["config"]["last_reload"]["result"], "success")
        self.assertTrue(self.wait_port(public, b.ports[1]))
        # Nothing changed on disk: SIGHUP still reloads (certificates, say, are not watched).
        time.sleep(0.5)  # let the watcher's debounce for the write above pass
        g = s.admin.generation()
        s.signal(signal.SIGHUP)
        st = s.admin.wait_generation(g + 1, timeout=5)
        self.assertEqual(st["config"]["generation"], g + 1, "SIGHUP without a change did not reload")
        m = s.admin.metrics()
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), g)
        self.assertTrue(s.alive())

    def test_config_file_rewrite_reloads_and_touch_does_not(self):
        b = self.start_backend(nports=2)
        admin_port, public = free_port(), free_port()
        cfg = lambda a: config(admin_port, {"public": public}, [pool("app", [a])],
                               [route("web", "app", "/")])
        first = cfg(b.addresses[0])
        s = self.start_config_sluice(first, admin_port, {"public": public})
        self.assertEqual(self.port_of(public), b.ports[0])
        # Rewritten in place (truncate + write).
        s.write_config(cfg(b.addresses[1]), atomic=False)
        st = s.admin.wait_generation(2, timeout=5)
        self.assertEqual(st["config"]["generation"], 2, "file change did not reload")
        self.assertEqual(st["config"]["last_reload"]["result"], "success")
        self.assertTrue(self.wait_port(public, b.ports[1]))
        # Replaced by rename, as config management does.
        s.write_config(first, atomic=True)
        st = s.admin.wait_generation(3, timeout=5)
        self.assertEqual(st["config"]["generation"], 3, "file replaced by rename did not reload")
        self.assertTrue(self.wait_port(public, b.ports[0]))
        # Touched, and rewritten with identical content: no reload.
        time.sleep(0.5)
        os.utime(s.config_path)
        s.write_config(first, atomic=False)
        time.sleep(1.5)
        m = s.admin.metrics()
        self.assertEqual(s.admin.generation(), 3, "a content-identical write reloaded")
        self.assertEqual(m.get("sluice_config_reloads_total", result="success"), 2)
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 0)

    def test_invalid_file_change_keeps_running_config(self):
        b = self.start_backend()
        admin_port, public = free_port(), free_port()
        good = config(admin_port, {"public": public}, [pool("app", [b.address])],
                      [route("web", "app", "/")])
        s = self.start_config_sluice(good, admin_port, {"public": public})
        bad = good.replace('path_prefix = "/"', 'path_prefix = "/"\nmax_body_bytes = "lots"', 1)
        line, col = position(bad, '"lots"')
        s.write_config(bad)
        m = s.admin.wait_metric(
            lambda m: m.get("sluice_config_reloads_total", result="failure") >= 1, timeout=5)
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 1,
                         "invalid file change not counted as a failed reload")
        st = s.admin.status()
        self.assertEqual(st["config"]["generation"], 1)
        lr = st["config"]["last_reload"]
        self.assertEqual(lr["result"], "failure")
        self.assertEqual(len(lr["errors"]), 1, lr)
        self.assertTrue(lr["errors"][0].startswith("%s:%d:%d: error: " % (s.config_path, line, col)),
                        lr["errors"])
        self.assertRegex(lr["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
        self.assertEqual(self.port_of(public), b.port, "not serving after a failed reload")
        self.assertEqual(m.get("sluice_config_generation"), 1)
        # Fixing the file reloads.
        s.write_config(good.replace('name = "web"', 'name = "web2"'))
        st = s.admin.wait_generation(2, timeout=5)
        self.assertEqual(st["config"]["generation"], 2)
        self.assertEqual(st["config"]["last_reload"]["result"], "success")
        self.assertEqual(st["config"]["last_reload"]["errors"], [])

    def test_included_file_change_reloads(self):
        b = self.start_backend(nports=2)
        admin_port, public = free_port(), free_port()
        confd = os.path.join(self.tmpdir, "conf.d")
        os.mkdir(confd)
        pools_path = os.path.join(confd, "pools.toml")
        pools_text = lambda a: harness.toml_table("[[pools]]", pool("app", [a]))
        write_file(pools_path, pools_text(b.addresses[0]))
        main = config(admin_port, {"public": public}, [], [route("web", "app", "/")],
                      head='include = ["conf.d/*.toml"]')
        s = self.start_config_sluice(main, admin_port, {"public": public})
        self.assertEqual(self.port_of(public), b.ports[0])
        st = s.admin.status()
        self.assertIn(pools_path, st["config"]["files"])
        self.assertIn(s.config_path, st["config"]["files"])

        write_file(pools_path, pools_text(b.addresses[1]))
        st = s.admin.wait_generation(2, timeout=5)
        self.assertEqual(st["config"]["generation"], 2, "included file change did not reload")
        self.assertTrue(self.wait_port(public, b.ports[1]))

        # An invalid included file: rejected with the included file's name and position.
        bad = pools_text(b.addresses[1]).replace('drain_timeout = "1s"', 'drain_timout = "1s"')
        line, col = position(bad, "drain_timout")
        write_file(pools_path, bad)
        m = s.admin.wait_metric(
            lambda m: m.get("sluice_config_reloads_total", result="failure") >= 1, timeout=5)
        self.assertEqual(m.get("sluice_config_reloads_total", result="failure"), 1)
        lr = s.admin.status()["config"]["last_reload"]
        self.assertEqual(lr["result"], "failure")
        self.assertTrue(lr["errors"] and lr["errors"][0].startswith(
            "%s:%d:%d: error: " % (pools_path, line, col)), lr["errors"])
        self.assertEqual(s.admin.generation(), 2)
        self.assertEqual(self.port_of(public), b.ports[1])
        write_file(pools_path, pools_text(b.addresses[1]))
        st = s.admin.wait_generation(3, timeout=5)
        self.assertEqual(st["config"]["generation"], 3, "fixed included file did not reload")

    def test_new_file_matching_the_include_pattern_reloads(self):
        b = self.start_backend(nports=2)
        admin_port, public = free_port(), free_port()
        confd = os.path.join(self.tmpdir, "conf.d")
        os.mkdir(confd)
        write_file(os.path.join(confd, "pools.toml"),
                              harness.toml_table("[[pools]]", pool("app", [b.addresses[1]])))
        main = config(admin_port, {"public": public}, [], [route("web", "app", "/")],
                      head='include = ["conf.d/*.toml"]')
        s = self.start_config_sluice(main, admin_port, {"public": public})
        self.assertEqual(self.port_of(public, "/extra/x"), b.ports[1])
        extra = harness.toml_table("[[pools]]", pool("other", [b.addresses[0]])) + "\n" + \
            harness.toml_table("[[routes]]", route("extra", "other", "/extra"))
        write_file(os.path.join(confd, "extra.toml"), extra)
        st = s.admin.wait_generation(2, timeout=5)
        self.assertEqual(st["config"]["generation"], 2,
                         "a new file matching the include pattern did not reload")
        self.assertTrue(self.wait_port(public, b.ports[0], target="/extra/x"))


if __name__ == "__main__":
    harness.main()
