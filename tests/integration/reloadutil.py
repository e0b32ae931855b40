"""Helpers for the live-reload, admin API, metrics and shutdown tests (test_reload.py,
test_admin.py, test_shutdown.py).

- ConfigSluice: sluice started from a config *text* the test writes (and rewrites) itself, with
  every port chosen up front, so that a reload keeps the admin listener where it is;
- config(): a complete config text (named routes, explicit ports) from plain dicts;
- Admin: a small client for the admin listener (status, reload, metrics, healthz) on fresh
  connections; Metrics: /metrics parsed by prometheus_client's own text parser;
- WsFleet: many WebSockets (python websockets, asyncio) held open in one background thread,
  with a close watcher on each and an echo check;
- HttpLoad: a few client threads sending requests through sluice and recording every failure;
- tcp_established(): established connections to a port, from /proc/net/tcp.

Only 127.0.0.1. Every loop and wait is bounded in count and time.
"""

import asyncio
import os
import resource
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import LOCALHOST, RawConn, Table, render_config, wait_until


def raise_nofile(want=8192):
    """Raises the soft RLIMIT_NOFILE towards `want` (children started later inherit it).
    Returns the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_env():
    """Environment for a sluice whose RSS a test measures. ASan's allocator keeps freed memory
    in a quarantine (256 MiB by default) to catch use-after-free, so under ASan RSS grows with
    every free until the quarantine is full, whatever sluice does. As in test_memory.py: when
    the binary is ASan-instrumented and ASAN_OPTIONS sets no quarantine, use
    quarantine_size_mb=SLUICE_ASAN_QUARANTINE_MB (default 0)."""
    if not harness.binary_has_asan():
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" in opts:
        return None
    q = os.environ.get("SLUICE_ASAN_QUARANTINE_MB", "0")
    extra = "quarantine_size_mb=%s:thread_local_quarantine_size_kb=0" % q
    return {"ASAN_OPTIONS": (opts + ":" + extra) if opts else extra}


# ---------------------------------------------------------------------------------------------
# Config text


def addr(port):
    return "%s:%d" % (LOCALHOST, port)


def route(name, pool, path_prefix="/", listener="public", host="*", websocket=False, **extra):
    r = {"name": name, "listener": listener, "host": host, "path_prefix": path_prefix,
         "pool": pool}
    r.update(extra)
    if websocket:
        r["websocket"] = Table(enabled=True)
    return r


def pool(name, addresses, drain_timeout="1s", **extra):
    p = {"name": name,
         "backends": [a if isinstance(a, dict) else {"address": a} for a in addresses],
         "drain_timeout": drain_timeout}
    p.update(extra)
    return p


def config(admin_port, listeners, pools, routes, server=None, admin=None, extra="", head=""):
    """A complete config. listeners: {name: port} (ordered) or a list of listener dicts.
    head: raw TOML put before every table (top-level keys such as include)."""
    srv = {"workers": 2, "access_log": "off", "shutdown_timeout": "5s"}
    srv.update(server or {})
    adm = {"listen": addr(admin_port)}
    adm.update(admin or {})
    if isinstance(listeners, dict):
        listeners = [{"name": n, "listen": addr(p)} for n, p in listeners.items()]
    text = render_config(srv, adm, listeners, routes, pools, extra)
    return (head + "\n" if head else "") + text


def position(text, needle, occurrence=0, offset=0):
    """(line, column), 1-based, of the occurrence-th `needle` in text, plus offset columns."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col + offset


def write_file(path, text, atomic=True):
    """Writes text to path; atomic=True writes a sibling and renames it over path (how config
    management tools replace files), so a watcher never sees half a file."""
    if atomic:
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".new")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)


class ConfigSluice(harness.Sluice):
    """sluice running the config text the test gave (written to .config_path). The test chose
    every port: admin_port and ports ({listener name: port}) are what the text says."""

    def __init__(self, tmpdir, text, admin_port, ports, name="sluice", env=None):
        self.initial_text = text
        self.fixed_admin_port = admin_port
        self.fixed_ports = dict(ports)
        super().__init__(tmpdir, {}, name=name, env=env, start=False)
        self.admin = Admin(admin_port)

    def _render(self):
        self.admin_port = self.fixed_admin_port
        self.ports = dict(self.fixed_ports)
        self.port = self.ports.get("public", next(iter(self.ports.values())))
        write_file(self.config_path, self.initial_text, atomic=False)
        return self.initial_text

    def write_config(self, text, atomic=True):
        write_file(self.config_path, text, atomic=atomic)


def start_config_sluice(testcase, text, admin_port, ports, name=None, env=None):
    """Starts a ConfigSluice registered with a harness.SluiceTestCase (stopped at cleanup, logs
    printed on failure); waits for its listeners and its admin listener."""
    s = ConfigSluice(testcase.tmpdir, text, admin_port, ports,
                     name=name or "sluice%d" % len(testcase.sluices), env=env)
    testcase.sluices.append(s)
    s.start(wait_ready=True, attempts=1)
    s.wait_admin()
    return s


# ---------------------------------------------------------------------------------------------
# Admin API client


class Metrics:
    """/metrics text parsed by prometheus_client. Samples are keyed by sample name (with its
    _total/_bucket/_count/_sum suffix) and the full label set."""

    def __init__(self, text):
        self.text = text
        self.families = {}
        self.samples = {}
        for fam in text_string_to_metric_families(text):
            self.families[fam.name] = fam
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, default=0.0, **labels):
        """The value of the sample with exactly these labels (default when absent)."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples

    def matching(self, name, **labels):
        """{frozenset(labels): value} of samples named `name` whose labels include `labels`."""
        want = set(labels.items())
        return {k[1]: v for k, v in self.samples.items() if k[0] == name and want <= k[1]}

    def total(self, name, **labels):
        return sum(self.matching(name, **labels).values())


class Admin:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, headers=None, body=None, timeout=15.0):
        c = RawConn(self.port, timeout=timeout)
        try:
            return c.request(method, path, headers=headers, body=body, timeout=timeout)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, token=None, **kw):
        headers = list(kw.pop("headers", None) or [])
        if token is not None:
            headers.append(("Authorization", "Bearer " + token))
        return self.request("POST", path, headers=headers, body=kw.pop("body", b""), **kw)

    def status(self):
        r = self.get("/api/status")
        if r.status != 200:
            raise AssertionError("GET /api/status answered %s: %r" % (r.status, r.body[:300]))
        return r.json()

    def generation(self):
        return self.status()["config"]["generation"]

    def reload(self, token=None):
        """(HTTP status, parsed JSON body) of POST /api/reload."""
        r = self.post("/api/reload", token=token)
        try:
            body = r.json()
        except ValueError:
            body = {"unparsable": r.body.decode("utf-8", "replace")}
        return r.status, body

    def metrics(self):
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics answered %s" % r.status)
        return Metrics(r.body.decode("utf-8"))

    def healthz(self, timeout=5.0):
        return self.get("/healthz", timeout=timeout)

    def wait_generation(self, at_least, timeout=5.0):
        """Polls /api/status until config.generation >= at_least; returns the last status."""
        last = [None]

        def check():
            last[0] = self.status()
            return last[0]["config"]["generation"] >= at_least
        wait_until(check, timeout, interval=0.05)
        return last[0]

    def wait_metric(self, predicate, timeout=5.0):
        """Polls /metrics until predicate(Metrics) is true; returns the last Metrics."""
        last = [None]

        def check():
            last[0] = self.metrics()
            return predicate(last[0])
        wait_until(check, timeout, interval=0.05)
        return last[0]


# ---------------------------------------------------------------------------------------------
# /proc


def tcp_established(remote_port):
    """Number of ESTABLISHED IPv4 TCP sockets (in this network namespace) whose remote end is
    127.0.0.1:remote_port, i.e. client-side connections to that port."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, st = parts[2], parts[3]
            ip, port = rem.split(":")
            if st == "01" and int(port, 16) == remote_port and ip == "0100007F":
                n += 1
    return n


def vm_rss_kib(pid):
    return harness.proc_status(pid)["VmRSS"]


# ---------------------------------------------------------------------------------------------
# HTTP load


class HttpLoad:
    """`threads` client threads, each sending GET path?t=T&n=N on a keep-alive connection to
    127.0.0.1:port (a new connection every `per_connection` requests), pausing `pause` seconds
    between requests. Every request must get a 200 whose JSON echoes the target; anything else
    is recorded in .failures. Threads stop at stop() or after max_seconds."""

    def __init__(self, port, path="/echo/load", threads=4, per_connection=10, pause=0.002,
                 max_seconds=120.0, check=None):
        self.port = port
        self.path = path
        self.per_connection = per_connection
        self.pause = pause
        self.max_seconds = max_seconds
        self.check = check
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.connections = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=20.0):
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _fail(self, what):
        with self.lock:
            self.failures.append(what)

    def _run(self, tid):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        used = 0
        conn = None
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if conn is None or used >= self.per_connection:
                if conn is not None:
                    conn.close()
                used = 0
                try:
                    conn = RawConn(self.port, timeout=10.0)
                except OSError as e:
                    self._fail("thread %d request %d: connect: %r" % (tid, n, e))
                    conn = None
                    n += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.connections += 1
            target = "%s?t=%d&n=%d" % (self.path, tid, n)
            n += 1
            used += 1
            try:
                r = conn.request("GET", target, timeout=10.0)
                problem = None
                if r.status != 200:
                    problem = "status %s" % r.status
                else:
                    body = r.json()
                    if body.get("target") != target:
                        problem = "backend saw %r" % body.get("target")
                    elif self.check is not None:
                        problem = self.check(body)
                if problem:
                    self._fail("thread %d %s: %s (%r)" % (tid, target, problem, r))
                else:
                    with self.lock:
                        self.ok += 1
                if "close" in r.connection_tokens():
                    conn.close()
                    conn = None
            except Exception as e:  # every failure counts; the connection is replaced
                self._fail("thread %d %s: %r" % (tid, target, e))
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------------------------
# Many WebSockets in one asyncio loop


class WsFleet:
    """n WebSocket clients (python websockets) to ws://127.0.0.1:port/path-i, held open by an
    asyncio loop in a background thread. A watcher per connection records when and how it
    closed (.closed: {index: (code, reason, monotonic time)}). chatter() sends messages on the
    connections round robin while the test does something else, and checks every echo."""

    def __init__(self, port, n, path="/ws/fleet", open_batch=50, open_timeout=20.0):
        import websockets  # Debian python3-websockets
        self.websockets = websockets
        self.port = port
        self.n = n
        self.path = path
        self.open_batch = open_batch
        self.open_timeout = open_timeout
        self.conns = []
        self.closed = {}
        self.chat_ok = 0
        self.chat_failures = []
        self.loop = asyncio.new_event_loop()
        self._stop_chatter = None
        self._chatter_future = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- opening

    async def _open_one(self, i):
        uri = "ws://%s:%d%s-%d" % (LOCALHOST, self.port, self.path, i)
        ws = await asyncio.wait_for(
            self.websockets.connect(uri, ping_interval=None, close_timeout=2, max_size=None,
                                    open_timeout=None), self.open_timeout)
        return ws

    async def _watch(self, i, ws):
        await ws.wait_closed()
        self.closed[i] = (ws.close_code, ws.close_reason, time.monotonic())

    async def _open_all(self):
        errors = []
        for start in range(0, self.n, self.open_batch):
            idx = list(range(start, min(self.n, start + self.open_batch)))
            results = await asyncio.gather(*(self._open_one(i) for i in idx),
                                           return_exceptions=True)
            for i, r in zip(idx, results):
                if isinstance(r, BaseException):
                    errors.append((i, repr(r)))
                    self.conns.append(None)
                else:
                    self.conns.append(r)
                    self.loop.create_task(self._watch(i, r))
        return errors

    def open(self, timeout=120.0):
        """Opens all n; returns the list of (index, error) of those that failed to open."""
        return self._run(self._open_all(), timeout)

    # -- echo checks

    async def _echo(self, i, tag, timeout):
        ws = self.conns[i]
        if ws is None:
            return "never opened"
        msg = "%s:%d:%s" % (tag, i, "x" * (i % 37))
        try:
            await asyncio.wait_for(ws.send(msg), timeout)
            got = await asyncio.wait_for(ws.recv(), timeout)
        except Exception as e:
            return "no echo: %r (close %s %r)" % (e, ws.close_code, ws.close_reason)
        if got != msg:
            return "wrong echo %r for %r" % (got[:80], msg[:80])
        return None

    async def _echo_all(self, tag, timeout, batch):
        problems = {}
        for start in range(0, len(self.conns), batch):
            idx = range(start, min(len(self.conns), start + batch))
            res = await asyncio.gather(*(self._echo(i, tag, timeout) for i in idx))
            for i, p in zip(idx, res):
                if p:
                    problems[i] = p
        return problems

    def echo_all(self, tag="final", timeout=10.0, batch=100):
        """{index: problem} for every connection that did not echo a message back."""
        return self._run(self._echo_all(tag, timeout, batch), timeout * (self.n // batch + 2))

    # -- background chatter

    async def _chatter(self, stop, pause):
        i = 0
        count = 0
        while not stop.is_set() and count < 100000:
            k = i % len(self.conns)
            i += 1
            if k in self.closed or self.conns[k] is None:
                continue
            p = await self._echo(k, "chat%d" % count, 10.0)
            count += 1
            if p:
                self.chat_failures.append((k, p))
            else:
                self.chat_ok += 1
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except asyncio.TimeoutError:
                pass

    def start_chatter(self, pause=0.02):
        async def make():
            return asyncio.Event()
        self._stop_chatter = self._run(make(), 5)
        self._chatter_future = asyncio.run_coroutine_threadsafe(
            self._chatter(self._stop_chatter, pause), self.loop)

    def stop_chatter(self, timeout=15.0):
        if self._stop_chatter is None:
            return
        self.loop.call_soon_threadsafe(self._stop_chatter.set)
        self._chatter_future.result(timeout)
        self._stop_chatter = None

    # -- teardown

    async def _close_all(self):
        await asyncio.gather(*(ws.close() for ws in self.conns if ws is not None),
                             return_exceptions=True)

    def close(self, timeout=30.0):
        try:
            if self._stop_chatter is not None:
                self.stop_chatter()
            self._run(self._close_all(), timeout)
        except Exception:
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
