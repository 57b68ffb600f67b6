"""Missing-index advisor: PgHero's candidate choice, verified the Dexter way with HypoPG.

For a statement (pg_stat_statements-normalised `$1` text, or `%s`/`?` placeholders):
1. plan it generically (PG15 has no EXPLAIN (GENERIC_PLAN)): PREPARE with unknown parameter types, then
   `EXPLAIN EXECUTE name(NULL, ...)` under plan_cache_mode = force_generic_plan, so parameter values do not matter;
2. find sequential scans on tables with at least `min_live_rows` rows and parse their Filter with pglast;
3. order the filtered columns by selectivity from pg_stats (equality before range, as a btree wants) and take
   columns until fewer than 50 rows remain (PgHero); also try each column alone;
4. skip candidates an existing btree already covers (same leading columns);
5. with HypoPG: create each hypothetical index, re-plan (a prepared generic plan is cached, so PREPARE again),
   keep the cheapest, report it only when it cuts the plan cost by at least half; hypopg_reset() always.
Nothing is written: plain EXPLAIN only, inside a READ ONLY transaction when we own the transaction.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from .sqltext import (  # noqa: F401 - re-exported: the advisor's public API
    Predicate,
    UnsupportedStatement,
    parse_array_text,
    parse_filter,
    plannable,
    to_dollar_params,
)

log = logging.getLogger(__name__)

MIN_COST_REDUCTION = 0.5      # Dexter: keep an index only if it halves the plan cost
TARGET_ROWS = 50              # PgHero: add columns until fewer rows than this remain
MAX_INDEX_COLUMNS = 3
DEFAULT_RANGE_SELECTIVITY = 1.0 / 3   # PostgreSQL's own default for inequality estimates
STATEMENT_NAME = "sloguard_advisor"   # one fixed name: every EXPLAIN EXECUTE is one pg_stat_statements entry


@dataclass(frozen=True)
class IndexSuggestion:
    schemaname: str
    relname: str
    columns: tuple[str, ...]
    ddl: str                     # 'CREATE INDEX CONCURRENTLY users_email_idx ON public.users (email)'
    cost_before: float
    cost_after: float | None     # None when HypoPG is unavailable or off
    verified: bool               # True when HypoPG showed >= 50% cost reduction
    queryid: int | None = None

    @property
    def cost_reduction(self) -> float | None:
        if self.cost_after is None or self.cost_before <= 0:
            return None
        return 1.0 - self.cost_after / self.cost_before


# --- statistics --------------------------------------------------------------------------------------------------

_STATS_SQL = """
SELECT attname, null_frac, n_distinct, most_common_vals::text, most_common_freqs
FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = ANY(%s)
"""

_TABLE_SQL = """
SELECT c.oid, greatest(c.reltuples, coalesce(s.n_live_tup, 0))::float8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE n.nspname = %s AND c.relname = %s
"""

# Plain btree indexes (no predicate, no expressions) as ordered column lists.
_BTREE_INDEXES_SQL = """
SELECT array_agg(a.attname ORDER BY k.ord)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indisvalid
GROUP BY i.indexrelid
"""


def _selectivity(pred: Predicate, stats: tuple | None, rows: float) -> float:
    if stats is None:   # no ANALYZE yet: assume unselective so it sorts last
        return 1.0
    null_frac, n_distinct = stats[1] or 0.0, stats[2] or 0.0
    mcv, mcf = parse_array_text(stats[3]), list(stats[4] or [])
    if len(mcv) != len(mcf):
        mcv, mcf = [], []
    if pred.kind == "range":
        return DEFAULT_RANGE_SELECTIVITY * (1 - null_frac)
    distinct = -n_distinct * rows if n_distinct < 0 else n_distinct
    distinct = max(distinct, 1.0)
    if pred.literal is not None and pred.literal in mcv:
        return float(mcf[mcv.index(pred.literal)])
    rest_freq = max(1.0 - null_frac - sum(mcf), 0.0)
    rest_distinct = max(distinct - len(mcv), 1.0)
    # a parameter ($1) can be any value: the average frequency, MCVs included
    per_value = rest_freq / rest_distinct if pred.literal is not None else (1.0 - null_frac) / distinct
    return min(per_value * pred.in_list_size, 1.0)


def candidate_columns(conn: psycopg.Connection, schema: str, table: str, preds: list[Predicate],
                      rows: float) -> list[tuple[str, ...]]:
    """Index column lists to try, most promising first (PgHero ordering, then single columns)."""
    names = sorted({p.column for p in preds})
    stats = {r[0]: r for r in conn.execute(_STATS_SQL, (schema, table, names), prepare=False)}
    by_col: dict[str, tuple[str, float]] = {}
    for p in preds:
        sel = _selectivity(p, stats.get(p.column), rows)
        kind, old = by_col.get(p.column, (p.kind, 1.0))
        by_col[p.column] = ("eq" if "eq" in (kind, p.kind) else "range", min(old, sel))
    eq = sorted((sel, c) for c, (k, sel) in by_col.items() if k == "eq")
    rng = sorted((sel, c) for c, (k, sel) in by_col.items() if k == "range")
    ordered = [c for _, c in eq] + [c for _, c in rng[:1]]   # one range column ends a usable btree prefix
    prefix: list[str] = []
    remaining = rows
    for col in ordered[:MAX_INDEX_COLUMNS]:
        prefix.append(col)
        remaining *= dict((c, s) for s, c in eq + rng)[col]
        if remaining < TARGET_ROWS:
            break
    candidates = [tuple(prefix[:n]) for n in range(len(prefix), 0, -1)]
    candidates += [(c,) for c in ordered if (c,) not in candidates]
    return candidates


def _covered(candidate: tuple[str, ...], existing: list[list[str]]) -> bool:
    return any(set(idx[:len(candidate)]) == set(candidate) for idx in existing)


# --- planning ----------------------------------------------------------------------------------------------------

def _generic_plan(conn: psycopg.Connection, sql: str, nparams: int) -> dict:
    """EXPLAIN of the generic plan (parameters are NULL: a generic plan does not look at them)."""
    conn.execute(f"PREPARE {STATEMENT_NAME} AS {sql}", prepare=False)
    args = "(" + ", ".join(["NULL"] * nparams) + ")" if nparams else ""
    plan = conn.execute(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {STATEMENT_NAME}{args}", prepare=False).fetchone()
    conn.execute(f"DEALLOCATE {STATEMENT_NAME}", prepare=False)
    return plan[0][0]


def _quietly(conn: psycopg.Connection, sql: str) -> None:
    """Clean-up after an error, which must not mask it (runs in its own savepoint or transaction)."""
    with contextlib.suppress(psycopg.Error), conn.transaction():
        conn.execute(sql, prepare=False)


def _seq_scans(node: dict) -> Iterable[dict]:
    if node.get("Node Type") == "Seq Scan" and node.get("Filter"):
        yield node
    for child in node.get("Plans", ()):
        yield from _seq_scans(child)


def quote_ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def index_name(table: str, columns: tuple[str, ...]) -> str:
    return "_".join((table, *columns, "idx"))[:63]


def index_ddl(schema: str, table: str, columns: tuple[str, ...], concurrently: bool = True) -> str:
    cols = ", ".join(quote_ident(c) for c in columns)
    conc = "CONCURRENTLY " if concurrently else ""
    return (f"CREATE INDEX {conc}{quote_ident(index_name(table, columns))} "
            f"ON {quote_ident(schema)}.{quote_ident(table)} ({cols})")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def safe_build_statements(schema: str, table: str, columns: tuple[str, ...]) -> list[str]:
    """The statements to run (psql, autocommit, on the primary) to build the index and know that it worked.

    - lock_timeout = 0: the build's only table lock (SHARE UPDATE EXCLUSIVE) queues no reads or writes, but a
      lock_timeout also bounds its waits for older writers and snapshots, so any transaction older than the timeout
      cancels the build and leaves an INVALID index (measured on PG15; see the runbook's Missing index section).
      0 also overrides a role or database default.
    - no IF NOT EXISTS: on a re-run it would skip silently over an INVALID index left by a failed build.
    - the DO block fails loudly when the index is INVALID and names the drop-and-retry statement.
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(index_name(table, columns))}"
    message = (f"index {qualified} is INVALID (the build failed or was cancelled): "
               f"run DROP INDEX CONCURRENTLY {qualified}; then CREATE INDEX CONCURRENTLY again")
    check = ("DO $sloguard$ BEGIN IF NOT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = "
             f"{_literal(qualified)}::regclass), false) THEN RAISE EXCEPTION '%', {_literal(message)}; "
             "END IF; END $sloguard$;")
    return ["SET lock_timeout = 0; SET statement_timeout = 0;", index_ddl(schema, table, columns) + ";", check]


def hypopg_available(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'", prepare=False).fetchone() is not None


def _hypothetical_cost(conn: psycopg.Connection, sql: str, nparams: int, schema: str, table: str,
                       cols: tuple[str, ...]) -> float:
    conn.execute("SELECT hypopg_create_index(%s)", (index_ddl(schema, table, cols, False),), prepare=False)
    cost = float(_generic_plan(conn, sql, nparams)["Plan"]["Total Cost"])
    conn.execute("SELECT hypopg_reset()", prepare=False)
    return cost


def suggest_for_query(conn: psycopg.Connection, sql: str, *, use_hypopg: bool = True, min_live_rows: int = 10_000,
                      queryid: int | None = None) -> list[IndexSuggestion]:
    """Indexes that would remove sequential scans on large tables from `sql`'s generic plan.

    With HypoPG (installed in this database and use_hypopg) only verified suggestions (>= 50% cheaper) come back;
    without it, PgHero-style unverified candidates with cost_after=None. Raises UnsupportedStatement for
    anything but one SELECT/UPDATE/DELETE on user tables, psycopg.Error for planning errors (e.g. unknown table).
    """
    sql, nparams = plannable(sql)
    own_txn = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    hypo = False
    try:
        with conn.transaction():
            if own_txn:
                conn.execute("SET TRANSACTION READ ONLY", prepare=False)
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan", prepare=False)
            hypo = use_hypopg and hypopg_available(conn)
            plan = _generic_plan(conn, sql, nparams)
            cost_before = float(plan["Plan"]["Total Cost"])
            suggestions: list[IndexSuggestion] = []
            for scan in _seq_scans(plan["Plan"]):
                found = _suggest_for_scan(conn, sql, nparams, scan, cost_before, hypo, min_live_rows, queryid)
                if found and all((found.relname, found.columns) != (s.relname, s.columns) for s in suggestions):
                    suggestions.append(found)
            return suggestions
    except BaseException:
        # Neither PREPARE nor HypoPG's backend-local indexes are undone by a rollback: sweep them after an error.
        _quietly(conn, f"DEALLOCATE {STATEMENT_NAME}")
        if hypo:
            _quietly(conn, "SELECT hypopg_reset()")
        raise


def _suggest_for_scan(conn, sql, nparams, scan, cost_before, hypo, min_live_rows, queryid) -> IndexSuggestion | None:
    schema, table = scan.get("Schema", "public"), scan["Relation Name"]
    row = conn.execute(_TABLE_SQL, (schema, table), prepare=False).fetchone()
    if row is None or row[1] < min_live_rows:
        return None
    preds = parse_filter(scan["Filter"])
    if not preds:
        return None
    existing = [list(r[0]) for r in conn.execute(_BTREE_INDEXES_SQL, (row[0],), prepare=False)]
    candidates = [c for c in candidate_columns(conn, schema, table, preds, row[1]) if not _covered(c, existing)]
    if not candidates:
        return None
    if not hypo:
        cols = candidates[0]
        return IndexSuggestion(schema, table, cols, index_ddl(schema, table, cols), cost_before, None, False, queryid)
    best: tuple[float, tuple[str, ...]] | None = None
    for cols in candidates:
        cost = _hypothetical_cost(conn, sql, nparams, schema, table, cols)
        # prefer fewer columns unless more columns are clearly cheaper (within 1% counts as a tie)
        if best is None or cost < best[0] * 0.99 or (cost <= best[0] * 1.01 and len(cols) < len(best[1])):
            best = (cost, cols)
    cost_after, cols = best
    if cost_after > cost_before * (1 - MIN_COST_REDUCTION):
        log.debug("no index halves the cost of a scan on %s.%s (best %s: %.1f -> %.1f)",
                  schema, table, cols, cost_before, cost_after)
        return None
    return IndexSuggestion(schema, table, cols, index_ddl(schema, table, cols), cost_before, cost_after, True, queryid)


def suggest_for_statements(conn: psycopg.Connection, statements: Iterable, *, use_hypopg: bool = True,
                           limit: int = 20, min_live_rows: int = 10_000) -> list[IndexSuggestion]:
    """Run suggest_for_query over up to `limit` statements, best first; one suggestion per (table, columns).

    `statements`: SQL strings, (queryid, sql) pairs, or objects with `.query` and `.queryid`
    (queries.StatementStat after statement_texts()). Statements that cannot be planned are skipped (logged at debug).
    """
    best: dict[tuple, IndexSuggestion] = {}
    for item in itertools.islice(statements, limit):
        queryid, sql = _unpack(item)
        if not sql:
            continue
        try:
            found = suggest_for_query(conn, sql, use_hypopg=use_hypopg, min_live_rows=min_live_rows, queryid=queryid)
        except (UnsupportedStatement, psycopg.errors.DatabaseError) as e:
            if isinstance(e, psycopg.errors.QueryCanceled | psycopg.OperationalError):
                raise   # timeouts and lost connections are the caller's business, not a bad statement
            log.debug("skipping statement %s: %s", queryid, str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        for s in found:
            key = (s.schemaname, s.relname, s.columns)
            if key not in best or s.cost_before > best[key].cost_before:
                best[key] = s
    return sorted(best.values(), key=lambda s: -(s.cost_before - (s.cost_after or 0.0)))


def _unpack(item) -> tuple[int | None, str | None]:
    if isinstance(item, str):
        return None, item
    if isinstance(item, tuple):
        return item[0], item[1]
    return getattr(item, "queryid", None), getattr(item, "query", None)
