"""Registry wiring and the exporter's own health: up, per-collector success and duration, scrape errors.

One top-level prometheus_client collector runs every sub-collector at scrape time under the database lock,
so concurrent scrapes are serialised on the single connection instead of opening more.
A failing collector costs its own metrics only; a lost connection turns `up` to 0 and the endpoint keeps answering.

collector_success is 1 when the collector did its job this scrape, including serving the last-known value of an
object it deliberately did not read (a table another session locks exclusively: see LAST_KNOWN_AGE_SECONDS); 0 when
its run failed or an operator must fix something (a missing GRANT). A run that fails on a lock or statement timeout
serves the collector's previous output, marked with LAST_KNOWN_AGE_SECONDS{object=""}, rather than a gap.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

import psycopg
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from . import __version__
from .base import ExporterOptions, ScrapeContext, SubCollector
from .connection import Database, DatabaseUnavailable
from .connections import ConnectionsCollector, LocksCollector
from .migrations import MigrationsCollector
from .missing_indexes import MissingIndexesCollector
from .statements import StatementsCollector
from .tables import TablesCollector

log = logging.getLogger(__name__)
# failures that pass: the previous output is served (marked) instead of nothing
TRANSIENT_ERRORS = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)


def default_collectors() -> list[SubCollector]:
    # order matters: missing_indexes reuses the statements collector's top-N from the same scrape
    return [StatementsCollector(), TablesCollector(), MissingIndexesCollector(), ConnectionsCollector(),
            LocksCollector(), MigrationsCollector()]


class ExporterCollector:
    def __init__(self, db: Database, options: ExporterOptions, collectors: list[SubCollector] | None = None,
                 on_context: Callable[[ScrapeContext], None] | None = None):
        self.db = db
        self.options = options
        self.collectors = collectors if collectors is not None else default_collectors()
        # the multi-database layer (cluster.py) hands results between databases through the context
        self.on_context = on_context
        self._errors: dict[str, int] = defaultdict(int)
        self._logged_problems: set[tuple[str, str]] = set()
        self._last_good: dict[str, tuple[float, list]] = {}   # collector -> (monotonic time, families)

    def describe(self):
        return []   # no scrape at registration time

    def collect(self):
        success = GaugeMetricFamily(names.COLLECTOR_SUCCESS, "1 when the collector's last run succeeded.",
                                    labels=["collector"])
        duration = GaugeMetricFamily(names.COLLECTOR_DURATION, "Duration of the collector's last run, seconds.",
                                     labels=["collector"])
        last_known = GaugeMetricFamily(names.LAST_KNOWN_AGE_SECONDS, "Age of values served from an earlier read "
                                       "because this scrape could not read them (a lock), seconds; object \"\": "
                                       "the collector's whole output.", labels=["collector", "object"])
        families = []
        up = 0
        with self.db.lock:
            try:
                conn, caps = self.db.acquire()
                up = 1
            except DatabaseUnavailable:
                self._errors["connection"] += 1
                conn = caps = None
            if up:
                ctx = ScrapeContext(conn, caps, self.options)
                if self.on_context is not None:
                    self.on_context(ctx)
                for c in self.collectors:
                    ok, took, fams = self._run(c, ctx) if up else (False, 0.0, [])
                    if ok is None:   # connection lost mid-scrape
                        up, ok = 0, False
                    success.add_metric([c.name], 1 if ok else 0)
                    duration.add_metric([c.name], took)
                    families.extend(fams)
                for collector, obj, age in ctx.last_known:
                    last_known.add_metric([collector, obj], age)
                if up:
                    families.append(GaugeMetricFamily(
                        names.EXPORTER_INFO, "Exporter and server versions.", labels=["version", "server_version"]))
                    families[-1].add_metric([__version__, caps.server_version], 1)
            else:
                for c in self.collectors:
                    success.add_metric([c.name], 0)
                    duration.add_metric([c.name], 0.0)
        errors = CounterMetricFamily(names.SCRAPE_ERRORS, "Failed collector runs ('connection': database unreachable).",
                                     labels=["collector"])
        for name in ("connection", *(c.name for c in self.collectors)):
            errors.add_metric([name], self._errors[name])
        yield GaugeMetricFamily(names.PG_UP, "1 when the database answered this scrape.", value=up)
        yield success
        yield duration
        yield errors
        yield last_known
        yield from families

    def _run(self, collector: SubCollector, ctx: ScrapeContext):
        """(ok, seconds, families); ok is None when the connection died."""
        start = time.perf_counter()
        try:
            fams = collector.collect(ctx)
        except (queries.MissingPrivilege, queries.ExtensionMissing) as e:
            self._fail_once(collector.name, str(e), logging.ERROR)
        except queries.RelationLocked as e:   # not read, so as not to queue behind the lock; nothing known before
            self._fail_once(collector.name, f"{e}: not read until the lock is gone (see "
                            f"{names.LOCK_BLOCKER_WAITING_SESSIONS} for who holds it)", logging.WARNING)
        except psycopg.Error as e:
            if ctx.conn.broken or ctx.conn.closed:
                self._errors[collector.name] += 1
                self.db.mark_broken(e)
                return None, time.perf_counter() - start, []
            self._fail_once(collector.name, queries.first_line(e) + self._hint(e, ctx), logging.WARNING)
            if isinstance(e, TRANSIENT_ERRORS):
                self._errors[collector.name] += 1
                return False, time.perf_counter() - start, self._previous_output(collector.name, ctx)
        except Exception as e:   # a bug of ours: say so once with the traceback, keep serving the rest
            if (collector.name, repr(e)) not in self._logged_problems:
                self._logged_problems.add((collector.name, repr(e)))
                log.exception("collector %s failed unexpectedly", collector.name)
        else:
            took = time.perf_counter() - start
            self._last_good[collector.name] = (time.monotonic(), fams)
            problem = ctx.degraded.get(collector.name)
            if problem is None:
                # recovered: the next occurrence of an old problem is news again and gets its log line
                self._logged_problems = {k for k in self._logged_problems if k[0] != collector.name}
                return True, took, fams
            self._fail_once(collector.name, problem, logging.ERROR)
            self._errors[collector.name] += 1
            return False, took, fams
        self._errors[collector.name] += 1
        return False, time.perf_counter() - start, []

    def _hint(self, e: psycopg.Error, ctx: ScrapeContext) -> str:
        """What to do about a failed query, fitted to its cause."""
        if isinstance(e, psycopg.errors.InsufficientPrivilege):
            return f" (run `GRANT pg_monitor TO {ctx.caps.user};` as a superuser)"
        if isinstance(e, psycopg.errors.LockNotAvailable):
            return (f" (waited the {self.db.lock_timeout:g}s lock timeout for a lock another session holds, e.g. a "
                    "migration's ALTER TABLE; the exporter does not queue behind it: last-known values are served, "
                    f"see {names.LAST_KNOWN_AGE_SECONDS}; the queue and its root blocker are in "
                    f"{names.LOCK_BLOCKER_WAITING_SESSIONS}. Do not raise the timeouts: end or wait out the blocker)")
        if isinstance(e, psycopg.errors.QueryCanceled):
            return (f" (statement timeout {self.db.query_timeout:g}s: the server is overloaded or the catalogue is "
                    "large; last-known values are served. Raise --query-timeout only if this persists while "
                    f"{names.LOCK_BLOCKER_WAITING_SESSIONS} shows no lock queue)")
        return ""

    def _previous_output(self, name: str, ctx: ScrapeContext) -> list:
        """The collector's last good families, marked as last-known; nothing when it never succeeded."""
        if name not in self._last_good:
            return []
        at, fams = self._last_good[name]
        ctx.served_last_known(name, "", time.monotonic() - at)
        return fams

    def _fail_once(self, name: str, message: str, level: int) -> None:
        """The same problem logs once (then at debug): one clear line, not one per scrape."""
        key = (name, message)
        if key in self._logged_problems:
            log.debug("collector %s failed: %s", name, message)
            return
        if len(self._logged_problems) > 1000:   # bounded memory whatever the error texts
            self._logged_problems.clear()
        self._logged_problems.add(key)
        log.log(level, "collector %s failed: %s", name, message)


def build_registry(db: Database, options: ExporterOptions,
                   collectors: list[SubCollector] | None = None) -> tuple[CollectorRegistry, ExporterCollector]:
    registry = CollectorRegistry(auto_describe=False)
    exporter = ExporterCollector(db, options, collectors)
    registry.register(exporter)
    return registry, exporter
