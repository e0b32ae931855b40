"""server.max_held_bytes: what one worker's connections may hold together (held WebSocket
messages, bodies a filter waits for whole). Every such buffer has its own bound; the cap keeps
many of them at once from taking the process down. Over it, the largest holders are shed: a
request answered 503, a WebSocket closed with 1008 (its backend gets 1001), counted in
sluice_memory_shed_total, while the smaller ones go on."""

import time
import unittest

from harness import SluiceTestCase, wait_until, ws_route
from wsutil import CLOSE, TEXT


def metric(sluice, name):
    """The value of the first sample called `name` in /metrics (None without one)."""
    for (sample, _), value in sluice.admin.metrics().samples.items():
        if sample == name:
            return value
    return None


class BufferedBodies(SluiceTestCase):
    def test_the_largest_body_is_shed(self):
        extra = '[[filters]]\nname = "t"\ntype = "test"\nbuffer_body = true\n'
        backend, s = self.start_proxy(route={"filters": ["t"]}, extra=extra,
                                      server={"max_held_bytes": "600KiB"})
        head = b"POST /echo/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        small = self.connect(s)
        small.send(head % (b"small", 100000) + b"s" * 50000)    # holds ~50 KiB so far
        big = self.connect(s)
        big.send(head % (b"big", 2000000) + b"b" * 300000)      # holds ~300 KiB so far
        time.sleep(0.3)
        self.assertEqual(metric(s, "sluice_memory_shed_total"), 0)
        big.send(b"b" * 400000)                                 # ~700 KiB: over the cap
        r = big.read_response(timeout=5)
        self.assertEqual(r.status, 503, r)
        self.assertIn(b"short of memory", r.body)
        small.send(b"s" * 50000)                                # the small one completes
        r = small.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_length"], 100000)
        self.assertTrue(wait_until(lambda: metric(s, "sluice_memory_shed_total") == 1, 3))
        self.assertEqual(backend.count()["paths"], ["/echo/small"])


class HeldMessages(SluiceTestCase):
    def test_the_largest_session_is_closed(self):
        extra = '[[filters]]\nname = "t"\ntype = "test"\npause_message = "2s"\n'
        wsb, s = self.start_ws_proxy(routes=[ws_route(filters=["t"], max_message_bytes="4MiB")],
                                     extra=extra, server={"max_held_bytes": "1MiB"})
        quiet = self.ws_client(s, "/quiet")
        self.assertUpgraded(quiet)
        quiet.send_text("x" * 1000)  # held 2 s by the filter: small
        greedy = self.ws_client(s, "/greedy")
        self.assertUpgraded(greedy)
        greedy.send_frame(TEXT, b"g" * (1500 * 1024))
        f = greedy.read_frame(timeout=5)
        self.assertEqual((f.opcode, f.code), (CLOSE, 1008), f)
        self.assertEqual(quiet.read_frame(timeout=5).payload, b"x" * 1000)  # goes on
        self.assertEqual(metric(s, "sluice_memory_shed_total"), 1)
        self.assertLess(metric(s, "sluice_held_bytes"), 1024 * 1024)


if __name__ == "__main__":
    unittest.main(verbosity=2)
