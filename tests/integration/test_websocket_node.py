#!/usr/bin/python3
"""Node's `ws` library (npm) as a WebSocket client through sluice: ws_client.js exchanges text,
binary, fragmented and large messages and a ping, then closes with a code; its JSON result is
checked here, and so is what ws_backend.py received.

Needs node and tests/integration/node_modules (`npm install` in tests/integration; the project's
setup script does it in test mode). Run:

    SLUICE_BIN=build/sluice /usr/bin/python3 tests/integration/test_websocket_node.py -v
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import SluiceTestCase, run_tool, ws_route  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "ws_client.js")
NODE = shutil.which("node") or "/usr/bin/node"

ORIGIN_FILTER = """
[[filters]]
name = "origin"
type = "origin"
allow = ["http://good.example"]
"""


class NodeClient(SluiceTestCase):
    def setUp(self):
        super().setUp()
        if not os.path.isfile(NODE):
            self.fail("node is not installed (packaging/setup.sh installs it in test mode)")
        if not os.path.isdir(os.path.join(HERE, "node_modules", "ws")):
            self.fail("tests/integration/node_modules/ws is missing: run `npm install` in %s" % HERE)

    def node(self, url, *args, timeout=30):
        p = run_tool([NODE, CLIENT, url] + list(args), timeout=timeout, cwd=HERE)
        out = p.stdout.decode("utf-8", "replace").strip().splitlines()
        self.assertTrue(out, "ws_client.js printed nothing (exit %s): %s"
                        % (p.returncode, p.stderr.decode("utf-8", "replace")[-2000:]))
        result = json.loads(out[-1])
        result["_exit"] = p.returncode
        return result

    def test_exchange_and_close_with_code(self):
        b, s = self.start_ws_proxy()
        url = "ws://127.0.0.1:%d/node" % s.port
        r = self.node(url, "--protocol", "chat", "--close-code", "4003", "--close-reason", "node bye")
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["_exit"], 0, r)
        self.assertEqual(r["steps"], ["open", "text", "binary", "fragmented", "ping", "big", "closing"])
        self.assertEqual(r["protocol"], "chat")
        self.assertEqual(r["extensions"], "", "permessage-deflate must not be negotiated through sluice")
        self.assertEqual((r["close_code"], r["close_reason"]), (4003, "node bye"))
        cid = b.conn_id("/node")
        ev = b.wait_close(cid)
        self.assertIsNotNone(ev)
        self.assertEqual((ev["code"], ev["reason"]), (4003, "node bye"))
        msgs = b.messages(cid)
        self.assertEqual([(m["type"], m["len"]) for m in msgs],
                         [("text", len("h\u00e9llo \u2713 \U0001F680 from node".encode())),
                          ("binary", 1000), ("text", len("fragmented")), ("binary", 256 * 1024)])
        self.assertEqual(msgs[0]["text"], "h\u00e9llo \u2713 \U0001F680 from node")
        self.assertEqual(msgs[2]["text"], "fragmented")
        self.assertEqual(b.open_event(cid)["subprotocol"], "chat")

    def test_oversized_message_gets_1009(self):
        b, s = self.start_ws_proxy(max_message_bytes="64KiB")
        r = self.node("ws://127.0.0.1:%d/oversize" % s.port, "--oversize", str(100 * 1024))
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["close_code"], 1009, r)
        cid = b.conn_id("/oversize")
        ev = b.wait_close(cid)
        self.assertIsNotNone(ev)
        self.assertEqual(ev["code"], 1001)
        self.assertEqual(b.messages(cid), [])

    def test_origin_rejected_for_node(self):
        b, s = self.start_ws_proxy(routes=[ws_route(filters=["origin"])], extra=ORIGIN_FILTER)
        url = "ws://127.0.0.1:%d/origin" % s.port
        r = self.node(url, "--origin", "http://evil.example")
        self.assertFalse(r["ok"])
        self.assertEqual(r.get("http_status"), 403, r)
        r = self.node(url, "--origin", "http://good.example")
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["close_code"], 1000)


if __name__ == "__main__":
    harness.main()
