#!/usr/bin/python3
"""What permessage-deflate costs through sluice, per `[routes.websocket] compression` mode.

    /usr/bin/python3 tests/bench/ws_compression.py [--build-dir build-bench] [--quick]

A script of its own beside run.py because its peers must speak RFC 7692, which sluice_wsload and
sluice_bench_backend do not: the client and the deflating backend are Node's `ws`
(tests/bench/ws_deflate_peer.js, `ws` from tests/integration/node_modules), both compressing
every message they may (threshold 0, zlib level 6, `ws`'s defaults otherwise: context takeover
unless the other side asks for none).

Three measurements, each on a fresh sluice (workers = 1, access_log off):
  1. instructions and bytes: sluice under callgrind, 4 connections echoing a fixed number of
     64 B JSON-like or 16 KiB text messages through it to the Node backend; user-space
     instructions per echoed message (callgrind_control -z / -d around the load), and wire bytes
     per message in each direction on the client leg (the client's sockets) and on the backend
     leg (the backend's sockets), handshakes included (a few hundred bytes per connection).
  2. throughput: sluice natively, 64 connections for --duration seconds: messages/s and
     messages/s per core of sluice (rate / sluice's CPU share over the run, from
     /proc/PID/schedstat) for `off` and
     `terminate` in front of sluice_bench_backend (no compression) and `passthrough` in front of
     the Node backend doing its own deflate. The Node client is usually the limit on a small
     machine: compare per-core figures. Noisy on a shared machine.
  3. idle memory: N WebSockets offering permessage-deflate held open through sluice in
     `terminate` and in `off`, each having echoed one 1 KiB message (so a compressor ran) or none:
     (RSS with all established - RSS before) / N, as run.py's ws_idle measures it.

Results: tables on stderr and a JSON file (--out, default BUILD_DIR/ws-compression.json).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (spawn, stop, free_port, rss_kib, ...)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = bench.ROOT
PEER = os.path.join(HERE, "ws_deflate_peer.js")

# (label, compression mode, extra [routes.websocket] keys, backend: "node" (deflating) | "plain")
VARIANTS = [
    ("off", "off", "", "node"),
    ("terminate", "terminate", "", "node"),
    ("terminate threshold 0", "terminate", "compression_threshold = 0\n", "node"),
    ("terminate_both", "terminate_both", "", "node"),
    ("passthrough", "passthrough", "", "node"),
]
SIZES = [64, 16384]


def cpu_s(pid):
    """CPU seconds the process's live threads have run (sluice's worker is a thread of its own),
    from /proc/PID/task/*/schedstat: nanoseconds, where /proc/PID/stat's 10 ms ticks are too
    coarse at a few percent of a core."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def node_path():
    for base in (ROOT, "/work/main"):
        p = os.path.join(base, "tests", "integration", "node_modules")
        if os.path.isdir(os.path.join(p, "ws")):
            return p
    raise SystemExit("ws_compression: Node's `ws` is not installed (npm install in tests/integration)")


def env():
    e = dict(os.environ)
    e["NODE_PATH"] = node_path()
    return e


class Run:
    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="sluice-wsc-")
        self.n = 0
        self.out = {"machine": {"loadavg_start": bench.loadavg()}, "instructions": [],
                    "throughput": [], "idle": []}

    def spawn(self, argv, name, tool=True):
        self.n += 1
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                             stdout=open(os.path.join(self.tmp, "%s-%d.out" % (name, self.n)), "wb"),
                             stderr=open(os.path.join(self.tmp, "%s-%d.err" % (name, self.n)), "wb"),
                             cwd=self.tmp, start_new_session=True, env=env(),
                             preexec_fn=bench._preexec(None))
        p.out_path = os.path.join(self.tmp, "%s-%d.out" % (name, self.n))
        p.err_path = os.path.join(self.tmp, "%s-%d.err" % (name, self.n))
        p.name = name
        bench.CHILDREN.append(p)
        return p

    def node_backend(self):
        port = bench.free_port()
        p = self.spawn(["node", PEER, "server", "--port", str(port), "--deflate", "--threshold", "0"],
                       "nodeback")
        bench.wait_output(p, r"^ready", 20)
        return p, port

    def plain_backend(self):
        port = bench.free_port()
        p = self.spawn([self.a.backend, "--port", str(port), "--threads", "1"], "plainback")
        bench.wait_output(p, r"^ready", 10)
        return p, port

    def sluice(self, mode, extra, backend_port, wrap=()):
        port = bench.free_port()
        conf = os.path.join(self.tmp, "sluice-%d.toml" % self.n)
        with open(conf, "w") as f:
            f.write('''[server]
workers = 1
access_log = "off"
shutdown_timeout = "1s"
max_connections = 100000

[[listeners]]
name = "bench"
listen = "127.0.0.1:%d"

[[routes]]
listener = "bench"
host = "*"
path_prefix = "/"
pool = "backend"

[routes.websocket]
enabled = true
max_message_bytes = "1MiB"
compression = "%s"
%s
[[pools]]
name = "backend"
backends = [ { address = "127.0.0.1:%d" } ]
keepalive_connections = 256
''' % (port, mode, extra, backend_port))
        p = self.spawn(list(wrap) + [self.a.sluice, "--config", conf], "sluice")
        bench.wait_http_ok(p, port, 90 if wrap else 15, "sluice")
        return p, port

    def stats(self, port):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=10) as r:
            return json.loads(r.read())

    def client(self, argv, timeout):
        p = self.spawn(["node", PEER] + argv, "client")
        try:
            bench.wait_exit(p, timeout)
        finally:
            bench.stop(p)
        j = bench.last_json_line(p)
        if j.get("errors") or p.returncode != 0:
            raise bench.HarnessError("client: %s %s" % (j, bench.read_text(p.err_path, 2000)))
        return j

    # -- 1. instructions and bytes per message under callgrind ------------------------------

    def instructions(self):
        control = shutil.which("callgrind_control")
        nb, nport = self.node_backend()
        try:
            for size in SIZES:
                per_conn = self.a.messages // 4 if size <= 256 else self.a.messages // 40
                for label, mode, extra, _ in VARIANTS:
                    if "threshold 0" in label and size > 256:
                        continue  # 16 KiB is above the default threshold anyway
                    out = os.path.join(self.tmp, "cg-%d.out" % self.n)
                    sp, sport = self.sluice(mode, extra, nport,
                                            ["valgrind", "--tool=callgrind",
                                             "--callgrind-out-file=" + out])
                    try:
                        subprocess.run([control, "-z", str(sp.pid)], check=True, timeout=60,
                                       capture_output=True)
                        b0 = self.stats(nport)
                        j = self.client(["echo", "--url", "ws://127.0.0.1:%d/" % sport,
                                         "--connections", "4", "--size", str(size), "--messages",
                                         str(per_conn), "--deflate", "--threshold", "0"], 600)
                        time.sleep(0.5)
                        b1 = self.stats(nport)
                        subprocess.run([control, "-d", str(sp.pid)], check=True, timeout=60,
                                       capture_output=True)
                        dumps = [f for f in os.listdir(self.tmp)
                                 if re.fullmatch(re.escape(os.path.basename(out)) + r"\.\d+", f)]
                        dump = os.path.join(self.tmp, max(dumps, key=lambda f: int(f.rsplit(".", 1)[1])))
                        with open(dump) as f:
                            ir = next(int(l.split()[1]) for l in f if l.startswith("summary:"))
                    finally:
                        bench.stop(sp)
                    m = j["messages"]
                    row = {"size": size, "variant": label, "messages": m, "instructions": ir,
                           "instr_per_msg": ir / m,
                           "client_up": j["bytes_written"] / m, "client_down": j["bytes_read"] / m,
                           "backend_up": (b1["bytes_read"] - b0["bytes_read"]) / m,
                           "backend_down": (b1["bytes_written"] - b0["bytes_written"]) / m,
                           "client_extensions": j["extensions"]}
                    self.out["instructions"].append(row)
                    bench.log("  %-6d %-24s %10.0f instr/msg  client %7.0f / %7.0f B  backend "
                              "%7.0f / %7.0f B  (%s)" % (size, label, row["instr_per_msg"],
                                                         row["client_up"], row["client_down"],
                                                         row["backend_up"], row["backend_down"],
                                                         row["client_extensions"] or "-"))
        finally:
            bench.stop(nb)

    # -- 2. throughput ------------------------------------------------------------------------

    def throughput(self):
        nb, nport = self.node_backend()
        pb, pport = self.plain_backend()
        try:
            for size in SIZES:
                for label, mode, backend in (("off", "off", "plain"),
                                             ("terminate", "terminate", "plain"),
                                             ("passthrough", "passthrough", "node")):
                    bp = pport if backend == "plain" else nport
                    bpid = (pb if backend == "plain" else nb).pid
                    sp, sport = self.sluice(mode, "", bp)
                    try:
                        s0, b0, t0 = cpu_s(sp.pid), cpu_s(bpid), time.monotonic()
                        j = self.client(["echo", "--url", "ws://127.0.0.1:%d/" % sport,
                                         "--connections", "64", "--size", str(size), "--duration",
                                         str(self.a.duration), "--deflate", "--threshold", "0"],
                                        self.a.duration + 60)
                        s1, b1, t1 = cpu_s(sp.pid), cpu_s(bpid), time.monotonic()
                    finally:
                        bench.stop(sp)
                    wall = t1 - t0
                    sl = (s1 - s0) / wall
                    be = (b1 - b0) / wall
                    rate = j["messages"] / j["secs"]
                    row = {"size": size, "variant": label, "backend": backend, "msgs_per_s": rate,
                           "sluice_cpu": sl, "backend_cpu": be,
                           "per_sluice_core": rate / sl if sl > 0 else None,
                           "loadavg": bench.loadavg()}
                    self.out["throughput"].append(row)
                    bench.log("  %-6d %-12s %-6s %9.0f msg/s  sluice %.2f core  backend %.2f core  "
                              "%s msg/s per sluice core" % (size, label, backend, rate, sl, be,
                                                             "%.0f" % row["per_sluice_core"]
                                                             if row["per_sluice_core"] else "-"))
        finally:
            bench.stop(nb)
            bench.stop(pb)

    # -- 3. idle memory -----------------------------------------------------------------------

    def idle(self):
        pb, pport = self.plain_backend()
        n = self.a.idle
        try:
            for mode in ("off", "terminate"):
                for prime in (0, 1024):
                    sp, sport = self.sluice(mode, "", pport)
                    try:
                        time.sleep(0.3)
                        before = bench.rss_kib(sp.pid)
                        argv = ["node", PEER, "idle", "--url", "ws://127.0.0.1:%d/" % sport,
                                "--connections", str(n), "--hold", "3", "--deflate"]
                        if prime:
                            argv += ["--prime", str(prime)]
                        c = self.spawn(argv, "idle")
                        try:
                            bench.wait_output(c, r"^established (\d+)", n / 20.0 + 60)
                            time.sleep(1.0)
                            at = bench.rss_kib(sp.pid)
                            bench.wait_exit(c, 60)
                        finally:
                            bench.stop(c)
                    finally:
                        bench.stop(sp)
                    row = {"mode": mode, "primed_bytes": prime, "connections": n,
                           "rss_before_kib": before, "rss_established_kib": at,
                           "kib_per_conn": (at - before) / n}
                    self.out["idle"].append(row)
                    bench.log("  %-10s primed %-5d %d conns: %.2f KiB/conn (RSS %d -> %d KiB)"
                              % (mode, prime, n, row["kib_per_conn"], before, at))
        finally:
            bench.stop(pb)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--messages", type=int, default=4000,
                    help="64 B messages per callgrind run (16 KiB: a tenth of it)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections")
    ap.add_argument("--parts", default="instructions,throughput,idle")
    ap.add_argument("--out")
    a = ap.parse_args()
    a.sluice = os.path.join(a.build_dir, "sluice")
    a.backend = os.path.join(a.build_dir, "sluice_bench_backend")
    a.out = a.out or os.path.join(a.build_dir, "ws-compression.json")
    r = Run(a)
    try:
        for part in a.parts.split(","):
            bench.log("\n== " + part)
            getattr(r, part)()
    finally:
        bench.stop_all()
        r.out["machine"]["loadavg_end"] = bench.loadavg()
        with open(a.out, "w") as f:
            json.dump(r.out, f, indent=1)
        bench.log("results: " + a.out + "  (work dir " + r.tmp + ")")


if __name__ == "__main__":
    main()
