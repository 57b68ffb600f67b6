"""Multiwindow, multi-burn-rate alerts (Google SRE Workbook), one rule per window pair.

factor = budget_fraction * period / long_window, from each SLO's own period (30d: 14.4, 6, 3, 1; 28d: 13.44, ...).
The alert fires when both the long and the short window burn faster than factor * budget, and the long window
saw at least min_request_rate req/s (a handful of requests at night must not page anyone).
A pair with factor * budget >= 1 would need an error ratio above 100%: it is skipped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass

from sloguard import names, promql
from sloguard.rules.common import (
    camel,
    link_annotations,
    selector_matchers,
    slo_labels,
    threshold_bucket,
    total_selector,
)
from sloguard.rules.slo_recording import ratio_metric
from sloguard.spec import model

BUCKET_MISSING_ALERT = "SloHistogramBucketMissing"
BUCKET_MISSING_FOR = "10m"


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
    ident = "{" + selector_matchers({k: labels[k] for k in ("sloth_id", "sloth_service", "sloth_slo")}) + "}"
    name = alert_name(slo)
    budget = promql.fmt_number(slo.error_budget)
    # the SLO's own words go into a Go template: braces from the spec must not open a template action
    words = slo.description.replace("{{", "{ {").replace("}}", "} }")
    days = promql.fmt_number(slo.window.seconds / 86400)
    rules = []
    for pair in pairs:
        w, factor = pair.window, promql.fmt_number(pair.factor)
        limit = f"({factor} * {budget})"
        expr = (f"max without (sloth_window) ({ratio_metric(w.long.text)}{ident} > {limit})\n"
                f"and\n"
                f"max without (sloth_window) ({ratio_metric(w.short.text)}{ident} > {limit})")
        if spec.alerting.min_request_rate > 0:
            expr += (f"\nand on ()\n"
                     f"sum(rate({total_selector(slo)}[{w.long.text}])) >= {promql.fmt_number(spec.alerting.min_request_rate)}")
        severity_word = "page" if pair.tier.severity == "critical" else "ticket"
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


def build_bucket_missing_alert(spec: model.Spec, slo: model.SLO) -> list[dict]:
    """A latency SLO whose threshold is not a bucket boundary has no ratio (and no burn-rate alert): say so.

    Requests flow (the _count moves) but no bucket matches the threshold's `le`: the config is wrong, not the API.
    """
    if not isinstance(slo.sli, model.LatencySLI):
        return []
    total = total_selector(slo)
    threshold = promql.fmt_number(slo.sli.threshold)
    metric = slo.sli.metric.replace("{{", "{ {").replace("}}", "} }")
    return [{
        "alert": BUCKET_MISSING_ALERT,
        "expr": f"sum(rate({total}[1h])) > 0\nunless on ()\nsum(rate({threshold_bucket(slo)}[1h]))",
        "for": BUCKET_MISSING_FOR,
        "labels": {**slo_labels(spec, slo), "severity": "warning"},
        "annotations": {
            "summary": f"The {slo.name} SLO of {spec.service} cannot be computed: no histogram bucket at {threshold}s.",
            "description": (
                f"{metric} serves {{{{ $value | humanize }}}} requests/s but has no bucket with le=\"{threshold}\", "
                f"the SLO threshold: the {slo.name} "
                "error ratio and its burn-rate alerts are absent, not healthy. Set the threshold in the spec to "
                "one of the histogram's bucket boundaries, or add this boundary to the application's buckets."),
            **link_annotations(spec, BUCKET_MISSING_ALERT),
        },
    }]
