"""The benchmark harness keeps working: tests/bench/run.py --smoke (every scenario once, tiny
durations) against the binaries of this build (SLUICE_BIN's directory holds sluice_bench_backend
and sluice_wsload too).

Every target (the backend directly, sluice, nginx, haproxy; packaging/setup.sh test installs nginx,
haproxy, wrk and valgrind) and every scenario must produce a number, with zero errors (wsload and
wrk count every failed handshake, wrong echo, reset and bad status), and sluice must shut down with
no sanitizer report. Speed itself is never asserted here."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PYTHON, SANITIZER_RE, SOURCE_DIR, binary_has_asan, sluice_bin  # noqa: E402

RUN_PY = os.path.join(SOURCE_DIR, "tests", "bench", "run.py")
TIMEOUT = 300


def installed(name):
    return shutil.which(name) or (os.access("/usr/sbin/" + name, os.X_OK) and "/usr/sbin/" + name)


class BenchSmoke(unittest.TestCase):
    def setUp(self):
        self.sluice = sluice_bin()
        bindir = os.path.dirname(os.path.abspath(self.sluice))
        self.tools = {t: os.path.join(bindir, t) for t in ("sluice_bench_backend", "sluice_wsload")}
        for t, path in self.tools.items():
            self.assertTrue(os.access(path, os.X_OK), "%s not built next to sluice: %s" % (t, path))
        missing = [p for p in ("nginx", "haproxy", "wrk", "valgrind") if not installed(p)]
        self.assertEqual(missing, [], "not installed (packaging/setup.sh test installs them)")
        self.work = tempfile.mkdtemp(prefix="bench-smoke-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def run_smoke(self, targets, scenarios):
        """run.py --smoke; returns its JSON results after checking that it exited cleanly."""
        out = os.path.join(self.work, "results.json")
        argv = [PYTHON, RUN_PY, "--smoke", "--sluice", self.sluice,
                "--backend", self.tools["sluice_bench_backend"],
                "--wsload", self.tools["sluice_wsload"],
                "--targets", ",".join(targets), "--scenarios", ",".join(scenarios),
                "--out", out, "--work-dir", self.work]
        probe = os.path.join(os.path.dirname(self.tools["sluice_wsload"]), "sluice_relay_probe")
        if os.access(probe, os.X_OK):
            argv += ["--relay-probe", probe]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
        text = p.stdout.decode("utf-8", "replace")
        print(text[-6000:])
        self.assertEqual(p.returncode, 0, "run.py --smoke failed (exit %d)" % p.returncode)
        with open(out) as f:
            res = json.load(f)
        self.assertEqual(res["errors"], [])
        self.assertEqual(res["machine"]["nproc"], os.cpu_count())
        return res

    def assertNumbers(self, res, sid, want):
        self.assertIn(sid, res["scenarios"], "scenario %s produced no results" % sid)
        med = res["scenarios"][sid]["medians"]
        for t in want:
            self.assertIn(t, med, "%s: no result for %s" % (sid, t))
            m = med[t]
            self.assertEqual(m["errors"], 0, "%s / %s: errors" % (sid, t))
            self.assertIsNotNone(m["value"], "%s / %s: no number" % (sid, t))
            self.assertGreater(m["value"], 0, "%s / %s: zero" % (sid, t))

    def test_smoke_run(self):
        targets = ["direct", "sluice", "nginx", "haproxy"]
        scenarios = ["http", "ws_small", "ws_large", "ws_connect", "ws_idle", "filters"]
        res = self.run_smoke(targets, scenarios)
        for sid in scenarios:
            if sid == "filters":
                want = ["sluice (no filters)", "sluice+origin", "sluice+message_limits",
                        "sluice+origin+message_limits"]
            elif sid == "ws_idle":
                want = [t for t in targets if t != "direct"]
            else:
                want = targets
            self.assertNumbers(res, sid, want)

        # sluice's own logs: no sanitizer report (ASan/UBSan builds), no crash
        for root, _, files in os.walk(self.work):
            for name in files:
                if name.startswith("sluice.") and name.endswith((".err", ".out")):
                    with open(os.path.join(root, name), "rb") as f:
                        log = f.read().decode("utf-8", "replace")
                    m = SANITIZER_RE.search(log)
                    self.assertIsNone(m, "%s/%s:\n%s" % (root, name, log[max(0, m.start() - 200):
                                                                          m.start() + 3000]
                                                         if m else ""))

    def test_instructions(self):
        # Every proxy under callgrind. An AddressSanitizer build of sluice (what the test suite
        # runs) cannot run under valgrind: then the scenario is exercised on nginx and haproxy,
        # and run.py refusing sluice is checked instead.
        targets = ["nginx", "haproxy"]
        if binary_has_asan(self.sluice):
            p = subprocess.run([PYTHON, RUN_PY, "--smoke", "--sluice", self.sluice,
                                "--backend", self.tools["sluice_bench_backend"],
                                "--wsload", self.tools["sluice_wsload"],
                                "--targets", "sluice", "--scenarios", "instructions"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"AddressSanitizer", p.stdout)
        else:
            targets.insert(0, "sluice")
        res = self.run_smoke(targets, ["instructions"])
        for sid in ("instr_http", "instr_ws_small", "instr_ws_connect"):
            self.assertNumbers(res, sid, targets)

    def test_syscalls(self):
        # perf stat on sluice, nginx and the three bare relays (epoll and io_uring back ends):
        # each gives CPU time and system calls per message; io_uring's relays make far fewer
        # system calls than epoll's (one submit per loop turn instead of one per recv and send).
        probe = os.path.join(os.path.dirname(os.path.abspath(self.sluice)), "sluice_relay_probe")
        self.assertTrue(os.access(probe, os.X_OK), "sluice_relay_probe not built (liburing-dev?)")
        self.assertTrue(installed("perf"), "perf not installed (packaging/setup.sh test)")
        targets = ["sluice", "nginx", "relay-epoll", "relay-uring", "relay-uring-ms"]
        res = self.run_smoke(["sluice", "nginx"], ["syscalls"])
        self.assertNumbers(res, "syscalls", targets)
        med = res["scenarios"]["syscalls"]["medians"]
        for t in targets:
            self.assertGreater(med[t]["syscalls_per_op"], 0, t)
        self.assertLess(med["relay-uring-ms"]["syscalls_per_op"],
                        med["relay-epoll"]["syscalls_per_op"] / 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
