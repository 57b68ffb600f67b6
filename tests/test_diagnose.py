"""diagnose on a real PostgreSQL: the scenario's database (200k users, login query seq-scanning), a healthy one,
an unreachable one, one without pg_stat_statements, and a lock chain. Prometheus evidence from a real Prometheus.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from sloguard import scenario_data as sd
from sloguard.diagnose.__main__ import diagnose
from sloguard.diagnose.collect import collect, connect
from sloguard.diagnose.rank import rank
from sloguard.diagnose.thresholds import Thresholds
from sloguard.pgcluster import free_port

SCENARIO_DB = "diag_scenario"
LOGIN_CALLS = 60


def _run(repo_root: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sloguard.diagnose", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def scenario_dsn(pg_cluster):
    """The incident's shape: users without an index on email, the login query called LOGIN_CALLS times."""
    with pg_cluster.database(SCENARIO_DB):
        pg_cluster.psql(sd.SCHEMA_SQL + sd.seed_sql(users=200_000, orders_per_user=1), SCENARIO_DB)
        pg_cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS hypopg; "
                        "INSERT INTO schema_migrations VALUES ('20240115_add_user_preferences', now())", SCENARIO_DB)
        with psycopg.connect(pg_cluster.dsn(SCENARIO_DB), autocommit=True) as conn:
            for i in range(LOGIN_CALLS):
                conn.execute(sd.LOGIN_QUERY, (f"user{i * 997 + 1}@example.com",)).fetchall()
        yield pg_cluster.dsn(SCENARIO_DB)


@pytest.fixture
def scratch_db(pg_cluster, request):
    name = "diag_" + request.node.name.removeprefix("test_")[:40]
    with pg_cluster.database(name):
        yield name


def test_scenario_names_users_statement_and_email_index(repo_root, scenario_dsn):
    proc = _run(repo_root, "--format", "json", env={"PG_DSN": scenario_dsn})
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    top = report["findings"][0]
    assert top["kind"] == "missing_index"
    assert top["data"]["table"] == "public.users" and top["data"]["columns"] == ["email"]
    assert top["data"]["verified"] and top["data"]["cost_after"] < top["data"]["cost_before"] / 100
    statements = top["action"].splitlines()
    assert statements[:2] == ["SET lock_timeout = 0; SET statement_timeout = 0;",
                              "CREATE INDEX CONCURRENTLY users_email_idx ON public.users (email);"]
    assert "IF NOT EXISTS" not in top["action"] and "indisvalid" in statements[2]
    assert "DROP INDEX CONCURRENTLY public.users_email_idx" in statements[2]
    assert top["data"]["index"] == "public.users_email_idx"
    stmt = next(s for s in report["evidence"]["statements"] if s["queryid"] == top["data"]["queryid"])
    assert "FROM users WHERE email = $1" in stmt["query"] and stmt["calls"] == LOGIN_CALLS
    suggested = [s["columns"] for s in report["evidence"]["index_suggestions"]]
    assert ["status"] not in suggested and ("status",) not in suggested
    assert any(f["kind"] == "seq_scan" and f["data"]["table"] == "public.users" for f in report["findings"])
    assert report["evidence"]["latest_migration"]["version"] == "20240115_add_user_preferences"


def test_text_report_ranks_the_fix_first(repo_root, scenario_dsn):
    proc = _run(repo_root, "--dsn", scenario_dsn)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(" 1. "))
    assert "missing index on public.users (email)" in lines[first]
    assert lines[first + 2].strip() == "run: SET lock_timeout = 0; SET statement_timeout = 0;"
    assert "CREATE INDEX CONCURRENTLY users_email_idx ON public.users (email)" in lines[first + 3]
    assert "indisvalid" in lines[first + 4]
    assert proc.stderr == ""   # no progress indicator when stderr is not a terminal


def test_markdown_report_has_every_section(repo_root, scenario_dsn):
    proc = _run(repo_root, "--dsn", scenario_dsn, "--format", "markdown")
    assert proc.returncode == 1
    for section in ("## Findings", "## Connections", "## Top statements by total time", "## Top statements by mean time",
                    "## Large tables read by sequential scans", "## Candidate indexes (HypoPG)", "## Lock waits",
                    "## Long transactions", "## Latest migrations"):
        assert f"\n{section}\n" in proc.stdout, section
    assert ("```sql\n   SET lock_timeout = 0; SET statement_timeout = 0;\n   CREATE INDEX CONCURRENTLY users_email_idx"
            in proc.stdout)
    assert "| public.users (email) |" in proc.stdout


def _catalog_snapshot(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {
            "relations": c.execute("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                                   "ORDER BY 1").fetchall(),
            "indexes": c.execute("SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class r "
                                 "ON r.oid = i.indrelid WHERE r.relnamespace = 'public'::regnamespace ORDER BY 1").fetchall(),
            "extensions": c.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall(),
            "writes": c.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                                "ORDER BY 1").fetchall(),
            "settings": c.execute("SELECT name, setting FROM pg_db_role_setting s, pg_settings g "
                                  "WHERE false").fetchall(),
        }


def test_diagnose_changes_nothing_and_leaves_no_hypothetical_index(repo_root, scenario_dsn):
    before = _catalog_snapshot(scenario_dsn)
    conn = connect(scenario_dsn)
    try:
        db, _prom, findings, _notes = diagnose(conn, "scenario", spec=os.path.join(repo_root, "slo.yaml"))
        assert any(f.kind == "missing_index" for f in findings)   # HypoPG was really used on this connection
        assert conn.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 0
        assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE INDEX ON users (email)")
    finally:
        conn.close()
    time.sleep(0.6)   # table counters reach pg_stat_user_tables after the stats flush interval
    assert _catalog_snapshot(scenario_dsn) == before


def test_healthy_database_exits_0(repo_root, pg_cluster, scratch_db):
    pg_cluster.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg; "
                    "CREATE TABLE items (id bigint PRIMARY KEY, name text); "
                    "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g; ANALYZE items", scratch_db)
    with psycopg.connect(pg_cluster.dsn(scratch_db), autocommit=True) as conn:
        for i in range(30):
            conn.execute("SELECT name FROM items WHERE id = %s", (i + 1,)).fetchall()
    proc = _run(repo_root, "--dsn", pg_cluster.dsn(scratch_db))
    assert proc.returncode == 0, proc.stdout
    assert "FINDINGS: none" in proc.stdout and "exit 0: healthy" in proc.stdout
    assert "TOP STATEMENTS BY TOTAL TIME" in proc.stdout and "public.items" not in proc.stdout.split("CANDIDATE")[1]
    report = json.loads(_run(repo_root, "--dsn", pg_cluster.dsn(scratch_db), "--format", "json").stdout)
    assert report["exit_code"] == 0 and all(f["severity"] == "info" for f in report["findings"])
    select = [s for s in report["evidence"]["statements"] if s["query"] == "SELECT name FROM items WHERE id = $1"]
    assert select and select[0]["calls"] == 30   # the evidence is there; it is just not a problem


def test_unreachable_database_exits_2_without_the_password(repo_root):
    dsn = f"host=127.0.0.1 port={free_port()} dbname=app user=api password=s3cr3t-pw connect_timeout=2"
    proc = _run(repo_root, "--dsn", dsn)
    assert proc.returncode == 2
    assert "could not run: database unreachable at 127.0.0.1:" in proc.stderr
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_no_dsn_exits_2_with_the_fix(repo_root):
    env = {k: v for k, v in os.environ.items() if k != "PG_DSN"}
    proc = subprocess.run([sys.executable, "-m", "sloguard.diagnose"], cwd=repo_root, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "PG_DSN" in proc.stderr


def test_missing_pg_stat_statements_exits_2_with_reason(repo_root, pg_cluster, scratch_db):
    proc = _run(repo_root, "--dsn", pg_cluster.dsn(scratch_db))
    assert proc.returncode == 2
    assert "extension missing: pg_stat_statements is not created in database" in proc.stderr
    assert "CREATE EXTENSION pg_stat_statements" in proc.stderr


def test_lock_wait_shows_the_blocking_chain(repo_root, pg_cluster, scratch_db):
    dsn = pg_cluster.dsn(scratch_db)
    pg_cluster.psql("CREATE EXTENSION pg_stat_statements; CREATE TABLE accounts (id int)", scratch_db)
    holder = psycopg.connect(dsn)
    waiter_error: list[BaseException] = []
    waiter_pid: list[int] = []

    def wait_for_lock():
        try:
            with psycopg.connect(dsn, autocommit=True) as w:
                waiter_pid.append(w.info.backend_pid)
                w.execute("SET statement_timeout = '30s'")
                w.execute("SELECT * FROM accounts").fetchall()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            waiter_error.append(e)

    waiter = threading.Thread(target=wait_for_lock)
    try:
        holder.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid
        waiter.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pg_cluster.psql(
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch_db}' AND wait_event_type = 'Lock'",
                scratch_db) != "1":
            time.sleep(0.1)
        time.sleep(1.1)   # waits under a second are reported as context only
        conn = connect(dsn)
        try:
            db, _prom, findings, _notes = diagnose(conn, "locks", spec=os.path.join(repo_root, "slo.yaml"))
        finally:
            conn.close()
        locks = [f for f in findings if f.kind == "lock_blocker"]
        # accounts is locked: its size is not read (no wait), and the root blocker is one finding, ranked first
        assert [t.size_bytes for t in db.tables if t.relname == "accounts"] in ([], [None])
        assert len(locks) == 1 and findings[0] is locks[0] and locks[0].severity == "critical"
        assert locks[0].data["pid"] == holder_pid and locks[0].data["queued_pids"] == [waiter_pid[0]]
        assert locks[0].data["state"] == "idle in transaction" and locks[0].data["ddl_in_chain"]
        assert f"pid {holder_pid} (postgres" in locks[0].detail and "LOCK TABLE accounts" in locks[0].detail
        assert f"pg_terminate_backend({holder_pid})" in locks[0].action
    finally:
        holder.rollback()
        holder.close()
        waiter.join(timeout=30)
    assert not waiter_error


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (scripts/setup-system.sh)")
def test_prometheus_alerts_and_burn_rates(repo_root, scenario_dsn, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""groups:
- name: t
  interval: 1s
  rules:
  - record: slo:sli_error:ratio_rate5m
    expr: vector(0.0144)
    labels: {sloth_id: api-availability, sloth_service: api, sloth_slo: availability}
  - record: slo:error_budget:ratio
    expr: vector(0.001)
    labels: {sloth_id: api-availability, sloth_service: api, sloth_slo: availability}
  - alert: AppDbPoolSaturated
    expr: vector(1)
    labels: {severity: critical}
    annotations: {summary: Application connection pool is saturated.}
  - alert: AvailabilityErrorBudgetBurn
    expr: vector(1)
    labels: {severity: critical, burn_window: 1h/5m}
    annotations: {summary: The availability SLO burns its error budget too fast.}
""")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{evaluation_interval: 1s}}\nrule_files: ['{rules}']\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import requests
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                alerts = requests.get(f"{url}/api/v1/alerts", timeout=1).json()["data"]["alerts"]
                ready = sum(a["state"] == "firing" for a in alerts) == 2
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.3)
        assert ready, "Prometheus did not start firing the test alert in 30 s"
        proc = _run(repo_root, "--dsn", scenario_dsn, "--prometheus", url, "--format", "json")
        assert proc.returncode == 1
        report = json.loads(proc.stdout)
        alerts = [f["title"] for f in report["findings"] if f["kind"] == "alert"]
        assert report["findings"][0]["kind"] == "alert" and len(alerts) == 2
        assert any("AppDbPoolSaturated" in t for t in alerts)
        # which window pair fired is part of the title, so two burn-rate firings read differently
        assert any("AvailabilityErrorBudgetBurn (burn_window=1h/5m)" in t for t in alerts), alerts
        burn = next(f for f in report["findings"] if f["kind"] == "burn_rate")
        assert burn["data"]["slo"] == "api-availability"
        assert burn["data"]["burn_rate"] == pytest.approx(14.4) and burn["severity"] == "critical"
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()


def test_progress_indicator_only_on_a_terminal(repo_root, scenario_dsn):
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "sloguard.diagnose", "--dsn", scenario_dsn], cwd=repo_root,
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:   # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        progress = b"".join(chunks).decode()
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 1
    assert "[4/7] top statements (sampled over 3 s)" in progress and "index advice (HypoPG)" in progress
    assert "[" not in proc.stdout.split("\n")[0]   # the report itself carries no progress noise


def test_statement_slow_now_is_found_despite_a_cheap_history(pg_cluster, scratch_db):
    """3,000 cheap index lookups, then the index goes and the same statement seq-scans during the sample window:
    the mean since reset stays under the threshold, the window's mean is far over it."""
    dsn = pg_cluster.dsn(scratch_db)
    pg_cluster.psql("CREATE EXTENSION pg_stat_statements; "
                    "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL, note text); "
                    "INSERT INTO accounts SELECT g, 'a' || g || '@example.com', repeat('x', 40) "
                    "FROM generate_series(1, 60000) g; CREATE INDEX accounts_email_idx ON accounts (email); "
                    "ANALYZE accounts", scratch_db)
    query = "SELECT * FROM accounts WHERE email = %s"
    work = psycopg.connect(dsn, autocommit=True)
    try:
        for i in range(3000):
            work.execute(query, (f"a{i + 1}@example.com",), prepare=True).fetchall()

        def slow_phase_during_the_window(seconds: float) -> None:
            assert 0 < seconds <= 3
            work.execute("DROP INDEX accounts_email_idx")
            for i in range(30):
                work.execute(query, (f"a{i * 997 + 1}@example.com",), prepare=True).fetchall()

        th = Thresholds(slow_mean_seconds=0.0005, min_live_rows=1000)
        conn = connect(dsn)
        try:
            windowed = collect(conn, "t", th, sample_seconds=3, sleep=slow_phase_during_the_window)
            cumulative = collect(conn, "t", th, sample_seconds=0)
        finally:
            conn.close()
    finally:
        work.close()

    def login(ev):
        return next(s for s in ev.statements if s.query and s.query.startswith("SELECT * FROM accounts"))

    stmt = login(windowed)
    assert stmt.calls == 3030 and stmt.mean_exec_seconds < th.slow_mean_seconds / 2   # the history hides it
    assert windowed.sample_seconds > 0   # measured (the injected sleep does the work instead of sleeping)
    slow = [f for f in rank(windowed, None, th) if f.kind == "slow_statement" and f.data["queryid"] == stmt.queryid]
    assert len(slow) == 1 and slow[0].data["recent"] and slow[0].data["mean_seconds"] >= th.slow_mean_seconds
    assert "(30 calls)" in slow[0].title
    # --sample-seconds 0: the mean since the reset, which misses it (the behaviour the window fixes)
    assert not any(f.kind == "slow_statement" and f.data["queryid"] == stmt.queryid
                   for f in rank(cumulative, None, th))
    # >=: the advisor's EXPLAIN of it in the first pass is a nested entry with the same queryid
    assert cumulative.recent == {} and login(cumulative).calls >= 3030
