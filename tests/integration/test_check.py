"""`sluice --check` fails on everything a start would fail on, and reports every stage's errors
in one run: schema errors together with missing certificates and token files, unknown accounts,
log files that cannot be written, listen addresses that are taken or not this machine's (except
the ones a sluice running this very config holds), bad trusted_proxies.

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_check.py -v
"""

import os
import re
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import LOCALHOST, SOURCE_DIR, SluiceTestCase, free_port, sluice_bin  # noqa: E402


def check(path):
    p = subprocess.run([sluice_bin(), "--check", path], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def config(admin_port=None, listen_port=None, server="", admin="", listener="", extra=""):
    return """
[server]
workers = 1
%s

[admin]
listen = "127.0.0.1:%d"
%s

[[listeners]]
name = "public"
listen = "127.0.0.1:%d"
%s

[[routes]]
listener = "public"
pool = "app"

[[pools]]
name = "app"
backends = [ { address = "127.0.0.1:9" } ]
%s
""" % (server, admin_port or free_port(), admin, listen_port or free_port(), listener, extra)


class Check(SluiceTestCase):
    def write(self, text, name="c.toml"):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def errors(self, out):
        return [l for l in out.splitlines() if ": error: " in l]

    def test_every_stage_in_one_run(self):
        # A typo (schema), a missing certificate (TLS), a missing token file (files) and an
        # unknown user: four errors, one run.
        path = self.write(config(
            server='user = "no-such-user-here"\nworkrs = 2',
            admin='token_file = "missing.token"',
            listener='tls = { cert = "nope.crt", key = "nope.key" }'))
        rc, out = check(path)
        self.assertEqual(rc, 1, out)
        errors = "\n".join(self.errors(out))
        self.assertIn("unknown key 'workrs' in [server]; did you mean 'workers'?", errors)
        self.assertIn("nope.crt", errors)
        self.assertIn("missing.token", errors)
        self.assertIn("unknown user 'no-such-user-here'", errors)
        self.assertRegex(out, r"c\.toml: 4 errors")
        lines = [int(re.match(r".*?c\.toml:(\d+):", l).group(1)) for l in self.errors(out)]
        self.assertEqual(lines, sorted(lines), "diagnostics not in file order")

    def test_full_example_names_its_missing_certificates(self):
        certs = os.path.join(SOURCE_DIR, "conf", "examples", "certs")
        if os.path.exists(certs):
            self.skipTest("conf/examples/certs exists (make-certs.sh ran)")
        rc, out = check(os.path.join(SOURCE_DIR, "conf", "examples", "full.toml"))
        self.assertEqual(rc, 1, out)
        for name in ("example.com.crt", "example.org.crt", "internal.crt", "backend-ca.pem",
                     "admin.token"):
            self.assertIn(name, out)

    def test_read_token_file_and_log_files(self):
        path = self.write(config(
            server='access_log = "/nonexistent-dir/access.log"\nerror_log = "/nonexistent/e.log"',
            admin='read_token_file = "empty.token"'))
        open(os.path.join(self.tmpdir, "empty.token"), "w").close()
        rc, out = check(path)
        self.assertEqual(rc, 1, out)
        self.assertIn("token file '%s/empty.token' is empty" % self.tmpdir, out)
        self.assertIn("'access_log': cannot write '/nonexistent-dir/access.log'", out)
        self.assertIn("'error_log': cannot write '/nonexistent/e.log'", out)

    def test_addresses_taken_or_not_ours(self):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a sluice would
        holder.bind((LOCALHOST, 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        extra = ('[[listeners]]\nname = "elsewhere"\nlisten = "192.0.2.1:8080"\n')
        path = self.write(config(listen_port=port, extra=extra))
        rc, out = check(path)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"listener 'public': cannot listen on 127\.0\.0\.1:%d: Address "
                              r"already in use" % port)
        self.assertRegex(out, r"listener 'elsewhere': cannot listen on 192\.0\.2\.1:8080: Cannot "
                              r"assign requested address")

    def test_bad_trusted_proxies(self):
        path = self.write(config(listener='trusted_proxies = ["10.0.0.1/8", "nonsense"]'))
        rc, out = check(path)
        self.assertEqual(rc, 1, out)
        errors = self.errors(out)
        self.assertEqual(len(errors), 2, out)
        self.assertRegex(errors[0], r"c\.toml:13:\d+: error: listener 'public': 'trusted_proxies'")

    def test_proxy_protocol_needs_trusted_proxies(self):
        rc, out = check(self.write(config(listener="proxy_protocol = true")))
        self.assertEqual(rc, 1, out)
        self.assertIn("'proxy_protocol' needs 'trusted_proxies'", out)
        rc, out = check(self.write(config(listener='proxy_protocol = true\n'
                                                   'trusted_proxies = ["10.0.0.0/8"]')))
        self.assertEqual(rc, 0, out)

    def test_a_running_instance_of_the_same_config_passes(self):
        # The check before a reload: the ports this config's own sluice holds are fine; a new
        # listener on a port someone else holds is not.
        b, s = self.start_proxy()
        rc, out = check(s.config_path)
        self.assertEqual(rc, 0, out)
        holder = socket.socket()
        holder.bind((LOCALHOST, 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        with open(s.config_path, "a") as f:
            f.write('\n[[listeners]]\nname = "more"\nlisten = "127.0.0.1:%d"\n'
                    % holder.getsockname()[1])
        rc, out = check(s.config_path)
        self.assertEqual(rc, 1, out)
        self.assertEqual(len(self.errors(out)), 1, out)
        self.assertIn("listener 'more'", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
