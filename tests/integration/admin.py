"""A client of sluice's admin listener: Admin (status, reload, metrics, healthz, each on a fresh
connection, with bounded polling helpers) and Metrics (/metrics parsed by prometheus_client's
own text parser)."""

from http1 import RawConn
from net import wait_until


class Metrics:
    """/metrics text parsed by prometheus_client. Samples are keyed by sample name (with its
    _total/_bucket/_count/_sum suffix) and the full label set."""

    def __init__(self, text):
        # Imported here: most tests never parse metrics, and the import costs a tenth of a second.
        from prometheus_client.parser import text_string_to_metric_families
        self.text = text
        self.families = {}
        self.samples = {}
        for fam in text_string_to_metric_families(text):
            self.families[fam.name] = fam
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, default=0.0, **labels):
        """The value of the sample with exactly these labels (default when absent)."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples

    def matching(self, name, **labels):
        """{frozenset(labels): value} of samples named `name` whose labels include `labels`."""
        want = set(labels.items())
        return {k[1]: v for k, v in self.samples.items() if k[0] == name and want <= k[1]}

    def total(self, name, **labels):
        return sum(self.matching(name, **labels).values())


class Admin:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, headers=None, body=None, timeout=15.0):
        c = RawConn(self.port, timeout=timeout)
        try:
            return c.request(method, path, headers=headers, body=body, timeout=timeout)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, token=None, **kw):
        headers = list(kw.pop("headers", None) or [])
        if token is not None:
            headers.append(("Authorization", "Bearer " + token))
        return self.request("POST", path, headers=headers, body=kw.pop("body", b""), **kw)

    def status(self):
        r = self.get("/api/status")
        if r.status != 200:
            raise AssertionError("GET /api/status answered %s: %r" % (r.status, r.body[:300]))
        return r.json()

    def generation(self):
        return self.status()["config"]["generation"]

    def reload(self, token=None):
        """(HTTP status, parsed JSON body) of POST /api/reload."""
        r = self.post("/api/reload", token=token)
        try:
            body = r.json()
        except ValueError:
            body = {"unparsable": r.body.decode("utf-8", "replace")}
        return r.status, body

    def metrics(self):
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics answered %s" % r.status)
        return Metrics(r.body.decode("utf-8"))

    def healthz(self, timeout=5.0):
        return self.get("/healthz", timeout=timeout)

    def wait_generation(self, at_least, timeout=5.0):
        """Polls /api/status until config.generation >= at_least; returns the last status."""
        return self._poll(self.status, lambda st: st["config"]["generation"] >= at_least, timeout)

    def wait_metric(self, predicate, timeout=5.0):
        """Polls /metrics until predicate(Metrics) is true; returns the last Metrics."""
        return self._poll(self.metrics, predicate, timeout)

    @staticmethod
    def _poll(fetch, predicate, timeout):
        last = [None]

        def check():
            last[0] = fetch()
            return predicate(last[0])
        wait_until(check, timeout, interval=0.05)
        return last[0]
