"""Sloth-compatible SLO recording rules, so Grafana dashboards 14348/14643 work on our output.

Differences from Sloth, on purpose: the period ratio is a ratio of sums, sum of errors over the period / sum of
requests over the period (exact under uneven traffic), instead of an average of 5m ratios; numbers carry no float
noise. The sums come from recorded 5m increases in a group evaluated every 5m (`build_period_recordings`), not from
`increase(x[30d])` over raw samples every evaluation: that read 30 days of every raw series each time and is what
makes Prometheus hit query.max-samples at fleet scale (issue 10; `make bench` prints the samples each way reads).
"""
from __future__ import annotations

from sloguard import names, promql
from sloguard.rules.common import (
    error_ratio_expr,
    latency_total,
    slo_ident,
    slo_labels,
    threshold_bucket,
    total_selector,
)
from sloguard.spec import model

BASE_WINDOW = "5m"   # current burn rate, and the shortest ratio Sloth dashboards read
# The period group's interval and the increase it records are the same 5m, and the sums read the recorded series
# through a subquery at that step ([30d:5m]): one recorded increase per aligned 5m step, so the increases tile the
# period whether the group runs every 5m (production) or every minute (promtool unit tests run every group at the
# test's own interval; a plain sum_over_time would then count each minute up to 5 times, the recent ones less).
PERIOD_STEP = "5m"


def ratio_windows(spec: model.Spec, slo: model.SLO) -> list[model.Duration]:
    """Every rate window a ratio is recorded for: 5m and every burn-rate window, shortest first (not the period)."""
    seen = {promql.parse_duration(BASE_WINDOW).seconds: promql.parse_duration(BASE_WINDOW)}
    for tier in (spec.alerting.page, spec.alerting.ticket):
        for w in tier.windows:
            seen[w.long.seconds] = w.long
            seen[w.short.seconds] = w.short
    return [seen[s] for s in sorted(seen) if s < slo.window.seconds]


def ratio_metric(window: str) -> str:
    return f"{names.SLI_ERROR_RATIO_PREFIX}{window}"


def build_slo_recordings(spec: model.Spec, slo: model.SLO) -> list[dict]:
    """Rate-window ratios and the constant meta series, evaluated at the global interval."""
    labels = slo_labels(spec, slo)
    ident = slo_ident(spec, slo)
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
        {"record": "sloth_slo_info", "expr": "vector(1)",
         "labels": {**labels, "sloth_mode": "cli-gen-prom", "sloth_objective": promql.fmt_number(slo.objective * 100),
                    "sloth_spec": "sloguard/v1", "sloth_version": "sloguard"}},
    ]
    return rules


def period_increases(slo: model.SLO) -> tuple[str, str]:
    """(requests, errors) over the last PERIOD_STEP, label-free sums."""
    step = PERIOD_STEP
    if isinstance(slo.sli, model.EventsSLI):
        return (f"sum(increase({total_selector(slo)}[{step}]))",
                f"sum(increase({slo.sli.errors}[{step}])) or vector(0)")
    requests = latency_total(slo, "increase", step)
    return requests, f"{requests}\n-\nsum(increase({threshold_bucket(slo)}[{step}]))"


def build_period_recordings(spec: model.Spec, slo: model.SLO) -> list[dict]:
    """The period ratio and what derives from it, for the slow group (interval PERIOD_STEP).

    Each evaluation reads PERIOD_STEP of raw samples plus period / PERIOD_STEP recorded samples per SLO (8,640 for
    30d) instead of the whole period of every raw series.
    """
    labels = slo_labels(spec, slo)
    ident = slo_ident(spec, slo)
    on = "on (sloth_id, sloth_slo, sloth_service) group_left"
    period = slo.window.text
    requests, errors = period_increases(slo)
    return [
        {"record": names.SLO_REQUESTS_INCREASE, "expr": requests, "labels": labels},
        {"record": names.SLO_ERRORS_INCREASE, "expr": errors, "labels": labels},
        {"record": ratio_metric(period),
         "expr": (f"sum_over_time({names.SLO_ERRORS_INCREASE}{ident}[{period}:{PERIOD_STEP}])\n/\n"
                  f"sum_over_time({names.SLO_REQUESTS_INCREASE}{ident}[{period}:{PERIOD_STEP}])"),
         "labels": {**labels, "sloth_window": period}},
        {"record": "slo:period_burn_rate:ratio",
         "expr": f"{ratio_metric(period)}{ident}\n/ {on}\nslo:error_budget:ratio{ident}", "labels": labels},
        {"record": "slo:period_error_budget_remaining:ratio",
         "expr": f"1 - slo:period_burn_rate:ratio{ident}", "labels": labels},
    ]
