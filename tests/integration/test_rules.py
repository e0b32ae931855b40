"""The rules filter through the real binary: the operator's own RE2 rules from TOML files on
request heads and bodies (deny with the rule's status) and on WebSocket messages (close with the
rule's code toward the sender, drop, log), JSON pointers into JSON messages, detect mode, the
audit lines and counters, and a rule file error reported at its file:line:col by a reload that
keeps the running rules."""

import json
import os
import unittest

from harness import RawConn, SluiceTestCase, Table
from harness import ws_route

RULES = r'''
[[rules]]
id = "no-admin"
target = "path"
pattern = '^/admin(/|$)'
action = "deny"
status = 404

[[rules]]
id = "old-client"
target = "header:X-Client-Version"
pattern = '^0\.'
action = "deny"
status = 426

[[rules]]
id = "no-pgp"
target = "body"
pattern = 'BEGIN PGP'
action = "deny"

[[rules]]
id = "admin-message"
target = "json:/type"
pattern = '^admin$'
action = "close"
close_code = 4403

[[rules]]
id = "no-links"
target = "message"
transforms = ["lowercase"]
pattern = 'https?://'
action = "drop"

[[rules]]
id = "shouting"
target = "message"
pattern = '^[A-Z !]{12,}$'
action = "log"
'''


def rules_toml(path, audit, **keys):
    lines = ["[[filters]]", 'name = "mine"', 'type = "rules"', "files = [%s]" % json.dumps(path),
             "audit_log = %s" % json.dumps(audit)]
    for k, v in keys.items():
        lines.append("%s = %s" % (k, json.dumps(v)))
    return "\n".join(lines) + "\n"



def matches(sluice, rule, action):
    return sluice.admin.metrics().get("sluice_rules_matches_total", filter="mine", rule=rule,
                                      action=action)


def audit_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(l) for l in f.read().split("\n") if l.strip()]
    except FileNotFoundError:
        return []


class RulesHttp(SluiceTestCase):
    def start(self, **keys):
        self.rules = os.path.join(self.tmpdir, "app.rules.toml")
        with open(self.rules, "w") as f:
            f.write(RULES)
        self.audit = os.path.join(self.tmpdir, "rules-audit.log")
        self.backend, self.sluice = self.start_proxy(
            route={"filters": ["mine"], "websocket": Table(enabled=True)},
            extra=rules_toml(self.rules, self.audit, **keys))

    def test_request_rules(self):
        self.start()
        c = self.connect(self.sluice)
        self.assertEqual(c.request("GET", "/admin/users").status, 404)
        self.assertEqual(c.request("GET", "/app", headers=[("X-Client-Version", "0.9")]).status,
                         426)
        self.assertEqual(c.request("GET", "/app", headers=[("X-Client-Version", "2.1")]).status,
                         200)
        self.assertEqual(c.request("POST", "/upload", body=b"-----BEGIN PGP MESSAGE-----").status,
                         403)
        self.assertEqual(c.request("POST", "/upload", body=b"plain text").status, 200)
        # The handshake is a request like any other.
        r = c.request("GET", "/admin/ws", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
        self.assertEqual(r.status, 404)
        self.assertEqual(self.backend.count()["paths"], ["/app", "/upload"])
        self.assertEqual(matches(self.sluice, "no-admin", "deny"), 2)
        self.assertEqual(matches(self.sluice, "no-pgp", "deny"), 1)
        lines = audit_lines(self.audit)
        self.assertEqual([l["rules"][0]["id"] for l in lines],
                         ["no-admin", "old-client", "no-pgp", "no-admin"])
        self.assertTrue(all(l["type"] == "rules" and l["request_id"] for l in lines))

    def test_detect_mode(self):
        self.start(mode="detect")
        c = self.connect(self.sluice)
        self.assertEqual(c.request("GET", "/admin/users").status, 200)
        self.assertEqual(matches(self.sluice, "no-admin", "log"), 1)
        self.assertEqual(audit_lines(self.audit)[0]["action"], "log")

    def test_bad_rule_file_fails_the_reload_at_its_position(self):
        self.start()
        with open(self.rules, "a") as f:
            f.write('\n[[rules]]\nid = "broken"\ntarget = "message"\npattern = "(unclosed"\n'
                    'action = "drop"\n')
        a = RawConn(self.sluice.admin_port)
        r = a.request("POST", "/api/reload")
        a.close()
        self.assertNotEqual(r.status, 200)
        self.assertIn(b"app.rules.toml:45:11", r.body)
        c = self.connect(self.sluice)
        self.assertEqual(c.request("GET", "/admin").status, 404)  # the old rules still run


class RulesWebSocket(SluiceTestCase):
    def test_message_rules(self):
        rules = os.path.join(self.tmpdir, "app.rules.toml")
        with open(rules, "w") as f:
            f.write(RULES)
        audit = os.path.join(self.tmpdir, "rules-audit.log")
        self.wsb, self.sluice = self.start_ws_proxy(routes=[ws_route(filters=["mine"])],
                                                    extra=rules_toml(rules, audit))
        c = self.ws_client(self.sluice, "/chat")
        self.assertUpgraded(c)
        for m in ['{"type":"chat","text":"hi"}', "THIS IS LOUD!!!"]:
            c.send_text(m)
            self.assertEqual(c.recv_message()[1].decode(), m)
        c.send_text('{"type":"chat","text":"see HTTPS://evil.example/x"}')  # dropped
        c.send_text("still here")
        self.assertEqual(c.recv_message()[1], b"still here")
        c.send_text('{"type":"admin","cmd":"wipe"}')
        close, _ = c.read_close()
        self.assertEqual(close.code, 4403)
        cid = self.wsb.conn_id("/chat")
        self.assertEqual([m.get("text") for m in self.wsb.messages(cid)],
                         ['{"type":"chat","text":"hi"}', "THIS IS LOUD!!!", "still here"])
        ev = self.wsb.wait_close(cid)
        self.assertEqual(ev and ev["code"], 1001)
        self.assertEqual(matches(self.sluice, "shouting", "log"), 1)
        self.assertEqual(matches(self.sluice, "no-links", "drop"), 1)
        self.assertEqual(matches(self.sluice, "admin-message", "close"), 1)
        self.assertEqual([(l["action"], l["direction"]) for l in audit_lines(audit)],
                         [("log", "client"), ("drop", "client"), ("close", "client")])


if __name__ == "__main__":
    unittest.main(verbosity=2)
