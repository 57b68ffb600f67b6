"""Connections by state and wait event, the connection limits, lock queues and the oldest open transaction.

Lock queues are shown by root blocker (pginsight.lockqueue): the session everyone in the queue ultimately waits for,
its state, the lock it holds, its transaction's age and its statement's queryid. pid is a label on purpose: it is what
an operator cancels; the series are few (at most LOCK_BLOCKERS_TOP, and only while a queue exists).
"""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import lockqueue, queries

from .base import ScrapeContext

LOCK_BLOCKERS_TOP = 10
BLOCKER_LABELS = ["datname", "pid", "state", "locktype", "mode", "relation", "queryid"]


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
        sessions = queries.lock_sessions(ctx.conn)
        waiting: dict[str, int] = {}
        for w in sessions:
            if w.waiting:
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
        return [waiters, oldest, *self._root_blockers(sessions)]

    @staticmethod
    def _root_blockers(sessions: list[queries.LockSession]) -> list[GaugeMetricFamily]:
        queued = GaugeMetricFamily(names.LOCK_BLOCKER_WAITING_SESSIONS, "Sessions queued behind this root blocker, "
                                   "directly or behind other waiters.", labels=BLOCKER_LABELS)
        age = GaugeMetricFamily(names.LOCK_BLOCKER_AGE_SECONDS, "Age of the root blocker's transaction (of its "
                                "state outside a transaction), seconds.", labels=BLOCKER_LABELS)
        longest = GaugeMetricFamily(names.LOCK_BLOCKER_LONGEST_WAIT_SECONDS, "Longest wait among the sessions "
                                    "queued behind this root blocker, seconds.", labels=BLOCKER_LABELS)
        for root in lockqueue.root_blockers(sessions)[:LOCK_BLOCKERS_TOP]:
            s, lock = root.session, root.lock
            labels = [s.datname, str(s.pid), s.state, lock.locktype if lock else "", lock.mode if lock else "",
                      lock.relation if lock else "", str(s.query_id) if s.query_id is not None else ""]
            queued.add_metric(labels, root.waiters)
            age.add_metric(labels, root.age_seconds)
            longest.add_metric(labels, root.longest_wait_seconds)
        return [queued, age, longest]
