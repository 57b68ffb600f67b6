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
# (80 ms vs 15 ms for 2,000 tables), and the heap is what a sequential scan reads.
TABLE_STATS_SQL = """
SELECT current_database(), t.schemaname, t.relname, t.seq_scan, t.seq_tup_read, t.idx_scan, t.n_live_tup,
       coalesce(pg_relation_size(t.relid), 0)
FROM (SELECT relid, schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, n_live_tup
      FROM pg_stat_user_tables
      ORDER BY seq_tup_read DESC, n_live_tup DESC, relid
      LIMIT %(limit)s) t
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
MIGRATION_COLUMNS_SQL = """
SELECT a.attname FROM pg_attribute a
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
    size_bytes: int


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


def table_stats(conn: psycopg.Connection, limit: int) -> list[TableStat]:
    return [TableStat(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), int(r[5]), int(r[6] or 0), int(r[7]))
            for r in conn.execute(TABLE_STATS_SQL, {"limit": limit})]


def connections(conn: psycopg.Connection) -> list[ConnectionCount]:
    return [ConnectionCount(*r) for r in conn.execute(CONNECTIONS_SQL)]


def connection_settings(conn: psycopg.Connection) -> ConnectionSettings:
    found = dict(conn.execute(SETTINGS_SQL).fetchall())
    return ConnectionSettings(found["max_connections"], found["superuser_reserved_connections"])


def lock_waiters(conn: psycopg.Connection) -> list[LockWaiter]:
    return [LockWaiter(r[0], r[1], r[2], tuple(r[3] or ()), r[4], float(r[5] or 0.0))
            for r in conn.execute(LOCK_WAITERS_SQL)]


def oldest_transactions(conn: psycopg.Connection) -> list[OldestTransaction]:
    return [OldestTransaction(r[0], float(r[1] or 0.0), int(r[2])) for r in conn.execute(OLDEST_TRANSACTION_SQL)]


def validate_table_name(name: str) -> tuple[str, ...]:
    """'schema.table' or 'table' -> parts; anything else is refused (it is spliced into SQL as identifiers)."""
    if not _QUALIFIED_NAME.match(name):
        raise ValueError(f"migrations table {name!r} is not a plain [schema.]table name: use e.g. public.schema_migrations")
    return tuple(name.split("."))


def last_migration(conn: psycopg.Connection, table: str) -> Migration | None:
    """The most recent row of the migrations table, or None when the table does not exist or is empty."""
    parts = validate_table_name(table)
    cols = {r[0] for r in conn.execute(MIGRATION_COLUMNS_SQL, {"table": table})}
    if not cols:
        return None
    version_col = next((c for c in MIGRATION_VERSION_COLUMNS if c in cols), None)
    time_col = next((c for c in MIGRATION_TIME_COLUMNS if c in cols), None)
    if version_col is None or time_col is None:
        raise ValueError(f"migrations table {table!r} needs a version column ({', '.join(MIGRATION_VERSION_COLUMNS)}) "
                         f"and a time column ({', '.join(MIGRATION_TIME_COLUMNS)}); it has {sorted(cols)}")
    query = pgsql.SQL("SELECT {v}::text, {t} FROM {tbl} WHERE {t} IS NOT NULL ORDER BY {t} DESC, {v} DESC LIMIT 1").format(
        v=pgsql.Identifier(version_col), t=pgsql.Identifier(time_col), tbl=pgsql.Identifier(*parts))
    row = conn.execute(query).fetchone()
    return Migration(table, row[0], row[1]) if row else None
