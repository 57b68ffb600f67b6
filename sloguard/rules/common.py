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
    own = dict(sorted({**spec.labels, **slo.labels}.items()))   # per-SLO labels come from Sloth/OpenSLO inputs
    return {**own, "sloth_id": sloth_id(spec, slo), "sloth_service": spec.service, "sloth_slo": slo.name}


def link_annotations(spec: model.Spec, alertname: str) -> dict[str, str]:
    return {
        "runbook_url": f"{spec.links.runbook}#{names.runbook_anchor(alertname)}",
        "dashboard_url": dashboard_links.dashboard_url(spec.links.grafana, alertname, spec.incident_uid),
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
    fn = "increase" if window == slo.window.text else "rate"
    total = f"sum({fn}({total_selector(slo)}[{window}]))"
    if isinstance(slo.sli, model.EventsSLI):
        errors = f"(sum({fn}({slo.sli.errors}[{window}])) or vector(0))"
        return f"{errors}\n/\n{total}"
    # No `or vector(0)` on the good side: a threshold that is not a bucket boundary would read as 100% slow and
    # page for a typo. The ratio is absent instead, and SloHistogramBucketMissing (burn_alerts) names the cause.
    good = f"sum({fn}({threshold_bucket(slo)}[{window}]))"
    return f"1 - (\n  {good}\n  /\n  {total}\n)"


def threshold_bucket(slo: model.SLO) -> str:
    """The histogram bucket series at the latency SLI's threshold (every usual spelling of `le`)."""
    le = promql.Matcher("le", "=~", promql.le_regex(slo.sli.threshold))
    return promql.inject(promql.with_suffix(slo.sli.metric, "_bucket"), le)
