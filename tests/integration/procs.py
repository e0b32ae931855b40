"""Child processes: the one way the tests start them.

- Proc: a child in its own session with PR_SET_PDEATHSIG (it gets SIGTERM if the test process
  dies, even by SIGKILL), stdout and stderr in tmpdir/NAME.stdout and NAME.stderr, optionally a
  "ready ..." line awaited on its stdout, and a bounded stop (SIGTERM, then SIGKILL);
- Backend: backend.py (the HTTP origin) on one or more ports;
- Sluice: the sluice binary running a config built from a spec (config.build) or given as
  text with fixed ports (then rewritten and reloaded by the test); .admin is its admin client;
- run_sluice(): sluice run to completion (--check, --version); run_tool(): curl, openssl and
  node with proxies disabled; run_chromium(): headless Chromium until a page reports;
- sluice_bin(), binary_has_asan(), rss_env(), proc_status(), raise_nofile().

Start processes from the main thread: PR_SET_PDEATHSIG fires when the thread that forked the
child ends.
"""

import functools
import os
import re
import resource
import selectors
import signal
import subprocess
import tempfile
import time

import config
from admin import Admin
from http1 import RawConn
from net import LOCALHOST, can_connect, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SLUICE_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
PYTHON = "/usr/bin/python3"
CURL = "/usr/bin/curl"
CHROMIUM = "/usr/bin/chromium"

SANITIZER_RE = re.compile(
    r"(ERROR: (Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|runtime error:)")


def sluice_bin():
    path = os.environ.get("SLUICE_BIN") or os.path.join(SOURCE_DIR, "build", "sluice")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError("sluice binary not found or not executable (set SLUICE_BIN): %s" % path)
    return path


@functools.lru_cache(maxsize=None)
def binary_has_asan(path=None):
    """True when the binary (default: sluice) was linked with AddressSanitizer."""
    try:
        with open(path or sluice_bin(), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"AddressSanitizer" in data


def rss_env():
    """Environment for a sluice whose RSS a test measures. ASan's allocator keeps freed memory
    in a quarantine (256 MiB by default) to catch use-after-free, so under ASan RSS grows with
    every free until the quarantine is full, whatever sluice does. When the binary is
    ASan-instrumented and ASAN_OPTIONS sets no quarantine: quarantine_size_mb=
    SLUICE_ASAN_QUARANTINE_MB (default 0). None otherwise."""
    if not binary_has_asan():
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" in opts:
        return None
    q = os.environ.get("SLUICE_ASAN_QUARANTINE_MB", "0")
    extra = "quarantine_size_mb=%s:thread_local_quarantine_size_kb=0" % q
    return {"ASAN_OPTIONS": (opts + ":" + extra) if opts else extra}


def proc_status(pid):
    """VmRSS and VmHWM of pid, in KiB (dict with keys 'VmRSS', 'VmHWM')."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def raise_nofile(want=8192):
    """Raises the soft RLIMIT_NOFILE towards `want` (children started later inherit it).
    Returns the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Loaded now: between fork and exec the child must not import anything (another thread of the
# test may have held the import lock at the fork).
try:
    import ctypes
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL, e.g. a
    ctest timeout), so no child outlives its test."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def env_without_proxy(**extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra)
    return env


def python_child_env():
    """The environment of a Python child that imports this library: its modules' bytecode is
    cached outside the source tree (tests start backend.py hundreds of times; compiling them
    each time would cost more than the rest of its start)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(),
                                              "sluice-it-pycache-%d" % os.getuid())
    return env


class Proc:
    """A child process (see the module doc). env: its whole environment (None: ours).
    ready: when set, spawn() waits (bounded) for a stdout line starting with it and keeps the
    line in .ready_line."""

    def __init__(self, tmpdir, name, argv, env=None, cwd=None, ready=None, ready_timeout=15.0):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        self.proc = None
        self.pid = None
        self.returncode = None
        self.killed = False  # needed SIGKILL at stop()
        self.stopped_by_test = False
        self.ready_line = None

    def spawn(self):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE if self.ready else out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True, env=self.env, cwd=self.cwd,
                preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self.stopped_by_test = False
        self.returncode = None
        if self.ready:
            self._await_ready()
        return self

    def _await_ready(self):
        line = b""
        deadline = time.monotonic() + self.ready_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if sel.select(timeout=max(0.01, deadline - time.monotonic())):
                    data = os.read(self.proc.stdout.fileno(), 4096)
                    if not data:
                        break
                    line += data
        with open(self.stdout_path, "ab") as out:
            out.write(line)
        if not line.startswith(self.ready.encode()):
            self.stop()
            raise RuntimeError("%s did not start: %r\n%s" % (self.name, line, self.stderr()))
        self.ready_line = line.decode().strip()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """The exit code, or None if the process is still running after timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.stopped_by_test = True
        return self.returncode

    def kill(self):
        """SIGKILL (no goodbye to its peers beyond the kernel's)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self, timeout=10.0, group=False):
        """SIGTERM, bounded wait, SIGKILL fallback; group: then SIGKILL whatever is left of its
        process group. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_by_test = True
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=10)
        if group:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.returncode = self.proc.returncode
        return self.returncode

    def stderr(self):
        return _read(self.stderr_path)

    def stdout(self):
        return _read(self.stdout_path)


class Backend(Proc):
    """backend.py on one or more ports (0: a free one; the actual ports in .ports, .port is the
    first)."""

    def __init__(self, tmpdir, name="backend", nports=1, args=(), ports=None):
        ports = list(ports) if ports is not None else [0] * nports
        argv = [PYTHON, os.path.join(HERE, "backend.py")]
        argv += sum((["--port", str(p)] for p in ports), []) + list(args)
        super().__init__(tmpdir, name, argv, env=python_child_env(), ready="ready ",
                         ready_timeout=10.0)
        self.spawn()
        self.ports = [int(x) for x in self.ready_line.split()[1:]]
        self.port = self.ports[0]
        self.address = "%s:%d" % (LOCALHOST, self.port)

    @property
    def addresses(self):
        return ["%s:%d" % (LOCALHOST, p) for p in self.ports]

    def count(self):
        """The backend's own view (/count), asked directly, not through sluice."""
        c = RawConn(self.port, timeout=5)
        try:
            return c.request("GET", "/count", headers=[("Connection", "close")]).json()
        finally:
            c.close()


class SluiceStartError(Exception):
    pass


class Sluice(Proc):
    """The sluice binary. Either spec (see config.build; fresh ports at each start, a retry
    when one was taken meanwhile, the access log in tmpdir/NAME-access.log unless the spec says
    otherwise) or text with admin_port and ports ({listener name: port}) that the text uses."""

    def __init__(self, tmpdir, spec=None, name="sluice", env=None, text=None, admin_port=None,
                 ports=None):
        self.tmpdir = tmpdir
        self.spec = spec or {}
        self.text = text
        self.config_path = os.path.join(tmpdir, name + ".toml")
        self.access_log = os.path.join(tmpdir, name + "-access.log")
        self.admin_port = admin_port
        self.ports = dict(ports or {})
        full_env = dict(os.environ)
        full_env.update(env or {})
        super().__init__(tmpdir, name, [sluice_bin(), "--config", self.config_path],
                         env=full_env, cwd=tmpdir)

    @property
    def port(self):
        return self.ports.get("public", next(iter(self.ports.values())))

    @property
    def admin(self):
        return Admin(self.admin_port)

    def _render(self):
        if self.text is not None:
            config.write_file(self.config_path, self.text, atomic=False)
            return
        spec = dict(self.spec)
        # SLUICE_TEST_WORKERS: run every test with more workers (the ThreadSanitizer run uses 2).
        defaults = {"workers": int(os.environ.get("SLUICE_TEST_WORKERS", "1")),
                    "access_log": self.access_log}
        spec["server"] = dict(defaults, **self.spec.get("server", {}))
        if spec["server"]["access_log"] not in (None, "stdout", "off"):
            self.access_log = spec["server"]["access_log"]
        text, self.admin_port, self.ports = config.build(spec)
        config.write_file(self.config_path, text, atomic=False)

    def start(self, wait_ready=True, attempts=3):
        if self.text is not None:
            attempts = 1
        for attempt in range(attempts):
            self._render()
            self.spawn()
            if not wait_ready:
                return
            try:
                self.wait_ready()
                return
            except SluiceStartError:
                err = self.stderr() + self.stdout()
                if attempt + 1 < attempts and re.search(r"(?i)in use|EADDRINUSE", err):
                    self.stop()
                    continue
                raise

    def wait_ready(self, timeout=10.0):
        """Waits until every listener accepts (the admin listener: wait_admin())."""
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise SluiceStartError("sluice exited with %s before listening" % self.proc.returncode)
            pending = {p for p in pending if not can_connect(p)}
            if not pending:
                break
            if time.monotonic() > deadline:
                raise SluiceStartError("sluice not accepting on %s after %.0fs" % (sorted(pending), timeout))
            time.sleep(0.02)

    def wait_admin(self, timeout=5.0):
        if not wait_until(lambda: can_connect(self.admin_port) or not self.alive(), timeout) \
                or not self.alive():
            raise SluiceStartError("admin listener 127.0.0.1:%d not accepting" % self.admin_port)

    def write_config(self, text, atomic=True):
        config.write_file(self.config_path, text, atomic=atomic)

    def connect(self, port=None, timeout=5.0):
        return RawConn(port or self.port, timeout=timeout)

    def request(self, method, target, headers=None, body=None, host="localhost", timeout=5.0, **kw):
        """One request on a fresh connection (closed afterwards)."""
        c = self.connect(timeout=timeout)
        try:
            return c.request(method, target, headers=headers, body=body, host=host, timeout=timeout,
                             **kw)
        finally:
            c.close()

    def url(self, path, listener="public"):
        return "http://%s:%d%s" % (LOCALHOST, self.ports[listener], path)

    def rss(self):
        return proc_status(self.pid)

    def config_text(self):
        return _read(self.config_path)

    def access_log_lines(self):
        return [l for l in _read(self.access_log).splitlines() if l.strip()]

    def sanitizer_report(self):
        text = self.stderr() + self.stdout()
        m = SANITIZER_RE.search(text)
        return text[max(0, m.start() - 200):m.start() + 4000] if m else None


# ---------------------------------------------------------------------------------------------
# Processes run to completion


def run_sluice(args, timeout=20):
    """sluice ARGS run to completion (CompletedProcess, output as bytes)."""
    return subprocess.run([sluice_bin()] + list(args), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def run_tool(argv, timeout=60, input=None, cwd=None):
    """A client tool (curl, openssl, node) run to completion with proxies disabled."""
    return subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input, cwd=cwd,
                          env=env_without_proxy(), preexec_fn=_die_with_parent)


def run_curl(args, timeout=60, input=None):
    """Runs /usr/bin/curl with proxies disabled; returns CompletedProcess (bytes)."""
    return run_tool([CURL, "--noproxy", "*", "-sS"] + list(args), timeout=timeout, input=input)


def run_chromium(tmpdir, url, flags=(), done=None, timeout=45.0):
    """Loads url in headless Chromium until done() returns something truthy or the browser
    exits (bounded by timeout); then stops its whole process group. Returns (done()'s last
    value, exit code or None, the browser's log)."""
    profile = os.path.join(tmpdir, "chromium-profile")
    os.makedirs(profile, exist_ok=True)
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--no-proxy-server", "--user-data-dir=" + profile] + list(flags) + [url]
    browser = Proc(tmpdir, "chromium", argv, env=env_without_proxy(HOME=tmpdir)).spawn()
    result = None
    try:
        result = wait_until(lambda: done() or not browser.alive(), timeout, interval=0.1)
    finally:
        code = browser.proc.poll()
        # SIGTERM to the browser (it shuts down and reaps its helpers), then SIGKILL to whatever
        # is left of the process group it leads.
        browser.stop(timeout=10, group=True)
    if result is True:  # the browser exited first
        result = done()
    return result, code, browser.stderr() + browser.stdout()
