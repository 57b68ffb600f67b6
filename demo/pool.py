"""A bounded PostgreSQL connection pool whose state the metrics read directly.

Why not psycopg_pool: we need the exact in-use and waiting counts at any instant for the pool gauges, and a
deadline-based acquire so a request that waits too long answers 504 (the scenario's "pool exhausted").
Connections open lazily, so a healthy service holds few of them and a saturated one holds `max_size`.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg


class PoolTimeout(Exception):
    """No connection became free before the request's deadline."""


class BoundedPool:
    def __init__(self, dsn: str, max_size: int, statement_timeout_ms: int, connect_timeout_s: float = 5.0,
                 idle_timeout_s: float = 10.0):
        if max_size < 1:
            raise ValueError("pool max_size must be >= 1")
        self._dsn = dsn
        self.max_size = max_size
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        # Idle connections are closed after this long (like HikariCP's idleTimeout), so a quiet service holds few
        # server connections and the Postgres connection count tracks the real load.
        self._idle_timeout_s = idle_timeout_s
        self._idle: list[tuple[psycopg.Connection, float]] = []   # (connection, idle since), oldest first
        self._open = 0          # connections that exist (idle + in use)
        self._in_use = 0
        self._waiting = 0
        self._cond = threading.Condition()
        self._closed = False

    # --- gauges ---
    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    def _connect(self) -> psycopg.Connection:
        # statement_timeout bounds one query; the request deadline bounds the wait for a connection.
        return psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s)),
            options=f"-c statement_timeout={self._statement_timeout_ms}",
            application_name="sloguard-demo-api",
            # No server-side prepared statements: after the migration's ADD COLUMN, a prepared `SELECT *` fails
            # with "cached plan must not change result type" on every pooled connection, which would hide the
            # incident we replay (slow plans) behind an unrelated one.
            prepare_threshold=None,
        )

    def _take(self, deadline: float) -> tuple[psycopg.Connection | None, bool]:
        """Reserve a slot: an idle connection, or the right to open a new one (conn None, True)."""
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise PoolTimeout("pool is closed")
                    self._close_expired()
                    if self._idle:
                        self._in_use += 1
                        return self._idle.pop()[0], False   # most recently used: the others may expire
                    if self._open < self.max_size:
                        self._open += 1
                        self._in_use += 1
                        return None, True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolTimeout(f"no connection free within the deadline (pool max {self.max_size})")
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1

    def _release(self, conn: psycopg.Connection | None, broken: bool) -> None:
        with self._cond:
            self._in_use -= 1
            if conn is None or broken or self._closed:
                self._open -= 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            else:
                self._idle.append((conn, time.monotonic()))
            self._cond.notify()

    def _close_expired(self) -> None:
        """Called with the lock held."""
        limit = time.monotonic() - self._idle_timeout_s
        while self._idle and self._idle[0][1] < limit:
            conn, _ = self._idle.pop(0)
            self._open -= 1
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def connection(self, deadline: float) -> Iterator[psycopg.Connection]:
        """A connection until the block ends; PoolTimeout when none frees up before `deadline` (monotonic)."""
        conn, must_open = self._take(deadline)
        broken = False
        try:
            if must_open:
                conn = self._connect()
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # A dead connection must not go back to the pool; QueryCanceled is an OperationalError too but the
            # connection stays usable, so keep it then.
            broken = conn is None or conn.closed or not isinstance(exc, psycopg.errors.QueryCanceled)
            raise
        finally:
            self._release(conn, broken)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for conn, _ in self._idle:
                with contextlib.suppress(Exception):
                    conn.close()
            self._open -= len(self._idle)
            self._idle.clear()
            self._cond.notify_all()

