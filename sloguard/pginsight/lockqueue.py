"""Lock queues -> root blockers: who the queued sessions ultimately wait for, and what that costs.

A root blocker is a session in a lock queue that does not itself wait on a lock: cancelling or ending it is what
lets its queue move. A waiting ALTER TABLE is not a root, but the sessions behind it queue on its *request* (PostgreSQL
grants locks in order), so "DDL in the chain" counts waiters as well as the root. Shared by the exporter's lock metrics
and diagnose's findings; the SQL is queries.LOCK_QUEUE_SQL.
"""
from __future__ import annotations

from dataclasses import dataclass

from .queries import LockRef, LockSession

# weakest to strongest (the conflict table's order); "held mode" reports the strongest lock a root holds
LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
              "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
# Relation locks only DDL-like commands take: CREATE INDEX (Share), CREATE TRIGGER / ADD FOREIGN KEY
# (ShareRowExclusive), REFRESH MATERIALIZED VIEW CONCURRENTLY (Exclusive), ALTER/DROP/TRUNCATE/VACUUM FULL/LOCK TABLE
# (AccessExclusive). Application reads and writes take the three weakest.
DDL_MODES = frozenset(LOCK_MODES[4:])


def _strength(ref: LockRef) -> int:
    return LOCK_MODES.index(ref.mode) if ref.mode in LOCK_MODES else -1


def is_ddl_lock(ref: LockRef | None) -> bool:
    return ref is not None and ref.locktype == "relation" and ref.mode in DDL_MODES


@dataclass(frozen=True)
class RootBlocker:
    session: LockSession
    queued: tuple[LockSession, ...]   # every session waiting on it, directly or through others; longest wait first
    lock: LockRef | None              # the strongest lock it holds that someone waits for

    @property
    def pid(self) -> int:
        return self.session.pid

    @property
    def waiters(self) -> int:
        return len(self.queued)

    @property
    def longest_wait_seconds(self) -> float:
        return max((s.waiting_seconds or 0.0 for s in self.queued), default=0.0)

    @property
    def age_seconds(self) -> float:
        """How long it has held its locks, at least: its transaction's age (its state's age outside a transaction)."""
        s = self.session
        return s.transaction_seconds if s.transaction_seconds is not None else (s.state_seconds or 0.0)

    @property
    def idle_in_transaction(self) -> bool:
        """Not running anything ('idle in transaction', aborted or not): a cancel would do nothing, only ending the
        session releases its locks."""
        return self.session.state.startswith("idle")

    @property
    def ddl_sessions(self) -> tuple[LockSession, ...]:
        """Sessions of the chain holding or awaiting a DDL-class lock: the root and/or queued ones."""
        chain = (self.session, *self.queued)
        return tuple(s for s in chain if is_ddl_lock(s.wants) or any(is_ddl_lock(h) for h in s.holds))

    @property
    def waiting_ddl(self) -> tuple[LockSession, ...]:
        """Queued DDL: sessions behind it that queue behind this request, not behind the root's own lock."""
        return tuple(s for s in self.queued if is_ddl_lock(s.wants))


def root_blockers(sessions: list[LockSession]) -> list[RootBlocker]:
    """Root blockers, most queued sessions first (then oldest). A waiter blocked by two roots counts for both.

    Sessions whose blockers left between the two catalogue reads are skipped; a deadlock cycle has no root (the
    deadlock detector ends it within deadlock_timeout).
    """
    by_pid = {s.pid: s for s in sessions}
    queued: dict[int, set[int]] = {}
    for w in sessions:
        if not w.blocked_by:
            continue
        seen, todo = {w.pid}, list(w.blocked_by)
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            b = by_pid.get(pid)
            if b is None:
                continue
            if b.blocked_by:
                todo.extend(b.blocked_by)
            else:
                queued.setdefault(pid, set()).add(w.pid)
    roots = []
    for pid, waiters in queued.items():
        root = by_pid[pid]
        ordered = sorted((by_pid[p] for p in waiters), key=lambda s: (-(s.waiting_seconds or 0.0), s.pid))
        lock = max(root.holds, key=_strength, default=None)
        roots.append(RootBlocker(root, tuple(ordered), lock))
    return sorted(roots, key=lambda r: (-r.waiters, -r.age_seconds, r.pid))
