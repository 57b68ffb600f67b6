"""The last applied migration from a configurable table (absent table: no series, not a failure)."""
from __future__ import annotations

import psycopg
from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext


class MigrationsCollector:
    name = "migrations"

    def collect(self, ctx: ScrapeContext):
        fam = GaugeMetricFamily(names.MIGRATION_LAST_APPLIED,
                                "When the most recent migration was applied, Unix seconds.", labels=["version"])
        try:
            last = queries.last_migration(ctx.conn, ctx.options.migrations_table)
        except psycopg.errors.InsufficientPrivilege:
            raise queries.MissingPrivilege(
                f"role {ctx.caps.user!r} cannot read {ctx.options.migrations_table}: run "
                f"`GRANT SELECT ON {ctx.options.migrations_table} TO {ctx.caps.user};`") from None
        if last is not None:
            fam.add_metric([last.version], last.applied_at.timestamp())
        return [fam]
