#!/usr/bin/python3
"""Soak: mixed HTTP and WebSocket traffic through a release build of sluice for a bounded time,
with reloads every few seconds, backend restarts and drains, while sluice's RSS and open file
descriptors are sampled. Not part of CI (it runs for half an hour by default); see
tests/soak/README.md.

    tests/soak/soak.py [--minutes 30] [--sluice build-bench/sluice] [--out soak.csv]

It prints a summary (RSS and descriptor curves at the start, the middle and the end; error
counts by kind) and exits 1 when RSS or descriptors grew without bound or when an error happened
that the soak did not cause on purpose. Errors caused on purpose (a backend restarted or drained
under a request) are counted apart."""

import argparse
import asyncio
import csv
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import websockets  # noqa: E402

from harness import Backend, free_port, proc_status, RawConn  # noqa: E402
from wsutil import WsBackend  # noqa: E402


def config(admin, port, http_backends, ws_backend):
    pool = ", ".join('{ address = "%s" }' % b for b in http_backends)
    return f"""
[server]
workers = 2
access_log = "off"
shutdown_timeout = "5s"
[admin]
listen = "127.0.0.1:{admin}"
[[listeners]]
name = "public"
listen = "127.0.0.1:{port}"
[[pools]]
name = "app"
backends = [{pool}]
keepalive_connections = 16
drain_timeout = "2s"
[[pools]]
name = "ws"
backends = [{{ address = "{ws_backend}" }}]
[[routes]]
listener = "public"
path_prefix = "/ws"
pool = "ws"
[routes.websocket]
enabled = true
compression = "terminate"
[[routes]]
listener = "public"
path_prefix = "/"
pool = "app"
# reload marker {random.random()}
"""


class Soak:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="sluice-soak-")
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.samples = []

    def count(self, kind, n=1):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def write_config(self):
        text = config(self.admin_port, self.port, [b.address for b in self.http], self.ws.address)
        with open(self.config_path, "w") as f:
            f.write(text)

    def admin(self, method, path):
        c = RawConn(self.admin_port, timeout=10)
        try:
            return c.request(method, path, headers=[("Connection", "close")])
        finally:
            c.close()

    # -- load

    def http_load(self):
        while not self.stop.is_set():
            try:
                c = RawConn(self.port, timeout=10)
                for _ in range(random.randint(1, 20)):
                    size = random.choice([0, 100, 10000, 200000])
                    r = c.request("POST", "/upload", body=b"x" * size)
                    self.count("http_ok" if r.status == 200 else "http_%d" % r.status)
                c.close()
            except Exception as e:  # noqa: BLE001 (counted; a restart or drain may cause it)
                self.count("http_error:" + type(e).__name__)

    async def ws_client(self):
        while not self.stop.is_set():
            try:
                async with websockets.connect("ws://127.0.0.1:%d/ws" % self.port,
                                              ping_interval=None, open_timeout=10) as ws:
                    for _ in range(random.randint(10, 200)):
                        msg = "m" * random.choice([10, 1000, 50000])
                        await ws.send(msg)
                        if await asyncio.wait_for(ws.recv(), 10) != msg:
                            self.count("ws_mismatch")
                        else:
                            self.count("ws_ok")
                        if self.stop.is_set():
                            break
            except Exception as e:  # noqa: BLE001
                self.count("ws_error:" + type(e).__name__)

    def ws_load(self):
        async def main():
            await asyncio.gather(*(self.ws_client() for _ in range(8)))
        asyncio.run(main())

    # -- chaos

    def chaos(self):
        n = 0
        while not self.stop.wait(3):
            n += 1
            self.write_config()
            r = self.admin("POST", "/api/reload")
            self.count("reload_ok" if r.status == 200 else "reload_failed")
            if n % 10 == 0:
                # A rolling backend restart: a new instance joins, the old one leaves the config
                # (drained by the reload), and stops once its drain is over. Nothing may fail.
                old = random.choice(self.http)
                self.http[self.http.index(old)] = Backend(self.tmp, name="b%d" % n)
                self.write_config()
                r = self.admin("POST", "/api/reload")
                self.count("reload_ok" if r.status == 200 else "reload_failed")
                time.sleep(3)
                old.stop()
                self.count("backend_restart")
            if n % 7 == 0:  # drain and undrain a backend
                b = random.choice(self.http)
                self.admin("POST", "/api/pools/app/backends/%s/drain" % b.address)
                time.sleep(1)
                self.admin("POST", "/api/pools/app/backends/%s/undrain" % b.address)
                self.count("drain")

    def sample(self):
        st = proc_status(self.proc.pid)
        rss = st.get("VmRSS", 0)  # KiB
        fds = len(os.listdir("/proc/%d/fd" % self.proc.pid))
        self.samples.append((round(time.monotonic() - self.t0), rss, fds))

    def run(self):
        self.http = [Backend(self.tmp, name="b%d" % i) for i in range(3)]
        self.ws = WsBackend(self.tmp)
        self.port, self.admin_port = free_port(), free_port()
        self.config_path = os.path.join(self.tmp, "soak.toml")
        self.write_config()
        err = open(os.path.join(self.tmp, "sluice.stderr"), "wb")
        self.proc = subprocess.Popen([self.args.sluice, "--config", self.config_path],
                                     stderr=err, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.http_load, daemon=True) for _ in range(4)]
        threads += [threading.Thread(target=self.ws_load, daemon=True),
                    threading.Thread(target=self.chaos, daemon=True)]
        for t in threads:
            t.start()
        end = self.t0 + self.args.minutes * 60
        while time.monotonic() < end and self.proc.poll() is None:
            self.sample()
            time.sleep(10)
        self.stop.set()
        for t in threads:
            t.join(30)
        self.sample()
        alive = self.proc.poll() is None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        for b in self.http:
            b.stop()
        self.ws.stop()
        return alive, code

    def report(self, alive, code):
        with open(self.args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "rss_kib", "fds"])
            w.writerows(self.samples)
        n = len(self.samples)
        print("samples (seconds, RSS KiB, fds): start %s, middle %s, end %s"
              % (self.samples[0], self.samples[n // 2], self.samples[-1]))
        print("counts: %s" % dict(sorted(self.counts.items())))
        # The second half must be flat: growth there is a leak, not warming up.
        half = self.samples[n // 2:]
        rss_growth = half[-1][1] - min(s[1] for s in half)
        fd_growth = half[-1][2] - min(s[2] for s in half)
        print("second half: RSS grew %d KiB, descriptors %d; sluice alive to the end: %s, "
              "exit code %s" % (rss_growth, fd_growth, alive, code))
        unexpected = {k: v for k, v in self.counts.items()
                      if k not in ("http_ok", "ws_ok", "reload_ok", "backend_restart", "drain")}
        print("errors (restarts and drains cause some on purpose): %s" % unexpected)
        ok = alive and code == 0 and rss_growth < 20 * 1024 and fd_growth < 50
        print("soak: %s (curve in %s)" % ("ok" if ok else "FAILED", self.args.out))
        return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sluice", default=os.path.join(ROOT, "build-bench", "sluice"))
    ap.add_argument("--out", default="soak.csv")
    args = ap.parse_args()
    s = Soak(args)
    alive, code = s.run()
    sys.exit(0 if s.report(alive, code) else 1)


if __name__ == "__main__":
    main()
