"""diagnose's index finding beyond a plain filter, on invented schemas (tests/advisor_support.SHAPES, real PostgreSQL
15 + HypoPG): a skewed job queue gets the partial index with the values it wins and loses for, and an invoices ⋈
customers join gets the index on its unindexed foreign key, named as such. The printed statements are then run.
"""
from __future__ import annotations

import psycopg
import pytest

from sloguard.diagnose.render import render_markdown, render_text
from sloguard.diagnose.thresholds import Thresholds
from tests.advisor_support import built_index, plan_uses, shapes_sql
from tests.diagnose_support import diagnose_now

DB = "diag_index_shapes"
FAILED_JOBS = "SELECT id, payload FROM jobs WHERE status = %s"
CUSTOMER_INVOICES = "SELECT i.* FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE c.code = %s"
TH = Thresholds(min_live_rows=10_000, slow_mean_seconds=0.0001)


@pytest.fixture(scope="module")
def report(pg_cluster):
    """(evidence, findings) of diagnose after the application ran both statements (server-side `$1` parameters)."""
    with pg_cluster.database(DB) as dsn:
        pg_cluster.psql("CREATE EXTENSION pg_stat_statements;" + shapes_sql("billing", "jobs"), DB)
        with psycopg.connect(dsn, autocommit=True) as app:
            for i in range(20):
                app.execute(FAILED_JOBS, ("failed",)).fetchall()
                app.execute(CUSTOMER_INVOICES, (f"C{i * 37 + 1}",)).fetchall()
        yield (dsn, *diagnose_now(dsn, TH))


def _index_finding(findings, table: str):
    found = [f for f in findings if f.kind == "missing_index" and f.data["table"] == table]
    assert len(found) == 1, [(f.kind, f.title) for f in findings]
    return found[0]


def test_skewed_queue_gets_the_partial_index_and_the_values_it_is_for(report):
    dsn, ev, findings = report
    f = _index_finding(findings, "public.jobs")
    assert f.title == "missing partial index on public.jobs (status) WHERE status <> 'done'"
    assert f.data["where"] == "status <> 'done'" and f.data["index"] == "public.jobs_status_partial_idx"
    statements = f.action.splitlines()
    assert statements[1] == ("CREATE INDEX CONCURRENTLY jobs_status_partial_idx ON public.jobs (status) "
                             "WHERE status <> 'done';")
    assert "DROP INDEX CONCURRENTLY public.jobs_status_partial_idx" in statements[2]
    assert f.detail.startswith("wins for status = 'failed' (0.")
    assert "; not for any value (generic plan), status = 'done' (9" in f.detail
    text = render_text(ev, None, findings, 1, [])
    assert "WHERE status <> 'done'" in text and "wins for status = 'failed'" in text
    assert "public.jobs (status) WHERE status <> 'done'" in render_markdown(ev, None, findings, 1, [])
    # the printed statements run as printed, and the index they build serves 'failed', not 'done'
    with psycopg.connect(dsn, autocommit=True) as conn, built_index(conn, statements, "jobs_status_partial_idx"):
        assert plan_uses(conn, FAILED_JOBS % "'failed'", "jobs_status_partial_idx")
        assert not plan_uses(conn, FAILED_JOBS % "'done'", "jobs_status_partial_idx")


def test_join_on_an_unindexed_foreign_key_gets_the_join_key_fix(report):
    _dsn, ev, findings = report
    f = _index_finding(findings, "public.invoices")
    assert f.title == "missing index on public.invoices (customer_id)" and f.data["kind"] == "join"
    assert f.detail.startswith("join key invoices.customer_id = customers.id "
                               "(foreign key invoices_customer_id_fkey, no index); plan cost ")
    assert f.action.splitlines()[1] == "CREATE INDEX CONCURRENTLY invoices_customer_id_idx ON public.invoices (customer_id);"
    assert f.data["index"] == "public.invoices_customer_id_idx" and f.data["not_for"] == []
    text = render_text(ev, None, findings, 1, [])
    assert "join key invoices.customer_id = customers.id" in text
