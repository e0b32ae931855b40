"""HttpLoad: the one HTTP load generator of the tests.

A few client threads send GET path?t=T&n=N through sluice, each on a keep-alive connection (a
new one every `per_connection` requests, after a close, or after a failure). A request is good
when it gets a 200 whose JSON (backend.py's echo) has its own target and passes check(body).
Every request is recorded as (start, end, backend port or None, problem or None), with
monotonic times, so that failures can be judged against the moment something happened.

keep_connection=True: one connection per thread for the whole run; the first failure (or the
server closing it) ends the thread. connect(): a custom connection (e.g. TLS), default RawConn.
Threads stop at stop() or after max_seconds; start() opens the first connections.
"""

import threading
import time

from http1 import RawConn


class HttpLoad:
    def __init__(self, port, path="/echo/load", threads=4, per_connection=10, pause=0.002,
                 max_seconds=120.0, check=None, connect=None, host="localhost",
                 keep_connection=False):
        self.port = port
        self.path = path
        self.per_connection = per_connection
        self.pause = pause
        self.max_seconds = max_seconds
        self.check = check
        self.host = host
        self.keep_connection = keep_connection
        self._connect = connect or (lambda: RawConn(port, timeout=10.0))
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.records = []
        self.connections = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]
        self._first = [None] * threads

    @property
    def ok(self):
        return len([r for r in self.snapshot() if r[3] is None])

    @property
    def failures(self):
        return [r[3] for r in self.snapshot() if r[3] is not None]

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def start(self):
        for i in range(len(self.threads)):
            self._first[i] = self._open(i, 0, time.monotonic())
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=20.0):
        """Stops the threads (bounded); True when all of them ended."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.ident is not None:  # started
                t.join(timeout=max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _record(self, start, port, problem):
        with self.lock:
            self.records.append((start, time.monotonic(), port, problem))

    def _open(self, tid, n, start):
        try:
            conn = self._connect()
        except OSError as e:
            self._record(start, None, "thread %d request %d: connect: %r" % (tid, n, e))
            return None
        with self.lock:
            self.connections += 1
        return conn

    def _run(self, tid):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        used = 0
        conn = self._first[tid]
        if conn is None and self.keep_connection:
            return
        while not self.stopping.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            if conn is None or (used >= self.per_connection and not self.keep_connection):
                if conn is not None:
                    conn.close()
                used = 0
                conn = self._open(tid, n, start)
                if conn is None:
                    time.sleep(0.05)
                    continue
            target = "%s?t=%d&n=%d" % (self.path, tid, n)
            n += 1
            used += 1
            port = None
            try:
                r = conn.request("GET", target, host=self.host, timeout=10.0)
                problem = None
                if r.status != 200:
                    problem = "status %s %r" % (r.status, r.body[:200])
                else:
                    body = r.json()
                    port = body.get("port")
                    if body.get("target") != target:
                        problem = "backend saw %r" % body.get("target")
                    elif self.check is not None:
                        problem = self.check(body)
                if "close" in r.connection_tokens():
                    conn.close()
                    conn = None
                    if self.keep_connection and not problem:
                        problem = "the server closed the connection"
            except Exception as e:  # every failure counts; the connection is replaced
                problem = repr(e)
                conn.close()
                conn = None
            self._record(start, None if problem else port,
                         "thread %d %s: %s" % (tid, target, problem) if problem else None)
            if conn is None and self.keep_connection:
                return
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
