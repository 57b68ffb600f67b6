"""Registry wiring and the exporter's own health: up, per-collector success and duration, scrape errors.

One top-level prometheus_client collector runs every sub-collector at scrape time under the database lock,
so concurrent scrapes are serialised on the single connection instead of opening more.
A failing collector costs its own metrics only; a lost connection turns `up` to 0 and the endpoint keeps answering.
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
from .connection import Database, DatabaseUnavailable, one_line
from .connections import ConnectionsCollector, LocksCollector
from .migrations import MigrationsCollector
from .missing_indexes import MissingIndexesCollector
from .statements import StatementsCollector
from .tables import TablesCollector

log = logging.getLogger(__name__)


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

    def describe(self):
        return []   # no scrape at registration time

    def collect(self):
        success = GaugeMetricFamily(names.COLLECTOR_SUCCESS, "1 when the collector's last run succeeded.",
                                    labels=["collector"])
        duration = GaugeMetricFamily(names.COLLECTOR_DURATION, "Duration of the collector's last run, seconds.",
                                     labels=["collector"])
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
        yield from families

    def _run(self, collector: SubCollector, ctx: ScrapeContext):
        """(ok, seconds, families); ok is None when the connection died."""
        start = time.perf_counter()
        try:
            fams = collector.collect(ctx)
            return True, time.perf_counter() - start, fams
        except (queries.MissingPrivilege, queries.ExtensionMissing) as e:
            self._fail_once(collector.name, str(e), logging.ERROR)
        except psycopg.Error as e:
            if ctx.conn.broken or ctx.conn.closed:
                self._errors[collector.name] += 1
                self.db.mark_broken(e)
                return None, time.perf_counter() - start, []
            hint = ""
            if isinstance(e, psycopg.errors.InsufficientPrivilege):
                hint = f" (run `GRANT pg_monitor TO {ctx.caps.user};` as a superuser)"
            elif isinstance(e, psycopg.errors.QueryCanceled):
                hint = f" (query timeout {self.db.query_timeout:g}s; raise --query-timeout if this repeats)"
            self._fail_once(collector.name, one_line(e) + hint, logging.WARNING)
        except Exception as e:   # a bug of ours: say so once with the traceback, keep serving the rest
            if (collector.name, repr(e)) not in self._logged_problems:
                self._logged_problems.add((collector.name, repr(e)))
                log.exception("collector %s failed unexpectedly", collector.name)
        self._errors[collector.name] += 1
        return False, time.perf_counter() - start, []

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
