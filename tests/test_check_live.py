"""`make check-live`: test-owned specs against a real Prometheus 2.42 started here on 127.0.0.1.

Prometheus scrapes four small targets served by this test: two instances of a "shop" API whose latency
histograms differ (only one has a 0.3 s bucket), a complete sloguard exporter (job pg-ok) and a broken one
(job pg-broken: PostgreSQL unreachable, the locks collector failing, one metric missing). Every process and
server started here is stopped here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from sloguard import names
from sloguard.checklive.checks import exporter_metrics
from sloguard.pgcluster import free_port
from sloguard.simulate.processes import ProcessGroup
from sloguard.spec import parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# --- the targets -------------------------------------------------------------------------------------------------

BUCKETS_A = ("0.1", "0.25", "0.3", "0.5", "1", "+Inf")
BUCKETS_B = ("0.1", "0.25", "0.5", "1", "+Inf")      # no 0.3: an SLI at 0.3 s reads nothing from this instance


def shop_metrics(buckets: tuple[str, ...]) -> str:
    lines = ["# TYPE shop_requests_total counter",
             'shop_requests_total{route="/cart",code="200"} 120',
             'shop_requests_total{route="/pay",code="200"} 30',
             "# TYPE shop_request_seconds histogram"]
    lines += [f'shop_request_seconds_bucket{{route="/cart",le="{le}"}} {10 * (i + 1)}' for i, le in enumerate(buckets)]
    lines += [f'shop_request_seconds_count{{route="/cart"}} {10 * len(buckets)}',
              'shop_request_seconds_sum{route="/cart"} 12.5',
              "# TYPE shop_pool_in_use gauge", "shop_pool_in_use 3", "shop_pool_max 10", "shop_pool_waiting 0"]
    return "\n".join(lines) + "\n"


def exporter_text(spec_text: str, healthy: bool) -> str:
    """Every exporter metric the generated rules read (pg-broken lacks the lock gauge and fails a collector)."""
    spec = parse_spec(spec_text)
    lines = [f"{names.PG_UP} {1 if healthy else 0}"]
    for collector in names.COLLECTORS:
        ok = healthy or collector != "locks"
        lines.append(f'{names.COLLECTOR_SUCCESS}{{collector="{collector}"}} {1 if ok else 0}')
    for metric in exporter_metrics(spec):
        if metric in (names.PG_UP, names.COLLECTOR_SUCCESS) or (not healthy and metric == names.LOCK_WAITING_SESSIONS):
            continue
        lines.append(f'{metric}{{datname="shop",queryid="1",schemaname="public",relname="carts"}} 1')
    return "\n".join(lines) + "\n"


def spec_text(threshold: float = 0.25, total: str = "shop_requests_total", job: str = "pg-ok",
              latency_job: str = "shop") -> str:
    return f"""\
version: 1
service: shop
links: {{runbook: "https://example.org/runbooks/high-latency-response.md", grafana: "https://grafana.example.org"}}
slos:
  - name: cart-availability
    objective: 99.5
    window: 28d
    sli:
      events: {{total: '{total}{{job="shop",route="/cart"}}', errors: '{total}{{job="shop",route="/cart",code=~"5.."}}'}}
  - name: cart-latency
    objective: 99
    window: 28d
    sli:
      latency: {{metric: 'shop_request_seconds{{job="{latency_job}",route="/cart"}}', threshold: {threshold}}}
database:
  exporter_job: {job}
  latency_p99: {{metric: 'shop_request_seconds{{job="shop"}}', threshold: 0.5}}
  pool: {{in_use: 'shop_pool_in_use{{job="shop"}}', max: 'shop_pool_max{{job="shop"}}',
          waiting: 'shop_pool_waiting{{job="shop"}}'}}
"""


def serve(text: str) -> tuple[ThreadingHTTPServer, threading.Thread]:
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):   # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checklive")
    servers = {"shop": [serve(shop_metrics(BUCKETS_A)), serve(shop_metrics(BUCKETS_B))],
               "pg-ok": [serve(exporter_text(spec_text(), healthy=True))],
               "pg-broken": [serve(exporter_text(spec_text(), healthy=False))]}
    jobs = ""
    for job, pair in servers.items():
        targets = ", ".join(f"'127.0.0.1:{server.server_address[1]}'" for server, _ in pair)
        jobs += f"  - job_name: {job}\n    static_configs: [{{targets: [{targets}]}}]\n"
    config = tmp / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n{jobs}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    group = ProcessGroup(str(tmp))   # the simulation's process handling: own process group, always stopped
    try:
        prom = group.start("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                          f"--web.listen-address=127.0.0.1:{port}"])
        group.wait_http(prom, f"{url}/-/ready", timeout=60)
        deadline = time.monotonic() + 60
        while True:   # every target scraped once
            result = requests.get(f"{url}/api/v1/query", params={"query": "count(up == 1)"}, timeout=2).json()
            if result["data"]["result"] and result["data"]["result"][0]["value"][1] == "4":
                break
            assert time.monotonic() < deadline, prom.tail()
            time.sleep(0.3)
        yield url
    finally:
        group.stop_all()
        for pair in servers.values():
            for server, thread in pair:
                server.shutdown()
                server.server_close()
                thread.join(5)


def check_live(tmp_path: Path, url: str, text: str, *extra: str) -> subprocess.CompletedProcess:
    spec = tmp_path / "slo.yaml"
    spec.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "sloguard.checklive", "--prometheus", url, "--spec", str(spec),
                           "--lookback", "5m", *extra], capture_output=True, text=True, timeout=120, cwd=ROOT)


# --- the checks --------------------------------------------------------------------------------------------------

def test_a_spec_that_matches_the_live_series_passes(prometheus, tmp_path):
    """Errors selector code=~"5.." has no series (a healthy shop): fine, its metric exists."""
    started = time.monotonic()
    proc = check_live(tmp_path, prometheus, spec_text())
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "" and "0 problem(s) for shop" in proc.stderr
    print(f"check-live on a 2-SLO spec: {elapsed:.2f} s, {proc.stderr.strip()}")


def test_make_check_live_runs_the_same_check(prometheus, tmp_path):
    (tmp_path / "slo.yaml").write_text(spec_text(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-s", "check-live", f"PROMETHEUS={prometheus}",
                           f"ARGS=--spec {tmp_path / 'slo.yaml'} --lookback 5m"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = subprocess.run(["make", "-s", "check-live", f"PROMETHEUS={prometheus}",
                             f"ARGS=--spec {tmp_path / 'slo.yaml'} --lookback 5m --nope"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0


def test_threshold_that_is_not_a_bucket_on_one_instance_is_named(prometheus, tmp_path):
    proc = check_live(tmp_path, prometheus, spec_text(threshold=0.3))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    (line,) = lines
    assert line.startswith(f"{tmp_path / 'slo.yaml'}: slos[1].sli.latency.threshold: ")
    # only the instance without a 0.3 bucket, with the buckets it does have
    assert "has no bucket at 0.3 s (its buckets: 0.1, 0.25, 0.5, 1, +Inf)" in line and "Fix:" in line
    # the p99 alert's threshold needs no bucket (histogram_quantile interpolates): 0.3 there is fine
    p99 = check_live(tmp_path, prometheus, spec_text().replace("threshold: 0.5}", "threshold: 0.3}"))
    assert "threshold: 0.3}" in (tmp_path / "slo.yaml").read_text() and p99.returncode == 0, p99.stdout


def test_empty_selectors_say_which_part_matches_nothing(prometheus, tmp_path):
    text = spec_text(total="shop_request_total", latency_job="shopp")
    proc = check_live(tmp_path, prometheus, text)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    by_field = {line.split(": ")[1]: line for line in lines}
    assert set(by_field) == {"slos[0].sli.events.total", "slos[0].sli.events.errors", "slos[1].sli.latency.metric"}
    assert "metric shop_request_total was not scraped in the last 5m" in by_field["slos[0].sli.events.total"]
    assert 'no shop_request_seconds_count series has job="shopp" (values of job: shop)' in "\n".join(lines)
    assert len(lines) == 4   # _count and _bucket of the latency histogram, both on the wrong job


def test_exporter_problems_one_line_each(prometheus, tmp_path):
    proc = check_live(tmp_path, prometheus, spec_text(job="pg-broken"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert all(": database.exporter_job: " in line for line in lines), lines
    text = "\n".join(lines)
    assert f"cannot reach PostgreSQL ({names.PG_UP} == 0)" in text
    assert "collector locks of" in text
    assert f'{names.LOCK_WAITING_SESSIONS}{{job="pg-broken"}} has no series' in text
    assert len(lines) == 3
    missing = check_live(tmp_path, prometheus, spec_text(job="sloguard-pg-exporter"))
    assert missing.returncode == 1 and "no target of job 'sloguard-pg-exporter' is scraped" in missing.stdout


def test_exporter_metrics_are_the_ones_the_rules_read():
    metrics = exporter_metrics(parse_spec(spec_text()))
    assert {names.PG_UP, names.STATEMENT_CALLS, names.TABLE_SEQ_TUP_READ, names.LOCK_WAITING_SESSIONS,
            names.CONNECTIONS} <= set(metrics)
    assert names.MISSING_INDEX not in metrics   # exists only when a suspect is found


def test_unreachable_prometheus_and_bad_spec_exit_2(prometheus, tmp_path):
    port = free_port()
    down = check_live(tmp_path, f"http://127.0.0.1:{port}", spec_text())
    assert down.returncode == 2 and "cannot reach Prometheus" in down.stderr and down.stdout == ""
    bad = check_live(tmp_path, prometheus, spec_text().replace("objective: 99.5", "objective: 101"))
    assert bad.returncode == 2 and "slos[0].objective" in bad.stderr
    no_url = subprocess.run([sys.executable, "-m", "sloguard.checklive"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "PROMETHEUS"})
    assert no_url.returncode == 2 and "make check-live PROMETHEUS=" in no_url.stderr
