"""Column statistics from pg_stats: selectivity of a filter, and representative values of a skewed column.

A generic plan estimates `status = $1` with the column's average frequency, which hides skew: with 99% 'done'
and 0.1% 'failed', an index is useless for 'done' and right for 'failed'. `find_skew` picks the common value and a
rare one (a most-common value, or a histogram value that is not one: a typical rare value) so the advisor can
plan with each.
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .sqltext import Predicate, parse_array_text, quote_literal

DEFAULT_RANGE_SELECTIVITY = 1.0 / 3   # PostgreSQL's own default for inequality estimates
SKEW_RATIO = 10.0                     # the common value is at least this many times as frequent as the rare one

_STATS_SQL = """
SELECT attname, null_frac, n_distinct, most_common_vals::text, most_common_freqs, histogram_bounds::text
FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = ANY(%s)
"""


@dataclass(frozen=True)
class ColumnStats:
    null_frac: float
    n_distinct: float
    mcv: tuple[str, ...]        # most common values, most frequent first
    mcf: tuple[float, ...]
    histogram: tuple[str, ...]  # bounds over the values that are not most-common

    def distinct(self, rows: float) -> float:
        return max(-self.n_distinct * rows if self.n_distinct < 0 else self.n_distinct, 1.0)

    def rest(self, rows: float) -> tuple[float, float]:
        """(share of rows, number of distinct values) outside the most-common list."""
        return (max(1.0 - self.null_frac - sum(self.mcf), 0.0), max(self.distinct(rows) - len(self.mcv), 0.0))


def column_stats(conn: psycopg.Connection, schema: str, table: str, columns) -> dict[str, ColumnStats]:
    out = {}
    for name, null_frac, n_distinct, mcv_text, mcf, hist_text in conn.execute(
            _STATS_SQL, (schema, table, sorted(set(columns))), prepare=False):
        mcv, freqs = parse_array_text(mcv_text), list(mcf or [])
        if len(mcv) != len(freqs):   # e.g. an array column: its MCVs print as a 2-D array
            mcv, freqs = [], []
        out[name] = ColumnStats(null_frac or 0.0, n_distinct or 0.0, tuple(mcv), tuple(float(f) for f in freqs),
                                tuple(parse_array_text(hist_text)))
    return out


def selectivity(pred: Predicate, stats: ColumnStats | None, rows: float) -> float:
    if stats is None:   # no ANALYZE yet: assume unselective so it sorts last
        return 1.0
    if pred.kind == "range":
        return DEFAULT_RANGE_SELECTIVITY * (1 - stats.null_frac)
    if pred.literal is not None and pred.literal in stats.mcv:
        return stats.mcf[stats.mcv.index(pred.literal)]
    rest_freq, rest_distinct = stats.rest(rows)
    # a parameter ($1) can be any value: the average frequency, MCVs included
    per_value = (rest_freq / max(rest_distinct, 1.0) if pred.literal is not None
                 else (1.0 - stats.null_frac) / stats.distinct(rows))
    return min(per_value * pred.in_list_size, 1.0)


@dataclass(frozen=True)
class Probe:
    """Values for some parameters, planned as literals: `label` says which (`status = 'failed' (0.10% of rows)`)."""
    label: str
    values: dict[int, str]
    share: float


@dataclass(frozen=True)
class Skew:
    column: str
    common_value: str
    common: Probe
    rare: Probe


def _probe(column: str, param: int, value: str, share: float) -> Probe:
    return Probe(f"{column} = {quote_literal(value)} ({share:.2%} of rows)", {param: value}, share)


def find_skew(preds: list[Predicate], stats: dict[str, ColumnStats], rows: float) -> Skew | None:
    """The most skewed `column = $n` of a scan: its most common value and a rare one; None when none is skewed."""
    best: tuple[float, Skew] | None = None
    for p in preds:
        st = stats.get(p.column)
        if p.kind != "eq" or p.param is None or p.in_list_size != 1 or st is None or not st.mcv:
            continue
        rest_freq, rest_distinct = st.rest(rows)
        others = [v for v in st.histogram if v not in st.mcv]
        if others and rest_freq > 0 and rest_distinct >= 1:
            rare_value, rare_share = others[len(others) // 2], rest_freq / rest_distinct
        elif len(st.mcv) >= 2:
            rare_value, rare_share = st.mcv[-1], st.mcf[-1]
        else:
            continue
        ratio = st.mcf[0] / max(rare_share, 1e-12)
        if ratio >= SKEW_RATIO and (best is None or ratio > best[0]):
            best = (ratio, Skew(p.column, st.mcv[0], _probe(p.column, p.param, st.mcv[0], st.mcf[0]),
                                _probe(p.column, p.param, rare_value, rare_share)))
    return best[1] if best else None
