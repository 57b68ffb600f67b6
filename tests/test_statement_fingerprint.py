"""A statement keeps one identity across a queryid change: the exporter's fingerprint of the normalised text.

PostgreSQL 15 hashes `SELECT *` over the table's column list, so ADD COLUMN gives the same statement a new queryid
(the 2024-01-15 incident). PostgresStatementRegression groups by this fingerprint. On an invented schema here."""
from __future__ import annotations

import psycopg
import pytest

from exporters.pg_exporter.statements import statement_fingerprint
from sloguard import names
from tests.exporter_support import RunningExporter

DB = "fingerprint_parcels"
BY_CODE = "SELECT * FROM parcels WHERE tracking_code = %s AND depot = %s"
BY_DEPOT = "SELECT count(*) FROM parcels WHERE depot = %s"


@pytest.fixture(scope="module")
def scraped(pg_cluster):
    with pg_cluster.database(DB) as dsn:
        pg_cluster.psql("CREATE EXTENSION pg_stat_statements; CREATE TABLE parcels (id bigint PRIMARY KEY, "
                        "tracking_code text NOT NULL, depot text NOT NULL); INSERT INTO parcels "
                        "SELECT g, 'TC' || g, 'depot-' || (g % 7) FROM generate_series(1, 500) g;", DB)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            for i in range(20):
                conn.execute(BY_CODE, (f"TC{i}", "depot-1"))
                conn.execute(BY_DEPOT, (f"depot-{i % 7}",))
            conn.execute("ALTER TABLE parcels ADD COLUMN weight_grams integer")
            for i in range(20):
                conn.execute(BY_CODE, (f"TC{i}", "depot-2"))
        exp = RunningExporter(["--dsn", dsn, "--no-hypopg"])
        try:
            text = exp.scrape_text()
            assert "statements\"} 1" in text, exp.log()
            yield text, exp.scrape()
        finally:
            exp.cleanup()


def test_add_column_changes_the_queryid_but_not_the_fingerprint(scraped):
    text, samples = scraped
    infos = [s.labels for s in samples if s.name == names.STATEMENT_FINGERPRINT and s.labels["datname"] == DB]
    calls = {s.labels["queryid"]: s.value for s in samples if s.name == names.STATEMENT_CALLS + "_total"
             and s.labels["datname"] == DB} or {s.labels["queryid"]: s.value for s in samples
                                               if s.name == names.STATEMENT_CALLS and s.labels["datname"] == DB}
    by_fp: dict[str, set[str]] = {}
    for labels in infos:
        by_fp.setdefault(labels["fingerprint"], set()).add(labels["queryid"])
    # the SELECT * before and after ADD COLUMN: two queryids (20 calls each), one fingerprint
    before_after = [qids for qids in by_fp.values() if len(qids) == 2]
    assert len(before_after) == 1, by_fp
    assert sorted(calls[q] for q in before_after[0]) == [20, 20]
    # another statement on the same table has its own fingerprint, and every top statement has one
    assert len(by_fp) >= 2 and {q for qids in by_fp.values() for q in qids} >= set(calls) - {"0"}
    assert "tracking_code" not in text and "WHERE" not in text   # a hash, never the text (query text is off)


def test_fingerprint_ignores_constants_and_layout_and_survives_unparseable_text():
    a = statement_fingerprint("SELECT * FROM parcels WHERE tracking_code = $1 AND depot = $2")
    assert a == statement_fingerprint("select *\n  from parcels where tracking_code = $1  and depot = $2 -- c")
    assert a != statement_fingerprint("SELECT * FROM parcels WHERE depot = $1")
    odd = statement_fingerprint("SELECT * FROM parcels WHERE x = $1 AND y = ...")   # truncated text
    assert len(odd) == 16 and odd == statement_fingerprint("SELECT  *  FROM parcels WHERE x = $1 AND y = ...")
