"""Per-table scan counters for the current database, the busiest `tables_top_n` tables by rows seq-scanned."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext, add_rows

LABELS = ["datname", "schemaname", "relname"]


class TablesCollector:
    name = "tables"

    def collect(self, ctx: ScrapeContext):
        seq = CounterMetricFamily(names.TABLE_SEQ_SCAN, "Sequential scans started on the table.", labels=LABELS)
        tup = CounterMetricFamily(names.TABLE_SEQ_TUP_READ, "Rows read by sequential scans.", labels=LABELS)
        idx = CounterMetricFamily(names.TABLE_IDX_SCAN, "Index scans started on the table.", labels=LABELS)
        live = GaugeMetricFamily(names.TABLE_LIVE_ROWS, "Estimated live rows.", labels=LABELS)
        size = GaugeMetricFamily(names.TABLE_SIZE_BYTES, "Heap size (main fork, without indexes and TOAST), bytes.", labels=LABELS)
        fams = [seq, tup, idx, live, size]
        add_rows(fams, (({"datname": t.datname, "schemaname": t.schemaname, "relname": t.relname},
                         (t.seq_scan, t.seq_tup_read, t.idx_scan, t.live_rows, t.size_bytes))
                        for t in queries.table_stats(ctx.conn, ctx.options.tables_top_n)))
        return fams
