"""One exporter for every database of a cluster (--auto-discover-databases and friends), on real PostgreSQL 15.

Schemas are invented per database (sensor readings, library loans, freight shipments), each with a statement that
seq-scans a 30k-row table for lack of an index: the advisor must plan each in its own database.
"""
from __future__ import annotations

import contextlib
import re
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from exporters.pg_exporter.connection import APPLICATION_NAME
from sloguard import names
from tests.exporter_support import RunningExporter, one, values

ROWS = 30_000
CALLS = 12


@contextlib.contextmanager
def databases(cluster, *specs):
    """Create each (datname, table, column, extra SQL) database with a 30k-row table and run its slow lookup."""
    with contextlib.ExitStack() as stack:
        for datname, table, column, extra in specs:
            stack.enter_context(cluster.database(datname))
            cluster.psql(f"""
                CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;
                CREATE TABLE {table} (id bigint PRIMARY KEY, {column} text NOT NULL, amount int NOT NULL);
                INSERT INTO {table} SELECT g, 'k' || g, g % 97 FROM generate_series(1, {ROWS}) g;
                ANALYZE {table};
                {extra}""", datname)
            with psycopg.connect(cluster.dsn(datname), autocommit=True) as conn:
                for i in range(CALLS):
                    conn.execute(f"SELECT id, amount FROM {table} WHERE {column} = %s", (f"k{i * 31 + 7}",))
        yield


ADVISED = [   # (datname, table, column, extra SQL)
    ("mdb_greenhouse", "sensor_readings", "sensor_code",
     "CREATE TABLE schema_migrations (version text, applied_at timestamptz);"
     "INSERT INTO schema_migrations VALUES ('20250610120000', '2025-06-10T12:00Z');"),
    ("mdb_lending", "loans", "isbn", "CREATE TABLE members (id int); CREATE TABLE branches (id int);"),
    # no pg_stat_statements extension here: the advisor reads statement texts through the DSN's database
    ("mdb_freight", "shipments", "tracking_ref", "CREATE TABLE depots (id int); CREATE TABLE routes (id int);"
                                                 "DROP EXTENSION pg_stat_statements;"),
]


@pytest.fixture(scope="module")
def advised(pg_cluster):
    with databases(pg_cluster, *ADVISED):
        yield pg_cluster


def start(cluster, *extra: str) -> RunningExporter:
    # a big statements top-N: other test modules' statements share this cluster's pg_stat_statements
    return RunningExporter(["--dsn", cluster.dsn("postgres"), "--auto-discover-databases",
                            "--statements.top-n", "2000", "--missing-index.min-mean-ms", "0",
                            "--missing-index.min-calls", "5", *extra])


def test_each_database_reports_its_own_missing_index_with_datname_and_ddl(advised):
    exp = start(advised, "--include-databases", ",".join(d for d, *_ in ADVISED))
    try:
        samples = exp.scrape()
        log = exp.log()
    finally:
        exp.cleanup()
    suspects = [s.labels for s in samples if s.name == names.MISSING_INDEX]
    assert sorted((lv["datname"], lv["relname"], lv["columns"], lv["index"]) for lv in suspects) == sorted(
        (d, t, c, f"CREATE INDEX CONCURRENTLY {t}_{c}_idx ON public.{t} ({c})") for d, t, c, _ in ADVISED), log
    for lv in suspects:   # the suspect is that database's own statement, planned there
        assert one(samples, names.STATEMENT_CALLS, datname=lv["datname"], queryid=lv["queryid"]) >= CALLS
        assert one(samples, names.MISSING_INDEX_COST_AFTER, **lv) < one(samples, names.MISSING_INDEX_COST_BEFORE, **lv)
    for datname, table, _, _ in ADVISED:
        assert one(samples, names.DATABASE_UP, datname=datname) == 1
        assert one(samples, names.TABLE_LIVE_ROWS, datname=datname, relname=table) == ROWS
        assert one(samples, names.LOCK_WAITING_SESSIONS, datname=datname) == 0   # a 0, not an absent series
        for collector in ("tables", "missing_indexes", "migrations"):
            assert one(samples, names.COLLECTOR_SUCCESS, collector=collector, datname=datname) == 1, log
    # the migrations collector's series gets its database's name added centrally
    assert one(samples, names.MIGRATION_LAST_APPLIED, datname="mdb_greenhouse", version="20250610120000") > 0
    assert values(samples, names.MIGRATION_LAST_APPLIED, datname="mdb_lending") == []
    # only the included databases: the DSN's own database (postgres) runs the cluster-wide collectors only
    per_db = {names.TABLE_SEQ_SCAN, names.DATABASE_UP, names.MISSING_INDEX}
    assert {s.labels["datname"] for s in samples if s.name in per_db} == {d for d, *_ in ADVISED}
    assert one(samples, names.COLLECTOR_SUCCESS, collector="statements") == 1


def test_connections_are_reused_capped_and_series_bounded_per_database(advised):
    def sessions() -> list[tuple[int, str]]:
        with psycopg.connect(advised.dsn("postgres"), autocommit=True) as conn:
            return sorted(conn.execute("SELECT pid, datname FROM pg_stat_activity WHERE application_name = %s",
                                       (APPLICATION_NAME,)).fetchall())

    include = ",".join(d for d, *_ in ADVISED)
    exp = start(advised, "--include-databases", include, "--tables.top-n", "2")
    try:
        seen = []
        for _ in range(3):
            samples = exp.scrape()
            seen.append(sessions())
        with ThreadPoolExecutor(4) as pool:   # concurrent scrapes wait for a database's connection, open none
            assert all(pool.map(lambda _: exp.scrape_text(), range(4)))
        seen.append(sessions())
    finally:
        exp.cleanup()
    # one connection per database (the DSN's + 3), opened once and reused by every later scrape
    assert len(seen[0]) == 4 and seen[0] == seen[1] == seen[2] == seen[3], seen
    for datname, *_ in ADVISED:   # --tables.top-n is per database
        assert len(values(samples, names.TABLE_SEQ_SCAN, datname=datname)) == 2

    exp = start(advised, "--include-databases", include, "--databases.max-connections", "2")
    try:
        for _ in range(2):
            samples = exp.scrape()
            assert len(sessions()) <= 2
    finally:
        exp.cleanup()
    for datname, *_ in ADVISED:   # every database still scraped, one at a time
        assert one(samples, names.DATABASE_UP, datname=datname) == 1
    assert values(samples, names.DATABASE_SKIPPED) == []

    exp = start(advised, "--include-databases", include, "--databases.max-connections", "1")
    try:
        samples = exp.scrape()   # the DSN's connection is the only one allowed: the others are skipped, said so
    finally:
        exp.cleanup()
    assert {s.labels["datname"]: s.labels["reason"] for s in samples if s.name == names.DATABASE_SKIPPED} == {
        d: "connection_cap" for d, *_ in ADVISED}
    assert one(samples, names.PG_UP) == 1 and values(samples, names.TABLE_SEQ_SCAN) == []


def test_database_dropped_while_running_disappears_without_errors_on_the_others(pg_cluster):
    specs = [("mdb_orchard", "harvests", "crate_code", ""), ("mdb_kiln", "firings", "batch_ref", ""),
             ("mdb_doomed", "ledgers", "entry_ref", "")]
    with databases(pg_cluster, *specs):
        exp = start(pg_cluster, "--include-databases", ",".join(d for d, *_ in specs), "--log.level", "debug")
        try:
            before = exp.scrape()
            assert {s.labels.get("datname") for s in before if s.name == names.DATABASE_UP} == {
                "mdb_orchard", "mdb_kiln", "mdb_doomed"}
            logged = len(exp.log().splitlines())
            pg_cluster.psql('DROP DATABASE "mdb_doomed" WITH (FORCE)')   # our idle session there is terminated
            after = [exp.scrape(), exp.scrape()]
            log = exp.log().splitlines()[logged:]
        finally:
            exp.cleanup()
    for samples in after:
        assert not [s for s in samples if s.labels.get("datname") == "mdb_doomed"]
        for datname in ("mdb_orchard", "mdb_kiln"):
            assert one(samples, names.DATABASE_UP, datname=datname) == 1
            for collector in ("tables", "missing_indexes", "migrations"):
                assert one(samples, names.COLLECTOR_SUCCESS, collector=collector, datname=datname) == 1
            assert sum(values(samples, names.SCRAPE_ERRORS, datname=datname)) == 0
        assert one(samples, names.PG_UP) == 1
    assert not [line for line in log if re.search(r"level=(warn|error)", line)], log
    assert any("mdb_doomed is no longer scraped" in line for line in log), log


def test_templates_and_unconnectable_databases_are_skipped_and_reported(pg_cluster):
    role, password = "cluster_monitor", "cl-mon-pw-4410"
    specs = [("mdb_open", "tickets", "seat_ref", ""), ("mdb_closed", "tickets", "seat_ref", ""),
             ("mdb_private", "tickets", "seat_ref", ""), ("mdb_excluded", "tickets", "seat_ref", ""),
             ("mdb_full", "tickets", "seat_ref", "")]
    with databases(pg_cluster, *specs):
        pg_cluster.psql(f"""DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE pg_monitor;
                            ALTER DATABASE mdb_closed ALLOW_CONNECTIONS false;
                            REVOKE CONNECT ON DATABASE mdb_private FROM PUBLIC;
                            ALTER DATABASE mdb_full CONNECTION LIMIT 0;""")
        try:
            exp = RunningExporter(["--dsn", pg_cluster.dsn("postgres", user=role, password=password),
                                   "--auto-discover-databases", "--exclude-databases", "mdb_excluded, template1",
                                   "--no-hypopg"])
            try:
                samples = exp.scrape()
            finally:
                exp.cleanup()
        finally:
            pg_cluster.psql(f"ALTER DATABASE mdb_closed ALLOW_CONNECTIONS true; DROP ROLE IF EXISTS {role}")
    skipped = {s.labels["datname"]: s.labels["reason"] for s in samples if s.name == names.DATABASE_SKIPPED}
    assert skipped["template0"] == "template"
    assert skipped["mdb_closed"] == "connections_not_allowed"
    assert skipped["mdb_private"] == "no_connect_privilege"
    assert skipped["mdb_full"] == "connection_failed"   # allowed on paper, refused when tried
    assert one(samples, names.DATABASE_UP, datname="mdb_full") == 0
    assert "template1" not in skipped   # excluded by the operator: neither scraped nor reported
    assert one(samples, names.DATABASE_UP, datname="mdb_open") == 1
    assert one(samples, names.TABLE_LIVE_ROWS, datname="mdb_open", relname="tickets") == ROWS
    # no per-database series (cluster-wide views such as pg_stat_statements still cover every database)
    per_db = {names.DATABASE_UP, names.COLLECTOR_SUCCESS, names.TABLE_SEQ_SCAN, names.TABLE_LIVE_ROWS,
              names.MISSING_INDEX, names.MIGRATION_LAST_APPLIED, names.SCRAPE_ERRORS}
    assert not [s for s in samples if s.labels.get("datname") in ("mdb_excluded", "mdb_closed", "mdb_private")
                and s.name in per_db]


def test_include_without_auto_discovery_keeps_the_dsn_database_and_says_so(advised):
    exp = RunningExporter(["--dsn", advised.dsn("mdb_lending"), "--include-databases", "mdb_freight"])
    try:
        samples = exp.scrape()
        time.sleep(0.1)
        log = exp.log()
    finally:
        exp.cleanup()
    assert {s.labels["datname"] for s in samples if s.name == names.DATABASE_UP} == {"mdb_lending"}
    assert "apply only with --auto-discover-databases" in log


def test_families_served_again_by_a_collector_are_not_grown_by_the_merge(advised):
    """health.py serves a collector's previous families again after a lock or statement timeout; merging the
    databases' series must not append to those objects (they would grow by every other database each scrape)."""
    from prometheus_client.core import GaugeMetricFamily

    from exporters.pg_exporter.base import ExporterOptions
    from exporters.pg_exporter.cluster import DatabaseSelection, build_cluster_registry
    from exporters.pg_exporter.connection import Database
    from exporters.pg_exporter.exposition import render
    from tests.exporter_support import parse

    class Replayed:   # always the same family object, like a last-known output
        name = "tables"

        def __init__(self):
            self.fam = GaugeMetricFamily(names.TABLE_LIVE_ROWS, "rows", labels=["relname"])
            self.fam.add_metric(["replayed"], 1)

        def collect(self, ctx):
            return [self.fam]

    db = Database(advised.dsn("postgres"))
    include = frozenset(d for d, *_ in ADVISED)
    registry, cluster = build_cluster_registry(db, ExporterOptions(), enabled=("tables",),
                                               selection=DatabaseSelection(True, include))
    try:
        render(registry)   # creates the per-database runs
        for t in cluster._targets.values():
            t.exporter.collectors = [Replayed()]
        counts = []
        for _ in range(3):
            samples = parse(render(registry).decode())
            rows = [(s.labels["datname"], s.labels["relname"]) for s in samples if s.name == names.TABLE_LIVE_ROWS]
            counts.append(len(rows))
            assert sorted(rows) == sorted((d, "replayed") for d in include)
    finally:
        cluster.close()
    assert counts == [3, 3, 3]
