"""Read-only evidence from PostgreSQL: one connection, every transaction READ ONLY, bounded statement time.

The SQL lives in sloguard.pginsight (shared with the exporter); index advice is pginsight.advisor (HypoPG).
CREATE INDEX is never run here: the report prints it.

pg_stat_statements is read twice, `sample_seconds` apart (other steps run in between): a statement is judged by the
mean of the calls made in that window, which a long cheap history cannot hide (pginsight.window). A statement not
called in the window, or sample_seconds = 0, falls back to the mean since the statistics were reset.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from sloguard.diagnose.thresholds import Thresholds
from sloguard.pginsight import advisor, blind, lockqueue, window
from sloguard.pginsight import queries as q

STATEMENT_TIMEOUT_MS = 10_000
# pg_relation_size() and EXPLAIN take ACCESS SHARE locks: behind a migration's ACCESS EXCLUSIVE lock they would hang,
# in exactly the incident diagnose is run for. Tables locked exclusively are not read (pginsight checks pg_locks
# first); this bounds the race where a lock is taken in between: give up on that step after 1 s and say so.
LOCK_TIMEOUT_MS = 1_000
# pginsight reads the top N of all databases (no text: cheap); we keep this database's first TOP_STATEMENTS.
READ_STATEMENTS = 1000
TOP_STATEMENTS = 50
ADVISE_STATEMENTS = 15     # statements given to the index advisor, by total time (in the window first)
DEFAULT_SAMPLE_SECONDS = 3.0
MAX_SAMPLE_SECONDS = 60.0

# Statement words of DDL, for a lock queue's statements whose lock mode alone does not tell (e.g. the root holds only
# ACCESS SHARE while an ALTER TABLE waits behind it).
DDL_WORDS = ("ALTER", "CREATE", "DROP", "TRUNCATE", "REINDEX", "CLUSTER", "VACUUM", "REFRESH", "LOCK", "COMMENT",
             "GRANT", "REVOKE")


_LOCKED = ("{step} skipped: a table is locked exclusively (waited {lock_timeout} s); see Lock waits and "
           "Root blockers").replace("{lock_timeout}", str(LOCK_TIMEOUT_MS / 1000))


class CannotDiagnose(Exception):
    """Diagnose could not run (exit 2); the message is the reason and the fix."""


# A DDL statement still waiting for its lock has no pg_stat_statements entry yet (utility statements are recorded when
# they finish): its text comes from pg_stat_activity, for DDL-locked sessions only and never for role statements.
ACTIVITY_TEXT_SQL = "SELECT pid, query FROM pg_stat_activity WHERE pid = ANY(%(pids)s)"
_SECRET_BEARING = re.compile(r"\b(PASSWORD|ROLE|USER|SERVER|MAPPING|SUBSCRIPTION)\b", re.I)


def is_ddl_text(text: str | None) -> bool:
    return bool(text) and text.lstrip().split(None, 1)[0].upper() in DDL_WORDS


@dataclass
class DatabaseEvidence:
    target: str                                   # host:port/dbname, never the password
    server_version: str = ""
    database: str = ""
    hypopg: bool = False
    max_connections: int = 0
    reserved_connections: int = 0
    connections: list[q.ConnectionCount] = field(default_factory=list)
    statements: list[q.StatementStat] = field(default_factory=list)     # this database, by total time
    tables: list[q.TableStat] = field(default_factory=list)
    suggestions: list[advisor.IndexSuggestion] = field(default_factory=list)
    lock_waiters: list[q.LockWaiter] = field(default_factory=list)
    root_blockers: list[lockqueue.RootBlocker] = field(default_factory=list)   # most queued first
    lock_texts: dict[int, str] = field(default_factory=dict)   # query_id -> normalised text, for the lock queue
    blind_statements: dict[int, blind.Blind] = field(default_factory=dict)   # queryid -> why it was not planned
    transactions: list[q.OldestTransaction] = field(default_factory=list)
    migration: q.Migration | None = None
    notes: list[str] = field(default_factory=list)
    collected_at: datetime | None = None
    sample_seconds: float = 0.0                   # measured window between the two statement samples; 0: none
    recent: dict[window.StatementKey, window.WindowMean] = field(default_factory=dict)   # statements called in it

    def mean_now(self, s: q.StatementStat) -> tuple[float, window.WindowMean | None]:
        """The mean a statement is judged by: over the sample window when it ran in it, else since the reset."""
        recent = self.recent.get(window.key(s))
        return (recent.mean_seconds, recent) if recent else (s.mean_exec_seconds, None)

    def is_ddl(self, session: q.LockSession) -> bool:
        """DDL by its lock (see lockqueue.DDL_MODES) or by its statement's first word."""
        return (lockqueue.is_ddl_lock(session.wants) or any(lockqueue.is_ddl_lock(h) for h in session.holds)
                or is_ddl_text(self.lock_texts.get(session.query_id)))

    @property
    def queued_query_ids(self) -> set[int]:
        """Statements whose sessions wait in a lock queue now."""
        return {s.query_id for r in self.root_blockers for s in r.queued if s.query_id is not None}


def describe_target(dsn: str) -> str:
    """host:port/dbname from a DSN or URL: what the report may show (no user, no password)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


def connect(dsn: str, connect_timeout: int = 5) -> psycopg.Connection:
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=connect_timeout, application_name="sloguard-diagnose",
            options=(f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS} "
                     f"-c lock_timeout={LOCK_TIMEOUT_MS}"))
    except psycopg.ProgrammingError as e:
        raise CannotDiagnose("the DSN is not valid: check --dsn / PG_DSN "
                             "(e.g. host=db port=5432 dbname=app user=monitor)") from e
    except psycopg.OperationalError as e:
        # libpq messages name host and port, never the password
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CannotDiagnose(f"database unreachable at {describe_target(dsn)}: {reason}") from e


def collect(conn: psycopg.Connection, target: str, th: Thresholds, migrations_table: str = "schema_migrations",
            progress: Callable[[str], None] = lambda step: None, *, sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
            sleep: Callable[[float], None] = time.sleep) -> DatabaseEvidence:
    ev = DatabaseEvidence(target=target)
    progress("capabilities")
    caps = q.capabilities(conn)
    ev.server_version, ev.database, ev.hypopg = caps.server_version, caps.database, caps.hypopg is not None
    try:
        caps.require_stats_visibility("statements and sessions")
    except q.MissingPrivilege as e:
        raise CannotDiagnose(str(e)) from e
    ev.collected_at = conn.execute("SELECT now()").fetchone()[0]
    first, first_at = (_top_statements(conn, caps), time.monotonic()) if sample_seconds > 0 else (None, 0.0)

    progress("connections")
    settings = q.connection_settings(conn)
    ev.max_connections, ev.reserved_connections = settings.max_connections, settings.superuser_reserved_connections
    ev.connections = q.connections(conn)

    progress("tables")
    try:   # sizes of exclusively locked tables are not read (None): a lock must not stall diagnose
        ev.tables = q.table_stats(conn, 50)
    except psycopg.errors.LockNotAvailable:
        ev.tables = q.table_stats(conn, 50, sizes=False)

    progress(f"top statements (sampled over {sample_seconds:g} s)" if first is not None else "top statements")
    if first is not None:
        sleep(max(0.0, sample_seconds - (time.monotonic() - first_at)))
    stats = _top_statements(conn, caps)
    if first is not None:
        ev.sample_seconds = time.monotonic() - first_at
        before = window.by_key(first)
        ev.recent = {window.key(s): m for s in stats if (m := window.window_mean(before.get(window.key(s)), s))}
        ev.notes.append(f"statement means: over the last {ev.sample_seconds:.1f} s for statements called in that "
                        "window, else since the statistics were reset (--sample-seconds)")
    else:
        ev.notes.append("statement means: since the statistics were reset (--sample-seconds 0)")
    mine = [s for s in stats if s.datname == caps.database][:TOP_STATEMENTS]
    texts = q.statement_texts(conn, [s.queryid for s in mine])
    ev.statements = [_with_text(s, texts.get(s.queryid)) for s in mine]

    progress("index advice (HypoPG)" if ev.hypopg else "index advice")
    if not ev.hypopg:
        ev.notes.append("hypopg is not installed in this database: index candidates are unverified "
                        "(a superuser can run `CREATE EXTENSION hypopg;` — diagnose never creates it)")
    # what costs the most now first (time spent in the window), then the cumulative order
    candidates = sorted((s for s in ev.statements if s.query), key=lambda s: -_window_seconds(ev, s))
    candidates = candidates[:ADVISE_STATEMENTS]
    # not planned: statements reading a table locked exclusively (planning would queue behind the lock, and the
    # lock, not an index, is their problem) or one this role may not read (EXPLAIN would fail)
    ev.blind_statements = blind.precheck(conn, {s.queryid: s.query for s in candidates})
    ev.notes.extend(_blind_notes(ev.blind_statements, caps.user))
    try:
        ev.suggestions = advisor.suggest_for_statements(conn, [s for s in candidates if s.queryid not in ev.blind_statements],
                                                        use_hypopg=ev.hypopg, limit=ADVISE_STATEMENTS,
                                                        min_live_rows=th.min_live_rows)
    except psycopg.errors.LockNotAvailable:
        ev.notes.append(_LOCKED.format(step="index advice"))
    if ev.hypopg:   # belt and braces: the advisor resets, and HypoPG indexes die with this session anyway
        conn.execute("SELECT hypopg_reset()")

    progress("locks and transactions")
    sessions = [s for s in q.lock_sessions(conn) if s.datname == caps.database]
    ev.lock_waiters = [q.LockWaiter(s.pid, s.datname, s.user, s.blocked_by, s.wants.locktype if s.wants else "",
                                    s.waiting_seconds or 0.0) for s in sessions if s.waiting]
    ev.root_blockers = lockqueue.root_blockers(sessions)
    ids = [s.query_id for r in ev.root_blockers for s in (r.session, *r.queued) if s.query_id is not None]
    ev.lock_texts = q.statement_texts(conn, sorted(set(ids)))
    ev.lock_texts.update(_waiting_ddl_texts(conn, ev))
    ev.transactions = [t for t in q.oldest_transactions(conn) if t.datname == caps.database]

    progress("migrations")
    ev.migration, note = _migration(conn, migrations_table, caps.user)
    if note:
        ev.notes.append(note)
    return ev


def _waiting_ddl_texts(conn: psycopg.Connection, ev: DatabaseEvidence) -> dict[int, str]:
    """query_id -> text of DDL sessions in a lock queue that pg_stat_statements does not know yet."""
    ddl = {x.pid: x.query_id for r in ev.root_blockers for x in (r.session, *r.queued)
           if x.query_id is not None and x.query_id not in ev.lock_texts
           and (lockqueue.is_ddl_lock(x.wants) or any(lockqueue.is_ddl_lock(h) for h in x.holds))}
    if not ddl:
        return {}
    return {ddl[pid]: text for pid, text in conn.execute(ACTIVITY_TEXT_SQL, {"pids": list(ddl)})
            if is_ddl_text(text) and not _SECRET_BEARING.search(text)}


def _migration(conn: psycopg.Connection, table: str, role: str) -> tuple[q.Migration | None, str | None]:
    """The latest migration, or one note saying why there is none (never two that contradict each other)."""
    try:
        found = q.last_migration(conn, table)
    except psycopg.errors.InsufficientPrivilege:
        return None, (f"migrations table {table}: role {role} may not read it: run "
                      f"`GRANT SELECT ON {table} TO {advisor.quote_ident(role)};`")
    except q.RelationLocked as e:
        return None, f"{e}: not read (a migration may be running now: see the lock finding)"
    except (ValueError, psycopg.Error) as e:
        return None, f"migrations table {table}: {str(e).splitlines()[0]}"
    if found is None:
        return None, (f"no migrations found: table {table} does not exist here or is empty (pass "
                      "--migrations-table [schema.]table if your migration tool uses another)")
    return found, None


def _blind_notes(found: dict[int, blind.Blind], role: str) -> list[str]:
    notes = []
    locked = [b for b in found.values() if b.reason == blind.TABLE_LOCKED]
    if locked:
        tables = sorted({t for b in locked for t in b.table_names})
        notes.append(f"index advice not attempted for {len(locked)} statement(s) reading {', '.join(tables)}, "
                     "locked exclusively by another session: they wait on that lock, which no index fixes "
                     "(see the lock finding)")
    denied = [b for b in found.values() if b.reason == blind.PERMISSION_DENIED]
    if denied:
        tables = sorted({t for b in denied for t in b.table_names})
        notes.append(f"index advice blind for {len(denied)} statement(s): role {role} may not read "
                     f"{', '.join(tables) or 'their schema'} (pg_monitor grants statistics, not SELECT; EXPLAIN "
                     f"reads no rows but needs it): run `{blind.merged_fix(role, denied)}` as the tables' owner")
    return notes


def _top_statements(conn: psycopg.Connection, caps: q.Capabilities) -> list[q.StatementStat]:
    try:
        return q.top_statements(conn, READ_STATEMENTS, caps)
    except q.ExtensionMissing as e:
        raise CannotDiagnose(f"extension missing: {e}") from e


def _window_seconds(ev: DatabaseEvidence, s: q.StatementStat) -> float:
    recent = ev.recent.get(window.key(s))
    return recent.calls * recent.mean_seconds if recent else 0.0


def _with_text(s: q.StatementStat, text: str | None) -> q.StatementStat:
    from dataclasses import replace
    return replace(s, query=text)

