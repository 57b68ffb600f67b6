"""A latency SLO's threshold bucket: missing everywhere (no ratio at all) or on some series only (ratio skewed)."""
from __future__ import annotations

from sloguard import promql
from sloguard.rules.common import (
    link_annotations,
    severity,
    slo_labels,
    template_safe,
    threshold_bucket,
    total_selector,
)
from sloguard.spec import model

BUCKET_MISSING_ALERT = "SloHistogramBucketMissing"
BUCKET_PARTIAL_ALERT = "SloHistogramBucketPartial"
BUCKET_ALERT_FOR = "10m"
BUCKET_WINDOW = "1h"


def build_histogram_alerts(spec: model.Spec, slo: model.SLO) -> list[dict]:
    if not isinstance(slo.sli, model.LatencySLI):
        return []
    return [_bucket_missing(spec, slo), _bucket_partial(spec, slo)]


def _bucket_missing(spec: model.Spec, slo: model.SLO) -> dict:
    """A threshold that is not a bucket boundary has no ratio (and no burn-rate alert): say so.

    Requests flow (the _count moves) but no bucket matches the threshold's `le`: the config is wrong, not the API.
    """
    total, w = total_selector(slo), BUCKET_WINDOW
    threshold = promql.fmt_number(slo.sli.threshold)
    return {
        "alert": BUCKET_MISSING_ALERT,
        "expr": f"sum(rate({total}[{w}])) > 0\nunless on ()\nsum(rate({threshold_bucket(slo)}[{w}]))",
        "for": BUCKET_ALERT_FOR,
        "labels": {**slo_labels(spec, slo), "severity": severity(spec, "slo_config")},
        "annotations": {
            "summary": f"The {slo.name} SLO of {spec.service} cannot be computed: no histogram bucket at {threshold}s.",
            "description": (
                f"{template_safe(slo.sli.metric)} serves {{{{ $value | humanize }}}} requests/s but has no bucket with "
                f"le=\"{threshold}\", the SLO threshold: the {slo.name} "
                "error ratio and its burn-rate alerts are absent, not healthy. Set the threshold in the spec to "
                "one of the histogram's bucket boundaries, or add this boundary to the application's buckets."),
            **link_annotations(spec, BUCKET_MISSING_ALERT),
        },
    }


def _bucket_partial(spec: model.Spec, slo: model.SLO) -> dict:
    """Some series have the threshold bucket and some do not (e.g. one instance still on older buckets).

    Counted naively, every request of a series without the bucket would be "slow" and could page. The SLO ratio
    leaves those series out (common.latency_total); this alert says which ones are left out, per job and instance.
    """
    w = BUCKET_WINDOW
    count, bucket = f"rate({total_selector(slo)}[{w}])", f"rate({threshold_bucket(slo)}[{w}])"
    threshold = promql.fmt_number(slo.sli.threshold)
    return {
        "alert": BUCKET_PARTIAL_ALERT,
        "expr": (f"sum by (job, instance) ({count} unless ignoring (le) {bucket}) > 0\n"
                 f"and on ()\nsum({bucket}) > 0"),
        "for": BUCKET_ALERT_FOR,
        "labels": {**slo_labels(spec, slo), "severity": severity(spec, "slo_config")},
        "annotations": {
            "summary": f"Part of the {slo.name} SLO's traffic has no histogram bucket at {threshold}s.",
            "description": (
                f"{{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}) serves {{{{ $value | humanize }}}} "
                f"requests/s of {template_safe(slo.sli.metric)} without a bucket at le=\"{threshold}\", while other "
                f"series have it: the {slo.name} ratio leaves those requests out. Align the application's buckets "
                "(a deploy half rolled out?)."),
            **link_annotations(spec, BUCKET_PARTIAL_ALERT),
        },
    }
