"""Shared by the advisor tests: what the advisor must never leave behind in a session."""
from __future__ import annotations


def leftovers(conn) -> tuple[list, list]:
    """Prepared statements and HypoPG indexes still in this session (both outlive a rollback)."""
    prepared = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    return prepared, conn.execute("SELECT * FROM hypopg_list_indexes").fetchall()
