"""The spec loader rejects malformed specs with file, line, field and fix; the JSON Schema agrees with it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest
import yaml

from sloguard.spec import SpecError, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A complete spec with known line numbers (line N = N-th line below). Cases edit one line each.
BASE = """\
version: 1
service: api
labels:
  team: api-platform
links:
  runbook: https://example.com/runbooks/high-latency-response.md
  grafana: http://localhost:3000
slos:
  - name: availability
    description: Requests answered without a server error.
    objective: 99.9
    window: 30d
    sli:
      events:
        total: http_requests_total{job="api"}
        errors: http_requests_total{job="api",code=~"5.."}
  - name: latency
    description: 99% of requests under 0.5 s.
    objective: 99
    window: 30d
    sli:
      latency:
        metric: http_request_duration_seconds{job="api"}
        threshold: 0.5
alerting:
  page:
    for: 2m
    min_events: 10
    windows:
      - {long: 1h, short: 5m, budget_fraction: 0.02}
      - {long: 6h, short: 30m, budget_fraction: 0.05}
  ticket:
    for: 15m
    windows:
      - {long: 1d, short: 2h, budget_fraction: 0.1}
      - {long: 3d, short: 6h, budget_fraction: 0.1}
database:
  exporter_job: sloguard-pg-exporter
  latency_p99:
    metric: http_request_duration_seconds{job="api"}
    threshold: 0.5
  pool:
    in_use: db_pool_connections_in_use{job="api"}
    max: db_pool_connections_max{job="api"}
    waiting: db_pool_waiting_requests{job="api"}
  seq_scans:
    min_live_rows: 100000
"""


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, f"test bug: {old!r} must occur once in BASE"
    return BASE.replace(old, new)


def line_of(text: str, needle: str | tuple[str, int]) -> int:
    """1-based line of `needle` (or of its n-th occurrence): a line that is exactly it (after stripping '- '),
    else a line containing it."""
    needle, nth = needle if isinstance(needle, tuple) else (needle, 1)
    lines = text.splitlines()
    exact = [i for i, line in enumerate(lines, 1) if line.strip().lstrip("- ") == needle]
    return (exact or [i for i, line in enumerate(lines, 1) if needle in line])[nth - 1]


# (id, spec text, field, words in the problem, words in the fix, line anchor (text or (text, n-th)) or None,
#  whether slo.schema.json can express the rule and must reject it too)
CASES = [
    ("unknown-top-field", BASE + "slo: []\n", "slo", "unknown field 'slo'", "slos", "slo: []", True),
    ("unknown-slo-field", edit("    objective: 99.9\n", "    objective: 99.9\n    target: 99.9\n"),
     "slos[0].target", "unknown field 'target'", "objective", "target: 99.9", True),
    ("typo-suggestion", edit("    window: 30d\n    sli:\n      events", "    windw: 30d\n    sli:\n      events"),
     "slos[0].windw", "unknown field", "did you mean 'window'", "windw: 30d", True),
    ("objective-100", edit("objective: 99.9", "objective: 100"), "slos[0].objective", "out of range",
     "99.9", "objective: 100", True),
    ("objective-0", edit("objective: 99\n", "objective: 0\n"), "slos[1].objective", "out of range", "percent",
     "objective: 0", True),
    ("objective-string", edit("objective: 99.9", "objective: '99.9%'"), "slos[0].objective", "expected a number",
     "no quotes", "objective: '99.9%'", True),
    ("objective-ratio-too-big", edit("objective: 99.9", "objective: 999"), "slos[0].objective", "out of range",
     "percent", "objective: 999", True),
    ("window-not-duration", edit("    window: 30d\n    sli:\n      events", "    window: 30 days\n    sli:\n      events"),
     "slos[0].window", "not a duration", "30d", "window: 30 days", True),
    ("window-number", edit("    window: 30d\n    sli:\n      latency", "    window: 30\n    sli:\n      latency"),
     "slos[1].window", "not a duration", "30d", "window: 30", True),
    ("window-ms", edit("    window: 30d\n    sli:\n      latency", "    window: 500ms\n    sli:\n      latency"),
     "slos[1].window", "not a duration", "30d", "window: 500ms", True),
    ("selector-unclosed", edit('total: http_requests_total{job="api"}', 'total: http_requests_total{job="api"'),
     "slos[0].sli.events.total", "invalid PromQL selector", "http_requests_total", "total: http_requests_total", True),
    ("selector-unquoted", edit('errors: http_requests_total{job="api",code=~"5.."}',
                               'errors: http_requests_total{job=api,code=~"5.."}'),
     "slos[0].sli.events.errors", "cannot read a label matcher", 'code=~"5.."', "errors: http_requests_total", True),
    ("selector-bad-metric", edit('total: http_requests_total{job="api"}', 'total: 5xx_total{job="api"}'),
     "slos[0].sli.events.total", "not a metric name", "http_requests_total", "total: 5xx_total", True),
    ("selector-bad-regex", edit('code=~"5.."', 'code=~"5(.."'), "slos[0].sli.events.errors", "regex", "e.g.",
     "errors: http_requests_total", False),
    ("latency-threshold-missing", edit("        threshold: 0.5\nalerting", "alerting"), "slos[1].sli.latency",
     "missing required field 'threshold'", "threshold:", "latency:", True),
    ("latency-threshold-negative", edit("        threshold: 0.5\nalerting", "        threshold: -1\nalerting"),
     "slos[1].sli.latency.threshold", "out of range", "0.5", "threshold: -1", True),
    ("latency-metric-bucket", edit('        metric: http_request_duration_seconds{job="api"}\n        threshold',
                                   '        metric: http_request_duration_seconds_bucket{job="api"}\n        threshold'),
     "slos[1].sli.latency.metric", "base name", "http_request_duration_seconds", "metric: http_request_duration_seconds_bucket", False),
    ("sli-both-kinds", edit("      latency:\n        metric", "      events: {total: a_total, errors: b_total}\n      latency:\n        metric"),
     "slos[1].sli", "exactly one", "events", ("sli:", 2), True),
    ("sli-missing", edit("    window: 30d\n    sli:\n      latency:\n", "    window: 30d\n    slx:\n      latency:\n"),
     "slos[1].slx", "unknown field", "sli", "slx:", True),
    ("duplicate-slo-name", edit("  - name: latency", "  - name: availability"), "slos[1].name",
     "duplicate SLO name 'availability'", "unique", ("name: availability", 2), False),
    ("slo-name-uppercase", edit("  - name: latency", "  - name: Latency"), "slos[1].name", "not a valid SLO name",
     "lowercase", "name: Latency", True),
    ("short-ge-long", edit("{long: 1h, short: 5m,", "{long: 1h, short: 1h,"), "alerting.page.windows[0].short",
     "must be shorter than the long window 1h", "5m", "long: 1h, short: 1h", False),
    ("budget-fraction-zero", edit("{long: 6h, short: 30m, budget_fraction: 0.05}", "{long: 6h, short: 30m, budget_fraction: 0}"),
     "alerting.page.windows[1].budget_fraction", "out of range", "0.02", "long: 6h", True),
    ("for-not-duration", edit("    for: 15m", "    for: soon"), "alerting.ticket.for", "not a duration", "2m",
     "for: soon", True),
    ("min-request-rate-replaced", edit("alerting:\n", "alerting:\n  min_request_rate: 1\n"), "alerting.min_request_rate",
     "was replaced by a minimum number of requests in the short window", "page.min_events", "min_request_rate: 1",
     True),
    ("min-events-negative", edit("min_events: 10", "min_events: -1"), "alerting.page.min_events", "out of range",
     "0 disables", "min_events: -1", True),
    ("min-events-fraction", edit("min_events: 10", "min_events: 2.5"), "alerting.page.min_events",
     "whole number", "10", "min_events: 2.5", True),
    ("ticket-min-events", edit("    for: 15m\n", "    for: 15m\n    min_events: 5\n"), "alerting.ticket.min_events",
     "unknown field 'min_events'", "for, windows", "min_events: 5", True),
    ("severity-not-a-severity", edit("alerting:\n", "alerting:\n  severities: {latency_p99: page}\n"),
     "alerting.severities.latency_p99", "'page' is not a severity", "critical, warning, info", "severities:", True),
    ("severity-unknown-family", edit("alerting:\n", "alerting:\n  severities:\n    latency: warning\n"),
     "alerting.severities.latency", "unknown field 'latency'", "did you mean 'latency_p99'", "latency: warning", True),
    ("slos-empty", edit("slos:\n  - name: availability", "slos: []\nxslos:\n  - name: availability"), "xslos",
     "unknown field", "slos", "xslos:", True),
    ("service-missing", edit("service: api\n", ""), "(top level)", "missing required field 'service'", "service: api",
     "version: 1", True),
    ("runbook-not-url", edit("runbook: https://example.com/runbooks/high-latency-response.md", "runbook: runbooks/x.md"),
     "links.runbook", "not an http(s) URL", "https://", "runbook: runbooks/x.md", True),
    ("label-reserved", edit("  team: api-platform", "  severity: high"), "labels.severity", "cannot be a label name",
     "team", "severity: high", True),
    ("labels-list", edit("labels:\n  team: api-platform", "labels:\n  - team"), "labels", "expected a mapping",
     "team: api-platform", "labels:", True),
    ("slos-empty-list", BASE[:BASE.index("slos:")] + "slos: []\n" + BASE[BASE.index("alerting:"):], "slos",
     "non-empty list", "add at least one SLO", "slos: []", True),
    ("pool-selector-missing", edit('    waiting: db_pool_waiting_requests{job="api"}\n', ""), "database.pool",
     "missing required field 'waiting'", "waiting:", "pool:", True),
    ("seq-scan-rows-fraction", edit("min_live_rows: 100000", "min_live_rows: 1.5"), "database.seq_scans.min_live_rows",
     "whole number", "100000", "min_live_rows: 1.5", True),
    ("window-shorter-than-burn-window", edit("    window: 30d\n    sli:\n      events", "    window: 2d\n    sli:\n      events"),
     "slos[0].window", "shorter than the burn-rate window 3d", "at least 3d", "window: 2d", False),
    ("duplicate-yaml-key", edit("    objective: 99\n", "    objective: 99\n    objective: 98\n"), "slos[1].objective",
     "duplicate key 'objective'", "YAML", "objective: 98", False),
    ("yaml-syntax", edit("    window: 30d\n    sli:\n      events", "    window: [30d\n    sli:\n      events"),
     "(YAML)", "not valid YAML", "YAML syntax", None, False),
    ("slo-name-too-long-for-alert", edit("  - name: latency", "  - name: checkout-payment-latency-europe"),
     "slos[1].name", "longer than 40 characters", "at most 25", "name: checkout-payment-latency-europe", False),
    ("version-2", edit("version: 1", "version: 2"), "version", "unsupported spec version 2", "version: 1",
     "version: 2", True),
    # Python's re accepts these, Prometheus' RE2 does not: promtool would reject the generated rules
    ("selector-regex-lookahead", edit('code=~"5.."', 'code=~"5(?!04).."'), "slos[0].sli.events.errors",
     "lookaround", "e.g.", "errors: http_requests_total", False),
    ("selector-regex-backreference", edit('code=~"5.."', 'code=~"(5)\\\\1."'), "slos[0].sli.events.errors",
     "backreference", "e.g.", "errors: http_requests_total", False),
    ("selector-regex-possessive", edit('code=~"5.."', 'code=~"5.++"'), "slos[0].sli.events.errors",
     "possessive quantifier", "e.g.", "errors: http_requests_total", False),
    ("exporter-job-quote", edit("exporter_job: sloguard-pg-exporter", "exporter_job: 'pg\"x'"),
     "database.exporter_job", "not a usable Prometheus job name", "sloguard-pg-exporter", "exporter_job:", True),
    ("runbook-with-fragment", edit("runbook: https://example.com/runbooks/high-latency-response.md",
                                   "runbook: https://example.com/runbooks/high-latency-response.md#top"),
     "links.runbook", "already has a '#' fragment", "without '#", "runbook: https://", True),
    ("label-value-template", edit("  team: api-platform", "  team: '{{ $value }}'"), "labels.team",
     "contains a template", "fixed value", "team: '{{ $value }}'", True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_rejected_with_file_line_field_and_fix(case):
    _id, text, field, problem, fix, anchor, _schema = case
    with pytest.raises(SpecError) as info:
        parse_spec(text, "specs/bad.yaml")
    err = info.value
    assert err.file == "specs/bad.yaml"
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert fix in err.fix, str(err)
    if anchor is not None:
        assert err.line == line_of(text, anchor), str(err)
    message = str(err)
    assert message.startswith(f"specs/bad.yaml:{err.line}: {field}: ") if err.line else message.startswith("specs/bad.yaml")
    assert "Fix: " in message


def test_there_are_at_least_20_malformed_cases():
    assert len(CASES) >= 20


@pytest.fixture(scope="module")
def schema():
    with open(os.path.join(ROOT, "slo.schema.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def test_repo_spec_and_base_satisfy_loader_and_schema(schema):
    with open(os.path.join(ROOT, "slo.yaml"), encoding="utf-8") as fh:
        repo_text = fh.read()
    for text in (repo_text, BASE):
        parse_spec(text)                                    # raises on any problem
        errors = list(schema.iter_errors(yaml.safe_load(text)))
        assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("case", [c for c in CASES if c[6] and c[0] != "yaml-syntax"], ids=lambda c: c[0])
def test_schema_rejects_what_the_loader_rejects(case, schema):
    data = yaml.safe_load(case[1])
    assert list(schema.iter_errors(data)), f"slo.schema.json accepts {case[0]}, the loader rejects it"


def _schema_fields(node: dict, path: str, out: set):
    for key, sub in node.get("properties", {}).items():
        out.add(f"{path}.{key}" if path else key)
        _schema_fields(sub, f"{path}.{key}" if path else key, out)
    if "items" in node:
        _schema_fields(node["items"], f"{path}[]", out)


def test_schema_and_loader_know_the_same_fields(schema):
    """Every field the schema documents is accepted by the loader, and every unknown one is refused by both."""
    fields: set[str] = set()
    _schema_fields(schema.schema, "", fields)
    for name in ("service", "slos[].objective", "slos[].sli.latency.threshold", "alerting.page.windows[].short",
                 "database.long_transactions.max_seconds", "database.pool.max_waiting"):
        assert name in fields
    # each documented optional field, set to its schema default, still loads
    data = yaml.safe_load(BASE)
    data["database"]["connections"] = {"saturation_ratio": 0.8, "for": "2m"}
    data["database"]["slow_statements"] = {"mean_seconds": 0.1, "min_calls_per_second": 0.5,
                                           "regression_factor": 5, "for": "2m"}
    data["database"]["lock_waits"] = {"max_waiting_sessions": 5, "for": "2m"}
    data["database"]["long_transactions"] = {"max_seconds": 300, "for": "1m"}
    data["alerting"]["severities"] = {family: node["default"] for family, node in
                                      schema.schema["properties"]["alerting"]["properties"]["severities"]["properties"].items()}
    assert not list(schema.iter_errors(data))
    assert parse_spec(yaml.safe_dump(data)).alerting.severities == data["alerting"]["severities"]
    from sloguard.spec.model import SEVERITY_DEFAULTS
    assert data["alerting"]["severities"] == SEVERITY_DEFAULTS   # the schema documents the loader's defaults


def test_severities_default_to_paging_only_on_burn_pages_and_outage_and_the_spec_can_set_each():
    from sloguard.rules.groups import build_groups

    def severities(text: str) -> dict[str, set[str]]:
        groups, _ = build_groups(parse_spec(text))
        out: dict[str, set[str]] = {}
        for rule in (r for g in groups for r in g["rules"] if "alert" in r):
            out.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
        return out

    default = severities(BASE)
    paging = {alert for alert, sev in default.items() if "critical" in sev}
    assert paging == {"AvailabilityErrorBudgetBurn", "LatencyErrorBudgetBurn", "SloTargetDown", "SloMetricAbsent"}
    assert default["ApiLatencyP99High"] == default["AppDbPoolSaturated"] == {"warning"}
    assert default["SloErrorBudgetLow"] == {"info"} and default["SloErrorBudgetExhausted"] == {"warning"}
    custom = severities(edit("alerting:\n", "alerting:\n  severities: {latency_p99: critical, pool: info, page: warning, "
                                               "database: info}\n"))
    assert custom["ApiLatencyP99High"] == {"critical"} and custom["AppDbPoolWaiters"] == {"info"}
    assert custom["AvailabilityErrorBudgetBurn"] == {"warning"}      # page pairs as warnings, tickets unchanged
    assert custom["PostgresStatementRegression"] == {"info"} and custom["SloTargetDown"] == {"critical"}


def test_defaults_apply_when_alerting_is_omitted():
    text = BASE[:BASE.index("alerting:")] + BASE[BASE.index("database:"):]
    spec = parse_spec(text)
    page = spec.alerting.page
    assert [(w.long.text, w.short.text, w.budget_fraction) for w in page.windows] == [("1h", "5m", 0.02), ("6h", "30m", 0.05)]
    assert page.for_.text == "1m" and spec.alerting.ticket.for_.text == "15m"
    assert page.min_events == 10 and spec.alerting.ticket.min_events == 0
    assert page.severity == "critical" and spec.alerting.severities["latency_p99"] == "warning"
    assert spec.database.connections.saturation_ratio == 0.8


def test_cli_exits_2_and_touches_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("objective: 99.9", "objective: 100"), encoding="utf-8")
    out = tmp_path / "out"
    (out / "alerts").mkdir(parents=True)
    existing = out / "alerts" / "sloguard-rules.yaml"
    existing.write_text("# previous output\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--spec", str(bad), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:{line_of(bad.read_text(), 'objective: 100')}: slos[0].objective:" in proc.stderr
    assert "Fix:" in proc.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_cli_missing_spec_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--spec", str(tmp_path / "nope.yaml"),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr and "cannot read" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_cli_non_utf8_spec_exits_2_with_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(edit("description: Requests answered", "description: Requêtes answered").encode("latin-1"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--spec", str(bad),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:{line_of(BASE, 'description: Requests answered')}: (file): not UTF-8" in proc.stderr
    assert "Fix: save the file as UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["", "--check"])
def test_cli_out_is_a_file_exits_2(tmp_path, flag):
    out = tmp_path / "not-a-dir"
    out.write_text("keep me\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--out", str(out),
                           *([flag] if flag else [])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"--out {out}: is a file, not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_text(encoding="utf-8") == "keep me\n"


def test_cli_unwritable_out_exits_2_without_traceback(tmp_path):
    (tmp_path / "alerts").write_text("a file where generate.py needs a directory\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.tmp"))
