"""migrations/seed.yaml -> deterministic INSERT ... SELECT generate_series statements, scaled by --scale."""
from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from sloguard.migration_gate.errors import GateInputError


@dataclass(frozen=True)
class GateSettings:
    seq_scan_min_rows: int      # at scale 1
    cost_growth_factor: float


@dataclass(frozen=True)
class TableSeed:
    name: str
    rows: int                   # at scale 1
    columns: dict[str, dict]


@dataclass(frozen=True)
class SeedPlan:
    path: str
    scale: float
    gate: GateSettings
    tables: tuple[TableSeed, ...]

    def rows(self, table: str, scale: float) -> int:
        for t in self.tables:
            if t.name == table:
                return max(1, math.ceil(t.rows * scale))
        raise KeyError(table)


GENERATORS = ("sequence", "choices", "integers", "timestamps", "references")


def _fail(path: str, field: str, problem: str, fix: str) -> GateInputError:
    return GateInputError(f"{path}: {field}: {problem}. Fix: {fix}")


def load_seed_plan(path: str) -> SeedPlan:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise GateInputError(f"{path}: cannot read ({e.strerror}). Fix: pass --seed PATH to an existing file") from e
    except yaml.YAMLError as e:
        raise GateInputError(f"{path}: not valid YAML ({e}). Fix: correct the syntax") from e
    if not isinstance(doc, dict):
        raise _fail(path, "(top level)", "expected a mapping", "write `scale:`, `gate:` and `tables:` keys")
    scale = doc.get("scale", 1.0)
    if not isinstance(scale, int | float) or scale <= 0:
        raise _fail(path, "scale", f"{scale!r} is not a positive number", "write e.g. `scale: 0.08`")
    gate = doc.get("gate") or {}
    try:
        settings = GateSettings(int(gate.get("seq_scan_min_rows", 100_000)),
                                float(gate.get("cost_growth_factor", 2.0)))
    except (TypeError, ValueError) as e:
        raise _fail(path, "gate", str(e), "seq_scan_min_rows is an integer, cost_growth_factor a number") from e
    if settings.cost_growth_factor <= 1:
        raise _fail(path, "gate.cost_growth_factor", "must be > 1", "write e.g. 2.0")
    tables_doc = doc.get("tables")
    if not isinstance(tables_doc, dict) or not tables_doc:
        raise _fail(path, "tables", "missing or empty", "declare at least one table with `rows:` and `columns:`")
    tables = []
    for name, spec in tables_doc.items():
        field = f"tables.{name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("rows"), int) or spec["rows"] < 1:
            raise _fail(path, f"{field}.rows", "missing or not a positive integer", "write e.g. `rows: 2500000`")
        columns = spec.get("columns") or {}
        for col, gen in columns.items():
            if not isinstance(gen, dict) or len(gen) != 1 or next(iter(gen)) not in GENERATORS:
                raise _fail(path, f"{field}.columns.{col}", f"unknown generator {gen!r}",
                            f"use exactly one of {', '.join(GENERATORS)}")
        tables.append(TableSeed(name, spec["rows"], dict(columns)))
    plan = SeedPlan(path, float(scale), settings, tuple(tables))
    for t in plan.tables:   # check references and shares now, not halfway through seeding
        for col, gen in t.columns.items():
            _column_expr(plan, t, col, gen, 1.0)
    return plan


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _column_expr(plan: SeedPlan, table: TableSeed, col: str, gen: dict, scale: float) -> str:
    kind, arg = next(iter(gen.items()))
    field = f"tables.{table.name}.columns.{col}.{kind}"
    n_rows = plan.rows(table.name, scale)
    if kind == "sequence":
        if "{n}" not in str(arg):
            raise _fail(plan.path, field, "pattern has no {n}", 'write e.g. "user{n}@example.com"')
        before, _, after = str(arg).partition("{n}")
        return f"{_lit(before)} || g || {_lit(after)}"
    if kind == "choices":
        if not isinstance(arg, dict) or abs(sum(arg.values()) - 1.0) > 1e-6:
            raise _fail(plan.path, field, "shares must sum to 1", "e.g. {active: 0.8, inactive: 0.2}")
        cases, upper = [], 0.0
        for value, share in arg.items():
            upper += share * 100
            cases.append(f"WHEN g % 100 < {round(upper)} THEN {_lit(value)}")
        return "CASE " + " ".join(cases[:-1]) + f" ELSE {_lit(list(arg)[-1])} END"
    if kind == "integers":
        lo, hi = arg
        return f"{int(lo)} + (g * 37) % {int(hi) - int(lo)}"
    if kind == "timestamps":
        start, end = arg
        return (f"timestamptz {_lit(start)} + ((g % {n_rows})::float8 / {n_rows}) "
                f"* (timestamptz {_lit(end)} - timestamptz {_lit(start)})")
    if kind == "references":
        ref_table, _, _ref_col = str(arg).partition(".")
        if ref_table not in {t.name for t in plan.tables}:
            raise _fail(plan.path, field, f"table {ref_table!r} is not declared", "declare it under tables:")
        return f"((g - 1) % {plan.rows(ref_table, scale)}) + 1"
    raise AssertionError(kind)


def seed_statements(plan: SeedPlan, scale: float) -> list[str]:
    """One INSERT per table (declared order) then ANALYZE; ids come from the identity columns (1..rows)."""
    out = []
    for t in plan.tables:
        cols = list(t.columns)
        exprs = [_column_expr(plan, t, c, t.columns[c], scale) for c in cols]
        out.append(f"INSERT INTO {t.name} ({', '.join(cols)}) SELECT {', '.join(exprs)} "
                   f"FROM generate_series(1, {plan.rows(t.name, scale)}) AS g")
    out.append("ANALYZE")
    return out
