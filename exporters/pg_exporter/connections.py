"""Connections by state and wait event, the connection limits, lock waiters and the oldest open transaction."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext


class ConnectionsCollector:
    name = "connections"

    def collect(self, ctx: ScrapeContext):
        ctx.caps.require_stats_visibility("connection states")
        conns = GaugeMetricFamily(names.CONNECTIONS, "Client backends by database, state and wait event type.",
                                  labels=["datname", "state", "wait_event_type"])
        for c in queries.connections(ctx.conn):
            conns.add_metric([c.datname, c.state, c.wait_event_type], c.count)
        limits = queries.connection_settings(ctx.conn)
        return [
            conns,
            GaugeMetricFamily(names.MAX_CONNECTIONS, "Server max_connections.", value=limits.max_connections),
            GaugeMetricFamily(names.SUPERUSER_RESERVED_CONNECTIONS, "Slots only superusers may use.",
                              value=limits.superuser_reserved_connections),
        ]


class LocksCollector:
    name = "locks"

    def collect(self, ctx: ScrapeContext):
        ctx.caps.require_stats_visibility("lock waits and transactions")
        waiting: dict[str, int] = {}
        for w in queries.lock_waiters(ctx.conn):
            waiting[w.datname] = waiting.get(w.datname, 0) + 1
        ctx.notes["lock_waiters"] = waiting
        waiters = GaugeMetricFamily(names.LOCK_WAITING_SESSIONS, "Sessions waiting on a heavyweight lock.",
                                    labels=["datname"])
        # the current database always gets a sample, so "no waiters" is 0 and not an absent series
        waiting.setdefault(ctx.caps.database, 0)
        for db, n in sorted(waiting.items()):
            waiters.add_metric([db], n)
        oldest = GaugeMetricFamily(names.OLDEST_TRANSACTION_SECONDS,
                                   "Age of the oldest open transaction (other than ours), seconds.",
                                   labels=["datname"])
        ages = {t.datname: t.age_seconds for t in queries.oldest_transactions(ctx.conn)}
        ages.setdefault(ctx.caps.database, 0.0)   # no open transaction: 0, not a missing series
        for db, age in sorted(ages.items()):
            oldest.add_metric([db], age)
        return [waiters, oldest]
