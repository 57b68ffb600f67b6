"""Missing-index advisor: PgHero's candidate choice, verified the Dexter way with HypoPG.

For a statement (pg_stat_statements-normalised `$1` text, or `%s`/`?` placeholders):
1. plan it generically (planner.Planner: PREPARE + EXPLAIN EXECUTE under force_generic_plan; texts that
   normalization made invalid, e.g. `interval $2`, are re-printed as valid SQL first);
2. for each sequential scan on a table with at least `min_live_rows` rows, gather what an index could serve:
   - its Filter (pglast): equality and range predicates against values, parameters or stable expressions
     (`created_at > now() - interval '1 hour'`);
   - the join keys of the joins above it (Hash Cond, Merge Cond, Join Filter: `i.customer_id = c.id`), so a
     foreign key without an index is examined;
3. order filter columns by selectivity from pg_stats (equality before range, as a btree wants) and take columns
   until fewer than 50 rows remain (PgHero); also each column alone, and each join key (alone, then with the best
   filter column); skip candidates an existing btree already covers (same leading columns);
4. with HypoPG: create each hypothetical index and re-plan, with generic parameters and, when a filtered column is
   skewed (pg_stats most-common values), with its common value and a rare one inlined; a candidate counts for a
   plan only when the planner uses it there and it at least halves the cost. The best generic winner is proposed;
   failing that, the best winner for the rare value (a partial index leaving out the common value when HypoPG
   shows it is used), with the values it wins and loses for. hypopg_reset() always.
Nothing is written: plain EXPLAIN only, inside a READ ONLY transaction when we own the transaction.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from . import blind, planner
from .blind import PERMISSION_DENIED  # noqa: F401 - re-exported: a reason of Advice
from .colstats import DEFAULT_RANGE_SELECTIVITY, Probe, Skew, column_stats, find_skew, selectivity  # noqa: F401
from .planner import STATEMENT_NAME  # noqa: F401 - re-exported
from .queries import first_line
from .sqltext import (  # noqa: F401 - re-exported: the advisor's public API
    NO_USER_TABLE,
    NOT_A_QUERY,
    UNDEFINED_OBJECT,
    UNPLANNABLE_TEXT,
    Predicate,
    UnsupportedStatement,
    join_pairs,
    parse_array_text,
    parse_filter,
    plannable,
    quote_ident,
    quote_literal,
    to_dollar_params,
)

log = logging.getLogger(__name__)

MIN_COST_REDUCTION = 0.5      # Dexter: keep an index only if it halves the plan cost
TARGET_ROWS = 50              # PgHero: add columns until fewer rows than this remain
MAX_INDEX_COLUMNS = 3


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
    kind: str = "filter"         # "filter": serves the scan's Filter; "join": leads with a join key
    detail: str = ""             # e.g. "join key invoices.customer_id = customers.id (foreign key ...)"
    where: str | None = None     # partial index predicate
    wins_for: tuple[str, ...] = ()   # with skewed values: the values (probes) it wins for ...
    not_for: tuple[str, ...] = ()    # ... and those it does not (e.g. the common value); () = all values

    @property
    def cost_reduction(self) -> float | None:
        if self.cost_after is None or self.cost_before <= 0:
            return None
        return 1.0 - self.cost_after / self.cost_before


@dataclass(frozen=True)
class Advice:
    """One statement's outcome: suggestions, or why it could not be examined (`reason`, a small fixed set)."""
    suggestions: list[IndexSuggestion]
    reason: str | None = None    # None: examined; else NOT_A_QUERY, UNPLANNABLE_TEXT, ... (blind.reason_of)
    detail: str = ""             # the first line of the error, for a log (no parameter values: plans have none)
    rewritten: bool = False      # planned after re-printing a normalized text as valid SQL


# --- catalogue ---------------------------------------------------------------------------------------------------

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

# A single-column foreign key on that column, to name it in the advice.
_FOREIGN_KEY_SQL = """
SELECT c.conname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.conrelid = %s AND c.contype = 'f' AND cardinality(c.conkey) = 1 AND a.attname = %s
"""


def candidate_columns(conn: psycopg.Connection, schema: str, table: str, preds: list[Predicate],
                      rows: float, stats: dict | None = None) -> list[tuple[str, ...]]:
    """Index column lists to try, most promising first (PgHero ordering, then single columns)."""
    if stats is None:
        stats = column_stats(conn, schema, table, [p.column for p in preds])
    by_col: dict[str, tuple[str, float]] = {}
    for p in preds:
        sel = selectivity(p, stats.get(p.column), rows)
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


# --- DDL ---------------------------------------------------------------------------------------------------------

def index_name(table: str, columns: tuple[str, ...], where: str | None = None) -> str:
    return "_".join((table, *columns, "partial_idx" if where else "idx"))[:63]


def index_ddl(schema: str, table: str, columns: tuple[str, ...], concurrently: bool = True,
              where: str | None = None) -> str:
    cols = ", ".join(quote_ident(c) for c in columns)
    conc = "CONCURRENTLY " if concurrently else ""
    pred = f" WHERE {where}" if where else ""
    return (f"CREATE INDEX {conc}{quote_ident(index_name(table, columns, where))} "
            f"ON {quote_ident(schema)}.{quote_ident(table)} ({cols}){pred}")


def safe_build_statements(schema: str, table: str, columns: tuple[str, ...], where: str | None = None) -> list[str]:
    """The statements to run (psql, autocommit, on the primary) to build the index and know that it worked.

    - lock_timeout = 0: the build's only table lock (SHARE UPDATE EXCLUSIVE) queues no reads or writes, but a
      lock_timeout also bounds its waits for older writers and snapshots, so any transaction older than the timeout
      cancels the build and leaves an INVALID index (measured on PG15; see the runbook's Missing index section).
      0 also overrides a role or database default.
    - no IF NOT EXISTS: on a re-run it would skip silently over an INVALID index left by a failed build.
    - the DO block fails loudly when the index is INVALID and names the drop-and-retry statement.
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(index_name(table, columns, where))}"
    message = (f"index {qualified} is INVALID (the build failed or was cancelled): "
               f"run DROP INDEX CONCURRENTLY {qualified}; then CREATE INDEX CONCURRENTLY again")
    check = ("DO $sloguard$ BEGIN IF NOT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = "
             f"{quote_literal(qualified)}::regclass), false) THEN RAISE EXCEPTION '%', {quote_literal(message)}; "
             "END IF; END $sloguard$;")
    return ["SET lock_timeout = 0; SET statement_timeout = 0;", index_ddl(schema, table, columns, where=where) + ";",
            check]


def build_statements(s: IndexSuggestion) -> list[str]:
    """safe_build_statements for a suggestion (keeps a partial index's predicate)."""
    return safe_build_statements(s.schemaname, s.relname, tuple(s.columns), s.where)


def hypopg_available(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'", prepare=False).fetchone() is not None


# --- planning ----------------------------------------------------------------------------------------------------

def _generic_plan(conn: psycopg.Connection, sql: str, nparams: int) -> dict:
    """EXPLAIN of the generic plan (parameters are NULL: a generic plan does not look at them)."""
    return planner.Planner(conn, sql, nparams).open()


def _quietly(conn: psycopg.Connection, sql: str) -> None:
    """Clean-up after an error, which must not mask it (runs in its own savepoint or transaction)."""
    with contextlib.suppress(psycopg.Error), conn.transaction():
        conn.execute(sql, prepare=False)


def _hypothetical_cost(conn: psycopg.Connection, sql: str, nparams: int, schema: str, table: str,
                       cols: tuple[str, ...]) -> float:
    planner.create_hypothetical(conn, index_ddl(schema, table, cols, False))
    cost = planner.cost(_generic_plan(conn, sql, nparams))
    planner.reset_hypothetical(conn)
    return cost


@dataclass(frozen=True)
class _Scan:
    """A sequential scan on a large table and what an index on it could serve."""
    schema: str
    table: str
    oid: int
    rows: float
    preds: list[Predicate]
    join_keys: dict[str, str]    # column -> "alias.column of the other side" (first seen)


def _scans(conn, plan: dict, min_live_rows: int) -> list[_Scan]:
    nodes = list(planner.walk(plan["Plan"]))
    relation = {n["Alias"]: n["Relation Name"] for n in nodes if n.get("Alias") and n.get("Relation Name")}
    keys: dict[str, dict[str, str]] = {}   # alias -> {column: the other side, "table.column"}
    for node in nodes:
        # an Index Cond too: a nested loop whose outer side is the big table probes the small one by index
        for field in ("Hash Cond", "Merge Cond", "Join Filter", "Filter", "Index Cond"):
            for (a1, c1), (a2, c2) in join_pairs(node[field]) if node.get(field) else ():
                keys.setdefault(a1, {}).setdefault(c1, f"{relation.get(a2, a2)}.{c2}")
                keys.setdefault(a2, {}).setdefault(c2, f"{relation.get(a1, a1)}.{c1}")
    out, seen = [], set()
    for node in nodes:
        if node.get("Node Type") != "Seq Scan":
            continue
        schema, table = node.get("Schema", "public"), node["Relation Name"]
        preds = parse_filter(node["Filter"]) or [] if node.get("Filter") else []
        joins = keys.get(node.get("Alias", table), {})
        if (not preds and not joins) or (schema, table, node.get("Alias")) in seen:
            continue
        seen.add((schema, table, node.get("Alias")))
        row = conn.execute(_TABLE_SQL, (schema, table), prepare=False).fetchone()
        if row is not None and row[1] >= min_live_rows:
            out.append(_Scan(schema, table, row[0], row[1], preds, joins))
    return out


@dataclass(frozen=True)
class _Candidate:
    columns: tuple[str, ...]
    where: str | None = None


def _candidates(conn, scan: _Scan, stats: dict, skew: Skew | None, existing: list[list[str]]) -> list[_Candidate]:
    cols = candidate_columns(conn, scan.schema, scan.table, scan.preds, scan.rows, stats) if scan.preds else []
    best_eq = next((c[0] for c in cols if c and any(p.column == c[0] and p.kind == "eq" for p in scan.preds)), None)
    for key in scan.join_keys:
        cols += [(key,)] + ([(key, best_eq)] if best_eq and best_eq != key else [])
    found = [_Candidate(c) for c in dict.fromkeys(cols) if not _covered(c, existing)]
    if skew is not None:   # the same indexes without the common value's rows: far smaller, same use for rare values
        where = f"{quote_ident(skew.column)} <> {quote_literal(skew.common_value)}"
        found += [_Candidate(c.columns, where) for c in found if skew.column in c.columns]
    return found


def _wins(before: float, after: float, used: bool) -> bool:
    return used and after <= before * (1 - MIN_COST_REDUCTION)


def suggest_for_query(conn: psycopg.Connection, sql: str, *, use_hypopg: bool = True, min_live_rows: int = 10_000,
                      queryid: int | None = None) -> list[IndexSuggestion]:
    """Indexes that would remove sequential scans on large tables from `sql`'s generic plan.

    With HypoPG (installed in this database and use_hypopg) only verified suggestions (>= 50% cheaper, index used)
    come back; without it, PgHero-style unverified candidates from filters with cost_after=None. Raises
    UnsupportedStatement (with `.reason`) for anything but one SELECT/UPDATE/DELETE on user tables this session can
    plan, psycopg errors for the rest (no privilege, timeouts, a lost connection).
    """
    sql, nparams = plannable(sql)
    return _examine(conn, sql, nparams, use_hypopg, min_live_rows, queryid)[0]


def _examine(conn, sql, nparams, use_hypopg, min_live_rows, queryid) -> tuple[list[IndexSuggestion], bool]:
    own_txn = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    hypo = False
    try:
        with conn.transaction():
            if own_txn:
                conn.execute("SET TRANSACTION READ ONLY", prepare=False)
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan", prepare=False)
            hypo = use_hypopg and hypopg_available(conn)
            plans = planner.Planner(conn, sql, nparams)
            plan = plans.open()
            suggestions: list[IndexSuggestion] = []
            for scan in _scans(conn, plan, min_live_rows):
                found = _suggest_for_scan(conn, plans, plan, scan, hypo, queryid)
                if found and all((found.relname, found.columns, found.where) != (s.relname, s.columns, s.where)
                                 for s in suggestions):
                    suggestions.append(found)
            return suggestions, plans.rewritten
    except BaseException:
        # Neither PREPARE nor HypoPG's backend-local indexes are undone by a rollback: sweep them after an error.
        _quietly(conn, f"DEALLOCATE {STATEMENT_NAME}")
        if hypo:
            _quietly(conn, "SELECT hypopg_reset()")
        raise


def _describe_join(conn, scan: _Scan, column: str) -> str:
    fk = conn.execute(_FOREIGN_KEY_SQL, (scan.oid, column), prepare=False).fetchone()
    return (f"join key {scan.table}.{column} = {scan.join_keys[column]}"
            + (f" (foreign key {fk[0]}, no index)" if fk else " (no index)"))


def _suggestion(conn, scan, cand: _Candidate, before, after, verified, queryid, wins=(), loses=()):
    join = cand.columns[0] in scan.join_keys and not any(p.column == cand.columns[0] for p in scan.preds)
    return IndexSuggestion(scan.schema, scan.table, cand.columns,
                           index_ddl(scan.schema, scan.table, cand.columns, where=cand.where), before, after, verified,
                           queryid, "join" if join else "filter",
                           _describe_join(conn, scan, cand.columns[0]) if join else "", cand.where,
                           tuple(wins), tuple(loses))


def _suggest_for_scan(conn, plans: planner.Planner, plan: dict, scan: _Scan, hypo: bool,
                      queryid) -> IndexSuggestion | None:
    stats = column_stats(conn, scan.schema, scan.table, [p.column for p in scan.preds])
    cost_before = planner.cost(plan)
    skew = find_skew(scan.preds, stats, scan.rows) if hypo else None
    probes: list[Probe | None] = [None] + ([skew.common, skew.rare] if skew else [])   # None: generic
    try:
        base = [cost_before] + [planner.cost(plans.plan(p.values)) for p in probes[1:]]
    except (psycopg.DataError, psycopg.ProgrammingError) as e:   # a pg_stats value that is no valid literal here
        log.debug("generic plans only for %s.%s: %s", scan.schema, scan.table, str(e).strip().splitlines()[:1])
        _quietly(conn, f"DEALLOCATE {STATEMENT_NAME}")
        skew, probes, base = None, [None], [cost_before]
    existing = [list(r[0]) for r in conn.execute(_BTREE_INDEXES_SQL, (scan.oid,), prepare=False)]
    candidates = _candidates(conn, scan, stats, skew, existing)
    if not hypo:   # unverified: filters only (a join key needs HypoPG to tell whether a nested loop would win)
        filters = [c for c in candidates if c.where is None and any(p.column == c.columns[0] for p in scan.preds)]
        return _suggestion(conn, scan, filters[0], cost_before, None, False, queryid) if filters else None
    results = []   # (candidate, [(cost, used) per probe])
    for cand in candidates:
        name = planner.create_hypothetical(conn, index_ddl(scan.schema, scan.table, cand.columns, False, cand.where))
        try:
            per_probe = []
            for p in probes:
                pl = plans.plan(p.values if p else None, savepoint=False)
                per_probe.append((planner.cost(pl), planner.uses_index(pl, name)))
        finally:
            planner.reset_hypothetical(conn)
        results.append((cand, per_probe))
        log.debug("%s.%s %s%s: %s", scan.schema, scan.table, cand.columns, f" WHERE {cand.where}" if cand.where else "",
                  [(round(c, 2), u) for c, u in per_probe])

    def labels(per_probe, winning: bool) -> list[str]:
        return [p.label for p, b, (c, u) in zip(probes[1:], base[1:], per_probe[1:], strict=True)
                if _wins(b, c, u) == winning]

    generic = [(per[0][0], cand, per) for cand, per in results if _wins(base[0], *per[0])]
    if generic:   # cheapest; within 1% counts as a tie: fewer columns, then no predicate
        low = min(c for c, _, _ in generic)
        cost, cand, per = min((g for g in generic if g[0] <= low * 1.01),
                              key=lambda g: (len(g[1].columns), g[1].where is not None, g[0]))
        return _suggestion(conn, scan, cand, base[0], cost, True, queryid, labels(per, True), labels(per, False))
    if skew is not None:
        rare = [(per[2][0], cand, per) for cand, per in results if _wins(base[2], *per[2])]
        if rare:   # the smallest index that wins for the rare value: a partial one when it is used
            low = min(c for c, _, _ in rare)
            cost, cand, per = min((r for r in rare if r[0] <= low * 1.01),
                                  key=lambda r: (r[1].where is None, len(r[1].columns), r[0]))
            return _suggestion(conn, scan, cand, base[2], cost, True, queryid, labels(per, True),
                               ["any value (generic plan)"] + labels(per, False))
    log.debug("no index halves the cost of a scan on %s.%s", scan.schema, scan.table)
    return None


# --- many statements ---------------------------------------------------------------------------------------------

def advise(conn: psycopg.Connection, sql: str, *, use_hypopg: bool = True, min_live_rows: int = 10_000,
           queryid: int | None = None) -> Advice:
    """suggest_for_query that returns why a statement was not examined instead of raising for it.

    Timeouts, lock timeouts and lost connections still raise: they are about this moment, not this statement.
    """
    try:
        sql, nparams = plannable(sql)
        found, rewritten = _examine(conn, sql, nparams, use_hypopg, min_live_rows, queryid)
        return Advice(found, rewritten=rewritten)
    except (psycopg.errors.QueryCanceled, psycopg.OperationalError):
        raise
    except (UnsupportedStatement, psycopg.errors.DatabaseError) as e:
        return Advice([], blind.reason_of(e), first_line(e))


def advise_statements(conn: psycopg.Connection, statements: Iterable, *, use_hypopg: bool = True,
                      limit: int = 20, min_live_rows: int = 10_000
                      ) -> tuple[list[IndexSuggestion], list[tuple[int | None, Advice]]]:
    """advise() over up to `limit` statements: (suggestions best first, one per index; the statements not examined
    as (queryid, Advice with its reason)).

    `statements`: SQL strings, (queryid, sql) pairs, or objects with `.query` and `.queryid`
    (queries.StatementStat after statement_texts()).
    """
    best: dict[tuple, IndexSuggestion] = {}
    blind: list[tuple[int | None, Advice]] = []
    for item in itertools.islice(statements, limit):
        queryid, sql = _unpack(item)
        if not sql:
            continue
        advice = advise(conn, sql, use_hypopg=use_hypopg, min_live_rows=min_live_rows, queryid=queryid)
        if advice.reason:
            log.debug("not examined: statement %s: %s (%s)", queryid, advice.reason, advice.detail)
            blind.append((queryid, advice))
        for s in advice.suggestions:
            key = (s.schemaname, s.relname, s.columns, s.where)
            if key not in best or s.cost_before > best[key].cost_before:
                best[key] = s
    return sorted(best.values(), key=lambda s: -(s.cost_before - (s.cost_after or 0.0))), blind


def suggest_for_statements(conn: psycopg.Connection, statements: Iterable, *, use_hypopg: bool = True,
                           limit: int = 20, min_live_rows: int = 10_000) -> list[IndexSuggestion]:
    """advise_statements' suggestions only (statements not examined are logged at debug)."""
    return advise_statements(conn, statements, use_hypopg=use_hypopg, limit=limit, min_live_rows=min_live_rows)[0]


def _unpack(item) -> tuple[int | None, str | None]:
    if isinstance(item, str):
        return None, item
    if isinstance(item, tuple):
        return item[0], item[1]
    return getattr(item, "queryid", None), getattr(item, "query", None)
