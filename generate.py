"""slo.yaml -> alerts/ (and the other generated files). Exit codes: 0 ok, 1 stale (--check), 2 bad spec.

    python generate.py [--spec slo.yaml] [--out .] [--check]
    python generate.py --spec slos/ [--spec more.yaml ...] [--defaults defaults.yaml]   # many services

A --spec is a file or a directory of *.yaml/*.yml files, one service each. Files may be sloguard specs, Sloth
prometheus/v1 specs or OpenSLO v1 SLO documents; the latter two take links and the database section from
--defaults (a sloguard spec without service and slos).
"""
from __future__ import annotations

import argparse
import os
import sys

from sloguard.outputs import FleetError, render_all
from sloguard.spec import SpecError, load_paths
from sloguard.writer import diff_tree, write_tree

ROOT = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate Prometheus rules (and more) from an SLO spec.")
    parser.add_argument("--spec", action="append", metavar="PATH",
                        help="spec file or directory of spec files, one service each; repeatable (default: slo.yaml)")
    parser.add_argument("--defaults", metavar="FILE",
                        help="links, alerting and database for Sloth/OpenSLO specs (a sloguard spec without "
                             "service and slos)")
    parser.add_argument("--out", default=ROOT, help="output root (default: the repository root)")
    parser.add_argument("--check", action="store_true", help="exit 1 when files on disk differ from the output")
    args = parser.parse_args(argv)
    try:
        specs = load_paths(args.spec or [os.path.join(ROOT, "slo.yaml")], args.defaults)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: --out {args.out}: is a file, not a directory. Fix: pass the output root directory "
              "(default: the repository root)", file=sys.stderr)
        return 2
    warnings: list[str] = []
    try:
        files = render_all(specs, warnings)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.check:
        diff = diff_tree(args.out, files)
        if diff.clean:
            print(f"generated files are up to date ({len(files)} files)")
            return 0
        print(diff.report(), file=sys.stderr)
        print("generated files are stale: run `make generate` and commit the result", file=sys.stderr)
        return 1
    try:
        changed = write_tree(args.out, files)
    except OSError as exc:
        where = exc.filename or args.out
        print(f"error: cannot write {where}: {exc.strerror or exc}. Fix: check that --out {args.out} is a writable "
              "directory and that nothing in it is a file where a directory is needed",
              file=sys.stderr)
        return 2
    print(f"wrote {len(changed)} changed file(s) of {len(files)}" + "".join(f"\n  {p}" for p in changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
