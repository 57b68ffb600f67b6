"""EXPLAIN each catalogue query and judge the plan: seq scans on large tables, cost growth vs the baseline."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from sloguard.migration_gate.catalogue import CatalogueQuery, inline_params
from sloguard.migration_gate.errors import GateInputError


@dataclass(frozen=True)
class SeqScan:
    relation: str            # schema-qualified
    rows: int                # reltuples of the table


@dataclass
class QueryVerdict:
    query: CatalogueQuery
    cost: float
    seq_scans: list[SeqScan]            # all seq scans in the plan
    large_seq_scans: list[SeqScan]      # those above the threshold: a failure
    baseline_cost: float | None = None
    cost_regressed: bool = False
    fixes: list = field(default_factory=list)   # IndexSuggestion (pginsight.advisor) or plain DDL strings

    @property
    def failed(self) -> bool:
        return bool(self.large_seq_scans) or self.cost_regressed


def _walk(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from _walk(child)


def explain(conn, sql: str) -> dict:
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql)
        return cur.fetchone()[0][0]["Plan"]


def table_rows(conn, schema: str, relname: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = %s", (schema, relname))
        row = cur.fetchone()
    return max(int(row[0]), 0) if row else 0


def judge(conn, query: CatalogueQuery, min_rows: int) -> QueryVerdict:
    plan = explain(conn, inline_params(query.sql, query.params))
    scans = []
    for node in _walk(plan):
        if node.get("Node Type") == "Seq Scan":
            schema = node.get("Schema", "public")
            scans.append(SeqScan(f"{schema}.{node['Relation Name']}", table_rows(conn, schema, node["Relation Name"])))
    large = [s for s in scans if s.rows >= min_rows]
    return QueryVerdict(query, float(plan["Total Cost"]), scans, large)


# --- baseline: plan costs per scale, so a run at another scale never compares against the wrong numbers ---

def scale_key(scale: float) -> str:
    return f"{scale:g}"


def load_baseline(path: str) -> dict:
    if not os.path.exists(path):
        return {"scales": {}}
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise GateInputError(f"{path}: unreadable baseline ({e}). Fix: regenerate it with --update-baseline") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("scales"), dict):
        raise GateInputError(f"{path}: field `scales` missing. Fix: regenerate it with --update-baseline")
    return doc


def apply_baseline(verdicts: list[QueryVerdict], baseline: dict, scale: float, factor: float) -> None:
    costs = baseline["scales"].get(scale_key(scale), {})
    for v in verdicts:
        before = costs.get(v.query.name)
        if before is not None:
            v.baseline_cost = float(before)
            v.cost_regressed = v.cost > factor * max(v.baseline_cost, 1.0)


def write_baseline(path: str, baseline: dict, verdicts: list[QueryVerdict], scale: float) -> None:
    """Temp file + rename: a crash never leaves a half-written baseline."""
    baseline["scales"][scale_key(scale)] = {v.query.name: round(v.cost, 2) for v in verdicts}
    baseline["note"] = ("EXPLAIN total cost per catalogue query at each --scale; "
                        "update with `make check-migrations ARGS=--update-baseline`")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".baseline-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(baseline, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
