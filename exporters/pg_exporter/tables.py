"""Per-table scan counters for the current database, the busiest `tables_top_n` tables by rows seq-scanned."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext

LABELS = ["datname", "schemaname", "relname"]


class TablesCollector:
    name = "tables"

    def collect(self, ctx: ScrapeContext):
        seq = CounterMetricFamily(names.TABLE_SEQ_SCAN, "Sequential scans started on the table.", labels=LABELS)
        tup = CounterMetricFamily(names.TABLE_SEQ_TUP_READ, "Rows read by sequential scans.", labels=LABELS)
        idx = CounterMetricFamily(names.TABLE_IDX_SCAN, "Index scans started on the table.", labels=LABELS)
        live = GaugeMetricFamily(names.TABLE_LIVE_ROWS, "Estimated live rows.", labels=LABELS)
        size = GaugeMetricFamily(names.TABLE_SIZE_BYTES, "Table size without indexes, bytes.", labels=LABELS)
        for t in queries.table_stats(ctx.conn, ctx.options.tables_top_n):
            lv = [t.datname, t.schemaname, t.relname]
            seq.add_metric(lv, t.seq_scan)
            tup.add_metric(lv, t.seq_tup_read)
            idx.add_metric(lv, t.idx_scan)
            live.add_metric(lv, t.live_rows)
            size.add_metric(lv, t.size_bytes)
        return [seq, tup, idx, live, size]
