"""Read PromQL back out of generated dashboard JSON, runnable against a real Prometheus.

Used by the lint and dangling-metric tests and by the end-to-end test that runs every panel on live data.
"""
from __future__ import annotations

import re

# Grafana variables our panels use, and what to put in their place when running outside Grafana. $__rate_interval
# is at least 4 scrape intervals in Grafana; 1m suits the default 15 s scrape.
DEFAULT_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace $var and ${var}; an unknown variable is an error, so a panel can't hide an unresolved one."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"PromQL uses Grafana variable ${name}, which has no value to substitute: {expr}")
        return values[name]
    return _VARIABLE.sub(replace, expr)


_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def variable_values(dashboard_json: dict) -> dict[str, str]:
    """{name: text} of the dashboard's own variables at their saved selection, as Grafana interpolates them
    into a Prometheus query: "All" becomes the variable's allValue, several values one `a|b` regex."""
    out = {}
    for var in dashboard_json.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue
        value = var.get("current", {}).get("value", var.get("query", ""))
        values = value if isinstance(value, list) else [value]
        if "$__all" in values:
            out[var["name"]] = var.get("allValue") or ".+"
        else:
            out[var["name"]] = "|".join(_REGEX_SPECIAL.sub(r"\\\1", v) for v in values) if len(values) > 1 \
                else values[0]
    return out


def iter_panels(dashboard_json: dict):
    """Every panel, rows' nested panels included, in document order."""
    for panel in dashboard_json.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def panel_queries(dashboard_json: dict, rate_interval: str = "1m",
                  variables: dict[str, str] | None = None) -> list[tuple[str, int, str, str]]:
    """[(dashboard_uid, panel_id, title, expr)] for every target of every non-row panel, variables substituted
    (the dashboard's own saved selection unless `variables` says otherwise)."""
    values = {**variable_values(dashboard_json), "__rate_interval": rate_interval, **(variables or {})}
    uid = dashboard_json.get("uid", "")
    return [
        (uid, panel["id"], panel.get("title", ""), substitute(target["expr"], values))
        for panel in iter_panels(dashboard_json) if panel.get("type") != "row"
        for target in panel.get("targets", []) if target.get("expr")
    ]


def annotation_queries(dashboard_json: dict, rate_interval: str = "1m",
                       variables: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """[(dashboard_uid, annotation name, expr)] for the Prometheus annotations (migrations, alerts)."""
    values = {**variable_values(dashboard_json), "__rate_interval": rate_interval, **(variables or {})}
    uid = dashboard_json.get("uid", "")
    return [(uid, a["name"], substitute(a["expr"], values))
            for a in dashboard_json.get("annotations", {}).get("list", []) if a.get("expr")]
