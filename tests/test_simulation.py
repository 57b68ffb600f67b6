"""The incident replay end to end (quick mode, marked e2e), and the pieces it is built from.

The e2e test runs `python -m sloguard.simulate --quick` as a user would, then reads the JSON summary it writes:
alerts come from the live Prometheus and Alertmanager APIs, the diagnosis from `sloguard.diagnose`, plans from
PostgreSQL's EXPLAIN, panel results from running every dashboard query against the live Prometheus.
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest
import yaml

from demo.alert_sink import AlertSink
from demo.loadgen import LoadGen
from demo.pool import BoundedPool, PoolTimeout
from sloguard.pgcluster import TempCluster, free_port
from sloguard.simulate import chart, configs, production, report, seed
from sloguard.simulate.__main__ import parse_args
from sloguard.simulate.modes import MODES
from sloguard.simulate.processes import ProcessGroup
from sloguard.simulate.promapi import (
    Alertmanager,
    AlertPoller,
    AlertRecord,
    AlertTimeline,
    Prometheus,
    alert_key,
)
from sloguard.simulate.scenario import Marks, Outcome
from sloguard.simulate.stack import Stack

# --- time compression of the generated rules ---


@pytest.mark.parametrize("expr, expected", [
    ("rate(x[5m])", "rate(x[5s])"),
    ("rate(x[1h])", "rate(x[1m])"),
    ("rate(x[3d])", "rate(x[1h12m])"),
    ("rate(x[1h] offset 5m)", "rate(x[1m] offset 5s)"),
    ("max_over_time(x[30d:5m])", "max_over_time(x[12h:5s])"),
    ('x{code=~"5..",le="0.5"}', 'x{code=~"5..",le="0.5"}'),    # label matchers untouched
])
def test_compress_expr_divides_ranges_offsets_and_steps(expr, expected):
    assert configs.compress_expr(expr, 60, 1000) == expected


def test_compress_expr_keeps_ranges_above_the_floor():
    assert configs.compress_expr("rate(x[5m])", 120, 6000) == "rate(x[6s])"


def test_compress_rules_floors_for_so_one_noisy_evaluation_cannot_fire(repo_root):
    with open(os.path.join(repo_root, "alerts/sloguard-rules.yaml")) as f:
        text = f.read()
    compressed, summary = configs.compress_rules(text, 60, 9000, keep_ticket_tier=False, min_for_ms=5000)
    fors = {r["alert"]: configs.parse_duration_ms(r["for"]) for g in yaml.safe_load(compressed)["groups"]
            for r in g["rules"] if "alert" in r and r.get("for") and r["for"] != "0s"}
    assert fors and min(fors.values()) >= 5000, fors
    assert fors["AppDbPoolSaturated"] == 5000     # 1m / 60 would be 1s: one evaluation
    assert summary["min_for_ms"] == 5000


def test_compress_rules_scales_for_and_drops_the_ticket_tier_only_when_asked(repo_root):
    with open(os.path.join(repo_root, "alerts/sloguard-rules.yaml")) as f:
        text = f.read()
    quick, summary = configs.compress_rules(text, 60, 6000, keep_ticket_tier=False)
    rules = [r for g in yaml.safe_load(quick)["groups"] for r in g["rules"]]
    assert not [r for r in rules if r.get("labels", {}).get("sloth_severity") == "ticket"]
    assert summary["dropped"], "the ticket tier should be listed as dropped"
    p99 = next(r for r in rules if r.get("alert") == "ApiLatencyP99High")
    assert p99["for"] == "2s" and "[6s]" in p99["expr"]     # 2m / 60, no floor asked
    full, summary_full = configs.compress_rules(text, 60, 6000, keep_ticket_tier=True)
    assert not [d for d in summary_full["dropped"] if "ticket tier" in d], summary_full["dropped"]
    assert any(r.get("labels", {}).get("sloth_severity") == "ticket"
               for g in yaml.safe_load(full)["groups"] for r in g["rules"])
    # names unchanged: the dashboards read the same recorded series
    records = {r["record"] for r in rules if "record" in r}
    assert "slo:sli_error:ratio_rate5m" in records


INVENTED_RULES = """
groups:
- name: invoices-period
  interval: 5m
  rules:
  - record: slo:period_error_budget_remaining:ratio
    expr: 1 - slo:sli_error:ratio_rate28d{sloth_slo="invoices"} / 0.01
- name: invoices-alerts
  rules:
  - alert: InvoicesBudgetExhausted
    expr: slo:period_error_budget_remaining:ratio{sloth_slo="invoices"} < 0
    for: 10m
  - alert: InvoicesBudgetLow
    expr: slo:period_burn_rate:ratio{sloth_slo="invoices"} > 0.75
  - alert: InvoicesBurn
    expr: slo:sli_error:ratio_rate5m{sloth_slo="invoices"} > 0.144
    for: 2m
    labels: {sloth_severity: page}
"""


def test_compress_rules_drops_alerts_over_the_slo_period_and_compresses_group_intervals():
    """A budget alert reads the whole (compressed) period, which holds the entire replay: it would fire on the
    incident and never resolve, so it is not loaded, and the report says why."""
    for keep_ticket_tier in (False, True):
        text, summary = configs.compress_rules(INVENTED_RULES, 60, 9000, keep_ticket_tier, 5000)
        groups = {g["name"]: g for g in yaml.safe_load(text)["groups"]}
        assert groups["invoices-period"]["interval"] == "5s"
        assert [r["record"] for r in groups["invoices-period"]["rules"]] == ["slo:period_error_budget_remaining:ratio"]
        assert [r["alert"] for r in groups["invoices-alerts"]["rules"]] == ["InvoicesBurn"]
        assert summary["alerts"] == ["InvoicesBurn"]
        assert [d.split(" ")[0] for d in summary["dropped"]] == ["InvoicesBudgetExhausted",
                                                                 "InvoicesBudgetLow"]
        assert all("SLO-period window" in d for d in summary["dropped"])


def test_prometheus_config_rejects_a_job_without_local_target(repo_root):
    with open(os.path.join(repo_root, "deploy/prometheus/prometheus.yml")) as f:
        text = f.read()
    with pytest.raises(KeyError, match="has no local target"):
        configs.prometheus_config(text, "/r.yaml", {"api": "127.0.0.1:1"}, "127.0.0.1:2", "1s", "x", "2s")


def test_alertmanager_copy_posts_to_the_local_sink_with_fast_timers(repo_root):
    with open(os.path.join(repo_root, "deploy/alertmanager/alertmanager.yml")) as f:
        cfg = yaml.safe_load(configs.alertmanager_config(f.read(), "http://127.0.0.1:5555"))
    urls = [h["url"] for r in cfg["receivers"] for h in r.get("webhook_configs", [])]
    assert urls and all(u.startswith("http://127.0.0.1:5555/") for u in urls)
    assert cfg["route"]["group_wait"] == "1s"


# --- demo pieces against the real PostgreSQL of the session ---


@pytest.fixture(scope="module")
def demo_db(pg_cluster):
    with pg_cluster.database("sim_demo") as dsn:
        pg_cluster.psql(seed.setup_sql(1000).replace("CREATE EXTENSION IF NOT EXISTS hypopg;", ""), "sim_demo")
        yield dsn


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def test_pool_times_out_and_counts_waiters_when_exhausted(demo_db):
    pool = BoundedPool(demo_db, max_size=1, statement_timeout_ms=2000)
    outcome: list[BaseException | str] = []

    def second():
        # The outcome is recorded here and asserted in the test's thread: an assert in a thread fails nothing.
        try:
            with pool.connection(time.monotonic() + 1.5):
                outcome.append("got a connection")
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    try:
        with pool.connection(time.monotonic() + 1) as conn:
            assert pool.in_use == 1
            conn.execute("SELECT 1")
            t = threading.Thread(target=second)
            t.start()
            _until(lambda: pool.waiting == 1, 5, "the second request waiting")
            t.join(10)
            assert not t.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], PoolTimeout), outcome
        assert pool.in_use == 0 and pool.waiting == 0
        with pool.connection(time.monotonic() + 1) as conn:   # the connection went back to the pool
            assert conn.execute("SELECT 2").fetchone()[0] == 2
    finally:
        pool.close()


def test_demo_api_serves_the_login_query_and_answers_504_past_its_deadline(demo_db, repo_root, tmp_path):
    port = free_port()
    procs = ProcessGroup(str(tmp_path))
    api = procs.start("demo-api", [sys.executable, "-m", "demo.app", "--dsn", demo_db, "--listen",
                                   f"127.0.0.1:{port}", "--pool-size", "1", "--request-timeout", "0.5"], cwd=repo_root)
    blocker = None
    try:
        base = f"http://127.0.0.1:{port}"
        procs.wait_http(api, base + "/healthz", 30)      # fails with the API's log if it never answers
        idle = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        for route in ("/login", "/orders/recent"):    # before any request: absent() rules see the series
            assert f'http_requests_total{{code="200",route="{route}"}} 0.0' in idle, idle
            assert f'http_request_duration_seconds_count{{route="{route}"}} 0.0' in idle
        body = json.loads(urllib.request.urlopen(base + "/login?email=user1@example.com", timeout=5).read())
        assert body == {"rows": 1}
        # Lock the table so the query waits past the request timeout: statement_timeout cancels it -> 504.
        blocker = psycopg.connect(demo_db)
        blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/login?email=user2@example.com", timeout=5)
        assert err.value.code == 504
        blocker.rollback()
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'http_requests_total{code="504",route="/login"} 1.0' in metrics
        assert 'http_request_duration_seconds_bucket{le="0.5",route="/login"}' in metrics
        assert "db_pool_connections_max 1.0" in metrics and "db_pool_waiting_requests" in metrics
    finally:
        if blocker is not None:
            blocker.close()
        procs.stop_all()      # SIGTERM, then SIGKILL after a grace period: never left running


def test_loadgen_refuses_non_loopback_targets():
    with pytest.raises(ValueError, match="only http://127.0.0.1"):
        LoadGen("http://example.com:80", 1, 1, 1, 1, 10, 0, 1)


def test_loadgen_is_bounded_by_request_count():
    sink = AlertSink().start()   # any local HTTP server will do
    try:
        gen = LoadGen(f"http://127.0.0.1:{sink.port}", rate=200, duration=30, max_requests=20, workers=4,
                      users=10, orders_share=0, timeout=2)
        summary = gen.run()
        assert summary["scheduled"] == 20 and summary["seconds"] < 30
        assert sum(summary["outcomes"].values()) == 20
    finally:
        sink.stop()


# --- the stack's own pieces: clean-up, ports, report ---


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line) of every live process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry)] = (int(stat[1]), stat[0], cmdline)
    return out


def _running(pids) -> list[str]:
    procs = _processes()
    return [f"{pid} {procs[pid][2][:120]}" for pid in pids if pid in procs and procs[pid][1] != "Z"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cluster_start_failing_after_the_server_started_leaves_no_postmaster(monkeypatch):
    real = TempCluster._pg_ctl

    def start_then_fail(self, *args):
        real(self, *args)
        if args[0] == "start":       # as when pg_ctl -w gives up waiting, or Ctrl-C, with the server up
            raise subprocess.CalledProcessError(1, "pg_ctl start")

    monkeypatch.setattr(TempCluster, "_pg_ctl", start_then_fail)
    cluster = TempCluster()
    with pytest.raises(subprocess.CalledProcessError):
        cluster.start()
    assert cluster.datadir
    assert not [p for p, (_, state, cmd) in _processes().items() if cluster.datadir in cmd and state != "Z"]
    assert not _listening(cluster.port)
    assert not os.path.exists(cluster.datadir)


@pytest.fixture
def small_stack(repo_root, tmp_path):
    mode = dataclasses.replace(MODES["quick"], users=10_000)
    stack = Stack(repo_root, str(tmp_path), mode, "sloguard-pg-exporter", say=lambda _text: None)
    try:
        yield stack
    finally:
        stack.stop()


def test_database_is_vacuumed_after_seeding_so_autovacuum_stays_out_of_the_replay(small_stack):
    small_stack.start_database()
    vacuumed = small_stack.cluster.psql(
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_stat_user_tables "
        "WHERE relname IN ('users', 'orders') AND last_vacuum IS NOT NULL", "app")
    assert vacuumed == "orders,users"


def test_a_port_taken_before_the_service_binds_it_is_replaced(small_stack):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([taken.getsockname()[1]])
    small_stack.pick_port = lambda: next(picks, None) or free_port()
    small_stack.sink = AlertSink().start()
    try:
        small_stack._wait_listening("alertmanager", small_stack._launch("alertmanager"))
        port = small_stack.ports["alertmanager"]
        assert port != taken.getsockname()[1]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5).status == 200
        assert len(small_stack.procs.children) == 2      # the one that lost the port, and its replacement
    finally:
        taken.close()


def test_failed_alert_polls_are_counted_and_reported():
    closed = free_port()
    timeline = AlertTimeline(Prometheus(f"http://127.0.0.1:{closed}"), Alertmanager(f"http://127.0.0.1:{closed}"))
    assert timeline.poll() == [] and timeline.poll() == []
    assert timeline.errors == 2 and timeline.polls == 2 and timeline.poll_times == []
    text = report.markdown(MODES["quick"], Outcome(polls=timeline.polls, poll_errors=timeline.errors), [], [], [],
                           [], {}, "c.png")
    assert "Alert API polls: 2, one a second in their own thread" in text and "failed: 2;" in text


def test_stack_loads_rules_only_after_every_target_was_scraped_once(small_stack):
    """An exporter-down or absent() rule loaded before the first scrape fires on the empty start-up state."""
    small_stack.start_database()
    small_stack.start_services()
    prom = small_stack.prometheus
    assert prom.rule_groups() == [] and prom.alertmanagers() == [], "rules loaded before the first scrapes"
    assert {h for h in prom.target_health().values()} == {"up"}
    assert prom.query('sloguard_pg_up{job="sloguard-pg-exporter"} == 1')
    small_stack.arm_alerting()
    assert prom.rule_groups() and len(prom.alertmanagers()) == 1
    assert prom.query('up{job="sloguard-pg-exporter"} == 1'), "armed rules start from a scraped exporter"
    time.sleep(2)     # two evaluations of the armed rules on the idle stack
    assert not [a["labels"]["alertname"] for a in prom.alerts()
                if a["labels"]["alertname"] in ("PostgresExporterDown", "PgStatStatementsUnavailable")]


class FakeAlertApis:
    """Serves Prometheus' /api/v1/alerts and Alertmanager's /api/v2/alerts from a list the test changes."""

    def __init__(self):
        self.alerts: list[dict] = []
        apis = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = ({"data": {"alerts": apis.alerts}} if self.path.startswith("/api/v1/alerts")
                        else [{"labels": a["labels"], "status": {"state": "active"}} for a in apis.alerts
                              if a["state"] == "firing"])
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def set(self, state: str | None, name: str = "OrdersBacklogGrowing", **labels) -> None:
        self.alerts = [] if state is None else [
            {"labels": {"alertname": name, "severity": "warning", **labels}, "state": state}]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_poller_records_an_alert_resolving_and_firing_again_while_the_replay_is_busy():
    """The replay blocks for seconds in diagnose and in the index build; the poller thread must not."""
    apis = FakeAlertApis()
    timeline = AlertTimeline(Prometheus(apis.url), Alertmanager(apis.url))
    poller = AlertPoller(timeline, interval=0.1).start()

    def texts():
        return [text for _, _, text in list(timeline.events)]

    try:
        # The test's thread never calls poll(): it only changes what the APIs answer, as the replay's phases do.
        for state in ("pending", "firing", None, "firing", None, "pending", None):
            apis.set(state, relname="invoices")
            before = timeline.polls
            _until(lambda before=before: timeline.polls >= before + 2, 10, f"two polls with state {state}")
    finally:
        poller.stop()
        apis.close()
    key = "OrdersBacklogGrowing relname=invoices"
    assert texts() == [f"pending  {key}", f"FIRING   {key} [warning]", f"received {key} (active)",
                       f"resolved {key}", f"FIRING   {key} [warning] (again, firing period 2)", f"resolved {key}",
                       f"pending  {key}", f"inactive {key} (pending, never fired)"], texts()
    rec = timeline.snapshot()[0]
    assert len(rec.periods) == 2 and all(end is not None for _, end in rec.periods)
    assert timeline.errors == 0 and [line for _, line in poller.drain()]
    assert not poller._thread.is_alive()


def test_alert_keys_tell_apart_one_alert_per_slo_and_per_statement():
    absent = [{"alertname": "SloMetricAbsent", "sloth_id": f"billing-{slo}", "severity": "critical"}
              for slo in ("availability", "latency")]
    regressions = [{"alertname": "PostgresStatementRegression", "fingerprint": fp} for fp in ("a1", "b2")]
    assert len({alert_key(labels) for labels in absent + regressions}) == 4
    assert alert_key(absent[0]) == "SloMetricAbsent sloth_id=billing-availability"


def _record(key, severity, *periods, pending=None):
    name = key.split(" ")[0]
    return AlertRecord(key, name, severity, pending_at=pending, firing_at=periods[0][0] if periods else None,
                       periods=[list(p) for p in periods])


def test_detection_rows_never_show_a_negative_time_after_the_fix():
    marks = Marks(start=0, rules_loaded=5, load_start=10, migration=100, fix_start=140, fix_end=150, end=200)
    records = [
        _record("InvoiceQueueSaturated", "critical", (108, 145), pending=103),      # resolved during the build
        _record("InvoiceLatencyHigh", "critical", (109, 160)),                      # resolved after it
        _record("InvoiceDbSlow relname=invoices", "warning", (110, 125), (130, 170)),   # resolved, fired again
        _record("StartupFlicker", "warning", (20, 25)),                            # before the migration
    ]
    production = {("InvoiceLatencyHigh", ""): ["3 min"]}
    rows = {r["alert"]: r for r in report.detection_rows(records, marks, production)}
    assert set(rows) == {"InvoiceQueueSaturated", "InvoiceLatencyHigh", "InvoiceDbSlow relname=invoices"}
    saturated = rows["InvoiceQueueSaturated"]
    assert saturated["resolved_after_fix_s"] is None and saturated["resolved_before_fix_end"]
    assert saturated["resolved_after_s"] == 45 and saturated["pending_after_s"] == 3
    assert rows["InvoiceLatencyHigh"]["resolved_after_fix_s"] == 10
    assert rows["InvoiceLatencyHigh"]["production_ttd"] == "3 min"
    assert rows["InvoiceDbSlow relname=invoices"]["firing_periods"] == [[10, 25], [30, 70]]
    assert rows["InvoiceDbSlow relname=invoices"]["resolved_after_fix_s"] == 20
    text = report.markdown(MODES["quick"], Outcome(marks=marks), list(rows.values()), [], [], [], {}, "c.png",
                           records)
    table = text.split("## Time to detect")[1].split("## Diagnosis")[0]
    assert "+45s (before the index build ended)" in table
    assert "2: +10s to +25s, +30s to +70s" in table
    assert "fired again during the incident: InvoiceDbSlow relname=invoices (2 firing periods)" in text
    assert not re.search(r"\| -\d", table), "a negative cell in the time-to-detect table"
    assert "production clock" not in text
    assert "StartupFlicker: fired" in text, "an alert before the load must be reported, not hidden"


def test_production_times_are_read_from_the_promtool_replay_header(tmp_path):
    replay = tmp_path / production.PROMTOOL_REPLAY
    replay.parent.mkdir(parents=True)
    replay.write_text(
        "# TIME TO DETECT\n"
        "#   alert                               fires   TTD     resolves\n"
        "#   InvoiceBurn 6h/30m page             09:04   3 min   09:40\n"
        "#   InvoiceBurn 1h/5m page              09:05   4 min   09:19\n"
        "#   InvoiceDbSlow (nightly batch)       09:07   6 min   09:20\n"
        "#   InvoiceDbSlow (lookup)              09:06   5 min   09:20\n"
        "rule_files: [x.yaml]\n")
    table = production.promtool_ttd(str(tmp_path))
    assert production.production_ttd(table, "InvoiceBurn", "1h/5m") == "4 min"
    assert production.production_ttd(table, "InvoiceBurn", "6h/30m") == "3 min"
    assert production.production_ttd(table, "InvoiceDbSlow") == "6 min (nightly batch), 5 min (lookup)"
    assert production.production_ttd(table, "Unknown") == ""
    assert production.promtool_ttd(str(tmp_path / "nowhere")) == {}


def test_the_replay_file_the_report_quotes_has_a_time_to_detect_table(repo_root):
    assert production.promtool_ttd(repo_root), f"no time-to-detect rows parsed from {production.PROMTOOL_REPLAY}"


def test_chart_labels_keep_the_whole_alert_key():
    key = "PostgresMissingIndexSuspected relname=invoice_lines queryid=-3163332361182627423 columns=customer_id"
    label = chart.alert_label(key)
    assert label.replace("\n", " ") == key and max(len(line) for line in label.splitlines()) <= chart.LABEL_WIDTH


def test_runs_go_to_a_directory_git_ignores_by_default(repo_root):
    args, _ = parse_args(["--quick"])
    out = os.path.relpath(args.out, repo_root)
    assert not out.startswith(".."), out
    probe = os.path.join(out, "simulation-quick.md")
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=repo_root)
    assert ignored.returncode == 0, f"{probe} is not ignored: make simulate would rewrite committed files"
    tracked = subprocess.run(["git", "ls-files", out], cwd=repo_root, capture_output=True, text=True).stdout
    assert tracked == "", tracked


def test_the_committed_example_report_is_linked_and_complete(repo_root):
    example = os.path.join(repo_root, "docs", "examples", "simulation-quick.md")
    with open(example) as f:
        text = f.read()
    assert "](simulation-quick.png)" in text and os.path.exists(example[:-3] + ".png")
    assert "production clock" not in text
    links = {"README.md": "(docs/examples/simulation-quick.md)", "docs/simulation.md": "(examples/simulation-quick.md)"}
    for doc, link in links.items():
        with open(os.path.join(repo_root, doc)) as f:
            assert link in f.read(), f"{doc} does not link the example report"


# --- the replay ---

SIMULATE_DEADLINE_S = 200     # the replay gives up (and cleans up) well before the test's own limits
TEST_WAIT_S = 240             # then SIGTERM; SIGKILL 30 s later; pytest-timeout is 300


def _simulate(repo_root, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sloguard.simulate", *args], cwd=repo_root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Waits; past `timeout`, SIGTERM (so the replay stops its stack), then SIGKILL after 30 s."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate()


@pytest.fixture(scope="module")
def replay(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("simulation")
    proc = _simulate(repo_root, "--quick", "--out", str(out), "--deadline", str(SIMULATE_DEADLINE_S))
    stdout, stderr = _finish(proc, TEST_WAIT_S)
    summary_path = out / "simulation-quick.json"
    assert summary_path.exists(), f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), \
        json.loads(summary_path.read_text()), out


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_sigterm_during_the_replay_stops_every_process_it_started(repo_root, tmp_path):
    proc = _simulate(repo_root, "--quick", "--users", "10000", "--out", str(tmp_path), "--deadline", "150")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        _until(lambda: any(line.startswith("healthy traffic") for line in lines) or proc.poll() is not None,
               170, "the replay reaching healthy traffic")
        assert proc.poll() is None, "".join(lines) + proc.stderr.read()
        text = "".join(lines)
        datadir = re.search(r"\(data (\S+)\)", text).group(1)
        workdir = re.search(r"work dir (\S+)", text).group(1)
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)]
        procs = _processes()
        started = {pid for pid, (ppid, _, cmd) in procs.items() if ppid == proc.pid or datadir in cmd}
        commands = " ".join(procs[p][2] for p in started)
        for name in ("prometheus", "alertmanager", "postgres", "exporters.pg_exporter", "demo.app", "demo.loadgen"):
            assert name in commands, f"{name} not among the replay's processes: {commands}"
        assert len(ports) == 5 and all(_listening(p) for p in ports), ports
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not _running(started), _running(started)
    assert not [p for p, (_, st, cmd) in _processes().items() if (workdir in cmd or datadir in cmd) and st != "Z"]
    assert not [p for p in ports if _listening(p)], ports
    assert not os.path.exists(workdir) and not os.path.exists(datadir)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_replay_gives_up_at_its_deadline_and_stops_everything(repo_root, tmp_path):
    proc = _simulate(repo_root, "--quick", "--users", "10000", "--out", str(tmp_path), "--deadline", "6")
    stdout, stderr = _finish(proc, 90)
    assert proc.returncode == 2, stdout + stderr
    assert "--deadline 6s reached" in stderr
    workdir = re.search(r"work dir (\S+)", stdout).group(1)
    assert not [p for p, (_, st, cmd) in _processes().items() if workdir in cmd and st != "Z"]
    assert not os.path.exists(workdir)


def _fired_after_migration(summary) -> dict[str, dict]:
    migration = summary["outcome"]["marks"]["migration"]
    return {a["key"]: a for a in summary["alerts"] if a["firing_at"] and a["firing_at"] > migration}


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_page_and_database_alerts_fire_after_the_migration(replay):
    proc, summary, _ = replay
    fired = _fired_after_migration(summary)
    pages = [a for a in fired.values() if a["alertname"].endswith("ErrorBudgetBurn") and a["severity"] == "critical"]
    assert pages, f"no SLO page fired: {sorted(fired)}\n{proc.stdout[-2000:]}"
    names = {a["alertname"] for a in fired.values()}
    assert {"PostgresSeqScanLargeTable", "AppDbPoolSaturated", "ApiLatencyP99High"} <= names, sorted(names)
    assert "PostgresSeqScanLargeTable relname=users" in fired
    receivers = {n["receiver"] for n in summary["notifications"] if n["status"] == "firing"}
    assert {"page", "ticket"} <= receivers, "Alertmanager did not route both severities to their receivers"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_nothing_fires_or_notifies_at_start_up_or_on_healthy_traffic(replay):
    """Before the change, PostgresExporterDown fired and paged the ticket receiver before any load."""
    _, summary, _ = replay
    marks = summary["outcome"]["marks"]
    assert marks["start"] < marks["rules_loaded"] < marks["load_start"] < marks["migration"]
    assert summary["outcome"]["active_before_load"] == []
    early = [a["key"] for a in summary["alerts"] if a["firing_at"] and a["firing_at"] < marks["migration"]]
    assert not early, f"alerts fired before the migration: {early}"
    sent = [(n["receiver"], [a["alertname"] for a in n["alerts"]]) for n in summary["notifications"]
            if n["received_at"] < marks["migration"]]
    assert not sent, f"notifications before the migration: {sent}"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_alert_polling_covers_the_diagnosis_and_the_index_build(replay):
    _, summary, _ = replay
    out = summary["outcome"]
    marks, polls = out["marks"], out["poll_times"]
    assert out["polls"] == len(polls) + out["poll_errors"]
    busy = [t for t in polls if marks["diagnose_start"] <= t <= marks["fix_end"]]
    # once a second; a third of that leaves room for a loaded machine, none at all was the old behaviour
    assert len(busy) >= (marks["fix_end"] - marks["diagnose_start"]) / 3, (len(busy), marks)
    assert polls[0] <= marks["rules_loaded"] and polls[-1] >= marks["recovered"]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_missing_index_evidence_names_the_users_table(replay):
    _, summary, _ = replay
    evidence = summary["outcome"]["missing_index_evidence"]
    assert any(e["relname"] == "users" and e["columns"] == "email" for e in evidence), evidence


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_diagnose_recommends_the_index_that_works(replay):
    _, summary, _ = replay
    out = summary["outcome"]
    assert out["diagnose_exit"] == 1, "diagnose should report findings (exit 1)"
    rec = out["recommended"]
    assert rec and rec["data"]["table"] == "public.users" and rec["data"]["columns"] == ["email"], rec
    assert "CREATE INDEX CONCURRENTLY" in out["fix_sql"]
    assert "Seq Scan on users" in out["plan_before_fix"]
    index_name = re.search(r"CREATE INDEX CONCURRENTLY (\S+)", out["fix_sql"]).group(1)
    assert f"Index Scan using {index_name} on users" in out["plan_after_fix"], out["plan_after_fix"]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_every_alert_resolves_after_the_fix(replay):
    proc, summary, _ = replay
    out = summary["outcome"]
    assert out["all_resolved"], f"still active: {out['unresolved']}\n{proc.stdout[-2000:]}"
    open_periods = [a["key"] for a in summary["alerts"] if a["periods"] and a["periods"][-1][1] is None]
    assert not open_periods
    for row in summary["detection"]:
        assert row["resolved_after_s"] is not None and row["resolved_after_s"] > 0, row
        assert row["resolved_before_fix_end"] or row["resolved_after_fix_s"] >= 0, row
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_every_dashboard_panel_query_returns_data_from_the_live_prometheus(replay):
    _, summary, _ = replay
    panels = summary["panels"]
    assert len({(p["uid"], p["panel_id"]) for p in panels}) >= 10, "dashboards not generated? run `make generate`"
    empty = [f"{p['uid']} panel {p['panel_id']} '{p['title']}': {p['expr']} {p['error']}" for p in panels
             if not p["ok"]]
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_report_and_chart_are_written(replay):
    _, summary, out = replay
    text = (out / "simulation-quick.md").read_text()
    assert "## Time to detect" in text and "simulation-quick.png" in text
    assert f"Alert API polls: {summary['outcome']['polls']}, one a second" in text
    assert f"failed: {summary['outcome']['poll_errors']};" in text
    assert "production clock" not in text and "## The load against the record" in text
    assert summary["outcome"]["calibration"]["saturated"]["p99_s"] is not None
    for row in summary["detection"]:
        assert row["alert"] in text
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    png = (out / "simulation-quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
