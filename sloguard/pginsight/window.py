"""Mean execution time over a recent window, from two pg_stat_statements samples.

pg_stat_statements' own mean is since the last reset: a statement cheap for a day then slow for minutes keeps a
low mean (300 calls/s x 1 ms for a day, then 40 calls/s x 2.5 s, stays under 10 ms for ~39 min). The change in
total time over the change in calls between two samples is what the statement costs now.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .queries import StatementStat

StatementKey = tuple[str, str, int]   # (datname, user, queryid): one pg_stat_statements row group


def key(s: StatementStat) -> StatementKey:
    return (s.datname, s.user, s.queryid)


@dataclass(frozen=True)
class WindowMean:
    calls: int              # calls between the two samples
    mean_seconds: float     # mean execution time of those calls


def by_key(stats: Iterable[StatementStat]) -> dict[StatementKey, StatementStat]:
    return {key(s): s for s in stats}


def window_mean(before: StatementStat | None, after: StatementStat) -> WindowMean | None:
    """The mean of the calls made between `before` and `after`; None when it cannot say (no earlier sample,
    statistics reset in between, or no call in the window): the caller falls back to the cumulative mean."""
    if before is None or after.calls <= before.calls or after.total_exec_seconds < before.total_exec_seconds:
        return None
    calls = after.calls - before.calls
    return WindowMean(calls, (after.total_exec_seconds - before.total_exec_seconds) / calls)
