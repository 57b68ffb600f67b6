"""Migration safety gate on a real PostgreSQL: squawk lint, then EXPLAIN of the query catalogue on seeded data.

Scale 0.08 of migrations/seed.yaml (200k users, 400k orders): the seq-scan threshold scales with it (8,000 rows).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from sloguard.migration_gate.__main__ import main as gate_main
from sloguard.migration_gate.__main__ import render
from sloguard.migration_gate.catalogue import parse_query_file
from sloguard.migration_gate.errors import GateInputError
from sloguard.migration_gate.runner import GateOptions, run_gate
from sloguard.migration_gate.seed import load_seed_plan
from sloguard.pgcluster import PG_BIN
from sloguard.pginsight import advisor

FIX_MIGRATION = "20240115_add_users_email_index.sql"


def _options(repo_root: str, migrations_dir: str, **kw) -> GateOptions:
    return GateOptions(
        migrations_dir=migrations_dir,
        queries_dir=os.path.join(repo_root, "queries"),
        seed_path=os.path.join(repo_root, "migrations", "seed.yaml"),
        baseline_path=kw.pop("baseline_path", os.path.join(repo_root, "queries", "baseline.json")),
        squawk_config=os.path.join(repo_root, ".squawk.toml"),
        **kw,
    )


def _copy_migrations(repo_root: str, dest: str, without: tuple[str, ...] = ()) -> str:
    os.makedirs(dest)
    for name in os.listdir(os.path.join(repo_root, "migrations")):
        if name.endswith(".sql") and name not in without:
            shutil.copy(os.path.join(repo_root, "migrations", name), dest)
    return dest


def test_repo_migrations_pass_the_gate_in_ci(repo_root):
    """`make check-migrations` as CI runs it: own throwaway cluster, exit 0 on main."""
    proc = subprocess.run([sys.executable, "-m", "sloguard.migration_gate"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "squawk: clean" in proc.stdout
    assert "ok    login_by_email" in proc.stdout
    assert "(baseline " in proc.stdout   # the committed baseline was compared, not skipped


def test_gate_fails_without_the_email_index_and_prints_the_fix(repo_root, tmp_path, pg_cluster):
    migrations = _copy_migrations(repo_root, str(tmp_path / "m"), without=(FIX_MIGRATION,))
    result = run_gate(_options(repo_root, migrations), cluster=pg_cluster)
    assert result.failed and not result.lint_violations
    verdicts = {v.query.name: v for v in result.verdicts}
    login = verdicts["login_by_email"]
    assert [s.relation for s in login.large_seq_scans] == ["public.users"]
    assert login.cost_regressed and login.cost > 10 * login.baseline_cost
    assert [(f.relname, f.columns, f.verified) for f in login.fixes] == [("users", ("email",), True)]
    assert login.fixes[0].cost_after < login.fixes[0].cost_before / 100
    # the other catalogue queries are still fine: the failure names the right query only
    assert [n for n, v in verdicts.items() if v.failed] == ["login_by_email"]
    text = render(result)
    assert "FAIL  login_by_email" in text and "seq scan on public.users (200,000 rows" in text
    assert "SET lock_timeout = 0; SET statement_timeout = 0;\n          CREATE INDEX CONCURRENTLY" in text
    assert "indisvalid" in text and "DROP INDEX CONCURRENTLY public.users_email_idx" in text
    assert "ON public.users (email)" in text and "GATE FAILED" in text


def test_the_scenario_status_index_does_not_fix_the_login_query(repo_root, tmp_path, pg_cluster):
    """The post-mortem's first fix, an index on (status), leaves the seq scan: the gate still fails."""
    migrations = _copy_migrations(repo_root, str(tmp_path / "m"), without=(FIX_MIGRATION,))
    with open(os.path.join(migrations, "20240115_add_users_status_index.sql"), "w") as f:
        f.write("SET lock_timeout = '5s';\nSET statement_timeout = 0;\n"
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_status_idx ON users (status);\n")
    result = run_gate(_options(repo_root, migrations), cluster=pg_cluster)
    login = next(v for v in result.verdicts if v.query.name == "login_by_email")
    assert result.failed and login.large_seq_scans
    assert [f.columns for f in login.fixes] == [("email",)]


def test_non_concurrent_index_on_large_table_is_rejected_by_squawk(repo_root, tmp_path, capsys):
    migrations = _copy_migrations(repo_root, str(tmp_path / "m"))
    with open(os.path.join(migrations, "20240201_add_users_status_index.sql"), "w") as f:
        f.write("CREATE INDEX users_status_idx ON users (status);\n")
    code = gate_main(["--migrations", migrations, "--lint-only",
                      "--squawk-config", os.path.join(repo_root, ".squawk.toml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "20240201_add_users_status_index.sql:1: require-concurrent-index-creation" in out
    assert "require-lock-timeout" in out
    # the repo's own migrations lint clean with the same config
    assert gate_main(["--migrations", os.path.join(repo_root, "migrations"), "--lint-only",
                      "--squawk-config", os.path.join(repo_root, ".squawk.toml")]) == 0


def test_update_baseline_writes_costs_per_scale(repo_root, tmp_path, pg_cluster):
    baseline = str(tmp_path / "baseline.json")
    migrations = os.path.join(repo_root, "migrations")
    result = run_gate(_options(repo_root, migrations, baseline_path=baseline, update_baseline=True, lint=False,
                               scale=0.02), cluster=pg_cluster)
    assert result.baseline_written and not result.failed
    with open(baseline) as f:
        doc = json.load(f)
    costs = doc["scales"]["0.02"]
    assert set(costs) == {v.query.name for v in result.verdicts}
    assert costs["login_by_email"] == pytest.approx(
        next(v.cost for v in result.verdicts if v.query.name == "login_by_email"), abs=0.01)


def test_bad_inputs_name_the_file_field_and_fix(repo_root, tmp_path, capsys):
    seed = tmp_path / "seed.yaml"
    seed.write_text("tables:\n  users:\n    rows: 10\n    columns:\n      email: {uuid: true}\n")
    with pytest.raises(GateInputError, match=r"seed.yaml: tables.users.columns.email: unknown generator"):
        load_seed_plan(str(seed))
    q = tmp_path / "q.sql"
    q.write_text("-- name: q\n-- params: []\nSELECT * FROM users WHERE id = $1;\n")
    with pytest.raises(GateInputError, match=r"q.sql: the query uses \$1 placeholders but `-- params:` has 0"):
        parse_query_file(str(q))
    code = gate_main(["--migrations", os.path.join(repo_root, "migrations"), "--seed", str(seed),
                      "--squawk-config", os.path.join(repo_root, ".squawk.toml")])
    assert code == 2
    assert "seed.yaml: tables.users.columns.email" in capsys.readouterr().err


def _failed_concurrent_build(dsn: str, index: str, table: str, column: str) -> None:
    """What a build cancelled by lock_timeout leaves: an INVALID index (an open writer makes it wait, 0.2 s)."""
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as builder:
        writer.execute(f"UPDATE {table} SET {column} = {column} WHERE id = 1")   # stays open: a writer
        builder.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            builder.execute(f"CREATE INDEX CONCURRENTLY {index} ON {table} ({column})")
        writer.rollback()


def _is_valid(dsn: str, index: str):
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (index,)).fetchone()
    return None if row is None else row[0]


def test_fix_migration_does_not_skip_over_an_invalid_index(repo_root, pg_cluster):
    """Re-running the fix after a failed build must stop and name the drop, not succeed without an index."""
    db = "gate_invalid_index"
    with pg_cluster.database(db):
        pg_cluster.psql("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL); "
                        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 2000) g", db)
        dsn = pg_cluster.dsn(db)
        _failed_concurrent_build(dsn, "users_email_idx", "users", "email")
        assert _is_valid(dsn, "users_email_idx") is False
        migration = os.path.join(repo_root, "migrations", FIX_MIGRATION)
        psql = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", migration]
        proc = subprocess.run(psql, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, "the migration succeeded over an INVALID index"
        assert "INVALID" in proc.stderr and "DROP INDEX CONCURRENTLY users_email_idx" in proc.stderr
        assert _is_valid(dsn, "users_email_idx") is False
        # the fix it names works: drop, re-run, a valid index
        pg_cluster.psql("DROP INDEX CONCURRENTLY users_email_idx", db)
        proc = subprocess.run(psql, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert _is_valid(dsn, "users_email_idx") is True


# --- another schema: logistics (shipments -> warehouses), a column added by a later migration ---------------------

LOGISTICS_MIGRATIONS = {
    "20240301_logistics.sql": (
        "CREATE TABLE warehouses (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL);\n"
        "CREATE TABLE shipments (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"
        "  warehouse_id bigint NOT NULL REFERENCES warehouses (id), weight_g integer NOT NULL);\n"),
    "20240302_shipments_carrier.sql": "ALTER TABLE shipments ADD COLUMN carrier text;\n",
}
LOGISTICS_SEED = """
scale: 1
gate: {seq_scan_min_rows: 20000, cost_growth_factor: 2.0}
tables:
  warehouses: {rows: 2000, columns: {name: {sequence: "wh-{n}"}}}
  shipments:
    rows: 200000
    columns:
      warehouse_id: {references: warehouses.id}
      weight_g: {integers: [0, 30000]}
      carrier: {choices: {dhl: 0.97, ups: 0.02, fedex: 0.01}}
"""
LOGISTICS_QUERIES = {
    "shipments_of_warehouse.sql": "-- name: shipments_of_warehouse\n-- params: [\"wh-42\"]\n"
                                  "SELECT s.id, s.weight_g FROM shipments s JOIN warehouses w ON w.id = s.warehouse_id "
                                  "WHERE w.name = $1;\n",
    "fedex_pickups.sql": "-- name: fedex_pickups\n-- params: [\"fedex\"]\nSELECT id FROM shipments WHERE carrier = $1;\n",
    "dhl_pickups.sql": "-- name: dhl_pickups\n-- params: [\"dhl\"]\nSELECT id FROM shipments WHERE carrier = $1;\n",
}


def _logistics(tmp_path, seed: str = LOGISTICS_SEED, extra: dict | None = None) -> GateOptions:
    for sub, files in (("m", {**LOGISTICS_MIGRATIONS, **(extra or {})}), ("q", LOGISTICS_QUERIES)):
        os.makedirs(tmp_path / sub, exist_ok=True)
        for name, text in files.items():
            (tmp_path / sub / name).write_text(text)
    (tmp_path / "seed.yaml").write_text(seed)
    return GateOptions(str(tmp_path / "m"), str(tmp_path / "q"), str(tmp_path / "seed.yaml"),
                       str(tmp_path / "baseline.json"), None, lint=False)


def test_gate_names_the_join_key_index_and_seeds_a_later_column(tmp_path, pg_cluster):
    result = run_gate(_logistics(tmp_path), cluster=pg_cluster)
    verdicts = {v.query.name: v for v in result.verdicts}
    assert sorted(n for n, v in verdicts.items() if v.failed) == ["dhl_pickups", "fedex_pickups",
                                                                  "shipments_of_warehouse"]
    join = verdicts["shipments_of_warehouse"]
    assert [s.relation for s in join.large_seq_scans] == ["public.shipments"]
    assert [(f.relname, f.columns, f.kind, f.verified) for f in join.fixes] == [
        ("shipments", ("warehouse_id",), "join", True)]
    assert join.fixes[0].cost_after < join.fixes[0].cost_before / 2
    # carrier comes from the second migration and was seeded: 1% fedex gets an index, 97% dhl does not
    assert [f.columns for f in verdicts["fedex_pickups"].fixes] == [("carrier",)]
    assert verdicts["dhl_pickups"].fixes == []
    text = render(result)
    print(text)
    assert "join key shipments.warehouse_id = warehouses.id (foreign key shipments_warehouse_id_fkey, no index)" in text
    assert "CREATE INDEX CONCURRENTLY shipments_warehouse_id_idx ON public.shipments (warehouse_id);" in text
    assert "no single-column index" not in text
    assert "no index removes the seq scan (HypoPG tried its filter columns and join keys)" in text   # dhl_pickups

    # the printed fix, as the next migration: the join query passes
    fix = "\n".join(advisor.build_statements(join.fixes[0])) + "\n"
    again = run_gate(_logistics(tmp_path, extra={"20240303_shipments_warehouse_id_index.sql": fix}),
                     cluster=pg_cluster)
    assert not next(v for v in again.verdicts if v.query.name == "shipments_of_warehouse").failed


def test_seed_column_no_migration_creates_is_named(tmp_path, pg_cluster):
    seed = LOGISTICS_SEED.replace("carrier: {choices", "colour: {choices")
    with pytest.raises(GateInputError, match=r"seed.yaml: tables.shipments.columns.colour: not created by any "
                                             r"migration \(checked after all 2\)"):
        run_gate(_logistics(tmp_path, seed=seed), cluster=pg_cluster)
