"""Missing-index evidence: the slow statement, the table it scans, the index that would fix it.

Each evaluation costs a few EXPLAINs, so results are cached per queryid and re-checked at most every
`missing_index_recheck_seconds`; at most `missing_index_per_scrape` statements are (re)evaluated per scrape.

"Slow" is judged on the mean since the previous scrape (change in total time / change in calls), not the mean since
the statistics were reset, which hides a statement turned slow after a long cheap history. The first scrape (or one
after a statistics reset) uses the cumulative mean; a statement not called since the previous scrape keeps the mean
of its last calls, so a rare statement does not flap between scrapes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import advisor, queries, window

from .base import ScrapeContext

log = logging.getLogger(__name__)
LABELS = ["datname", "queryid", "schemaname", "relname", "columns", "index"]


@dataclass
class _Entry:
    checked_at: float
    suggestions: list[advisor.IndexSuggestion]


class MissingIndexesCollector:
    name = "missing_indexes"

    def __init__(self, clock=time.monotonic):
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._clock = clock
        self.evaluations = 0   # statements sent to the advisor since start (tests, benchmark)
        # previous scrape's counters and the mean each statement was judged by (bounded by statements_top_n)
        self._previous: dict[window.StatementKey, tuple[queries.StatementStat, float]] = {}

    def recent_means(self, top: list[queries.StatementStat]) -> dict[window.StatementKey, float]:
        """Mean execution seconds per statement since the previous scrape (see the module docstring)."""
        means: dict[window.StatementKey, tuple[queries.StatementStat, float]] = {}
        for s in top:
            k = window.key(s)
            prev = self._previous.get(k)
            recent = window.window_mean(prev[0] if prev else None, s)
            if recent is not None:
                mean = recent.mean_seconds
            elif prev is not None and s.calls == prev[0].calls:
                mean = prev[1]                 # not called since: what its last calls cost
            else:
                mean = s.mean_exec_seconds     # first sample, or the statistics were reset
            means[k] = (s, mean)
        self._previous = means
        return {k: mean for k, (_, mean) in means.items()}

    def collect(self, ctx: ScrapeContext):
        opts = ctx.options
        if opts.hypopg and ctx.caps.hypopg is None:
            raise queries.ExtensionMissing(
                f"HypoPG is not installed in database {ctx.caps.database!r}: run `CREATE EXTENSION hypopg;` "
                "(package postgresql-15-hypopg) or start the exporter with --no-hypopg for unverified suggestions")
        top = ctx.top_statements
        if top is None:   # the statements collector failed or is off: read the catalogue ourselves
            top = queries.top_statements(ctx.conn, opts.statements_top_n, ctx.caps)
        means = self.recent_means(top)
        slow = [s for s in top if s.datname == ctx.caps.database
                and means[window.key(s)] * 1000 >= opts.missing_index_min_mean_ms
                and s.calls >= opts.missing_index_min_calls][: opts.missing_index_statements]
        self._refresh(ctx, slow)
        return self._families(ctx.caps.database, slow)

    def _refresh(self, ctx: ScrapeContext, slow: list[queries.StatementStat]) -> None:
        now = self._clock()
        db = ctx.caps.database
        stale = [s for s in slow if (db, s.queryid) not in self._cache
                 or now - self._cache[(db, s.queryid)].checked_at >= ctx.options.missing_index_recheck_seconds]
        stale = stale[: ctx.options.missing_index_per_scrape]
        if not stale:
            return
        texts = queries.statement_texts(ctx.conn, [s.queryid for s in stale])
        for s in stale:
            text = texts.get(s.queryid)
            found: list[advisor.IndexSuggestion] = []
            failed = False   # a timeout or planning error is retried next scrape, not cached for the recheck period
            if text:
                self.evaluations += 1
                try:
                    found = advisor.suggest_for_query(ctx.conn, text, use_hypopg=ctx.options.hypopg,
                                                      min_live_rows=ctx.options.min_table_rows, queryid=s.queryid)
                except advisor.UnsupportedStatement:
                    pass
                except psycopg.errors.QueryCanceled:
                    # typical during the incident itself (a migration's lock, a saturated server): try again
                    failed = True
                    log.warning("missing-index check of queryid %s hit the query timeout; retrying next scrape",
                                s.queryid)
                except psycopg.errors.InsufficientPrivilege as e:
                    # EXPLAIN needs SELECT on the tables the statement reads; once per recheck period per statement
                    log.warning("cannot EXPLAIN queryid %s: %s; run `GRANT SELECT ON <those tables> TO %s;` "
                                "(EXPLAIN only, nothing is read)", s.queryid, str(e).splitlines()[0], ctx.caps.user)
                except psycopg.OperationalError:
                    raise   # the connection is gone: the scrape reports it
                except psycopg.Error as e:
                    failed = True
                    log.debug("cannot plan queryid %s: %s", s.queryid, str(e).splitlines()[0] if str(e) else e)
            if not failed:
                self._cache[(db, s.queryid)] = _Entry(now, found)
        # forget statements that left the top list long ago, so the cache stays bounded
        horizon = now - 2 * ctx.options.missing_index_recheck_seconds
        for key in [k for k, e in self._cache.items() if e.checked_at < horizon]:
            del self._cache[key]

    def _families(self, db: str, slow: list[queries.StatementStat]):
        suspect = GaugeMetricFamily(names.MISSING_INDEX, "1 per statement whose sequential scan an index would "
                                    "remove (HypoPG-verified unless run with --no-hypopg).", labels=LABELS)
        before = GaugeMetricFamily(names.MISSING_INDEX_COST_BEFORE, "Generic plan cost today, planner units.",
                                   labels=LABELS)
        after = GaugeMetricFamily(names.MISSING_INDEX_COST_AFTER, "Generic plan cost with the hypothetical index, "
                                  "planner units.", labels=LABELS)
        for s in slow:
            entry = self._cache.get((db, s.queryid))
            for sug in entry.suggestions if entry else ():
                lv = [db, str(s.queryid), sug.schemaname, sug.relname, ",".join(sug.columns), sug.ddl]
                suspect.add_metric(lv, 1)
                before.add_metric(lv, sug.cost_before)
                if sug.cost_after is not None:
                    after.add_metric(lv, sug.cost_after)
        return [suspect, before, after]
