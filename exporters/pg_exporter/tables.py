"""Per-table scan counters for the current database, the busiest `tables_top_n` tables by rows seq-scanned.

Nothing here waits on a table lock: the counters come from the statistics system, and the size of a table another
session locks exclusively (a migration's ALTER TABLE) is not read (pg_relation_size would queue behind the lock).
Its last size read here is served instead, or before any, pg_class's estimate (relpages, as of the last
VACUUM/ANALYZE), each marked with its age in LAST_KNOWN_AGE_SECONDS{collector="tables", object="schema.table"}.
"""
from __future__ import annotations

import time

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext, add_rows

LABELS = ["datname", "schemaname", "relname"]
TableKey = tuple[str, str, str]   # (datname, schemaname, relname)


class TablesCollector:
    name = "tables"

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._sizes: dict[TableKey, tuple[int, float]] = {}   # last size read per table, and when

    def collect(self, ctx: ScrapeContext):
        seq = CounterMetricFamily(names.TABLE_SEQ_SCAN, "Sequential scans started on the table.", labels=LABELS)
        tup = CounterMetricFamily(names.TABLE_SEQ_TUP_READ, "Rows read by sequential scans.", labels=LABELS)
        idx = CounterMetricFamily(names.TABLE_IDX_SCAN, "Index scans started on the table.", labels=LABELS)
        live = GaugeMetricFamily(names.TABLE_LIVE_ROWS, "Estimated live rows.", labels=LABELS)
        size = GaugeMetricFamily(names.TABLE_SIZE_BYTES, "Heap size (main fork, without indexes and TOAST), bytes.", labels=LABELS)
        fams = [seq, tup, idx, live, size]
        try:
            tables = queries.table_stats(ctx.conn, ctx.options.tables_top_n)
        except psycopg.errors.LockNotAvailable:
            # a table was locked between the lock check and pg_relation_size: this scrape reads no size at all
            tables = queries.table_stats(ctx.conn, ctx.options.tables_top_n, sizes=False)
        add_rows(fams, (({"datname": t.datname, "schemaname": t.schemaname, "relname": t.relname},
                         (t.seq_scan, t.seq_tup_read, t.idx_scan, t.live_rows, self._size(ctx, t)))
                        for t in tables))
        # forget tables that left the top N or were dropped, so the cache stays bounded
        keep = {(t.datname, t.schemaname, t.relname) for t in tables}
        self._sizes = {k: v for k, v in self._sizes.items() if k in keep}
        return fams

    def _size(self, ctx: ScrapeContext, t: queries.TableStat) -> float:
        key = (t.datname, t.schemaname, t.relname)
        now = self._clock()
        if t.size_bytes is not None:
            self._sizes[key] = (t.size_bytes, now)
            return t.size_bytes
        if key in self._sizes:
            size, read_at = self._sizes[key]
            ctx.served_last_known(self.name, f"{t.schemaname}.{t.relname}", now - read_at)
            return size
        age = t.size_estimate_age_seconds   # never vacuumed or analyzed: an estimate of unknown age
        ctx.served_last_known(self.name, f"{t.schemaname}.{t.relname}", float("inf") if age is None else age)
        return t.size_estimate_bytes
