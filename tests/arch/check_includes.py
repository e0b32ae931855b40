#!/usr/bin/python3
"""The arrows between the source folders (DESIGN.md), checked on every test run:

- filters/ and conf/ include nothing of proxy/, and no libuv;
- conf/ includes nothing of filters/ either;
- proxy/ includes no concrete filter, only the interface and value types at the top of filters/
  (tests may include anything);
- the worker (proxy/worker.*) includes nothing of proxy/http/ or proxy/ws/;
- proxy/upstream/ includes no snapshot, and nothing of proxy/http/ or proxy/ws/.

Exits 1 and names each offending line."""

import os
import re
import sys

ROOT = os.environ.get("SLUICE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
TOP_LEVEL_FILTER_HEADERS = {"filters/filter.h", "filters/http_head.h", "filters/stats.h",
                            "filters/request_key.h", "filters/log.h", "filters/redis.h"}


def sources(folder):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            if f.endswith((".h", ".cpp")):
                path = os.path.join(dirpath, f)
                yield os.path.relpath(path, ROOT), path


def includes(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield n, m.group(1)


def main():
    problems = []

    def check(folder, rule, why):
        for rel, path in sources(folder):
            for n, inc in includes(path):
                if rule(rel, inc):
                    problems.append("%s:%d: includes %s: %s" % (rel, n, inc, why))

    check("filters", lambda rel, inc: inc.startswith("proxy/"), "filters/ may not use proxy/")
    check("conf", lambda rel, inc: inc.startswith(("proxy/", "filters/")),
          "conf/ depends on nothing of proxy/ or filters/")
    for folder in ("filters", "conf"):
        check(folder, lambda rel, inc: inc in ("uv.h", "uv/unix.h"), "no libuv outside proxy/")
    check("proxy",
          lambda rel, inc: inc.startswith("filters/") and inc not in TOP_LEVEL_FILTER_HEADERS,
          "proxy/ includes no concrete filter")
    check("proxy",
          lambda rel, inc: os.path.basename(rel).startswith("worker.")
          and inc.startswith(("proxy/http/", "proxy/ws/")),
          "the worker knows no protocol")
    check("proxy/upstream",
          lambda rel, inc: inc == "proxy/snapshot.h" or inc.startswith(("proxy/http/", "proxy/ws/")),
          "upstream/ depends on no snapshot and no protocol")
    for p in problems:
        print(p)
    print("%d arrow%s broken" % (len(problems), "" if len(problems) == 1 else "s"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
