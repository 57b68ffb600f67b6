"""Apply migrations to a throwaway PostgreSQL, seed it as declared, EXPLAIN the catalogue, judge the plans."""
from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass, field

import psycopg

from sloguard.migration_gate.catalogue import CatalogueQuery, inline_params, load_catalogue
from sloguard.migration_gate.errors import GateInputError
from sloguard.migration_gate.lint import LintViolation, lint
from sloguard.migration_gate.plans import QueryVerdict, apply_baseline, judge, load_baseline, write_baseline
from sloguard.migration_gate.seed import SeedPlan, load_seed_plan, seed_statements
from sloguard.pgcluster import PG_BIN, TempCluster

GATE_DB = "sloguard_gate"


@dataclass
class GateOptions:
    migrations_dir: str = "migrations"
    queries_dir: str = "queries"
    seed_path: str = "migrations/seed.yaml"
    baseline_path: str = "queries/baseline.json"
    squawk_config: str | None = ".squawk.toml"
    scale: float | None = None          # None: the seed file's default
    update_baseline: bool = False
    lint: bool = True
    plans: bool = True


@dataclass
class GateResult:
    migrations: list[str] = field(default_factory=list)
    lint_violations: list[LintViolation] = field(default_factory=list)
    migration_error: str | None = None
    verdicts: list[QueryVerdict] = field(default_factory=list)
    scale: float = 1.0
    seq_scan_min_rows: int = 0
    cost_growth_factor: float = 0.0
    baseline_compared: bool = False
    baseline_written: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lint_violations or self.migration_error or any(v.failed for v in self.verdicts))


def migration_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        raise GateInputError(f"{directory}: migrations directory not found. Fix: pass --migrations DIR")
    files = sorted(glob.glob(os.path.join(directory, "*.sql")))
    if not files:
        raise GateInputError(f"{directory}: no *.sql migrations. Fix: add migrations named YYYYMMDD_description.sql")
    return files


def _apply_file(cluster: TempCluster, path: str) -> str | None:
    """psql -f: statements run one by one outside a transaction block, as CREATE INDEX CONCURRENTLY needs."""
    proc = subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", cluster.dsn(GATE_DB),
                           "-f", path], capture_output=True, text=True, timeout=1800)
    return None if proc.returncode == 0 else proc.stderr.strip()


def _missing_seed_targets(conn, plan: SeedPlan) -> list[str]:
    """The declared tables and columns the schema does not have yet, as seed-file fields."""
    missing = []
    with conn.cursor() as cur:
        for t in plan.tables:
            cur.execute("SELECT to_regclass(%s)", (t.name,))
            oid = cur.fetchone()[0]
            if oid is None:
                missing.append(f"tables.{t.name}")
                continue
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                        "AND NOT attisdropped", (t.name,))
            have = {r[0] for r in cur.fetchall()}
            missing += [f"tables.{t.name}.columns.{c}" for c in t.columns if c not in have]
    return missing


def _record_migration(conn, version: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations')")
        if cur.fetchone()[0] is not None:
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT DO NOTHING", (version,))


def apply_and_seed(cluster: TempCluster, files: list[str], plan: SeedPlan, scale: float, result: GateResult) -> None:
    """Seed as soon as every declared table and column exists: a column added by a later migration is seeded
    (seeding waits for that migration), and the migrations after that point run against production-sized tables."""
    missing: list[str] = []
    seeded = False
    with psycopg.connect(cluster.dsn(GATE_DB), autocommit=True) as conn:
        for path in files:
            err = _apply_file(cluster, path)
            if err:
                result.migration_error = f"{path}: failed to apply: {err}"
                return
            _record_migration(conn, os.path.basename(path).removesuffix(".sql"))
            if not seeded and not (missing := _missing_seed_targets(conn, plan)):
                for stmt in seed_statements(plan, scale):
                    conn.execute(stmt)
                seeded = True
        if not seeded:
            raise GateInputError(f"{plan.path}: {', '.join(missing)}: not created by any migration "
                                 f"(checked after all {len(files)}). Fix: declare only tables and columns the "
                                 f"migrations create, or add the migration that creates them")
        conn.execute("ANALYZE")


def suggest_fixes(conn, query: CatalogueQuery, min_rows: int) -> tuple[list, str | None]:
    """The HypoPG-verified index from pginsight's advisor (the one advisor of the project)."""
    try:
        from sloguard.pginsight.advisor import suggest_for_query
    except ImportError as e:
        return [], f"index advisor unavailable ({e})"
    try:
        return suggest_for_query(conn, inline_params(query.sql, query.params), use_hypopg=True,
                                 min_live_rows=min_rows), None
    finally:
        conn.execute("SELECT hypopg_reset()")


def run_gate(opts: GateOptions, cluster: TempCluster | None = None) -> GateResult:
    """Lint, then the plan gate. `cluster`: reuse a running one (tests); else a throwaway one is started."""
    files = migration_files(opts.migrations_dir)
    result = GateResult(migrations=[os.path.basename(f) for f in files])
    if opts.lint:
        result.lint_violations = lint(files, opts.squawk_config)
    if not opts.plans:
        return result
    plan = load_seed_plan(opts.seed_path)
    queries = load_catalogue(opts.queries_dir)
    baseline = load_baseline(opts.baseline_path)
    scale = opts.scale if opts.scale is not None else plan.scale
    if scale <= 0:
        raise GateInputError(f"--scale {scale}: must be positive. Fix: e.g. --scale 0.08")
    result.scale = scale
    result.seq_scan_min_rows = max(1, round(plan.gate.seq_scan_min_rows * scale))
    result.cost_growth_factor = plan.gate.cost_growth_factor
    own = cluster is None
    cluster = cluster or TempCluster().start()
    try:
        cluster.psql(f"DROP DATABASE IF EXISTS {GATE_DB}")
        cluster.psql(f"CREATE DATABASE {GATE_DB}")
        apply_and_seed(cluster, files, plan, scale, result)
        if result.migration_error:
            return result
        with psycopg.connect(cluster.dsn(GATE_DB), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            for q in queries:
                try:
                    v = judge(conn, q, result.seq_scan_min_rows)
                except psycopg.Error as e:
                    raise GateInputError(f"{q.path}: EXPLAIN failed: {str(e).strip()}. "
                                         f"Fix: correct the query or its -- params") from e
                result.verdicts.append(v)
            if opts.update_baseline:
                write_baseline(opts.baseline_path, baseline, result.verdicts, scale)
                result.baseline_written = True
            else:
                apply_baseline(result.verdicts, baseline, scale, result.cost_growth_factor)
                result.baseline_compared = any(v.baseline_cost is not None for v in result.verdicts)
                if not result.baseline_compared:
                    result.notes.append(f"no baseline for scale {scale:g} in {opts.baseline_path}: cost growth "
                                        f"not checked (record one with --update-baseline)")
            for v in result.verdicts:
                if v.failed:
                    v.fixes, note = suggest_fixes(conn, v.query, result.seq_scan_min_rows)
                    if note and note not in result.notes:
                        result.notes.append(note)
    finally:
        if own:
            cluster.stop()
        else:
            cluster.psql(f"DROP DATABASE IF EXISTS {GATE_DB} WITH (FORCE)")
    return result
