"""sluice on many machines, shown on one: consistent hashing that stays put (two workers, two
instances), and one rate limit held across instances through Redis.

Scale-out: two network namespaces joined to the host by veth pairs on a bridge (`ip netns`, root
only; the test is skipped otherwise), one sluice instance in each with the same config, and, on
the host side of the bridge, a shared redis-server and three backends. It shows one global limit
enforced across both instances within the documented overshoot, the same backend for a key
through either instance, and Redis killed and restarted mid-run: on_store_error = "local" keeps
each instance at rate / instances, and the shared limit comes back with Redis. The namespaces,
links and processes are removed whatever happens."""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import LOCALHOST, RawConn, Sluice, SluiceTestCase, free_port, sluice_bin, wait_until
from prometheus_client.parser import text_string_to_metric_families

REDIS = "/usr/bin/redis-server"
SUBNET = "10.77.91"
HOST_IP = SUBNET + ".1"


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def netns_possible():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = "sluice-probe-%d" % os.getpid()
    try:
        sh("ip", "netns", "add", name)
        sh("ip", "netns", "del", name)
        return True
    except (subprocess.CalledProcessError, OSError):
        return False


class Fabric:
    """A bridge on the host (HOST_IP/24) and one namespace per instance, each with a veth pair
    into the bridge and its own address (SUBNET.11, .12, ...)."""

    def __init__(self, count):
        tag = "%x" % (os.getpid() & 0xffff)
        self.bridge = "slbr" + tag
        self.names = ["sluice-%s-%d" % (tag, i) for i in range(count)]
        self.ips = ["%s.%d" % (SUBNET, 11 + i) for i in range(count)]
        self.links = []
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            sh("ip", "addr", "add", HOST_IP + "/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            for i, (ns, ip) in enumerate(zip(self.names, self.ips)):
                host_end, ns_end = "slv%s%da" % (tag, i), "slv%s%db" % (tag, i)
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                self.links.append(host_end)
                sh("ip", "link", "set", ns_end, "netns", ns)
                sh("ip", "link", "set", host_end, "master", self.bridge)
                sh("ip", "link", "set", host_end, "up")
                sh("ip", "netns", "exec", ns, "ip", "addr", "add", ip + "/24", "dev", ns_end)
                sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
                sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def remove(self):
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)
        for link in self.links:
            sh("ip", "link", "del", link, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class NsSluice(Sluice):
    """A sluice instance run inside a network namespace, listening on its address there."""

    def __init__(self, tmpdir, spec, name, netns, ip):
        self.netns, self.ip = netns, ip
        super().__init__(tmpdir, spec, name=name)
        self.argv = ["ip", "netns", "exec", netns] + self.argv

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not self._reachable(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not start: %s" % (self.name, self.stderr()))
            time.sleep(0.05)
        while not self._reachable(self.admin_port):
            if time.monotonic() > deadline:
                raise RuntimeError("%s: no admin listener" % self.name)
            time.sleep(0.05)

    def _reachable(self, port):
        try:
            socket.create_connection((self.ip, port), timeout=0.3).close()
            return True
        except OSError:
            return False

    def metrics(self):
        c = http.client.HTTPConnection(self.ip, self.admin_port, timeout=5)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
        out = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


class Backend(http.server.ThreadingHTTPServer):
    """A tiny HTTP/1.1 backend on the bridge address: answers {"backend": N}."""

    def __init__(self, index):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({"backend": index}).encode()
                # One write: a head and a body in two packets meet delayed ACKs.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))

            def log_message(self, *args):
                pass

        super().__init__((HOST_IP, 0), Handler)
        self.daemon_threads = True
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Redis:
    def __init__(self, tmpdir, port):
        self.port = port
        self.tmpdir = tmpdir
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--bind", HOST_IP, "--port", str(self.port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", self.tmpdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: self._up(), 10):
            raise RuntimeError("redis-server did not start")

    def _up(self):
        try:
            socket.create_connection((HOST_IP, self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def counter(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0)


class AffinityTwoWorkers(SluiceTestCase):
    """Sequential and concurrent requests of one key stay on one backend with two workers (the
    check that found bounded load breaking affinity at light load)."""

    def test_one_key_one_backend(self):
        bs = [self.start_backend() for _ in range(3)]
        port_of = {b.port: i for i, b in enumerate(bs)}
        s = self.start_sluice({
            "server": {"workers": 2},
            "pools": [{"name": "app", "balance": "consistent_hash", "hash_key": "header:X-User",
                       "backends": [{"address": b.address} for b in bs]}],
            "routes": [{"pool": "app"}]})

        def where(user, path="/echo"):
            c = RawConn(s.port)  # a new connection each time: both workers take part
            try:
                r = c.request("GET", path, headers=[("X-User", user)])
                self.assertEqual(r.status, 200, r)
                return port_of[r.json()["port"]]
            finally:
                c.close()

        for user in ("alice", "bob", "carol", "dave"):
            seen = {where(user) for _ in range(12)}
            self.assertEqual(len(seen), 1, "%s: sequential requests reached %r" % (user, seen))
            # Concurrent: slow requests in flight together, all for one key.
            results = []
            threads = [threading.Thread(target=lambda: results.append(
                where(user, "/upload?delay=0.3"))) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            self.assertEqual(set(results), seen, "%s: concurrent requests reached %r"
                             % (user, set(results)))


@unittest.skipUnless(netns_possible(), "network namespaces need root and iproute2")
class ScaleOut(SluiceTestCase):
    RATE = 10
    BURST = 5
    BUDGET = 2

    def setUp(self):
        super().setUp()
        self.fabric = Fabric(2)
        self.addCleanup(self.fabric.remove)
        self.redis = Redis(self.tmpdir, free_port())
        self.addCleanup(self.redis.kill)
        self.http_backends = [Backend(i) for i in range(3)]
        for b in self.http_backends:
            self.addCleanup(b.shutdown)
        listen_port = free_port()
        admin_port = free_port()
        filt = "\n".join([
            "[[filters]]", 'name = "global"', 'type = "ratelimit"', 'key = "header:X-User"',
            "requests_per_second = %d" % self.RATE, "burst = %d" % self.BURST,
            'store = "redis"', 'on_store_error = "local"',
            "[filters.redis]", 'address = "%s:%d"' % (HOST_IP, self.redis.port),
            'timeout = "100ms"', "instances = 2", "budget = %d" % self.BUDGET, ""])
        self.instances = []
        for i, (ns, ip) in enumerate(zip(self.fabric.names, self.fabric.ips)):
            # The same config on every instance (0.0.0.0: each namespace its own address).
            spec = {
                "server": {"workers": 1},
                "listener": {"listen": "0.0.0.0:%d" % listen_port},
                "admin": {"listen": "0.0.0.0:%d" % admin_port},
                "pools": [{"name": "app", "balance": "consistent_hash",
                           "hash_key": "header:X-Key",
                           "backends": [{"address": "%s:%d" % (HOST_IP, b.port)}
                                        for b in self.http_backends]}],
                "routes": [{"pool": "app", "filters": ["global"]}],
                "extra": filt}
            s = NsSluice(self.tmpdir, spec, "sluice-ns%d" % i, ns, ip)
            self.sluices.append(s)
            s._render()
            s.admin_port = admin_port
            s.ports = {"public": listen_port}
            s.spawn()
            s.wait_ready()
            self.instances.append(s)

    def hammer(self, seconds, user):
        """Requests of one user through both instances (alternating, keep-alive) as fast as
        they are answered: (200s, 429s)."""
        conns = [http.client.HTTPConnection(s.ip, s.port, timeout=5) for s in self.instances]
        ok = limited = 0
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            c = conns[i % len(conns)]
            i += 1
            c.request("GET", "/x", headers={"X-User": user, "X-Key": "k"})
            r = c.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            elif r.status == 429:
                limited += 1
            else:
                self.fail("status %d" % r.status)
        for c in conns:
            c.close()
        return ok, limited

    def test_global_limit_same_backend_and_redis_restart(self):
        # The same backend for a key through either instance.
        for key in ("k%d" % i for i in range(8)):
            chosen = set()
            for s in self.instances:
                c = http.client.HTTPConnection(s.ip, s.port, timeout=5)
                c.request("GET", "/h", headers={"X-Key": key, "X-User": "hash-" + key})
                chosen.add(json.loads(c.getresponse().read())["backend"])
                c.close()
            self.assertEqual(len(chosen), 1, "key %s reached backends %r" % (key, chosen))

        # One global limit across both instances.
        t = 3.0
        ok, limited = self.hammer(t, "u1")
        bound = self.RATE * t + self.BURST + 2 * 1 * self.BUDGET
        print("scale-out: %d allowed, %d limited in %.1fs through 2 instances (rate %d, burst %d,"
              " bound %.0f)" % (ok, limited, t, self.RATE, self.BURST, bound))
        self.assertGreater(limited, 0)
        self.assertLessEqual(ok, bound + 2)  # (timing slack)
        self.assertGreaterEqual(ok, self.RATE * t * 0.7)

        # Redis dies: each instance falls back to rate / 2; the cluster stays near the rate.
        self.redis.kill()
        ok_down, limited_down = self.hammer(t, "u2")
        print("scale-out, Redis down: %d allowed, %d limited in %.1fs" % (ok_down, limited_down, t))
        self.assertLessEqual(ok_down, self.RATE * t + self.BURST + 2)
        self.assertGreater(limited_down, 0)
        for s in self.instances:
            m = s.metrics()
            self.assertGreater(counter(m, "sluice_ratelimit_store_errors_total", filter="global"), 0)
            self.assertIn("Redis unavailable", s.stderr())

        # Redis comes back: shared decisions again.
        self.redis.start()
        calls_before = [counter(s.metrics(), "sluice_ratelimit_redis_calls_total",
                                filter="global", result="ok") for s in self.instances]
        deadline = time.monotonic() + 10
        while not all("Redis answers again" in s.stderr() for s in self.instances):
            self.assertLess(time.monotonic(), deadline, [s.stderr()[-2000:] for s in self.instances])
            self.hammer(0.3, "u3")
        ok_back, limited_back = self.hammer(t, "u4")
        print("scale-out, Redis back: %d allowed, %d limited in %.1fs" % (ok_back, limited_back, t))
        self.assertLessEqual(ok_back, bound + 2)
        self.assertGreater(limited_back, 0)
        for s, before in zip(self.instances, calls_before):
            self.assertGreater(counter(s.metrics(), "sluice_ratelimit_redis_calls_total",
                                       filter="global", result="ok"), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
