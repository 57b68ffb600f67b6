"""`make bench-exporter`: our exporter vs Debian's prometheus-postgres-exporter on one throwaway cluster.

The database holds 5,000 distinct statements over 2,000 tables plus the scenario's users table (the login query
is the slowest statement, so the missing-index advisor has work). Exporters are scraped in the same run,
round-robin, N times each. Each exporter logs in as its own role, so pg_stat_statements counts the queries it sends.

Case `single` (one database). Configurations:
  ours/no-hypopg  statements top-100 + all 2,000 tables + connections/locks/migrations, advisor without HypoPG
  ours/hypopg     same with HypoPG verification (advice cached per queryid: the steady state)
  ours/replan     HypoPG with --missing-index.recheck-seconds 0.001: every scrape re-plans (worst case)
  theirs          postgres_exporter 0.11 default metrics (activity, locks, database...) minus settings, plus
                  queries.yaml for pg_stat_statements top-100 and pg_stat_user_tables (its collector flags for
                  statements do not exist in 0.11)

Then the same exporters under a held lock: an ALTER TABLE on the users table in an open transaction with 3
application sessions queued behind it (the incident class). Each is scraped again with Prometheus' default 10 s
scrape timeout; the line compares each with its own scrape without the lock, and the series it still serves.

Case `databases` (--databases N, default 10): N databases on one cluster, each with its own schema (a 30k-row table
with a slow lookup, 50 small tables, a migrations table), one exporter per cluster:
  ours            --auto-discover-databases (tables, migrations, HypoPG-verified advice per database)
  theirs          postgres_exporter 0.11 --auto-discover-databases with the same queries.yaml (its per-database
                  pg_stat_user_tables query runs in every database, pg_stat_statements once)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import psycopg
import requests
from prometheus_client.parser import text_string_to_metric_families

from sloguard import names, scenario_data
from sloguard.pgcluster import TempCluster, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THEIRS_BIN = "/usr/bin/prometheus-postgres-exporter"
DB = "bench"
PASSWORD = "bench-pw"   # throwaway cluster on loopback

THEIRS_QUERIES = """
pg_stat_statements:
  query: |
    SELECT r.rolname, d.datname, s.queryid::text AS queryid, s.calls, s.total_exec_time / 1000 AS seconds_total,
           s.rows, s.shared_blks_hit, s.shared_blks_read, s.mean_exec_time / 1000 AS mean_seconds,
           s.max_exec_time / 1000 AS max_seconds
    FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid
    ORDER BY s.total_exec_time DESC LIMIT 100
  master: true
  metrics:
    - rolname: {usage: "LABEL", description: "user"}
    - datname: {usage: "LABEL", description: "database"}
    - queryid: {usage: "LABEL", description: "query id"}
    - calls: {usage: "COUNTER", description: "calls"}
    - seconds_total: {usage: "COUNTER", description: "total time"}
    - rows: {usage: "COUNTER", description: "rows"}
    - shared_blks_hit: {usage: "COUNTER", description: "hits"}
    - shared_blks_read: {usage: "COUNTER", description: "reads"}
    - mean_seconds: {usage: "GAUGE", description: "mean"}
    - max_seconds: {usage: "GAUGE", description: "max"}
pg_stat_user_tables:
  query: |
    SELECT current_database() AS datname, schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
           n_live_tup, pg_relation_size(relid) AS size_bytes
    FROM pg_stat_user_tables
  metrics:
    - datname: {usage: "LABEL", description: "database"}
    - schemaname: {usage: "LABEL", description: "schema"}
    - relname: {usage: "LABEL", description: "table"}
    - seq_scan: {usage: "COUNTER", description: "seq scans"}
    - seq_tup_read: {usage: "COUNTER", description: "rows read by seq scans"}
    - idx_scan: {usage: "COUNTER", description: "index scans"}
    - n_live_tup: {usage: "GAUGE", description: "live rows"}
    - size_bytes: {usage: "GAUGE", description: "table size"}
"""

POPULATE_SQL = """
DO $$
BEGIN
  FOR i IN 0..{tables_minus_1} LOOP
    EXECUTE format('CREATE TABLE t_%s (id int PRIMARY KEY, v int, note text)', i);
    EXECUTE format('INSERT INTO t_%s SELECT g, g %% 7, ''n'' || g FROM generate_series(1, 5) g', i);
  END LOOP;
END $$;
"""

# Distinct statement shapes per table; pg_stat_statements (track = all) records each EXECUTE as its own entry.
STATEMENT_SHAPES = (
    "SELECT * FROM t_%s WHERE id = 1",
    "SELECT count(*) FROM t_%s WHERE v > 2",
    "SELECT note FROM t_%s ORDER BY v LIMIT 2",
)


def populate(cluster: TempCluster, tables: int, statements: int, users: int) -> None:
    cluster.psql(f"CREATE DATABASE {DB}")
    cluster.psql(scenario_data.SCHEMA_SQL + scenario_data.seed_sql(users=users, orders_per_user=1)
                 + "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;"
                 + "INSERT INTO schema_migrations VALUES ('20240115143100', '2024-01-15T14:31Z');", DB)
    cluster.psql(POPULATE_SQL.replace("{tables_minus_1}", str(tables - 1)), DB)
    cluster.psql("SELECT pg_stat_statements_reset()", DB)   # the catalogue then holds the bench's statements only
    remaining = statements
    for shape in STATEMENT_SHAPES:   # one loop per shape; each table's OID makes a distinct queryid
        n = min(remaining, tables)
        if n:
            cluster.psql(f"DO $$ BEGIN FOR i IN 0..{n - 1} LOOP EXECUTE format('{shape}', i); END LOOP; END $$;", DB)
        remaining -= n
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        for i in range(30):   # the slow statement the advisor should explain
            conn.execute(scenario_data.LOGIN_QUERY, (f"user{i * 3 + 1}@example.com",))
    for role in ("bench_ours_nohypo", "bench_ours_hypo", "bench_ours_replan", "bench_theirs"):
        cluster.psql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    cluster.psql("ANALYZE", DB)


class Target:
    def __init__(self, label: str, role: str, cmd: list[str], env: dict[str, str], port: int):
        self.label, self.role, self.port = label, role, port
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.times: list[float] = []
        self.per_database: dict[str, int] = {}
        self.series = 0
        self.first = float("nan")
        self.suspects: list[str] = []
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process, closed in stop()
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"{self.label} exited: {self._log.read().decode()[-2000:]}")
            try:
                start = time.perf_counter()
                requests.get(self.url, timeout=60).raise_for_status()
                self.first = time.perf_counter() - start   # the first scrape: the advisor's first pass
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.label} not ready")

    def scrape(self, timeout: float = 120) -> set[tuple] | None:
        """One scrape, timed; the (name, labels) of its series, or None when it timed out."""
        start = time.perf_counter()
        try:
            r = requests.get(self.url, timeout=timeout)
        except requests.Timeout:
            self.times.append(time.perf_counter() - start)
            return None
        self.times.append(time.perf_counter() - start)
        r.raise_for_status()
        samples = [smp for f in text_string_to_metric_families(r.text) for smp in f.samples]
        self.series = len(samples)
        self.per_database: dict[str, int] = {}
        for smp in samples:
            d = smp.labels.get("datname")
            if d:
                self.per_database[d] = self.per_database.get(d, 0) + 1
        self.suspects = sorted({f"{smp.labels['relname']}({smp.labels['columns']})" for smp in samples
                                if smp.name == names.MISSING_INDEX})
        return {(smp.name, tuple(sorted(smp.labels.items()))) for smp in samples}

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def queries_sent(cluster: TempCluster, dbname: str = DB) -> dict[str, int]:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        rows = conn.execute("SELECT r.rolname, sum(s.calls)::bigint FROM pg_stat_statements s "
                            "JOIN pg_roles r ON r.oid = s.userid WHERE s.toplevel AND r.rolname LIKE 'bench_%%' "
                            "GROUP BY 1").fetchall()
    return dict(rows)


def run_single(scrapes: int, tables: int, statements: int, users: int) -> int:
    settings = {"pg_stat_statements.max": str(max(20_000, statements * 3)), "max_locks_per_transaction": "256"}
    workdir = tempfile.mkdtemp(prefix="sloguard-bench-")
    targets: list[Target] = []
    with TempCluster(settings=settings) as cluster:
        t0 = time.monotonic()
        populate(cluster, tables, statements, users)
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
            n_statements = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0]
            n_tables = conn.execute("SELECT count(*) FROM pg_stat_user_tables").fetchone()[0]
        print(f"populated in {time.monotonic() - t0:.1f}s: {n_statements} statements in pg_stat_statements, "
              f"{n_tables} tables, {users} users; {scrapes} scrapes per exporter, round-robin", flush=True)
        queries_path = os.path.join(workdir, "queries.yaml")
        with open(queries_path, "w") as f:
            f.write(THEIRS_QUERIES)
        ours = [sys.executable, "-m", "exporters.pg_exporter", "--tables.top-n", str(tables + 100),
                "--missing-index.min-mean-ms", "1", "--missing-index.min-calls", "5", "--query-timeout", "30"]
        try:
            for label, role, extra in (("ours/no-hypopg", "bench_ours_nohypo", ["--no-hypopg"]),
                                       ("ours/hypopg", "bench_ours_hypo", ["--hypopg"]),
                                       ("ours/replan", "bench_ours_replan",
                                        ["--hypopg", "--missing-index.recheck-seconds", "0.001"])):
                port = free_port()
                dsn = cluster.dsn(DB, user=role, password=PASSWORD)
                targets.append(Target(label, role, [*ours, *extra, "--dsn", dsn, "--web.listen-address",
                                                    f"127.0.0.1:{port}", "--log-level", "warning"],
                                      {"PYTHONPATH": ROOT}, port))
            port = free_port()
            targets.append(Target(
                "theirs", "bench_theirs",
                [THEIRS_BIN, f"--web.listen-address=127.0.0.1:{port}", "--disable-settings-metrics",
                 f"--extend.query-path={queries_path}", "--log.level=warn"],
                {"DATA_SOURCE_NAME": f"postgresql://bench_theirs:{PASSWORD}@127.0.0.1:{cluster.port}/{DB}"
                                     "?sslmode=disable"}, port))
            measure(cluster, targets, scrapes, DB)
            under_lock(cluster, targets, min(scrapes, 5))
        finally:
            for t in targets:
                t.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def measure(cluster: TempCluster, targets: list[Target], scrapes: int, dbname: str) -> None:
    for t in targets:
        t.wait_ready()
        t.scrape()   # warm-up, not counted
        t.times.clear()
    before = queries_sent(cluster, dbname)
    for _ in range(scrapes):
        for t in targets:
            t.scrape()
    after = queries_sent(cluster, dbname)
    report(targets, before, after, scrapes)


SHOP_TABLE_SQL = """
CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;
CREATE TABLE parcels (id bigint PRIMARY KEY, route_code text NOT NULL, weight_g int NOT NULL);
INSERT INTO parcels SELECT g, 'r' || g, g % 5000 FROM generate_series(1, {rows}) g;
CREATE TABLE schema_migrations (version text, applied_at timestamptz);
INSERT INTO schema_migrations VALUES ('20250101000000', '2025-01-01T00:00Z');
"""


def populate_databases(cluster: TempCluster, databases: int, tables: int, rows: int) -> list[str]:
    """`databases` databases, each a 30k-row table with a slow lookup (the advisor's work) and `tables` small ones."""
    cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    names_ = [f"shop_{i:02d}" for i in range(databases)]
    for dbname in names_:
        cluster.psql(f"CREATE DATABASE {dbname}")
        cluster.psql(SHOP_TABLE_SQL.replace("{rows}", str(rows))
                     + POPULATE_SQL.replace("{tables_minus_1}", str(tables - 1)) + "ANALYZE;", dbname)
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
            for i in range(30):
                conn.execute("SELECT id, weight_g FROM parcels WHERE route_code = %s", (f"r{i * 7 + 1}",))
    for role in ("bench_ours_multi", "bench_theirs"):
        cluster.psql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    return names_


def run_databases(scrapes: int, databases: int, tables: int, rows: int) -> int:
    workdir = tempfile.mkdtemp(prefix="sloguard-bench-")
    targets: list[Target] = []
    with TempCluster() as cluster:
        t0 = time.monotonic()
        populate_databases(cluster, databases, tables, rows)
        print(f"\n== {databases} databases (plus postgres), each {rows} rows + {tables} tables; populated in "
              f"{time.monotonic() - t0:.1f}s; {scrapes} scrapes per exporter, round-robin", flush=True)
        queries_path = os.path.join(workdir, "queries.yaml")
        with open(queries_path, "w") as f:
            f.write(THEIRS_QUERIES)
        try:
            port = free_port()
            targets.append(Target(
                "ours/auto", "bench_ours_multi",
                [sys.executable, "-m", "exporters.pg_exporter", "--auto-discover-databases",
                 "--missing-index.min-mean-ms", "1", "--missing-index.min-calls", "5", "--query-timeout", "30",
                 "--dsn", cluster.dsn("postgres", user="bench_ours_multi", password=PASSWORD),
                 "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"], {"PYTHONPATH": ROOT}, port))
            port = free_port()
            targets.append(Target(
                "theirs", "bench_theirs",
                [THEIRS_BIN, f"--web.listen-address=127.0.0.1:{port}", "--disable-settings-metrics",
                 "--auto-discover-databases", f"--extend.query-path={queries_path}", "--log.level=warn"],
                {"DATA_SOURCE_NAME": f"postgresql://bench_theirs:{PASSWORD}@127.0.0.1:{cluster.port}/postgres"
                                     "?sslmode=disable"}, port))
            measure(cluster, targets, scrapes, "postgres")
            for t in targets:
                print(f"{t.label}: series per database: "
                      + ", ".join(f"{d}={n}" for d, n in sorted(t.per_database.items()) if d.startswith("shop_")))
        finally:
            for t in targets:
                t.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(targets: list[Target], before: dict, after: dict, scrapes: int) -> None:
    theirs = next(t for t in targets if t.label == "theirs")
    base = statistics.median(theirs.times)
    print(f"\n{'exporter':<16}{'first s':>9}{'median s':>10}{'p90 s':>9}{'vs theirs':>11}{'peak RSS MiB':>14}"
          f"{'series':>9}{'queries/scrape':>16}  missing-index suspects")
    for t in targets:
        times = sorted(t.times)
        med = statistics.median(times)
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        q = (after.get(t.role, 0) - before.get(t.role, 0)) / scrapes
        print(f"{t.label:<16}{t.first:>9.4f}{med:>10.4f}{p90:>9.4f}{med / base:>11.2f}{t.peak_rss_mib():>14.1f}"
              f"{t.series:>9}{q:>16.1f}  {', '.join(t.suspects) or '-'}")
    print("\nfirst s: the first scrape (the advisor's first pass). median/p90 over the round-robin scrapes after one more warm-up. queries/scrape: top-level "
          "statements in pg_stat_statements by each exporter's role (PREPARE/EXPLAIN/DEALLOCATE included).")


SCRAPE_TIMEOUT = 10.0   # Prometheus' default scrape_timeout
# series that come and go with the lock itself (sessions by state, the queue, last-known marks, per-scrape timings)
# or with time (the top-N statements: others enter as the scrapes run)
VOLATILE = ("connections", "lock_", "last_known", "duration", "scrape_errors", "stat_activity", "pg_locks",
            "oldest_transaction", "_scrape_", "exporter_last_scrape", "_statement_", "pg_stat_statements")


def _stable(series: set[tuple]) -> set[tuple]:
    return {x for x in series if not any(v in x[0] for v in VOLATILE)}


def under_lock(cluster: TempCluster, targets: list[Target], scrapes: int) -> None:
    """Scrape every exporter while an ALTER TABLE holds users exclusively, 3 application sessions queued behind it."""
    baseline = {t.label: (statistics.median(t.times), _stable(t.scrape() or set())) for t in targets}
    holder = psycopg.connect(cluster.dsn(DB))
    app: list[threading.Thread] = []
    try:
        holder.execute("ALTER TABLE users ADD COLUMN bench_note text")
        for i in range(3):
            def login(i=i):
                with contextlib.suppress(psycopg.Error), psycopg.connect(
                        cluster.dsn(DB), autocommit=True, options="-c statement_timeout=300000") as c:
                    c.execute(scenario_data.LOGIN_QUERY, (f"user{i + 1}@example.com",))
            app.append(threading.Thread(target=login, daemon=True))
            app[-1].start()
        time.sleep(1.0)
        print(f"\nunder a held lock (ALTER TABLE users in an open transaction, 3 sessions queued), {scrapes} scrapes "
              f"each, {SCRAPE_TIMEOUT:g} s scrape timeout:")
        print(f"{'exporter':<16}{'median s':>10}{'max s':>9}{'vs no lock':>12}{'series kept':>16}")
        for t in targets:
            t.times.clear()
            kept = None
            for _ in range(scrapes):
                got = t.scrape(timeout=SCRAPE_TIMEOUT)
                if got is None:   # lost scrape: every series is a gap in Prometheus
                    kept = set()
                    break
                kept = _stable(got) if kept is None else kept & _stable(got)
            med, base = statistics.median(t.times), baseline[t.label][1]
            lost = Counter(name for name, _ in base - kept)
            timed_out = ("  (timed out: scrape lost)" if t.times[-1] >= SCRAPE_TIMEOUT else
                         "  lost: " + ", ".join(f"{n} x{c}" for n, c in lost.most_common(3)) if lost else "")
            print(f"{t.label:<16}{med:>10.3f}{max(t.times):>9.3f}{med / baseline[t.label][0]:>11.1f}x"
                  f"{len(kept & base):>9}/{len(base):<6}{timed_out}")
    finally:
        holder.rollback()
        holder.close()
        for th in app:
            th.join(30)
    print("series kept: series of the scrape without the lock still served under it (sessions, the lock queue and "
          "timings excluded: they change with the lock; statements too: the top-N moves as scrapes run); ours serves "
          "the locked table's last-known values, marked.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["single", "databases", "all"], default="all")
    p.add_argument("--scrapes", type=int, default=15)
    p.add_argument("--tables", type=int, default=2000)
    p.add_argument("--statements", type=int, default=5000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--databases", type=int, default=10, help="case databases: how many")
    p.add_argument("--database-tables", type=int, default=50, help="case databases: small tables per database")
    p.add_argument("--database-rows", type=int, default=30_000, help="case databases: rows of the slow table")
    args = p.parse_args(argv)
    if not (1 <= args.scrapes <= 500 and 1 <= args.tables <= 10_000 and 1 <= args.statements <= 3 * args.tables
            and 1 <= args.databases <= 100 and 1 <= args.database_tables <= 1000):
        print("bench: need 1 <= scrapes <= 500, 1 <= tables <= 10000, statements <= 3 x tables, "
              "1 <= databases <= 100, 1 <= database-tables <= 1000", file=sys.stderr)
        return 2
    if not os.path.exists(THEIRS_BIN):
        print(f"{THEIRS_BIN} missing: run scripts/setup-system.sh", file=sys.stderr)
        return 2
    code = 0
    if args.case in ("single", "all"):
        code = run_single(args.scrapes, args.tables, args.statements, args.users)
    if args.case in ("databases", "all") and code == 0:
        code = run_databases(args.scrapes, args.databases, args.database_tables, args.database_rows)
    return code


if __name__ == "__main__":
    sys.exit(main())
