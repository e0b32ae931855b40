"""Request-target normalisation before routing and filtering (like Envoy's normalize_path and
merge_slashes): dot segments removed, unreserved escapes decoded, a per-listener choice for
encoded slashes and backslashes, an absolute-form target's authority replacing Host. The
normalised target is what routes, filters, logs and the backend see; a route may forward the
original. A path that climbs out of a route's prefix can never reach what that route guards."""

import unittest

from harness import SluiceTestCase, ws_route


def hdr(echo, name):
    for k, v in echo["headers"]:
        if k.lower() == name.lower():
            return v
    return None


class Normalisation(SluiceTestCase):
    def start(self, listener=None, route=None):
        routes = [dict({"path_prefix": "/public/", "pool": "app"}, **(route or {})),
                  {"path_prefix": "/admin/", "pool": "app", "filters": ["deny"]}]
        extra = '[[filters]]\nname = "deny"\ntype = "test"\nreject_path = "/"\n'
        self.backend = self.start_backend()
        spec = {"pools": [{"name": "app", "backends": [{"address": self.backend.address}]}],
                "routes": routes, "extra": extra}
        if listener:
            spec["listener"] = listener
        self.sluice = self.start_sluice(spec)
        return self.sluice

    def raw(self, target, host="app.example", extra=b""):
        c = self.connect(self.sluice)
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + extra +
               b"\r\n")
        return c.read_response()

    def test_dot_segments_cannot_climb_out_of_a_prefix(self):
        self.start()
        for target in (b"/public/../admin/x", b"/public/%2e%2e/admin/x", b"/public/./../admin/x",
                       b"/public/../../../admin/x"):
            with self.subTest(target=target):
                r = self.raw(target)
                self.assertEqual(r.status, 451, r)  # the /admin/ route's filter judged it
        self.assertEqual(self.backend.count()["paths"], [])
        r = self.raw(b"/public/a/../echo-%7Euser")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend.count()["paths"], ["/public/echo-~user"])

    def test_encoded_slashes_per_listener(self):
        self.start(listener={"encoded_slashes": "reject", "backslashes": "reject"})
        self.assertEqual(self.raw(b"/public/a%2Fb").status, 400)
        self.assertEqual(self.raw(b"/public\\..\\admin/x").status, 400)

    def test_decoded_slashes_and_merged(self):
        self.start(listener={"encoded_slashes": "decode", "backslashes": "decode",
                             "merge_slashes": True})
        self.assertEqual(self.raw(b"/public%2F..%2Fadmin/x").status, 451)
        self.assertEqual(self.raw(b"/public\\..\\admin/x").status, 451)
        r = self.raw(b"//public//echo")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend.count()["paths"], ["/public/echo"])

    def test_kept_encoded_slash_is_data(self):
        self.start()
        r = self.raw(b"/public/a%2fb")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend.count()["paths"], ["/public/a%2Fb"])

    def test_absolute_form_replaces_host(self):
        self.start()
        r = self.raw(b"http://app.example/public/../admin/x", host="evil.example")
        self.assertEqual(r.status, 451, r)
        r = self.raw(b"http://real.example/public/x?q=1", host="evil.example")
        self.assertEqual(r.status, 200, r)
        echo = r.json()
        self.assertEqual(hdr(echo, "Host"), "real.example")
        self.assertEqual(echo["target"], "/public/x?q=1")  # origin-form toward the backend

    def test_bad_targets(self):
        self.start()
        self.assertEqual(self.raw(b"/public/x#frag").status, 400)
        self.assertEqual(self.raw(b"ftp://a/x").status, 400)

    def test_forward_original_target(self):
        self.start(route={"forward_original_target": True})
        r = self.raw(b"/public/a/../b")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/public/a/../b")


class WebSocketUpgradeGuard(SluiceTestCase):
    def test_upgrade_through_dots_into_a_route_without_websockets(self):
        # The example: /ws/echo/../../nows/x was proxied although /nows/ forbids
        # WebSockets.
        _, s = self.start_ws_proxy(routes=[ws_route(path_prefix="/ws/"),
                                           {"path_prefix": "/nows/", "pool": "app"}])
        c = self.ws_client(s, "/ws/echo/../../nows/x")
        self.assertEqual(c.status, 403)


if __name__ == "__main__":
    unittest.main(verbosity=2)
