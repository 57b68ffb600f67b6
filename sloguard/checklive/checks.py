"""What check-live verifies, per spec: every selector has series, the latency threshold is a bucket boundary on
every instance, the exporter is scraped, reaches PostgreSQL, and exposes every metric the generated rules read.

Like pint's promql/series, an empty selector is explained: metric never seen, or which label matcher matches
nothing (with the values that exist). Error selectors may legitimately be empty on a healthy service (the rules
read them with `or vector(0)`), so only their metric name must exist.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sloguard import names, promql
from sloguard.checklive.api import PrometheusAPI
from sloguard.rules.database_alerts import build_database_alerts, build_database_recordings
from sloguard.spec import model

DEFAULT_LOOKBACK = "1h"
# Exporter series that exist only when there is something to report (a suspect index): absence is normal.
ONLY_WHEN_FOUND = {names.MISSING_INDEX}
MAX_VALUES_SHOWN = 8


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}. Fix: {self.fix}"


@dataclass(frozen=True)
class SelectorUse:
    field: str         # where the spec says it, e.g. slos[0].sli.events.total
    selector: str
    may_be_empty: bool = False   # error counters: no series is fine as long as the metric exists


def selector_uses(spec: model.Spec) -> tuple[list[SelectorUse], list[tuple[str, str, float | None]]]:
    """(plain selectors, histograms as (field, base selector, threshold)) the spec's rules and panels read.
    The p99 alert's threshold is compared with an interpolated quantile, not a bucket: None (no bucket check)."""
    plain, histograms = [], []
    for i, slo in enumerate(spec.slos):
        path = f"slos[{i}].sli"
        if isinstance(slo.sli, model.EventsSLI):
            plain.append(SelectorUse(f"{path}.events.total", slo.sli.total))
            plain.append(SelectorUse(f"{path}.events.errors", slo.sli.errors, may_be_empty=True))
        else:
            histograms.append((f"{path}.latency", slo.sli.metric, slo.sli.threshold))
    db = spec.database
    histograms.append(("database.latency_p99", db.latency_p99.metric, None))
    plain += [SelectorUse(f"database.pool.{key}", getattr(db.pool, key)) for key in ("in_use", "max", "waiting")]
    return plain, histograms


def exporter_metrics(spec: model.Spec) -> list[str]:
    """Every exporter metric the generated database rules read (so a renamed or disabled collector shows up)."""
    exprs = [r["expr"] for r in build_database_recordings(spec) + build_database_alerts(spec)]
    found = {m for expr in exprs for m in re.findall(rf"\b({names.PREFIX}_[a-z_]+)", expr)}
    return sorted(found & set(names.EXPORTER_METRICS) - ONLY_WHEN_FOUND)


class Checker:
    def __init__(self, api: PrometheusAPI, lookback: str = DEFAULT_LOOKBACK):
        self.api, self.lookback = api, lookback

    def _present(self, selector: str, by: str = "") -> list[dict]:
        grouping = f" by ({by})" if by else ""
        return self.api.query(f"count{grouping} (last_over_time({selector}[{self.lookback}]))")

    def _values(self, metric: str, label: str) -> str:
        found = sorted(r["metric"].get(label, "") for r in self._present(metric, label))
        shown = ", ".join(v or '""' for v in found[:MAX_VALUES_SHOWN]) + (" ..." if len(found) > MAX_VALUES_SHOWN else "")
        return shown or "none"

    def why_empty(self, selector: str) -> tuple[str, str]:
        """(problem, fix) for a selector with no series: which part of it matches nothing."""
        sel = promql.parse_selector(selector)
        if not self._present(sel.metric):
            return (f"{selector} has no series: metric {sel.metric} was not scraped in the last {self.lookback}",
                    "check the metric name and that its target is scraped (Prometheus /targets)")
        for matcher in sel.matchers:
            if not self._present(promql.Selector(sel.metric, (matcher,)).render()):
                return (f"{selector} has no series: no {sel.metric} series has {matcher.render()} "
                        f"(values of {matcher.name}: {self._values(sel.metric, matcher.name)})",
                        f"correct the {matcher.name} matcher")
        return (f"{selector} has no series: each matcher matches some {sel.metric} series, but not all together",
                "compare the matchers with the series in Prometheus")

    def selector(self, spec: model.Spec, use: SelectorUse) -> list[Problem]:
        target = promql.parse_selector(use.selector).metric if use.may_be_empty else use.selector
        if self._present(target):
            return []
        problem, fix = self.why_empty(target)
        return [Problem(spec.source, use.field, problem, fix)]

    def histogram(self, spec: model.Spec, field: str, base: str, threshold: float | None) -> list[Problem]:
        count = promql.with_suffix(base, "_count")
        bucket = promql.with_suffix(base, "_bucket")
        problems = []
        for sel in (count, bucket):
            if not self._present(sel):
                problem, fix = self.why_empty(sel)
                problems.append(Problem(spec.source, f"{field}.metric", problem, fix))
        if problems or threshold is None:
            return problems
        at_threshold = promql.inject(bucket, promql.Matcher("le", "=~", promql.le_regex(threshold)))
        instances = {(r["metric"].get("job", ""), r["metric"].get("instance", ""))
                     for r in self._present(bucket, "job, instance")}
        covered = {(r["metric"].get("job", ""), r["metric"].get("instance", ""))
                   for r in self._present(at_threshold, "job, instance")}
        for job, instance in sorted(instances - covered):
            where = promql.inject(bucket, promql.Matcher("job", "=", job), promql.Matcher("instance", "=", instance))
            les = sorted({r["metric"].get("le", "") for r in self._present(where, "le")}, key=_le_order)
            problems.append(Problem(
                spec.source, f"{field}.threshold",
                f"{base}: instance {instance} (job {job}) has no bucket at {promql.fmt_number(threshold)} s "
                f"(its buckets: {', '.join(les)}); the SLI would read no data there",
                "use one of its bucket boundaries as the threshold, or add the boundary to the histogram's buckets"))
        return problems

    def exporter(self, spec: model.Spec) -> list[Problem]:
        job = spec.database.exporter_job
        field = "database.exporter_job"
        job_sel = promql.Selector("up", (promql.Matcher("job", "=", job),)).render()
        up = self.api.query(job_sel)
        if not up:
            return [Problem(spec.source, field, f"no target of job {job!r} is scraped (up{{job={job!r}}} is absent)",
                            f"add a scrape config with job_name: {job} for the sloguard exporter, or set "
                            "database.exporter_job to the job that scrapes it")]
        problems = [Problem(spec.source, field, f"exporter {r['metric'].get('instance', '?')} of job {job} is down "
                            "(up == 0)", "start the exporter or fix its address in the scrape config")
                    for r in up if float(r["value"][1]) == 0]
        on_job = (promql.Matcher("job", "=", job),)
        for r in self.api.query(f"{promql.Selector(names.PG_UP, on_job).render()} == 0"):
            problems.append(Problem(spec.source, field, f"exporter {r['metric'].get('instance', '?')} cannot reach "
                                    f"PostgreSQL ({names.PG_UP} == 0)", "check the exporter's DSN and the database"))
        for r in self.api.query(f"{promql.Selector(names.COLLECTOR_SUCCESS, on_job).render()} == 0"):
            problems.append(Problem(spec.source, field, f"collector {r['metric'].get('collector', '?')} of "
                                    f"{r['metric'].get('instance', '?')} fails ({names.COLLECTOR_SUCCESS} == 0)",
                                    "read the exporter's log; the runbook's exporter section lists the causes"))
        for metric in exporter_metrics(spec):
            sel = promql.Selector(metric, on_job).render()
            if not self._present(sel):
                problems.append(Problem(spec.source, field, f"{sel} has no series, and the generated rules read it",
                                        "run the sloguard exporter (exporters/pg_exporter) of this version with all "
                                        "collectors on"))
        return problems

    def spec(self, spec: model.Spec) -> list[Problem]:
        plain, histograms = selector_uses(spec)
        problems = [p for use in plain for p in self.selector(spec, use)]
        problems += [p for field, base, threshold in histograms for p in self.histogram(spec, field, base, threshold)]
        return problems + self.exporter(spec)


def _le_order(le: str) -> float:
    try:
        return float(le)
    except ValueError:
        return float("inf")
