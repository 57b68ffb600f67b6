"""The missing-index check judges a statement by its mean since the previous scrape, not since stats reset.

A long cheap history (index scans), then the index is gone and the same statement seq-scans: the cumulative mean
stays far under the threshold, the mean between two scrapes is far above it. Real PostgreSQL 15 + HypoPG.
"""
from __future__ import annotations

import psycopg
import pytest

from sloguard import names
from tests.exporter_support import RunningExporter, one

DB = "exporter_recent_mean"
ROWS = 60_000
CHEAP_CALLS = 3_000      # ~0.02 ms each with the index
SLOW_CALLS = 30          # a few ms each without it
THRESHOLD_MS = 0.5
QUERY = "SELECT * FROM accounts WHERE email = %s"


@pytest.fixture
def app(pg_cluster):
    with pg_cluster.database(DB):
        pg_cluster.psql("CREATE EXTENSION hypopg; CREATE EXTENSION pg_stat_statements; "
                        "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL, note text); "
                        f"INSERT INTO accounts SELECT g, 'a' || g || '@example.com', repeat('x', 40) "
                        f"FROM generate_series(1, {ROWS}) g; "
                        "CREATE INDEX accounts_email_idx ON accounts (email); ANALYZE accounts", DB)
        with psycopg.connect(pg_cluster.dsn(DB), autocommit=True) as conn:
            for i in range(CHEAP_CALLS):   # the long cheap history
                conn.execute(QUERY, (f"a{i % ROWS + 1}@example.com",), prepare=True).fetchall()
            qid = conn.execute("SELECT queryid FROM pg_stat_statements WHERE query LIKE 'SELECT * FROM accounts%%' "
                               "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                               ).fetchone()[0]
        yield pg_cluster.dsn(DB), qid


def _suspects(samples, qid) -> list[dict]:
    return [s.labels for s in samples if s.name == names.MISSING_INDEX and s.labels["queryid"] == str(qid)]


def test_statement_turned_slow_after_cheap_history_is_flagged_at_the_next_scrape(app):
    dsn, qid = app
    # top-n large: the session cluster holds other tests' statements, some heavier than ours in total
    exp = RunningExporter(["--dsn", dsn, "--statements.top-n", "2000", "--missing-index.min-calls", "5",
                           "--missing-index.min-mean-ms", str(THRESHOLD_MS), "--missing-index.min-table-rows", "1000"])
    try:   # starting it scraped once: the first sample, judged on the cumulative mean
        assert _suspects(exp.scrape(), qid) == [], exp.log()   # cheap, and not called since: nothing to say
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP INDEX accounts_email_idx")
            for i in range(SLOW_CALLS):   # same statement, same queryid, now a seq scan
                conn.execute(QUERY, (f"a{i * 997 + 1}@example.com",), prepare=True).fetchall()
        samples = exp.scrape()
        lbl = {"datname": DB, "user": "postgres", "queryid": str(qid)}
        cumulative_ms = one(samples, names.STATEMENT_MEAN_SECONDS, **lbl) * 1000
        assert one(samples, names.STATEMENT_CALLS, **lbl) == CHEAP_CALLS + SLOW_CALLS
        # the trap the fix is for: since the reset, the statement still looks cheap
        assert cumulative_ms < THRESHOLD_MS / 2, cumulative_ms
        found = _suspects(samples, qid)
        assert [(lv["relname"], lv["columns"]) for lv in found] == [("accounts", "email")], exp.log()
    finally:
        exp.cleanup()
