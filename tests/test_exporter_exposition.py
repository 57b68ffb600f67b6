"""Our text rendering must say exactly what prometheus_client's would (it replaces it for speed)."""
from __future__ import annotations

import gzip

import requests
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporters.pg_exporter.exposition import MetricsServer, render
from sloguard.pgcluster import free_port


class _Tricky:
    def collect(self):
        g = GaugeMetricFamily("x_gauge", 'help with "quotes", \\ and\nnewline', labels=["a", "b"])
        g.add_metric(['quo"te', "back\\slash\nnl"], 1.5)
        g.add_metric(["plain", ""], float("inf"))
        g.add_metric(["nan", "neg"], -2e-9)
        yield g
        c = CounterMetricFamily("x_events_total", "events", labels=["k"])
        c.add_metric(["v"], 12345678901234)
        yield c
        yield GaugeMetricFamily("x_single", "no labels", value=0)

    def describe(self):
        return []


def _parsed(text: str):
    return sorted((s.name, tuple(sorted(s.labels.items())), repr(s.value))
                  for f in text_string_to_metric_families(text) for s in f.samples)


def test_render_matches_prometheus_client():
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Tricky())
    ours = render(reg).decode()
    theirs = generate_latest(reg).decode()
    assert _parsed(ours) == _parsed(theirs)
    assert [ln for ln in ours.splitlines() if ln.startswith("#")] == [
        ln for ln in theirs.splitlines() if ln.startswith("#")]


def test_server_serves_plain_and_gzip_and_404():
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Tricky())
    server = MetricsServer("127.0.0.1", free_port(), reg)
    try:
        base = f"http://127.0.0.1:{server.port}"
        plain = requests.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"}, timeout=10)
        raw = requests.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10, stream=True)
        zipped = raw.raw.read()
        assert plain.status_code == 200 and plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert raw.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped).decode() == plain.text
        assert _parsed(plain.text) == _parsed(generate_latest(reg).decode())
        assert requests.get(f"{base}/nope", timeout=10).status_code == 404
    finally:
        server.shutdown()
