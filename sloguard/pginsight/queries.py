"""Catalogue SQL as constants, and readers that run it on a psycopg connection and return dataclasses.

Every reader takes an open psycopg 3 connection and issues exactly one query (the exporter counts on that:
queries per scrape is a benchmark figure). Callers own timeouts (statement_timeout) and error handling.
PostgreSQL 13+ only (pg_stat_statements renamed total_time -> total_exec_time in 13).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql as pgsql


class MissingPrivilege(Exception):
    """The role cannot see what a reader needs; the message says what to GRANT."""


class ExtensionMissing(Exception):
    """An extension (pg_stat_statements, hypopg) is not installed or not preloaded; the message says how to fix."""


class RelationLocked(Exception):
    """Reading the relation would queue behind another session's ACCESS EXCLUSIVE lock, so it was not read."""


# --- exclusive locks ------------------------------------------------------------------------------------------------
# Tables (of the current database) that another session holds or waits for ACCESS EXCLUSIVE on, directly or on one of
# their indexes. Any read of them (pg_relation_size, SELECT, EXPLAIN: all ACCESS SHARE) would queue behind that lock,
# a waiting request included. pg_locks and pg_index are read without taking any relation lock. Used as a scalar
# subquery (an InitPlan, evaluated once per query) by the readers below.
EXCLUSIVELY_LOCKED_TABLES = """ARRAY(SELECT DISTINCT coalesce(i.indrelid, l.relation)
  FROM pg_locks l LEFT JOIN pg_index i ON i.indexrelid = l.relation
  WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid IS DISTINCT FROM pg_backend_pid()
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""


# --- pg_stat_statements ---------------------------------------------------------------------------------------
# Aggregated over toplevel/nested rows so one (db, user, queryid) is one series. Text is fetched only on demand:
# pg_stat_statements(false) skips reading the query-text file, the expensive part on a big catalogue.
STATEMENTS_TOP_N_SQL = """
SELECT s.queryid, d.datname, r.rolname, s.calls, s.total, s.rows, s.hit, s.read, s.max
FROM (SELECT dbid, userid, queryid, sum(calls)::bigint AS calls, sum(total_exec_time) AS total,
             sum(rows)::bigint AS rows, sum(shared_blks_hit)::bigint AS hit, sum(shared_blks_read)::bigint AS read,
             max(max_exec_time) AS max
      FROM pg_stat_statements(false)
      WHERE queryid IS NOT NULL
      GROUP BY dbid, userid, queryid
      ORDER BY sum(total_exec_time) DESC
      LIMIT %(limit)s) s
JOIN pg_database d ON d.oid = s.dbid
JOIN pg_roles r ON r.oid = s.userid
ORDER BY s.total DESC
"""

STATEMENT_TEXTS_SQL = """
SELECT DISTINCT ON (s.queryid) s.queryid, s.query
FROM pg_stat_statements(true) s
WHERE s.queryid = ANY(%(queryids)s)
  AND (%(all_databases)s OR s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
-- the application's own (top-level) text: the advisor's nested PREPARE of the same statement shares its queryid
ORDER BY s.queryid, s.toplevel DESC
"""

# --- privileges and extensions --------------------------------------------------------------------------------
CAPABILITIES_SQL = """
SELECT current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
       (SELECT extversion FROM pg_extension WHERE extname = 'hypopg'),
       current_setting('server_version_num')::int,
       current_setting('server_version'),
       current_database()
"""

# --- tables -----------------------------------------------------------------------------------------------------
# Current database only (pg_stat_user_tables is per database). Bounded: the busiest tables by rows scanned.
# Size is the heap's main fork (pg_relation_size): pg_table_size adds FSM/VM/TOAST forks at ~5x the cost
# (80 ms vs 15 ms for 2,000 tables), and the heap is what a sequential scan reads. pg_relation_size takes ACCESS
# SHARE on the table, so it is not called (NULL; CASE is evaluated lazily) for an exclusively locked table, nor for any
# table when %(sizes)s is false; the pg_class estimate (relpages, as of the last VACUUM/ANALYZE/CREATE INDEX) and its
# age come instead. Nothing else here locks a user table.
TABLE_STATS_SQL = """
SELECT current_database(), t.schemaname, t.relname, t.seq_scan, t.seq_tup_read, t.idx_scan, t.n_live_tup,
       CASE WHEN %(sizes)s AND NOT t.relid = ANY(""" + EXCLUSIVELY_LOCKED_TABLES + """)
            THEN coalesce(pg_relation_size(t.relid), 0) END,
       c.relpages::int8 * current_setting('block_size')::int8,
       extract(epoch FROM now() - t.estimated_at)::float8
FROM (SELECT relid, schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, n_live_tup,
             greatest(last_vacuum, last_autovacuum, last_analyze, last_autoanalyze) AS estimated_at
      FROM pg_stat_user_tables
      ORDER BY seq_tup_read DESC, n_live_tup DESC, relid
      LIMIT %(limit)s) t
JOIN pg_class c ON c.oid = t.relid
ORDER BY t.seq_tup_read DESC, t.n_live_tup DESC, t.relid
"""

# --- connections, locks, transactions ---------------------------------------------------------------------------
CONNECTIONS_SQL = """
SELECT coalesce(datname, ''), coalesce(state, ''), coalesce(wait_event_type, ''), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1, 2, 3
"""

SETTINGS_SQL = """
SELECT name, setting::int FROM pg_settings WHERE name IN ('max_connections', 'superuser_reserved_connections')
"""

# Everyone in a lock queue: the sessions waiting on a heavyweight lock and the sessions they wait for (a blocker that
# waits is itself a waiter, so one level reaches every root). Per session: what it waits for (pg_locks.waitstart is
# when the wait began) and the locks it holds on objects someone waits for. query_id is the fingerprint of its current
# or, when idle, last statement (pg_stat_statements' queryid); no query text. pg_locks is read once.
LOCK_QUEUE_SQL = """
WITH locks AS MATERIALIZED (SELECT * FROM pg_locks),
waiting AS (
  SELECT pid, pg_blocking_pids(pid) AS blocked_by FROM pg_stat_activity WHERE wait_event_type = 'Lock'
),
involved AS (SELECT pid FROM waiting UNION SELECT unnest(blocked_by) FROM waiting),
wanted AS (SELECT l.* FROM locks l JOIN waiting w ON w.pid = l.pid WHERE NOT l.granted),
named AS (   -- a relation's name, for locks in the current database only (oids are per database)
  SELECT c.oid, n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid IN (SELECT relation FROM locks WHERE database = (SELECT oid FROM pg_database
                                                               WHERE datname = current_database()))
)
SELECT a.pid, coalesce(a.datname, ''), coalesce(a.usename, ''), coalesce(a.application_name, ''),
       coalesce(a.state, ''), coalesce(a.backend_type, ''), w.pid IS NOT NULL, coalesce(w.blocked_by, '{}'::int[]),
       extract(epoch FROM now() - a.xact_start)::float8,
       extract(epoch FROM now() - coalesce(a.state_change, a.query_start))::float8,
       nullif(a.query_id, 0),
       want.locktype, want.relname, want.mode, extract(epoch FROM now() - want.waitstart)::float8,
       held.locktypes, held.relnames, held.modes
FROM involved i
JOIN pg_stat_activity a ON a.pid = i.pid
LEFT JOIN waiting w ON w.pid = a.pid
LEFT JOIN LATERAL (
  SELECT x.locktype, coalesce(nm.name, '') AS relname, x.mode, x.waitstart
  FROM wanted x LEFT JOIN named nm ON nm.oid = x.relation WHERE x.pid = a.pid LIMIT 1) want ON true
LEFT JOIN LATERAL (
  SELECT array_agg(h.locktype) AS locktypes, array_agg(coalesce(nm.name, '')) AS relnames, array_agg(h.mode) AS modes
  FROM locks h LEFT JOIN named nm ON nm.oid = h.relation
  WHERE h.pid = a.pid AND h.granted AND EXISTS (
    SELECT 1 FROM wanted x
    WHERE x.locktype = h.locktype AND x.database IS NOT DISTINCT FROM h.database
      AND x.relation IS NOT DISTINCT FROM h.relation AND x.page IS NOT DISTINCT FROM h.page
      AND x.tuple IS NOT DISTINCT FROM h.tuple AND x.virtualxid IS NOT DISTINCT FROM h.virtualxid
      AND x.transactionid IS NOT DISTINCT FROM h.transactionid AND x.classid IS NOT DISTINCT FROM h.classid
      AND x.objid IS NOT DISTINCT FROM h.objid AND x.objsubid IS NOT DISTINCT FROM h.objsubid)) held ON true
ORDER BY a.pid
"""

LOCK_WAITERS_SQL = """
SELECT pid, coalesce(datname, ''), coalesce(usename, ''), pg_blocking_pids(pid),
       coalesce(wait_event, ''), extract(epoch FROM now() - coalesce(state_change, query_start))::float8
FROM pg_stat_activity
WHERE wait_event_type = 'Lock'
ORDER BY pid
"""

# The exporter's own backend is excluded: it is always inside the transaction that reads this.
OLDEST_TRANSACTION_SQL = """
SELECT coalesce(datname, ''), max(extract(epoch FROM now() - xact_start))::float8, count(*)
FROM pg_stat_activity
WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
GROUP BY 1
"""

# --- migrations ---------------------------------------------------------------------------------------------------
# Also says whether the table is exclusively locked (to_regclass and pg_attribute take no lock on it).
MIGRATION_COLUMNS_SQL = """
SELECT a.attname, a.attrelid = ANY(""" + EXCLUSIVELY_LOCKED_TABLES + """) FROM pg_attribute a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
"""
# Common layouts: ours/Rails/golang-migrate use `version`, Flyway `version` + `installed_on`.
MIGRATION_VERSION_COLUMNS = ("version", "id", "name")
MIGRATION_TIME_COLUMNS = ("applied_at", "installed_on", "inserted_at", "created_at", "executed_at")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


@dataclass(frozen=True)
class Capabilities:
    user: str
    superuser: bool
    read_all_stats: bool          # member of pg_read_all_stats (pg_monitor grants it), or superuser
    pg_stat_statements: str | None  # extension version, None when not created in this database
    hypopg: str | None
    server_version_num: int
    server_version: str
    database: str

    def require_stats_visibility(self, what: str) -> None:
        if not (self.superuser or self.read_all_stats):
            raise MissingPrivilege(
                f"role {self.user!r} cannot see other sessions' {what}: run `GRANT pg_monitor TO {self.user};` "
                "(or pg_read_all_stats) as a superuser")


@dataclass(frozen=True)
class StatementStat:
    queryid: int
    datname: str
    user: str
    calls: int
    total_exec_seconds: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    max_exec_seconds: float
    query: str | None = None   # filled by statement_texts() only when asked

    @property
    def mean_exec_seconds(self) -> float:
        return self.total_exec_seconds / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class TableStat:
    datname: str
    schemaname: str
    relname: str
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    live_rows: int
    size_bytes: int | None                 # None: not read (the table is exclusively locked, or sizes were off)
    size_estimate_bytes: int = 0           # pg_class.relpages x block_size, as of the last VACUUM/ANALYZE
    size_estimate_age_seconds: float | None = None   # since that VACUUM/ANALYZE; None: never (age unknown)


@dataclass(frozen=True)
class ConnectionCount:
    datname: str
    state: str
    wait_event_type: str
    count: int


@dataclass(frozen=True)
class ConnectionSettings:
    max_connections: int
    superuser_reserved_connections: int


@dataclass(frozen=True)
class LockWaiter:
    pid: int
    datname: str
    user: str
    blocking_pids: tuple[int, ...]
    wait_event: str
    waiting_seconds: float


@dataclass(frozen=True)
class LockRef:
    locktype: str       # relation, transactionid, tuple, advisory...
    relation: str       # schema.table for relation/page/tuple locks in the current database, else ''
    mode: str           # AccessShareLock ... AccessExclusiveLock


@dataclass(frozen=True)
class LockSession:
    """A session in a lock queue: waiting, blocking, or both."""
    pid: int
    datname: str
    user: str
    application: str
    state: str                         # active, idle in transaction, ...
    backend_type: str
    waiting: bool                      # wait_event_type = 'Lock'
    blocked_by: tuple[int, ...]        # pg_blocking_pids(); empty when it does not wait
    transaction_seconds: float | None  # None: no open transaction
    state_seconds: float | None        # time in its current state
    query_id: int | None               # pg_stat_statements queryid of its current or last statement
    wants: LockRef | None              # the lock it waits for
    waiting_seconds: float | None      # since its wait began (pg_locks.waitstart)
    holds: tuple[LockRef, ...]         # granted locks on objects someone waits for


@dataclass(frozen=True)
class OldestTransaction:
    datname: str
    age_seconds: float
    open_transactions: int


@dataclass(frozen=True)
class Migration:
    table: str
    version: str
    applied_at: datetime


def capabilities(conn: psycopg.Connection) -> Capabilities:
    row = conn.execute(CAPABILITIES_SQL).fetchone()
    return Capabilities(row[0], bool(row[1]), bool(row[2]), row[3], row[4], row[5], row[6], row[7])


def top_statements(conn: psycopg.Connection, limit: int, caps: Capabilities | None = None) -> list[StatementStat]:
    """Top `limit` statements by total execution time, all databases (labels say which)."""
    caps = caps or capabilities(conn)
    if caps.server_version_num < 130000:
        raise ExtensionMissing(f"PostgreSQL {caps.server_version} is older than 13: pg_stat_statements columns differ")
    if caps.pg_stat_statements is None:
        raise ExtensionMissing(
            f"pg_stat_statements is not created in database {caps.database!r}: add it to shared_preload_libraries "
            "and run `CREATE EXTENSION pg_stat_statements;` as a superuser")
    caps.require_stats_visibility("statements (queryid and text are hidden)")
    rows = conn.execute(STATEMENTS_TOP_N_SQL, {"limit": limit}).fetchall()
    return [StatementStat(int(r[0]), r[1], r[2], int(r[3]), float(r[4]) / 1000.0, int(r[5]), int(r[6]), int(r[7]),
                          float(r[8]) / 1000.0) for r in rows]


def statement_texts(conn: psycopg.Connection, queryids: list[int], all_databases: bool = False) -> dict[int, str]:
    """Normalised text ($1, $2...) of the given statements, in the current database unless all_databases."""
    if not queryids:
        return {}
    params = {"queryids": list(queryids), "all_databases": all_databases}
    return {int(q): text for q, text in conn.execute(STATEMENT_TEXTS_SQL, params)}


def table_stats(conn: psycopg.Connection, limit: int, sizes: bool = True) -> list[TableStat]:
    """The busiest tables; size_bytes is None for exclusively locked tables (or all, with sizes=False)."""
    return [TableStat(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), int(r[5]), int(r[6] or 0),
                      None if r[7] is None else int(r[7]), int(r[8] or 0), r[9])
            for r in conn.execute(TABLE_STATS_SQL, {"limit": limit, "sizes": sizes})]


def connections(conn: psycopg.Connection) -> list[ConnectionCount]:
    return [ConnectionCount(*r) for r in conn.execute(CONNECTIONS_SQL)]


def connection_settings(conn: psycopg.Connection) -> ConnectionSettings:
    found = dict(conn.execute(SETTINGS_SQL).fetchall())
    return ConnectionSettings(found["max_connections"], found["superuser_reserved_connections"])


def lock_waiters(conn: psycopg.Connection) -> list[LockWaiter]:
    return [LockWaiter(r[0], r[1], r[2], tuple(r[3] or ()), r[4], float(r[5] or 0.0))
            for r in conn.execute(LOCK_WAITERS_SQL)]


def exclusively_locked_tables(conn: psycopg.Connection) -> frozenset[int]:
    """Oids of the tables another session holds or awaits ACCESS EXCLUSIVE on (see EXCLUSIVELY_LOCKED_TABLES)."""
    return frozenset(r[0] for r in conn.execute("SELECT unnest(" + EXCLUSIVELY_LOCKED_TABLES + ")", prepare=False))


def lock_sessions(conn: psycopg.Connection) -> list[LockSession]:
    """Every session in a lock queue, all databases (see pginsight.lockqueue for the root blockers)."""
    out = []
    for r in conn.execute(LOCK_QUEUE_SQL):
        wants = LockRef(r[11], r[12], r[13]) if r[11] else None
        holds = tuple(LockRef(t, n, m) for t, n, m in zip(r[15] or (), r[16] or (), r[17] or (), strict=True))
        out.append(LockSession(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7] or ()), r[8], r[9],
                               None if r[10] is None else int(r[10]), wants, r[14], holds))
    return out


def oldest_transactions(conn: psycopg.Connection) -> list[OldestTransaction]:
    return [OldestTransaction(r[0], float(r[1] or 0.0), int(r[2])) for r in conn.execute(OLDEST_TRANSACTION_SQL)]


def validate_table_name(name: str) -> tuple[str, ...]:
    """'schema.table' or 'table' -> parts; anything else is refused (it is spliced into SQL as identifiers)."""
    if not _QUALIFIED_NAME.match(name):
        raise ValueError(f"migrations table {name!r} is not a plain [schema.]table name: use e.g. public.schema_migrations")
    return tuple(name.split("."))


def last_migration(conn: psycopg.Connection, table: str) -> Migration | None:
    """The most recent row of the migrations table, or None when the table does not exist or is empty.

    Raises RelationLocked, without reading it, when another session holds or awaits ACCESS EXCLUSIVE on it.
    """
    parts = validate_table_name(table)
    rows = conn.execute(MIGRATION_COLUMNS_SQL, {"table": table}).fetchall()
    if not rows:
        return None
    if rows[0][1]:
        raise RelationLocked(f"migrations table {table} is locked exclusively by another session")
    cols = {r[0] for r in rows}
    version_col = next((c for c in MIGRATION_VERSION_COLUMNS if c in cols), None)
    time_col = next((c for c in MIGRATION_TIME_COLUMNS if c in cols), None)
    if version_col is None or time_col is None:
        raise ValueError(f"migrations table {table!r} needs a version column ({', '.join(MIGRATION_VERSION_COLUMNS)}) "
                         f"and a time column ({', '.join(MIGRATION_TIME_COLUMNS)}); it has {sorted(cols)}")
    query = pgsql.SQL("SELECT {v}::text, {t} FROM {tbl} WHERE {t} IS NOT NULL ORDER BY {t} DESC, {v} DESC LIMIT 1").format(
        v=pgsql.Identifier(version_col), t=pgsql.Identifier(time_col), tbl=pgsql.Identifier(*parts))
    row = conn.execute(query).fetchone()
    return Migration(table, row[0], row[1]) if row else None
