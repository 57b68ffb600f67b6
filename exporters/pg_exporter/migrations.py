"""The last applied migration from a configurable table (absent table: no series, not a failure; said once).

A migration in progress may hold its table exclusively: the table is then not read (that would queue behind the
lock) and the last value read is served, marked in LAST_KNOWN_AGE_SECONDS{collector="migrations"}.
"""
from __future__ import annotations

import logging
import time

import psycopg
from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext

log = logging.getLogger(__name__)


class MigrationsCollector:
    name = "migrations"

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._last: tuple[queries.Migration, float] | None = None   # last row read, and when
        self._said_absent = False

    def collect(self, ctx: ScrapeContext):
        fam = GaugeMetricFamily(names.MIGRATION_LAST_APPLIED,
                                "When the most recent migration was applied, Unix seconds.", labels=["version"])
        table = ctx.options.migrations_table
        try:
            last = queries.last_migration(ctx.conn, table)
        except psycopg.errors.InsufficientPrivilege:
            raise queries.MissingPrivilege(
                f"role {ctx.caps.user!r} cannot read {table}: run `GRANT SELECT ON {table} TO {ctx.caps.user};`"
            ) from None
        except (queries.RelationLocked, psycopg.errors.LockNotAvailable):
            if self._last is None:
                raise
            last, read_at = self._last[0], self._last[1]
            ctx.served_last_known(self.name, table, self._clock() - read_at)
        else:
            if last is not None:
                self._last = (last, self._clock())
            elif not self._said_absent:
                self._said_absent = True
                log.info("migrations table %s not found or empty in database %s: no %s series (pass "
                         "--migrations-table [schema.]table if your tool uses another table)", table,
                         ctx.caps.database, names.MIGRATION_LAST_APPLIED)
        if last is not None:
            fam.add_metric([last.version], last.applied_at.timestamp())
        return [fam]
