"""Total outage: the application's series are gone or its targets are down, so every ratio (and every burn-rate
alert) is absent rather than firing. Derived from the SLI selectors of the spec, as Pyrra's absent alerts are.

`for:` follows Pyrra's reasoning: if absence meant 100% errors, the fastest page pair would fire after
budget_fraction * period * budget seconds (30d, 2%, 99.9%: 52 s), plus the page tier's `for`; rounded to the
minute, at least 1m and at most OUTAGE_MAX_FOR (page within ~5 min however loose the objective).
"""
from __future__ import annotations

from sloguard import promql
from sloguard.rules.common import job_matchers, link_annotations, severity, slo_labels, template_safe, total_selector
from sloguard.spec import model

METRIC_ABSENT_ALERT = "SloMetricAbsent"
TARGET_DOWN_ALERT = "SloTargetDown"
OUTAGE_MAX_FOR_S = 300


def outage_for_seconds(spec: model.Spec, slo: model.SLO) -> int:
    page = spec.alerting.page
    fastest = min(page.windows, key=lambda w: w.long.seconds)
    seconds = fastest.budget_fraction * slo.window.seconds * slo.error_budget + page.for_.seconds
    return min(OUTAGE_MAX_FOR_S, max(60, round(seconds / 60) * 60))


def build_metric_absent_alert(spec: model.Spec, slo: model.SLO) -> list[dict]:
    total = total_selector(slo)
    for_ = promql.format_duration(outage_for_seconds(spec, slo))
    # absent() keeps the selector's equality matchers as labels: name the job when the selector has one
    has_job = any(m.name == "job" and m.op == "=" for m in promql.parse_selector(total).matchers)
    who = "the application (job {{ $labels.job }})" if has_job else "the application ({{ $value }} selector absent)"
    return [{
        "alert": METRIC_ABSENT_ALERT,
        "expr": f"absent({total})",
        "for": for_,
        "labels": {**slo_labels(spec, slo), "severity": severity(spec, "outage")},
        "annotations": {
            "summary": f"The {slo.name} SLO of {spec.service} has no traffic series at all.",
            "description": (
                f"No series matches {template_safe(total)} for {for_}: {who} "
                f"stopped exporting (process dead, target gone from service discovery, metric renamed), so the "
                f"{slo.name} error ratio and its burn-rate alerts are absent, not healthy."),
            **link_annotations(spec, METRIC_ABSENT_ALERT),
        },
    }]


def build_target_down_alerts(spec: model.Spec) -> list[dict]:
    """One alert per distinct `job` matcher of the SLIs: every target of the job down (a total outage)."""
    by_job: dict[str, tuple[promql.Matcher, int]] = {}
    for slo in spec.slos:
        for m in job_matchers(slo):
            seconds = outage_for_seconds(spec, slo)
            key = m.render()
            by_job[key] = (m, min(seconds, by_job.get(key, (m, seconds))[1]))
    rules = []
    for _key, (matcher, seconds) in sorted(by_job.items()):
        up = promql.Selector("up", (matcher,)).render()
        rules.append({
            "alert": TARGET_DOWN_ALERT,
            "expr": f"max by (job) ({up}) == 0",
            "for": promql.format_duration(seconds),
            "labels": {**spec.labels, "sloth_service": spec.service, "severity": severity(spec, "outage")},
            "annotations": {
                "summary": f"Every scrape target of {spec.service} is down.",
                "description": (
                    "Prometheus cannot scrape any target of job {{ $labels.job }}: the application is down or "
                    f"unreachable, and the SLOs of {spec.service} have no data to burn."),
                **link_annotations(spec, TARGET_DOWN_ALERT),
            },
        })
    return rules
