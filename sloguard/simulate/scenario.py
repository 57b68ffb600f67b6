"""The replay: healthy traffic -> migration -> degradation -> alerts -> diagnose -> CREATE INDEX CONCURRENTLY ->
recovery. Every step is timed on the wall clock (Unix seconds) so the report can place it on the chart."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import pglast
import psycopg

from sloguard.scenario_data import LOGIN_QUERY
from sloguard.simulate import seed
from sloguard.simulate.promapi import AlertPoller, AlertTimeline
from sloguard.simulate.stack import Stack

SLO_BURN_SUFFIX = "ErrorBudgetBurn"
# Alerts that name the cause (the database), as opposed to the symptom (the SLOs, p99, the pool).
DATABASE_ALERTS = ("PostgresSeqScanLargeTable", "PostgresMissingIndexSuspected", "PostgresStatementSlow",
                   "PostgresStatementRegression")
# What the replay must show before it moves on to the diagnosis (tests/test_simulation.py asserts exactly this):
# a page, these alerts, and Alertmanager notifying both receivers.
EXPECTED_ALERTS = ("PostgresSeqScanLargeTable", "AppDbPoolSaturated", "ApiLatencyP99High")
EXPECTED_RECEIVERS = ("page", "ticket")


@dataclass
class Marks:
    start: float = 0.0
    rules_loaded: float = 0.0     # alerting armed, after every target's first successful scrape
    load_start: float = 0.0
    migration: float = 0.0
    detected: float = 0.0
    diagnose_start: float = 0.0
    diagnose_end: float = 0.0
    fix_start: float = 0.0
    fix_end: float = 0.0
    recovered: float = 0.0
    end: float = 0.0


@dataclass
class Outcome:
    marks: Marks = field(default_factory=Marks)
    seed_seconds: float = 0.0
    diagnose_exit: int | None = None
    diagnose_findings: list[dict] = field(default_factory=list)
    recommended: dict | None = None           # the missing_index finding that was applied
    fix_sql: str = ""
    plan_before_fix: str = ""
    plan_after_fix: str = ""
    missing_index_evidence: list[dict] = field(default_factory=list)   # exporter series labels, from Prometheus
    all_resolved: bool = False
    unresolved: list[str] = field(default_factory=list)
    loadgen_summary: str = ""
    missing_signals: list[str] = field(default_factory=list)    # expected but not seen before the diagnosis
    calibration: dict = field(default_factory=dict)   # calibration.measure() over the healthy and saturated windows
    active_before_load: list[str] = field(default_factory=list)  # pending or firing before the load started
    polls: int = 0                            # alert API polls, once a second from start-up to the end
    poll_errors: int = 0                      # of which failed (the timeline may have gaps)
    largest_poll_gap_s: float = 0.0           # longest stretch without a successful poll, rules loaded to end
    poll_times: list[float] = field(default_factory=list)   # every successful poll (Unix seconds)


def login_plan(dsn: str) -> str:
    """EXPLAIN of the login query with a sample value: a plan line per row."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("EXPLAIN " + LOGIN_QUERY, ("user42@example.com",)).fetchall()
    return "\n".join(r[0] for r in rows)


class Scenario:
    def __init__(self, stack: Stack, timeline: AlertTimeline, poller: AlertPoller, say=print):
        self.stack, self.timeline, self.poller, self.say = stack, timeline, poller, say
        self.out = Outcome()
        self.mode = stack.mode

    # --- helpers ---
    def print_events(self) -> None:
        """What the poller thread saw since the last call, stamped with when it saw it."""
        for when, line in self.poller.drain():
            self.say(f"  +{when - self.out.marks.start:6.1f}s {line}")

    def _tick(self, seconds: float) -> None:
        """Let `seconds` pass, printing the alert events the poller records; fail fast if a child died."""
        end = time.time() + seconds
        while True:
            self.print_events()
            self.stack.procs.check_alive()
            left = end - time.time()
            if left <= 0:
                return
            time.sleep(min(1.0, left))

    def _wait(self, condition, max_s: float) -> bool:
        deadline = time.time() + max_s
        while not condition():
            if time.time() >= deadline:
                return False
            self._tick(min(1.0, max(0.0, deadline - time.time())))
        return True

    def _firing_names(self) -> set[str]:
        return {r.alertname for r in self.timeline.firing()}

    def _page_and_database_firing(self) -> bool:
        firing = self.timeline.firing()
        page = any(r.alertname.endswith(SLO_BURN_SUFFIX) and r.severity == "critical" for r in firing)
        return page and bool(self._firing_names() & set(DATABASE_ALERTS))

    def missing_signals(self) -> list[str]:
        """What the replay still has to show since the migration: expected alerts, a page, notified receivers."""
        since = self.out.marks.migration
        fired = [r for r in self.timeline.snapshot() if r.firing_at and r.firing_at > since]
        names = {r.alertname for r in fired}
        missing = [a for a in EXPECTED_ALERTS if a not in names]
        if not any(r.alertname.endswith(SLO_BURN_SUFFIX) and r.severity == "critical" for r in fired):
            missing.append("an SLO page")
        receivers = {n["receiver"] for n in list(self.stack.sink.notifications)
                     if n["status"] == "firing" and n["received_at"] > since}
        missing += [f"a notification to {r}" for r in EXPECTED_RECEIVERS if r not in receivers]
        return missing

    # --- phases ---
    def healthy(self) -> None:
        m = self.out.marks
        # The rules were loaded only after every target's first successful scrape (Stack.arm_alerting), so nothing
        # should be pending here; a couple of evaluations show it, and the report lists anything that was.
        self._tick(2)
        self.out.active_before_load = self.timeline.active_or_pending()
        if self.out.active_before_load:
            self.say("  alerts active before any load: " + ", ".join(self.out.active_before_load))
        total = self.mode.healthy_s + self.mode.max_degraded_s + self.mode.settle_s + self.mode.max_recovery_s + 120
        self.stack.start_load(total)
        m.load_start = time.time()
        self.say(f"healthy traffic: {self.mode.rate:g} req/s for {self.mode.healthy_s:g}s "
                 f"(login by email+status, 5% recent-orders join)")
        self._tick(self.mode.healthy_s)

    def migrate(self) -> None:
        self.out.plan_before_fix = ""
        self.out.marks.migration = time.time()
        self.stack.cluster.psql(seed.migration_sql(), "app")
        self.say(f"migration {seed.MIGRATION_VERSION} applied: ADD COLUMN user_preferences, "
                 f"index {seed.EMAIL_INDEX} lost")
        self.out.plan_before_fix = login_plan(self.stack.dsn())
        self.say("  login query plan now: " + self.out.plan_before_fix.splitlines()[0])

    def degrade(self) -> None:
        deadline = time.time() + self.mode.max_degraded_s
        self.say(f"waiting for the page and a database alert (at most {self.mode.max_degraded_s:g}s)")
        if self._wait(self._page_and_database_firing, self.mode.max_degraded_s):
            self.out.marks.detected = time.time()
            self.say(f"detected {self.out.marks.detected - self.out.marks.migration:.0f}s after the migration; "
                     f"waiting for: {', '.join(self.missing_signals()) or 'nothing more'}")
        else:
            self.say("the page and a database alert did not both fire in time")
        # Not a fixed settle: wait for exactly what the replay must show, within the same overall budget.
        if self._wait(lambda: not self.missing_signals(), max(0.0, deadline - time.time())):
            self.say(f"every expected alert and notification seen; {self.mode.settle_s:g}s more samples")
            self._tick(self.mode.settle_s)
        else:
            self.out.missing_signals = self.missing_signals()
            self.say("not seen in time: " + ", ".join(self.out.missing_signals) + "; diagnosing anyway")
        # A snapshot of the exporter's own page, kept in the work dir (--keep-workdir) for post-mortems of the replay.
        with contextlib.suppress(OSError), urllib.request.urlopen(
                self.stack.url("exporter") + "/metrics", timeout=10) as resp, \
                open(f"{self.stack.workdir}/exporter-degraded.prom", "wb") as f:
            f.write(resp.read())
        # Every suspect the exporter reported while degraded (the exporter re-checks candidates every few seconds,
        # so read the whole window rather than one instant).
        window = max(1, int(time.time() - self.out.marks.migration))
        self.out.missing_index_evidence = [
            s["metric"] for s in self.stack.prometheus.query(
                f"max by (datname, schemaname, relname, columns, index) "
                f"(max_over_time(sloguard_pg_missing_index_suspect[{window}s]))")]

    def diagnose(self) -> None:
        m = self.out.marks
        m.diagnose_start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "sloguard.diagnose", "--dsn", self.stack.dsn(), "--format", "json",
             "--prometheus", self.stack.url("prometheus")],
            cwd=self.stack.repo, capture_output=True, text=True, timeout=120)
        m.diagnose_end = time.time()
        self.out.diagnose_exit = proc.returncode
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"diagnose exit {proc.returncode}, output is not JSON: {proc.stderr[-800:]}") from exc
        self.out.diagnose_findings = doc.get("findings", [])
        candidates = [f for f in self.out.diagnose_findings if f.get("kind") == "missing_index"]
        self.say(f"diagnose: exit {proc.returncode} in {m.diagnose_end - m.diagnose_start:.1f}s, "
                 f"{len(self.out.diagnose_findings)} findings, {len(candidates)} missing-index recommendation(s)")
        for f in self.out.diagnose_findings[:5]:
            self.say(f"  [{f.get('severity')}] {f.get('title')}")
        if candidates:
            self.out.recommended = candidates[0]
            self.out.fix_sql = candidates[0].get("action") or candidates[0].get("data", {}).get("ddl", "")

    def fix(self) -> None:
        if not self.out.fix_sql:
            self.say("no index recommended: nothing to apply (the report will say so)")
            return
        m = self.out.marks
        m.fix_start = time.time()
        self.say(f"applying the recommended fix: {self.out.fix_sql}")
        # CREATE INDEX CONCURRENTLY cannot run inside a transaction block: one autocommit statement at a time.
        with psycopg.connect(self.stack.dsn(), autocommit=True, prepare_threshold=None) as conn:
            for statement in pglast.split(self.out.fix_sql):
                conn.execute(statement)
        m.fix_end = time.time()
        self.out.plan_after_fix = login_plan(self.stack.dsn())
        self.say(f"  index built in {m.fix_end - m.fix_start:.1f}s; login plan now: "
                 + self.out.plan_after_fix.splitlines()[0])

    def recover(self) -> None:
        self.say(f"waiting for every alert to resolve (at most {self.mode.max_recovery_s:g}s)")

        def quiet() -> bool:
            return not self.timeline.active_or_pending() and not self.stack.prometheus.alerts()

        self.out.all_resolved = self._wait(quiet, self.mode.max_recovery_s)
        self.out.marks.recovered = time.time()
        self.out.unresolved = self.timeline.active_or_pending()
        if self.out.all_resolved:
            self.say(f"all alerts resolved {self.out.marks.recovered - self.out.marks.fix_end:.0f}s after the fix")
        else:
            self.say(f"still active after {self.mode.max_recovery_s:g}s: {', '.join(self.out.unresolved)}")

    def run(self) -> Outcome:
        self.healthy()
        self.migrate()
        self.degrade()
        self.diagnose()
        self.fix()
        self.recover()
        self._tick(3)   # a few healthy samples after recovery, for the chart
        self.out.loadgen_summary = self.stack.stop_load()
        self.out.marks.end = time.time()
        self.poller.stop()
        self.print_events()
        self.out.polls, self.out.poll_errors = self.timeline.polls, self.timeline.errors
        self.out.poll_times = [round(t, 3) for t in self.timeline.poll_times]
        self.out.largest_poll_gap_s = round(
            self.timeline.largest_gap(self.out.marks.rules_loaded or self.out.marks.start, self.out.marks.end), 1)
        return self.out
