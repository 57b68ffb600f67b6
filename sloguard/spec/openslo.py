"""OpenSLO v1 documents (`apiVersion: openslo/v1`) -> sloguard specs, one per `spec.service`.

What maps: kind SLO with an inline `indicator` (or an `indicatorRef` to a kind SLI document in the same file)
whose `ratioMetric` is a Prometheus counter ratio: `bad` + `total` (an events SLI) or `good` as a histogram's
`_bucket{le="x"}` + `total` as its `_count` (a latency SLI). Each query is a selector or
`sum(rate(<selector>[<range>]))`. One rolling `timeWindow`, `budgetingMethod: Occurrences`, one objective
(`target` or `targetPercent`). Anything else is an error naming the field. Service, DataSource, AlertPolicy,
AlertCondition and AlertNotificationTarget documents are ignored (sloguard generates its own alerts; noted).
"""
from __future__ import annotations

from collections import defaultdict

from sloguard import promql
from sloguard.spec import model
from sloguard.spec.convert import latency_sli, sum_rate_selector
from sloguard.spec.loader import Defaults, Reader, check_window, labels_field, service_name, slo_name

API_VERSION = "openslo/v1"
IGNORED_KINDS = ("Service", "DataSource", "AlertPolicy", "AlertCondition", "AlertNotificationTarget")
_EXAMPLE = 'http_requests_total{job="api",code=~"5.."}'
_KINDS = "SLO, SLI, " + ", ".join(IGNORED_KINDS)


def _selector(r: Reader, metric, path: tuple) -> promql.Selector:
    """A metricSource of type Prometheus whose query is a counter selector or sum(rate(<selector>[range]))."""
    m = r.mapping(metric, path, {"metricSource": "{type: Prometheus, spec: {query: ...}}"}, required=("metricSource",))
    src_path = path + ("metricSource",)
    src = r.mapping(m["metricSource"], src_path, {"metricSourceRef": "a DataSource name", "type": "Prometheus",
                                                  "spec": "{query: ...}"}, required=("spec",))
    kind = src.get("type", "Prometheus")
    if not isinstance(kind, str) or kind.lower() != "prometheus":
        r.fail(src_path + ("type",), f"metric source type {kind!r} cannot be mapped (sloguard generates Prometheus "
               "rules)", "use type: Prometheus")
    spec = r.mapping(src["spec"], src_path + ("spec",), {"query": _EXAMPLE}, required=("query",))
    query = r.string(spec["query"], src_path + ("spec", "query"), _EXAMPLE).strip()
    term = sum_rate_selector(query, r"\w+")
    if term is not None:
        return term
    try:
        return promql.parse_selector(query)
    except promql.PromQLError as exc:
        r.fail(src_path + ("spec", "query"), f"only a counter selector or sum(rate(<selector>[5m])) can be mapped: "
               f"{exc}", f"write e.g. query: {_EXAMPLE}")


def _sli(r: Reader, indicator, path: tuple) -> model.EventsSLI | model.LatencySLI:
    ind = r.mapping(indicator, path, {"metadata": "{name: ...}", "spec": "{ratioMetric: {...}}"}, required=("spec",))
    sp = path + ("spec",)
    spec = r.mapping(ind["spec"], sp, {"description": "...", "ratioMetric": "{counter: true, bad: ..., total: ...}",
                                       "thresholdMetric": "(not supported)"})
    if "thresholdMetric" in spec:
        r.fail(sp + ("thresholdMetric",), "threshold-metric SLIs cannot be mapped (sloguard needs event counters)",
               "use ratioMetric: {counter: true, bad: ..., total: ...}")
    if "ratioMetric" not in spec:
        r.fail(sp, "missing ratioMetric", "write ratioMetric: {counter: true, bad: {...}, total: {...}}")
    rp = sp + ("ratioMetric",)
    ratio = r.mapping(spec["ratioMetric"], rp, {"counter": "true", "good": "{metricSource: ...}",
                                                 "bad": "{metricSource: ...}", "total": "{metricSource: ...}",
                                                 "raw": "(not supported)", "rawType": "(not supported)"})
    if "raw" in ratio or "rawType" in ratio:
        r.fail(rp + ("raw",), "a raw ratio cannot be mapped (sloguard needs the bad and total counters)",
               "write bad: {...} and total: {...} instead")
    if ratio.get("counter") is not True:
        r.fail(rp + ("counter",), "only counter ratios can be mapped (sloguard takes rates of the counters)",
               "write counter: true and counter metrics as good/bad and total")
    if "total" not in ratio or ("good" in ratio) == ("bad" in ratio):
        r.fail(rp, "a ratio metric needs total and exactly one of good or bad", "write bad: {...} and total: {...}")
    total = _selector(r, ratio["total"], rp + ("total",))
    if "bad" in ratio:
        bad = _selector(r, ratio["bad"], rp + ("bad",))
        if bad.render() == total.render():
            r.fail(rp + ("bad",), "bad selects the same series as total", 'narrow it, e.g. code=~"5.."')
        return model.EventsSLI(total=total.render(), errors=bad.render())
    good = _selector(r, ratio["good"], rp + ("good",))
    return latency_sli(r, total, good, rp + ("good",),
                       "a good-events ratio can only be mapped as a latency SLI: good = a histogram's "
                       "_bucket{le=\"x\"}, total = its _count with the same matchers",
                       "write bad: {...} (the error events) instead of good, or use the histogram's bucket and count")


def _window(r: Reader, value, path: tuple) -> model.Duration:
    if not isinstance(value, list) or len(value) != 1:
        r.fail(path, "expected a list of exactly one time window", "write timeWindow: [{duration: 28d, isRolling: true}]")
    p = path + (0,)
    w = r.mapping(value[0], p, {"duration": "28d", "isRolling": "true", "calendar": "(not supported)"},
                  required=("duration",))
    if "calendar" in w or w.get("isRolling") is False:
        r.fail(p + ("isRolling",), "calendar windows cannot be mapped (sloguard's periods are rolling)",
               "write isRolling: true and remove calendar")
    duration = w["duration"]
    if isinstance(duration, str) and duration[-1:] in ("M", "Q", "Y"):
        r.fail(p + ("duration",), f"{duration!r}: months, quarters and years have no fixed length in PromQL",
               "write the window in days or weeks, e.g. 28d or 4w")
    return r.duration(duration, p + ("duration",), "28d")


def _objective(r: Reader, value, path: tuple) -> float:
    if not isinstance(value, list) or len(value) != 1:
        r.fail(path, "expected exactly one objective (sloguard keeps one objective per SLO)",
               "split the objectives into one SLO document each")
    p = path + (0,)
    o = r.mapping(value[0], p, {"displayName": "...", "target": "0.999", "targetPercent": "99.9",
                                "op": "(not supported)", "value": "(not supported)",
                                "timeSliceTarget": "(not supported)", "timeSliceWindow": "(not supported)"})
    for key in ("op", "value", "timeSliceTarget", "timeSliceWindow"):
        if key in o:
            r.fail(p + (key,), f"{key} cannot be mapped (only ratio objectives on occurrences)", f"remove {key}")
    if ("target" in o) == ("targetPercent" in o):
        r.fail(p, "write exactly one of target (a ratio) or targetPercent", "write e.g. target: 0.999")
    if "target" in o:
        return r.number(o["target"], p + ("target",), "0.999", 0, 1, True, True) * 100
    return r.number(o["targetPercent"], p + ("targetPercent",), "99.9", 0, 100, True, True)


def convert(docs: list[tuple[object, dict]], file: str, defaults: Defaults) -> list[model.Spec]:
    """All SLO documents of one file -> one Spec per service (in order of first appearance)."""
    indicators, slo_docs, notes = {}, [], []
    for index, (data, lines) in enumerate(docs):
        r = Reader(file, lines)
        doc = r.mapping(data, (), {"apiVersion": API_VERSION, "kind": "SLO", "metadata": "{name: ...}",
                                   "spec": "{...}"}, required=("apiVersion", "kind", "metadata", "spec"))
        if doc["apiVersion"] != API_VERSION:
            r.fail(("apiVersion",), f"{doc['apiVersion']!r} is not supported (document {index + 1})",
                   f"write apiVersion: {API_VERSION}")
        kind = doc["kind"]
        if kind == "SLI":
            meta = r.mapping(doc["metadata"], ("metadata",), {"name": "...", "displayName": "...", "labels": "{}",
                                                              "annotations": "{}"}, required=("name",))
            indicators[meta["name"]] = (r, {"metadata": meta, "spec": doc["spec"]})
        elif kind == "SLO":
            slo_docs.append((r, doc))
        elif kind in IGNORED_KINDS:
            if kind != "Service":
                notes.append(f"{file}: document {index + 1} (kind {kind}) not used: sloguard generates its own "
                             "burn-rate alerts")
        else:
            r.fail(("kind",), f"unknown kind {kind!r}", f"use one of {_KINDS}")
    if not slo_docs:
        Reader(file, docs[0][1]).fail((), "no kind: SLO document", "add an SLO document")
    by_service: dict[str, list[model.SLO]] = defaultdict(list)
    seen_by_service: dict[str, dict] = defaultdict(dict)
    for r, doc in slo_docs:
        meta = r.mapping(doc["metadata"], ("metadata",), {"name": "availability", "displayName": "...",
                                                          "labels": "{}", "annotations": "{}"}, required=("name",))
        spec = r.mapping(doc["spec"], ("spec",), {
            "description": "...", "service": "api", "indicator": "{metadata, spec: {ratioMetric}}",
            "indicatorRef": "an SLI document's name", "timeWindow": "[{duration: 28d, isRolling: true}]",
            "budgetingMethod": "Occurrences", "objectives": "[{target: 0.999}]", "alertPolicies": "[...]"},
            required=("service", "timeWindow", "budgetingMethod", "objectives"))
        service = service_name(r, spec["service"], ("spec", "service"))
        name = slo_name(r, meta["name"], ("metadata", "name"), seen_by_service[service])
        if spec["budgetingMethod"] != "Occurrences":
            r.fail(("spec", "budgetingMethod"), f"{spec['budgetingMethod']!r} cannot be mapped (sloguard counts "
                   "events over the window)", "write budgetingMethod: Occurrences")
        window = _window(r, spec["timeWindow"], ("spec", "timeWindow"))
        check_window(r, window, defaults.alerting, ("spec", "timeWindow", 0, "duration"))
        if ("indicator" in spec) == ("indicatorRef" in spec):
            r.fail(("spec",), "write exactly one of indicator or indicatorRef", "write indicator: {spec: ...}")
        if "indicator" in spec:
            sli = _sli(r, spec["indicator"], ("spec", "indicator"))
        else:
            ref = spec["indicatorRef"]
            if ref not in indicators:
                r.fail(("spec", "indicatorRef"), f"no kind: SLI document named {ref!r} in this file",
                       "add the SLI document to the file or inline it as indicator:")
            sli_reader, indicator = indicators[ref]
            sli = _sli(sli_reader, indicator, ())
        if spec.get("alertPolicies"):
            notes.append(f"{file}: SLO {name}: spec.alertPolicies not used: sloguard generates its own burn-rate "
                         "alerts")
        description = spec.get("description") or ""
        if not isinstance(description, str):
            r.fail(("spec", "description"), "expected a string", "quote the text")
        labels = meta.get("labels") or {}
        by_service[service].append(model.SLO(
            name=name, description=description.strip(),
            objective=round(_objective(r, spec["objectives"], ("spec", "objectives")) / 100, 12), window=window,
            sli=sli, labels=labels_field(r, labels, ("metadata", "labels"))))
    return [model.Spec(service=service, labels=dict(defaults.labels), links=defaults.links, slos=tuple(slos),
                       alerting=defaults.alerting, database=defaults.database, source=file, notes=tuple(notes))
            for service, slos in by_service.items()]
