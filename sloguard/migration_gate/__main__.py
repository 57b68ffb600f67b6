"""`python -m sloguard.migration_gate` (`make check-migrations`): squawk lint + query-plan gate.

Exit 0: every migration lints clean and every catalogue query plans well on a seeded throwaway PostgreSQL.
Exit 1: the gate failed (the message names the migration or query and the index that fixes it).
Exit 2: the gate could not run (bad input file, squawk or PostgreSQL missing).
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import psycopg

from sloguard.migration_gate.errors import GateInputError
from sloguard.migration_gate.runner import GateOptions, GateResult, run_gate
from sloguard.pginsight import advisor


def _fix_lines(v) -> list[str]:
    lines = []
    for s in v.fixes:
        if not getattr(s, "ddl", None):
            continue
        after = f"{s.cost_after:,.2f}" if s.cost_after is not None else "?"
        how = "HypoPG-verified" if s.verified else "unverified"
        what = f"; {s.detail}" if s.detail else ""
        lines.append(f"        fix ({how}, plan cost {s.cost_before:,.2f} -> {after}{what}):")
        lines += [f"          {sql}" for sql in advisor.build_statements(s)]
    if not lines and v.large_seq_scans:
        lines.append("        no index removes the seq scan (HypoPG tried its filter columns and join keys): "
                     "review the query")
    return lines


def render(result: GateResult) -> str:
    out = [f"migrations: {len(result.migrations)} ({', '.join(result.migrations)})"]
    if result.lint_violations:
        out.append(f"squawk: {len(result.lint_violations)} violation(s)")
        for lv in result.lint_violations:
            out.append(f"  FAIL  {lv.file}:{lv.line}: {lv.rule}: {lv.message}")
            if lv.help:
                out.append(f"        fix: {lv.help}")
    else:
        out.append("squawk: clean")
    if result.migration_error:
        out.append(f"FAIL  {result.migration_error}")
    if result.verdicts:
        out.append(f"query plans (scale {result.scale:g}; seq scan limit {result.seq_scan_min_rows:,} rows; "
                   f"cost growth limit x{result.cost_growth_factor:g}):")
        for v in result.verdicts:
            status = "FAIL" if v.failed else "ok  "
            base = f" (baseline {v.baseline_cost:,.2f})" if v.baseline_cost is not None else ""
            out.append(f"  {status}  {v.query.name:<28} cost {v.cost:,.2f}{base}")
            for s in v.large_seq_scans:
                out.append(f"        seq scan on {s.relation} ({s.rows:,} rows >= {result.seq_scan_min_rows:,})")
            if v.cost_regressed:
                out.append(f"        plan cost grew x{v.cost / max(v.baseline_cost, 1.0):.1f} vs baseline "
                           f"(limit x{result.cost_growth_factor:g})")
            if v.failed:
                out.append(f"        query ({v.query.path}): {v.query.sql}")
                out.extend(_fix_lines(v))
    for note in result.notes:
        out.append(f"note: {note}")
    if result.baseline_written:
        out.append("baseline updated")
    out.append("GATE FAILED" if result.failed else "gate passed")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sloguard.migration_gate", description=__doc__.splitlines()[0])
    p.add_argument("--migrations", default="migrations", help="directory of *.sql migrations, applied in name order")
    p.add_argument("--queries", default="queries", help="directory of the critical-query catalogue (*.sql)")
    p.add_argument("--seed", default="migrations/seed.yaml", help="row counts and value distributions")
    p.add_argument("--scale", type=float, default=None, help="multiply declared row counts (default: seed file)")
    p.add_argument("--baseline", default="queries/baseline.json", help="plan costs to compare against")
    p.add_argument("--update-baseline", action="store_true", help="record current plan costs as the baseline")
    p.add_argument("--squawk-config", default=".squawk.toml")
    p.add_argument("--lint-only", action="store_true", help="squawk only, no PostgreSQL")
    a = p.parse_args(argv)
    opts = GateOptions(a.migrations, a.queries, a.seed, a.baseline, a.squawk_config, a.scale,
                       a.update_baseline, plans=not a.lint_only)
    try:
        result = run_gate(opts)
    except GateInputError as e:
        print(f"check-migrations: {e}", file=sys.stderr)
        return 2
    except (psycopg.OperationalError, subprocess.CalledProcessError, OSError) as e:
        detail = getattr(e, "stderr", None) or e
        print(f"check-migrations: could not run PostgreSQL for the plan gate: {str(detail).strip()[:500]}",
              file=sys.stderr)
        return 2
    print(render(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
