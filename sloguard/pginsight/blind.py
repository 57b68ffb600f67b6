"""Statements the index advisor cannot plan right now, and why (a reason string, counted by the exporter).

Checked before any EXPLAIN, from the tables a statement names (parsed with pglast) and one catalogue query:
- a table another session holds or awaits ACCESS EXCLUSIVE on: planning would queue behind that lock (a migration's
  ALTER TABLE), so the statement is not planned now: `table_locked`;
- a table (or schema) the role may not read: EXPLAIN fails with "permission denied" (pg_monitor grants statistics,
  not SELECT): `permission_denied`, with the exact GRANT that fixes it.
Errors the advisor raises anyway map to a reason with reason_of(); an advisor exception that carries a `reason`
attribute (a str) is counted under that reason as is, so new reasons need no change here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from . import queries
from .advisor import quote_ident
from .sqltext import UnsupportedStatement, to_dollar_params

PERMISSION_DENIED = "permission_denied"   # the role lacks SELECT (or schema USAGE): the operator must GRANT
TABLE_LOCKED = "table_locked"             # a table it reads is exclusively locked: not planned, nothing waited
LOCK_TIMEOUT = "lock_timeout"             # planning waited lock_timeout for a lock and gave up
TIME_BUDGET = "time_budget"               # the per-scrape advisor time budget ran out before or while planning it
NO_TEXT = "no_text"                       # pg_stat_statements holds no text for it
PLANNING_ERROR = "planning_error"         # PostgreSQL refused to plan the text (other errors)
# Advisor reasons that mean "nothing an index would change" (an INSERT, a monitoring query): an answer, not blindness.
# The advisor names them in its UnsupportedStatement.reason (sqltext.NOT_A_QUERY, NO_USER_TABLE on the advisor branch).
NOTHING_TO_PLAN = frozenset({"not_a_query", "no_user_table"})

# One row per named relation: schema-qualified names match that schema, others the session's search_path (first
# hit), as the planner would. No to_regclass(): it raises on a schema without USAGE instead of saying so.
RELATIONS_SQL = """
SELECT r.ord, c.nspname, c.relname, has_schema_privilege(c.nspoid, 'USAGE'), has_table_privilege(c.oid, 'SELECT'),
       c.oid = ANY(""" + queries.EXCLUSIVELY_LOCKED_TABLES + """)
FROM unnest(%(schemas)s::text[], %(names)s::text[]) WITH ORDINALITY AS r(schemaname, relname, ord)
JOIN LATERAL (
  SELECT c.oid, c.relname, n.oid AS nspoid, n.nspname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relname = r.relname AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND (n.nspname = r.schemaname OR (r.schemaname IS NULL AND n.nspname = ANY(current_schemas(true))))
  ORDER BY array_position(current_schemas(true), n.nspname::text) NULLS LAST
  LIMIT 1) c ON true
"""


@dataclass(frozen=True)
class Blind:
    reason: str
    tables: tuple[tuple[str, str], ...] = ()   # (schema, table) the reason is about
    schemas: tuple[str, ...] = ()              # schemas the role may not use (permission_denied)

    @property
    def table_names(self) -> list[str]:
        return [f"{n}.{t}" if n else t for n, t in self.tables]

    def fix(self, role: str) -> str | None:
        """The statement(s) an operator runs to fix it, when one can."""
        if self.reason != PERMISSION_DENIED:
            return None
        return grant_statements(role, list(self.tables), list(self.schemas))


class _Relations(Visitor):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str | None, str]] = []

    def visit_RangeVar(self, ancestors, node):
        self.found.append((node.schemaname, node.relname))


def statement_relations(sql: str) -> list[tuple[str | None, str]] | None:
    """(schema or None, name) of every relation a SELECT/UPDATE/DELETE names (CTE names included: they resolve to
    nothing); None when the text does not parse (e.g. a normalised `interval $2`), so nothing is known in advance, or
    is another kind of statement, which the advisor turns down without planning."""
    try:
        stmts = parse_sql(to_dollar_params(sql))
    except ParseError:
        return None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt | ast.UpdateStmt | ast.DeleteStmt):
        return None
    found = _Relations()
    for stmt in stmts:
        found(stmt)
    return list(dict.fromkeys(found.found))


def grant_statements(role: str, tables: list[tuple[str, str]], schemas: list[str] = ()) -> str:
    """`GRANT USAGE ON SCHEMA s TO r; GRANT SELECT ON s.t, ... TO r;` for (schema, table) pairs."""
    out = []
    if schemas:
        out.append(f"GRANT USAGE ON SCHEMA {', '.join(quote_ident(s) for s in schemas)} TO {quote_ident(role)};")
    if tables:
        names = ", ".join(f"{quote_ident(n)}.{quote_ident(t)}" if n else quote_ident(t) for n, t in tables)
        out.append(f"GRANT SELECT ON {names} TO {quote_ident(role)};")
    return " ".join(out)


def precheck(conn: psycopg.Connection, texts: dict[int, str]) -> dict[int, Blind]:
    """queryid -> Blind for the statements that must not be planned now; one query for all of them."""
    named = {qid: rels for qid, text in texts.items() if (rels := statement_relations(text))}
    pairs = sorted({r for rels in named.values() for r in rels}, key=lambda r: (r[0] or "", r[1]))
    if not pairs:
        return {}
    rows = conn.execute(RELATIONS_SQL, {"schemas": [p[0] for p in pairs], "names": [p[1] for p in pairs]},
                        prepare=False).fetchall()
    info = {pairs[r[0] - 1]: r[1:] for r in rows}   # (schema, name) -> (nspname, relname, usage, select, locked)
    out: dict[int, Blind] = {}
    for qid, rels in named.items():
        found = [info[r] for r in rels if r in info]
        locked = sorted({(n, t) for n, t, _u, _s, lk in found if lk})
        if locked:
            out[qid] = Blind(TABLE_LOCKED, tuple(locked))
            continue
        no_usage = sorted({n for n, _t, u, _s, _lk in found if not u})
        no_select = sorted({(n, t) for n, t, _u, s, _lk in found if not s})
        if no_usage or no_select:
            out[qid] = Blind(PERMISSION_DENIED, tuple(no_select), tuple(no_usage))
    return out


def merged_fix(role: str, blinds) -> str:
    """One GRANT covering every permission_denied Blind given."""
    denied = [b for b in blinds if b.reason == PERMISSION_DENIED]
    return grant_statements(role, sorted({t for b in denied for t in b.tables}),
                            sorted({n for b in denied for n in b.schemas}))


_DENIED = re.compile(r'permission denied for (table|view|materialized view|schema) "?([^"\s]+)"?')


def from_permission_error(exc: BaseException) -> Blind:
    """A Blind for an EXPLAIN that failed with "permission denied" (the name as the message gives it)."""
    m = _DENIED.search(str(exc))
    if m is None:
        return Blind(PERMISSION_DENIED)
    if m.group(1) == "schema":
        return Blind(PERMISSION_DENIED, schemas=(m.group(2),))
    schema, _, table = m.group(2).rpartition(".")   # PostgreSQL names the table without its schema
    return Blind(PERMISSION_DENIED, ((schema, table),))


def reason_of(exc: BaseException) -> str | None:
    """The blind reason for an advisor error; None when the statement simply has nothing to plan (not blind)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return None if reason in NOTHING_TO_PLAN else reason
    if isinstance(exc, UnsupportedStatement):
        return None   # an INSERT, a catalogue query...: nothing to index, as today
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PERMISSION_DENIED
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return LOCK_TIMEOUT
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return TIME_BUDGET
    return PLANNING_ERROR
