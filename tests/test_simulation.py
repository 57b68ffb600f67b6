"""The incident replay end to end (quick mode, marked e2e), and the pieces it is built from.

The e2e test runs `python -m sloguard.simulate --quick` as a user would, then reads the JSON summary it writes:
alerts come from the live Prometheus and Alertmanager APIs, the diagnosis from `sloguard.diagnose`, plans from
PostgreSQL's EXPLAIN, panel results from running every dashboard query against the live Prometheus.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg
import pytest
import yaml

from demo.alert_sink import AlertSink
from demo.loadgen import LoadGen
from demo.pool import BoundedPool, PoolTimeout
from sloguard.simulate import configs, seed

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


def test_compress_rules_scales_for_and_drops_the_ticket_tier_only_when_asked(repo_root):
    with open(os.path.join(repo_root, "alerts/sloguard-rules.yaml")) as f:
        text = f.read()
    quick, summary = configs.compress_rules(text, 60, 6000, keep_ticket_tier=False)
    rules = [r for g in yaml.safe_load(quick)["groups"] for r in g["rules"]]
    assert not [r for r in rules if r.get("labels", {}).get("sloth_severity") == "ticket"]
    assert summary["dropped"], "the ticket tier should be listed as dropped"
    p99 = next(r for r in rules if r.get("alert") == "ApiLatencyP99High")
    assert p99["for"] == "2s" and "[6s]" in p99["expr"]
    full, summary_full = configs.compress_rules(text, 60, 6000, keep_ticket_tier=True)
    assert not summary_full["dropped"]
    assert any(r.get("labels", {}).get("sloth_severity") == "ticket"
               for g in yaml.safe_load(full)["groups"] for r in g["rules"])
    # names unchanged: the dashboards read the same recorded series
    records = {r["record"] for r in rules if "record" in r}
    assert "slo:sli_error:ratio_rate5m" in records


def test_prometheus_config_rejects_a_job_without_local_target(repo_root):
    with open(os.path.join(repo_root, "deploy/prometheus/prometheus.yml")) as f:
        text = f.read()
    with pytest.raises(KeyError, match="has no local target"):
        configs.prometheus_config(text, "/r.yaml", {"api": "127.0.0.1:1"}, "127.0.0.1:2", "1s", "x", "2s")


def test_alertmanager_copy_posts_to_the_local_sink_with_fast_timers(repo_root):
    with open(os.path.join(repo_root, "deploy/alertmanager/alertmanager.yml")) as f:
        cfg = yaml.safe_load(configs.alertmanager_config(f.read(), "http://127.0.0.1:5555"))
    urls = [h["url"] for r in cfg["receivers"] for h in r["webhook_configs"]]
    assert urls and all(u.startswith("http://127.0.0.1:5555/") for u in urls)
    assert cfg["route"]["group_wait"] == "1s"


# --- demo pieces against the real PostgreSQL of the session ---


@pytest.fixture(scope="module")
def demo_db(pg_cluster):
    pg_cluster.psql("DROP DATABASE IF EXISTS sim_demo")
    pg_cluster.psql("CREATE DATABASE sim_demo")
    pg_cluster.psql(seed.setup_sql(1000).replace("CREATE EXTENSION IF NOT EXISTS hypopg;", ""), "sim_demo")
    return pg_cluster.dsn("sim_demo")


def test_pool_times_out_and_counts_waiters_when_exhausted(demo_db):
    pool = BoundedPool(demo_db, max_size=1, statement_timeout_ms=2000)
    waiting_seen = []
    try:
        with pool.connection(time.monotonic() + 1) as conn:
            assert pool.in_use == 1
            conn.execute("SELECT 1")

            def second():
                with pytest.raises(PoolTimeout), pool.connection(time.monotonic() + 0.5):
                    pass
            t = threading.Thread(target=second)
            t.start()
            time.sleep(0.2)
            waiting_seen.append(pool.waiting)
            t.join(5)
        assert waiting_seen == [1]
        assert pool.in_use == 0 and pool.waiting == 0
        with pool.connection(time.monotonic() + 1) as conn:   # the connection went back to the pool
            assert conn.execute("SELECT 2").fetchone()[0] == 2
    finally:
        pool.close()


def test_demo_api_serves_the_login_query_and_answers_504_past_its_deadline(demo_db, repo_root):
    from sloguard.pgcluster import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "demo.app", "--dsn", demo_db, "--listen", f"127.0.0.1:{port}",
                             "--pool-size", "1", "--request-timeout", "0.5"], cwd=repo_root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blocker = None
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
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
        proc.terminate()
        proc.wait(10)


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


# --- the replay ---


@pytest.fixture(scope="module")
def replay(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("simulation")
    proc = subprocess.run([sys.executable, "-m", "sloguard.simulate", "--quick", "--out", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=280)
    summary_path = out / "simulation-quick.json"
    assert summary_path.exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(summary_path.read_text()), out


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
    # nothing fired during the healthy phase
    migration = summary["outcome"]["marks"]["migration"]
    load_start = summary["outcome"]["marks"]["load_start"]
    early = [a["key"] for a in summary["alerts"] if a["firing_at"] and load_start < a["firing_at"] < migration]
    assert not early, f"alerts fired on healthy traffic: {early}"


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
    report = (out / "simulation-quick.md").read_text()
    assert "## Time to detect" in report and "simulation-quick.png" in report
    for row in summary["detection"]:
        assert row["alert"] in report
    png = (out / "simulation-quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
