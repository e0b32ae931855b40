"""127.0.0.1 ports and bounded waits, for every other test module.

- free_port() / closed_port(): ports nothing listens on (yet), never the same twice per process;
- can_connect(), tcp_established(): whether a port accepts, and how many client connections to
  it are established (from /proc/net/tcp);
- wait_until(): polls a predicate until it holds or a timeout passes.

Only 127.0.0.1, ever.
"""

import socket
import time

LOCALHOST = "127.0.0.1"

_handed_out = set()


def addr(port):
    return "%s:%d" % (LOCALHOST, port)


def free_port():
    """A port that was free a moment ago on 127.0.0.1, never the same twice in one process
    (callers retry on collision with other processes)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOCALHOST, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 50 tries")


def closed_port():
    """A port with (very probably) no listener: bound, never listened on, then released."""
    return free_port()


def can_connect(port, timeout=0.2):
    try:
        s = socket.create_connection((LOCALHOST, port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


def wait_until(predicate, timeout, interval=0.02, what=None):
    """Polls predicate() until truthy or timeout; returns its last value. what: a label for
    the reader."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def tcp_established(remote_port):
    """Number of ESTABLISHED IPv4 TCP sockets (in this network namespace) whose remote end is
    127.0.0.1:remote_port, i.e. client-side connections to that port."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, st = parts[2], parts[3]
            ip, port = rem.split(":")
            if st == "01" and int(port, 16) == remote_port and ip == "0100007F":
                n += 1
    return n
