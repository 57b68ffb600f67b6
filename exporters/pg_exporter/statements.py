"""pg_stat_statements, top-N by total execution time: cardinality is bounded whatever the catalogue holds."""
from __future__ import annotations

import hashlib

from pglast.parser import ParseError, fingerprint
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import queries

from .base import ScrapeContext, add_rows

LABELS = ["datname", "user", "queryid"]


def normalise_text(query: str, length: int) -> str:
    """One line, whitespace collapsed, truncated: a label value, not a log."""
    flat = " ".join(query.split())
    return flat if len(flat) <= length else flat[: max(length - 3, 0)] + "..."


FINGERPRINT_CACHE_MAX = 10_000   # queryids remembered; cleared when full (texts are re-read, nothing is lost)


def statement_fingerprint(text: str) -> str:
    """A stable identity for a statement's normalised text: libpg_query's fingerprint (ignores constants,
    whitespace and comments), else a hash of the whitespace-collapsed text. The same text after ADD COLUMN has the
    same fingerprint though PostgreSQL gives it a new queryid. A hash: the text itself never leaves the exporter."""
    try:
        return fingerprint(text)
    except ParseError:
        return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


class StatementsCollector:
    name = "statements"

    def __init__(self):
        # a queryid's text never changes, so each text is read and hashed once, not on every scrape
        self._fingerprints: dict[int, str] = {}

    def _fingerprint_family(self, ctx: ScrapeContext, top) -> GaugeMetricFamily:
        fam = GaugeMetricFamily(names.STATEMENT_FINGERPRINT,
                                "Fingerprint of the normalised statement text: one statement across queryid changes.",
                                labels=[*LABELS, "fingerprint"])
        unknown = [s.queryid for s in top if s.queryid not in self._fingerprints]
        if unknown:
            if len(self._fingerprints) + len(unknown) > FINGERPRINT_CACHE_MAX:
                self._fingerprints.clear()
            texts = queries.statement_texts(ctx.conn, unknown, all_databases=True)
            self._fingerprints.update({q: statement_fingerprint(t) for q, t in texts.items()})
        for s in top:
            fp = self._fingerprints.get(s.queryid)
            if fp is not None:
                fam.add_metric([s.datname, s.user, str(s.queryid), fp], 1)
        return fam

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
        out.append(self._fingerprint_family(ctx, top))
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
