"""Lock scenarios for tests: a session holding a lock in an open transaction, and sessions queued behind it.

Every session opened here is closed by `LockScene.close()` (tests call it in `finally`); queued sessions run with a
statement_timeout so nothing outlives a failed test.
"""
from __future__ import annotations

import threading
import time

import psycopg


class LockScene:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._holders: list[psycopg.Connection] = []
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.pids: list[int] = []

    def hold(self, *statements: str) -> int:
        """Run statements in a transaction left open (idle in transaction); returns the session's pid."""
        conn = psycopg.connect(self.dsn)
        self._holders.append(conn)
        for sql in statements:
            conn.execute(sql)
        return conn.info.backend_pid

    def run_in_background(self, sql: str, *, autocommit: bool = True, before: tuple[str, ...] = ()) -> None:
        """Run `sql` in its own session on a thread (it may block): a queued application session, a waiting ALTER,
        or an active statement holding locks. Errors other than the cancel at clean-up are kept in `errors`."""
        ready = threading.Event()

        def run():
            try:
                with psycopg.connect(self.dsn, autocommit=autocommit, options="-c statement_timeout=60000") as c:
                    self.pids.append(c.info.backend_pid)
                    for b in before:
                        c.execute(b)
                    ready.set()
                    c.execute(sql)
                    if not autocommit:
                        c.rollback()
            except psycopg.errors.QueryCanceled:
                pass   # cancelled at clean-up (or by the test)
            except psycopg.OperationalError:
                pass   # terminated at clean-up
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
            finally:
                ready.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._threads.append(t)
        ready.wait(10)

    def wait_for_waiters(self, n: int, timeout: float = 15) -> None:
        """Until at least n sessions of this database wait on a lock."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while time.monotonic() < deadline:
                count = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock'").fetchone()[0]
                if count >= n:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"fewer than {n} sessions waiting on a lock after {timeout} s")

    def wait_for_sleep(self, pid: int, timeout: float = 15) -> None:
        """Until session pid runs pg_sleep (it then holds the locks its statement took)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while time.monotonic() < deadline:
                if c.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("PgSleep",):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"session {pid} not in pg_sleep after {timeout} s")

    def release(self) -> None:
        for conn in self._holders:
            if not conn.closed:
                conn.rollback()

    def close(self) -> None:
        self.release()
        for conn in self._holders:
            conn.close()
        with psycopg.connect(self.dsn, autocommit=True) as c:   # the background sessions, whatever they wait on
            for pid in self.pids:
                c.execute("SELECT pg_cancel_backend(%s)", (pid,))
        for t in self._threads:
            t.join(30)
