"""The spec against a live Prometheus: every selector has series, thresholds are buckets, the exporter is there.

Exit 0: every check passed. 1: problems, one line each (`file: field: problem. Fix: ...`).
2: the check could not run (bad spec, Prometheus unreachable or refusing a query).
"""
from __future__ import annotations

import argparse
import os
import sys

from sloguard import promql
from sloguard.checklive.api import PrometheusAPI, Unreachable
from sloguard.checklive.checks import DEFAULT_LOOKBACK, Checker
from sloguard.spec import SpecError, load_paths

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sloguard.checklive", description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus", metavar="URL", default=os.environ.get("PROMETHEUS"),
                   help="Prometheus base URL, e.g. http://127.0.0.1:9090 (default: $PROMETHEUS)")
    p.add_argument("--spec", action="append", metavar="PATH", help="spec file or directory, repeatable "
                   "(default: slo.yaml)")
    p.add_argument("--defaults", metavar="FILE", help="links and database for Sloth/OpenSLO specs (as generate.py)")
    p.add_argument("--lookback", default=DEFAULT_LOOKBACK, help=f"a series seen within it counts as present "
                   f"(default {DEFAULT_LOOKBACK})")
    a = p.parse_args(argv)
    if not a.prometheus:
        print("error: no Prometheus given. Fix: make check-live PROMETHEUS=http://host:9090 (or --prometheus URL)",
              file=sys.stderr)
        return 2
    try:
        promql.parse_duration(a.lookback)
    except promql.PromQLError as exc:
        print(f"error: --lookback {a.lookback}: {exc}. Fix: write e.g. 1h or 1d", file=sys.stderr)
        return 2
    try:
        specs = load_paths(a.spec or [os.path.join(ROOT, "slo.yaml")], a.defaults)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checker = Checker(PrometheusAPI(a.prometheus), a.lookback)
    try:
        problems = [problem for spec in specs for problem in checker.spec(spec)]
    except Unreachable as exc:
        print(f"error: {exc}. Fix: check the URL and that Prometheus is up", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem.line())
    services = ", ".join(s.service for s in specs)
    print(f"check-live: {len(problems)} problem(s) for {services} ({checker.api.queries} queries to {a.prometheus})",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
