"""The package: the install rules lay out the files the .deb ships, CPack builds a .deb from them
(dpkg-deb reads its control fields, conffiles, scripts and contents), and sluice runs from the
installed tree exactly as the systemd unit runs it: ExecStartPre, ExecStart with a
NOTIFY_SOCKET this test listens on (READY=1), ExecReload (RELOADING=1, then READY=1), the
logrotate snippet's postrotate command (the log is reopened), SIGTERM (STOPPING=1, exit 0).
Also --help and --version, the man pages rendered by man -l, and systemd-analyze verify.

It uses the build tree of the binary under test ($SLUICE_BIN's directory): `cmake --install`
and `cpack` on it take seconds, where a release build for the real package takes minutes
(packaging/deb.sh does that, with lintian).

    SLUICE_BIN=$PWD/build-asan/sluice SLUICE_SOURCE_DIR=$PWD /usr/bin/python3 \\
        tests/integration/test_package.py -v
"""

import glob
import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import LOCALHOST, RecordingBackend, free_port, sluice_bin, wait_until  # noqa: E402

PACKAGED_CONFIG = "/etc/sluice/sluice.toml"
PACKAGED_BINARY = "/usr/sbin/sluice"


def build_dir():
    return os.path.dirname(sluice_bin())


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def read(path):
    with open(path) as f:
        return f.read()


def unit_lines(path):
    """The [Service] section's settings: name -> list of values (Exec* lines repeat)."""
    out = {}
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            out.setdefault((section, key), []).append(value)
    return out


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket; messages parsed into dicts."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []

    def wait(self, key, value="1", timeout=30.0):
        """The first message (after those already taken) with key=value; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append(fields)
            if fields.get(key) == value:
                return fields
        return None

    def close(self):
        self.sock.close()


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("cmake", "cpack", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is not installed (Debian: apt-get install %s)" % (
                    tool, "dpkg" if tool == "dpkg-deb" else "cmake"))
        build = build_dir()
        if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
            raise unittest.SkipTest("SLUICE_BIN is not in a CMake build tree: %s" % build)
        cls.tmp = tempfile.mkdtemp(prefix="sluice-pkg-")
        cls.root = os.path.join(cls.tmp, "root")
        # The man pages are an ALL target; a tree built with `ninja sluice` alone lacks them.
        p = run(["cmake", "--build", build, "--target", "sluice_manpages"])
        assert p.returncode == 0, p.stdout + p.stderr
        p = run(["cmake", "--install", build, "--prefix", cls.root])
        assert p.returncode == 0, p.stdout + p.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, installed):
        return os.path.join(self.root, installed.lstrip("/"))

    # ---- the layout ----------------------------------------------------------------------------

    def test_install_layout(self):
        for f in (PACKAGED_BINARY, PACKAGED_CONFIG, "/etc/logrotate.d/sluice",
                  "/lib/systemd/system/sluice.service", "/usr/share/man/man8/sluice.8.gz",
                  "/usr/share/man/man5/sluice.toml.5.gz",
                  "/usr/share/bash-completion/completions/sluice",
                  "/usr/share/doc/sluice/copyright", "/usr/share/doc/sluice/changelog.gz",
                  "/usr/share/doc/sluice/packaging.md", "/usr/share/doc/sluice/configuration.md",
                  "/usr/share/doc/sluice/examples/full.toml",
                  "/usr/share/doc/sluice/examples/demo.toml",
                  "/usr/share/doc/sluice/examples/edge-rules.toml"):
            self.assertTrue(os.path.isfile(self.path(f)), f)
        self.assertTrue(os.stat(self.path(PACKAGED_BINARY)).st_mode & stat.S_IXUSR)
        # The examples check (full.toml names certificates make-certs.sh would create).
        p = run([self.path(PACKAGED_BINARY), "--check",
                 self.path("/usr/share/doc/sluice/examples/demo.toml")])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_deb_from_cpack(self):
        out = os.path.join(self.tmp, "cpack")
        p = run(["cpack", "-G", "DEB", "-B", out, "--config",
                 os.path.join(build_dir(), "CPackConfig.cmake")], timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        debs = glob.glob(os.path.join(out, "sluice_*.deb"))
        self.assertEqual(len(debs), 1, os.listdir(out))
        info = run(["dpkg-deb", "--info", debs[0]]).stdout
        depends = re.search(r"^ Depends: (.*)$", info, re.M)
        self.assertIsNotNone(depends, info)
        # From dpkg-shlibdeps: what `apt-get install ./sluice_*.deb` pulls.
        for lib in ("libuv1", "libssl3", "libmodsecurity3", "libbrotli1", "zlib1g", "adduser"):
            self.assertIn(lib, depends.group(1))
        for script in ("postinst", "prerm", "postrm", "conffiles"):
            self.assertRegex(info, r"\b%s\b" % script)
        p = run(["dpkg-deb", "-I", debs[0], "conffiles"])
        self.assertEqual(p.stdout.split(), [PACKAGED_CONFIG, "/etc/logrotate.d/sluice"])
        p = run(["dpkg-deb", "-I", debs[0], "postinst"])
        self.assertIn("adduser --system", p.stdout)
        self.assertIn("/var/log/sluice", p.stdout)
        contents = run(["dpkg-deb", "--contents", debs[0]]).stdout
        for f in ("./usr/sbin/sluice", "./etc/sluice/sluice.toml", "./etc/logrotate.d/sluice",
                  "./lib/systemd/system/sluice.service", "./usr/share/man/man8/sluice.8.gz",
                  "./usr/share/bash-completion/completions/sluice"):
            self.assertIn(f, contents)
        # Everything root's: the files are not the service account's to change.
        for line in contents.splitlines():
            self.assertIn(" root/root ", line)

    # ---- the command line ----------------------------------------------------------------------

    def test_help_and_version(self):
        binary = self.path(PACKAGED_BINARY)
        p = run([binary, "--help"])
        self.assertEqual(p.returncode, 0)
        for word in ("--config", "--check", "--upgrade", "--log-level", "HUP", "USR1",
                     "TERM, INT", "GET  /healthz", "GET  /metrics", "GET  /api/status",
                     "POST /api/reload", "/drain", "/undrain", "man 8 sluice",
                     "man 5 sluice.toml", "/usr/share/doc/sluice/"):
            self.assertIn(word, p.stdout)
        p = run([binary, "--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^sluice \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}|unknown)\)")
        for lib in ("compiler: ", "libuv ", "OpenSSL ", "zlib ", "brotli ", "libmodsecurity ",
                    "llhttp "):
            self.assertIn(lib, p.stdout)
        self.assertRegex(p.stdout, r"libuv\s+1\.\d+")
        self.assertRegex(p.stdout, r"OpenSSL\s+OpenSSL 3\.")

    def test_man_pages_render(self):
        self.assertIsNotNone(shutil.which("man"), "man is not installed (Debian: man-db)")
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANROFFSEQ="")
        for page, words in (("/usr/share/man/man8/sluice.8.gz", ("SIGNALS", "--check",
                                                                 "ADMIN ENDPOINTS")),
                            ("/usr/share/man/man5/sluice.toml.5.gz",
                             ("shutdown_timeout", "[server]", "max_connections"))):
            p = run(["man", "--warnings", "-E", "UTF-8", "-l", self.path(page)], env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr.strip(), "", "groff warnings")
            for w in words:
                self.assertIn(w, p.stdout, page)

    def test_systemd_analyze_verify(self):
        self.assertIsNotNone(shutil.which("systemd-analyze"),
                             "systemd-analyze is not installed (Debian: systemd)")
        p = run(["systemd-analyze", "verify", "--man=no",
                 self.path("/lib/systemd/system/sluice.service")])
        # The binary is where the package puts it only once the package is installed.
        problems = [line for line in (p.stdout + p.stderr).splitlines()
                    if line.strip() and "/usr/sbin/sluice is not executable" not in line]
        self.assertEqual(problems, [])

    # ---- the unit's command lines ------------------------------------------------------------

    def test_unit_lifecycle(self):
        unit = unit_lines(self.path("/lib/systemd/system/sluice.service"))
        svc = "[Service]"
        self.assertEqual(unit[(svc, "Type")], ["notify"])
        self.assertEqual(unit[(svc, "KillMode")], ["mixed"])
        self.assertEqual(unit[(svc, "User")], ["sluice"])
        self.assertIn("CAP_NET_BIND_SERVICE", unit[(svc, "AmbientCapabilities")][0])
        self.assertEqual(unit[(svc, "ReadWritePaths")], ["/var/log/sluice"])
        for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
            self.assertEqual(unit[(svc, key)], ["yes"], key)
        self.assertEqual(unit[(svc, "ProtectSystem")], ["strict"])
        self.assertGreaterEqual(int(unit[(svc, "LimitNOFILE")][0]), 1 << 20)
        # The stop timeout outlasts the drain of the packaged config.
        packaged = read(self.path(PACKAGED_CONFIG))
        shutdown = int(re.search(r'^shutdown_timeout = "(\d+)s"', packaged, re.M).group(1))
        self.assertGreater(int(unit[(svc, "TimeoutStopSec")][0].rstrip("s")), shutdown)

        # The packaged config with only what this machine needs changed: free ports for the
        # listener and the admin API, a backend of this test's, a log directory of its own.
        tmp = tempfile.mkdtemp(prefix="unit-", dir=self.tmp)
        logs = os.path.join(tmp, "log")
        os.mkdir(logs)
        backend = RecordingBackend()
        self.addCleanup(backend.stop)
        port, admin = free_port(), free_port()
        config = packaged
        for old, new in (('"0.0.0.0:80"', '"%s:%d"' % (LOCALHOST, port)),
                         ('"127.0.0.1:9901"', '"%s:%d"' % (LOCALHOST, admin)),
                         ('"127.0.0.1:8080"', '"%s"' % backend.address),
                         ('"/var/log/sluice/', '"%s/' % logs)):
            self.assertIn(old, config)
            config = config.replace(old, new)
        config_path = os.path.join(tmp, "sluice.toml")
        with open(config_path, "w") as f:
            f.write(config)

        def command(line, pid=None):
            """A unit's Exec line as systemd would run it, from the installed tree."""
            argv = shlex.split(line.lstrip("-@+!:"))
            out = []
            for a in argv:
                a = a.replace(PACKAGED_BINARY, self.path(PACKAGED_BINARY))
                a = a.replace(PACKAGED_CONFIG, config_path)
                if pid is not None:
                    a = a.replace("$MAINPID", str(pid))
                out.append(a)
            return out

        for line in unit[(svc, "ExecStartPre")]:
            p = run(command(line))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

        notify = NotifySocket(os.path.join(tmp, "notify"))
        self.addCleanup(notify.close)
        stderr = open(os.path.join(tmp, "sluice.stderr"), "w+")
        self.addCleanup(stderr.close)
        (start,) = unit[(svc, "ExecStart")]
        proc = subprocess.Popen(command(start), stdin=subprocess.DEVNULL, stdout=stderr,
                                stderr=stderr, env=dict(os.environ, NOTIFY_SOCKET=notify.path),
                                start_new_session=True)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.addCleanup(stop)

        def log():
            stderr.seek(0)
            return stderr.read()

        ready = notify.wait("READY")
        self.assertIsNotNone(ready, "no READY=1: %s\n%s" % (notify.messages, log()))
        self.assertIn("generation 1", ready.get("STATUS", ""))

        def get(path):
            c = http.client.HTTPConnection(LOCALHOST, port, timeout=5)
            try:
                c.request("GET", path)
                r = c.getresponse()
                return r.status, r.read()
            finally:
                c.close()

        access_log = os.path.join(logs, "access.log")
        self.assertEqual(get("/before-rotation"), (200, b"/before-rotation"))
        self.assertTrue(wait_until(lambda: os.path.exists(access_log) and
                                   "/before-rotation" in read(access_log), 5), log())

        # systemctl reload: the check, then SIGHUP; RELOADING=1 (with MONOTONIC_USEC), READY=1.
        for line in unit[(svc, "ExecReload")]:
            p = run(command(line, pid=proc.pid))
            self.assertEqual(p.returncode, 0, line + ": " + p.stdout + p.stderr)
        reloading = notify.wait("RELOADING")
        self.assertIsNotNone(reloading, notify.messages)
        self.assertRegex(reloading.get("MONOTONIC_USEC", ""), r"^\d+$")
        ready = notify.wait("READY")
        self.assertIsNotNone(ready, notify.messages)
        self.assertIn("generation 2 is live", ready.get("STATUS", ""))

        # logrotate: rename, then the snippet's postrotate command. systemctl is a stand-in
        # here (no systemd in the test): it signals this sluice as `systemctl kill` would
        # signal the unit's processes, and refuses any other command line.
        os.rename(access_log, access_log + ".1")
        shims = os.path.join(tmp, "bin")
        os.mkdir(shims)
        with open(os.path.join(shims, "systemctl"), "w") as f:
            f.write('#!/bin/sh\n[ "$*" = "kill --signal=USR1 sluice.service" ] || exit 3\n'
                    'exec kill -USR1 %d\n' % proc.pid)
        os.chmod(os.path.join(shims, "systemctl"), 0o755)
        postrotate = self.postrotate_command()
        p = run(["/bin/sh", "-c", postrotate],
                env=dict(os.environ, PATH=shims + ":" + os.environ.get("PATH", "")))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(wait_until(lambda: "log files reopened" in log(), 5), log())
        self.assertEqual(get("/after-rotation"), (200, b"/after-rotation"))
        self.assertTrue(wait_until(lambda: os.path.exists(access_log) and
                                   "/after-rotation" in read(access_log), 5), log())
        self.assertNotIn("/after-rotation", read(access_log + ".1"))

        # systemctl stop: SIGTERM to the main process (KillMode=mixed); STOPPING=1, exit 0.
        proc.send_signal(signal.SIGTERM)
        self.assertIsNotNone(notify.wait("STOPPING"), notify.messages)
        self.assertEqual(proc.wait(30), 0, log())

    def postrotate_command(self):
        text = read(self.path("/etc/logrotate.d/sluice"))
        m = re.search(r"postrotate\n(.*?)\n\s*endscript", text, re.S)
        self.assertIsNotNone(m, text)
        return m.group(1).strip()


if __name__ == "__main__":
    unittest.main(verbosity=2)
