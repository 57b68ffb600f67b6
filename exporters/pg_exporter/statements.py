"""pg_stat_statements, top-N by total execution time: cardinality is bounded whatever the catalogue holds."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext, add_rows

LABELS = ["datname", "user", "queryid"]


def normalise_text(query: str, length: int) -> str:
    """One line, whitespace collapsed, truncated: a label value, not a log."""
    flat = " ".join(query.split())
    return flat if len(flat) <= length else flat[: max(length - 3, 0)] + "..."


class StatementsCollector:
    name = "statements"

    def collect(self, ctx: ScrapeContext):
        top = queries.top_statements(ctx.conn, ctx.options.statements_top_n, ctx.caps)
        ctx.top_statements = top
        fams = {
            "calls": CounterMetricFamily(names.STATEMENT_CALLS, "Times the statement was executed.", labels=LABELS),
            "secs": CounterMetricFamily(names.STATEMENT_EXEC_SECONDS, "Total execution time, seconds.", labels=LABELS),
            "rows": CounterMetricFamily(names.STATEMENT_ROWS, "Rows retrieved or affected.", labels=LABELS),
            "hit": CounterMetricFamily(names.STATEMENT_SHARED_BLKS_HIT, "Shared buffer hits.", labels=LABELS),
            "read": CounterMetricFamily(names.STATEMENT_SHARED_BLKS_READ, "Shared blocks read.", labels=LABELS),
            "mean": GaugeMetricFamily(names.STATEMENT_MEAN_SECONDS,
                                      "Mean execution time since the statistics were reset, seconds.", labels=LABELS),
            "max": GaugeMetricFamily(names.STATEMENT_MAX_SECONDS, "Slowest execution, seconds.", labels=LABELS),
        }
        out = list(fams.values())
        add_rows(out, (({"datname": s.datname, "user": s.user, "queryid": str(s.queryid)},
                        (s.calls, s.total_exec_seconds, s.rows, s.shared_blks_hit, s.shared_blks_read,
                         s.mean_exec_seconds, s.max_exec_seconds)) for s in top))
        if ctx.options.query_text and top:
            info = GaugeMetricFamily(names.STATEMENT_INFO, "Normalised, truncated statement text.",
                                     labels=[*LABELS, "query"])
            texts = queries.statement_texts(ctx.conn, [s.queryid for s in top], all_databases=True)
            for s in top:
                text = texts.get(s.queryid)
                if text is not None:
                    info.add_metric([s.datname, s.user, str(s.queryid),
                                     normalise_text(text, ctx.options.query_text_length)], 1)
            out.append(info)
        return out
