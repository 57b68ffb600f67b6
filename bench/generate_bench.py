"""`make bench`: generation time and rules per SLO for specs of 10, 100 and 1,000 SLOs (in-process).

Each size is built as spec text (half availability, half latency SLOs, 30d and 28d windows), then timed through
the whole path: parse + validate (sloguard.spec) and render every rule file (sloguard.outputs.render_rules).
Rules per SLO exclude the database groups (a fixed cost per spec). Sloth emits 17 rules per SLO.
"""
from __future__ import annotations

import argparse
import time

from sloguard.outputs import render_rules
from sloguard.rules.groups import build_groups
from sloguard.spec import parse_spec

SLOTH_RULES_PER_SLO = 17
SIZES = (10, 100, 1000)
REPEATS = 3

DATABASE = """database:
  latency_p99: {metric: 'http_request_duration_seconds{job="api"}'}
  pool: {in_use: 'db_pool_connections_in_use{job="api"}', max: 'db_pool_connections_max{job="api"}', waiting: 'db_pool_waiting_requests{job="api"}'}
"""


def spec_text(n: int) -> str:
    lines = ["service: bench", "links: {runbook: 'https://example.com/rb.md', grafana: 'http://localhost:3000'}", "slos:"]
    for i in range(n):
        window = "30d" if i % 2 else "28d"
        if i % 2:
            sli = f"{{events: {{total: 'http_requests_total{{job=\"svc{i}\"}}', errors: 'http_requests_total{{job=\"svc{i}\",code=~\"5..\"}}'}}}}"
        else:
            sli = f"{{latency: {{metric: 'http_request_duration_seconds{{job=\"svc{i}\"}}', threshold: 0.5}}}}"
        lines.append(f"  - {{name: slo-{i}, objective: 99.9, window: {window}, sli: {sli}}}")
    return "\n".join(lines) + "\n" + DATABASE


def measure(n: int) -> dict:
    text = spec_text(n)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        spec = parse_spec(text, f"bench-{n}.yaml")
        files, _ = render_rules(spec)
        best = min(best, time.perf_counter() - start)
    groups, _ = build_groups(spec)
    slo_rules = sum(len(g["rules"]) for g in groups if g["name"].startswith("sloguard-slo-"))
    return {"slos": n, "seconds": best, "rules_per_slo": slo_rules / n,
            "bytes": sum(len(t.encode()) for t in files.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated SLO counts")
    args = parser.parse_args(argv)
    rows = [measure(int(s)) for s in args.sizes.split(",")]
    print(f"{'SLOs':>6} {'seconds':>9} {'ms/SLO':>8} {'rules/SLO':>10} {'vs Sloth':>9} {'output MB':>10}")
    for r in rows:
        print(f"{r['slos']:>6} {r['seconds']:>9.3f} {1000 * r['seconds'] / r['slos']:>8.2f} {r['rules_per_slo']:>10.1f} "
              f"{r['rules_per_slo'] - SLOTH_RULES_PER_SLO:>+9.1f} {r['bytes'] / 1e6:>10.2f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["seconds"] / first["seconds"]) / (last["slos"] / first["slos"])
        print(f"scaling {first['slos']} -> {last['slos']} SLOs: time x{last['seconds'] / first['seconds']:.1f} for "
              f"x{last['slos'] // first['slos']} SLOs (1.0 = linear: {growth:.2f})")
    print("rules per SLO: availability 19 = 8 error ratios + 7 Sloth meta rules + 4 burn-rate alerts (one per window "
          "pair, labelled burn_window; Sloth has 2 alerts, one per tier); latency 20 = the same + "
          f"SloHistogramBucketMissing (threshold not a bucket boundary). Sloth: {SLOTH_RULES_PER_SLO}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
