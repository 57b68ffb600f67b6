"""Load and validate slo.yaml into `sloguard.spec.model.Spec`.

Every problem raises SpecError naming the file, the line, the field path (e.g. `slos[1].objective`), what is wrong
and how to fix it. The CLI turns it into exit code 2. The same rules are published for editors in slo.schema.json;
tests/test_spec_loader.py keeps the two in agreement.
"""
from __future__ import annotations

import dataclasses
import re

from sloguard import names, promql
from sloguard.rules.common import camel
from sloguard.spec import model
from sloguard.spec.yamlnodes import YamlError, load_with_lines, render_path

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# A Prometheus job name as scrape configs write them; also keeps quotes and template braces out of the rules.
JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
RESERVED_LABEL_PREFIXES = ("__", "sloth_")
RESERVED_LABELS = {"severity", "burn_window", "alertname", "job", "instance"}
SPEC_VERSION = 1
MAX_ALERT_NAME = 40   # mixtool lint

# SRE Workbook defaults: fractions of the period's budget; factors are derived from each SLO's own window.
DEFAULT_ALERTING = {
    # page `for` 1m: the pair's short window already debounces; on the 2024-01-15 replay 2m would page at 14:34
    # (3 min), 1m at 14:33, and after 3 days of history 14:36 vs 14:35 (tests/promtool/incident-2024-01-15-replay.yml)
    "page": {"for": "1m", "min_events": 10, "windows": [
        {"long": "1h", "short": "5m", "budget_fraction": 0.02},
        {"long": "6h", "short": "30m", "budget_fraction": 0.05}]},
    "ticket": {"for": "15m", "windows": [
        {"long": "1d", "short": "2h", "budget_fraction": 0.10},
        {"long": "3d", "short": "6h", "budget_fraction": 0.10}]},
}
DEFAULT_EXPORTER_JOB = "sloguard-pg-exporter"


class SpecError(ValueError):
    """One problem in the spec, formatted `file:line: field: problem. Fix: fix`."""

    def __init__(self, file: str, line: int | None, field: str, problem: str, fix: str):
        self.file, self.line, self.field, self.problem, self.fix = file, line, field, problem, fix
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {problem}. Fix: {fix}")


class _Reader:
    """Walks the parsed YAML with the path of the current field, so every error knows where it is."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines = file, lines

    def fail(self, path: tuple, problem: str, fix: str):
        line = None
        for cut in range(len(path), -1, -1):   # nearest enclosing node that has a line
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        raise SpecError(self.file, line, render_path(path), problem, fix)

    def mapping(self, value, path: tuple, allowed: dict[str, str], required: tuple[str, ...] = ()) -> dict:
        """`allowed` maps field -> a short hint shown when the field is unknown (the list of valid names)."""
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping (key: value), got {_kind(value)}",
                      f"write the fields {', '.join(allowed)} under {render_path(path)}")
        for key in value:
            if key not in allowed:
                close = [k for k in allowed if k.startswith(key[:3])] if key else []
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(path + (key,), f"unknown field {key!r}",
                          f"{hint}remove it or use one of: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                self.fail(path, f"missing required field {key!r}", f"add {key}: {allowed[key]}")
        return value

    def string(self, value, path: tuple, example: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, got {_kind(value)}", f"write e.g. {example}")
        return value

    def number(self, value, path: tuple, example: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a number, got {_kind(value)}", f"write e.g. {example} (no quotes, no unit)")
        if integer and isinstance(value, float) and value != int(value):
            self.fail(path, f"expected a whole number, got {value!r}", f"write e.g. {example}")
        bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
        bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
        if bad_lo or bad_hi or value != value:
            lo_txt = "" if lo is None else f"{'>' if lo_open else '>='} {promql.fmt_number(lo)}"
            hi_txt = "" if hi is None else f"{'<' if hi_open else '<='} {promql.fmt_number(hi)}"
            rng = " and ".join(t for t in (lo_txt, hi_txt) if t)
            self.fail(path, f"{value!r} is out of range (must be {rng})", f"write e.g. {example}")
        return float(value)

    def duration(self, value, path: tuple, example: str) -> model.Duration:
        try:
            return promql.parse_duration(value)
        except promql.PromQLError as exc:
            self.fail(path, str(exc), f"write e.g. {example}")

    def selector(self, value, path: tuple, example: str) -> str:
        self.string(value, path, example)
        try:
            return promql.parse_selector(value).render()
        except promql.PromQLError as exc:
            self.fail(path, f"invalid PromQL selector: {exc}", f"write e.g. {example}")


def _kind(value) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: f"the string {value!r}",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def load_spec(path: str) -> model.Spec:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SpecError(path, None, "(file)", f"cannot read the spec: {exc.strerror}",
                        "pass an existing file with --spec (default slo.yaml)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(path, line, "(file)", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    return parse_spec(text, path)


def parse_spec(text: str, file: str = "slo.yaml") -> model.Spec:
    try:
        data, lines = load_with_lines(text)
    except YamlError as exc:
        raise SpecError(file, exc.line, render_path(exc.path) if exc.path else "(YAML)", exc.message,
                        "fix the YAML syntax (indentation, quotes, one value per key)") from None
    r = _Reader(file, lines)
    top = r.mapping(data, (), {
        "version": "1", "service": "api", "labels": "{team: api-platform}",
        "links": "{runbook: https://..., grafana: http://localhost:3000}",
        "slos": "a list of SLOs", "alerting": "burn-rate windows", "database": "database alert thresholds",
    }, required=("service", "links", "slos", "database"))
    version = top.get("version", SPEC_VERSION)
    if version != SPEC_VERSION or isinstance(version, bool):
        r.fail(("version",), f"unsupported spec version {version!r}", f"write version: {SPEC_VERSION}")
    service = r.string(top["service"], ("service",), "service: api")
    if not NAME_RE.match(service):
        r.fail(("service",), f"{service!r} is not a valid name", "use lowercase letters, digits, '-' or '_', e.g. api")
    labels = _labels(r, top.get("labels", {}))
    links = r.mapping(top["links"], ("links",), {"runbook": "https://.../runbooks/high-latency-response.md",
                                                 "grafana": "http://localhost:3000"}, required=("runbook", "grafana"))
    runbook = _url(r, links["runbook"], ("links", "runbook"))
    if "#" in runbook:
        # every alert appends #<its section>: a URL with its own fragment would end up with two
        r.fail(("links", "runbook"), f"{runbook!r} already has a '#' fragment",
               f"give the runbook file's URL without '#...', e.g. {runbook.split('#', 1)[0]}; sloguard adds each "
               "alert's section anchor")
    grafana = _url(r, links["grafana"], ("links", "grafana")).rstrip("/")
    slos = _slos(r, top["slos"])
    alerting = _alerting(r, top.get("alerting", DEFAULT_ALERTING))
    for i, slo in enumerate(slos):
        for tier in (alerting.page, alerting.ticket):
            for w in tier.windows:
                if w.long.seconds > slo.window.seconds:
                    r.fail(("slos", i, "window"), f"window {slo.window.text} is shorter than the burn-rate window "
                           f"{w.long.text}", f"use an SLO window of at least {w.long.text}")
    database = _database(r, top["database"])
    return model.Spec(service=service, labels=labels, links=model.Links(runbook=runbook, grafana=grafana),
                      slos=tuple(slos), alerting=alerting, database=database, source=file)


def _labels(r: _Reader, value) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.fail(("labels",), f"expected a mapping of label name to value, got {_kind(value)}",
               "write e.g. labels: {team: api-platform}")
    out = {}
    for key, val in value.items():
        path = ("labels", key)
        if not promql.LABEL_NAME_RE.match(key) or key.startswith(RESERVED_LABEL_PREFIXES) or key in RESERVED_LABELS:
            r.fail(path, f"{key!r} cannot be a label name here (invalid or reserved by sloguard/Prometheus)",
                   "use letters, digits and _, not starting with __ or sloth_, e.g. team")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            r.fail(path, f"label value must be a string, got {_kind(val)}", f"write e.g. {key}: api-platform")
        text = promql.fmt_number(val) if isinstance(val, int | float) else val
        if "{{" in text or "}}" in text:
            # Prometheus expands templates in alert labels: {{ $value }} would make a new alert per value
            r.fail(path, f"label value {text!r} contains a template ('{{{{' or '}}}}')",
                   "use a fixed value; put varying text in annotations, not labels")
        out[key] = text
    return dict(sorted(out.items()))


def _url(r: _Reader, value, path: tuple) -> str:
    r.string(value, path, "https://example.com/...")
    if not re.match(r"^https?://[^\s]+$", value):
        r.fail(path, f"{value!r} is not an http(s) URL", "write a full URL starting with https:// or http://")
    return value


def _slos(r: _Reader, value) -> list[model.SLO]:
    if not isinstance(value, list) or not value:
        r.fail(("slos",), f"expected a non-empty list of SLOs, got {_kind(value)}",
               "add at least one SLO: - {name: availability, objective: 99.9, window: 30d, sli: {...}}")
    slos, seen = [], {}
    for i, item in enumerate(value):
        path = ("slos", i)
        s = r.mapping(item, path, {"name": "availability", "description": "what the SLO promises",
                                   "objective": "99.9", "window": "30d", "sli": "{events: ...} or {latency: ...}"},
                      required=("name", "objective", "window", "sli"))
        name = r.string(s["name"], path + ("name",), "availability")
        if not NAME_RE.match(name):
            r.fail(path + ("name",), f"{name!r} is not a valid SLO name",
                   "use lowercase letters, digits, '-' or '_', starting with a letter, e.g. availability")
        alert = camel(name) + names.BURN_RATE_ALERT_SUFFIX
        if len(alert) > MAX_ALERT_NAME:
            r.fail(path + ("name",), f"{name!r} makes the alert name {alert!r} longer than {MAX_ALERT_NAME} characters",
                   f"shorten the SLO name to at most {MAX_ALERT_NAME - len(names.BURN_RATE_ALERT_SUFFIX)} letters "
                   "(not counting '-' and '_')")
        if name in seen:
            r.fail(path + ("name",), f"duplicate SLO name {name!r} (also slos[{seen[name]}])",
                   "give every SLO a unique name")
        seen[name] = i
        description = s.get("description", "")
        if not isinstance(description, str):
            r.fail(path + ("description",), f"expected a string, got {_kind(description)}", "quote the text")
        objective = r.number(s["objective"], path + ("objective",), "99.9 (a percent)", 0, 100, True, True)
        window = r.duration(s["window"], path + ("window",), "30d or 28d")
        sli = _sli(r, s["sli"], path + ("sli",))
        slos.append(model.SLO(name=name, description=description.strip(), objective=round(objective / 100, 12),
                              window=window, sli=sli))
    return slos


def _sli(r: _Reader, value, path: tuple) -> model.EventsSLI | model.LatencySLI:
    r.mapping(value, path, {"events": "{total: <selector>, errors: <selector>}",
                            "latency": "{metric: <histogram selector>, threshold: <seconds>}"})
    if len(value) != 1:
        r.fail(path, "an SLI must have exactly one of 'events' or 'latency'",
               "keep events: {total, errors} for availability or latency: {metric, threshold}")
    if "events" in value:
        p = path + ("events",)
        e = r.mapping(value["events"], p, {"total": 'http_requests_total{job="api"}',
                                           "errors": 'http_requests_total{job="api",code=~"5.."}'},
                      required=("total", "errors"))
        total = r.selector(e["total"], p + ("total",), 'http_requests_total{job="api"}')
        errors = r.selector(e["errors"], p + ("errors",), 'http_requests_total{job="api",code=~"5.."}')
        if total == errors:
            r.fail(p + ("errors",), "errors selects the same series as total (error ratio would always be 1)",
                   'narrow errors with a matcher such as code=~"5.."')
        return model.EventsSLI(total=total, errors=errors)
    p = path + ("latency",)
    lat = r.mapping(value["latency"], p, {"metric": 'http_request_duration_seconds{job="api"}',
                                          "threshold": "0.5 (seconds, a bucket boundary)"},
                    required=("metric", "threshold"))
    metric = _histogram(r, lat["metric"], p + ("metric",))
    threshold = r.number(lat["threshold"], p + ("threshold",), "0.5 (seconds)", 0, None, lo_open=True)
    return model.LatencySLI(metric=metric, threshold=threshold)


def _histogram(r: _Reader, value, path: tuple) -> str:
    sel = r.selector(value, path, 'http_request_duration_seconds{job="api"}')
    base = promql.parse_selector(sel)
    if base.metric.endswith(("_bucket", "_count", "_sum")):
        r.fail(path, f"give the histogram's base name, not {base.metric!r}",
               f"write {re.sub(r'_(bucket|count|sum)$', '', base.metric)} (sloguard adds _bucket and _count)")
    if any(m.name == "le" for m in base.matchers):
        r.fail(path, "the selector must not match on 'le'", "remove le; the threshold field picks the bucket")
    return sel


def _alerting(r: _Reader, value) -> model.Alerting:
    path = ("alerting",)
    a = r.mapping(value, path, {"page": "{for: 2m, min_events: 10, windows: [...]}",
                                "ticket": "{for: 15m, windows: [...]}",
                                "severities": "{page: critical, latency_p99: warning, ...}",
                                "min_request_rate": "(replaced by page.min_events)"})
    if "min_request_rate" in a:
        # a long-window rate floor silenced real burns at low traffic and on new series (issue 10)
        r.fail(path + ("min_request_rate",), "min_request_rate (req/s over the long window) was replaced by a "
               "minimum number of requests in the short window, for pages only",
               "remove it and set alerting.page.min_events instead, e.g. min_events: 10 (10 requests in 5m = "
               "0.033 req/s); tickets are not guarded")
    page = _tier(r, a.get("page", DEFAULT_ALERTING["page"]), path + ("page",), "page")
    ticket = _tier(r, a.get("ticket", DEFAULT_ALERTING["ticket"]), path + ("ticket",), "ticket")
    severities = _severities(r, a.get("severities", {}), path + ("severities",))
    page = dataclasses.replace(page, severity=severities["page"])
    ticket = dataclasses.replace(ticket, severity=severities["ticket"])
    return model.Alerting(page=page, ticket=ticket, severities=severities)


def _severities(r: _Reader, value, path: tuple) -> dict[str, str]:
    hints = {family: default for family, default in model.SEVERITY_DEFAULTS.items()}
    given = r.mapping(value if value is not None else {}, path, hints)
    out = dict(model.SEVERITY_DEFAULTS)
    for family, severity in given.items():
        if severity not in model.SEVERITIES:
            r.fail(path + (family,), f"{severity!r} is not a severity",
                   f"use one of {', '.join(model.SEVERITIES)} (critical pages, warning tickets, info only records)")
        out[family] = severity
    return out


def _tier(r: _Reader, value, path: tuple, tier: str) -> model.AlertTier:
    fields = {"for": "2m", "windows": "[{long: 1h, short: 5m, budget_fraction: 0.02}]"}
    if tier == "page":
        fields["min_events"] = "10 (requests in the short window; 0 disables)"
    t = r.mapping(value, path, fields, required=("windows",))
    for_ = r.duration(t.get("for", DEFAULT_ALERTING[tier]["for"]), path + ("for",), "2m")
    min_events = 0
    if tier == "page":
        raw = t.get("min_events", DEFAULT_ALERTING["page"]["min_events"])
        min_events = int(r.number(raw, path + ("min_events",), "10 (requests in the short window; 0 disables)", 0,
                                  integer=True))
    windows = t["windows"]
    if not isinstance(windows, list) or not windows:
        r.fail(path + ("windows",), f"expected a non-empty list of windows, got {_kind(windows)}",
               "write e.g. [{long: 1h, short: 5m, budget_fraction: 0.02}]")
    out, seen = [], set()
    for i, w in enumerate(windows):
        p = path + ("windows", i)
        r.mapping(w, p, {"long": "1h", "short": "5m", "budget_fraction": "0.02"},
                  required=("long", "short", "budget_fraction"))
        long_ = r.duration(w["long"], p + ("long",), "1h")
        short = r.duration(w["short"], p + ("short",), "5m (usually long / 12)")
        if short.seconds >= long_.seconds:
            r.fail(p + ("short",), f"short window {short.text} must be shorter than the long window {long_.text}",
                   f"use about a twelfth of the long window, e.g. {promql.format_duration(max(long_.seconds // 12, 1))}")
        fraction = r.number(w["budget_fraction"], p + ("budget_fraction",), "0.02 (2% of the budget)", 0, 1, True)
        if (long_.seconds, short.seconds) in seen:
            r.fail(p, f"window pair {long_.text}/{short.text} is listed twice", "remove the duplicate")
        seen.add((long_.seconds, short.seconds))
        out.append(model.BurnWindow(long=long_, short=short, budget_fraction=fraction))
    return model.AlertTier(severity=model.SEVERITY_DEFAULTS[tier], for_=for_, windows=tuple(out),
                           min_events=min_events)


def _database(r: _Reader, value) -> model.Database:
    path = ("database",)
    d = r.mapping(value, path, {
        "exporter_job": DEFAULT_EXPORTER_JOB, "latency_p99": "{metric, threshold, for}",
        "pool": "{in_use, max, waiting, saturation_ratio, max_waiting, for}",
        "connections": "{saturation_ratio, for}", "slow_statements": "{mean_seconds, ...}",
        "seq_scans": "{min_live_rows, rows_read_per_second, for}", "lock_waits": "{max_waiting_sessions, for}",
        "long_transactions": "{max_seconds, for}"}, required=("latency_p99", "pool"))
    job = r.string(d.get("exporter_job", DEFAULT_EXPORTER_JOB), path + ("exporter_job",), DEFAULT_EXPORTER_JOB)
    if not JOB_RE.match(job):
        r.fail(path + ("exporter_job",), f"{job!r} is not a usable Prometheus job name",
               f"use letters, digits and _ . : / - (the job_name of the exporter's scrape config), "
               f"e.g. {DEFAULT_EXPORTER_JOB}")
    sec = _Section(r, d, path)

    lp = sec.open("latency_p99", {"metric": None, "threshold": 0.5, "for": "2m"}, required=("metric",))
    latency = model.LatencyP99(metric=_histogram(r, lp.raw["metric"], lp.path + ("metric",)),
                               threshold=lp.num("threshold", "0.5 (seconds)", 0, lo_open=True), for_=lp.dur("for"))
    pl = sec.open("pool", {"in_use": None, "max": None, "waiting": None, "saturation_ratio": 0.9,
                           "max_waiting": 5, "for": "1m"}, required=("in_use", "max", "waiting"))
    pool = model.Pool(in_use=pl.sel("in_use", 'db_pool_connections_in_use{job="api"}'),
                      max=pl.sel("max", 'db_pool_connections_max{job="api"}'),
                      waiting=pl.sel("waiting", 'db_pool_waiting_requests{job="api"}'),
                      saturation_ratio=pl.num("saturation_ratio", "0.9", 0, 1, True),
                      max_waiting=pl.num("max_waiting", "5", 0), for_=pl.dur("for"))
    cn = sec.open("connections", {"saturation_ratio": 0.8, "for": "2m"})
    connections = model.Connections(saturation_ratio=cn.num("saturation_ratio", "0.8", 0, 1, True), for_=cn.dur("for"))
    ss = sec.open("slow_statements", {"mean_seconds": 0.1, "min_calls_per_second": 0.5,
                                      "regression_factor": 5, "for": "2m"})
    slow = model.SlowStatements(mean_seconds=ss.num("mean_seconds", "0.1 (seconds)", 0, lo_open=True),
                                min_calls_per_second=ss.num("min_calls_per_second", "0.5", 0),
                                regression_factor=ss.num("regression_factor", "5", 1, lo_open=True),
                                for_=ss.dur("for"))
    sq = sec.open("seq_scans", {"min_live_rows": 100000, "rows_read_per_second": 1000000, "for": "2m"})
    seq = model.SeqScans(min_live_rows=int(sq.num("min_live_rows", "100000", 0, integer=True)),
                         rows_read_per_second=sq.num("rows_read_per_second", "1000000", 0, lo_open=True),
                         for_=sq.dur("for"))
    lw = sec.open("lock_waits", {"max_waiting_sessions": 5, "for": "2m"})
    locks = model.LockWaits(max_waiting_sessions=int(lw.num("max_waiting_sessions", "5", 0, integer=True)),
                            for_=lw.dur("for"))
    lt = sec.open("long_transactions", {"max_seconds": 300, "for": "1m"})
    longtx = model.LongTransactions(max_seconds=lt.num("max_seconds", "300", 0, lo_open=True), for_=lt.dur("for"))
    return model.Database(exporter_job=job, latency_p99=latency, pool=pool, connections=connections,
                          slow_statements=slow, seq_scans=seq, lock_waits=locks, long_transactions=longtx)


class _Section:
    """One database sub-section with defaults: `open` checks the fields, then num/dur/sel read them."""

    def __init__(self, r: _Reader, parent: dict, path: tuple):
        self.r, self.parent, self.path = r, parent, path

    def open(self, key: str, defaults: dict, required: tuple[str, ...] = ()) -> _Field:
        path = self.path + (key,)
        raw = self.parent.get(key, {})
        hints = {k: (str(v) if v is not None else "<selector>") for k, v in defaults.items()}
        self.r.mapping(raw if raw is not None else {}, path, hints, required)
        return _Field(self.r, {**{k: v for k, v in defaults.items() if v is not None}, **(raw or {})}, path)


class _Field:
    def __init__(self, r: _Reader, raw: dict, path: tuple):
        self.r, self.raw, self.path = r, raw, path

    def num(self, key, example, lo=None, hi=None, hi_open=False, lo_open=False, integer=False) -> float:
        return self.r.number(self.raw[key], self.path + (key,), example, lo, hi, lo_open=lo_open, hi_open=hi_open,
                             integer=integer)

    def dur(self, key) -> model.Duration:
        return self.r.duration(self.raw[key], self.path + (key,), "2m")

    def sel(self, key, example) -> str:
        return self.r.selector(self.raw[key], self.path + (key,), example)
