"""diagnose on lock queues: one finding per root blocker, ranked first, with its statement and the advice that fits.

Schemas: a ledger and its invoices, a jobs queue table, shipments. Shapes: an idle-in-transaction ALTER TABLE with
application sessions queued (DDL is the root), an active report holding a row lock on a queue (no DDL), an active
long query with an ALTER TABLE waiting behind it and the application queued behind the ALTER (DDL waits mid-chain).
"""
from __future__ import annotations

import os
import re
import time

import psycopg
import pytest

from sloguard import names
from sloguard.diagnose.collect import connect
from sloguard.diagnose.render import render_text
from sloguard.diagnose.thresholds import Thresholds
from tests.lock_support import LockScene

DB = "diag_locks"
SCHEMA = """
CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;
CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id int NOT NULL, total numeric);
CREATE TABLE ledger (id bigint PRIMARY KEY, invoice_id bigint NOT NULL, account text NOT NULL, amount numeric);
CREATE TABLE jobs (id bigint PRIMARY KEY, queue text NOT NULL, state text NOT NULL DEFAULT 'ready');
CREATE TABLE shipments (id bigint PRIMARY KEY, tracking_code text NOT NULL);
INSERT INTO invoices SELECT g, g % 3000, g FROM generate_series(1, 30000) g;
INSERT INTO ledger SELECT g, g / 2 + 1, 'acct-' || (g % 1500), g FROM generate_series(1, 150000) g;
INSERT INTO jobs SELECT g, 'mail', 'ready' FROM generate_series(1, 1000) g;
INSERT INTO shipments SELECT g, 'TRK' || g FROM generate_series(1, 150000) g;
ANALYZE;
"""
LEDGER_QUERY = "SELECT * FROM ledger WHERE account = %s"
SHIPMENT_QUERY = "SELECT * FROM shipments WHERE tracking_code = %s"
TH = Thresholds(lock_waiting_sessions=5, min_live_rows=10_000, slow_mean_seconds=0.0001)


@pytest.fixture(scope="module")
def dsn(pg_cluster):
    with pg_cluster.database(DB) as dsn:
        pg_cluster.psql(SCHEMA, DB)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(25):
                conn.execute(LEDGER_QUERY, (f"acct-{i}",)).fetchall()
                conn.execute(SHIPMENT_QUERY, (f"TRK{i * 7}",)).fetchall()
        yield dsn


def _diagnose(dsn: str, repo_root: str):
    conn = connect(dsn)
    try:
        from sloguard.diagnose.collect import collect
        from sloguard.diagnose.rank import rank
        ev = collect(conn, "locks", TH, sample_seconds=0)
        return ev, rank(ev, None, TH)
    finally:
        conn.close()


def test_idle_ddl_root_and_active_row_lock_root_are_one_finding_each(dsn, repo_root):
    scene = LockScene(dsn)
    try:
        migration = scene.hold("ALTER TABLE ledger ADD COLUMN memo text")
        for i in range(4):   # the application's reads queue behind the ALTER's ACCESS EXCLUSIVE
            scene.run_in_background(LEDGER_QUERY.replace("%s", f"'acct-{i}'"))
        # a worker holding a job row and still running: two others want the same row
        scene.run_in_background("SELECT pg_sleep(60)", autocommit=False,
                                before=("UPDATE jobs SET state = 'taken' WHERE id = 7",))
        worker = scene.pids[-1]
        scene.wait_for_sleep(worker)
        for _ in range(2):
            scene.run_in_background("UPDATE jobs SET state = 'taken' WHERE id = 7")
        scene.wait_for_waiters(6)
        time.sleep(1.1)
        ev, findings = _diagnose(dsn, repo_root)
        text = render_text(ev, None, findings, 1, [])
        runbook_rows = _run_runbook_lock_sql(dsn, repo_root)
    finally:
        scene.close()
    locks = [f for f in findings if f.kind == "lock_blocker"]
    assert [f.data["pid"] for f in locks] == [migration, worker]   # most queued first, each once
    assert findings[:2] == locks                                    # ranked before everything else
    ddl, row = locks
    # the migration: idle in transaction, its ALTER named, DDL in the chain, terminate then re-run with lock_timeout
    assert ddl.severity == "critical" and ddl.data["waiters"] == 4 and ddl.data["ddl_in_chain"]
    assert ddl.data["state"] == "idle in transaction" and ddl.data["mode"] == "AccessExclusiveLock"
    assert ddl.data["relation"] == "public.ledger" and "ALTER TABLE ledger ADD COLUMN memo text" in ddl.detail
    assert "idle in transaction" in ddl.title and "DDL in the chain" in ddl.title
    steps = ddl.action.splitlines()
    sql = [line for line in steps if not line.startswith("--")]
    assert sql == [f"SELECT pg_terminate_backend({migration});", "SET lock_timeout = '5s';",
                   "ALTER TABLE ledger ADD COLUMN memo text;"], ddl.action
    # the worker: active, no DDL: cancel it, never terminate it, nothing to re-run
    assert row.data["state"] == "active" and row.data["waiters"] == 2 and not row.data["ddl_in_chain"]
    assert [line for line in row.action.splitlines() if not line.startswith("--")] == [
        f"SELECT pg_cancel_backend({worker});"]
    assert "pg_terminate_backend" not in row.action and "lock_timeout" not in row.action
    assert row.severity == "warning"
    # not an index problem: the statement on the locked table is not planned, nor blamed on an index
    assert not any(f.kind == "missing_index" and f.data["table"] == "public.ledger" for f in findings)
    assert any(f.kind == "missing_index" and f.data["table"] == "public.shipments" for f in findings)
    assert any("index advice not attempted for 1 statement(s) reading public.ledger" in n for n in ev.notes)
    slow_ledger = [f for f in findings if f.kind == "slow_statement" and "FROM ledger" in f.detail]
    assert slow_ledger and all("waits on a lock" in f.action and f.data["waits_on_lock"] for f in slow_ledger)
    # the text report shows the root blockers with their statements
    section = text.split("ROOT BLOCKERS")[1].split("\n\n")[0]
    assert re.search(rf"\n  {migration}\s+idle in transaction\s+\d+\s+AccessExclusiveLock public\.ledger\s+4\s+"
                     rf"{migration}\s", section), section
    # the runbook's Lock waits SQL finds the same root blocker
    assert migration in {r[0] for r in runbook_rows}


def test_ddl_waiting_behind_an_active_query_is_cancelled_first(dsn, repo_root):
    scene = LockScene(dsn)
    try:
        scene.run_in_background("SELECT pg_sleep(60) FROM invoices LIMIT 1")   # a long report: ACCESS SHARE
        report = scene.pids[-1]
        scene.wait_for_sleep(report)
        scene.run_in_background("ALTER TABLE invoices ADD COLUMN paid_at timestamptz")
        alter = scene.pids[-1]
        scene.wait_for_waiters(1)
        for _ in range(3):   # behind the ALTER's request, not behind the report
            scene.run_in_background("SELECT count(*) FROM invoices")
        scene.wait_for_waiters(4)
        time.sleep(1.1)
        _ev, findings = _diagnose(dsn, repo_root)
    finally:
        scene.close()
    locks = [f for f in findings if f.kind == "lock_blocker"]
    assert len(locks) == 1 and findings[0] is locks[0]
    f = locks[0]
    assert f.data["pid"] == report and f.data["state"] == "active" and f.data["waiters"] == 4
    assert f.data["ddl_in_chain"] and f.data["ddl_pids"] == [alter] and f.severity == "critical"
    assert f"the queue forms behind DDL pid {alter}" in f.detail
    sql = [line for line in f.action.splitlines() if not line.startswith("--")]
    assert sql == [f"SELECT pg_cancel_backend({alter});", f"SELECT pg_cancel_backend({report});",
                   "SET lock_timeout = '5s';", "ALTER TABLE invoices ADD COLUMN paid_at timestamptz;"], f.action
    assert "pg_terminate_backend" not in f.action


def _run_runbook_lock_sql(dsn: str, repo_root: str) -> list[tuple]:
    """Every ```sql block of the runbook's Lock waits section, run as written; the rows of the last one."""
    with open(os.path.join(repo_root, names.RUNBOOK_PATH)) as f:
        md = f.read()
    section = md.split("\n## Lock waits\n")[1].split("\n## ")[0]
    blocks = re.findall(r"^```sql\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, "the runbook's Lock waits section has no SQL"
    rows: list[tuple] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for block in blocks:
            cur = c.execute(block)
            rows = cur.fetchall() if cur.description else []
    return rows
