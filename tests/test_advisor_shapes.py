"""The index advisor beyond a top-level equality filter, on schemas that are not the incident's (real PostgreSQL 15
+ HypoPG): foreign-key joins, composite filters, ranges against stable expressions, skewed values, and
pg_stat_statements texts that cannot be planned as they are.
"""
from __future__ import annotations

import re

import psycopg
import pytest

from sloguard.pginsight import advisor
from sloguard.pginsight.advisor import UnsupportedStatement, advise, advise_statements, suggest_for_query
from sloguard.pginsight.sqltext import inline_values
from tests.advisor_support import built_index, leftovers, plan_uses, shapes_sql

SCHEMA = shapes_sql()


@pytest.fixture(scope="module")
def shop_db(pg_cluster):
    with pg_cluster.database("advisor_shapes") as dsn:
        pg_cluster.psql(SCHEMA, "advisor_shapes")
        yield dsn


@pytest.fixture
def conn(shop_db):
    with psycopg.connect(shop_db, autocommit=True) as c:
        yield c


def _show(found):
    for s in found:
        print(f"  {s.relname}{s.columns} where={s.where} kind={s.kind} {s.cost_before:.2f} -> {s.cost_after:.2f} "
              f"wins_for={s.wins_for} not_for={s.not_for} {s.detail}")


JOINS = {
    "invoices_of_customer": ("SELECT i.* FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE c.code = $1",
                             "invoices", "customer_id", "customers.id", "invoices_customer_id_fkey"),
    "revenue_by_region": ("SELECT c.region, sum(i.amount_cents) FROM customers c JOIN invoices i "
                          "ON i.customer_id = c.id WHERE c.code = ANY($1) GROUP BY c.region",
                          "invoices", "customer_id", "customers.id", "invoices_customer_id_fkey"),
    "shipments_of_warehouse": ("SELECT s.* FROM shipments s JOIN warehouses w ON w.id = s.warehouse_id "
                               "WHERE w.name = $1", "shipments", "warehouse_id", "warehouses.id",
                               "shipments_warehouse_id_fkey"),
}


@pytest.mark.parametrize("join_method", ["planner's choice", "nested loop"])
@pytest.mark.parametrize("case", sorted(JOINS))
def test_foreign_key_join_gets_the_join_key_index(conn, case, join_method):
    sql, table, column, other, fk = JOINS[case]
    if join_method == "nested loop":   # the inner side seq-scanned under a Join Filter, not a Hash Cond
        conn.execute("SET enable_hashjoin = off")
        conn.execute("SET enable_mergejoin = off")
    conn.execute("SET plan_cache_mode = force_generic_plan")   # as the advisor plans it
    plan = advisor._generic_plan(conn, *advisor.plannable(sql))
    nodes = list(advisor.planner.walk(plan["Plan"]))
    assert any(n.get("Relation Name") == table and n["Node Type"] == "Seq Scan" for n in nodes)
    assert not any(n.get("Filter") and n.get("Relation Name") == table for n in nodes)   # nothing but the join
    found = suggest_for_query(conn, sql)
    _show(found)
    assert [(s.relname, s.columns, s.kind, s.where) for s in found] == [(table, (column,), "join", None)]
    s = found[0]
    assert s.verified and s.cost_after <= 0.5 * s.cost_before
    assert s.detail == f"join key {table}.{column} = {other} (foreign key {fk}, no index)"
    assert s.ddl == f"CREATE INDEX CONCURRENTLY {table}_{column}_idx ON public.{table} ({column})"
    assert leftovers(conn) == ([], [])


def test_join_key_with_an_index_is_left_alone(conn):
    conn.execute("CREATE INDEX invoices_customer_id_issued_on ON invoices (customer_id, issued_on)")
    try:
        assert suggest_for_query(conn, JOINS["invoices_of_customer"][0]) == []
    finally:
        conn.execute("DROP INDEX invoices_customer_id_issued_on")


def test_composite_filter_on_line_items(conn):
    found = suggest_for_query(conn, "SELECT qty FROM line_items WHERE product_id = $1 AND warehouse_code = $2")
    _show(found)
    assert [(s.relname, s.columns, s.kind) for s in found] == [("line_items", ("product_id", "warehouse_code"),
                                                                 "filter")]
    assert found[0].cost_after <= 0.5 * found[0].cost_before


@pytest.mark.parametrize("window", ["now() - interval '15 minutes'", "CURRENT_TIMESTAMP - '15 min'::interval",
                                    "statement_timestamp() - make_interval(mins => 15)"])
def test_range_against_a_stable_expression(conn, window):
    sql = f"SELECT * FROM events WHERE created_at > {window}"
    found = suggest_for_query(conn, sql)
    _show(found)
    assert [(s.relname, s.columns) for s in found] == [("events", ("created_at",))]
    assert found[0].cost_after <= 0.5 * found[0].cost_before
    # a volatile expression cannot lead an index scan: HypoPG shows the index unused, nothing is proposed
    assert suggest_for_query(conn, "SELECT * FROM events WHERE created_at > clock_timestamp() - interval '15 min'") == []
    # a column on the other side is a join condition, not a range filter
    assert advisor.parse_filter("(e.created_at > (s.shipped_at - '1 day'::interval))") == []


def _normalized(conn, sql: str) -> str:
    """What pg_stat_statements stores for `sql` (run once, literals become $n)."""
    conn.execute("SELECT pg_stat_statements_reset()")
    conn.execute(sql)
    rows = conn.execute("SELECT query FROM pg_stat_statements WHERE query LIKE '%events%' "
                        "AND query NOT LIKE '%pg_stat_statements%'").fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


@pytest.mark.parametrize("sql,fragment", [
    ("SELECT * FROM events WHERE device_id = 42 AND created_at > now() - interval '5 minutes'", "interval $2"),
    ("SELECT count(*) FROM events WHERE extract(hour FROM created_at) = 3 AND device_id = 7", "extract($1 FROM"),
    ("SELECT id FROM events WHERE device_id = 9 AND created_at >= timestamptz '2024-01-01' AND kind = 'k1'",
     "timestamptz $2"),
])
def test_unplannable_normalized_text_is_planned_after_rewrite(conn, sql, fragment):
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    text = _normalized(conn, sql)
    assert fragment in text, text
    with pytest.raises(psycopg.errors.SyntaxError):   # PostgreSQL itself cannot PREPARE the stored text
        conn.execute(f"PREPARE unplannable AS {text}")
    advice = advise(conn, text)
    _show(advice.suggestions)
    assert advice.reason is None and advice.rewritten
    assert [(s.relname, s.columns[0]) for s in advice.suggestions] == [("events", "device_id")]
    assert leftovers(conn) == ([], [])


def test_statements_that_cannot_be_planned_are_reported_with_a_reason(shop_db, conn):
    with psycopg.connect(shop_db, autocommit=True) as app:   # another session's temporary table
        app.execute("CREATE TEMP TABLE import_batch (sku int)")
        statements = [
            (1, "SELECT * FROM shipments WHERE weight_g > $1 + $2"),     # unknown + unknown: no type to choose
            (2, "SELECT * FROM import_batch WHERE sku = $1"),
            (3, "INSERT INTO warehouses (id, name) VALUES ($1, $2)"),
            (4, "SELECT * FROM pg_stat_activity WHERE state = $1"),
            (5, "SELECT * FROM jobs WHERE status = 'failed'"),
        ]
        found, blind = advise_statements(conn, statements)
    reasons = {qid: (a.reason, a.detail) for qid, a in blind}
    print(reasons)
    assert {qid: r for qid, (r, _) in reasons.items()} == {
        1: "unplannable_text", 2: "undefined_object", 3: "not_a_query", 4: "no_user_table"}
    assert "operator is not unique: unknown + unknown" in reasons[1][1]
    assert 'relation "import_batch" does not exist' in reasons[2][1]
    assert [(s.queryid, s.relname) for s in found] == [(5, "jobs")]
    with pytest.raises(UnsupportedStatement) as info:   # what the exporter sees: cached like any unsupported text
        suggest_for_query(conn, statements[0][1])
    assert info.value.reason == advisor.UNPLANNABLE_TEXT
    assert leftovers(conn) == ([], [])


def test_skewed_status_partial_index_for_the_rare_value_only(conn):
    found = suggest_for_query(conn, "SELECT id, payload FROM jobs WHERE status = $1")
    _show(found)
    assert [(s.relname, s.columns, s.where) for s in found] == [("jobs", ("status",), "status <> 'done'")]
    s = found[0]
    assert len(s.wins_for) == 1 and re.fullmatch(r"status = 'failed' \(0\.\d\d% of rows\)", s.wins_for[0])
    assert s.not_for[0] == "any value (generic plan)" and re.fullmatch(r"status = 'done' \(9\d\.\d\d% of rows\)", s.not_for[1])
    assert s.cost_after <= 0.5 * s.cost_before
    assert s.ddl == "CREATE INDEX CONCURRENTLY jobs_status_partial_idx ON public.jobs (status) WHERE status <> 'done'"
    # with the value written in the query, the generic plan sees it: index for 'failed', none for 'done'
    assert suggest_for_query(conn, "SELECT id FROM jobs WHERE status = 'done'") == []
    assert [s.columns for s in suggest_for_query(conn, "SELECT id FROM jobs WHERE status = 'failed'")] == [("status",)]
    # the real index, built as proposed: the planner uses it for 'failed' and not for 'done'
    with built_index(conn, [s.ddl.replace("CONCURRENTLY ", "")], "jobs_status_partial_idx"):
        assert plan_uses(conn, "SELECT id FROM jobs WHERE status = 'failed'", "jobs_status_partial_idx")
        assert not plan_uses(conn, "SELECT id FROM jobs WHERE status = 'done'", "jobs_status_partial_idx")


def test_skewed_tenant_index_wins_for_small_tenants_not_the_big_one(conn):
    found = suggest_for_query(conn, "SELECT * FROM tickets WHERE tenant_id = $1 AND state = $2")
    _show(found)
    assert [(s.relname, s.columns[0], s.where) for s in found] == [("tickets", "tenant_id", None)]
    s = found[0]
    assert len(s.wins_for) == 1 and s.wins_for[0].startswith("tenant_id = '") and "'1'" not in s.wins_for[0]
    assert len(s.not_for) == 1 and re.fullmatch(r"tenant_id = '1' \(\d\d\.\d\d% of rows\)", s.not_for[0])


def test_exporter_plans_normalized_texts_once_and_caches_what_it_cannot(shop_db, conn, monkeypatch):
    """In the exporter: the `interval $2` statement gets its index evidence, and neither it nor a truly unplannable
    statement is planned again on the next scrapes (before, both failed at DEBUG and were retried every scrape)."""
    from exporters.pg_exporter.base import ExporterOptions
    from exporters.pg_exporter.connection import Database
    from exporters.pg_exporter.exposition import render
    from exporters.pg_exporter.health import build_registry
    from sloguard import names
    from tests.exporter_support import parse

    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.execute("SELECT pg_stat_statements_reset()")
    for i in range(3):
        conn.execute(f"SELECT * FROM events WHERE device_id = {i} AND created_at > now() - interval '5 minutes'")
        conn.execute(f"SELECT id FROM shipments WHERE weight_g > {i} + 100")
    ids = dict(conn.execute("SELECT CASE WHEN query LIKE '%events%' THEN 'window' ELSE 'sum' END, queryid "
                            "FROM pg_stat_statements WHERE query LIKE '%events%interval%' "
                            "OR query LIKE '%shipments%weight_g%'").fetchall())
    planned: list[int] = []   # queryids the advisor planned (suggest_for_query and advise both go through _examine)
    real = advisor._examine
    monkeypatch.setattr(advisor, "_examine", lambda *a: planned.append(a[-1]) or real(*a))
    db = Database(shop_db)
    opts = ExporterOptions(missing_index_min_mean_ms=0, missing_index_min_calls=3, missing_index_recheck_seconds=3600,
                           missing_index_per_scrape=10, missing_index_statements=10)
    registry, _ = build_registry(db, opts)
    try:
        scrapes = [parse(render(registry).decode()) for _ in range(3)]
    finally:
        db.close()
    assert planned.count(ids["window"]) == 1 and planned.count(ids["sum"]) == 1, (planned, ids)
    for samples in scrapes:
        evidence = {(s.labels["queryid"], s.labels["relname"], s.labels["columns"]) for s in samples
                    if s.name == names.MISSING_INDEX}
        assert (str(ids["window"]), "events", "device_id") in {(q, r, c.split(",")[0]) for q, r, c in evidence}
        assert not any(q == str(ids["sum"]) for q, _, _ in evidence)


def test_inlined_values_land_on_the_right_parameter():
    """Probe values replace exactly $n (not $10), after non-ASCII text, quoted; other parameters stay generic."""
    sql = "SELECT * FROM jobs WHERE payload = 'éé€' AND status = $1 AND id = $10 AND $1 <> ''"
    assert inline_values(sql, {1: "it's"}) == (
        "SELECT * FROM jobs WHERE payload = 'éé€' AND status = 'it''s' AND id = $10 AND 'it''s' <> ''")


def test_monitoring_role_without_select_is_told_apart_from_no_suggestion(pg_cluster, shop_db, conn):
    """pg_monitor alone cannot EXPLAIN user tables: the advice says so (permission_denied), and after the GRANT the
    next call examines the statement (the advisor keeps no negative cache of its own)."""
    conn.execute("DROP ROLE IF EXISTS advisor_monitor")
    conn.execute("CREATE ROLE advisor_monitor LOGIN PASSWORD 'advisor-monitor-pw' IN ROLE pg_monitor")
    sql = "SELECT id FROM jobs WHERE status = 'failed'"
    try:
        dsn = pg_cluster.dsn("advisor_shapes", user="advisor_monitor", password="advisor-monitor-pw")
        with psycopg.connect(dsn, autocommit=True) as monitor:
            before = advise(monitor, sql)
            conn.execute("GRANT SELECT ON jobs TO advisor_monitor")
            after = advise(monitor, sql)
            assert monitor.execute("SELECT name FROM pg_prepared_statements").fetchall() == []
    finally:
        conn.execute("REVOKE ALL ON jobs FROM advisor_monitor")
        conn.execute("DROP ROLE advisor_monitor")
    assert (before.reason, before.suggestions) == (advisor.PERMISSION_DENIED, [])
    assert "permission denied for table jobs" in before.detail
    assert after.reason is None and [(s.relname, s.columns) for s in after.suggestions] == [("jobs", ("status",))]
