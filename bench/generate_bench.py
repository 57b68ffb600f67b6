"""`make bench`: generation end to end against promtool checking its output, side by side, for 10/100/1,000 SLOs.

Each size is written as a spec file (half availability, half latency SLOs, 30d and 28d windows). Timed, best of
REPEATS, each in a fresh process as a user runs them:
  generate  `python generate.py --spec <file> --out <fresh dir>`: start-up, imports, parse and validate, rules,
            PrometheusRule, dashboards, mixin, writing every file;
  promtool  `promtool check rules` of the rule file it wrote (Prometheus's own parser and checks).
The goal (issue 13) is generate <= 0.5 x promtool at 1,000 SLOs. Also printed: rules per SLO (Sloth emits 17), the
overview dashboard's size (templated: it must not grow with the SLO count) and the total output.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from sloguard.dashboard_links import SLO_OVERVIEW_UID
from sloguard.rules.groups import build_groups
from sloguard.spec import parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTH_RULES_PER_SLO = 17
SIZES = (10, 100, 1000)
REPEATS = 3
GOAL_RATIO = 0.5
RULES_PATH = os.path.join("alerts", "sloguard-rules.yaml")

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


def _timed(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def _tree_bytes(top: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(top) for f in files)


def measure(n: int, promtool: str, workdir: str) -> dict:
    spec_path = os.path.join(workdir, f"bench-{n}.yaml")
    with open(spec_path, "w") as fh:
        fh.write(spec_text(n))
    generate, check = float("inf"), float("inf")
    for i in range(REPEATS):
        out = os.path.join(workdir, f"out-{n}-{i}")      # fresh directory: every file written, as a first run
        generate = min(generate, _timed([sys.executable, os.path.join(ROOT, "generate.py"), "--spec", spec_path,
                                         "--out", out], ROOT))
        check = min(check, _timed([promtool, "check", "rules", os.path.join(out, RULES_PATH)], ROOT))
    spec = parse_spec(spec_text(n), spec_path)
    groups, _ = build_groups(spec)
    slo_rules = sum(len(g["rules"]) for g in groups if g["name"].startswith("sloguard-slo-"))
    overview = os.path.join(out, "dashboards", f"{SLO_OVERVIEW_UID}.json")
    return {"slos": n, "generate": generate, "promtool": check, "rules_per_slo": slo_rules / n,
            "overview_kb": os.path.getsize(overview) / 1e3, "output_mb": _tree_bytes(out) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated SLO counts")
    args = parser.parse_args(argv)
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not found: run `bash scripts/setup-system.sh` (Debian package prometheus)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sloguard-bench-") as workdir:
        rows = [measure(int(s), promtool, workdir) for s in args.sizes.split(",")]
    print(f"{'SLOs':>6} {'generate s':>11} {'promtool s':>11} {'ratio':>6} {'rules/SLO':>10} {'vs Sloth':>9} "
          f"{'overview KB':>12} {'output MB':>10}")
    for r in rows:
        print(f"{r['slos']:>6} {r['generate']:>11.3f} {r['promtool']:>11.3f} {r['generate'] / r['promtool']:>6.2f} "
              f"{r['rules_per_slo']:>10.1f} {r['rules_per_slo'] - SLOTH_RULES_PER_SLO:>+9.1f} "
              f"{r['overview_kb']:>12.1f} {r['output_mb']:>10.2f}")
    last = rows[-1]
    ratio = last["generate"] / last["promtool"]
    print(f"{last['slos']} SLOs: generate end to end {last['generate']:.2f} s vs promtool check rules "
          f"{last['promtool']:.2f} s = {ratio:.2f}x (goal <= {GOAL_RATIO}x: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
