"""The exporter against real PostgreSQL 15: what a scrape says about the scenario (200k users, HypoPG)."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from sloguard import names, scenario_data
from tests.exporter_support import RunningExporter, one, values

USERS = 200_000
LOGIN_CALLS = 20
DB = "exporter_app"
LOGIN_USER_IDS = [1 + i * 7 for i in range(LOGIN_CALLS)]
ACTIVE_LOGINS = sum(1 for g in LOGIN_USER_IDS if g % 10 < 8)   # seed_sql: g % 10 < 8 is 'active'


@pytest.fixture(scope="module")
def app(pg_cluster):
    with pg_cluster.database(DB) as dsn:
        pg_cluster.psql(scenario_data.SCHEMA_SQL + scenario_data.seed_sql(users=USERS)
                        + "CREATE EXTENSION hypopg; CREATE EXTENSION pg_stat_statements;"
                        + "INSERT INTO schema_migrations VALUES ('20240101090000', '2024-01-01T09:00Z'),"
                          " ('20240115143100', '2024-01-15T14:31:00Z');", DB)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            for i in range(LOGIN_CALLS):
                conn.execute(scenario_data.LOGIN_QUERY, (f"user{LOGIN_USER_IDS[i]}@example.com",))
            conn.execute(scenario_data.RECENT_ORDERS_QUERY + " LIMIT 5", ("2023-12-01",))
            login_qid = conn.execute("SELECT queryid FROM pg_stat_statements WHERE query LIKE '%%email = $1%%'"
                                     ).fetchone()[0]
        yield pg_cluster, login_qid


@pytest.fixture(scope="module")
def exporter(app):
    cluster, _ = app
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--missing-index.min-mean-ms", "0",
                           "--missing-index.min-calls", "5"])
    try:
        yield exp
    finally:
        exp.cleanup()


def test_all_collectors_succeed(exporter):
    samples = exporter.scrape()
    assert one(samples, names.PG_UP) == 1
    for collector in names.COLLECTORS:
        assert one(samples, names.COLLECTOR_SUCCESS, collector=collector) == 1, exporter.log()
        assert one(samples, names.COLLECTOR_DURATION, collector=collector) >= 0
    assert {s.name for s in samples} >= {names.EXPORTER_INFO, names.STATEMENT_CALLS, names.TABLE_SEQ_SCAN}
    # every metric the exporter emits is one of the agreed names (counters expose <name>; _created is not emitted)
    assert {s.name for s in samples} <= set(names.EXPORTER_METRICS)


def test_login_statement_metrics(app, exporter):
    _, qid = app
    samples = exporter.scrape()
    lbl = {"datname": DB, "user": "postgres", "queryid": str(qid)}
    assert one(samples, names.STATEMENT_CALLS, **lbl) == LOGIN_CALLS
    assert one(samples, names.STATEMENT_EXEC_SECONDS, **lbl) > 0
    assert one(samples, names.STATEMENT_ROWS, **lbl) == ACTIVE_LOGINS
    mean = one(samples, names.STATEMENT_MEAN_SECONDS, **lbl)
    assert 0 < mean <= one(samples, names.STATEMENT_MAX_SECONDS, **lbl)
    assert one(samples, names.STATEMENT_SHARED_BLKS_HIT, **lbl) + one(
        samples, names.STATEMENT_SHARED_BLKS_READ, **lbl) > LOGIN_CALLS * 100   # a seq scan reads every page


def test_table_metrics_show_seq_scans_on_users(exporter):
    samples = exporter.scrape()
    users = {"datname": DB, "schemaname": "public", "relname": "users"}
    assert one(samples, names.TABLE_SEQ_SCAN, **users) >= LOGIN_CALLS
    assert one(samples, names.TABLE_SEQ_TUP_READ, **users) >= LOGIN_CALLS * USERS * 0.5
    assert one(samples, names.TABLE_LIVE_ROWS, **users) == pytest.approx(USERS, rel=0.05)
    assert one(samples, names.TABLE_SIZE_BYTES, **users) > USERS * 20
    assert one(samples, names.TABLE_IDX_SCAN, **users) >= 0


def test_missing_index_names_users_email_not_status(app, exporter):
    _, qid = app
    samples = exporter.scrape()
    suspects = [s.labels for s in samples if s.name == names.MISSING_INDEX]
    login = [lv for lv in suspects if lv["queryid"] == str(qid)]
    assert [(lv["relname"], lv["columns"]) for lv in login] == [("users", "email")], suspects
    assert not any("status" in lv["columns"] for lv in suspects)
    assert login[0]["index"] == "CREATE INDEX CONCURRENTLY users_email_idx ON public.users (email)"
    before = one(samples, names.MISSING_INDEX_COST_BEFORE, **login[0])
    after = one(samples, names.MISSING_INDEX_COST_AFTER, **login[0])
    assert after <= before * 0.5 and before > 1000, (before, after)


def test_connections_and_limits(exporter):
    samples = exporter.scrape()
    assert one(samples, names.MAX_CONNECTIONS) == 100   # TempCluster default
    assert one(samples, names.SUPERUSER_RESERVED_CONNECTIONS) == 3
    # the exporter's own session is active while it scrapes
    assert sum(values(samples, names.CONNECTIONS, datname=DB, state="active")) >= 1


def test_lock_waiters_and_oldest_transaction(app, exporter):
    cluster, _ = app
    baseline = exporter.scrape()
    assert one(baseline, names.LOCK_WAITING_SESSIONS, datname=DB) == 0
    holder = psycopg.connect(cluster.dsn(DB))
    errors: list[BaseException] = []
    try:
        holder.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        waiter_ready = threading.Event()

        def wait_for_lock():
            try:
                with psycopg.connect(cluster.dsn(DB), autocommit=True, options="-c statement_timeout=30000") as c:
                    waiter_ready.set()
                    c.execute("SELECT count(*) FROM schema_migrations")
            except BaseException as e:   # reported by the assertion below
                errors.append(e)
                waiter_ready.set()

        t = threading.Thread(target=wait_for_lock, daemon=True)
        t.start()
        waiter_ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # wait until the waiter is actually blocked
            with psycopg.connect(cluster.dsn(DB), autocommit=True) as probe:
                if probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                 ).fetchone()[0]:
                    break
            time.sleep(0.05)
        time.sleep(1.1)
        samples = exporter.scrape()
        assert one(samples, names.LOCK_WAITING_SESSIONS, datname=DB) == 1
        assert one(samples, names.OLDEST_TRANSACTION_SECONDS, datname=DB) >= 1.0
        # the migrations table is locked: it is not read (no wait); its last value is served, marked with its age
        assert one(samples, names.COLLECTOR_SUCCESS, collector="migrations") == 1
        assert one(samples, names.MIGRATION_LAST_APPLIED, version="20240115143100") == 1705329060.0
        assert one(samples, names.LAST_KNOWN_AGE_SECONDS, collector="migrations", object="schema_migrations") > 0
        assert one(samples, names.COLLECTOR_SUCCESS, collector="locks") == 1
        assert one(samples, names.COLLECTOR_SUCCESS, collector="statements") == 1
        assert one(samples, names.LOCK_BLOCKER_WAITING_SESSIONS, pid=str(holder.info.backend_pid),
                   relation="public.schema_migrations", mode="AccessExclusiveLock") == 1
    finally:
        holder.rollback()
        holder.close()
    t.join(15)
    assert not errors


def test_migrations_last_applied(exporter):
    samples = exporter.scrape()
    ts = one(samples, names.MIGRATION_LAST_APPLIED, version="20240115143100")
    assert ts == 1705329060.0   # 2024-01-15T14:31:00Z
    assert values(samples, names.MIGRATION_LAST_APPLIED, version="20240101090000") == []


def test_query_text_absent_by_default(exporter):
    text = exporter.scrape_text()
    assert names.STATEMENT_INFO not in text
    assert "email" not in text.replace("users_email_idx", "").replace("(email)", "").replace('columns="email"', "")
    assert "SELECT" not in text.replace("CREATE INDEX", "")


def test_query_text_on_is_normalised_and_truncated(app):
    cluster, qid = app
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--statements.query-text",
                           "--statements.query-text-length", "40"])
    try:
        samples = exp.scrape()
    finally:
        exp.cleanup()
    info = [s.labels for s in samples if s.name == names.STATEMENT_INFO and s.labels["queryid"] == str(qid)]
    assert len(info) == 1
    assert info[0]["query"] == "SELECT * FROM users WHERE email = $1 ..."   # 37 chars + "..."
    assert all(len(s.labels["query"]) <= 40 for s in samples if s.name == names.STATEMENT_INFO)


def test_series_bounded_by_top_n(app):
    cluster, _ = app
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        for i in range(30):
            conn.execute(f"CREATE TABLE IF NOT EXISTS many_{i} (id int)")
            conn.execute(f"SELECT count(*) FROM many_{i}")   # 30 distinct statements, 30 more tables
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--statements.top-n", "5", "--tables.top-n", "7"])
    try:
        samples = exp.scrape()
    finally:
        exp.cleanup()
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
            for i in range(30):
                conn.execute(f"DROP TABLE IF EXISTS many_{i}")
    for name in (names.STATEMENT_CALLS, names.STATEMENT_EXEC_SECONDS, names.STATEMENT_MAX_SECONDS):
        assert len(values(samples, name)) == 5
    assert len(values(samples, names.TABLE_SEQ_SCAN)) == 7
    assert len(values(samples, names.TABLE_LIVE_ROWS)) == 7


def test_missing_index_advice_is_cached_per_queryid(app):
    """In-process: the advisor's EXPLAINs run once per statement per recheck period, not on every scrape."""
    from exporters.pg_exporter.base import ExporterOptions
    from exporters.pg_exporter.connection import Database
    from exporters.pg_exporter.exposition import render
    from exporters.pg_exporter.health import build_registry
    from exporters.pg_exporter.missing_indexes import MissingIndexesCollector
    from tests.exporter_support import parse

    cluster, qid = app
    for recheck in (3600.0, 0.001):
        db = Database(cluster.dsn(DB))
        advisor_collector = MissingIndexesCollector()
        opts = ExporterOptions(missing_index_min_mean_ms=0, missing_index_min_calls=5,
                               missing_index_recheck_seconds=recheck, missing_index_per_scrape=5)
        registry, exporter = build_registry(db, opts)
        exporter.collectors = [c if c.name != "missing_indexes" else advisor_collector for c in exporter.collectors]
        # which statements each scrape plans: other statements of the session cluster (the exporter's own among
        # them) may cross min_calls between scrapes and be planned once, late; none may be planned twice
        planned: list[list[int]] = []
        evaluate = advisor_collector._evaluate

        def recording(ctx, key, *args, _evaluate=evaluate, _planned=planned):
            _planned[-1].append(key[1])
            return _evaluate(ctx, key, *args)

        advisor_collector._evaluate = recording
        per_scrape, served = [], []
        try:
            for _ in range(4):   # the advisor takes at most 5 new statements per scrape, so it may need a few
                before = advisor_collector.evaluations
                planned.append([])
                samples = parse(render(registry).decode())
                per_scrape.append(advisor_collector.evaluations - before)
                served.append([s.labels["columns"] for s in samples
                               if s.name == names.MISSING_INDEX and s.labels["queryid"] == str(qid)])
                time.sleep(0.01)
        finally:
            db.close()
        assert all(0 <= n <= 5 for n in per_scrape), per_scrape
        everything = [q for scrape in planned for q in scrape]
        if recheck > 60:
            assert per_scrape[0] >= 1 and everything.count(qid) == 1, planned
            assert len(everything) == len(set(everything)), planned        # converged: served from the cache
        else:
            assert all(n >= 1 for n in per_scrape), per_scrape               # every scrape re-plans
        assert all(cols == ["email"] for cols in served), served             # same evidence either way


def test_missing_index_check_blocked_by_a_lock_is_retried_next_scrape(app):
    """During the incident the advisor's EXPLAIN can hit the lock or query timeout (a migration holds the table).
    That failure must not be cached for the recheck period (300 s): the next scrape tries again."""
    cluster, qid = app
    holder = psycopg.connect(cluster.dsn(DB))
    exp = None
    try:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")   # what ALTER TABLE ... ADD COLUMN takes
        # started under the lock, so its first look at the login statement fails on the lock
        exp = RunningExporter(["--dsn", cluster.dsn(DB), "--query-timeout", "1", "--missing-index.min-mean-ms", "0",
                               "--missing-index.min-calls", "5"])
        blocked = exp.scrape()
        assert values(blocked, names.MISSING_INDEX, relname="users") == [], exp.log()
        holder.rollback()
        after = exp.scrape()
        assert one(after, names.MISSING_INDEX, queryid=str(qid), relname="users", columns="email") == 1, exp.log()
    finally:
        holder.close()
        if exp is not None:
            exp.cleanup()
