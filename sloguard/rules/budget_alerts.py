"""The period's error budget: spent (a ticket, as Sloth's error_budget_exhausted plugin) or running low (info)."""
from __future__ import annotations

from sloguard import promql
from sloguard.rules.common import link_annotations, severity, slo_ident, slo_labels
from sloguard.spec import model

EXHAUSTED_ALERT = "SloErrorBudgetExhausted"
LOW_ALERT = "SloErrorBudgetLow"
LOW_REMAINING = 0.25      # the overview dashboard's orange band: under 25% left, freeze risky changes
BUDGET_ALERT_FOR = "5m"   # the period ratio moves once per 5m evaluation of its group


def build_budget_alerts(spec: model.Spec, slo: model.SLO) -> list[dict]:
    remaining = f"slo:period_error_budget_remaining:ratio{slo_ident(spec, slo)}"
    period = slo.window.text
    labels = slo_labels(spec, slo)
    low = promql.fmt_number(LOW_REMAINING)
    return [
        {
            "alert": EXHAUSTED_ALERT,
            "expr": f"{remaining} < 0",
            "for": BUDGET_ALERT_FOR,
            "labels": {**labels, "severity": severity(spec, "budget_exhausted")},
            "annotations": {
                "summary": f"The {slo.name} SLO of {spec.service} has spent its whole {period} error budget.",
                "description": (
                    f"{{{{ $value | humanizePercentage }}}} of the {period} error budget is left: the objective is "
                    "missed for the period. Reliability work before features, per the error budget policy."),
                **link_annotations(spec, EXHAUSTED_ALERT),
            },
        },
        {
            "alert": LOW_ALERT,
            "expr": f"{remaining} < {low} >= 0",
            "for": BUDGET_ALERT_FOR,
            "labels": {**labels, "severity": severity(spec, "budget_low")},
            "annotations": {
                "summary": f"The {slo.name} SLO of {spec.service} has less than {promql.fmt_number(LOW_REMAINING * 100)}% "
                           f"of its {period} error budget left.",
                "description": f"{{{{ $value | humanizePercentage }}}} of the {period} error budget is left.",
                **link_annotations(spec, LOW_ALERT),
            },
        },
    ]
