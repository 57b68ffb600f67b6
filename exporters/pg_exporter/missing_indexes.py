"""Missing-index evidence: the slow statement, the table it scans, the index that would fix it.

Each evaluation costs a few EXPLAINs, so results are cached per queryid and re-checked at most every
`missing_index_recheck_seconds`; per scrape at most `missing_index_per_scrape` statements are (re)evaluated, within
`missing_index_budget_seconds` of wall time (the statement timeout of an evaluation is what is left of it).

"Slow" is judged on the mean since the previous scrape (change in total time / change in calls), not the mean since
the statistics were reset, which hides a statement turned slow after a long cheap history. The first scrape (or one
after a statistics reset) uses the cumulative mean; a statement not called since the previous scrape keeps the mean
of its last calls, so a rare statement does not flap between scrapes.

Before any EXPLAIN, pginsight.blind.precheck looks at the tables each statement names (one catalogue query):
- a table locked exclusively by another session (a migration): not planned, nothing waits; the cached advice is
  served as last-known (LAST_KNOWN_AGE_SECONDS{object=queryid}); checked again next scrape, which costs no EXPLAIN;
- a table the role may not SELECT (pg_monitor alone): not planned; collector_success 0 and one log line with the
  exact GRANT; never cached, so the scrape after the GRANT uses it.
A statement that still fails on a lock (e.g. it reads a view over the locked table), the time budget or a planning
error backs off (30 s, doubling, at most the recheck period) instead of being retried every scrape; a lock-timed-out
one is retried as soon as none of the tables locked when it gave up is locked any more. Statements without an answer are counted in MISSING_INDEX_BLIND_STATEMENTS{reason}: any exception the
advisor raises with a str `reason` attribute is counted under that reason (and cached like an answer).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import psycopg
from prometheus_client.core import GaugeMetricFamily

from sloguard import names
from sloguard.pginsight import advisor, blind, queries, window

from .base import ScrapeContext

log = logging.getLogger(__name__)
LABELS = ["datname", "queryid", "schemaname", "relname", "columns", "index"]
BACKOFF_SECONDS = 30.0          # first retry delay after a transient failure; doubles up to the recheck period
MIN_EVALUATION_TIMEOUT = 0.1    # seconds: an evaluation started near the end of the budget still gets this long
TRANSIENT_REASONS = (blind.LOCK_TIMEOUT, blind.TIME_BUDGET, blind.PLANNING_ERROR)
Key = tuple[str, int]           # (datname, queryid)


@dataclass
class _Entry:
    checked_at: float
    suggestions: list[advisor.IndexSuggestion]
    blind: str | None = None    # a lasting reason (e.g. a text the advisor cannot plan), counted while cached


@dataclass
class _Backoff:
    failures: int
    retry_at: float
    reason: str
    locked: frozenset[int] = frozenset()   # lock_timeout: tables locked exclusively when it gave up


_NO_BACKOFF = _Backoff(0, 0.0, "")


class MissingIndexesCollector:
    name = "missing_indexes"

    def __init__(self, clock=time.monotonic):
        self._cache: dict[Key, _Entry] = {}
        self._backoff: dict[Key, _Backoff] = {}
        self._texts: dict[Key, str] = {}   # statement texts of the slow list: reading pg_stat_statements' text file
        self._clock = clock                # is the costly part, and a due statement may wait several scrapes
        self._reasons_seen: set[tuple[str, str]] = set()   # (datname, reason): such series stay, at 0, once seen
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
        unanswered = self._refresh(ctx, slow)
        return self._families(ctx, slow, unanswered)

    # --- evaluation --------------------------------------------------------------------------------------------

    def _refresh(self, ctx: ScrapeContext, slow: list[queries.StatementStat]) -> dict[int, str]:
        """Evaluate what is due; queryid -> reason for the due statements left without a fresh answer."""
        now = self._clock()
        db = ctx.caps.database
        opts = ctx.options
        due = [s for s in slow if (db, s.queryid) not in self._cache
               or now - self._cache[(db, s.queryid)].checked_at >= opts.missing_index_recheck_seconds]
        unanswered: dict[int, str] = {}
        if due:
            deadline = time.perf_counter() + opts.missing_index_budget_seconds
            missing = [s.queryid for s in due if (db, s.queryid) not in self._texts]
            self._texts.update({(db, q): t for q, t in ctx.texts_of(missing).items()})
            texts = {s.queryid: self._texts[(db, s.queryid)] for s in due if (db, s.queryid) in self._texts}
            before = blind.precheck(ctx.conn, texts)
            denied = [b for b in before.values() if b.reason == blind.PERMISSION_DENIED]
            evaluated, stop = 0, None
            locked_now = None   # read once, only when a lock-timed-out statement waits for its locks to go
            if any(self._backoff.get((db, s.queryid), _NO_BACKOFF).reason == blind.LOCK_TIMEOUT for s in due):
                locked_now = queries.exclusively_locked_tables(ctx.conn)
            for s in due:
                key = (db, s.queryid)
                text = texts.get(s.queryid)
                if not text:
                    self._cache[key] = _Entry(now, [], blind.NO_TEXT)
                    continue
                if s.queryid in before:   # not planned now, and not cached: the next scrape looks again
                    unanswered[s.queryid] = before[s.queryid].reason
                    continue
                waiting = self._backoff.get(key)
                if waiting and waiting.retry_at > now and not (
                        waiting.reason == blind.LOCK_TIMEOUT and locked_now is not None
                        and not waiting.locked & locked_now):
                    unanswered[s.queryid] = waiting.reason
                    continue
                # at least one evaluation per scrape, whatever the budget: the advice must make progress
                if stop is None and (evaluated >= opts.missing_index_per_scrape
                                     or (evaluated and time.perf_counter() >= deadline)):
                    stop = blind.TIME_BUDGET
                if stop is not None:
                    unanswered[s.queryid] = stop
                    continue
                evaluated += 1
                reason, failure = self._evaluate(ctx, key, text, now, max(deadline - time.perf_counter(),
                                                                          MIN_EVALUATION_TIMEOUT))
                if reason is not None:
                    unanswered[s.queryid] = reason
                    if reason == blind.PERMISSION_DENIED:
                        denied.append(failure)
            if denied:
                ctx.degrade(self.name, f"role {ctx.caps.user!r} cannot EXPLAIN {len(denied)} slow statement(s): "
                            f"{blind.denied_advice(ctx.caps.user, denied)} (see exporters/pg_exporter/README.md); "
                            f"counted in {names.MISSING_INDEX_BLIND_STATEMENTS}")
        self._forget(now, opts.missing_index_recheck_seconds, {(db, s.queryid) for s in slow})
        return unanswered

    def _evaluate(self, ctx: ScrapeContext, key: Key, text: str, now: float,
                  timeout: float) -> tuple[str | None, blind.Blind | None]:
        """Run the advisor on one statement and cache the outcome; (blind reason, Blind) when it gave no answer."""
        self.evaluations += 1
        try:
            with ctx.conn.transaction():
                # the advisor runs inside this transaction (its own steps in a savepoint): SET LOCAL ends with it
                ctx.conn.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}", prepare=False)
                found = advisor.suggest_for_query(ctx.conn, text, use_hypopg=ctx.options.hypopg,
                                                  min_live_rows=ctx.options.min_table_rows, queryid=key[1])
        except Exception as e:
            if isinstance(e, psycopg.Error) and (ctx.conn.broken or ctx.conn.closed):
                raise   # the connection is gone: the scrape reports it
            if not isinstance(e, psycopg.Error | advisor.UnsupportedStatement) and not hasattr(e, "reason"):
                raise   # a bug, not a statement we cannot plan: health.py logs it with its traceback
            return self._failed(ctx, key, text, e, now)
        self._cache[key] = _Entry(now, found)
        self._backoff.pop(key, None)
        return None, None

    def _failed(self, ctx: ScrapeContext, key: Key, text: str, e: Exception,
                now: float) -> tuple[str | None, blind.Blind | None]:
        reason = blind.reason_of(e)
        if reason in blind.NOTHING_TO_PLAN:   # not a SELECT/UPDATE/DELETE on user tables: an answer, cached
            self._cache[key] = _Entry(now, [])
            return None, None
        if reason == blind.PERMISSION_DENIED:   # the precheck could not tell (unparsed text): never cached
            return reason, blind.from_permission_error(e)
        if reason not in TRANSIENT_REASONS:     # a lasting reason given by the advisor: cached like an answer
            self._cache[key] = _Entry(now, [], reason)
            return reason, None
        previous = self._backoff.get(key)
        failures = previous.failures + 1 if previous else 1
        delay = min(BACKOFF_SECONDS * 2 ** (failures - 1), ctx.options.missing_index_recheck_seconds)
        locked = queries.exclusively_locked_tables(ctx.conn) if reason == blind.LOCK_TIMEOUT else frozenset()
        self._backoff[key] = _Backoff(failures, now + delay, reason, locked)
        level = logging.INFO if failures == 1 else logging.DEBUG
        what = {blind.LOCK_TIMEOUT: f"waited the lock timeout (a lock on a table it reads: see "
                                    f"{names.LOCK_BLOCKER_WAITING_SESSIONS}); retried as soon as no table it names "
                                    "is locked, else",
                blind.TIME_BUDGET: "ran out of the advisor's time budget (--missing-index.budget-seconds); retried",
                }.get(reason, f"cannot be planned ({queries.first_line(e)}); "
                              "retried")
        log.log(level, "missing-index check of queryid %s %s in %.0f s", key[1], what, delay)
        return reason, None

    def _forget(self, now: float, recheck: float, listed: set[Key]) -> None:
        """Statements that left the slow list long ago leave the cache, so it stays bounded; listed ones stay however
        old their advice is (a lock can keep it from being refreshed: it is then served as last-known)."""
        horizon = now - 2 * recheck
        self._cache = {k: e for k, e in self._cache.items() if k in listed or e.checked_at >= horizon}
        self._backoff = {k: b for k, b in self._backoff.items() if k in listed or b.retry_at >= horizon}
        self._texts = {k: t for k, t in self._texts.items() if k in listed}

    # --- output ------------------------------------------------------------------------------------------------

    def _families(self, ctx: ScrapeContext, slow: list[queries.StatementStat], unanswered: dict[int, str]):
        db = ctx.caps.database
        now = self._clock()
        suspect = GaugeMetricFamily(names.MISSING_INDEX, "1 per statement whose sequential scan an index would "
                                    "remove (HypoPG-verified unless run with --no-hypopg).", labels=LABELS)
        before = GaugeMetricFamily(names.MISSING_INDEX_COST_BEFORE, "Generic plan cost today, planner units.",
                                   labels=LABELS)
        after = GaugeMetricFamily(names.MISSING_INDEX_COST_AFTER, "Generic plan cost with the hypothetical index, "
                                  "planner units.", labels=LABELS)
        blind_count: Counter[str] = Counter()
        for s in slow:
            entry = self._cache.get((db, s.queryid))
            reason = unanswered.get(s.queryid)
            if reason is not None and entry is not None and entry.blind is None:
                ctx.served_last_known(self.name, str(s.queryid), now - entry.checked_at)   # stale, not blind
            elif reason is not None:
                blind_count[reason] += 1
            elif entry is not None and entry.blind is not None:
                blind_count[entry.blind] += 1
            for sug in entry.suggestions if entry else ():
                lv = [db, str(s.queryid), sug.schemaname, sug.relname, ",".join(sug.columns), sug.ddl]
                suspect.add_metric(lv, 1)
                before.add_metric(lv, sug.cost_before)
                if sug.cost_after is not None:
                    after.add_metric(lv, sug.cost_after)
        blind_fam = GaugeMetricFamily(names.MISSING_INDEX_BLIND_STATEMENTS, "Slow statements the advisor has no "
                                      "answer for, by reason (permission_denied: the role may not read a table it "
                                      "names; table_locked: a lock, not an index, is in the way).",
                                      labels=["datname", "reason"])
        self._reasons_seen |= {(db, r) for r in blind_count} | {(db, blind.PERMISSION_DENIED)}
        for seen_db, reason in sorted(self._reasons_seen):
            if seen_db == db:
                blind_fam.add_metric([db, reason], blind_count.get(reason, 0))
        return [suspect, before, after, blind_fam]
