"""Every SQL block of the runbook runs, as the role the runbook names, on PostgreSQL 15.

The runbook says its SQL runs as `sloguard_oncall` and lists that role's grants in its set-up block. This test
builds an application schema of its own (tables owned by `api_owner`, an `api` application session running a
slow statement), runs the runbook's set-up block as a superuser, then every other block in document order as
`sloguard_oncall`: read-only blocks must see what they exist to show (no "<insufficient privilege>", no silently
empty pg_stats), blocks marked `-- changes:` run inside a transaction that is rolled back (index builds, which
cannot run in one, run for real on the test's table), blocks marked `runbook-test: skip (...)` are skipped with
their reason.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pglast
import psycopg
import pytest

from tests.test_docs import RUNBOOK, read, sql_blocks

ROLE = "sloguard_oncall"
DB = "runbook_sql"
SECRET = "oncall-test-secret"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# statements that exist to show something: an empty answer as this role means a missing grant
MUST_RETURN_ROWS = (r"^EXPLAIN", r"\bFROM pg_stats\b", r"\bFROM pg_stat_statements\b", r"\bFROM schema_migrations\b",
                    r"\bFROM pg_stat_user_tables\b", r"\bFROM pg_extension\b", r"hypopg_create_index",
                    r"current_setting\(", r"indisvalid FROM pg_index WHERE indexrelid", r"WHERE indrelid =")
APP_STATEMENT = "SELECT pg_sleep(120), count(*) FROM users WHERE status = 'active'"

APP_SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, status text NOT NULL, name text NOT NULL,
                    created_at timestamptz NOT NULL, user_preferences jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, amount_cents int NOT NULL);
CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users SELECT g, 'user' || g || '@example.com',
       CASE WHEN g % 10 < 8 THEN 'active' WHEN g % 10 = 8 THEN 'inactive' ELSE 'suspended' END,
       'User ' || g, timestamptz '2022-01-01' + g * interval '1 minute', NULL
FROM generate_series(1, 30000) AS g;
INSERT INTO orders SELECT g, (g % 30000) + 1, g % 5000 FROM generate_series(1, 60000) AS g;
INSERT INTO schema_migrations (version) VALUES ('20240101_initial_schema'), ('20240115_add_user_preferences');
GRANT SELECT, INSERT, UPDATE, DELETE ON users, orders TO api;
ANALYZE;
"""


def blocks() -> list[str]:
    return sql_blocks(read(RUNBOOK))


def _drop_roles(cluster) -> None:
    for role in (ROLE, "api", "api_owner"):
        cluster.psql(f"DROP ROLE IF EXISTS {role}")


class AppSession:
    """The application, as role `api`, running one slow statement the runbook's cancel block must find. Started
    just before that block: a running statement holds a snapshot, which the runbook's index build waits for."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.outcome: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn.execute(APP_STATEMENT)
            self.outcome = "completed"
        except psycopg.errors.QueryCanceled:
            self.outcome = "cancelled"
        except psycopg.Error as e:
            self.outcome = f"error: {e}"

    def stop(self, cluster) -> None:
        if self.thread.is_alive():
            cluster.psql(f"SELECT pg_cancel_backend({self.pid})")
        self.thread.join(30)
        self.conn.close()


@pytest.fixture(scope="module")
def oncall(pg_cluster):
    """The test's application database after the runbook's set-up block; yields (oncall DSN, app DSN). An
    application session sits idle in a transaction all along, so pg_stat_activity blocks have someone to show."""
    setup = [b for b in blocks() if "runbook-test: setup" in b]
    assert len(setup) == 1, "the runbook needs exactly one set-up block (marked `-- runbook-test: setup`)"
    _drop_roles(pg_cluster)
    pg_cluster.psql("CREATE ROLE api_owner NOLOGIN; CREATE ROLE api LOGIN PASSWORD 'api-test-secret'")
    try:
        with pg_cluster.database(DB):
            pg_cluster.psql(f"GRANT CREATE ON SCHEMA public TO api_owner; SET ROLE api_owner; {APP_SCHEMA}", DB)
            pg_cluster.psql(setup[0], DB)
            pg_cluster.psql(f"ALTER ROLE {ROLE} PASSWORD '{SECRET}'")
            app_dsn = pg_cluster.dsn(DB, user="api", password="api-test-secret")
            with psycopg.connect(app_dsn) as idle:
                idle.execute("SELECT 'application session'")   # no lock on users, no snapshot kept
                yield pg_cluster.dsn(DB, user=ROLE, password=SECRET), app_dsn
    finally:
        _drop_roles(pg_cluster)


def run_block(dsn: str, block: str) -> list[tuple[str, list[tuple]]]:
    """Statement by statement; `-- changes:` blocks in a rolled-back transaction unless they build indexes."""
    statements = pglast.split(block)
    results = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        in_tx = "-- changes:" in block and "CONCURRENTLY" not in block
        if in_tx:
            conn.execute("BEGIN")
        try:
            for stmt in statements:
                cur = conn.execute(stmt)
                results.append((stmt, cur.fetchall() if cur.description else []))
        finally:
            if in_tx:
                conn.execute("ROLLBACK")
    return results


def test_the_runbook_names_the_role_and_its_grants_at_the_top():
    top = read(RUNBOOK).split("## First five minutes")[0]
    for needed in (ROLE, "pg_monitor", "pg_signal_backend", "api_owner"):
        assert needed in top, f"the runbook's introduction should name {needed}"
    setup = next(b for b in blocks() if "runbook-test: setup" in b)
    for grant in ("GRANT pg_monitor TO", "GRANT pg_signal_backend TO", "GRANT api_owner TO"):
        assert f"{grant} {ROLE}" in setup
    incident_path = read(RUNBOOK).split("## Set-up")[0]
    assert "CREATE EXTENSION" not in "\n".join(sql_blocks(incident_path)), "extension set-up is not a 3 a.m. step"


@pytest.mark.parametrize("index", range(len(blocks())))
def test_runbook_block_runs_as_the_oncall_role(index, oncall, pg_cluster):
    dsn, app_dsn = oncall
    block = blocks()[index]
    if "runbook-test: setup" in block:
        pytest.skip("the set-up block ran as a superuser in the fixture")
    skip = re.search(r"runbook-test: skip \((.+)\)", block)
    if skip:
        assert len(skip.group(1)) > 10, "a skipped block must say why"
        pytest.skip(skip.group(1))
    if "query_id =" in block:
        app = AppSession(app_dsn)
        try:
            check_cancel_block(dsn, block, app)
        finally:
            app.stop(pg_cluster)
        return
    check_results(block, run_block(dsn, block))


def check_cancel_block(dsn: str, block: str, app: AppSession) -> None:
    """The runbook's literal stands for the alert's queryid label: use the running application statement's."""
    time.sleep(10.5)   # the block only cancels statements running for more than 10 s
    with psycopg.connect(dsn, autocommit=True) as c:
        qid = c.execute("SELECT query_id FROM pg_stat_activity WHERE pid = %s", (app.pid,)).fetchone()[0]
    assert qid is not None, "pg_stat_activity.query_id is empty: compute_query_id should be on"
    results = run_block(dsn, re.sub(r"query_id = -?\d+", f"query_id = {qid}", block))
    assert results[-1][1] == [(app.pid, True)], results
    app.thread.join(10)
    assert app.outcome == "cancelled"


def check_results(block: str, results: list[tuple[str, list[tuple]]]) -> None:
    for stmt, rows in results:
        assert "<insufficient privilege>" not in repr(rows), f"{ROLE} cannot see what this shows:\n{stmt}"
        if any(re.search(p, stmt, flags=re.M) for p in MUST_RETURN_ROWS):
            assert rows, f"returns no rows as {ROLE} (a missing grant?):\n{stmt}"
        if "indisvalid FROM pg_index WHERE indexrelid" in stmt:
            assert rows[0][1] is True, f"the index the block builds is not valid: {rows}"
        if stmt.startswith("EXPLAIN") and "hypopg_create_index" in block:
            assert "Index Scan" in rows[0][0], f"the hypothetical index is not used as {ROLE}: {rows}"
        if re.search(r"\bFROM pg_stats\b", stmt):
            assert {r[0] for r in rows} == {"email", "status"}
        if "FROM pg_stat_activity" in stmt and "left(query" in stmt and "state <> 'idle'" in stmt:
            assert "application session" in repr(rows), f"{ROLE} should see the application's session:\n{stmt}"


def test_runbook_diagnose_command_runs_as_the_oncall_role(oncall):
    """The first-five-minutes command, without Prometheus: it must read the database as this role."""
    dsn, _app_dsn = oncall
    command = re.search(r"make diagnose ARGS=\"--dsn '([^']+)'(.*?)\"", read(RUNBOOK))
    assert command and f"user={ROLE}" in command.group(1), "the runbook's diagnose command should connect as the role"
    proc = subprocess.run([sys.executable, "-m", "sloguard.diagnose", "--dsn", dsn, "--format", "markdown",
                           "--sample-seconds", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert proc.stdout.strip(), proc.stderr
