"""sluice config files for the tests: TOML rendering and the defaults of a test config.

- toml_value() / toml_table() / render_config(): plain dicts to TOML (Raw: a value written
  verbatim; Table: a dict written as a [parent.key] sub-table rather than inline);
- build(spec): a complete config from a spec of optional parts, every default filled:

      server:    merged over {workers=1, access_log="off", shutdown_timeout="5s"}
      admin:     merged over {listen=127.0.0.1:<free>}
      listener:  merged over the one listener {name="public", listen=127.0.0.1:<free>}
      listeners: the full list instead (a missing "listen" gets a free port)
      pools:     list of pool dicts
      routes:    list of route dicts (default [{pool="app"}]); listener "public", host "*" and
                 path_prefix "/" unless given
      extra:     raw TOML appended; head: raw TOML put first (top-level keys such as include)

  returns (text, admin port, {listener name: port});
- config(): the same for a test that chose every port itself (workers = 2 unless said);
  pool() / route() / ws_route(): the dicts of one pool or route;
- position(): where a string sits in a config text; write_file(): atomic replacement.
"""

import json
import os

from net import addr, free_port


class Raw(str):
    """A TOML value written verbatim."""


class Table(dict):
    """A dict rendered as a sub-table ([parent.key]) instead of an inline table."""


def toml_value(v):
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, toml_value(x)) for k, x in v.items()) + " }"
    raise TypeError("no TOML for %r" % (v,))


def toml_table(header, d):
    lines = [header]
    subtables = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, Table):
            subtables.append((k, v))
            continue
        lines.append("%s = %s" % (k, toml_value(v)))
    text = "\n".join(lines) + "\n"
    for k, v in subtables:
        name = header.strip("[]")
        text += "\n" + toml_table("[%s.%s]" % (name, k), v)
    return text


def render_config(server, admin, listeners, routes, pools, extra=""):
    parts = [toml_table("[server]", server), toml_table("[admin]", admin)]
    for l in listeners:
        parts.append(toml_table("[[listeners]]", l))
    for p in pools:
        parts.append(toml_table("[[pools]]", p))
    for r in routes:
        parts.append(toml_table("[[routes]]", r))
    if extra:
        parts.append(extra)
    return "\n".join(parts)


def _port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def build(spec):
    """(config text, admin port, {listener name: port}) of a spec (see the module doc)."""
    server = {"workers": 1, "access_log": "off", "shutdown_timeout": "5s"}
    server.update(spec.get("server", {}))
    admin = {"listen": addr(free_port())}
    admin.update(spec.get("admin", {}))
    if "listeners" in spec:
        listeners = [dict(l) for l in spec["listeners"]]
    else:
        listeners = [dict({"name": "public"}, **spec.get("listener", {}))]
    ports = {}
    for l in listeners:
        if "listen" not in l:
            l["listen"] = addr(free_port())
        ports[l["name"]] = _port_of(l["listen"])
    routes = []
    for r in spec.get("routes", [{"pool": "app"}]):
        defaults = {"listener": "public", "host": "*", "path_prefix": "/"}
        rr = {k: v for k, v in defaults.items() if k not in r}
        rr.update(r)
        routes.append(rr)
    text = render_config(server, admin, listeners, routes, spec.get("pools", []),
                         spec.get("extra", ""))
    if spec.get("head"):
        text = spec["head"] + "\n" + text
    return text, _port_of(admin["listen"]), ports


def config(admin_port, listeners, pools, routes, server=None, admin=None, extra="", head=""):
    """A complete config text with every port chosen by the caller. listeners: {name: port}
    (ordered) or a list of listener dicts. [server] defaults to workers = 2."""
    if isinstance(listeners, dict):
        listeners = [{"name": n, "listen": addr(p)} for n, p in listeners.items()]
    spec = {"server": dict({"workers": 2}, **(server or {})),
            "admin": dict({"listen": addr(admin_port)}, **(admin or {})),
            "listeners": listeners, "pools": pools, "routes": routes, "extra": extra,
            "head": head}
    return build(spec)[0]


def route(name, pool, path_prefix="/", listener="public", host="*", websocket=False, **extra):
    r = {"name": name, "listener": listener, "host": host, "path_prefix": path_prefix,
         "pool": pool}
    r.update(extra)
    if websocket:
        r["websocket"] = Table(enabled=True)
    return r


def ws_route(path_prefix="/", filters=None, pool="app", **ws):
    """A route (listener and host by default) with [routes.websocket] enabled and the given
    websocket keys."""
    r = {"pool": pool, "path_prefix": path_prefix}
    if filters:
        r["filters"] = list(filters)
    r["websocket"] = Table(enabled=True, **ws)
    return r


def pool(name, addresses, drain_timeout="1s", **extra):
    p = {"name": name,
         "backends": [a if isinstance(a, dict) else {"address": a} for a in addresses],
         "drain_timeout": drain_timeout}
    p.update(extra)
    return p


def position(text, needle, occurrence=0, offset=0):
    """(line, column), 1-based, of the occurrence-th `needle` in text, plus offset columns."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col + offset


def write_file(path, text, atomic=True):
    """Writes text to path; atomic=True writes a sibling and renames it over path (how config
    management tools replace files), so a watcher never sees half a file."""
    if atomic:
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".new")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)
