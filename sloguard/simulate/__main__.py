"""Replay the 2024-01-15 incident end to end on 127.0.0.1: `python -m sloguard.simulate [--quick]`.

Starts PostgreSQL 15 (pg_stat_statements, HypoPG), exporters/pg_exporter, the demo API, Alertmanager, Prometheus
with the generated rules and a load generator; plays healthy traffic, the migration, the degradation, the alerts,
`sloguard.diagnose`, the recommended CREATE INDEX CONCURRENTLY and the recovery; writes
.sim-runs/simulation-<mode>.{md,png,json} (ignored by git; --out elsewhere). Every process is stopped at the end, on error, on Ctrl-C/SIGTERM and at
--deadline. Exit 0 when the alerts fired and all resolved after the fix, 1 when the replay ran but did not show
that, 2 when it could not run (or reached --deadline), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs go to an ignored directory: a replay must not rewrite committed files. The committed example report is
# docs/examples/ (refreshed on purpose with --out docs/examples).
DEFAULT_OUT = ".sim-runs"


class Interrupted(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def _on_deadline(_signum, _frame):
    raise DeadlineExceeded()


def _reason(exc: BaseException) -> str:
    """One readable line or block: a failed psql/command says what it printed, not just its exit code."""
    import subprocess
    if isinstance(exc, subprocess.CalledProcessError):
        out = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return f"{exc} {out.strip()[-800:]}".strip()
    return f"{type(exc).__name__}: {exc}"


def parse_args(argv):
    from sloguard.simulate.modes import MODES
    p = argparse.ArgumentParser(prog="python -m sloguard.simulate", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the tests' mode: smaller, shorter, < 3 minutes")
    p.add_argument("--users", type=int, help="rows in users (scale)")
    p.add_argument("--rate", type=float, help="load, requests per second")
    p.add_argument("--pool-size", type=int)
    p.add_argument("--out", default=os.path.join(REPO, DEFAULT_OUT),
                   help=f"report directory (default: {DEFAULT_OUT}/, ignored by git)")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs (path printed)")
    p.add_argument("--deadline", type=int, default=0,
                   help="give up after this many seconds, stop everything and exit 2 (default: none)")
    args = p.parse_args(argv)
    mode = MODES["quick" if args.quick else "default"]
    overrides = {k: v for k, v in (("users", args.users), ("rate", args.rate), ("pool_size", args.pool_size))
                 if v is not None}
    problems = []
    if args.users is not None and not 10_000 <= args.users <= 5_000_000:
        problems.append("--users must be in [10000, 5000000] (the seq-scan alert needs a table of 100k+ rows)")
    if args.rate is not None and not 1 <= args.rate <= 1000:
        problems.append("--rate must be in [1, 1000]")
    if args.pool_size is not None and not 1 <= args.pool_size <= mode.max_connections - 4:
        problems.append(f"--pool-size must be in [1, {mode.max_connections - 4}] (max_connections "
                        f"{mode.max_connections} minus the exporter, diagnose and reserved slots)")
    if args.deadline < 0:
        problems.append("--deadline must be >= 0 seconds (0: no deadline)")
    if problems:
        p.error("; ".join(problems))
    return args, dataclasses.replace(mode, **overrides)


def preflight(repo: str) -> list[str]:
    from sloguard.pgcluster import PG_BIN
    from sloguard.simulate.stack import ALERTMANAGER_BIN, PROMETHEUS_BIN
    missing = []
    for path, fix in ((PROMETHEUS_BIN, "apt-get install prometheus (scripts/setup-system.sh)"),
                      (ALERTMANAGER_BIN, "apt-get install prometheus-alertmanager (scripts/setup-system.sh)"),
                      (os.path.join(PG_BIN, "initdb"), "apt-get install postgresql-15 (scripts/setup-system.sh)")):
        if not os.access(path, os.X_OK):
            missing.append(f"{path} not found: {fix}")
    if not os.path.exists(os.path.join(repo, "demo", "slo.yaml")):
        missing.append("demo/slo.yaml not found: the replay generates its rules from the demo API's spec")
    if not os.path.exists("/usr/share/postgresql/15/extension/hypopg.control"):
        missing.append("HypoPG not installed: apt-get install postgresql-15-hypopg (scripts/setup-system.sh)")
    return missing


def main(argv: list[str] | None = None) -> int:
    args, mode = parse_args(argv)
    missing = preflight(REPO)
    if missing:
        print("sloguard.simulate cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    from sloguard.simulate.calibration import Window, measure
    from sloguard.simulate.chart import chart_series
    from sloguard.simulate.panels import check_panels
    from sloguard.simulate.production import promtool_ttd
    from sloguard.simulate.promapi import AlertPoller, AlertTimeline
    from sloguard.simulate.replay_view import replay_view
    from sloguard.simulate.report import write_outputs
    from sloguard.simulate.scenario import Scenario
    from sloguard.simulate.stack import Stack, exporter_job_from_spec
    from sloguard.spec import SpecError

    def say(text: str) -> None:
        print(text, flush=True)

    workdir = tempfile.mkdtemp(prefix="sloguard-sim-")
    # rules and dashboards from the demo API's own spec: the user's slo.yaml cannot change the replay
    try:
        view = replay_view(REPO, workdir)
    except SpecError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"sloguard.simulate cannot run: {exc}", file=sys.stderr)
        return 2
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _on_deadline)
    signal.alarm(args.deadline)    # 0: none. Callers with their own timeout (the tests) give a shorter one.
    stack = Stack(view, workdir, mode, exporter_job_from_spec(view), say)
    t_start = time.time()
    poller = None
    code = 2
    try:
        say(f"sloguard simulate, {mode.name} mode: {mode.users:,} users, {mode.rate:g} req/s, "
            f"pool {mode.pool_size}, rules compressed {mode.time_factor:g}x; work dir {workdir}")
        seed_s = stack.start_database()
        say(f"PostgreSQL 15 on 127.0.0.1:{stack.cluster.port} (data {stack.cluster.datadir}), "
            f"seeded in {seed_s:.1f}s")
        stack.start_services()
        say(f"exporter {stack.url('exporter')}, demo API {stack.url('api')}, "
            f"Prometheus {stack.url('prometheus')}, Alertmanager {stack.url('alertmanager')}")
        # Polled from now to the end, in its own thread: nothing the replay does (diagnose, the index build) pauses it.
        timeline = AlertTimeline(stack.prometheus, stack.alertmanager)
        poller = AlertPoller(timeline).start()
        stack.arm_alerting()
        scenario = Scenario(stack, timeline, poller, say)
        scenario.out.marks.start = t_start
        scenario.out.marks.rules_loaded = time.time()
        scenario.out.seed_seconds = seed_s
        say("every target scraped once; rules and Alertmanager loaded")
        outcome = scenario.run()
        say("checking every dashboard panel query against the live Prometheus")
        window = f"{mode.min_range_ms // 1000}s"
        panels = check_panels(view, stack.prometheus, outcome.marks.load_start, outcome.marks.end, window)
        series = chart_series(stack.prometheus, outcome.marks.load_start, outcome.marks.end, window)
        records = timeline.snapshot()
        m = outcome.marks
        saturated_at = min([p[0] for r in records if r.alertname == "AppDbPoolSaturated" for p in r.periods
                            if p[0] >= m.migration] or [m.migration])
        outcome.calibration = {
            "healthy": measure(stack.prometheus, Window("healthy", m.load_start, m.migration)),
            "saturated": measure(stack.prometheus, Window("saturated", saturated_at, m.fix_start or m.recovered)),
        }
        paths = write_outputs(args.out, mode, outcome, records, timeline.events,
                              list(stack.sink.notifications), panels, series, stack.rules_summary,
                              promtool_ttd(REPO))
        empty = [p for p in panels if not p.ok]
        say(f"panels with data: {len(panels) - len(empty)}/{len(panels)}"
            + ("".join(f"\n  NO DATA {p.uid} #{p.panel_id} {p.title}" for p in empty)))
        say("time to detect (after the migration):")
        for rec in sorted(records, key=lambda r: r.firing_at or 1e18):
            if rec.firing_at and rec.firing_at >= outcome.marks.migration:   # start-up flickers are not detections
                say(f"  {rec.firing_at - outcome.marks.migration:6.1f}s  {rec.key} [{rec.severity}]")
        say(f"alert API polls: {timeline.polls}, failed {timeline.errors}, longest gap "
            f"{outcome.largest_poll_gap_s:g}s")
        say(f"report: {paths['markdown']} (chart {paths['chart']}); total {time.time() - t_start:.0f}s")
        fired = bool(records)
        code = 0 if fired and outcome.all_resolved and outcome.fix_sql else 1
    except Interrupted as exc:
        say(f"interrupted ({exc}): stopping every process")
        code = 130
    except DeadlineExceeded:
        print(f"sloguard.simulate gave up: --deadline {args.deadline}s reached; stopping every process",
              file=sys.stderr)
        code = 2
    except Exception as exc:   # any other failure to run the replay is "could not run", with its reason
        print(f"sloguard.simulate failed: {_reason(exc)}", file=sys.stderr)
        code = 2
    finally:
        signal.alarm(0)
        if poller is not None:
            poller.stop()
        # Ignore a second Ctrl-C while cleaning up: a half-stopped stack is worse than a slow exit.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if args.keep_workdir:
            say(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
