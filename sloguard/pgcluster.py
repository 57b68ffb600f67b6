"""A throwaway PostgreSQL 15 cluster on 127.0.0.1, for tests, the migration gate and the simulation.

The server refuses to run as root, so when we are root initdb/pg_ctl run as the `postgres` user.
pg_stat_statements is preloaded; HypoPG is available when the Debian package is installed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PG_BIN = os.environ.get("SLOGUARD_PG_BIN", "/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class TempCluster:
    """initdb + start in a temp dir; `stop()` removes everything. Use as a context manager."""

    port: int = field(default_factory=free_port)
    max_connections: int = 100
    settings: dict[str, str] = field(default_factory=dict)
    datadir: str = ""
    _base: str = ""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = f" password={password}" if password else ""
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}{pw} connect_timeout=5"

    def start(self) -> TempCluster:
        try:
            return self._init_and_start()
        except BaseException:
            # pg_ctl detaches the postmaster: a failure (or Ctrl-C) after it started must not leave it running.
            self.stop()
            raise

    def _init_and_start(self) -> TempCluster:
        self._base = tempfile.mkdtemp(prefix="sloguard-pg-")
        os.chmod(self._base, 0o755)
        self.datadir = os.path.join(self._base, "data")
        if os.geteuid() == 0:
            shutil.chown(self._base, "postgres", "postgres")
        subprocess.run(
            _as_postgres([f"{PG_BIN}/initdb", "-D", self.datadir, "-U", SUPERUSER, "-A", "trust",
                          "--no-sync", "-E", "UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._base}'",
            "max_connections": str(self.max_connections),
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "'all'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "shared_buffers": "'128MB'",
            "log_min_messages": "warning",
            **self.settings,
        }
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        # md5 for a password-protected role test; trust stays for the superuser on loopback.
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n")
            f.write("host all postgres 127.0.0.1/32 trust\n")
            f.write("host all all 127.0.0.1/32 scram-sha-256\n")
        self._pg_ctl("start", "-w", "-t", "30", "-l", os.path.join(self._base, "server.log"))
        return self

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.datadir, *args]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop_server(self) -> None:
        """Stop the server but keep the data (fault tests restart it with `restart_server`)."""
        self._pg_ctl("stop", "-m", "fast", "-w")

    def restart_server(self) -> None:
        self._pg_ctl("start", "-w", "-t", "30", "-l", os.path.join(self._base, "server.log"))

    def is_running(self) -> bool:
        return subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "status"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def stop(self) -> None:
        if self.datadir and os.path.isdir(self.datadir) and self.is_running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-m", "immediate", "-w")
        if self._base:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = ""

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql as the superuser (for set-up scripts, not for the code under test)."""
        out = subprocess.run(
            [f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", self.dsn(dbname), "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh database for one test or module: created empty (dropped first if a crashed run left it), yields
        its DSN, always dropped afterwards even with sessions still connected."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        try:
            yield self.dsn(name)
        finally:
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                               stdout=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on port {self.port} not ready after {timeout}s")

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
