"""`make bench-diagnose`: diagnose end to end on the scenario's 2.5M users, beside a peer in the same run.

Peer: what a human runs by hand with psql for the same answer (top statement from pg_stat_statements, then
EXPLAIN ANALYZE of it). Reported: seconds (median of --runs) and the ratio diagnose / peer. Target: < 10 s.
Also times the migration gate (`--gate-scale`, default 0.08, the CI scale) for the record.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import psycopg

from sloguard import scenario_data as sd
from sloguard.pgcluster import PG_BIN, TempCluster

DB = "bench_scenario"
PEER_SQL = """
SELECT queryid, calls, mean_exec_time, query FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 5;
SELECT relname, seq_scan, seq_tup_read, idx_scan, n_live_tup FROM pg_stat_user_tables ORDER BY seq_tup_read DESC;
EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM users WHERE email = 'user4242@example.com' AND status = 'active';
"""


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t, proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=2_500_000)
    p.add_argument("--login-calls", type=int, default=50, help="login queries run before diagnosing")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--gate-scale", type=float, default=0.08, help="0 to skip timing the migration gate")
    a = p.parse_args(argv)
    results: dict = {"users": a.users}
    with TempCluster() as cluster:
        cluster.psql(f"CREATE DATABASE {DB}")
        t = time.perf_counter()
        cluster.psql(sd.SCHEMA_SQL + sd.seed_sql(users=a.users), DB)
        cluster.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg; "
                     "INSERT INTO schema_migrations VALUES ('20240115_add_user_preferences', now())", DB)
        results["seed_seconds"] = round(time.perf_counter() - t, 1)
        print(f"seeded {a.users:,} users in {results['seed_seconds']} s", file=sys.stderr)
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
            t = time.perf_counter()
            for i in range(a.login_calls):
                conn.execute(sd.LOGIN_QUERY, (f"user{i * 4999 + 1}@example.com",)).fetchall()
            results["login_query_mean_ms"] = round((time.perf_counter() - t) / a.login_calls * 1000, 1)
        diag_cmd = [sys.executable, "-m", "sloguard.diagnose", "--dsn", cluster.dsn(DB), "--format", "json"]
        peer_cmd = [f"{PG_BIN}/psql", "-X", "-q", "-d", cluster.dsn(DB), "-c", PEER_SQL]
        diag_times, peer_times = [], []
        for _ in range(a.runs):   # interleaved, so both see the same cache state and machine load
            secs, proc = _timed(diag_cmd)
            if proc.returncode != 1:
                print(f"diagnose exited {proc.returncode}: {proc.stderr}", file=sys.stderr)
                return 2
            diag_times.append(secs)
            report = json.loads(proc.stdout)
            secs, peer = _timed(peer_cmd)
            peer.check_returncode()
            peer_times.append(secs)
        top = report["findings"][0]
        results.update({
            "diagnose_seconds_median": round(statistics.median(diag_times), 2),
            "diagnose_seconds_runs": [round(x, 2) for x in diag_times],
            "peer_manual_psql_seconds_median": round(statistics.median(peer_times), 2),
            "ratio_diagnose_to_peer": round(statistics.median(diag_times) / statistics.median(peer_times), 1),
            "target_seconds": 10, "within_target": statistics.median(diag_times) < 10,
            "top_finding": top["title"], "top_finding_action": top["action"],
            "cost_before": top["data"].get("cost_before"), "cost_after": top["data"].get("cost_after"),
        })
    if a.gate_scale > 0:
        secs, proc = _timed([sys.executable, "-m", "sloguard.migration_gate", "--scale", str(a.gate_scale)])
        results["gate_scale"], results["gate_seconds"], results["gate_exit"] = a.gate_scale, round(secs, 1), \
            proc.returncode
    print(json.dumps(results, indent=2))
    return 0 if results["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
