#!/usr/bin/python3
"""A real browser through sluice: headless Chromium (Debian `chromium`) loads a page that
ws_backend.py serves through sluice; the page's script opens `new WebSocket(...)` to sluice,
checks echoes of text and binary, closes with 4000 and expects it back; another page sends a
message over max_message_bytes and expects close 1009. The page reports its result with GET /report (through
sluice, recorded by the backend). The route has an origin filter that allows only the page's own
origin, so the browser's real Origin header is checked too. Chromium runs until the report comes
(bounded), then its process group is terminated. Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_websocket_browser.py -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import SluiceTestCase, ws_route  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


@unittest.skipUnless(os.path.isfile(CHROMIUM),
                     "chromium is not installed (apt-get install chromium; packaging/setup.sh "
                     "installs it in test mode)")
class Browser(SluiceTestCase):
    def start_for_page(self, **ws):
        """ws_backend behind sluice on a port chosen first, so that the origin filter can allow
        exactly the page's own origin."""
        port = harness.free_port()
        origin = "http://127.0.0.1:%d" % port
        extra = ('[[filters]]\nname = "origin"\ntype = "origin"\nallow = ["%s"]\n' % origin)
        self.b, s = self.start_ws_proxy(routes=[ws_route(filters=["origin"], **ws)],
                                        extra=extra, listener={"listen": "127.0.0.1:%d" % port})
        return s, origin

    def test_chromium_websocket_through_sluice(self):
        s, origin = self.start_for_page()
        t0 = time.monotonic()
        report = self.run_chromium("http://127.0.0.1:%d/page" % s.port, self.b)
        sys.stderr.write("[chromium: %.1fs] " % (time.monotonic() - t0))
        # open:<protocol>:<extensions> -- "chat" chosen by the backend; Chromium offers
        # permessage-deflate, which sluice does not negotiate.
        self.assertEqual(report, 'OK:open:chat:"",text,binary,close:4000:browser done:true')
        opens = [e for e in self.b.events() if e["ev"] == "open"]
        self.assertEqual([e["path"] for e in opens], ["/ws/browser"])
        hdrs = {k.lower(): v for k, v in opens[0]["headers"]}
        self.assertEqual(hdrs.get("origin"), origin)
        self.assertNotIn("sec-websocket-extensions", hdrs)
        self.assertIn("HeadlessChrome", hdrs.get("user-agent", ""))
        cid = opens[0]["id"]
        self.assertEqual([(m["type"], m["len"]) for m in self.b.messages(cid)],
                         [("text", len("h\u00e9llo \u2713 \U0001F680 from chromium".encode())),
                          ("binary", 300)])
        self.assertEqual(self.b.messages(cid)[0]["text"], "h\u00e9llo \u2713 \U0001F680 from chromium")
        ev = self.b.wait_close(cid)
        self.assertIsNotNone(ev)
        self.assertEqual((ev["code"], ev["reason"]), (4000, "browser done"))

    def test_chromium_sees_1009_for_an_oversized_message(self):
        # The page sends 100 KiB with max_message_bytes = 64 KiB; the browser must see the close
        # code (1009), not an abnormal closure (1006).
        s, _ = self.start_for_page(max_message_bytes="64KiB")
        report = self.run_chromium("http://127.0.0.1:%d/page?big" % s.port, self.b)
        cid = self.b.conn_id("/ws/browser-big")
        self.assertEqual(self.b.messages(cid), [], "the oversized message reached the backend")
        ev = self.b.wait_close(cid)
        self.assertIsNotNone(ev)
        self.assertEqual(ev["code"], 1001)
        self.assertEqual(report, "OK:close:1009")

    def test_chromium_rejected_by_origin_filter(self):
        # The same page, but the route allows another origin: the browser's upgrade gets 403,
        # which the page sees as a failed connection (close 1006).
        extra = '[[filters]]\nname = "origin"\ntype = "origin"\nallow = ["http://other.example"]\n'
        self.b, s = self.start_ws_proxy(routes=[ws_route(filters=["origin"])], extra=extra)
        report = self.run_chromium("http://127.0.0.1:%d/page" % s.port, self.b)
        self.assertTrue(report.startswith("FAIL:phase1:"), report)
        self.assertTrue(report.endswith("close:1006::false"), report)
        self.assertEqual([e for e in self.b.events() if e["ev"] == "open"], [])


if __name__ == "__main__":
    harness.main()
