"""Every database of a cluster: a layer around the per-database collectors (postgres_exporter's flag names).

One `ExporterCollector` runs the cluster-wide collectors (statements, connections, locks) on the DSN's database;
one more per scraped database runs the per-database ones (tables, missing_indexes, migrations) on that database's
own connection. The collectors themselves are unchanged: this layer gives them a connection, the cluster-wide
top statements (so the advisor plans each statement in its own database) and adds `datname` to every series a
per-database run emits.

Cost bounds: a database's connection is opened on its first scrape and reused (one `Database`, whose lock keeps
at most one query in flight per database); up to PARALLEL databases are scraped at once; at most `max_connections`
are open at once (an idle one is closed to make room; a database that finds no room within the query timeout is
skipped for that scrape and reported); the per-database top-N flags bound cardinality per database.

With --auto-discover-databases the database list is read from pg_database at every scrape: a dropped database
disappears from the next scrape (its connection closed, its series gone); templates, databases that refuse
connections and those the role may not CONNECT to are skipped and reported in `sloguard_pg_database_skipped`.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.samples import Sample

from sloguard import names
from sloguard.pginsight import queries

from .base import ExporterOptions, ScrapeContext, SubCollector
from .connection import Database, DatabaseUnavailable
from .health import ExporterCollector, default_collectors

log = logging.getLogger(__name__)

CLUSTER_WIDE = ("statements", "connections", "locks")        # read pg_stat_statements / pg_stat_activity once
PER_DATABASE = ("tables", "missing_indexes", "migrations")   # read the catalogue of the database connected to
PARALLEL = 4   # databases scraped at once: their queries run in other processes (the server's), so threads help

DISCOVERY_SQL = """
SELECT datname, datistemplate, datallowconn, has_database_privilege(datname, 'CONNECT')
FROM pg_database ORDER BY datname
"""


@dataclass(frozen=True)
class DatabaseSelection:
    auto_discover: bool = False
    include: frozenset[str] = frozenset()   # with auto_discover: only these (empty: all)
    exclude: frozenset[str] = frozenset()

    def wanted(self, datname: str) -> bool:
        return datname not in self.exclude and (not self.include or datname in self.include)


def discover(conn: psycopg.Connection, selection: DatabaseSelection) -> tuple[list[str], dict[str, str]]:
    """(databases to scrape, {skipped database: reason}); excluded/not-included ones are left out of both."""
    scrape, skipped = [], {}
    for datname, template, allow_conn, may_connect in conn.execute(DISCOVERY_SQL):
        if not selection.wanted(datname):
            continue
        if template:
            skipped[datname] = "template"
        elif not allow_conn:
            skipped[datname] = "connections_not_allowed"
        elif not may_connect:
            skipped[datname] = "no_connect_privilege"
        else:
            scrape.append(datname)
    return scrape, skipped


# Cluster-wide gauges that read "nothing here" as an absent series; the locks collector gives the DSN's database a
# 0, this layer gives every other scraped database one, so `== 0` and `> 0` both mean something per database.
ZERO_FILLED = (names.LOCK_WAITING_SESSIONS, names.OLDEST_TRANSACTION_SECONDS)


def zero_fill(families: dict, databases: list[str]) -> None:
    for name in ZERO_FILLED:
        fam = families.get(name)
        if fam is None or any(set(s.labels) != {"datname"} for s in fam.samples):
            continue   # collector off, or its labels changed: leave it alone
        have = {s.labels["datname"] for s in fam.samples}
        fam.samples.extend(Sample(fam.name, {"datname": d}, 0.0, None, None) for d in databases if d not in have)


@dataclass
class _Target:
    """One scraped database: its connection and its own collector instances (the advisor caches per database)."""
    datname: str
    db: Database
    exporter: ExporterCollector
    last_used: float = 0.0
    busy: int = 0
    top: list | None = None


class ClusterCollector:
    def __init__(self, primary: Database, options: ExporterOptions, *, enabled: tuple[str, ...] = names.COLLECTORS,
                 selection: DatabaseSelection = DatabaseSelection(), max_connections: int = 20,
                 database_factory: Callable[[str], Database] | None = None):
        self.primary = primary
        self.options = options
        self.selection = selection
        self.max_connections = max(1, max_connections)
        self.enabled = enabled
        self._factory = database_factory
        self.cluster = ExporterCollector(primary, options, self._collectors(CLUSTER_WIDE), on_context=self._on_cluster)
        self._targets: dict[str, _Target] = {}
        self._room = threading.Condition()   # guards _targets and their busy/last_used: connection accounting
        self._scrape_state = threading.local()
        self._known: tuple[list[str], dict[str, str]] = ([], {})   # last discovery, kept while the primary is down
        self._discovery_failed_logged = False

    def _collectors(self, group: tuple[str, ...]) -> list[SubCollector]:
        return [c for c in default_collectors() if c.name in group and c.name in self.enabled]

    def describe(self):
        return []

    # --- the cluster-wide run on the primary connection -----------------------------------------------------
    def _on_cluster(self, ctx: ScrapeContext) -> None:
        """Called by the cluster ExporterCollector with its connection (lock held), before its collectors run."""
        state = self._scrape_state
        state.ctx = ctx
        state.primary_name = ctx.caps.database
        if self.selection.auto_discover:
            try:
                self._known = discover(ctx.conn, self.selection)
            except psycopg.Error as e:   # keep the last list; the collectors' own errors say more
                if not self._discovery_failed_logged:
                    self._discovery_failed_logged = True
                    log.warning("cannot list databases (%s); scraping the last known list",
                                e.diag.message_primary or type(e).__name__)
        if "missing_indexes" in self.enabled and "statements" not in self.enabled:
            # the advisor needs the cluster-wide top statements: read them once here, not once per database
            try:
                ctx.top_statements = queries.top_statements(ctx.conn, self.options.statements_top_n, ctx.caps)
            except (psycopg.Error, queries.MissingPrivilege, queries.ExtensionMissing) as e:
                log.debug("top statements for the advisor unavailable: %s", e)

    # --- targets -------------------------------------------------------------------------------------------
    def _database_for(self, datname: str) -> Database:
        if self._factory is not None:
            return self._factory(datname)
        return self.primary.for_database(datname)

    def _target(self, datname: str, primary_name: str | None) -> _Target:
        with self._room:
            return self._targets.get(datname) or self._new_target(datname, primary_name)

    def _new_target(self, datname: str, primary_name: str | None) -> _Target:
        db = self.primary if datname == primary_name else self._database_for(datname)
        t = _Target(datname, db, ExporterCollector(db, self.options, self._collectors(PER_DATABASE)))
        t.exporter.on_context = lambda ctx: self._prepare(ctx, t)
        self._targets[datname] = t
        return t

    def _prepare(self, ctx: ScrapeContext, t: _Target) -> None:
        # the cluster-wide top statements of this scrape: the advisor picks its own database's from them
        ctx.top_statements = t.top
        if t.db is not self.primary:
            ctx.statement_texts = self._texts_from_primary

    def _texts_from_primary(self, queryids: list[int]) -> dict[int, str]:
        """Statement texts through the DSN's connection (pg_stat_statements is created there; queryids are unique
        enough across databases, and a shared one has the same text). Lock order is always target, then primary,
        and the primary's holders never wait for a target: no deadlock."""
        with self.primary.lock:
            try:
                conn, _ = self.primary.acquire()
            except DatabaseUnavailable as e:   # reported like any failed query of the collector
                raise psycopg.OperationalError(f"statement texts: the DSN's database is unavailable ({e})") from None
            return queries.statement_texts(conn, queryids, all_databases=True)

    def _forget(self, keep: set[str]) -> None:
        with self._room:
            gone = [t for name, t in self._targets.items() if name not in keep]
            for t in gone:
                del self._targets[t.datname]
        for t in gone:
            if t.db is not self.primary:
                t.db.close()
                log.info("database %s is no longer scraped (dropped or deselected); connection closed", t.datname)

    def _open_count(self) -> int:
        # reserved (busy) counts too: a concurrent scrape may be about to open it
        others = sum(1 for t in self._targets.values() if t.db is not self.primary and (t.db.is_open or t.busy))
        return 1 + others   # the primary's connection is always counted

    def _reserve(self, t: _Target) -> bool:
        """Mark the target busy; make room under the connection cap if it has no open connection yet, waiting up
        to the query timeout for another database's run to finish when every open connection is in use."""
        deadline = time.monotonic() + self.primary.query_timeout
        with self._room:
            while True:
                if t.db is self.primary or t.db.is_open or self._open_count() < self.max_connections:
                    t.busy += 1
                    return True
                # most recently used first: scrapes visit databases in the same order every time, so the one just
                # used is the one needed last (least recently used would reconnect every database every scrape)
                idle = sorted((o for o in self._targets.values()
                               if o.db is not self.primary and o.db.is_open and o.busy == 0 and o is not t),
                              key=lambda o: -o.last_used)
                if idle:
                    idle[0].db.close()   # its lock is free: busy == 0 and every user marks busy under _room first
                    continue
                remaining = deadline - time.monotonic()
                in_use = any(o.busy for o in self._targets.values() if o is not t and o.db is not self.primary)
                if remaining <= 0 or not in_use:   # nothing will free a slot (e.g. a cap of 1): do not wait
                    return False
                self._room.wait(remaining)

    def _release(self, t: _Target) -> None:
        with self._room:
            t.busy -= 1
            t.last_used = time.monotonic()
            self._room.notify_all()

    def _scrape_one(self, t: _Target) -> list | None:
        """The database's families, or None when no connection slot freed up in time."""
        if not self._reserve(t):
            return None
        try:
            return list(t.exporter.collect())
        finally:
            self._release(t)

    def _scrape_all(self, targets: list[_Target]) -> dict[str, list | None]:
        """Up to PARALLEL databases at once (each still one query at a time). Daemon threads, not an executor:
        a worker stuck in a connect must not hold up the process exit on SIGTERM."""
        results: dict[str, list | None] = {}
        todo = list(reversed(targets))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    t = todo.pop()
                results[t.datname] = self._scrape_one(t)

        workers = [threading.Thread(target=work, name="db-scrape", daemon=True)
                   for _ in range(min(PARALLEL, len(targets)) - 1)]
        for w in workers:
            w.start()
        work()
        for w in workers:
            w.join()
        return results

    # --- the scrape -------------------------------------------------------------------------------------------
    def collect(self):
        state = self._scrape_state
        state.ctx, state.primary_name, state.top = None, None, None
        merged: dict[str, object] = {}
        order: list[str] = []

        def add(families, datname: str | None) -> None:
            for fam in families:
                if datname is not None:
                    for s in fam.samples:
                        if "datname" not in s.labels:
                            s.labels["datname"] = datname   # dicts shared by a row's families: set once, same value
                if fam.name in merged:
                    merged[fam.name].samples.extend(fam.samples)
                else:
                    # a copy: a collector may serve the same family objects again (health.py's last-known output)
                    merged[fam.name] = copy.copy(fam)
                    merged[fam.name].samples = list(fam.samples)
                    order.append(fam.name)

        add(self.cluster.collect(), None)
        primary_name = state.primary_name
        state.top = state.ctx.top_statements if state.ctx is not None else None
        if self.selection.auto_discover:
            wanted, skipped = self._known
        else:
            wanted, skipped = [primary_name or self.primary.dbname], {}
        self._forget(set(wanted))

        db_up = GaugeMetricFamily(names.DATABASE_UP, "1 when the database answered its per-database collectors "
                                  "this scrape.", labels=["datname"])
        skipped_fam = GaugeMetricFamily(names.DATABASE_SKIPPED, "1 per database not scraped, with the reason "
                                        "(template, connections_not_allowed, no_connect_privilege, connection_failed, "
                                        "connection_cap).",
                                        labels=["datname", "reason"])
        per_database = [n for n in PER_DATABASE if n in self.enabled]
        if per_database and primary_name is None:
            # the server did not answer the cluster-wide run: waiting for one more connect timeout per database
            # would make a down cluster's scrape N times slower and tell nothing more
            success = GaugeMetricFamily(names.COLLECTOR_SUCCESS, "", labels=["collector", "datname"])
            for datname in wanted:
                db_up.add_metric([datname], 0)
                for name in per_database:
                    success.add_metric([name, datname], 0)
            add([success], None)
        elif per_database:
            targets = [self._target(datname, primary_name) for datname in wanted]
            for t in targets:
                t.top = state.top
            results = self._scrape_all(targets)
            for datname in wanted:
                families = results[datname]
                if families is None:
                    skipped[datname] = "connection_cap"
                    continue
                for fam in families:
                    if fam.name == names.PG_UP:
                        db_up.add_metric([datname], fam.samples[0].value)
                        if not fam.samples[0].value:   # tried, refused (pg_hba, CONNECTION LIMIT...): say so
                            skipped[datname] = "connection_failed"
                    elif fam.name != names.EXPORTER_INFO:
                        add([fam], datname)
        for datname, reason in sorted(skipped.items()):
            skipped_fam.add_metric([datname, reason], 1)
        zero_fill(merged, [s.labels["datname"] for s in db_up.samples if s.value == 1])
        add([db_up, skipped_fam], None)
        yield from (merged[n] for n in order)

    def close(self, timeout: float = 0.5) -> None:
        """Close every connection; a query still running is cancelled rather than waited for."""
        deadline = time.monotonic() + timeout
        dbs = {id(t.db): t.db for t in self._targets.values()}
        dbs[id(self.primary)] = self.primary
        for db in dbs.values():
            db.close(timeout=max(0.0, deadline - time.monotonic()))


def build_cluster_registry(primary: Database, options: ExporterOptions, **kwargs) -> tuple[CollectorRegistry,
                                                                                           ClusterCollector]:
    registry = CollectorRegistry(auto_describe=False)
    exporter = ClusterCollector(primary, options, **kwargs)
    registry.register(exporter)
    return registry, exporter
