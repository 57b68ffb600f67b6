"""Sloth prometheus/v1 and OpenSLO v1 files as input: what maps gives Sloth's recording-rule names and the same
numbers, what cannot be mapped is an error naming the file, line and field (exit 2, nothing written).

Specs are test-owned: tests/specs/sloth/{myservice,ledger,two-services}.yaml, tests/specs/openslo/{checkout,
search}.yaml, and tests/specs/sloth/defaults.yaml for links and the database section.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sloguard.outputs import render_all
from sloguard.spec import SpecError, load_defaults, load_specs
from sloguard.spec.model import EventsSLI, LatencySLI
from tests.conftest import API_SPEC, SPECS_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATE = os.path.join(ROOT, "generate.py")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SLOTH = Path(SPECS_DIR, "sloth")
OPENSLO = Path(SPECS_DIR, "openslo")
DEFAULTS = str(SLOTH / "defaults.yaml")
SLOTH_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]   # Sloth's SLI rules for a 30d period
SLOTH_META = ["slo:objective:ratio", "slo:error_budget:ratio", "slo:time_period:days", "slo:current_burn_rate:ratio",
              "slo:period_burn_rate:ratio", "slo:period_error_budget_remaining:ratio", "sloth_slo_info"]


@pytest.fixture(scope="module")
def defaults():
    return load_defaults(DEFAULTS)


def rules_of(specs) -> list[dict]:
    files = render_all(specs)
    return [r for path, text in sorted(files.items()) if path.startswith("alerts/") and "kubernetes" not in path
            for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------------------------ Sloth, mapped

def test_sloth_getting_started_gives_sloths_rule_names_and_labels(defaults):
    (spec,) = load_specs(str(SLOTH / "myservice.yaml"), defaults)
    assert spec.slos[0].sli == EventsSLI(total='http_request_duration_seconds_count{job="myservice"}',
                                         errors='http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}')
    rules = rules_of(spec)
    sli = [r for r in rules if r.get("record", "").startswith("slo:sli_error:ratio_rate")]
    assert [r["record"] for r in sli] == [f"slo:sli_error:ratio_rate{w}" for w in SLOTH_WINDOWS]
    for rule, window in zip(sli, SLOTH_WINDOWS, strict=True):
        assert rule["labels"] == {"category": "availability", "owner": "myteam", "repo": "myorg/myservice",
                                  "team": "payments-sre", "tier": "2", "sloth_id": "myservice-requests-availability",
                                  "sloth_service": "myservice", "sloth_slo": "requests-availability",
                                  "sloth_window": window}
    records = [r["record"] for r in rules if "record" in r]
    assert all(name in records for name in SLOTH_META)
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    # plus what Sloth does not give: database alerts on the defaults' exporter job, links on every alert
    assert 'job="pg-main"' in alerts["PostgresSeqScanLargeTable"]["expr"]
    assert alerts["RequestsAvailabilityErrorBudgetBurn"]["annotations"]["runbook_url"].startswith(
        "https://wiki.example.org/sre/runbooks/high-latency-response.md#")
    assert any("alerting: name, labels, annotations, page_alert, ticket_alert not used" in n for n in spec.notes)


def test_sloth_latency_difference_becomes_a_histogram_sli(defaults):
    (spec,) = load_specs(str(SLOTH / "ledger.yaml"), defaults)
    by_name = {s.name: s for s in spec.slos}
    assert by_name["grpc-latency"].sli == LatencySLI(
        metric='grpc_server_handling_seconds{grpc_service="ledger.v1.Ledger"}', threshold=0.25)
    assert by_name["grpc-latency"].labels == {"category": "latency"}
    assert by_name["batch-writes"].sli == EventsSLI(total="ledger_batch_writes_total",
                                                    errors='ledger_batch_writes_total{result="failed"}')
    assert [s.objective for s in spec.slos] == [0.9995, 0.99, 0.995]
    assert all(s.window.text == "30d" for s in spec.slos)


def test_sloth_file_with_two_documents_gives_two_services(defaults):
    specs = load_specs(str(SLOTH / "two-services.yaml"), defaults)
    assert [(s.service, [x.name for x in s.slos]) for s in specs] == [("auth", ["login-availability"]),
                                                                      ("notifier", ["delivery"])]
    assert specs[1].labels == {"owner": "messaging", "team": "payments-sre"}


def _promtool_test(tmp_path: Path, rules: list[dict], series: list[dict], cases: list[dict]) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}, sort_keys=False))
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "15s",
            "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": cases}]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([PROMTOOL, "test", "rules", "t.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _labels_text(rule: dict) -> str:
    """The labels of a recorded series as promtool prints them once `bool` dropped the name."""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(rule["labels"].items())) + "}"


def _close(expr: str, value: float, labels: str) -> dict:
    """rate() extrapolates in floats: compare within 1e-9 rather than bit for bit."""
    return {"expr": f"abs(({expr}) - {value!r}) < bool 1e-9", "eval_time": "10m",
            "exp_samples": [{"labels": labels, "value": 1}]}


def _per_15s(rate: float) -> str:
    return f"0+{rate * 15:g}x80"


def test_mapped_sloth_slis_record_what_sloths_own_queries_compute(defaults, tmp_path):
    """The recorded 5m error ratio equals Sloth's (error_query)/(total_query) with {{.window}} = 5m, evaluated by
    Prometheus on the same series, and the value computed here from the rates."""
    specs = [*load_specs(str(SLOTH / "myservice.yaml"), defaults), *load_specs(str(SLOTH / "ledger.yaml"), defaults)]
    rules = [r for r in rules_of(specs) if r.get("record") == "slo:sli_error:ratio_rate5m"]
    series = [
        {"series": 'http_request_duration_seconds_count{job="myservice",code="200"}', "values": _per_15s(8)},
        {"series": 'http_request_duration_seconds_count{job="myservice",code="429"}', "values": _per_15s(1)},
        {"series": 'http_request_duration_seconds_count{job="myservice",code="503"}', "values": _per_15s(1)},
        {"series": 'grpc_server_handled_total{grpc_service="ledger.v1.Ledger",grpc_code="OK"}', "values": _per_15s(19)},
        {"series": 'grpc_server_handled_total{grpc_service="ledger.v1.Ledger",grpc_code="Internal"}',
         "values": _per_15s(1)},
        {"series": 'grpc_server_handling_seconds_count{grpc_service="ledger.v1.Ledger"}', "values": _per_15s(10)},
        {"series": 'grpc_server_handling_seconds_bucket{grpc_service="ledger.v1.Ledger",le="0.25"}',
         "values": _per_15s(9)},
        {"series": 'ledger_batch_writes_total{result="ok"}', "values": _per_15s(3)},
        {"series": 'ledger_batch_writes_total{result="failed"}', "values": _per_15s(1)},
    ]
    expected = {"requests-availability": 2 / 10, "grpc-availability": 1 / 20, "grpc-latency": 1 / 10,
                "batch-writes": 1 / 4}
    cases = [_close(f'slo:sli_error:ratio_rate5m{{sloth_slo="{slo}"}}', value,
                    _labels_text(next(r for r in rules if r["labels"]["sloth_slo"] == slo)))
             for slo, value in expected.items()]
    for path in (SLOTH / "myservice.yaml", SLOTH / "ledger.yaml"):   # Sloth's own expression, window = 5m
        for slo in yaml.safe_load(path.read_text())["slos"]:
            ev = slo["sli"]["events"]
            sloth_expr = "(" + ev["error_query"] + ")\n/\n(" + ev["total_query"] + ")"
            sloth_expr = sloth_expr.replace("{{.window}}", "5m").replace("{{ .window }}", "5m")
            cases.append(_close(sloth_expr, expected[slo["name"]], "{}"))
    _promtool_test(tmp_path, rules, series, cases)


# ------------------------------------------------------------------------------------------------ OpenSLO, mapped

def test_openslo_inline_indicators_and_windows(defaults):
    (spec,) = load_specs(str(OPENSLO / "checkout.yaml"), defaults)
    assert spec.service == "checkout" and [s.name for s in spec.slos] == ["checkout-availability", "payment-capture"]
    first, second = spec.slos
    assert first.sli == EventsSLI(total="checkout_http_requests_total",
                                  errors='checkout_http_requests_total{code=~"5.."}')
    assert (first.objective, first.window.text, first.labels) == (0.995, "28d", {"tier": "critical"})
    assert (second.objective, second.window.seconds) == (0.999, 28 * 86400)
    assert second.sli.errors == 'payment_captures_total{result="failed"}'


def test_openslo_indicator_ref_good_bucket_is_a_latency_sli(defaults, tmp_path):
    (spec,) = load_specs(str(OPENSLO / "search.yaml"), defaults)
    (slo,) = spec.slos
    assert slo.sli == LatencySLI(metric='search_request_duration_seconds{job="search"}', threshold=0.3)
    assert (slo.objective, slo.window.text) == (0.99, "7d")
    assert any("AlertPolicy" in n for n in spec.notes)
    rules = [r for r in rules_of(spec) if r.get("record") == "slo:sli_error:ratio_rate5m"]
    series = [{"series": 'search_request_duration_seconds_count{job="search"}', "values": _per_15s(20)},
              {"series": 'search_request_duration_seconds_bucket{job="search",le="0.3"}', "values": _per_15s(15)}]
    _promtool_test(tmp_path, rules, series, [_close("slo:sli_error:ratio_rate5m", 0.25, _labels_text(rules[0]))])


# ---------------------------------------------------------------------------------------------- CLI, mixed inputs

def test_cli_mixes_native_sloth_and_openslo_specs_in_one_run(tmp_path):
    specs = tmp_path / "slos"
    specs.mkdir()
    for src in (Path(API_SPEC), SLOTH / "myservice.yaml", SLOTH / "ledger.yaml", SLOTH / "two-services.yaml",
                OPENSLO / "checkout.yaml", OPENSLO / "search.yaml"):
        shutil.copy(src, specs / src.name)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, GENERATE, "--spec", str(specs), "--defaults", DEFAULTS, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = ["api", "auth", "checkout", "ledger", "myservice", "notifier", "search"]
    assert sorted(p.name for p in (out / "alerts").glob("*.yaml")) == [f"sloguard-{s}-rules.yaml" for s in services]
    assert "warning:" in proc.stderr and "not used" in proc.stderr
    check = subprocess.run([PROMTOOL, "check", "rules", *sorted(map(str, (out / "alerts").glob("*.yaml")))],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cli_sloth_without_defaults_exits_2_and_says_what_to_pass(tmp_path):
    proc = subprocess.run([sys.executable, GENERATE, "--spec", str(SLOTH / "myservice.yaml"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--defaults" in proc.stderr and "myservice.yaml" in proc.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- what cannot be mapped

def _mutated(tmp_path: Path, source: Path, old: str, new: str) -> str:
    text = source.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / source.name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return str(path)


MYSERVICE_EVENTS = """      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))"""
LEDGER_BUCKET = 'grpc_server_handling_seconds_bucket{grpc_service="ledger.v1.Ledger",le="0.25"}'

SLOTH_ERRORS = [
    ("raw SLI", "myservice", MYSERVICE_EVENTS,
     "      raw:\n        error_ratio_query: sum(rate(errors[{{.window}}])) / sum(rate(all[{{.window}}]))",
     "slos[0].sli.raw", "raw SLI"),
    ("plugin SLI", "myservice", MYSERVICE_EVENTS,
     '      plugin:\n        id: "sloth-common/kubernetes/apiserver/availability"', "slos[0].sli.plugin", "plugins"),
    ("spec plugins", "myservice", "slos:\n", "slo_plugins:\n  chain:\n    - id: x\nslos:\n", "slo_plugins", "plugins"),
    ("SLO plugins", "myservice", "    objective: 99.9\n", "    objective: 99.9\n    plugins:\n      chain: [{id: x}]\n",
     "slos[0].plugins", "plugins"),
    ("no window", "myservice", 'code=~"(5..|429)"}[{{.window}}]', 'code=~"(5..|429)"}[5m]',
     "slos[0].sli.events.error_query", "{{.window}}"),
    ("grouped query", "myservice", "error_query: sum(rate(", "error_query: sum by (code) (rate(",
     "slos[0].sli.events.error_query", "can be mapped"),
    ("arithmetic total", "myservice", "total_query: sum(rate(http_request_duration_seconds_count{job=\"myservice\"}"
     "[{{.window}}]))", "total_query: 2 * sum(rate(x_total[{{.window}}]))", "slos[0].sli.events.total_query",
     "can be mapped"),
    ("same queries", "myservice", '{job="myservice",code=~"(5..|429)"}', '{job="myservice"}',
     "slos[0].sli.events.error_query", "same series"),
    ("alerts disabled", "myservice", "      name: MyServiceHighErrorRate\n",
     "      name: MyServiceHighErrorRate\n      disable: true\n", "slos[0].alerting.disable", "cannot be disabled"),
    ("page disabled", "myservice", "      page_alert:\n", "      page_alert:\n        disable: true\n",
     "slos[0].alerting.page_alert.disable", "cannot be disabled"),
    ("service name", "myservice", 'service: "myservice"', 'service: "MyService"', "service", "not a valid name"),
    ("objective 100", "myservice", "objective: 99.9", "objective: 100", "slos[0].objective", "out of range"),
    ("unknown SLO field", "myservice", "    objective: 99.9\n", "    objective: 99.9\n    window: 28d\n",
     "slos[0].window", "unknown field"),
    ("latency on another histogram", "ledger", LEDGER_BUCKET,
     'grpc_client_handling_seconds_bucket{grpc_service="ledger.v1.Ledger",le="0.25"}',
     "slos[1].sli.events.error_query", "not a histogram"),
    ("latency le regex", "ledger", LEDGER_BUCKET, LEDGER_BUCKET.replace('le="0.25"', 'le=~"0.25"'),
     "slos[1].sli.events.error_query", "not a histogram"),
]


CHECKOUT_WINDOW = "  timeWindow:\n    - duration: 28d\n      isRolling: true\n"
OPENSLO_ERRORS = [
    ("calendar window", "checkout", CHECKOUT_WINDOW,
     "  timeWindow:\n    - duration: 1w\n      calendar: {startTime: '2024-01-01 00:00:00', timeZone: UTC}\n",
     "spec.timeWindow[0].isRolling", "calendar"),
    ("month window", "checkout", "duration: 28d", "duration: 1M", "spec.timeWindow[0].duration", "months"),
    ("timeslices", "checkout", "budgetingMethod: Occurrences", "budgetingMethod: Timeslices", "spec.budgetingMethod",
     "cannot be mapped"),
    ("two objectives", "checkout", "      target: 0.995\n", "      target: 0.995\n    - target: 0.99\n",
     "spec.objectives", "exactly one objective"),
    ("threshold objective", "checkout", "      target: 0.995\n", "      target: 0.995\n      op: lte\n",
     "spec.objectives[0].op", "cannot be mapped"),
    ("not a counter", "checkout", "        counter: true\n", "        counter: false\n",
     "spec.indicator.spec.ratioMetric.counter", "only counter ratios"),
    ("another source", "checkout", "            type: Prometheus\n", "            type: Datadog\n",
     "spec.indicator.spec.ratioMetric.bad.metricSource.type", "Datadog"),
    ("good that is no bucket", "checkout", "        bad:\n", "        good:\n",
     "spec.indicator.spec.ratioMetric.good", "latency SLI"),
    ("query not a selector", "checkout", 'query: sum(rate(checkout_http_requests_total{code=~"5.."}[5m]))',
     'query: sum by (code) (rate(checkout_http_requests_total{code=~"5.."}[5m]))',
     "spec.indicator.spec.ratioMetric.bad.metricSource.spec.query", "can be mapped"),
    ("unknown kind", "checkout", "kind: Service", "kind: Dashboard", "kind", "unknown kind"),
    ("old apiVersion", "checkout", "apiVersion: openslo/v1\nkind: SLO", "apiVersion: openslo/v1alpha\nkind: SLO",
     "apiVersion", "not supported"),
    ("missing SLI document", "search", "indicatorRef: search-fast", "indicatorRef: search-slow", "spec.indicatorRef",
     "no kind: SLI"),
    ("raw ratio", "search", "    good:\n", "    rawType: success\n    raw:\n", "spec.ratioMetric.raw", "raw ratio"),
    ("bucket of another histogram", "search", 'query: search_request_duration_seconds_count{job="search"}',
     'query: search_request_duration_seconds_count{job="search",region="eu"}', "spec.ratioMetric.good",
     "latency SLI"),
]


UNMAPPABLE = [(SLOTH, *c) for c in SLOTH_ERRORS] + [(OPENSLO, *c) for c in OPENSLO_ERRORS]


@pytest.mark.parametrize("case", UNMAPPABLE, ids=[f"{c[0].name}-{c[1]}" for c in UNMAPPABLE])
def test_unmappable_fields_are_named_with_file_line_and_fix(case, tmp_path, defaults):
    folder, _, name, old, new, field, words = case
    path = _mutated(tmp_path, folder / f"{name}.yaml", old, new)
    with pytest.raises(SpecError) as exc:
        load_specs(path, defaults)
    err = exc.value
    assert (err.file, err.field) == (path, field), str(err)
    assert err.line and words in str(err) and "Fix:" in str(err)


def test_cli_unmappable_sloth_field_exits_2_and_writes_nothing(tmp_path):
    path = _mutated(tmp_path, SLOTH / "myservice.yaml", MYSERVICE_EVENTS,
                    "      raw:\n        error_ratio_query: sum(rate(e[{{.window}}])) / sum(rate(t[{{.window}}]))")
    proc = subprocess.run([sys.executable, GENERATE, "--spec", path, "--defaults", DEFAULTS, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{path}:" in proc.stderr and "slos[0].sli.raw" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_defaults_file_errors_name_the_defaults_file(tmp_path):
    bad = tmp_path / "defaults.yaml"
    bad.write_text(Path(DEFAULTS).read_text().replace("threshold: 0.8", "threshold: -1"))
    with pytest.raises(SpecError) as exc:
        load_defaults(str(bad))
    assert exc.value.file == str(bad) and exc.value.field == "database.latency_p99.threshold"
    bad.write_text(Path(DEFAULTS).read_text() + "slos: []\n")
    with pytest.raises(SpecError) as exc:
        load_defaults(str(bad))
    assert exc.value.field == "slos" and "unknown field" in str(exc.value)


def test_readme_fleet_commands_run(tmp_path):
    """The README's "Many services" block, each command run as written (outputs moved under tmp_path)."""
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    section = text.split("## Many services", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and all(c.startswith(".venv/bin/python generate.py ") for c in commands)
    for command in commands:
        argv = command.replace("/tmp/", f"{tmp_path}/").split()
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    services = {p.name for p in (tmp_path / "converted" / "alerts").glob("*.yaml")}
    assert services == {f"sloguard-{s}-rules.yaml" for s in ("myservice", "ledger", "auth", "notifier", "checkout",
                                                              "search")}
    assert len(list((tmp_path / "fleet" / "alerts").glob("*.yaml"))) == 4
    assert len(list((tmp_path / "two" / "alerts").glob("*.yaml"))) == 2
