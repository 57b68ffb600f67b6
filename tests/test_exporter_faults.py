"""Exporter faults: roles and privileges, secrets, database down and back, concurrent scrapes, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from exporters.pg_exporter.connection import APPLICATION_NAME, redact_dsn
from sloguard import names, scenario_data
from sloguard.pgcluster import TempCluster
from tests.exporter_support import ROOT, RunningExporter, one, parse, values

DB = "exporter_faults"
MONITOR_PASSWORD = "m0n-S3cret-pw-7731"
PLAIN_PASSWORD = "pl41n-S3cret-pw-2210"


@pytest.fixture(scope="module")
def cluster(pg_cluster):
    with pg_cluster.database(DB):
        pg_cluster.psql(scenario_data.SCHEMA_SQL + scenario_data.seed_sql(users=20_000)
                        + "CREATE EXTENSION pg_stat_statements;"
                        + "INSERT INTO schema_migrations VALUES ('20240115143100', '2024-01-15T14:31:00Z');", DB)
        pg_cluster.psql(f"""
            DROP ROLE IF EXISTS sloguard_monitor; DROP ROLE IF EXISTS sloguard_plain;
            CREATE ROLE sloguard_monitor LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor;
            CREATE ROLE sloguard_plain LOGIN PASSWORD '{PLAIN_PASSWORD}';
        """)
        # the README's setup: pg_monitor + SELECT on the migrations table and the tables EXPLAIN looks at
        pg_cluster.psql("GRANT SELECT ON schema_migrations, users, orders TO sloguard_monitor", DB)
        yield pg_cluster
    pg_cluster.psql("DROP ROLE IF EXISTS sloguard_monitor; DROP ROLE IF EXISTS sloguard_plain")


def test_pg_monitor_role_with_password_file_works_and_password_never_shown(cluster, tmp_path):
    pw_file = tmp_path / "pw"
    pw_file.write_text(MONITOR_PASSWORD + "\n")
    exp = RunningExporter(["--dsn", cluster.dsn(DB, user="sloguard_monitor"), "--no-hypopg",
                           "--missing-index.min-mean-ms", "0", "--missing-index.min-calls", "1"],
                          env={"PG_EXPORTER_PASSWORD_FILE": str(pw_file)})
    try:
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
            for i in range(3):
                conn.execute(scenario_data.LOGIN_QUERY, (f"user{i + 1}@example.com",))
        text = exp.scrape_text()
        samples = parse(text)
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    assert one(samples, names.PG_UP) == 1
    for collector in names.COLLECTORS:
        assert one(samples, names.COLLECTOR_SUCCESS, collector=collector) == 1, log
    # pg_monitor sees other roles' statements (the superuser ran the login query)
    assert values(samples, names.STATEMENT_CALLS, datname=DB, user="postgres")
    # without HypoPG: the selectivity-based candidate, no "after" cost
    suspects = [s.labels for s in samples if s.name == names.MISSING_INDEX]
    assert [(lv["relname"], lv["columns"]) for lv in suspects] == [("users", "email")]
    assert values(samples, names.MISSING_INDEX_COST_AFTER) == []
    assert MONITOR_PASSWORD not in text and MONITOR_PASSWORD not in log


def test_password_in_dsn_is_redacted(cluster):
    dsn = cluster.dsn(DB, user="sloguard_monitor", password=MONITOR_PASSWORD)
    exp = RunningExporter(["--dsn", dsn, "--log-level", "debug"])
    try:
        text = exp.scrape_text()
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    assert one(parse(text), names.PG_UP) == 1
    assert "password=***" in log   # the startup line names the target, redacted
    assert MONITOR_PASSWORD not in text and MONITOR_PASSWORD not in log
    assert MONITOR_PASSWORD not in redact_dsn(f"postgresql://u:{MONITOR_PASSWORD}@h/db")


def test_role_without_pg_monitor_gets_grant_message(cluster):
    exp = RunningExporter(["--dsn", cluster.dsn(DB, user="sloguard_plain")], env={"PGPASSWORD": PLAIN_PASSWORD})
    try:
        first = exp.scrape()
        second = exp.scrape()
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    assert one(first, names.PG_UP) == 1
    assert one(first, names.COLLECTOR_SUCCESS, collector="tables") == 1          # visible to everyone
    assert values(first, names.TABLE_SEQ_SCAN, relname="users")
    for collector in ("statements", "connections", "locks", "migrations"):
        assert one(first, names.COLLECTOR_SUCCESS, collector=collector) == 0
    errors = [one(s, names.SCRAPE_ERRORS, collector="statements") for s in (first, second)]
    assert errors[1] == errors[0] + 1 and errors[0] >= 1
    assert values(first, names.STATEMENT_CALLS) == []
    assert "GRANT pg_monitor TO sloguard_plain;" in log
    assert "GRANT SELECT ON schema_migrations TO sloguard_plain;" in log
    # one clear line per problem, not one per scrape, and no traceback
    assert log.count("collector statements failed") == 1
    assert "Traceback" not in log and PLAIN_PASSWORD not in log


def test_hypopg_missing_fails_only_that_collector(cluster):
    exp = RunningExporter(["--dsn", cluster.dsn(DB)])   # this database has no hypopg extension
    try:
        samples = exp.scrape()
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    assert one(samples, names.COLLECTOR_SUCCESS, collector="missing_indexes") == 0
    assert one(samples, names.COLLECTOR_SUCCESS, collector="statements") == 1
    assert "CREATE EXTENSION hypopg;" in log and "--no-hypopg" in log


def test_pg_stat_statements_missing_fails_only_statements(cluster):
    with cluster.database("exporter_nopss") as dsn:
        exp = RunningExporter(["--dsn", dsn])
        try:
            samples = exp.scrape()
        finally:
            exp.cleanup()
    assert one(samples, names.PG_UP) == 1
    assert one(samples, names.COLLECTOR_SUCCESS, collector="statements") == 0
    assert one(samples, names.COLLECTOR_SUCCESS, collector="connections") == 1
    assert one(samples, names.COLLECTOR_SUCCESS, collector="migrations") == 1   # no table: no series, no failure
    assert values(samples, names.MIGRATION_LAST_APPLIED) == []


def _app_sessions(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                         (APPLICATION_NAME,)).fetchone()[0]


def test_concurrent_scrapes_share_one_connection(cluster):
    exp = RunningExporter(["--dsn", cluster.dsn(DB)])
    seen: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set() and len(seen) < 5000:
            seen.append(_app_sessions(cluster.dsn(DB)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            texts = list(pool.map(lambda _: exp.scrape_text(), range(32)))
    finally:
        stop.set()
        watcher.join(10)
        exp.cleanup()
    assert all(one(parse(t), names.PG_UP) == 1 for t in texts)
    assert len(seen) >= 3 and max(seen) == 1, seen


def test_database_down_at_start_and_mid_run():
    with TempCluster() as own:   # its own cluster: we stop and start it
        own.stop_server()
        exp = RunningExporter(["--dsn", own.dsn("postgres"), "--query-timeout", "2"])
        try:
            down = [exp.scrape() for _ in range(3)]          # endpoint answers while the database is down
            assert all(one(s, names.PG_UP) == 0 for s in down)
            conn_errors = [one(s, names.SCRAPE_ERRORS, collector="connection") for s in down]
            assert conn_errors[2] - conn_errors[0] == 2   # one per failed scrape
            assert all(v == 0 for v in values(down[-1], names.COLLECTOR_SUCCESS))
            own.restart_server()
            own.wait_ready()
            up = exp.scrape()
            assert one(up, names.PG_UP) == 1
            assert one(up, names.COLLECTOR_SUCCESS, collector="connections") == 1
            own.stop_server()                                  # mid-run: the kept connection dies
            assert all(one(exp.scrape(), names.PG_UP) == 0 for _ in range(3))
            own.restart_server()
            own.wait_ready()
            assert one(exp.scrape(), names.PG_UP) == 1         # reconnected
            assert _app_sessions(own.dsn("postgres")) == 1
        finally:
            exp.stop()
            log = exp.log()
            exp.cleanup()
    assert "Traceback" not in log
    assert log.count("database unreachable") == 2          # one line per outage, not one per scrape
    assert log.count("reachable again") == 2


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "no database"),
    (["--dsn", "host=127.0.0.1", "--web.listen-address", "nope"], {}, "HOST:PORT"),
    (["--dsn", "host=127.0.0.1", "--migrations-table", "x; DROP TABLE users"], {}, "--migrations-table"),
    (["--dsn", "host=127.0.0.1", "--password-file", "/nonexistent/pw"], {}, "/nonexistent/pw"),
    (["--dsn", "host=127.0.0.1 ==broken"], {}, "not a valid libpq DSN"),
    (["--dsn", "host=127.0.0.1", "--statements.top-n", "0"], {}, "must be > 0"),
])
def test_bad_input_exits_2_with_clear_message(args, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_EXPORTER_")}
    r = subprocess.run([sys.executable, "-m", "exporters.pg_exporter", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=30, env={**clean, "PYTHONPATH": ROOT, **env})
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
