"""Sloth-compatible SLO recording rules, so Grafana dashboards 14348/14643 work on our output.

Differences from Sloth, on purpose: the period ratio is sum(increase(errors[P])) / sum(increase(total[P]))
(a ratio of sums, exact under uneven traffic) instead of an average of 5m ratios; numbers carry no float noise.
"""
from __future__ import annotations

from sloguard import names, promql
from sloguard.rules.common import error_ratio_expr, selector_matchers, slo_labels
from sloguard.spec import model

BASE_WINDOW = "5m"   # current burn rate, and the shortest ratio Sloth dashboards read


def ratio_windows(spec: model.Spec, slo: model.SLO) -> list[model.Duration]:
    """Every window a ratio is recorded for: 5m, every burn-rate window, and the SLO period, shortest first."""
    seen = {promql.parse_duration(BASE_WINDOW).seconds: promql.parse_duration(BASE_WINDOW), slo.window.seconds: slo.window}
    for tier in (spec.alerting.page, spec.alerting.ticket):
        for w in tier.windows:
            seen[w.long.seconds] = w.long
            seen[w.short.seconds] = w.short
    return [seen[s] for s in sorted(seen)]


def ratio_metric(window: str) -> str:
    return f"{names.SLI_ERROR_RATIO_PREFIX}{window}"


def build_slo_recordings(spec: model.Spec, slo: model.SLO) -> list[dict]:
    labels = slo_labels(spec, slo)
    ident = "{" + selector_matchers({k: labels[k] for k in ("sloth_id", "sloth_service", "sloth_slo")}) + "}"
    on = "on (sloth_id, sloth_slo, sloth_service) group_left"
    rules = [
        {"record": ratio_metric(w.text), "expr": error_ratio_expr(slo, w.text), "labels": {**labels, "sloth_window": w.text}}
        for w in ratio_windows(spec, slo)
    ]
    budget = promql.fmt_number(slo.error_budget)
    days = promql.fmt_number(slo.window.seconds / 86400)
    rules += [
        {"record": "slo:objective:ratio", "expr": f"vector({promql.fmt_number(slo.objective)})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({budget})", "labels": labels},
        {"record": "slo:time_period:days", "expr": f"vector({days})", "labels": labels},
        {"record": "slo:current_burn_rate:ratio",
         "expr": f"{ratio_metric(BASE_WINDOW)}{ident}\n/ {on}\nslo:error_budget:ratio{ident}", "labels": labels},
        {"record": "slo:period_burn_rate:ratio",
         "expr": f"{ratio_metric(slo.window.text)}{ident}\n/ {on}\nslo:error_budget:ratio{ident}", "labels": labels},
        {"record": "slo:period_error_budget_remaining:ratio",
         "expr": f"1 - slo:period_burn_rate:ratio{ident}", "labels": labels},
        {"record": "sloth_slo_info", "expr": "vector(1)",
         "labels": {**labels, "sloth_mode": "cli-gen-prom", "sloth_objective": promql.fmt_number(slo.objective * 100),
                    "sloth_spec": "sloguard/v1", "sloth_version": "sloguard"}},
    ]
    return rules
