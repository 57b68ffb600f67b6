"""A read-only monitoring role (pg_monitor only, no SELECT on the tables): the exporter and diagnose say the advisor is
blind and name the exact GRANT; after the GRANT, the next scrape uses it. Schema: a billing schema (invoices, ledger)
and a fulfilment one (shipments), so the GRANT must name schemas; Flyway-style migrations table in billing.
"""
from __future__ import annotations

import psycopg
import pytest

from sloguard import names
from sloguard.diagnose.collect import collect, connect
from sloguard.diagnose.rank import rank
from sloguard.diagnose.render import render_text
from sloguard.diagnose.thresholds import Thresholds
from tests.exporter_support import RunningExporter, one, values

DB = "monitor_role"
ROLE = "billing_watch"
PASSWORD = "bw-9f3K-local-only"
SCHEMA = """
CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;
CREATE SCHEMA billing; CREATE SCHEMA fulfilment;
CREATE TABLE billing.flyway_schema_history (version text, installed_on timestamptz);
INSERT INTO billing.flyway_schema_history VALUES ('7', '2025-05-01T12:00:00Z');
CREATE TABLE billing.invoices (id bigint PRIMARY KEY, customer_ref text NOT NULL, total numeric);
CREATE TABLE fulfilment.shipments (id bigint PRIMARY KEY, invoice_id bigint NOT NULL, carrier text NOT NULL);
INSERT INTO billing.invoices SELECT g, 'C' || (g % 9000), g FROM generate_series(1, 60000) g;
INSERT INTO fulfilment.shipments SELECT g, g, 'dhl' FROM generate_series(1, 60000) g;
ANALYZE;
"""
INVOICE_QUERY = "SELECT * FROM billing.invoices WHERE customer_ref = %s"
SHIPMENT_QUERY = "SELECT carrier FROM fulfilment.shipments WHERE invoice_id = %s"
GRANT = ("GRANT USAGE ON SCHEMA fulfilment TO billing_watch; "
         "GRANT SELECT ON billing.invoices, fulfilment.shipments TO billing_watch;")


@pytest.fixture
def monitored(pg_cluster):
    with pg_cluster.database(DB) as dsn:
        pg_cluster.psql(SCHEMA, DB)
        pg_cluster.psql(f"DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor")
        pg_cluster.psql(f"GRANT USAGE ON SCHEMA billing TO {ROLE}", DB)   # can see billing, may read no table
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(30):
                conn.execute(INVOICE_QUERY, (f"C{i}",)).fetchall()
                conn.execute(SHIPMENT_QUERY, (i * 13,)).fetchall()
        try:
            yield pg_cluster
        finally:
            pg_cluster.psql(f"DROP OWNED BY {ROLE}", DB)
    pg_cluster.psql(f"DROP ROLE IF EXISTS {ROLE}")


def _blind(samples) -> dict[str, float]:
    return {s.labels["reason"]: s.value for s in samples if s.name == names.MISSING_INDEX_BLIND_STATEMENTS}


def test_exporter_is_visibly_blind_then_uses_the_grant_on_the_next_scrape(monitored):
    exp = RunningExporter(["--dsn", monitored.dsn(DB, user=ROLE), "--migrations-table", "billing.flyway_schema_history",
                           "--missing-index.min-mean-ms", "0", "--missing-index.min-calls", "20"],
                          env={"PGPASSWORD": PASSWORD})
    try:
        blind = exp.scrape()
        again = exp.scrape()
        monitored.psql(GRANT, DB)
        granted = exp.scrape()
    except BaseException:
        exp.cleanup()
        raise
    log = exp.finish()
    assert one(blind, names.PG_UP) == 1
    assert _blind(blind).get("permission_denied") == 2, _blind(blind)
    assert one(blind, names.COLLECTOR_SUCCESS, collector="missing_indexes") == 0
    assert one(blind, names.COLLECTOR_SUCCESS, collector="statements") == 1   # pg_monitor is enough for these
    assert values(blind, names.MISSING_INDEX) == []
    assert _blind(again).get("permission_denied") == 2   # still blind, still said (not cached as "no suggestion")
    assert GRANT in log and log.count(GRANT) == 1, log   # the exact statement, once
    # the migrations table is not readable either: its own GRANT, not "no migrations"
    assert "GRANT SELECT ON billing.flyway_schema_history TO billing_watch;" in log
    # after the GRANT the very next scrape plans both statements: no 300 s negative cache
    assert _blind(granted).get("permission_denied") == 0
    assert one(granted, names.COLLECTOR_SUCCESS, collector="missing_indexes") == 1
    suspects = {(s.labels["schemaname"], s.labels["relname"], s.labels["columns"])
                for s in granted if s.name == names.MISSING_INDEX}
    assert suspects == {("billing", "invoices", "customer_ref"), ("fulfilment", "shipments", "invoice_id")}
    assert PASSWORD not in log


def test_diagnose_names_the_grant_without_contradicting_itself(monitored):
    th = Thresholds(min_live_rows=10_000, slow_mean_seconds=0.0001)
    dsn = monitored.dsn(DB, user=ROLE, password=PASSWORD)
    conn = connect(dsn)
    try:
        ev = collect(conn, "t", th, "billing.flyway_schema_history", sample_seconds=0)
    finally:
        conn.close()
    text = render_text(ev, None, rank(ev, None, th), 1, [])
    assert ev.suggestions == []
    notes = "\n".join(ev.notes)
    assert f"index advice blind for 2 statement(s): role {ROLE} may not read billing.invoices, " \
           f"fulfilment.shipments" in notes
    assert f"run `{GRANT}`" in notes
    assert "GRANT SELECT ON billing.flyway_schema_history TO billing_watch;" in notes
    assert "no migrations found" not in notes   # permission denied is the reason; nothing else is claimed
    assert "(none: 2 statement(s) not planned, see the notes)" in text
    monitored.psql(GRANT + f" GRANT SELECT ON billing.flyway_schema_history TO {ROLE};", DB)
    conn = connect(dsn)
    try:
        ev = collect(conn, "t", th, "billing.flyway_schema_history", sample_seconds=0)
    finally:
        conn.close()
    assert {(s.schemaname, s.relname) for s in ev.suggestions} == {("billing", "invoices"),
                                                                   ("fulfilment", "shipments")}
    assert not any("GRANT" in n or "migrations" in n for n in ev.notes), ev.notes
    assert ev.migration is not None and ev.migration.version == "7"


def test_readme_role_setup_runs_and_covers_tables_created_later(pg_cluster, repo_root):
    """The README's role set-up, run as written (psql meta-commands aside): the role can EXPLAIN today's tables and,
    through ALTER DEFAULT PRIVILEGES, a table the migration role creates afterwards."""
    import os
    import re
    with open(os.path.join(repo_root, "exporters/pg_exporter/README.md")) as f:
        md = f.read()
    section = md.split("## Database role (pg_monitor)")[1].split("\n## ")[0]
    (block,) = re.findall(r"^```sql\n(.*?)^```", section, flags=re.S | re.M)
    sql = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("\\"))
    with pg_cluster.database("readme_role") as dsn:
        pg_cluster.psql("DROP ROLE IF EXISTS app_owner; CREATE ROLE app_owner; DROP ROLE IF EXISTS sloguard_exporter")
        pg_cluster.psql("GRANT CREATE ON SCHEMA public TO app_owner; SET ROLE app_owner; "
                        "CREATE TABLE schema_migrations (version text, applied_at timestamptz); "
                        "CREATE TABLE parcels (id int PRIMARY KEY, depot text)", "readme_role")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql)
                conn.execute("SET ROLE app_owner")
                conn.execute("CREATE TABLE returns (id int PRIMARY KEY, parcel_id int)")   # a later migration
                conn.execute("RESET ROLE")
                granted = {t: conn.execute("SELECT has_table_privilege('sloguard_exporter', %s, 'SELECT')",
                                           (t,)).fetchone()[0] for t in ("schema_migrations", "parcels", "returns")}
                monitor = conn.execute("SELECT pg_has_role('sloguard_exporter', 'pg_monitor', 'USAGE')").fetchone()[0]
                conn.execute("DROP OWNED BY sloguard_exporter")
        finally:
            pg_cluster.psql("DROP OWNED BY app_owner", "readme_role")
    pg_cluster.psql("DROP ROLE IF EXISTS sloguard_exporter; DROP ROLE IF EXISTS app_owner")
    assert granted == {"schema_migrations": True, "parcels": True, "returns": True}
    assert monitor
