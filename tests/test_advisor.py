"""The missing-index advisor on the scenario's data (real PostgreSQL 15 + HypoPG, 200k users)."""
from __future__ import annotations

import threading

import pglast
import psycopg
import pytest

from sloguard import scenario_data
from sloguard.pginsight import advisor, queries
from sloguard.pginsight.advisor import UnsupportedStatement, suggest_for_query, suggest_for_statements
from tests.advisor_support import leftovers

USERS = 200_000
LOGIN_NORMALISED = "SELECT * FROM users WHERE email = $1 AND status = $2"   # as pg_stat_statements stores it


@pytest.fixture(scope="module")
def app_db(pg_cluster):
    with pg_cluster.database("advisor_app") as dsn:
        pg_cluster.psql(scenario_data.SCHEMA_SQL + scenario_data.seed_sql(users=USERS), "advisor_app")
        pg_cluster.psql("CREATE EXTENSION hypopg; CREATE EXTENSION pg_stat_statements", "advisor_app")
        yield dsn


@pytest.fixture
def conn(app_db):
    with psycopg.connect(app_db, autocommit=True) as c:
        yield c


@pytest.mark.parametrize("sql", [scenario_data.LOGIN_QUERY, LOGIN_NORMALISED,
                                 "SELECT * FROM users WHERE email = ? AND status = 'active'"])
def test_login_query_gets_email_index_not_status(conn, sql):
    found = suggest_for_query(conn, sql)
    assert [(s.relname, s.columns) for s in found] == [("users", ("email",))]
    s = found[0]
    assert s.verified and s.cost_after is not None
    assert s.cost_after <= s.cost_before * 0.5, (s.cost_before, s.cost_after)
    assert s.ddl == "CREATE INDEX CONCURRENTLY users_email_idx ON public.users (email)"


def test_status_index_would_not_help_measured_with_hypopg(conn):
    """The scenario's proposed fix: an index on status. HypoPG says it does not change the plan cost."""
    sql, nparams = advisor.plannable(scenario_data.LOGIN_QUERY)
    assert nparams == 1
    with conn.transaction():
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        before = advisor._generic_plan(conn, sql, nparams)["Plan"]["Total Cost"]
        status_cost = advisor._hypothetical_cost(conn, sql, nparams, "public", "users", ("status",))
        email_cost = advisor._hypothetical_cost(conn, sql, nparams, "public", "users", ("email",))
    assert status_cost > before * 0.5          # not a fix: would be rejected by the 50% rule
    assert email_cost < before * 0.01          # the real fix: two orders of magnitude cheaper
    assert leftovers(conn) == ([], [])


def test_without_hypopg_unverified_candidate_chosen_by_selectivity(conn):
    found = suggest_for_query(conn, scenario_data.LOGIN_QUERY, use_hypopg=False)
    assert [(s.columns, s.verified, s.cost_after) for s in found] == [(("email",), False, None)]
    assert found[0].cost_before > 1000


def test_existing_indexes_respected(pg_cluster, conn):
    conn.execute("DROP TABLE IF EXISTS users_copy")
    conn.execute("CREATE TABLE users_copy AS SELECT * FROM users")
    conn.execute("CREATE INDEX users_copy_status ON users_copy (status)")
    conn.execute("ANALYZE users_copy")
    try:
        sql = "SELECT * FROM users_copy WHERE email = $1 AND status = 'active'"
        # a real index on status is not used, so the email index is still proposed
        assert [s.columns for s in suggest_for_query(conn, sql)] == [("email",)]
        conn.execute("CREATE INDEX users_copy_email_name ON users_copy (email, name)")
        assert suggest_for_query(conn, sql) == []            # covered by a btree prefix
        assert suggest_for_query(conn, sql, use_hypopg=False) == []
    finally:
        conn.execute("DROP TABLE users_copy")


def test_small_tables_and_unselective_filters_give_nothing(conn):
    assert suggest_for_query(conn, "SELECT * FROM schema_migrations WHERE version = $1") == []
    # status alone matches 80% of rows: no index halves the cost
    assert suggest_for_query(conn, "SELECT count(*) FROM users WHERE status = 'active'") == []
    # a leading-wildcard LIKE cannot use a btree
    assert suggest_for_query(conn, "SELECT * FROM users WHERE email LIKE '%@example.com'", use_hypopg=False) == []


def test_join_query_and_other_tables(conn):
    found = suggest_for_query(conn, "SELECT * FROM orders WHERE user_id = $1 AND amount_cents > $2")
    assert [(s.relname, s.columns[0]) for s in found] == [("orders", "user_id")]
    # the scenario's slow orders query reads a third of the table: no index halves its cost
    assert suggest_for_query(conn, scenario_data.RECENT_ORDERS_QUERY) == []


def test_read_only_and_clean_after_errors(conn):
    with pytest.raises(UnsupportedStatement):
        suggest_for_query(conn, "DROP TABLE users")
    with pytest.raises(UnsupportedStatement):
        suggest_for_query(conn, "SELECT 1; SELECT 2")
    with pytest.raises(UnsupportedStatement, match="no user table"):   # monitoring queries are not planned
        suggest_for_query(conn, "SELECT * FROM pg_stat_activity WHERE state = $1")
    # a table this session cannot see (dropped, or another session's temporary table): reported, not retried
    with pytest.raises(UnsupportedStatement, match="no_such_table") as info:
        suggest_for_query(conn, "SELECT * FROM no_such_table WHERE a = $1")
    assert info.value.reason == advisor.UNDEFINED_OBJECT
    # an UPDATE is planned, never executed
    before = conn.execute("SELECT count(*) FROM users WHERE status = 'gone'").fetchone()[0]
    suggest_for_query(conn, "UPDATE users SET status = 'gone' WHERE email = $1")
    assert conn.execute("SELECT count(*) FROM users WHERE status = 'gone'").fetchone()[0] == before == 0
    assert leftovers(conn) == ([], [])
    # after a failure mid-way, the next call works (the fixed statement name was swept)
    assert [s.columns for s in suggest_for_query(conn, LOGIN_NORMALISED)] == [("email",)]


def test_works_inside_callers_transaction(app_db):
    with psycopg.connect(app_db) as c:   # not autocommit
        c.execute("SELECT 1")
        found = suggest_for_query(c, scenario_data.LOGIN_QUERY)
        assert [s.columns for s in found] == [("email",)]
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()


def test_suggest_for_statements_dedupes_and_skips(conn):
    stmts = [(11, LOGIN_NORMALISED), "CREATE TABLE x ()", (12, "SELECT * FROM nope WHERE a = $1"),
             (13, scenario_data.LOGIN_QUERY), (14, "SELECT id FROM orders WHERE user_id = $1")]
    found = suggest_for_statements(conn, stmts)
    assert sorted((s.relname, s.columns) for s in found) == [("orders", ("user_id",)), ("users", ("email",))]
    assert {s.queryid for s in found} <= {11, 13, 14}
    assert suggest_for_statements(conn, stmts, limit=1)[0].columns == ("email",)
    assert leftovers(conn) == ([], [])


def test_statement_stats_feed_the_advisor(conn):
    conn.execute("SELECT pg_stat_statements_reset()")
    for i in range(3):
        conn.execute(scenario_data.LOGIN_QUERY, (f"user{i}@example.com",))
    caps = queries.capabilities(conn)
    top = queries.top_statements(conn, 50, caps)
    texts = queries.statement_texts(conn, [s.queryid for s in top])
    login = [s for s in top if "email" in texts.get(s.queryid, "")]
    assert login and login[0].calls == 3 and login[0].total_exec_seconds > 0
    found = suggest_for_statements(conn, [(s.queryid, texts[s.queryid]) for s in login])
    assert [(s.columns, s.queryid) for s in found] == [(("email",), login[0].queryid)]


def test_migrations_reader(conn):
    conn.execute("TRUNCATE schema_migrations")
    assert queries.last_migration(conn, "schema_migrations") is None
    conn.execute("INSERT INTO schema_migrations VALUES ('20240101000000', '2024-01-01T10:00Z'),"
                 " ('20240115143100', '2024-01-15T14:31Z')")
    m = queries.last_migration(conn, "public.schema_migrations")
    assert m.version == "20240115143100" and m.applied_at.isoformat().startswith("2024-01-15T14:31")
    assert queries.last_migration(conn, "no_such_migrations") is None
    with pytest.raises(ValueError, match="plain"):
        queries.last_migration(conn, "x; DROP TABLE users")


def test_array_columns_and_mcv_text(conn):
    assert advisor.parse_array_text('{active,"a b","q\\"x",inactive}') == ["active", "a b", 'q"x', "inactive"]
    assert advisor.parse_array_text("{{1,2},{3,4}}") == []
    conn.execute("DROP TABLE IF EXISTS tagged")
    conn.execute("CREATE TABLE tagged AS SELECT ARRAY[g % 5, g % 3] AS tags, g AS k FROM generate_series(1, 20000) g")
    conn.execute("ANALYZE tagged")
    try:   # most_common_vals of an int[] column is a 2-D array: must not break the advisor
        found = suggest_for_query(conn, "SELECT * FROM tagged WHERE tags = $1 AND k = $2")
        assert [s.columns for s in found] == [("k",)]
    finally:
        conn.execute("DROP TABLE tagged")


def test_safe_build_statements_never_pass_over_an_invalid_index(pg_cluster):
    """The printed fix: a database default lock_timeout does not cancel it; an INVALID leftover fails loudly."""
    db = "advisor_build"
    with pg_cluster.database(db):
        pg_cluster.psql("CREATE TABLE t (id int PRIMARY KEY, email text); "
                        "INSERT INTO t SELECT g, 'u' || g FROM generate_series(1, 2000) g", db)
        # a site-wide lock_timeout, shorter than the writer below stays open
        pg_cluster.psql(f"ALTER DATABASE {db} SET lock_timeout = '200ms'")
        statements = [s for sql in advisor.safe_build_statements("public", "t", ("email",)) for s in pglast.split(sql)]
        dsn = pg_cluster.dsn(db)
        with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as c:
            writer.execute("UPDATE t SET email = email WHERE id = 1")
            release = threading.Timer(1.0, writer.rollback)
            release.start()
            try:
                for sql in statements:   # the build waits for the writer instead of failing at 200 ms
                    c.execute(sql)
            finally:
                release.join()
            assert c.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.t_email_idx'::regclass"
                             ).fetchone() == (True,)
            # an INVALID index (what a cancelled build leaves): re-running fails, and the check names the fix
            c.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.t_email_idx'::regclass")
            with pytest.raises(psycopg.errors.DuplicateTable):
                c.execute(statements[-2])
            with pytest.raises(psycopg.errors.RaiseException, match=r"INVALID.*DROP INDEX CONCURRENTLY public\.t_email_idx"):
                c.execute(statements[-1])
