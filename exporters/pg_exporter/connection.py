"""The exporter's single database connection: at most one, reused, guarded by a lock, re-opened when lost.

Every session runs with statement_timeout (a hung catalogue query must not pile up scrapes), a short lock_timeout
(the collectors do not read what another session locks exclusively; this bounds the races), default_transaction_read_only
and application_name 'sloguard-pg-exporter' so DBAs can find us in pg_stat_activity.
"""
from __future__ import annotations

import contextlib
import getpass
import logging
import os
import threading
import time

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sloguard.pginsight import queries

APPLICATION_NAME = "sloguard-pg-exporter"
log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """Could not connect; the message is one line and carries no secret."""


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, safe for logs (works for key=value and URI forms)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


class Database:
    """Owns the connection. Use `with db.session() as (conn, caps):` — the lock is held for the whole block."""

    def __init__(self, dsn: str, *, password: str | None = None, query_timeout: float = 5.0,
                 connect_timeout: float = 5.0, down_log_interval: float = 60.0, lock_timeout: float = 0.1):
        self._dsn = dsn
        self._password = password
        self.query_timeout = query_timeout
        self.lock_timeout = min(lock_timeout, query_timeout)
        self._connect_timeout = max(1, int(round(connect_timeout)))
        self._conn: psycopg.Connection | None = None
        self.lock = threading.Lock()
        self._down_since: float | None = None
        self._last_down_log = 0.0
        self._down_log_interval = down_log_interval
        self.connects = 0   # how many times we opened a connection (tests and logs)

    @property
    def redacted_dsn(self) -> str:
        return redact_dsn(self._dsn)

    def _connect(self) -> psycopg.Connection:
        timeout_ms = int(self.query_timeout * 1000)
        lock_ms = max(1, int(self.lock_timeout * 1000))
        options = (f"-c statement_timeout={timeout_ms} -c lock_timeout={lock_ms} "
                   "-c default_transaction_read_only=on -c idle_in_transaction_session_timeout=60000")
        kwargs = {"application_name": APPLICATION_NAME, "options": options, "connect_timeout": self._connect_timeout}
        if self._password is not None:
            kwargs["password"] = self._password
        conn = psycopg.connect(make_conninfo(self._dsn, **kwargs), autocommit=True)
        # no psycopg-side prepared statements: our queries are few and a restarted server would invalidate them
        conn.prepare_threshold = None
        self.connects += 1
        return conn

    def acquire(self) -> tuple[psycopg.Connection, queries.Capabilities]:
        """Return a live connection and what it may see (one query, doubling as the liveness check).

        Caller must hold `self.lock`. Raises DatabaseUnavailable.
        """
        reused = self._conn is not None and not (self._conn.closed or self._conn.broken)
        try:
            return self._open_and_check()
        except psycopg.Error as e:
            self._close()
            if not reused:
                self._note_down(e)
                raise DatabaseUnavailable(queries.first_line(e)) from None
        try:   # the kept connection went stale (server restarted): one fresh attempt
            return self._open_and_check()
        except psycopg.Error as e:
            self._close()
            self._note_down(e)
            raise DatabaseUnavailable(queries.first_line(e)) from None

    def _open_and_check(self) -> tuple[psycopg.Connection, queries.Capabilities]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._close()
            self._conn = self._connect()
        caps = queries.capabilities(self._conn)
        self._note_up()
        return self._conn, caps

    def mark_broken(self, exc: BaseException) -> None:
        """A query failed because the connection died: drop it so the next scrape reconnects."""
        self._close()
        self._note_down(exc)

    def _note_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._last_down_log = now
            log.error("database unreachable (%s): %s; serving up=0 and retrying on each scrape",
                      self.redacted_dsn, queries.first_line(exc))
        elif now - self._last_down_log >= self._down_log_interval:
            self._last_down_log = now
            log.warning("database still unreachable after %.0fs: %s", now - self._down_since, queries.first_line(exc))

    def _note_up(self) -> None:
        if self._down_since is not None:
            log.info("database reachable again after %.0fs", time.monotonic() - self._down_since)
            self._down_since = None

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def dbname(self) -> str:
        """The database the DSN names (libpq's defaults when it names none); the server's answer is authoritative."""
        params = conninfo_to_dict(self._dsn)
        return (params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
                or os.environ.get("PGUSER") or getpass.getuser())

    def for_database(self, datname: str) -> Database:
        """Same server, role, password and timeouts, another database (a cluster's other databases)."""
        return Database(make_conninfo(self._dsn, dbname=datname), password=self._password,
                        query_timeout=self.query_timeout, connect_timeout=self._connect_timeout,
                        down_log_interval=self._down_log_interval, lock_timeout=self.lock_timeout)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection. With a timeout (shutdown), a query still running is cancelled, not waited for."""
        if self.lock.acquire(timeout=-1 if timeout is None else timeout):
            try:
                self._close()
            finally:
                self.lock.release()
            return
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=0.5)
