"""queries/*.sql: the application's critical queries, one per file, with a name and sample parameters.

File format (header comments, then one statement with $1..$n placeholders):
    -- name: login_by_email
    -- description: Login hot path.
    -- params: ["user4242@example.com"]
    SELECT * FROM users WHERE email = $1 AND status = 'active';
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass

from sloguard.migration_gate.errors import GateInputError

_HEADER = re.compile(r"^--\s*(name|description|params)\s*:\s*(.*)$")
_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class CatalogueQuery:
    name: str
    sql: str                 # without the trailing semicolon
    params: tuple
    description: str
    path: str


def parse_query_file(path: str) -> CatalogueQuery:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    headers: dict[str, str] = {}
    body: list[str] = []
    for line in text.splitlines():
        m = _HEADER.match(line.strip())
        if m:
            headers[m.group(1)] = m.group(2).strip()
        elif not line.strip().startswith("--"):
            body.append(line)
    sql = "\n".join(body).strip().rstrip(";").strip()
    if not headers.get("name"):
        raise GateInputError(f"{path}: header `-- name:` is missing. Fix: add `-- name: my_query` as the first line")
    if not sql:
        raise GateInputError(f"{path}: no SQL statement after the headers. Fix: add the query")
    if ";" in sql:
        raise GateInputError(f"{path}: more than one statement. Fix: one query per file")
    try:
        params = json.loads(headers.get("params", "[]"))
    except json.JSONDecodeError as e:
        raise GateInputError(f"{path}: `-- params:` is not a JSON list ({e}). Fix: e.g. `-- params: [42, \"a\"]`") from e
    if not isinstance(params, list):
        raise GateInputError(f"{path}: `-- params:` must be a JSON list. Fix: e.g. `-- params: [42]`")
    wanted = max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)
    if wanted != len(params):
        raise GateInputError(f"{path}: the query uses ${wanted} placeholders but `-- params:` has {len(params)} "
                             f"values. Fix: give one sample value per placeholder")
    return CatalogueQuery(headers["name"], sql, tuple(params), headers.get("description", ""), path)


def load_catalogue(directory: str) -> list[CatalogueQuery]:
    paths = sorted(glob.glob(os.path.join(directory, "*.sql")))
    if not paths:
        raise GateInputError(f"{directory}: no *.sql query files. Fix: add the critical queries (see queries/README)")
    queries = [parse_query_file(p) for p in paths]
    seen: dict[str, str] = {}
    for q in queries:
        if q.name in seen:
            raise GateInputError(f"{q.path}: name {q.name!r} is also used by {seen[q.name]}. Fix: rename one")
        seen[q.name] = q.path
    return queries


def inline_params(sql: str, params: tuple) -> str:
    """Replace $n by SQL literals, for EXPLAIN of a custom plan (what the server plans for real values)."""
    def literal(value) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | float):
            return repr(value)
        return "'" + str(value).replace("'", "''") + "'"
    return _PLACEHOLDER.sub(lambda m: literal(params[int(m.group(1)) - 1]), sql)
