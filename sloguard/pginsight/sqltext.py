"""SQL text for the advisor: placeholders, what can be planned, and EXPLAIN Filter strings, all parsed with pglast."""
from __future__ import annotations

import re
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, CoercionForm
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import Visitor

_PLANNABLE = (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)
_EQ_OPS = {"="}
_RANGE_OPS = {"<", ">", "<=", ">=", "~~", "~~*"}   # ~~ is LIKE as EXPLAIN prints it


# Why a statement was not examined (the `reason` of UnsupportedStatement and advisor.Advice): a small fixed set,
# so a metric can count blind statements by reason.
NOT_A_QUERY = "not_a_query"              # DDL, several statements, INSERT ...: nothing an index would change
NO_USER_TABLE = "no_user_table"          # reads catalogue views only (monitoring queries)
UNPLANNABLE_TEXT = "unplannable_text"    # the text cannot be planned, even rewritten (e.g. `$1 + $2`: unknown types)
UNDEFINED_OBJECT = "undefined_object"    # a table/column/function this session cannot see (dropped, temporary)


def quote_ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class UnsupportedStatement(ValueError):
    """Not a single SELECT/UPDATE/DELETE on user tables that this session can plan: nothing to advise."""

    def __init__(self, message: str, reason: str = NOT_A_QUERY):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Predicate:
    column: str
    kind: str                    # "eq" (=, IN) or "range" (<, >, LIKE ...)
    literal: str | None          # constant compared with, when the filter has one
    in_list_size: int = 1
    param: int | None = None     # n of `column = $n` (generic plans print parameters as $n)


# --- SQL text ----------------------------------------------------------------------------------------------------

def to_dollar_params(sql: str) -> str:
    """Turn psycopg `%s` and JDBC `?` placeholders (outside quotes) into $1, $2... ; `$n` text is left alone."""
    if re.search(r"\$\d", sql):
        return sql
    out, n, i, quote = [], 0, 0, None
    while i < len(sql):
        ch = sql[i]
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif sql.startswith("%s", i) or (ch == "?" and _standalone_question_mark(sql, i)):
            n += 1
            out.append(f"${n}")
            i += 2 if ch == "%" else 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _standalone_question_mark(sql: str, i: int) -> bool:
    # jsonb has ?, ?| and ?& operators; a placeholder follows an operator/comma/paren, not an operand
    before = sql[:i].rstrip()
    after = sql[i + 1:i + 2]
    return bool(before) and before[-1] in "=<>(,"  and after not in ("|", "&")


class _ParamsAndTables(Visitor):
    def __init__(self):
        super().__init__()
        self.max_param = 0
        self.relations: list[ast.RangeVar] = []

    def visit_ParamRef(self, ancestors, node):
        self.max_param = max(self.max_param, node.number)

    def visit_RangeVar(self, ancestors, node):
        self.relations.append(node)


def _is_catalogue(rel: ast.RangeVar) -> bool:
    return rel.schemaname in ("pg_catalog", "information_schema") or (
        rel.schemaname is None and rel.relname.startswith("pg_"))


def plannable(sql: str) -> tuple[str, int]:
    """(SQL with $n parameters, number of parameters); UnsupportedStatement when there is nothing to plan."""
    sql = to_dollar_params(sql.strip().rstrip(";"))
    try:
        stmts = parse_sql(sql)
    except ParseError as e:
        raise UnsupportedStatement(f"cannot parse statement: {e}", UNPLANNABLE_TEXT) from e
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, _PLANNABLE):
        raise UnsupportedStatement("only a single SELECT, UPDATE or DELETE can be planned")
    found = _ParamsAndTables()
    found(stmts[0])
    if not found.relations or all(_is_catalogue(r) for r in found.relations):
        # e.g. a monitoring query: nothing to index
        raise UnsupportedStatement("reads no user table", NO_USER_TABLE)
    return sql, found.max_param


class _SqlSyntaxExtract(Visitor):
    """EXTRACT($1 FROM x) -> pg_catalog.extract($1::text, x): the same function, in a form PostgreSQL accepts."""

    def visit_FuncCall(self, ancestors, node):
        if (node.funcformat == CoercionForm.COERCE_SQL_SYNTAX and node.funcname[-1].sval == "extract"
                and node.args and isinstance(node.args[0], ast.ParamRef)):
            text = ast.TypeName(names=(ast.String(sval="text"),), typemod=-1)
            node.args = (ast.TypeCast(arg=node.args[0], typeName=text), *node.args[1:])
            node.funcformat = CoercionForm.COERCE_EXPLICIT_CALL


def normalized_to_sql(sql: str) -> str:
    """pg_stat_statements text -> SQL PostgreSQL can PREPARE, with the same parameters.

    Normalization replaces the literal of a typed constant (`interval '5 min'`, `timestamp '...'`) or EXTRACT's
    field by `$n`, which PostgreSQL's grammar rejects; pglast (libpg_query) accepts those forms, so its
    re-printed tree is valid SQL: `CAST($2 AS interval)`, `pg_catalog.extract(CAST($1 AS text), x)`.
    """
    try:
        tree = parse_sql(sql)
    except ParseError as e:
        raise UnsupportedStatement(f"cannot parse statement: {e}", UNPLANNABLE_TEXT) from e
    _SqlSyntaxExtract()(tree)
    try:
        return RawStream()(tree)
    except Exception as e:   # pglast cannot print every node: then the text stays unplannable
        raise UnsupportedStatement(f"cannot re-print statement: {e}", UNPLANNABLE_TEXT) from e


def inline_values(sql: str, values: dict[int, str]) -> str:
    """Replace parameters $n by quoted literals (untyped, so they take the parameter's type from context)."""
    if not values:
        return sql
    found = []

    class _Params(Visitor):
        def visit_ParamRef(self, ancestors, node):
            if node.number in values:
                found.append((node.location, node.number))

    _Params()(parse_sql(sql))
    for loc, n in sorted(found, reverse=True):   # pglast locations are character offsets into `sql`
        token = f"${n}"
        if sql[loc:loc + len(token)] != token:
            raise UnsupportedStatement(f"parameter ${n} not found where the parser put it", UNPLANNABLE_TEXT)
        sql = sql[:loc] + quote_literal(values[n]) + sql[loc + len(token):]
    return sql


# --- filters -----------------------------------------------------------------------------------------------------

def parse_filter(expr: str) -> list[Predicate] | None:
    """Top-level AND-ed column predicates of an EXPLAIN Filter string; None when it is not a plain AND of them."""
    try:
        where = parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt.whereClause
    except ParseError:
        return None   # e.g. "(hashed SubPlan 1)"
    preds: list[Predicate] = []
    for conjunct in _flatten_and(where):
        p = _predicate(conjunct)
        if p is not None:
            preds.append(p)
    return preds


def _flatten_and(node) -> list:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return [leaf for arg in node.args for leaf in _flatten_and(arg)]
    return [node]


def _column(node) -> str | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    return None


def _literal(node) -> str | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and not node.isnull:
        val = node.val
        for attr in ("sval", "ival", "fval", "boolval"):
            if hasattr(val, attr):
                return str(getattr(val, attr))
    return None


class _ColumnsOrSubqueries(Visitor):
    def __init__(self):
        super().__init__()
        self.found = False

    def visit_ColumnRef(self, ancestors, node):
        self.found = True

    def visit_SubLink(self, ancestors, node):
        self.found = True


def _is_value(node) -> bool:
    """A constant, a parameter, or an expression without columns or subqueries (`now() - interval '1 day'`,
    CURRENT_DATE): one value per execution when it is stable, so `column > value` can lead a btree scan. A volatile
    one (random(), clock_timestamp()) cannot; HypoPG then shows the index unused and the candidate is dropped."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const | ast.ParamRef | ast.SQLValueFunction):
        return True
    if not isinstance(node, ast.FuncCall | ast.A_Expr):
        return False
    found = _ColumnsOrSubqueries()
    found(node)
    return not found.found


def _param(node) -> int | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.number if isinstance(node, ast.ParamRef) else None


def _predicate(node) -> Predicate | None:
    if isinstance(node, ast.NullTest):
        col = _column(node.arg)
        return Predicate(col, "eq", None) if col else None
    if not isinstance(node, ast.A_Expr) or not node.name:
        return None
    op = node.name[-1].sval
    if node.kind == A_Expr_Kind.AEXPR_IN or (node.kind == A_Expr_Kind.AEXPR_OP_ANY and op == "="):
        col = _column(node.lexpr)
        size = len(node.rexpr) if isinstance(node.rexpr, tuple | list) else 10
        return Predicate(col, "eq", None, size) if col else None
    if node.kind == A_Expr_Kind.AEXPR_BETWEEN:
        col = _column(node.lexpr)
        return Predicate(col, "range", None) if col else None
    if node.kind != A_Expr_Kind.AEXPR_OP or (op not in _EQ_OPS and op not in _RANGE_OPS):
        return None
    left, right = node.lexpr, node.rexpr
    col = _column(left) if _is_value(right) else _column(right) if _is_value(left) else None
    if col is None:
        return None
    kind = "eq" if op in _EQ_OPS else "range"
    if op in ("~~", "~~*"):
        lit = _literal(right)
        if lit is not None and lit.startswith(("%", "_")):
            return None   # a leading wildcard cannot use a btree
    value = right if _column(left) else left
    return Predicate(col, kind, _literal(value), param=_param(value))


# --- join conditions ---------------------------------------------------------------------------------------------

def join_pairs(expr: str) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """((alias, column), (alias, column)) of each top-level `a.x = b.y` in a Hash/Merge Cond, Join Filter or Filter
    (EXPLAIN VERBOSE qualifies every column with its range-table alias)."""
    try:
        where = parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt.whereClause
    except ParseError:
        return []
    pairs = []
    for node in _flatten_and(where):
        if not (isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP and node.name[-1].sval == "="):
            continue
        sides = [_qualified_column(node.lexpr), _qualified_column(node.rexpr)]
        if sides[0] and sides[1] and sides[0][0] != sides[1][0]:
            pairs.append((sides[0], sides[1]))
    return pairs


def _qualified_column(node) -> tuple[str, str] | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.ColumnRef) and len(node.fields) >= 2 and all(isinstance(f, ast.String)
                                                                          for f in node.fields[-2:]):
        return node.fields[-2].sval, node.fields[-1].sval
    return None



def parse_array_text(text: str | None) -> list[str]:
    """Elements of a one-dimensional array literal ('{a,"b c"}'); [] for NULL or nested arrays.

    pg_stats.most_common_vals is anyarray: casting it to text[] in SQL fails for array-typed columns.
    """
    if not text or not text.startswith("{") or text.startswith("{{"):
        return []
    out, cur, i, quoted, body = [], [], 0, False, text[1:-1]
    while i < len(body):
        ch = body[i]
        if quoted:
            if ch == "\\" and i + 1 < len(body):
                i += 1
                cur.append(body[i])
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out
