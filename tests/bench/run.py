#!/usr/bin/python3
"""sluice benchmark harness: sluice side by side with nginx and haproxy, same backend, same load.

    packaging/bench.sh [--quick | --smoke] [options]     # installs, builds build-bench, runs this
    /usr/bin/python3 tests/bench/run.py --quick           # this alone, against build-bench/

Targets (each proxy with ONE worker/thread and logging off, all in front of the same backend
process, sluice_bench_backend --threads 1, started once):
    direct    the backend itself (the harness's ceiling)
    sluice    build-bench/sluice, workers = 1
    nginx     Debian's nginx, worker_processes 1, upstream keepalive (measured: its worker process)
    haproxy   Debian's haproxy, nbthread 1, http-reuse always

Scenarios (targets interleaved, every scenario repeated in rounds, each round starting one target
later: A B C D, B C D A, ...; medians reported):
    http        HTTP keep-alive small GET, wrk -t1 -c64 --latency: requests/s, p50/p99 latency
    ws_small    WebSocket echo, 64 connections x 64 B text messages, closed loop: messages/s, p50/p99
    ws_large    WebSocket echo, 16 connections x 16 KiB text messages: MB/s (payload, one way)
    ws_connect  new WebSocket connections/s (TCP connect, handshake, one echo, close handshake)
    ws_idle     N idle proxied WebSockets: (RSS at "established" - RSS before) / N, KiB per
                connection, on a fresh proxy process per measurement (nginx: its worker).
                N = min(10000, (hard nofile limit - 200) / 2), said so when below 10,000.
    filters     sluice alone: ws_small with each filter configuration (origin, message_limits,
                both) against sluice without filters, as a ratio.
    auth        sluice alone, a `jwt` route (ES256 and RS256, each with its verification cache
                off, "cold": every request checks the signature, and on, "warm": the same token
                every time) against sluice without filters, as ratios: new WebSocket
                connections/s (ws_connect's load) and HTTP keep-alive requests/s (http's load),
                every request and upgrade carrying `Authorization: Bearer` (the same bytes for
                the target without filters). Tokens are signed with the openssl command line and
                the test keys of tests/unit/data/jwt/. The HTTP load also runs through nginx
                without and with auth_request to a local verifier (tests/bench/jwt_verifier.js,
                Node: one process, node:crypto, on the proxy's CPU; its CPU is not in "per
                core"), ES256 and RS256, and ES256 with the verifier's answers cached per token
                (proxy_cache), the closest open-source equivalent.
    ratelimit   the cost of a rate limit that never triggers: HTTP (wrk) through sluice without
                filters, with a local ratelimit filter (key source_ip) and with the Redis store
                (a redis-server of the harness's own; leases of 5000 tokens per round trip),
                nginx with and without limit_req, haproxy with and without a stick table
                tracking http_req_rate per source address; then the 64 B WebSocket echo through
                the three sluice configurations. Redis round trips per second are read from
                sluice's metrics around each Redis run.
    tls         new TLS 1.3 connections/s through sluice and nginx (ECDSA P-256 certificate made with
                the openssl command line; both with a session cache and session tickets, groups
                X25519, P-256, P-384), measured with `openssl s_time -tls1_3 -www /` (one GET per
                connection, one connection at a time): `tls_full` with -new (a client that never
                resumes: every handshake signs), `tls_resumed` with -reuse (every connection
                resumes the first one's session from a ticket). Per core is what matters here:
                the client verifies a signature for every full handshake and is the slower side.
                `openssl speed ecdsap256` is run once on the proxies' CPU, for the CPU's limit
                (signs/s per core, the most full handshakes a core could do).
    waf         the `waf` filter (Debian's OWASP CRS at paranoia level 1, pool_threads = 1, its
                audit log to a file) against nginx + libnginx-mod-http-modsecurity with the same
                rules and settings (tests/integration/wafconf.py; worker_processes 1, ModSecurity's
                line per refused request in the error log): HTTP keep-alive GET (wrk -t1 -c64) of a
                benign browser request and of an SQL injection (refused with 403 by both; wrk's
                status errors are the expected answers and are checked to be all of them),
                requests/s per core. Then WebSocket echo 64 x 64 B text through sluice without
                filters, with the `waf` filter (messages judged on its pool) and with a 50-rule
                `rules` filter, messages/s per core. Then the p99 latency of a route without the
                WAF (wrk -t1 -c8) alone and while a WAF route of the same proxy is saturated
                (wrk -t1 -c64 of benign requests), sluice and nginx + ModSecurity (a location with
                `modsecurity off`).
    instructions
                each proxy (sluice, nginx with master_process off, haproxy) under valgrind's
                callgrind: user-space instructions per HTTP request (wrk -c4), per 64 B text echo
                (4 connections) and per WebSocket connection (concurrency 4), counted from
                callgrind_control -z to -d around one load run. Exact and repeatable, so the
                numbers to compare between commits; blind to the kernel's share. An
                AddressSanitizer build of sluice cannot run under valgrind (refused).
    syscalls
                each proxy process under `perf stat` during one echo load (64 connections x 64 B
                text): system calls, CPU time (user and kernel) and, where the machine exposes
                them, cycles and instructions per message. Beside the proxies, three bare TCP
                relays (tests/bench/relay_probe.cpp, built when liburing-dev is installed) show
                what the socket layer alone costs per message with epoll (what sluice does) and
                with io_uring (one recv in flight per direction, or multishot recv with a
                provided-buffer ring), one submit per loop turn: the most an io_uring back end
                could save. The syscall tracepoint makes each call dearer: compare CPU figures
                within this scenario only.
Text messages are used on purpose: sluice validates UTF-8 in text messages (nginx and haproxy
inspect nothing after the upgrade).

CPU: for every run, utime+stime of the proxy (nginx: its worker), the backend and the load generator
are read from /proc/PID/stat at two instants inside the load generator's measurement window (after
its warm-up, before its end), along with the machine's total from /proc/stat. "per core" is the rate
divided by the proxy's CPU use in that window (rate / (cpu_seconds / wall_seconds)); for `direct`
it is per backend core. "other" is the CPU the rest of the machine used meanwhile (other users'
load makes numbers noisy: the load average is printed too).

By default (when the machine has at least 2 CPUs) the proxies are pinned to the last CPU and the
backend and load generators to the others, so that a proxy has a core of its own; --no-pin lets
the scheduler place everything. "busy% P/L" is how busy the proxy's CPU and the load CPU were,
counting every process on them.

"saturated" names what was at its limit in at least half of the runs: `proxy`, `backend` or
`loadgen` (that process used >= 95% of a core), `proxy-cpu` or `load-cpu` (that CPU was >= 95%
busy, other users included). `loadgen`, `backend` or `load-cpu` without `proxy` means the harness,
not the proxy, was the limit: compare per-core numbers then.

Proxy settings beyond the defaults, all for fairness or for the 10,000 idle connections: nginx gets
upstream keepalive 256, keepalive_requests 1000000 (both sides), the WebSocket upgrade headers, 1 h
proxy timeouts and worker_connections 40000 (it counts about 2.13 per proxied WebSocket);
haproxy gets http-reuse always, 1 h client/server/tunnel timeouts and maxconn
min(20000, (hard nofile - 100) / 2) (it refuses to start when 2 x maxconn exceeds the limit);
sluice gets workers = 1, access_log = "off", keepalive_connections = 256 and max_message_bytes
1MiB. The generated configs are in the work directory (--keep or --work-dir keeps it).

Output: a table per scenario (median, per-core value, ratios to nginx and haproxy, or to sluice
without filters for `filters`), and a JSON file (--out, default build-bench/bench-results.json)
with the machine, the versions, every run and the medians. Medians are taken over the runs
without errors (over all runs when none was clean). A ratio is the median of the per-round ratios
(each run against the baseline's run in the same round), so that the machine's drift in speed
from one round to the next cancels out; the ratio of the medians only when no round has both.

Every child process runs in its own process group with PR_SET_PDEATHSIG and is killed at the end,
on errors and on Ctrl-C; every step has a timeout; all ports are free ones on 127.0.0.1. Errors
(wsload's counted errors, wrk's socket/status errors, a proxy that died) are shown in the tables;
with --smoke (or --strict) they make the exit status 1.

Only the Python 3 standard library is used.
"""

import argparse
import base64
import ctypes
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import wafconf  # noqa: E402  (nginx + ModSecurity configured like the waf filter)
LOCALHOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SATURATED = 0.95
ORIGIN = "https://app.example.com"

ALL_TARGETS = ["direct", "sluice", "nginx", "haproxy"]
ALL_SCENARIOS = ["http", "ws_small", "ws_large", "ws_connect", "ws_idle", "filters", "auth",
                 "ratelimit", "tls", "waf", "instructions", "syscalls"]
# `instructions`: (id, operation, what the load generator counts)
INSTR_OPS = [("http", "request", "requests"), ("ws_small", "message", "messages"),
             ("ws_connect", "connection", "connections")]

# sluice filter configurations for the `filters` scenario: name -> (filter names, [[filters]] TOML)
FILTER_TOML = {
    "origin": '''[[filters]]
name = "origin"
type = "origin"
allow = ["https://www.example.com", "https://*.example.org", "%s"]
''' % ORIGIN,
    "message_limits": '''[[filters]]
name = "message_limits"
type = "message_limits"
max_message_bytes = "64KiB"
allow_types = ["text", "binary"]
''',
}
# A limit that never triggers (a million a second per client address): what the filter costs when
# it only counts. `store` is empty (local) or the Redis store's keys.
RATELIMIT_TOML = '''[[filters]]
name = "%(name)s"
type = "ratelimit"
key = "source_ip"
requests_per_second = 1000000
messages_per_second = 1000000
burst = 1000000
%(store)s'''
FILTER_TOML["ratelimit"] = RATELIMIT_TOML % dict(name="ratelimit", store="")

FILTER_SETS = [
    ("none", []),
    ("origin", ["origin"]),
    ("message_limits", ["message_limits"]),
    ("origin+message_limits", ["origin", "message_limits"]),
]

# The `waf` scenario. The same browser-like head for every request; the attack is an SQL injection
# in a query argument (refused by the CRS at PL1, 942100 and others). The WAF's time budget is
# raised from 500 ms to 10 s: 64 connections queue behind one pool thread, and the benchmark measures
# how many requests are judged, not how many are refused for being late (nginx has no budget).
WAF_HEADERS = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.5",
    "Referer: https://shop.example.com/products",
    "Cookie: session_id=7f3a9c2e41b84d6f; cart=3",
    # by name: a numeric Host scores 3 (rule 920350), which sluice's audit log would record
    # for every request and nginx's error log (at warn) would not
    "Host: shop.example.com",
]
WAF_BENIGN = "/products?category=shoes&sort=price_asc&page=2"
WAF_ATTACK = "/search?q=1%27%20UNION%20SELECT%20username%2C%20password%20FROM%20users--"
WAF_TOML = '''[[filters]]
name = "waf"
type = "waf"
paranoia_level = 1
pool_threads = 1
time_budget = "10s"
audit_log = "%(audit)s"
'''
RULES_TOML = '''[[filters]]
name = "rules"
type = "rules"
files = ["%(file)s"]
audit_log = "off"
'''


def fifty_rules():
    """A rule file of 50 message rules that the benchmark's random text never matches: 25 plain,
    25 after lowercasing (two RE2 sets), as an operator's list of words and shapes would be."""
    words = ["drop table", "union select", "<script", "javascript:", "onerror=", "../..",
             "/etc/passwd", "${jndi:", "cmd.exe", "powershell", "eval(", "document.cookie",
             "base64,", "<iframe", "sleep(", "benchmark(", "xp_cmdshell", "information_schema",
             "wget http", "curl http", "nc -e", "/bin/sh", "php://", "file://", "data:text/html"]
    out = []
    for i, w in enumerate(words):
        pat = re.escape(w).replace("\\ ", "\\s+")
        out.append('''[[rules]]
id = "word-%d"
target = "message"
transforms = ["lowercase"]
pattern = '%s'
action = "close"
close_code = 1008
''' % (i, pat))
        out.append('''[[rules]]
id = "shape-%d"
target = "message"
pattern = '(?:^|[^A-Za-z])Forbidden%02d[#$%%&]{2,}'
action = "drop"
''' % (i, i))
    return "\n".join(out)


# The `auth` scenario: target name -> (algorithm, cache_entries); None: no filter.
JWT_KEYS = os.path.join(ROOT, "tests", "unit", "data", "jwt")
AUTH_SETS = [
    ("sluice (no filters)", None, None),
    ("sluice+jwt ES256 cold", "ES256", 0),
    ("sluice+jwt ES256 warm", "ES256", 4096),
    ("sluice+jwt RS256 cold", "RS256", 0),
    ("sluice+jwt RS256 warm", "RS256", 4096),
]


def jwt_filter_toml(alg, cache_entries):
    pub = os.path.join(JWT_KEYS, "ec256.pub" if alg == "ES256" else "rsa.pub")
    return '''[[filters]]
name = "jwt"
type = "jwt"
keys = ["%s"]
algorithms = ["%s"]
cache_entries = %d
''' % (pub, alg, cache_entries)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_token(alg):
    # A token valid for a day, signed with the openssl command line (ECDSA's DER signature
    # turned into JWS's r || s).
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    data = (header + "." + claims).encode()
    key = os.path.join(JWT_KEYS, "ec256.key" if alg == "ES256" else "rsa.key")
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data,
                         capture_output=True, check=True).stdout
    if alg == "ES256":
        pos, raw = 2 if sig[1] < 0x80 else 3, b""
        for _ in range(2):
            n = sig[pos + 1]
            raw += sig[pos + 2:pos + 2 + n].lstrip(b"\0").rjust(32, b"\0")
            pos += 2 + n
        sig = raw
    return data.decode() + "." + b64url(sig)


# Durations per mode. rounds: repetitions of each scenario (idle_rounds for ws_idle).
MODES = {
    "smoke": dict(rounds=1, idle_rounds=1, http_s=1, ws_s=0.5, warmup_s=0.0, connect_s=0.5,
                  idle_conns=100, idle_hold_s=0.6, large_s=0.5, instr_s=1, tls_s=1),
    "quick": dict(rounds=2, idle_rounds=1, http_s=2, ws_s=2.0, warmup_s=0.5, connect_s=2.0,
                  idle_conns=None, idle_hold_s=2.5, large_s=2.0, instr_s=1, tls_s=2),
    "full": dict(rounds=3, idle_rounds=2, http_s=10, ws_s=10.0, warmup_s=1.0, connect_s=10.0,
                 idle_conns=None, idle_hold_s=4.0, large_s=10.0, instr_s=3, tls_s=10),
}


class HarnessError(Exception):
    pass


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# child processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
CHILDREN = []  # every Popen we started, killed at exit


def _preexec(cpus):
    def fn():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)
    return fn


def tool_env():
    """Environment for the backend and the load generators: they are yardsticks, not under test,
    and exit without freeing their connections; in sanitizer builds (the ctest smoke run) leak
    checking is turned off for them (sluice keeps the caller's ASAN_OPTIONS)."""
    env = dict(os.environ)
    opts = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "detect_leaks=0"
    return env


def spawn(argv, workdir, name, cpus=None, tool=False):
    """Start a child in its own process group; stdout and stderr go to files in workdir."""
    out = open(os.path.join(workdir, name + ".out"), "wb")
    err = open(os.path.join(workdir, name + ".err"), "wb")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
                             start_new_session=True, preexec_fn=_preexec(cpus), close_fds=True,
                             env=tool_env() if tool else None)
    finally:
        out.close()
        err.close()
    p.out_path = os.path.join(workdir, name + ".out")
    p.err_path = os.path.join(workdir, name + ".err")
    p.name = name
    CHILDREN.append(p)
    return p


def stop(p, grace=5.0):
    """SIGTERM the child's process group, SIGKILL after `grace` seconds."""
    if p is None:
        return
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # whatever is left in the group (nginx workers, a wedged child): SIGKILL
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log("warning: %s (pid %d) did not exit after SIGKILL" % (p.name, p.pid))
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all():
    for p in list(CHILDREN):
        stop(p, grace=2.0)


def read_text(path, limit=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if limit and len(data) > limit:
        data = data[-limit:]
    return data.decode("utf-8", "replace")


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tail(p, n=15):
    lines = (read_text(p.out_path, 20000) + read_text(p.err_path, 20000)).strip().splitlines()
    return "\n".join("    | " + l for l in lines[-n:])


def wait_output(p, pattern, timeout):
    """Wait until the child's stdout matches `pattern` (a regex); returns the match."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern, re.M)
    while True:
        m = rx.search(read_text(p.out_path))
        if m:
            return m
        if p.poll() is not None:
            raise HarnessError("%s exited (status %s) before printing %r\n%s"
                               % (p.name, p.returncode, pattern, tail(p)))
        if time.monotonic() > deadline:
            raise HarnessError("%s did not print %r within %.0f s\n%s"
                               % (p.name, pattern, timeout, tail(p)))
        time.sleep(0.02)


def wait_exit(p, timeout):
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, grace=1.0)
        raise HarnessError("%s did not finish within %.0f s (killed)\n%s" % (p.name, timeout, tail(p)))
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode


def last_json_line(p):
    for line in reversed(read_text(p.out_path).strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise HarnessError("%s printed no JSON result (exit status %s)\n%s" % (p.name, p.returncode, tail(p)))


# ---------------------------------------------------------------------------------------------
# /proc

def proc_cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks; None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks():
    """{"all" or CPU number: (busy, total)} ticks from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            v = [int(x) for x in parts[1:]]
            total = sum(v[:8])  # guest time is already counted in user
            idle = v[3] + v[4]
            key = "all" if parts[0] == "cpu" else int(parts[0][3:])
            out[key] = (total - idle, total)
    return out


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child_pids(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(d))
    return sorted(out)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class CpuWindow:
    """CPU use of a few processes and of the machine between start() and stop()."""

    def __init__(self, pids, proxy_cpus=None, load_cpus=None):
        self.pids = {k: v for k, v in pids.items() if v}
        self.proxy_cpus, self.load_cpus = proxy_cpus, load_cpus
        self.t0 = self.t1 = None

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = {k: proc_cpu_ticks(v) for k, v in self.pids.items()}
        self.m0 = machine_ticks()

    def stop(self):
        self.t1 = time.monotonic()
        self.c1 = {k: proc_cpu_ticks(v) for k, v in self.pids.items()}
        self.m1 = machine_ticks()

    def result(self):
        """{name: fraction of one core}, plus 'machine' (cores busy) and 'other' (cores busy
        outside our processes) and 'wall_s'."""
        if self.t0 is None or self.t1 is None:
            return {}
        wall = self.t1 - self.t0
        r = {"wall_s": round(wall, 3)}
        ours = 0.0
        for k in self.pids:
            a, b = self.c0.get(k), self.c1.get(k)
            if a is None or b is None or wall <= 0:
                r[k] = None
                continue
            r[k] = round((b - a) / CLK_TCK / wall, 3)
            ours += r[k]
        def busy(key):
            (b0, t0), (b1, t1) = self.m0[key], self.m1[key]
            return (b1 - b0) / (t1 - t0) if t1 > t0 else None
        ncpu = len(self.m0) - 1
        b = busy("all")
        if b is not None:
            r["machine"] = round(b * ncpu, 3)  # cores busy
            r["other"] = round(max(0.0, r["machine"] - ours), 3)
        for key, cpus in (("proxy_cpu", self.proxy_cpus), ("load_cpu", self.load_cpus)):
            vals = [busy(c) for c in (cpus or ()) if c in self.m0 and c in self.m1]
            vals = [v for v in vals if v is not None]
            if vals:
                r[key] = round(sum(vals) / len(vals), 3)  # fraction busy (all processes)
        return r


# ---------------------------------------------------------------------------------------------
# ports, HTTP check

_used_ports = set()


def free_port():
    """A free TCP port on 127.0.0.1 below the ephemeral range (so that neither the load
    generators' outgoing connections nor other programs' port-0 listeners take it)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError):
        lo = 32768
    hi = max(lo, 12000)
    for _ in range(500):
        port = random.randrange(10000, hi)
        if port in _used_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(port)
        return port
    raise HarnessError("no free port found on 127.0.0.1")


def http_get(port, path="/", timeout=2.0, headers=()):
    """(status, body) of a GET over a fresh connection; raises OSError on failure."""
    extra = "".join(h + "\r\n" for h in headers)
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sConnection: close\r\n\r\n"
                   % (path, port, extra)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    return status, body


def wait_http_ok(p, port, timeout, name, headers=()):
    """Wait until GET / through `port` (with `headers`) answers 200 "hello, world"."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if p is not None and p.poll() is not None:
            raise HarnessError("%s exited at start (status %s)\n%s" % (name, p.returncode, tail(p)))
        try:
            status, body = http_get(port, headers=headers)
            if status == 200 and body == b"hello, world\n":
                return
            last = "status %d, body %r" % (status, body[:80])
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise HarnessError("%s not answering on 127.0.0.1:%d within %.0f s (%s)\n%s"
                               % (name, port, timeout, last, tail(p) if p else ""))
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# targets

class Target:
    """One thing under test, listening on self.port. self.pid is the process whose CPU and memory
    are measured (nginx: its worker)."""

    kind = "?"

    def __init__(self, name, h):
        self.name = name
        self.h = h
        self.proc = None
        self.port = None
        self.pid = None
        self.starts = 0
        self.wrap = []  # a command the proxy runs under (callgrind, for `instructions`)

    def start_timeout(self):
        return 60 if self.wrap else 15

    def start(self):
        last = None
        for attempt in range(3):  # a port taken between probing and binding: try new ones
            try:
                self._start()
                self.starts += 1
                return self
            except HarnessError as e:
                last = e
                stop(self.proc)
                self.proc = None
                log("  %s failed to start (attempt %d): %s" % (self.name, attempt + 1,
                                                                str(e).splitlines()[0]))
        raise last

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and (
            self.pid is None or proc_cpu_ticks(self.pid) is not None)

    def stop(self):
        stop(self.proc)
        self.proc = None
        self.pid = None

    def _workdir(self):
        slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.name).strip("_")
        d = os.path.join(self.h.tmp, "%s-%d" % (slug, self.starts))
        os.makedirs(d, exist_ok=True)
        return d


class Direct(Target):
    kind = "direct"

    def __init__(self, h):
        super().__init__("direct", h)

    def _start(self):
        self.proc = self.h.backend.proc
        self.port = self.h.backend.port
        self.pid = self.h.backend.pid

    def stop(self):  # the backend belongs to the harness
        pass

    def alive(self):
        return self.h.backend.alive()


class Backend(Target):
    kind = "backend"

    def __init__(self, h):
        super().__init__("backend", h)

    def _start(self):
        self.port = free_port()
        d = self._workdir()
        self.proc = spawn([self.h.args.backend, "--port", str(self.port), "--threads", "1"], d,
                          "backend", cpus=self.h.load_cpus, tool=True)
        wait_output(self.proc, r"^ready", 10)
        self.pid = self.proc.pid
        wait_http_ok(self.proc, self.port, 5, "backend")


class RelayProbe(Target):
    """tests/bench/relay_probe.cpp: a bare TCP relay (no parsing) with one socket back end,
    epoll, uring or uring-ms, for the `syscalls` scenario."""
    kind = "relay"

    def __init__(self, h, mode):
        super().__init__("relay-" + mode, h)
        self.mode = mode

    def _start(self):
        self.port = free_port()
        self.proc = spawn([self.h.args.relay_probe, "--mode", self.mode, "--listen", str(self.port),
                           "--backend", str(self.h.backend.port)], self._workdir(), "relay",
                          cpus=self.h.proxy_cpus)
        wait_output(self.proc, r"^ready", 10)
        self.pid = self.proc.pid


class Sluice(Target):
    kind = "sluice"

    def __init__(self, h, name="sluice", filters=(), filter_toml=None, tls=None):
        super().__init__(name, h)
        self.tls = tls  # (cert, key): a second listener on tls_port with that certificate
        self.tls_port = None
        self.filters = list(filters)
        self.filter_toml = filter_toml or {}  # name -> [[filters]] TOML, beside FILTER_TOML
        self.bearer = None  # an Authorization header line for every request (`auth`)
        self.admin = None

    def config(self, admin_port):
        names = ", ".join('"%s"' % f for f in self.filters)
        toml = '''# generated by tests/bench/run.py
[server]
workers = 1
access_log = "off"
shutdown_timeout = "1s"
max_connections = 100000

[admin]
listen = "127.0.0.1:%d"

[[listeners]]
name = "bench"
listen = "127.0.0.1:%d"

[[routes]]
listener = "bench"
host = "*"
path_prefix = "/"
pool = "backend"
filters = [%s]

[routes.websocket]
enabled = true
max_message_bytes = "1MiB"

[[pools]]
name = "backend"
backends = [ { address = "127.0.0.1:%d" } ]
keepalive_connections = 256
''' % (admin_port, self.port, names, self.h.backend.port)
        if self.tls:
            # OpenSSL's defaults otherwise (as nginx): a session cache and tickets, which
            # sluice always has.
            toml += '''
[[listeners]]
name = "bench_tls"
listen = "127.0.0.1:%d"
tls = { cert = "%s", key = "%s" }

[[routes]]
listener = "bench_tls"
host = "*"
path_prefix = "/"
pool = "backend"
''' % (self.tls_port, self.tls[0], self.tls[1])
        for f in self.filters:
            toml += "\n" + (self.filter_toml.get(f) or FILTER_TOML[f])
        return toml

    def metric(self, name):
        """The sum of a metric's series, from the admin listener (0 when absent)."""
        data = b""
        try:
            with socket.create_connection((LOCALHOST, self.admin), timeout=5) as s:
                # the admin listener answers only requests naming its own address (DNS rebinding)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                          % self.admin)
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
        except OSError:
            return 0
        if not data.startswith(b"HTTP/1.1 200"):
            raise HarnessError("%s: GET /metrics answered %r" % (self.name, data[:60]))
        total = 0.0
        for line in data.decode("utf-8", "replace").splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def _start(self):
        self.port = free_port()
        self.tls_port = free_port() if self.tls else None
        admin = self.admin = free_port()
        d = self._workdir()
        conf = os.path.join(d, "sluice.toml")
        with open(conf, "w") as f:
            f.write(self.config(admin))
        self.proc = spawn(self.wrap + [self.h.args.sluice, "--config", conf], d, "sluice",
                          cpus=self.h.proxy_cpus)
        wait_http_ok(self.proc, self.port, self.start_timeout(), self.name,
                     [self.bearer] if self.bearer else ())
        self.pid = self.proc.pid


class Nginx(Target):
    kind = "nginx"

    def __init__(self, h, name="nginx", limit=False, tls=None):
        super().__init__(name, h)
        self.tls = tls  # (cert, key): a second server on tls_port, settings as sluice's
        self.tls_port = None
        # limit_req per client address, at a rate it never reaches (the cost of counting)
        self.limit = limit

    def config(self, d):
        user = "user root;\n" if os.geteuid() == 0 else ""
        return '''# generated by tests/bench/run.py
%(user)sworker_processes 1;
daemon off;
master_process %(master)s;
pid %(d)s/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile %(nofile)d;

events {
    worker_connections %(wconn)d;
}

http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s/client_body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    %(limit_zone)s
    upstream backend {
        server 127.0.0.1:%(backend)d;
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:%(port)d;
        location / {
            %(limit_req)s
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
%(tls_server)s}
''' % dict(user=user, d=d, backend=self.h.backend.port, port=self.port,
           tls_server=self.tls_server() if self.tls else "",
           master="off" if self.wrap else "on",
           limit_zone="limit_req_zone $binary_remote_addr zone=rl:10m rate=1000000r/s;"
           if self.limit else "",
           limit_req="limit_req zone=rl burst=1000000 nodelay;" if self.limit else "",
           nofile=self.h.limits["nginx_rlimit_nofile"],
           wconn=self.h.limits["nginx_worker_connections"])

    def tls_server(self):
        # What sluice does: TLS 1.2 and 1.3, OpenSSL's TLS 1.3 suites, the same groups, a session
        # cache (sluice: 20,000 sessions in the process) and tickets (nginx's default, on).
        return '''
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
''' % (self.tls_port, self.tls[0], self.tls[1])

    def _start(self):
        self.port = free_port()
        self.tls_port = free_port() if self.tls else None
        d = self._workdir()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self.config(d))
        self.proc = spawn(self.wrap + [self.h.args.nginx, "-p", d + "/", "-c", conf, "-e", "stderr"],
                          d, "nginx", cpus=self.h.proxy_cpus)
        bearer = getattr(self, "bearer", None)
        wait_http_ok(self.proc, self.port, self.start_timeout(), "nginx", [bearer] if bearer else ())
        if self.wrap:  # master_process off: the one process does the work
            self.pid = self.proc.pid
            return
        deadline = time.monotonic() + 5
        while True:
            # only the worker: proxy_cache_path (NginxAuth's cache) adds a cache manager and loader
            workers = [c for c in child_pids(self.proc.pid)
                       if b"worker process" in read_bytes("/proc/%d/cmdline" % c)]
            if len(workers) == 1:
                self.pid = workers[0]
                return
            if time.monotonic() > deadline:
                raise HarnessError("nginx: expected one worker process, found %r" % workers)
            time.sleep(0.05)


class NginxAuth(Nginx):
    """nginx asking a local JWT verifier (tests/bench/jwt_verifier.js) with auth_request before
    every request: the closest open-source equivalent of sluice's `jwt` filter. `cache`: the
    verifier's answers cached per Authorization header (proxy_cache on the subrequest), the
    counterpart of the jwt filter's warm cache."""

    def __init__(self, h, name, verifier_port, cache=False):
        super().__init__(h, name)
        self.verifier_port = verifier_port
        self.cache = cache

    def config(self, d):
        conf = super().config(d)
        upstream = '''upstream verifier {
        server 127.0.0.1:%d;
        keepalive 64;
        keepalive_requests 1000000;
    }
    %s
    upstream backend {''' % (self.verifier_port,
                            "proxy_cache_path %s/authcache keys_zone=auth:1m;" % d if self.cache else "")
        auth = '''location = /_auth {
            internal;
            proxy_pass http://verifier;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            %s
        }
        location / {
            auth_request /_auth;''' % ("proxy_cache auth; proxy_cache_key $http_authorization; "
                                       "proxy_cache_valid 204 60s;" if self.cache else "")
        return conf.replace("upstream backend {", upstream, 1).replace("location / {", auth, 1)


class Haproxy(Target):
    kind = "haproxy"

    def __init__(self, h, name="haproxy", limit=False):
        super().__init__(name, h)
        # a stick table tracking each client address's request rate, with a deny rule it never
        # meets (the cost of counting)
        self.limit = limit

    def config(self):
        return '''# generated by tests/bench/run.py
global
    nbthread 1
    maxconn %d

defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    http-reuse always

frontend bench
    bind 127.0.0.1:%d
%s    default_backend app

backend app
    server s1 127.0.0.1:%d
''' % (self.h.limits["haproxy_maxconn"], self.port,
       "    stick-table type ip size 100k expire 30s store http_req_rate(10s)\n"
       "    http-request track-sc0 src\n"
       "    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }\n"
       if self.limit else "", self.h.backend.port)

    def _start(self):
        self.port = free_port()
        d = self._workdir()
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(self.config())
        self.proc = spawn(self.wrap + [self.h.args.haproxy, "-db", "-f", conf], d, "haproxy",
                          cpus=self.h.proxy_cpus)
        wait_http_ok(self.proc, self.port, self.start_timeout(), "haproxy")
        self.pid = self.proc.pid


class NginxWaf(Nginx):
    """nginx + libnginx-mod-http-modsecurity configured like sluice's `waf` filter
    (tests/integration/wafconf.py); /plain/ is a location with ModSecurity off."""

    def __init__(self, h, name="nginx+modsecurity"):
        super().__init__(h, name)

    def config(self, d):
        rules = os.path.join(d, "modsecurity-main.conf")
        with open(rules, "w") as f:
            f.write(wafconf.modsecurity_conf(paranoia=1))
        backend = "127.0.0.1:%d" % self.h.backend.port
        plain = ("location /plain/ { modsecurity off; proxy_pass http://app; "
                 'proxy_http_version 1.1; proxy_set_header Connection ""; }')
        return wafconf.nginx_conf(d, "127.0.0.1:%d" % self.port, backend, backend, rules,
                                  error_log=os.path.join(d, "nginx-error.log"),
                                  extra_server=plain)


class SluiceWafRoutes(Sluice):
    """sluice with the `waf` filter on every route but /plain/ (for the p99 of a route without the
    WAF beside a saturated one)."""

    def config(self, admin_port):
        toml = super().config(admin_port)
        return toml.replace('''[[pools]]''', '''[[routes]]
listener = "bench"
host = "*"
path_prefix = "/plain/"
pool = "backend"

[[pools]]''', 1)


# ---------------------------------------------------------------------------------------------
# load generators

def saturated(cpu):
    """What was at its limit: a process at >= 95% of a core ("proxy", "backend", "loadgen"), or,
    when pinned, the proxy's CPU or the load generators' CPU >= 95% busy counting every process
    on it, other users' included ("proxy-cpu", "load-cpu")."""
    s = [k for k in ("proxy", "backend", "loadgen") if (cpu.get(k) or 0) >= SATURATED]
    s += [k.replace("_", "-") for k in ("proxy_cpu", "load_cpu") if (cpu.get(k) or 0) >= SATURATED]
    return s


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Harness:
    def __init__(self, args):
        self.args = args
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.p = dict(MODES[self.mode])
        if args.rounds:
            self.p["rounds"] = args.rounds
            self.p["idle_rounds"] = args.rounds
        if args.duration:
            for k in ("ws_s", "connect_s", "large_s"):
                self.p[k] = args.duration
            self.p["http_s"] = max(1, int(round(args.duration)))
            self.p["tls_s"] = max(1, int(round(args.duration)))
        if args.work_dir:
            os.makedirs(args.work_dir, exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix="sluice-bench-", dir=args.work_dir)
        else:
            self.tmp = tempfile.mkdtemp(prefix="sluice-bench-")
        self.errors = []  # strings: every error seen, for the summary
        self.notes = []
        self.runs = []  # every run, for the JSON file
        self.results = {}  # scenario -> dict
        ncpu = len(os.sched_getaffinity(0))
        if args.pin and ncpu >= 2:
            cpus = sorted(os.sched_getaffinity(0))
            self.proxy_cpus = {cpus[-1]}
            self.load_cpus = set(cpus[:-1])
        else:
            self.proxy_cpus = self.load_cpus = None
        self.backend = Backend(self)
        self.targets = {}
        self.wrk_script = os.path.join(self.tmp, "report.lua")
        with open(self.wrk_script, "w") as f:
            f.write(WRK_LUA)

    # -- plumbing -----------------------------------------------------------------------------

    def error(self, msg):
        self.errors.append(msg)
        log("  ERROR: " + msg)

    def start_into(self, targets, t, what=None):
        """Starts t and appends it to `targets`; a target that fails to start is an error of the
        run, not the end of it. Returns t."""
        try:
            targets.append(t.start())
        except HarnessError as e:
            self.error("%s failed to start: %s" % (what or t.name, e))
        return t

    def ensure(self, t):
        """Make sure target t is running; restart it (and say so) when it died."""
        if t.alive():
            return True
        if t.proc is not None:
            code = t.proc.poll()
            self.error("%s died (exit status %s); restarting it\n%s" % (t.name, code, tail(t.proc)))
            t.stop()
        if not self.backend.alive():  # every target points at it: nothing can go on
            raise HarnessError("the backend died (exit status %s)\n%s"
                               % (self.backend.proc.poll(), tail(self.backend.proc)))
        try:
            t.start()
            return True
        except HarnessError as e:
            self.error("%s could not be (re)started: %s" % (t.name, e))
            return False

    def run_load(self, argv, name, t, lead, span, timeout, parse):
        """Run one load generator against target t. CPU of the proxy, backend and load generator
        is sampled over [launch + lead, launch + lead + span]. Returns (result dict, cpu dict)."""
        d = os.path.join(self.tmp, "runs")
        os.makedirs(d, exist_ok=True)
        tag = "%s-%03d" % (name, len(self.runs))
        p = spawn(argv, d, tag, cpus=self.load_cpus, tool=True)
        pids = {"proxy": t.pid if t.kind != "direct" else None, "backend": self.backend.pid,
                "loadgen": p.pid}
        win = CpuWindow(pids, self.proxy_cpus, self.load_cpus)
        t0 = time.monotonic()
        try:
            time.sleep(max(0.0, t0 + lead - time.monotonic()))
            if p.poll() is None:
                win.start()
                time.sleep(max(0.0, t0 + lead + span - time.monotonic()))
                if p.poll() is None:
                    win.stop()
            wait_exit(p, timeout)
        finally:
            stop(p)
        res = parse(p)
        cpu = win.result() if win.t1 else {}
        return res, cpu

    # -- one run of each kind -----------------------------------------------------------------

    def wrk(self, t, secs, extra=(), path="/", conns=64, refused=False):
        """wrk against target t. refused: every answer is expected to be a 4xx (an attack that
        the WAF refuses): wrk's status errors are then the result, and any answer that was not
        one is counted as the error not_refused."""
        argv = [self.args.wrk, "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency", "-s",
                self.wrk_script]
        argv += list(extra) + ["http://127.0.0.1:%d%s" % (t.port, path)]

        def parse(p):
            j = last_json_line(p)
            errs = {k: v for k, v in j["errors"].items() if v}
            if refused:
                # wrk counts the requests that got an answer, refused ones included
                passed = j["requests"] - errs.pop("status", 0)
                if passed > 0:
                    errs["not_refused"] = passed
            dur = j["duration_us"] / 1e6
            return {"value": j["requests"] / dur if dur > 0 else None,
                    "p50_ms": j["latency_us"]["p50"] / 1000.0,
                    "p99_ms": j["latency_us"]["p99"] / 1000.0,
                    "requests": j["requests"], "errors": sum(errs.values()), "error_kinds": errs,
                    "exit": p.returncode}
        return self.run_load(argv, "wrk", t, 0.25, max(0.3, secs - 0.45), secs + 20, parse)

    def wsload(self, t, mode, opts, lead, span, timeout, value_key):
        argv = [self.args.wsload, mode, "--url", "ws://127.0.0.1:%d/" % t.port, "--json"] + opts

        def parse(p):
            j = last_json_line(p)
            r = {"value": j.get(value_key), "errors": j.get("errors", 0),
                 "error_kinds": j.get("error_kinds", {}), "exit": p.returncode}
            if "latency_us" in j:
                r["p50_ms"] = j["latency_us"]["p50"] / 1000.0
                r["p99_ms"] = j["latency_us"]["p99"] / 1000.0
            if "cycle_us" in j:
                r["p50_ms"] = j["cycle_us"]["p50"] / 1000.0
                r["p99_ms"] = j["cycle_us"]["p99"] / 1000.0
            if p.returncode != 0 and not r["errors"]:
                r["errors"] = 1
                r["error_kinds"] = {"exit_status_%d" % p.returncode: 1}
            r["raw"] = j
            return r
        return self.run_load(argv, "wsload-" + mode, t, lead, span, timeout, parse)

    def echo(self, t, conns, size, secs, extra=()):
        w = self.p["warmup_s"]
        opts = ["--connections", str(conns), "--size", str(size), "--duration", str(secs),
                "--warmup", str(w), "--text", "--max-time", str(secs + w + 30)] + list(extra)
        key = "msgs_per_s" if size <= 1024 else "mb_per_s"
        return self.wsload(t, "echo", opts, w + 0.2, max(0.2, secs - 0.35), secs + w + 40, key)

    def connect(self, t, secs, extra=()):
        opts = ["--concurrency", "16", "--duration", str(secs), "--max-time", str(secs + 30)]
        opts += list(extra)
        return self.wsload(t, "connect", opts, 0.2, max(0.2, secs - 0.35), secs + 40, "conns_per_s")

    # -- scenarios ----------------------------------------------------------------------------

    def throughput_scenario(self, sid, title, unit, targets, fn, baseline=("nginx", "haproxy")):
        rounds = self.p["rounds"]
        log("\n== %s" % title)
        runs = {t.name: [] for t in targets}
        for r in range(rounds):
            # Each round starts one target later (A B C, B C A, C A B, ...): on a machine whose
            # speed drifts, no target always runs first or last.
            k = r % len(targets)
            for t in targets[k:] + targets[:k]:
                if not self.ensure(t):
                    runs[t.name].append({"round": r, "errors": 1, "error_kinds": {"not_running": 1}})
                    continue
                try:
                    res, cpu = fn(t)
                except HarnessError as e:
                    self.error("%s / %s round %d: %s" % (sid, t.name, r + 1, e))
                    res, cpu = {"errors": 1, "error_kinds": {"harness": 1}, "value": None}, {}
                res["round"] = r
                res["cpu"] = cpu
                util = cpu.get("backend" if t.kind == "direct" else "proxy")
                res["per_core"] = (res["value"] / util) if res.get("value") and util and util > 0.02 \
                    else None
                res["saturated"] = saturated(cpu)
                if res.get("errors"):
                    self.error("%s / %s round %d: %d errors %s" % (sid, t.name, r + 1, res["errors"],
                                                                   json.dumps(res.get("error_kinds"))))
                if not t.alive():
                    self.error("%s / %s round %d: the target died during the run" % (sid, t.name, r + 1))
                    res["errors"] = (res.get("errors") or 0) + 1
                if not res.get("value") and not res.get("errors"):
                    self.error("%s / %s round %d: no result" % (sid, t.name, r + 1))
                    res["errors"] = 1
                    res["error_kinds"] = {"no_result": 1}
                runs[t.name].append(res)
                self.runs.append(dict(scenario=sid, target=t.name, **{k: v for k, v in res.items()
                                                                      if k != "raw"}))
                log("  round %d %-24s %s" % (r + 1, t.name, fmt_run(res, unit)))
        self.results[sid] = summarize(sid, title, unit, runs, baseline)
        print_table(self.results[sid])

    def auth_scenarios(self):
        P = self.p
        tokens = {alg: jwt_token(alg) for alg in ("ES256", "RS256")}
        atargets = []
        for name, alg, cache in AUTH_SETS:
            t = Sluice(self, name, ["jwt"] if alg else [],
                       {"jwt": jwt_filter_toml(alg, cache)} if alg else None)
            # The token of the target's algorithm; the target without filters gets an ES256 one
            # (the same bytes on the wire, unchecked).
            t.bearer = "Authorization: Bearer " + tokens[alg or "ES256"]
            self.start_into(atargets, t)
        base = ("sluice (no filters)",)
        # nginx + auth_request to a local verifier, for the HTTP figure (when nginx and node are
        # installed). The verifier shares the proxy's CPU: sluice's one worker verifies tokens
        # itself, so nginx and its verifier get one core between them too.
        ntargets, verifiers = [], []
        if self.args.nginx and "nginx" in self.args.targets and shutil.which("node"):
            vport = {}
            for alg in ("ES256", "RS256"):
                vport[alg] = free_port()
                pub = os.path.join(JWT_KEYS, "ec256.pub" if alg == "ES256" else "rsa.pub")
                v = spawn(["node", os.path.join(HERE, "jwt_verifier.js"), "--port", str(vport[alg]),
                           "--key", pub, "--alg", alg], self.tmp, "verifier-" + alg,
                          cpus=self.proxy_cpus, tool=True)
                verifiers.append(v)
                wait_output(v, r"^ready", 10)
            for t, alg in ((Nginx(self), "ES256"),
                           (NginxAuth(self, "nginx+auth_request ES256", vport["ES256"]), "ES256"),
                           (NginxAuth(self, "nginx+auth_request ES256 cached", vport["ES256"], True),
                            "ES256"),
                           (NginxAuth(self, "nginx+auth_request RS256", vport["RS256"]), "RS256")):
                t.bearer = "Authorization: Bearer " + tokens[alg]
                self.start_into(ntargets, t)
        else:
            self.notes.append("auth: no nginx + auth_request comparison (nginx or node missing)")
        try:
            self.throughput_scenario(
                "auth_connect", "6b. jwt: new WebSocket connections with a Bearer token "
                "(concurrency 16, %.1f s): connections/s, ratio to sluice without filters"
                % P["connect_s"], "conn/s", atargets,
                lambda t: self.connect(t, P["connect_s"], ["--header", t.bearer]), baseline=base)
            if self.args.wrk:
                self.throughput_scenario(
                    "auth_http", "6c. jwt: HTTP keep-alive GET with a Bearer token (wrk -t1 -c64, "
                    "%d s): requests/s, ratio to sluice without filters and to nginx" % P["http_s"],
                    "req/s", atargets + ntargets,
                    lambda t: self.wrk(t, P["http_s"], ["-H", t.bearer]),
                    baseline=base + (("nginx",) if ntargets else ()))
            else:
                self.notes.append("scenario auth_http skipped: wrk is not installed")
        finally:
            for t in atargets + ntargets:
                t.stop()
            for v in verifiers:
                stop(v)

    def waf_scenarios(self):
        """The `waf` filter against nginx + ModSecurity with the same CRS (HTTP), the WAF and a
        50-rule `rules` filter on WebSocket messages, and the latency of a route without the WAF
        beside a saturated WAF route."""
        P = self.p
        a = self.args
        d = os.path.join(self.tmp, "waf")
        os.makedirs(d, exist_ok=True)
        waf = {"waf": WAF_TOML % {"audit": os.path.join(d, "waf-audit.log")}}
        rules_file = os.path.join(d, "fifty.toml")
        with open(rules_file, "w") as f:
            f.write(fifty_rules())
        rules = {"rules": RULES_TOML % {"file": rules_file}}
        # wrk's default timeout (2 s) would count nginx's slowest answers as errors and leave
        # them out of the latency percentiles
        headers = ["--timeout", "20s"] + [x for h in WAF_HEADERS for x in ("-H", h)]
        targets = []

        def add(t):
            return self.start_into(targets, t)
        sw = add(SluiceWafRoutes(self, "sluice+waf", ["waf"], waf))
        nw = None
        if a.nginx and "nginx" in a.targets and os.path.exists(wafconf.MODULE):
            nw = add(NginxWaf(self))
        else:
            self.notes.append("waf: nginx or %s is missing; sluice alone" % wafconf.MODULE)
        base = ("nginx+modsecurity",)
        try:
            http = [t for t in targets if t in (sw, nw)]
            self.throughput_scenario(
                "waf_benign", "10a. CRS PL1, benign HTTP keep-alive GET with a browser's head "
                "(wrk -t1 -c64, %d s): requests/s" % P["http_s"], "req/s", http,
                lambda t: self.wrk(t, P["http_s"], headers, path=WAF_BENIGN), baseline=base)
            self.throughput_scenario(
                "waf_attack", "10b. CRS PL1, SQL injection in the query, every request refused "
                "(wrk -t1 -c64, %d s): requests/s" % P["http_s"], "req/s", http,
                lambda t: self.wrk(t, P["http_s"], headers, path=WAF_ATTACK, refused=True),
                baseline=base)
            self.waf_latency([t for t in (sw, nw) if t in targets], headers)
        finally:
            for t in targets:
                t.stop()
        wtargets = []
        for t in (Sluice(self, "sluice (no filters)"), Sluice(self, "sluice+waf", ["waf"], waf),
                  Sluice(self, "sluice+rules (50)", ["rules"], rules)):
            self.start_into(wtargets, t)
        ws_headers = [x for h in WAF_HEADERS[:3] for x in ("--header", h)]
        try:
            self.throughput_scenario(
                "waf_ws", "10d. WebSocket echo 64 x 64 B text (%.1f s), every client message "
                "judged: messages/s, ratio to sluice without filters" % P["ws_s"], "msg/s",
                wtargets, lambda t: self.echo(t, 64, 64, P["ws_s"], ws_headers),
                baseline=("sluice (no filters)",))
        finally:
            for t in wtargets:
                t.stop()

    def waf_latency(self, targets, headers):
        """p99 of GET /plain/ (no WAF; wrk -t1 -c8) alone, then while wrk -t1 -c64 saturates the
        WAF route of the same proxy with benign requests."""
        secs = self.p["http_s"]
        title = ("10c. p99 latency of a route without the WAF (wrk -t1 -c8, %d s), alone and "
                 "while a WAF route of the same proxy is saturated (wrk -t1 -c64)" % secs)
        log("\n== " + title)
        d = os.path.join(self.tmp, "runs")
        os.makedirs(d, exist_ok=True)
        out = {}

        def wrk_proc(t, conns, path, tag):
            argv = [self.args.wrk, "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency", "-s",
                    self.wrk_script] + headers + ["http://127.0.0.1:%d%s" % (t.port, path)]
            return spawn(argv, d, "%s-%03d" % (tag, len(self.runs)), cpus=self.load_cpus,
                         tool=True)

        def result(p):
            wait_exit(p, secs + 20)
            j = last_json_line(p)
            dur = j["duration_us"] / 1e6
            return {"rps": j["requests"] / dur if dur > 0 else None,
                    "p50_ms": j["latency_us"]["p50"] / 1000.0,
                    "p99_ms": j["latency_us"]["p99"] / 1000.0,
                    "errors": sum(v for v in j["errors"].values())}
        for r in range(self.p["rounds"]):
            for t in targets:
                if not self.ensure(t):
                    continue
                try:
                    alone = result(wrk_proc(t, 8, "/plain/x", "wrk-plain"))
                    loadp = wrk_proc(t, 64, WAF_BENIGN, "wrk-waf")
                    time.sleep(0.3)  # the WAF route saturated first
                    plain = result(wrk_proc(t, 8, "/plain/x", "wrk-plain"))
                    loaded = result(loadp)
                except (HarnessError, KeyError, TypeError, ValueError) as e:
                    self.error("waf_latency / %s round %d: %s" % (t.name, r + 1, e))
                    continue
                run = {"round": r, "alone": alone, "beside_waf": plain, "waf_route": loaded}
                out.setdefault(t.name, []).append(run)
                self.runs.append(dict(scenario="waf_latency", target=t.name, **run))
                log("  round %d %-24s /plain/ alone: %s req/s, p99 %.2f ms; beside a saturated "
                    "WAF route: %s req/s, p99 %.2f ms (WAF route %s req/s, p99 %.1f ms)%s"
                    % (r + 1, t.name, fmt_num(alone["rps"]), alone["p99_ms"],
                       fmt_num(plain["rps"]), plain["p99_ms"], fmt_num(loaded["rps"]),
                       loaded["p99_ms"],
                       ", ERRORS" if alone["errors"] or plain["errors"] or loaded["errors"]
                       else ""))
        summary = {}
        for name, runs in out.items():
            summary[name] = {k: {f: median([x[k][f] for x in runs]) for f in
                                 ("rps", "p50_ms", "p99_ms", "errors")}
                             for k in ("alone", "beside_waf", "waf_route")}
            summary[name]["rounds"] = runs
        self.results["waf_latency"] = {"id": "waf_latency", "title": title, "unit": "ms",
                                       "latency": summary}
        for name, m in summary.items():
            if m["beside_waf"]["rps"]:
                beside = "%.2f ms (%.1fx)" % (m["beside_waf"]["p99_ms"], m["beside_waf"]["p99_ms"]
                                              / max(m["alone"]["p99_ms"], 1e-6))
            else:
                beside = "none completed"
            line = ("  %-20s /plain/ p99 alone %.2f ms, beside a saturated WAF route %s; /plain/ "
                    "req/s %s -> %s" % (name, m["alone"]["p99_ms"], beside,
                                        fmt_num(m["alone"]["rps"]), fmt_num(m["beside_waf"]["rps"])))
            self.notes.append("waf_latency: " + line.strip())
            log(line)

    def ratelimit_scenario(self):
        """A rate limit that never triggers, against no limit: sluice (local and Redis), nginx's
        limit_req, haproxy's stick table, on the same HTTP load; then WebSocket messages."""
        P = self.p
        a = self.args
        redis = None
        redis_toml = None
        if shutil.which("redis-server"):
            rport = free_port()
            redis = spawn(["redis-server", "--bind", LOCALHOST, "--port", str(rport), "--save", "",
                           "--appendonly", "no", "--dir", self.tmp], self.tmp, "redis",
                          cpus=self.load_cpus, tool=True)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((LOCALHOST, rport), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            store = 'store = "redis"\n[filters.redis]\naddress = "127.0.0.1:%d"\nbudget = 5000\n' % rport
            redis_toml = RATELIMIT_TOML % dict(name="ratelimit_redis", store=store)
        else:
            self.notes.append("ratelimit: redis-server is not installed; the Redis store is not "
                              "measured")
        targets = []

        def add(t):
            return self.start_into(targets, t)
        add(Sluice(self, "sluice (no filters)"))
        add(Sluice(self, "sluice+ratelimit", ["ratelimit"]))
        if redis_toml:
            add(Sluice(self, "sluice+ratelimit redis", ["ratelimit_redis"],
                       {"ratelimit_redis": redis_toml}))
        if a.nginx and "nginx" in a.targets:
            add(Nginx(self))
            add(Nginx(self, "nginx+limit_req", limit=True))
        if a.haproxy and "haproxy" in a.targets:
            add(Haproxy(self))
            add(Haproxy(self, "haproxy+stick_table", limit=True))
        trips = {}

        def measured(t, fn):
            redis_run = "redis" in t.name
            before = t.metric("sluice_ratelimit_redis_calls_total") if redis_run else 0
            t0 = time.monotonic()
            res = fn(t)
            if redis_run:
                n = t.metric("sluice_ratelimit_redis_calls_total") - before
                trips.setdefault(t.name, []).append(n / max(time.monotonic() - t0, 1e-3))
            return res
        try:
            if a.wrk:
                self.throughput_scenario(
                    "ratelimit_http", "7. rate limit that never triggers, HTTP keep-alive GET "
                    "(wrk -t1 -c64, %d s): requests/s" % P["http_s"], "req/s", targets,
                    lambda t: measured(t, lambda u: self.wrk(u, P["http_s"])),
                    baseline=("sluice (no filters)", "nginx", "haproxy"))
            else:
                self.notes.append("ratelimit: wrk is not installed; HTTP not measured")
            sl = [t for t in targets if t.kind == "sluice"]
            self.throughput_scenario(
                "ratelimit_ws", "8. rate limit that never triggers, WebSocket echo 64 x 64 B text "
                "(%.1f s): messages/s" % P["ws_s"], "msg/s", sl,
                lambda t: measured(t, lambda u: self.echo(u, 64, 64, P["ws_s"])),
                baseline=("sluice (no filters)",))
            self.ratelimit_instructions(redis_toml)
        finally:
            for t in targets:
                t.stop()
            if redis is not None:
                stop(redis)
        for name, rates in trips.items():
            note = "%s: %.0f Redis round trips/s (median of %d runs)" % (name, median(rates),
                                                                         len(rates))
            self.notes.append(note)
            log("  " + note)

    def ratelimit_instructions(self, redis_toml):
        """The same configurations under callgrind: instructions per request and per message,
        exact where rates on a shared machine are not."""
        a = self.args
        valgrind = getattr(a, "valgrind", None) or shutil.which("valgrind")
        control = getattr(a, "callgrind_control", None) or shutil.which("callgrind_control")
        if not valgrind or not control or binary_has_asan(a.sluice):
            self.notes.append("ratelimit: no instruction counts (valgrind missing, or an ASan "
                              "build of sluice)")
            return
        a.callgrind_control = control
        factories = [("sluice (no filters)", lambda: Sluice(self, "sluice (no filters)")),
                     ("sluice+ratelimit", lambda: Sluice(self, "sluice+ratelimit", ["ratelimit"]))]
        if redis_toml:
            factories.append(("sluice+ratelimit redis", lambda: Sluice(
                self, "sluice+ratelimit redis", ["ratelimit_redis"],
                {"ratelimit_redis": redis_toml})))
        if a.wrk and a.nginx and "nginx" in a.targets:
            factories += [("nginx", lambda: Nginx(self)),
                          ("nginx+limit_req", lambda: Nginx(self, "nginx+limit_req", limit=True))]
        if a.wrk and a.haproxy and "haproxy" in a.targets:
            factories += [("haproxy", lambda: Haproxy(self)),
                          ("haproxy+stick_table",
                           lambda: Haproxy(self, "haproxy+stick_table", limit=True))]
        log("\n== rate limits: instructions per operation (callgrind, %d s per load)"
            % self.p["instr_s"])
        runs = {"http": {}, "ws_small": {}}
        for name, make in factories:
            t = make()
            t.starts = 200
            out = os.path.join(self.tmp, "callgrind-rl-%d.out" % len(runs["http"]))
            t.wrap = [valgrind, "--tool=callgrind", "--callgrind-out-file=" + out]
            sids = (["http"] if a.wrk else []) + (["ws_small"] if t.kind == "sluice" else [])
            try:
                self.ensure(self.targets["direct"])
                t.start()
                for sid in sids:
                    res = {"round": 0, "errors": 0, "error_kinds": {}, "value": None}
                    try:
                        res.update(self.instructions_once(t, sid, out))
                    except HarnessError as e:
                        self.error("ratelimit instructions / %s / %s: %s" % (name, sid, e))
                        res["errors"] += 1
                    runs[sid][name] = [res]
                    self.runs.append(dict(scenario="ratelimit_instr_" + sid, target=name, **res))
                    log("  %-24s %-9s %s" % (name, sid, fmt_run(res, "instr/op")))
            except HarnessError as e:
                self.error("ratelimit instructions / %s: %s" % (name, e))
            finally:
                t.stop()
        for sid, op in (("http", "request"), ("ws_small", "message")):
            if runs[sid]:
                rid = "ratelimit_instr_" + sid
                self.results[rid] = summarize(
                    rid, "7/8%s. rate limits: user-space instructions per %s (callgrind)"
                    % ("a" if sid == "http" else "b", op), "instr/" + op, runs[sid],
                    ("sluice (no filters)", "nginx", "haproxy"), lower_is_better=True)
                print_table(self.results[rid])

    def idle_scenario(self, kinds):
        n = self.idle_n
        title = "5. idle WebSockets: RSS per proxied connection, %d connections" % n
        log("\n== " + title)
        runs = {k: [] for k in kinds}
        for r in range(self.p["idle_rounds"]):
            for k in kinds:
                t = {"sluice": lambda: Sluice(self, "sluice-idle"), "nginx": lambda: Nginx(self),
                     "haproxy": lambda: Haproxy(self)}[k]()
                t.name = k  # same name in the tables; work dirs get a distinct suffix
                t.starts = 100 + r
                res = {"round": r, "errors": 0, "error_kinds": {}, "value": None}
                try:
                    self.ensure(self.targets["direct"])
                    t.start()
                    res.update(self.idle_once(t, n))
                except HarnessError as e:
                    self.error("ws_idle / %s round %d: %s" % (k, r + 1, e))
                    res["errors"] += 1
                    res["error_kinds"]["harness"] = 1
                finally:
                    t.stop()
                if res.get("errors"):
                    self.error("ws_idle / %s round %d: %d errors %s" % (
                        k, r + 1, res["errors"], json.dumps(res.get("error_kinds"))))
                runs[k].append(res)
                self.runs.append(dict(scenario="ws_idle", target=k, **res))
                log("  round %d %-24s %s" % (r + 1, k, fmt_run(res, "KiB/conn")))
        self.results["ws_idle"] = summarize("ws_idle", title, "KiB/conn", runs, ("nginx", "haproxy"),
                                            lower_is_better=True)
        if n < 10000:
            self.results["ws_idle"]["note"] = (
                "N = %d, not 10,000: the hard open-file limit is %s and a proxy needs 2 descriptors "
                "per proxied connection" % (n, self.nofile_hard))
        print_table(self.results["ws_idle"])

    def idle_once(self, t, n):
        time.sleep(0.3)
        before = rss_kib(t.pid)
        hold = self.p["idle_hold_s"]
        argv = [self.args.wsload, "idle", "--url", "ws://127.0.0.1:%d/" % t.port, "--json",
                "--connections", str(n), "--hold", str(hold), "--ramp", "256",
                "--max-time", str(hold + n / 100.0 + 60)]
        d = os.path.join(self.tmp, "runs")
        os.makedirs(d, exist_ok=True)
        p = spawn(argv, d, "wsload-idle-%s-%03d" % (t.name, len(self.runs)), cpus=self.load_cpus,
                  tool=True)
        try:
            t0 = time.monotonic()
            m = wait_output(p, r"^established (\d+)", n / 100.0 + 30)
            ramp_s = time.monotonic() - t0
            established = int(m.group(1))
            time.sleep(min(0.5, hold / 3))
            at = rss_kib(t.pid)
            wait_exit(p, hold + n / 100.0 + 90)
        finally:
            stop(p)
        j = last_json_line(p)
        time.sleep(0.3)
        after = rss_kib(t.pid)
        res = {"connections": n, "established": established, "succeeded": j.get("succeeded"),
               "rss_before_kib": before, "rss_established_kib": at, "rss_after_close_kib": after,
               "ramp_s": round(ramp_s, 2), "errors": j.get("errors", 0),
               "error_kinds": j.get("error_kinds", {}), "exit": p.returncode}
        if established != n:
            res["errors"] += n - established
            res["error_kinds"]["not_established"] = n - established
        if j.get("succeeded") != n and not res["errors"]:
            res["errors"] = 1
            res["error_kinds"]["not_succeeded"] = n - (j.get("succeeded") or 0)
        if p.returncode != 0 and not res["errors"]:
            res["errors"] = 1
            res["error_kinds"]["exit_status_%d" % p.returncode] = 1
        if before is not None and at is not None and established > 0:
            res["value"] = (at - before) / established
        if not t.alive():
            res["errors"] += 1
            res["error_kinds"]["target_died"] = 1
        if res.get("value") is None and not res["errors"]:
            res["errors"] = 1
            res["error_kinds"]["no_result"] = 1
        return res

    # -- TLS handshakes ------------------------------------------------------------------------

    def s_time(self, t, mode, secs):
        """One `openssl s_time` run against t's TLS listener: connections per second."""
        argv = [self.args.openssl, "s_time", "-connect", "127.0.0.1:%d" % t.tls_port, "-tls1_3",
                "-" + mode, "-time", str(secs), "-www", "/"]
        t0 = time.monotonic()

        def parse(p):
            # Over the process's whole life, from just before the launch to its exit (s_time's
            # own "real seconds" are whole seconds); its start costs a few milliseconds.
            wall = time.monotonic() - t0
            m = re.findall(r"(\d+) connections in \d+ real seconds", read_text(p.out_path))
            if p.returncode != 0 or not m:
                return {"value": None, "errors": 1, "exit": p.returncode,
                        "error_kinds": {"s_time_exit_%d" % p.returncode: 1}}
            n = int(m[-1])
            return {"value": n / wall, "connections": n, "errors": 0, "error_kinds": {},
                    "exit": p.returncode}
        return self.run_load(argv, "s_time-" + mode, t, 0.2, max(0.3, secs - 0.4), secs + 30, parse)

    def tls_cert(self):
        """An ECDSA P-256 key and a self-signed certificate for 127.0.0.1, in the work dir."""
        d = os.path.join(self.tmp, "tls")
        os.makedirs(d, exist_ok=True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        p = subprocess.run([self.args.openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                            "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                            "-keyout", key, "-out", cert], capture_output=True, text=True,
                           timeout=30)
        if p.returncode != 0:
            raise HarnessError("openssl req failed: " + p.stderr)
        return cert, key

    def ecdsa_signs_per_s(self):
        """`openssl speed ecdsap256` on the proxies' CPU: ECDSA P-256 signs/s on one core."""
        p = spawn([self.args.openssl, "speed", "-seconds", "3", "ecdsap256"],
                  os.path.join(self.tmp, "tls"), "speed", cpus=self.proxy_cpus, tool=True)
        wait_exit(p, 60)
        m = re.search(r"^\s*256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)",
                      read_text(p.out_path), re.M)
        return (float(m.group(1)), float(m.group(2))) if m else (None, None)

    def tls_scenario(self, kinds):
        secs = self.p["tls_s"]
        try:
            pair = self.tls_cert()
        except (HarnessError, OSError, subprocess.SubprocessError) as e:
            self.error("tls: %s" % e)
            return
        targets = []
        for k in kinds:
            t = {"sluice": Sluice, "nginx": Nginx}[k](self, k, tls=pair)
            t.starts = 300  # a work directory of its own beside the plain target's
            self.start_into(targets, t, "%s (TLS)" % k)
        try:
            self.throughput_scenario(
                "tls_full", "9a. new TLS 1.3 connections, full handshakes, ECDSA P-256 "
                "(openssl s_time -new, %d s): connections/s" % secs, "conn/s", targets,
                lambda t: self.s_time(t, "new", secs), baseline=("nginx",))
            self.throughput_scenario(
                "tls_resumed", "9b. new TLS 1.3 connections, resumed from a ticket "
                "(openssl s_time -reuse, %d s): connections/s" % secs, "conn/s", targets,
                lambda t: self.s_time(t, "reuse", secs), baseline=("nginx",))
        finally:
            for t in targets:
                t.stop()
        try:
            sign, verify = self.ecdsa_signs_per_s()
        except (HarnessError, OSError) as e:
            sign = verify = None
            self.error("openssl speed: %s" % e)
        self.info["ecdsap256"] = {"sign_per_s": sign, "verify_per_s": verify}
        log("openssl speed ecdsap256 on the proxies' CPU: %s signs/s, %s verifies/s (one core)"
            % (fmt_num(sign), fmt_num(verify)))

    # -- instructions per operation ----------------------------------------------------------

    def instructions_scenario(self, kinds):
        """Each proxy under callgrind: the user-space instructions it executes per operation,
        counted from zero (callgrind_control -z) to the end of one load run (-d). Exact and
        repeatable, unlike rates on a shared machine, so comparable between commits; but blind to
        the kernel's share (the system calls and TCP work), which is most of a proxy's time."""
        secs = self.p["instr_s"]
        log("\n== 7. instructions per operation (callgrind, %d s per load)" % secs)
        runs = {sid: {k: [] for k in kinds} for sid, _, _ in INSTR_OPS}
        for k in kinds:
            t = {"sluice": lambda: Sluice(self, "sluice-callgrind"), "nginx": lambda: Nginx(self),
                 "haproxy": lambda: Haproxy(self)}[k]()
            t.name = k
            t.starts = 200
            out = os.path.join(self.tmp, "callgrind-%s.out" % k)
            t.wrap = [self.args.valgrind, "--tool=callgrind", "--callgrind-out-file=" + out]
            try:
                self.ensure(self.targets["direct"])
                t.start()
                for sid, op, _ in INSTR_OPS:
                    res = {"round": 0, "errors": 0, "error_kinds": {}, "value": None}
                    try:
                        res.update(self.instructions_once(t, sid, out))
                    except HarnessError as e:
                        self.error("instructions / %s / %s: %s" % (k, sid, e))
                        res["errors"] += 1
                        res["error_kinds"]["harness"] = 1
                    runs[sid][k].append(res)
                    self.runs.append(dict(scenario="instr_" + sid, target=k, **res))
                    log("  %-8s %-24s %s" % (k, sid, fmt_run(res, "instr/" + op)))
            except HarnessError as e:
                self.error("instructions / %s: %s" % (k, e))
            finally:
                t.stop()
        for i, (sid, op, _) in enumerate(INSTR_OPS):
            rid = "instr_" + sid
            title = "7%s. user-space instructions per %s (callgrind), %s load" % ("abc"[i], op, sid)
            self.results[rid] = summarize(rid, title, "instr/" + op, runs[sid], ("nginx", "haproxy"),
                                          lower_is_better=True)
            print_table(self.results[rid])

    def instructions_once(self, t, sid, out):
        """One load against t (running under callgrind with --callgrind-out-file=`out`):
        instructions per operation."""
        def control(flag):
            p = subprocess.run([self.args.callgrind_control, flag, str(t.pid)], timeout=60,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise HarnessError("callgrind_control %s failed: %s" % (flag, p.stdout + p.stderr))
        secs = self.p["instr_s"]
        url = "ws://127.0.0.1:%d/" % t.port
        count_key = {s: key for s, _, key in INSTR_OPS}[sid]
        if sid == "http":
            argv = [self.args.wrk, "-t1", "-c4", "-d%ds" % secs, "-s", self.wrk_script,
                    "http://127.0.0.1:%d/" % t.port]
        elif sid == "ws_small":
            argv = [self.args.wsload, "echo", "--url", url, "--json", "--connections", "4",
                    "--size", "64", "--text", "--duration", str(secs), "--warmup", "0"]
        else:
            argv = [self.args.wsload, "connect", "--url", url, "--json", "--concurrency", "4",
                    "--duration", str(secs)]
        control("-z")
        d = os.path.join(self.tmp, "runs")
        os.makedirs(d, exist_ok=True)
        p = spawn(argv, d, "instr-%s-%s" % (t.name, sid), cpus=self.load_cpus, tool=True)
        try:
            wait_exit(p, secs + 60)
        finally:
            stop(p)
        time.sleep(0.5)  # the last connections' closes are part of the work
        control("-d")
        j = last_json_line(p)
        errs = j.get("errors", 0)
        if isinstance(errs, dict):  # wrk's
            errs = sum(v for v in errs.values() if v)
        count = j.get(count_key) or 0
        # Each dump is written to `out`.N, N counting up from 1.
        dumps = [f for f in os.listdir(os.path.dirname(out))
                 if re.fullmatch(re.escape(os.path.basename(out)) + r"\.\d+", f)]
        if not dumps:
            raise HarnessError("callgrind wrote no dump next to %s" % out)
        dump = os.path.join(os.path.dirname(out), max(dumps, key=lambda f: int(f.rsplit(".", 1)[1])))
        try:
            with open(dump) as f:
                ir = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
        except (OSError, StopIteration, ValueError) as e:
            raise HarnessError("no callgrind summary in %s: %s" % (dump, e))
        res = {"instructions": ir, "operations": count, "errors": errs,
               "error_kinds": {"load": errs} if errs else {},
               "value": ir / count if count else None}
        if p.returncode != 0 and not errs:
            res["errors"] = 1
            res["error_kinds"] = {"exit_status_%d" % p.returncode: 1}
        return res

    # -- system calls per message ------------------------------------------------------------

    def syscalls_scenario(self, kinds):
        """perf stat on each proxy process during one 64 x 64 B echo load: system calls and CPU
        time per message, user and kernel together, plus cycles and instructions where the
        machine exposes them (virtual machines often do not). The relay probes are bare TCP
        relays, one per socket back end: what the socket layer alone costs per message with
        epoll and with io_uring, and so the most an io_uring back end could save sluice."""
        secs = self.p["ws_s"]
        log("\n== 10. system calls and CPU per 64 B echo message (perf stat, %.1f s per load)" % secs)
        makers = {"sluice": lambda: Sluice(self, "sluice-perf"), "nginx": lambda: Nginx(self),
                  "haproxy": lambda: Haproxy(self)}
        names = list(kinds)
        if self.args.relay_probe:
            names += ["relay-epoll", "relay-uring", "relay-uring-ms"]
        else:
            self.notes.append("syscalls: the relay probes are left out (sluice_relay_probe is built "
                              "only when liburing-dev is installed)")
        runs = {n: [] for n in names}
        for rnd in range(self.p["rounds"]):
            for n in names:
                t = makers[n]() if n in makers else RelayProbe(self, n.split("-", 1)[1])
                t.name = n
                t.starts = 400 + rnd
                res = {"round": rnd, "errors": 0, "error_kinds": {}, "value": None}
                try:
                    t.start()
                    res.update(self.perf_echo_once(t, secs))
                except HarnessError as e:
                    self.error("syscalls / %s: %s" % (n, e))
                    res["errors"] += 1
                    res["error_kinds"]["harness"] = 1
                finally:
                    t.stop()
                runs[n].append(res)
                self.runs.append(dict(scenario="syscalls", target=n, **res))
                log("  round %d %-16s %s" % (rnd + 1, n, fmt_run(res, "cpu-us/msg")))
        self.results["syscalls"] = summarize(
            "syscalls", "10. per 64 B echo message, user and kernel (perf stat), 64 connections",
            "cpu-us/msg", runs, ("nginx", "haproxy"), lower_is_better=True)
        print_table(self.results["syscalls"])

    PERF_EVENTS = {"task-clock": "cpu_ms", "raw_syscalls:sys_enter": "syscalls",
                   "cycles": "cycles", "instructions": "instructions"}

    def perf_echo_once(self, t, secs):
        d = os.path.join(self.tmp, "runs")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, "perf-%s-%d.csv" % (t.name, len(self.runs)))
        perf = spawn([self.args.perf, "stat", "-x", ",", "-o", out, "-e",
                      ",".join(self.PERF_EVENTS), "-p", str(t.pid)], d,
                     "perf-%s-%d" % (t.name, len(self.runs)), tool=True)
        time.sleep(0.3)  # perf attaches before the first connection
        argv = [self.args.wsload, "echo", "--url", "ws://127.0.0.1:%d/" % t.port, "--json",
                "--connections", "64", "--size", "64", "--text", "--duration", str(secs),
                "--warmup", "0", "--max-time", str(secs + 30)]
        p = spawn(argv, d, "perf-load-%s-%d" % (t.name, len(self.runs)), cpus=self.load_cpus,
                  tool=True)
        try:
            wait_exit(p, secs + 60)
        finally:
            stop(p)
            time.sleep(0.3)  # the closes belong to the load too
            perf.send_signal(signal.SIGINT)
            wait_exit(perf, 10)
        j = last_json_line(p)
        msgs = j.get("messages") or 0
        counts = {}
        for line in read_text(out).splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2] in self.PERF_EVENTS and f[0].replace(".", "", 1).isdigit():
                counts[self.PERF_EVENTS[f[2]]] = float(f[0])
        if "cpu_ms" not in counts or "syscalls" not in counts:
            raise HarnessError("perf stat counted nothing (%s): %s" % (out, tail(perf)))
        errs = j.get("errors", 0)
        res = {"operations": msgs, "errors": errs, "error_kinds": {"load": errs} if errs else {},
               "value": counts["cpu_ms"] * 1000 / msgs if msgs else None}
        for k in ("syscalls", "cycles", "instructions"):
            if k in counts and msgs:
                res[k + "_per_op"] = counts[k] / msgs
        return res

    # -- the whole run ------------------------------------------------------------------------

    def machine(self):
        info = {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                "kernel": platform.release(), "machine": platform.machine(),
                "python": platform.python_version(), "loadavg_start": loadavg()}
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        info["cpu"] = line.split(":", 1)[1].strip()
                        break
            with open("/proc/meminfo") as f:
                info["mem_total_kib"] = int(f.readline().split()[1])
        except OSError:
            pass
        info["versions"] = versions(self.args)
        try:
            rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], timeout=10,
                                 capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                   timeout=10, capture_output=True, text=True).stdout.strip()
            info["commit"] = rev + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
        info["pinning"] = ({"proxy_cpus": sorted(self.proxy_cpus), "load_cpus": sorted(self.load_cpus)}
                           if self.proxy_cpus else None)
        return info

    def run(self):
        a = self.args
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.nofile_hard = "unlimited" if hard == resource.RLIM_INFINITY else hard
        lim = 10 ** 9 if hard == resource.RLIM_INFINITY else hard
        self.idle_n = self.p["idle_conns"] or min(10000, (lim - 200) // 2)
        if a.idle_connections:
            self.idle_n = a.idle_connections
        # What the proxies may use. Each proxy asks for more descriptors than it needs and, run as
        # root without CAP_SYS_RESOURCE (containers), cannot raise the hard limit: nginx then only
        # logs an alert, haproxy refuses to start (it needs 2 x maxconn + a few). So cap them to
        # the hard limit, which still leaves room for ws_idle's 2 x N.
        # nginx counts about 2.13 worker_connections per proxied WebSocket (measured: with 19,900
        # it refuses new ones at 9,329 proxied WebSockets, "worker_connections are not enough"),
        # so it gets 40,000 whatever the descriptor limit (a warning, not an error, when above it).
        self.limits = {"nofile_hard": self.nofile_hard,
                       "nginx_rlimit_nofile": min(40000, lim),
                       "nginx_worker_connections": 40000,
                       "haproxy_maxconn": min(20000, (lim - 100) // 2)}
        self.info = self.machine()
        started = datetime.datetime.now(datetime.timezone.utc)
        log("sluice bench (%s mode): %d CPUs, kernel %s, load average %s; work dir %s"
            % (self.mode, self.info["nproc"], self.info["kernel"],
               " ".join("%.2f" % x for x in self.info["loadavg_start"]), self.tmp))
        if self.proxy_cpus:
            log("pinning: proxies on CPU %s, backend and load generators on CPU %s"
                % (",".join(map(str, sorted(self.proxy_cpus))), ",".join(map(str, sorted(self.load_cpus)))))

        self.backend.start()
        self.targets["direct"] = Direct(self).start()
        for name in a.targets:
            if name == "direct":
                continue
            t = {"sluice": Sluice, "nginx": Nginx, "haproxy": Haproxy}[name](self)
            try:
                self.targets[name] = t.start()
            except HarnessError as e:
                self.error("%s failed to start: %s" % (name, e))
        targets = [self.targets[n] for n in a.targets if n in self.targets]
        P = self.p
        sc = a.scenarios
        if "http" in sc:
            if a.wrk:
                self.throughput_scenario(
                    "http", "1. HTTP keep-alive GET (wrk -t1 -c64, %d s): requests/s" % P["http_s"],
                    "req/s", targets, lambda t: self.wrk(t, P["http_s"]))
            else:
                self.notes.append("scenario http skipped: wrk is not installed")
                log("\n== 1. HTTP keep-alive GET: skipped (wrk not installed)")
        if "ws_small" in sc:
            self.throughput_scenario(
                "ws_small", "2. WebSocket echo, 64 connections x 64 B text (%.1f s): messages/s" % P["ws_s"],
                "msg/s", targets, lambda t: self.echo(t, 64, 64, P["ws_s"]))
        if "ws_large" in sc:
            self.throughput_scenario(
                "ws_large", "3. WebSocket echo, 16 connections x 16 KiB text (%.1f s): MB/s (payload one way)"
                % P["large_s"], "MB/s", targets, lambda t: self.echo(t, 16, 16384, P["large_s"]))
        if "ws_connect" in sc:
            self.throughput_scenario(
                "ws_connect", "4. new WebSocket connections (concurrency 16, %.1f s): connections/s"
                % P["connect_s"], "conn/s", targets, lambda t: self.connect(t, P["connect_s"]))
        if "ws_idle" in sc:
            kinds = [n for n in a.targets if n != "direct" and n in self.targets]
            self.idle_scenario(kinds)
        if "filters" in sc and "sluice" in a.targets:
            ftargets = []
            for fname, fl in FILTER_SETS:
                self.start_into(ftargets, Sluice(self, "sluice+" + fname if fl else
                                                 "sluice (no filters)", fl))
            try:
                self.throughput_scenario(
                    "filters", "6. sluice filters: WebSocket echo 64 x 64 B text (%.1f s), ratio to "
                    "sluice without filters" % P["ws_s"], "msg/s", ftargets,
                    lambda t: self.echo(t, 64, 64, P["ws_s"], ["--origin", ORIGIN]),
                    baseline=("sluice (no filters)",))
            finally:
                for t in ftargets:
                    t.stop()

        if "auth" in sc and "sluice" in a.targets:
            self.auth_scenarios()

        if "ratelimit" in sc:
            self.ratelimit_scenario()

        if "tls" in sc:
            kinds = [n for n in a.targets if n in ("sluice", "nginx") and n in self.targets]
            if a.openssl:
                self.tls_scenario(kinds)
            else:
                self.notes.append("scenario tls skipped: the openssl command is not installed")
                log("\n== 9. TLS: skipped (the openssl command is not installed)")

        if "waf" in sc and "sluice" in a.targets:
            self.waf_scenarios()

        if "instructions" in sc:
            self.instructions_scenario([n for n in a.targets if n != "direct" and n in self.targets])

        if "syscalls" in sc:
            self.syscalls_scenario([n for n in a.targets if n != "direct" and n in self.targets])

        self.info["loadavg_end"] = loadavg()
        finished = datetime.datetime.now(datetime.timezone.utc)
        # the summary
        print("\nsluice bench, %s mode, %s; %d CPUs (%s), kernel %s; load average %s at start, %s at end"
              % (self.mode, self.info.get("commit", "?"), self.info["nproc"], self.info.get("cpu", "?"),
                 self.info["kernel"], fmt_load(self.info["loadavg_start"]), fmt_load(self.info["loadavg_end"])))
        v = self.info["versions"]
        print("versions: " + ", ".join("%s %s" % (k, v[k]) for k in ("sluice", "nginx", "haproxy", "wrk")
                                       if v.get(k)))
        if self.proxy_cpus:
            print("pinning: proxies on CPU %s; backend and load generators on CPU %s"
                  % (",".join(map(str, sorted(self.proxy_cpus))), ",".join(map(str, sorted(self.load_cpus)))))
        for sid in self.results:
            if "medians" in self.results[sid]:  # waf_latency is in the notes
                print_table(self.results[sid], out=sys.stdout)
        for n in self.notes:
            print("note: " + n)
        if self.errors:
            print("\nERRORS (%d):" % len(self.errors))
            for e in self.errors:
                print("  - " + e.replace("\n", "\n    "))
        out = {"mode": self.mode, "started": started.isoformat(), "finished": finished.isoformat(),
               "elapsed_s": round((finished - started).total_seconds(), 1), "machine": self.info,
               "params": dict(self.p, idle_connections=self.idle_n), "limits": self.limits,
               "targets": a.targets,
               "scenarios": self.results, "runs": self.runs, "errors": self.errors, "notes": self.notes}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1, sort_keys=False)
        print("\nresults: %s (%.0f s)" % (a.out, out["elapsed_s"]))
        return 1 if (self.errors and a.strict) else 0


WRK_LUA = r'''
-- tests/bench/run.py: print wrk's summary as one JSON line
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%.1f,"p90":%.1f,"p99":%.1f,"max":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
'''


def versions(args):
    def run(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    v = {}
    s = run([args.sluice, "--version"])
    v["sluice"] = re.sub(r"^sluice\s+", "", s.splitlines()[0]) if s else None
    if args.nginx:
        m = re.search(r"nginx/(\S+)", run([args.nginx, "-v"]))
        v["nginx"] = m.group(1) if m else None
    if args.haproxy:
        m = re.search(r"version (\S+)", run([args.haproxy, "-v"]))
        v["haproxy"] = m.group(1) if m else None
    if args.wrk:
        m = re.search(r"wrk (\S+)", run([args.wrk, "-v"]))
        v["wrk"] = m.group(1) if m else None
    return v


# ---------------------------------------------------------------------------------------------
# summaries and tables

def summarize(sid, title, unit, runs, baseline, lower_is_better=False):
    med = {}
    for name, all_rs in runs.items():
        # medians over the clean runs (a run with errors says little about speed); over all of
        # them when none was clean (the errors column says so anyway)
        rs = [r for r in all_rs if not r.get("errors")] or all_rs
        vals = [r.get("value") for r in rs]
        m = {"value": median(vals), "per_core": median([r.get("per_core") for r in rs]),
             "runs": len(all_rs), "clean_runs": sum(1 for r in all_rs if not r.get("errors")),
             "errors": sum(r.get("errors") or 0 for r in all_rs),
             "values": [None if r.get("value") is None else round(r["value"], 3) for r in all_rs]}
        for k in ("p50_ms", "p99_ms", "rss_before_kib", "rss_established_kib", "connections",
                  "operations", "syscalls_per_op", "cycles_per_op", "instructions_per_op"):
            if any(k in r for r in rs):
                m[k] = median([r.get(k) for r in rs])
        cpu = {}
        for k in ("proxy", "backend", "loadgen", "other", "proxy_cpu", "load_cpu"):
            c = median([(r.get("cpu") or {}).get(k) for r in rs])
            if c is not None:
                cpu[k] = round(c, 3)
        if cpu:
            m["cpu"] = cpu
        # saturated in at least half of the runs
        sat = [s for s in ("proxy", "backend", "loadgen", "proxy-cpu", "load-cpu")
               if 2 * sum(s in r.get("saturated", []) for r in rs) >= len(rs)]
        m["saturated"] = sat
        med[name] = m
    for name, m in med.items():
        for b in baseline:
            if b not in med:
                continue
            key = "nginx" if b == "nginx" else "haproxy" if b == "haproxy" else "baseline"
            for field, out in (("value", "x_" + key), ("per_core", "x_%s_per_core" % key)):
                m[out] = paired_ratio(runs[name], runs[b], field, med[name][field], med[b][field])
    return {"id": sid, "title": title, "unit": unit, "medians": med, "baseline": list(baseline),
            "lower_is_better": lower_is_better}


def paired_ratio(runs, base_runs, field, value, base_value):
    """The median over rounds of (run / baseline run of the same round), from the rounds where
    both ran cleanly: a drift in the machine's speed between rounds cancels out. Without such a
    pair, the ratio of the medians."""
    base = {r.get("round"): r for r in base_runs if not r.get("errors") and r.get(field)}
    ratios = [r[field] / base[r.get("round")][field] for r in runs
              if not r.get("errors") and r.get(field) and r.get("round") in base]
    if ratios:
        return round(median(ratios), 3)
    return round(value / base_value, 3) if value and base_value else None


def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if unit in ("MB/s", "KiB/conn") or abs(v) < 100:
        return "%.2f" % v if abs(v) < 100 else "%.0f" % v
    return "{:,.0f}".format(v)


def fmt_pct(v):
    return "-" if v is None else "%d" % round(v * 100)


def fmt_load(l):
    return "/".join("%.2f" % x for x in l)


def fmt_run(r, unit):
    s = "%s %s" % (fmt_num(r.get("value"), unit), unit)
    if r.get("per_core"):
        s += ", %s per core" % fmt_num(r["per_core"], unit)
    if "p99_ms" in r:
        s += ", p50 %.2f p99 %.2f ms" % (r["p50_ms"], r["p99_ms"])
    cpu = r.get("cpu") or {}
    if cpu:
        s += ", cpu%% proxy/load/backend/other %s/%s/%s/%s" % tuple(
            fmt_pct(cpu.get(k)) for k in ("proxy", "loadgen", "backend", "other"))
        if "proxy_cpu" in cpu:
            s += ", busy%% proxy-cpu/load-cpu %s/%s" % (fmt_pct(cpu.get("proxy_cpu")),
                                                      fmt_pct(cpu.get("load_cpu")))
        if r.get("saturated"):
            s += ", saturated: " + ",".join(r["saturated"])
    if "rss_before_kib" in r:
        s += ", RSS %s -> %s KiB" % (r.get("rss_before_kib"), r.get("rss_established_kib"))
    if r.get("errors"):
        s += ", ERRORS %d %s" % (r["errors"], json.dumps(r.get("error_kinds")))
    return s


def print_table(res, out=sys.stderr):
    med = res["medians"]
    unit = res["unit"]
    w = max([len(n) for n in med] + [8])
    lines = ["", res["title"]]
    if res["id"] == "ws_idle":
        hdr = "  %-*s %10s %9s %9s %12s %12s %6s" % (w, "target", "KiB/conn", "x nginx", "x haproxy",
                                                  "RSS before", "RSS estab.", "errors")
        lines.append(hdr)
        for n, m in med.items():
            lines.append("  %-*s %10s %9s %9s %12s %12s %6s" % (
                w, n, fmt_num(m["value"], unit), fmt_x(m.get("x_nginx")), fmt_x(m.get("x_haproxy")),
                fmt_kib(m.get("rss_before_kib")), fmt_kib(m.get("rss_established_kib")),
                m["errors"] or "0"))
    elif res["id"] == "syscalls":
        hdr = "  %-*s %11s %9s %9s %13s %11s %11s %6s" % (
            w, "target", unit, "x nginx", "x haproxy", "syscalls/msg", "cycles/msg", "instr/msg",
            "errors")
        lines.append(hdr)
        for n, m in med.items():
            lines.append("  %-*s %11s %9s %9s %13s %11s %11s %6s" % (
                w, n, fmt_num(m["value"], unit), fmt_x(m.get("x_nginx")), fmt_x(m.get("x_haproxy")),
                fmt_num(m.get("syscalls_per_op"), "x"), fmt_num(m.get("cycles_per_op"), "x"),
                fmt_num(m.get("instructions_per_op"), "x"), m["errors"] or "0"))
    elif res["id"].startswith("instr_"):
        hdr = "  %-*s %16s %9s %9s %12s %6s" % (w, "target", unit, "x nginx", "x haproxy",
                                               "operations", "errors")
        lines.append(hdr)
        for n, m in med.items():
            lines.append("  %-*s %16s %9s %9s %12s %6s" % (
                w, n, fmt_num(m["value"], unit), fmt_x(m.get("x_nginx")), fmt_x(m.get("x_haproxy")),
                fmt_kib(m.get("operations")), m["errors"] or "0"))
    else:
        filt = res["id"] in ("filters", "auth_connect", "auth_http", "waf_benign", "waf_attack",
                             "waf_ws")
        lat = any("p99_ms" in m for m in med.values())
        hdr = "  %-*s %11s %11s" % (w, "target", unit, "per core")
        if filt:
            hdr += " %8s %8s" % ("x base" if res["id"].startswith("waf_") else "x none", "core x")
        else:
            hdr += " %8s %8s %9s" % ("x nginx", "core x", "core x")
        if lat:
            hdr += " %15s" % "p50/p99 ms"
        hdr += "  %-19s %-9s %-18s %s" % ("cpu% prx/ld/be/oth", "busy% P/L", "saturated", "errors")
        lines.append(hdr)
        if not filt:
            lines.append("  %-*s %11s %11s %8s %8s %9s" % (w, "", "", "", "", "nginx", "haproxy"))
        for n, m in med.items():
            row = "  %-*s %11s %11s" % (w, n, fmt_num(m["value"], unit), fmt_num(m["per_core"], unit))
            if filt:
                row += " %8s %8s" % (fmt_x(m.get("x_baseline")), fmt_x(m.get("x_baseline_per_core")))
            else:
                row += " %8s %8s %9s" % (fmt_x(m.get("x_nginx")), fmt_x(m.get("x_nginx_per_core")),
                                         fmt_x(m.get("x_haproxy_per_core")))
            if lat:
                row += " %15s" % ("%.2f/%.2f" % (m["p50_ms"], m["p99_ms"])
                                  if m.get("p99_ms") is not None else "-")
            cpu = m.get("cpu", {})
            row += "  %-19s %-9s %-18s %s" % (
                "/".join(fmt_pct(cpu.get(k)) for k in ("proxy", "loadgen", "backend", "other")),
                "/".join(fmt_pct(cpu.get(k)) for k in ("proxy_cpu", "load_cpu"))
                if "proxy_cpu" in cpu else "-",
                ",".join(m["saturated"]) or "-", m["errors"] or "0")
            lines.append(row)
    if res.get("note"):
        lines.append("  note: " + res["note"])
    out.write("\n".join(lines) + "\n")
    out.flush()


def fmt_x(v):
    return "-" if v is None else "%.2fx" % v


def fmt_kib(v):
    return "-" if v is None else "{:,.0f}".format(v)


# ---------------------------------------------------------------------------------------------

def find_tool(explicit, name, required):
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise HarnessError("%s not found or not executable: %s" % (name, explicit))
        return explicit
    p = shutil.which(name) or (("/usr/sbin/" + name) if os.access("/usr/sbin/" + name, os.X_OK) else None)
    if not p and required:
        raise HarnessError("%s is not installed (packaging/setup.sh bench installs it); "
                           "or pass --skip-missing" % name)
    return p


def binary_has_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Scenarios: " + ", ".join(ALL_SCENARIOS))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="about two minutes: 2 rounds, 2 s runs")
    g.add_argument("--smoke", action="store_true",
                   help="a few seconds: each target and scenario once, tiny durations; errors fail")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"),
                    help="where sluice, sluice_bench_backend and sluice_wsload are (default build-bench)")
    ap.add_argument("--sluice", help="sluice binary (default BUILD_DIR/sluice)")
    ap.add_argument("--backend", help="sluice_bench_backend binary (default BUILD_DIR/...)")
    ap.add_argument("--wsload", help="sluice_wsload binary (default BUILD_DIR/...)")
    ap.add_argument("--nginx", help="nginx binary (default from PATH or /usr/sbin)")
    ap.add_argument("--haproxy", help="haproxy binary (default from PATH or /usr/sbin)")
    ap.add_argument("--wrk", help="wrk binary (default from PATH)")
    ap.add_argument("--valgrind", help="valgrind binary, for `instructions` (default from PATH)")
    ap.add_argument("--perf", help="perf binary, for `syscalls` (default from PATH)")
    ap.add_argument("--relay-probe", help="sluice_relay_probe binary, for `syscalls` (default "
                    "BUILD_DIR/sluice_relay_probe; built when liburing-dev is installed)")
    ap.add_argument("--openssl", help="openssl command, for `tls` (default from PATH)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="comma-separated subset of %s" % ",".join(ALL_TARGETS))
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help="comma-separated subset of %s" % ",".join(ALL_SCENARIOS))
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out nginx/haproxy (targets) and wrk (scenario http) when not installed")
    ap.add_argument("--rounds", type=int, help="repetitions of each scenario (overrides the mode)")
    ap.add_argument("--duration", type=float, help="seconds per run (overrides the mode)")
    ap.add_argument("--idle-connections", type=int, help="N for ws_idle (default: 10,000 or the "
                    "largest the open-file limit allows)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the proxies and the load to separate CPUs")
    ap.add_argument("--out", help="JSON results (default BUILD_DIR/bench-results.json)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any error happened "
                    "(implied by --smoke)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--work-dir", help="create the work directory inside this one and keep it")
    a = ap.parse_args(argv)
    a.strict = a.strict or a.smoke
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for t in a.targets:
        if t not in ALL_TARGETS:
            ap.error("unknown target %r" % t)
    for s in a.scenarios:
        if s not in ALL_SCENARIOS:
            ap.error("unknown scenario %r" % s)
    if "direct" not in a.targets:
        a.targets.insert(0, "direct")
    bd = os.path.abspath(a.build_dir)
    a.sluice = a.sluice or os.path.join(bd, "sluice")
    a.backend = a.backend or os.path.join(bd, "sluice_bench_backend")
    a.wsload = a.wsload or os.path.join(bd, "sluice_wsload")
    a.out = a.out or os.path.join(bd, "bench-results.json")
    for tool in ("sluice", "backend", "wsload"):
        path = getattr(a, tool)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s not found: %s (build it: ninja -C build-bench sluice sluice_bench_backend "
                     "sluice_wsload)" % (tool, path))
    try:
        for tool in ("nginx", "haproxy"):
            want = tool in a.targets
            path = find_tool(getattr(a, tool), tool, want and not a.skip_missing) if want else None
            if want and not path:
                log("note: %s is not installed: target left out" % tool)
                a.targets.remove(tool)
            setattr(a, tool, path)
        uses_wrk = any(s in a.scenarios for s in ("http", "auth", "instructions", "ratelimit",
                                                  "waf"))
        a.wrk = find_tool(a.wrk, "wrk", uses_wrk and not a.skip_missing) if uses_wrk else None
        uses_openssl = "tls" in a.scenarios
        a.openssl = find_tool(a.openssl, "openssl", uses_openssl and not a.skip_missing) \
            if uses_openssl else None
        if "syscalls" in a.scenarios:
            a.perf = find_tool(a.perf, "perf", True)
            probe = a.relay_probe or os.path.join(bd, "sluice_relay_probe")
            a.relay_probe = probe if os.access(probe, os.X_OK) else None
        if "instructions" in a.scenarios:
            a.valgrind = find_tool(a.valgrind, "valgrind", True)
            a.callgrind_control = find_tool(None, "callgrind_control", True)
            if "sluice" in a.targets and binary_has_asan(a.sluice):
                raise HarnessError("%s is built with AddressSanitizer, which does not run under "
                                   "valgrind: leave out the `instructions` scenario or target "
                                   "sluice" % a.sluice)
    except HarnessError as e:
        ap.error(str(e))
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)
    # Ctrl-C: also when started from a non-interactive shell's background job, where SIGINT
    # arrives ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    h = Harness(args)
    code = 2
    try:
        code = h.run()
    except KeyboardInterrupt:
        log("\ninterrupted: stopping every child process")
        code = 130
    except HarnessError as e:
        log("\nbench failed: %s" % e)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
        if args.keep or args.work_dir or (code not in (0,) and code != 130) or h.errors:
            log("work directory kept (configs, logs): %s" % h.tmp)
        else:
            shutil.rmtree(h.tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
