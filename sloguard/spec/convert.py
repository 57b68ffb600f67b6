"""What the Sloth and OpenSLO converters share: reading `sum(rate(<selector>[range]))` and recognising a latency SLI
written as a histogram's bucket at a threshold against its count."""
from __future__ import annotations

import re

from sloguard import promql
from sloguard.spec import model
from sloguard.spec.loader import Reader


def sum_rate_selector(query: str, range_pattern: str) -> promql.Selector | None:
    """The selector of `sum(rate(<selector>[<range>]))` (or increase), else None. `range_pattern` is a regex."""
    m = re.match(r"^sum\s*\(\s*(?:rate|increase)\s*\(\s*(?P<sel>.+?)\s*\[\s*" + range_pattern + r"\s*\]\s*\)\s*\)$",
                 query.strip(), re.S)
    if not m:
        return None
    try:
        return promql.parse_selector(m["sel"])
    except promql.PromQLError:
        return None


def latency_sli(r: Reader, count: promql.Selector, bucket: promql.Selector, path: tuple, problem: str,
                fix: str) -> model.LatencySLI:
    """`bucket` = h_bucket{m..., le="x"} and `count` = h_count{m...}: the latency SLI on h{m...} at x seconds.
    Anything else fails at `path` with `problem` and `fix`."""
    les = [m for m in bucket.matchers if m.name == "le"]
    base = count.metric.removesuffix("_count")
    others = sorted(m.render() for m in bucket.matchers if m.name != "le")
    if not (count.metric.endswith("_count") and bucket.metric == base + "_bucket" and len(les) == 1
            and les[0].op == "=" and others == sorted(m.render() for m in count.matchers)):
        r.fail(path, problem, fix)
    try:
        threshold = float(les[0].value)
    except ValueError:
        threshold = float("nan")
    if not 0 < threshold < float("inf"):
        r.fail(path, f"le={les[0].value!r} is not a positive finite threshold", 'write e.g. le="0.5"')
    return model.LatencySLI(metric=promql.Selector(base, count.matchers).render(), threshold=threshold)
