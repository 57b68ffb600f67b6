"""Pieces shared by the SLO and database builders: labels, annotations, SLI expressions."""
from __future__ import annotations

from sloguard import dashboard_links, names, promql
from sloguard.spec import model


def camel(name: str) -> str:
    """'api-availability' / 'latency_p99' -> 'ApiAvailability' / 'LatencyP99'."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-") if part)


def sloth_id(spec: model.Spec, slo: model.SLO) -> str:
    return f"{spec.service}-{slo.name}"


def slo_labels(spec: model.Spec, slo: model.SLO) -> dict[str, str]:
    """Sloth's identifying labels plus the spec's own labels (sorted, for byte-stable output)."""
    return {**spec.labels, "sloth_id": sloth_id(spec, slo), "sloth_service": spec.service, "sloth_slo": slo.name}


def severity(spec: model.Spec, family: str) -> str:
    """The severity the spec gives an alert family (model.SEVERITY_DEFAULTS lists the families)."""
    return spec.alerting.severities[family]


def slo_ident(spec: model.Spec, slo: model.SLO) -> str:
    """{sloth_id="...", sloth_service="...", sloth_slo="..."}: selects one SLO's recorded series."""
    labels = slo_labels(spec, slo)
    return "{" + selector_matchers({k: labels[k] for k in ("sloth_id", "sloth_service", "sloth_slo")}) + "}"


def template_safe(text: str) -> str:
    """Spec text inside a Go template annotation: braces from the spec must not open a template action."""
    return text.replace("{{", "{ {").replace("}}", "} }")


def link_annotations(spec: model.Spec, alertname: str) -> dict[str, str]:
    return {
        "runbook_url": f"{spec.links.runbook}#{names.runbook_anchor(alertname)}",
        "dashboard_url": dashboard_links.dashboard_url(spec.links.grafana, alertname),
    }


def selector_matchers(labels: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in labels.items())


def total_selector(slo: model.SLO) -> str:
    """The counter of all requests the SLI is about (events total or the histogram's _count)."""
    if isinstance(slo.sli, model.EventsSLI):
        return slo.sli.total
    return promql.with_suffix(slo.sli.metric, "_count")


def error_ratio_expr(slo: model.SLO, window: str) -> str:
    """Error ratio over `window` as a ratio of sums, so uneven traffic is weighted correctly.

    `or vector(0)` on the errors side: with no failing series at all the ratio is 0, not absent,
    so dashboards and burn-rate maths see a healthy SLO instead of a gap.
    """
    total = f"sum(rate({total_selector(slo)}[{window}]))"
    if isinstance(slo.sli, model.EventsSLI):
        errors = f"(sum(rate({slo.sli.errors}[{window}])) or vector(0))"
        return f"{errors}\n/\n{total}"
    # No `or vector(0)` on the good side: a threshold that is not a bucket boundary would read as 100% slow and
    # page for a typo. The ratio is absent instead, and SloHistogramBucketMissing (histogram_alerts) names the cause.
    good = f"sum(rate({threshold_bucket(slo)}[{window}]))"
    return f"1 - (\n  {good}\n  /\n  {latency_total(slo, 'rate', window)}\n)"


def latency_total(slo: model.SLO, fn: str, window: str) -> str:
    """Requests of a latency SLI, counting only series that have the threshold bucket.

    A series without the bucket (an instance on older buckets) would count all its requests as slow and page for a
    config skew: `and ignoring (le)` leaves it out of the ratio, and SloHistogramBucketPartial names it.
    """
    count = f"{fn}({total_selector(slo)}[{window}])"
    return f"sum({count} and ignoring (le) {fn}({threshold_bucket(slo)}[{window}]))"


def threshold_bucket(slo: model.SLO) -> str:
    """The histogram bucket series at the latency SLI's threshold (every usual spelling of `le`)."""
    le = promql.Matcher("le", "=~", promql.le_regex(slo.sli.threshold))
    return promql.inject(promql.with_suffix(slo.sli.metric, "_bucket"), le)


def slo_selectors(slo: model.SLO) -> list[str]:
    """The selectors the SLI reads (events: total and errors; latency: the histogram base)."""
    if isinstance(slo.sli, model.EventsSLI):
        return [slo.sli.total, slo.sli.errors]
    return [slo.sli.metric]


def job_matchers(slo: model.SLO) -> list[promql.Matcher]:
    """The `job` matchers of the SLI's selectors, deduplicated: the targets whose `up` says the app is there."""
    seen: dict[str, promql.Matcher] = {}
    for sel in slo_selectors(slo):
        for m in promql.parse_selector(sel).matchers:
            if m.name == "job" and m.op in ("=", "=~"):
                seen.setdefault(m.render(), m)
    return list(seen.values())
