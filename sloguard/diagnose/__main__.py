"""`python -m sloguard.diagnose` (`make diagnose ARGS=...`): read-only diagnosis of a PostgreSQL-backed API.

Exit 0: healthy. Exit 1: findings (ranked, most urgent first). Exit 2: could not run (the reason is printed).
The DSN comes from --dsn or PG_DSN; the password is never printed. CREATE INDEX is printed, never run.
Statements are judged by their mean over --sample-seconds (default 3: pg_stat_statements is read twice, that far
apart), which a long cheap history cannot hide; statements not called in that window, or --sample-seconds 0, use
the mean since the statistics were reset.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import psycopg

from sloguard.diagnose.collect import (
    DEFAULT_SAMPLE_SECONDS,
    MAX_SAMPLE_SECONDS,
    CannotDiagnose,
    DatabaseEvidence,
    collect,
    connect,
    describe_target,
)
from sloguard.diagnose.prom import PrometheusEvidence, collect_prometheus
from sloguard.diagnose.rank import Finding, exit_code, rank
from sloguard.diagnose.render import RENDERERS
from sloguard.diagnose.thresholds import from_spec
from sloguard.pginsight.queries import first_line

EXIT_CODES = """exit codes:
  0  healthy: nothing to report
  1  findings: the ranked causes are printed, most urgent first
  2  could not run: no DSN, database unreachable or a database error (the reason is printed)
`make diagnose` reports any non-zero code as make's own failure (exit 2); scripts that need the code run
.venv/bin/sloguard-diagnose (the same command) directly."""


class Progress:
    """`[3/7] top statements…` on stderr, rewritten in place; silent unless stderr is a terminal."""

    STEPS = 7

    def __init__(self, enabled: bool):
        self.enabled, self.n = enabled, 0

    def __call__(self, step: str) -> None:
        self.n += 1
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{min(self.n, self.STEPS)}/{self.STEPS}] {step}…")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def diagnose(conn: psycopg.Connection, target: str, *, prometheus: str | None = None, spec: str = "slo.yaml",
             migrations_table: str = "schema_migrations", min_live_rows: int | None = None,
             progress=lambda step: None, sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
             sleep=time.sleep) -> tuple[DatabaseEvidence, PrometheusEvidence | None, list[Finding], list[str]]:
    """Evidence and ranked findings from an open connection (tests pass their own to check it is left clean)."""
    th, note = from_spec(spec)
    if min_live_rows is not None:
        from dataclasses import replace
        th = replace(th, min_live_rows=min_live_rows)
    db = collect(conn, target, th, migrations_table, progress, sample_seconds=sample_seconds, sleep=sleep)
    prom = None
    if prometheus:
        progress("prometheus")
        prom = collect_prometheus(prometheus, th)
    return db, prom, rank(db, prom, th), [note] if note else []


def _sample_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_SAMPLE_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 (off) and {MAX_SAMPLE_SECONDS:g}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sloguard.diagnose", description=__doc__.splitlines()[0],
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default=os.environ.get("PG_DSN"), help="libpq DSN or URL (default: $PG_DSN)")
    p.add_argument("--prometheus", metavar="URL", help="e.g. http://127.0.0.1:9090: firing alerts, burn rates, pool")
    p.add_argument("--format", choices=sorted(RENDERERS), default="text")
    p.add_argument("--spec", default="slo.yaml", help="thresholds from its database: section (default: slo.yaml)")
    p.add_argument("--migrations-table", default="schema_migrations")
    p.add_argument("--min-live-rows", type=int, default=None,
                   help="a table is large from this many rows (default: spec database.seq_scans.min_live_rows)")
    p.add_argument("--sample-seconds", type=_sample_seconds, default=DEFAULT_SAMPLE_SECONDS, metavar="S",
                   help=f"judge statements by their mean over the last S seconds (two pg_stat_statements reads; "
                        f"default {DEFAULT_SAMPLE_SECONDS:g}, at most {MAX_SAMPLE_SECONDS:g}); 0: mean since the "
                        "statistics were reset")
    a = p.parse_args(argv)
    if not a.dsn:
        print("diagnose: could not run: no database given. Fix: --dsn 'host=... dbname=... user=...' or set PG_DSN",
              file=sys.stderr)
        return 2
    progress = Progress(a.format == "text" and sys.stderr.isatty())
    started = time.monotonic()
    try:
        conn = connect(a.dsn)
        try:
            db, prom, findings, notes = diagnose(conn, describe_target(a.dsn), prometheus=a.prometheus, spec=a.spec,
                                                 migrations_table=a.migrations_table,
                                                 min_live_rows=a.min_live_rows, progress=progress,
                                                 sample_seconds=a.sample_seconds)
        finally:
            conn.close()
    except CannotDiagnose as e:
        progress.done()
        print(f"diagnose: could not run: {e}", file=sys.stderr)
        return 2
    except psycopg.Error as e:
        progress.done()
        print(f"diagnose: could not run: database error at {describe_target(a.dsn)}: {first_line(e)}",
              file=sys.stderr)
        return 2
    progress.done()
    code = exit_code(findings)
    notes.append(f"collected in {time.monotonic() - started:.1f} s")
    print(RENDERERS[a.format](db, prom, findings, code, notes))
    return code


if __name__ == "__main__":
    sys.exit(main())
