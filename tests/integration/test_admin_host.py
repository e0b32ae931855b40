"""The admin API answers only to Host values a DNS-rebinding page cannot bring: IP literals,
"localhost", and the names in [admin] allowed_hosts. A page on evil.example that rebinds its name
to 127.0.0.1 sends "Host: evil.example:PORT" and gets 403, so it cannot read /api/status or
/metrics, or post a drain."""

import unittest

from harness import RawConn, SluiceTestCase


class AdminHost(SluiceTestCase):
    def ask(self, sluice, host, method="GET", path="/api/status"):
        c = RawConn(sluice.admin_port)
        try:
            return c.request(method, path, host=host, headers=[("Connection", "close")])
        finally:
            c.close()

    def test_rebinding_names_are_refused(self):
        _, s = self.start_proxy()
        port = s.admin_port
        for host in ("evil.example:%d" % port, "evil.example", "127.0.0.1.nip.io:%d" % port):
            with self.subTest(host=host):
                for path in ("/api/status", "/metrics"):
                    self.assertEqual(self.ask(s, host, path=path).status, 403)
                self.assertEqual(self.ask(s, host, "POST", "/api/reload").status, 403)
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "LOCALHOST", "[::1]:%d" % port,
                     "[::1]"):
            with self.subTest(host=host):
                self.assertEqual(self.ask(s, host).status, 200)

    def test_allowed_hosts(self):
        s = self.start_sluice({"admin": {"allowed_hosts": ["Admin.Internal"]},
                               "pools": [{"name": "app", "backends": [{"address": "127.0.0.1:1"}]}]})
        self.assertEqual(self.ask(s, "admin.internal:%d" % s.admin_port).status, 200)
        self.assertEqual(self.ask(s, "other.internal").status, 403)


if __name__ == "__main__":
    unittest.main(verbosity=2)
