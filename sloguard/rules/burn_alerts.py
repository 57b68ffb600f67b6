"""Multiwindow, multi-burn-rate alerts (Google SRE Workbook), one rule per window pair.

factor = budget_fraction * period / long_window, from each SLO's own period (30d: 14.4, 6, 3, 1; 28d: 13.44, ...).
The alert fires when both the long and the short window burn faster than factor * budget. Page pairs also need
`page.min_events` requests in their short window (a handful of requests at night must not page anyone); tickets
are not guarded, so a slow, low-traffic burn still opens one. The guard counts events in the short window, not a
rate over the long one: 0.5 req/s at 20% errors must alert, and so must a new series before its long window fills.
A pair with factor * budget >= 1 would need an error ratio above 100%: it is skipped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass

from sloguard import names, promql
from sloguard.rules.common import camel, link_annotations, slo_ident, slo_labels, template_safe, total_selector
from sloguard.rules.slo_recording import ratio_metric
from sloguard.spec import model


@dataclass(frozen=True)
class BurnPair:
    tier: model.AlertTier
    window: model.BurnWindow
    factor: float

    @property
    def label(self) -> str:
        return f"{self.window.long.text}/{self.window.short.text}"


def burn_factor(slo: model.SLO, window: model.BurnWindow) -> float:
    return round(window.budget_fraction * slo.window.seconds / window.long.seconds, 12)


def min_events_guard(total: str, window: str, events: int) -> str:
    """At least `events` requests in `window`: a page needs enough traffic to mean something."""
    return f"sum(increase({total}[{window}])) >= {events}"


def alert_name(slo: model.SLO) -> str:
    return camel(slo.name) + names.BURN_RATE_ALERT_SUFFIX


def burn_pairs(spec: model.Spec, slo: model.SLO) -> tuple[list[BurnPair], list[str]]:
    """The pairs that can fire, and a warning for each that cannot."""
    pairs, warnings = [], []
    for tier in (spec.alerting.page, spec.alerting.ticket):
        for w in tier.windows:
            pair = BurnPair(tier, w, burn_factor(slo, w))
            threshold = pair.factor * slo.error_budget
            if threshold >= 1:
                warnings.append(
                    f"{spec.source}: slos {slo.name!r}: {tier.severity} burn-rate alert {pair.label} skipped: it fires "
                    f"only above {promql.fmt_number(threshold * 100)}% errors (factor {promql.fmt_number(pair.factor)} "
                    f"x budget {promql.fmt_number(slo.error_budget * 100)}%), which can never happen. "
                    f"Lower budget_fraction or use a longer window for this SLO.")
                continue
            pairs.append(pair)
    return pairs, warnings


def build_burn_alerts(spec: model.Spec, slo: model.SLO) -> tuple[list[dict], list[str]]:
    pairs, warnings = burn_pairs(spec, slo)
    labels = slo_labels(spec, slo)
    ident = slo_ident(spec, slo)
    name = alert_name(slo)
    budget = promql.fmt_number(slo.error_budget)
    words = template_safe(slo.description)
    days = promql.fmt_number(slo.window.seconds / 86400)
    rules = []
    for pair in pairs:
        w, factor = pair.window, promql.fmt_number(pair.factor)
        limit = f"({factor} * {budget})"
        expr = (f"max without (sloth_window) ({ratio_metric(w.long.text)}{ident} > {limit})\n"
                f"and\n"
                f"max without (sloth_window) ({ratio_metric(w.short.text)}{ident} > {limit})")
        if pair.tier.min_events > 0:
            expr += f"\nand on ()\n{min_events_guard(total_selector(slo), w.short.text, pair.tier.min_events)}"
        severity_word = "page" if pair.tier is spec.alerting.page else "ticket"
        rules.append({
            "alert": name,
            "expr": expr,
            "for": pair.tier.for_.text,
            "labels": {**labels, "severity": pair.tier.severity, "sloth_severity": severity_word,
                       "burn_window": pair.label},
            "annotations": {
                "summary": f"The {slo.name} SLO of {spec.service} is burning its error budget too fast.",
                "description": (
                    f"Error ratio over the last {w.long.text} is {{{{ $value | humanizePercentage }}}} "
                    f"(the {w.short.text} window agrees), above {factor}x the {promql.fmt_number(slo.error_budget * 100)}% error budget "
                    f"({promql.fmt_number(w.budget_fraction * 100)}% of the {days}-day budget spent in "
                    f"{w.long.text}). {words}".rstrip()),
                **link_annotations(spec, name),
            },
        })
    return rules, warnings
