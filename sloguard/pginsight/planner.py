"""Generic plans of one statement for the advisor: PREPARE with per-parameter types, EXPLAIN EXECUTE, HypoPG.

PG15 has no EXPLAIN (GENERIC_PLAN): the statement is PREPAREd (parameter types `unknown`, resolved from context)
and `EXPLAIN EXECUTE name(NULL, ...)` runs under plan_cache_mode = force_generic_plan (the caller sets it), so
parameter values do not matter. A probe inlines chosen values for some parameters as literals, so the planner
estimates with their statistics (most-common values), while the other parameters stay generic.

Texts pg_stat_statements cannot give back as valid SQL are planned anyway:
- a syntax error (`interval $2`, `EXTRACT($1 FROM x)`): re-printed by pglast as valid SQL (sqltext.normalized_to_sql);
- "could not determine data type of parameter $n" (a parameter with no context, e.g. `SELECT $1 ...`): typed text.
What still fails is reported as UnsupportedStatement with a reason (UNPLANNABLE_TEXT, UNDEFINED_OBJECT).
"""
from __future__ import annotations

import contextlib
import re

import psycopg

from .queries import first_line
from .sqltext import UNDEFINED_OBJECT, UNPLANNABLE_TEXT, UnsupportedStatement, inline_values, normalized_to_sql

STATEMENT_NAME = "sloguard_advisor"   # one fixed name: every EXPLAIN EXECUTE is one pg_stat_statements entry

_UNDEFINED = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidSchemaName,
              psycopg.errors.UndefinedObject)
# errors about the text itself (syntax, types) rather than the database: no retry will change them
_TEXT_ERRORS = (psycopg.ProgrammingError, psycopg.DataError)
_PARAM_TYPE = re.compile(r"parameter \$(\d+)")


class Planner:
    """One statement's plans; `open()` first (finds the SQL and parameter types that plan), then `plan()`."""

    def __init__(self, conn: psycopg.Connection, sql: str, nparams: int):
        self.conn, self.sql, self.nparams = conn, sql, nparams
        self.types = ["unknown"] * nparams
        self.rewritten = False          # the text was re-printed to be plannable

    def open(self) -> dict:
        """The generic plan, after whatever rewriting the text needs; UnsupportedStatement when none works."""
        for _ in range(self.nparams + 2):
            try:
                return self.plan()
            except psycopg.errors.SyntaxError as e:
                if self.rewritten:
                    raise UnsupportedStatement(f"cannot plan the statement: {first_line(e)}", UNPLANNABLE_TEXT) from e
                self.sql, self.rewritten = normalized_to_sql(self.sql), True
            except psycopg.errors.IndeterminateDatatype as e:
                m = _PARAM_TYPE.search(str(e))
                n = int(m.group(1)) if m else 0
                if not 0 < n <= self.nparams or self.types[n - 1] != "unknown":
                    raise UnsupportedStatement(f"cannot plan the statement: {first_line(e)}", UNPLANNABLE_TEXT) from e
                self.types[n - 1] = "text"
            except _UNDEFINED as e:
                raise UnsupportedStatement(f"cannot plan the statement: {first_line(e)}", UNDEFINED_OBJECT) from e
            except psycopg.errors.InsufficientPrivilege:
                raise   # a grant fixes it: the caller reports it as such, not as a bad text
            except _TEXT_ERRORS as e:
                raise UnsupportedStatement(f"cannot plan the statement: {first_line(e)}", UNPLANNABLE_TEXT) from e
        raise UnsupportedStatement("cannot plan the statement: parameter types unresolved", UNPLANNABLE_TEXT)

    def plan(self, values: dict[int, str] | None = None, savepoint: bool = True) -> dict:
        """EXPLAIN (FORMAT JSON, VERBOSE) of the generic plan, `values` ({n: text}) inlined for those parameters.

        PREPAREd afresh every time: a prepared generic plan is cached, and HypoPG indexes change the answer.
        In a savepoint, a failure leaves the caller's transaction usable; without (a text that planned once plans
        again), two round trips fewer.
        """
        values = values or {}
        sql = inline_values(self.sql, values)
        # an inlined parameter no longer appears: PREPARE still wants a type for its slot
        types = ["text" if n + 1 in values else t for n, t in enumerate(self.types)]
        head = f"PREPARE {STATEMENT_NAME}({', '.join(types)})" if types else f"PREPARE {STATEMENT_NAME}"
        args = "(" + ", ".join(["NULL"] * self.nparams) + ")" if self.nparams else ""
        # after an error the caller sweeps the prepared statement (not transactional)
        with self.conn.transaction() if savepoint else contextlib.nullcontext():
            self.conn.execute(f"{head} AS {sql}", prepare=False)
            row = self.conn.execute(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {STATEMENT_NAME}{args}",
                                    prepare=False).fetchone()
            self.conn.execute(f"DEALLOCATE {STATEMENT_NAME}", prepare=False)
        return row[0][0]


def cost(plan: dict) -> float:
    return float(plan["Plan"]["Total Cost"])


def walk(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from walk(child)


def uses_index(plan: dict, index_name: str) -> bool:
    return any(n.get("Index Name") == index_name for n in walk(plan["Plan"]))


def create_hypothetical(conn: psycopg.Connection, ddl: str) -> str:
    """HypoPG index from CREATE INDEX text; its name (`<oid>btree_...`) as plans print it."""
    return conn.execute("SELECT indexname FROM hypopg_create_index(%s)", (ddl,), prepare=False).fetchone()[0]


def reset_hypothetical(conn: psycopg.Connection) -> None:
    conn.execute("SELECT hypopg_reset()", prepare=False)
