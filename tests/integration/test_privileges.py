"""[server] user and group: sluice binds :443 as root, then serves as `nobody` (checked in
/proc/PID/status), proxying to a Unix-socket backend; without privileges a bind below 1024 fails
with a message that says how to fix it. Each test runs sluice in a network namespace of its own
(`unshare --net`), so :443 is free whatever the host runs; the test reaches it with nsenter.

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_privileges.py -v
"""

import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import SluiceTestCase, sluice_bin, wait_until  # noqa: E402
from procs import CURL, _die_with_parent  # noqa: E402

NOBODY = 65534


def available():
    if os.geteuid() != 0:
        return "needs root"
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "needs unshare --net"
    return None


def slurp(path):
    with open(path) as f:
        return f.read()


class UnixBackend(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"path": self.path, "backend": "unix"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@unittest.skipIf(available(), available())
class Privileges(SluiceTestCase):
    def setUp(self):
        super().setUp()
        os.chmod(self.tmpdir, 0o755)  # nobody must reach the backend's socket

    def start_unix_backend(self):
        path = os.path.join(self.tmpdir, "app.sock")
        server = UnixBackend(path, Handler)
        os.chmod(path, 0o777)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return path

    def write_config(self, socket_path, server_extra=""):
        path = os.path.join(self.tmpdir, "sluice.toml")
        with open(path, "w") as f:
            f.write("""
[server]
workers = 2
access_log = "%s/access.log"
%s
[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "public"
listen = "127.0.0.1:443"

[[routes]]
listener = "public"
pool = "app"

[[pools]]
name = "app"
backends = [ { address = "unix:%s" } ]
""" % (self.tmpdir, server_extra, socket_path))
        return path

    def in_namespace(self, argv, stderr_name):
        """argv run in a new network namespace with lo up; returns the Popen."""
        err = open(os.path.join(self.tmpdir, stderr_name), "wb")
        self.addCleanup(err.close)
        script = 'ip link set lo up && exec "$@"'
        p = subprocess.Popen(["unshare", "--net", "sh", "-c", script, "sh"] + argv, stdout=err,
                             stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                             preexec_fn=_die_with_parent)

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.addCleanup(stop)
        return p

    def curl(self, pid, url):
        return subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, CURL, "--noproxy", "*",
                               "-sS", "-m", "5", "-w", "\\n%{http_code}", url],
                              capture_output=True, timeout=20)

    def test_binds_443_as_root_then_serves_as_nobody(self):
        sock = self.start_unix_backend()
        token = os.path.join(self.tmpdir, "admin.token")
        with open(token, "w") as f:
            f.write("secret\n")
        os.chmod(token, 0o600)  # root's only: a reload as nobody could not read it
        cfg = self.write_config(sock, 'user = "nobody"\ngroup = "nogroup"')
        text = slurp(cfg).replace('listen = "127.0.0.1:9901"',
                                        'listen = "127.0.0.1:9901"\ntoken_file = "%s"' % token)
        with open(cfg, "w") as f:
            f.write(text)
        p = self.in_namespace([sluice_bin(), "--config", cfg], "sluice.stderr")
        log = os.path.join(self.tmpdir, "sluice.stderr")
        ok = wait_until(lambda: p.poll() is not None or "started" in slurp(log), 20)
        self.assertIsNone(p.poll(), slurp(log))
        self.assertTrue(ok, slurp(log))
        r = self.curl(p.pid, "http://127.0.0.1:443/through/unix")
        body, _, code = r.stdout.decode().rpartition("\n")
        self.assertEqual(code, "200", r)
        self.assertEqual(json.loads(body), {"path": "/through/unix", "backend": "unix"})
        status = {}
        with open("/proc/%d/status" % p.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                status[k] = v.split()
        self.assertEqual(status["Uid"], [str(NOBODY)] * 4, status["Uid"])
        self.assertEqual(status["Gid"], [str(NOBODY)] * 4, status["Gid"])
        self.assertIn(status.get("Groups", []), ([], [str(NOBODY)]))
        self.assertEqual(status["CapEff"], ["0000000000000000"])
        text = slurp(log)
        self.assertIn("running as user nobody (uid 65534), group nogroup (gid 65534)", text)
        self.assertIn("user nobody cannot read %s" % token, text)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15), 0, slurp(log))

    def test_a_bind_without_privilege_says_how_to_fix_it(self):
        sock = self.start_unix_backend()
        cfg = self.write_config(sock)
        os.chmod(cfg, 0o644)
        drop = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all"]
        with open(cfg) as f:
            text = f.read().replace('access_log = "%s/access.log"' % self.tmpdir,
                                    'access_log = "off"')
        with open(cfg, "w") as f:
            f.write(text)
        p = self.in_namespace(drop + [sluice_bin(), "--config", cfg], "unprivileged.stderr")
        self.assertEqual(p.wait(20), 1)
        text = slurp(os.path.join(self.tmpdir, "unprivileged.stderr"))
        self.assertIn("cannot listen on 127.0.0.1:443: Permission denied", text)
        self.assertIn("CAP_NET_BIND_SERVICE", text)
        self.assertIn("[server] user", text)
        # --check says the same.
        c = self.in_namespace(drop + [sluice_bin(), "--check", cfg], "check.stderr")
        self.assertEqual(c.wait(20), 1)
        text = slurp(os.path.join(self.tmpdir, "check.stderr"))
        self.assertRegex(text, r"sluice\.toml:\d+:\d+: error: listener 'public': cannot listen on "
                               r"127\.0\.0\.1:443: Permission denied")


if __name__ == "__main__":
    unittest.main(verbosity=2)
