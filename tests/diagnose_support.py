"""Shared by the diagnose tests: diagnose in-process on a fresh connection, as the command runs it."""
from __future__ import annotations

from sloguard.diagnose.collect import DatabaseEvidence, collect, connect
from sloguard.diagnose.rank import Finding, rank
from sloguard.diagnose.thresholds import Thresholds


def diagnose_now(dsn: str, th: Thresholds, migrations_table: str = "schema_migrations",
                 target: str = "t") -> tuple[DatabaseEvidence, list[Finding]]:
    """(evidence, ranked findings), without Prometheus and without a sample window (means since the statistics
    reset); the connection is closed whatever happens."""
    conn = connect(dsn)
    try:
        ev = collect(conn, target, th, migrations_table, sample_seconds=0)
    finally:
        conn.close()
    return ev, rank(ev, None, th)
