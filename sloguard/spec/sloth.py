"""Sloth `prometheus/v1` spec documents -> sloguard specs, so a Sloth user keeps the recording-rule names
(`slo:sli_error:ratio_rate<w>`, sloth_* labels) and gains the database alerts and dashboards.

What maps: service, labels, slos[].{name, description, objective, labels}, events SLIs whose queries are
`sum(rate(<selector>[{{.window}}]))` (or increase), and the latency form
`sum(rate(<h>_count[...])) - sum(rate(<h>_bucket{le="x"}[...]))` over `sum(rate(<h>_count[...]))`.
What does not (raw and plugin SLIs, plugins, disabled alerts) is an error naming the field. Alert names, labels
and annotations of Sloth's `alerting` block are not used (sloguard names its alerts); the generator says so.
The SLO period is Sloth's default, 30d. Links, burn-rate tiers and the database section come from the defaults.
"""
from __future__ import annotations

import re

from sloguard import promql
from sloguard.spec import model
from sloguard.spec.convert import latency_sli, sum_rate_selector
from sloguard.spec.loader import (
    Defaults,
    Reader,
    check_window,
    labels_field,
    service_name,
    slo_name,
)
from sloguard.spec.yamlnodes import render_path

SLOTH_PERIOD = "30d"   # Sloth's --default-slo-period
WINDOW_RE = re.compile(r"\{\{\s*\.window\s*\}\}")
_PLACEHOLDER = "__sloguard_window__"
_EXAMPLE = 'sum(rate(http_requests_total{job="api",code=~"5.."}[{{.window}}]))'
_UNMAPPABLE = "sloguard needs the error and total counters as selectors"


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _term(text: str) -> promql.Selector | None:
    """sum(rate(<selector>[{{.window}}])) (or increase), optionally in parentheses."""
    return sum_rate_selector(_strip_parens(text), _PLACEHOLDER)


def _difference(text: str) -> tuple[promql.Selector, promql.Selector] | None:
    """`A - B` at the top level of the query, both terms of the sum(rate(...)) form."""
    text = _strip_parens(text)
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(ch, 0)
        if ch == "-" and depth == 0:
            left, right = _term(text[:i]), _term(text[i + 1:])
            return (left, right) if left and right else None
    return None


def _query(r: Reader, value, path: tuple) -> str:
    r.string(value, path, _EXAMPLE)
    if not WINDOW_RE.search(value):
        r.fail(path, "the query has no {{.window}} placeholder (Sloth requires one)",
               f"write the range as [{{{{.window}}}}], e.g. {_EXAMPLE}")
    return WINDOW_RE.sub(_PLACEHOLDER, value)


def _sli(r: Reader, value, path: tuple) -> model.EventsSLI | model.LatencySLI:
    r.mapping(value, path, {"events": "{error_query: ..., total_query: ...}", "raw": "(not supported)",
                            "plugin": "(not supported)"})
    if "raw" in value:
        r.fail(path + ("raw",), f"a raw SLI (error_ratio_query) cannot be mapped: {_UNMAPPABLE}",
               f"rewrite it as events: {{error_query: {_EXAMPLE}, total_query: ...}}")
    if "plugin" in value:
        r.fail(path + ("plugin",), f"SLI plugins cannot be mapped: {_UNMAPPABLE}",
               "rewrite the SLI as events: {error_query, total_query} with sum(rate(<selector>[{{.window}}]))")
    if "events" not in value:
        r.fail(path, "missing the SLI", "write events: {error_query: ..., total_query: ...}")
    p = path + ("events",)
    ev = r.mapping(value["events"], p, {"error_query": _EXAMPLE, "total_query": _EXAMPLE},
                   required=("error_query", "total_query"))
    errors_q = _query(r, ev["error_query"], p + ("error_query",))
    total_q = _query(r, ev["total_query"], p + ("total_query",))
    total = _term(total_q)
    if total is None:
        r.fail(p + ("total_query",), f"only sum(rate(<selector>[{{{{.window}}}}])) can be mapped: {_UNMAPPABLE}",
               "write the total as one sum(rate(...)) of a counter selector, without by/without or arithmetic")
    errors = _term(errors_q)
    if errors is not None:
        if errors.render() == total.render():
            r.fail(p + ("error_query",), "error_query and total_query select the same series",
                   'narrow error_query with a matcher such as code=~"5.."')
        return model.EventsSLI(total=total.render(), errors=errors.render())
    diff = _difference(errors_q)
    if diff is not None:
        return _latency(r, total, *diff, p)
    r.fail(p + ("error_query",), f"only sum(rate(<selector>[{{{{.window}}}}])) or a histogram's "
           f"_count minus its _bucket{{le=...}} can be mapped: {_UNMAPPABLE}",
           f"write e.g. {_EXAMPLE}")


def _latency(r: Reader, total: promql.Selector, count: promql.Selector, bucket: promql.Selector,
             path: tuple) -> model.LatencySLI:
    """error = _count - _bucket{le="x"} over total = _count: the latency SLI on histogram `h` at threshold x."""
    fix = ('write error_query as sum(rate(h_count{...}[{{.window}}])) - sum(rate(h_bucket{...,le="0.5"}'
           '[{{.window}}])) and total_query as sum(rate(h_count{...}[{{.window}}])), same h and matchers')
    path = path + ("error_query",)
    problem = "this difference is not a histogram's requests over the threshold"
    if count.render() != total.render():
        r.fail(path, problem, fix)
    return latency_sli(r, count, bucket, path, problem, fix)


def _alerting(r: Reader, value, path: tuple, notes: list[str]) -> None:
    """Sloth's alert naming and routing are not carried over; disabling alerts cannot be expressed."""
    tier_fields = {"disable": "false", "labels": "{...}", "annotations": "{...}"}
    a = r.mapping(value, path, {"name": "MyServiceHighErrorRate", "labels": "{...}", "annotations": "{...}",
                                "page_alert": "{labels: ...}", "ticket_alert": "{labels: ...}", "disable": "false"})
    blocks = [(path, a)] + [(path + (tier,), r.mapping(a.get(tier) or {}, path + (tier,), tier_fields))
                            for tier in ("page_alert", "ticket_alert")]
    for where, block in blocks:
        if block.get("disable") is True:
            r.fail(where + ("disable",), "sloguard always generates the page and ticket burn-rate alerts; they "
                   "cannot be disabled", "remove disable: true (route the alert to a null receiver in Alertmanager "
                   "instead)")
    unused = [k for k in ("name", "labels", "annotations", "page_alert", "ticket_alert") if a.get(k)]
    if unused:
        notes.append(f"{r.file}: {render_path(path)}: {', '.join(unused)} not used: sloguard names its "
                     "burn-rate alerts <Slo>ErrorBudgetBurn with severity critical (page) and warning (ticket)")


def convert(data, lines: dict, file: str, defaults: Defaults) -> model.Spec:
    """One Sloth prometheus/v1 document -> Spec."""
    r = Reader(file, lines)
    top = r.mapping(data, (), {"version": "prometheus/v1", "service": "myservice", "labels": "{owner: myteam}",
                               "slos": "a list of SLOs", "slo_plugins": "(not supported)"},
                    required=("service", "slos"))
    if top.get("slo_plugins"):
        r.fail(("slo_plugins",), "Sloth SLO plugins cannot be mapped (sloguard generates its own rules)",
               "remove slo_plugins; sloguard already adds the low-traffic guard and database alerts")
    service = service_name(r, top["service"], ("service",))
    labels = {**defaults.labels, **labels_field(r, top.get("labels") or {})}
    slos_value = top["slos"]
    if not isinstance(slos_value, list) or not slos_value:
        r.fail(("slos",), "expected a non-empty list of SLOs", "add at least one SLO")
    window = promql.parse_duration(SLOTH_PERIOD)
    slos, seen, notes = [], {}, []
    for i, item in enumerate(slos_value):
        path = ("slos", i)
        s = r.mapping(item, path, {"name": "requests-availability", "description": "...", "objective": "99.9",
                                   "labels": "{...}", "sli": "{events: {...}}", "alerting": "{name: ...}",
                                   "plugins": "(not supported)"}, required=("name", "objective", "sli"))
        if s.get("plugins"):
            r.fail(path + ("plugins",), "Sloth SLO plugins cannot be mapped", "remove plugins from this SLO")
        name = slo_name(r, s["name"], path + ("name",), seen)
        description = s.get("description") or ""
        if not isinstance(description, str):
            r.fail(path + ("description",), "expected a string", "quote the text")
        objective = r.number(s["objective"], path + ("objective",), "99.9 (a percent)", 0, 100, True, True)
        check_window(r, window, defaults.alerting, path)
        _alerting(r, s.get("alerting") or {}, path + ("alerting",), notes)
        slos.append(model.SLO(name=name, description=description.strip(), objective=round(objective / 100, 12),
                              window=window, sli=_sli(r, s["sli"], path + ("sli",)),
                              labels=labels_field(r, s.get("labels") or {}, path + ("labels",))))
    return model.Spec(service=service, labels=dict(sorted(labels.items())), links=defaults.links,
                      slos=tuple(slos), alerting=defaults.alerting, database=defaults.database, source=file,
                      notes=tuple(notes))
