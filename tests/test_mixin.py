"""The jsonnet mixin (Python binding of jsonnet, as kube-prometheus users evaluate it): its library builds the rules
from `_config` and, with the defaults, renders exactly what the Python generator writes; overrides in `_config`
reach the rendered alerts and dashboards; `+::` composition with another mixin keeps both."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import _jsonnet
import pytest
import yaml

from sloguard.dashboards import mixin
from sloguard.outputs import RULES_PATH, render_all
from sloguard.spec.model import Duration
from tests.fleet_specs import fleet_spec, fleet_spec_text

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
local m = %s + { _config+:: %s };
{ alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards, config: m._config }
"""
SLOGUARD = "(import 'mixin.libsonnet')"


def to_jsonnet(value) -> str:
    """JSON value as jsonnet; a key ending in '+' extends the inherited field (`services+: { api+: ... }`)."""
    if isinstance(value, dict):
        fields = [f"{json.dumps(k[:-1])}+: {to_jsonnet(v)}" if k.endswith("+") else f"{json.dumps(k)}: {to_jsonnet(v)}"
                  for k, v in value.items()]
        return "{ " + ", ".join(fields) + " }"
    return json.dumps(value)


def evaluate(files: dict[str, str], overrides: dict | None = None, mixins: str = SLOGUARD) -> dict:
    """Evaluate against the in-memory generated files (the library included): no disk output involved."""
    available = files

    def import_callback(directory: str, rel: str):
        path = os.path.normpath(os.path.join(directory, rel)).lstrip("/")
        if path not in available:
            raise RuntimeError(f"mixin imports {rel!r} ({path}), which is not a generated file")
        return path, available[path].encode()
    text = _jsonnet.evaluate_snippet("/main.jsonnet", SNIPPET % (mixins, to_jsonnet(overrides or {})),
                                     import_callback=import_callback)
    return json.loads(text)


def by_name(groups: list[dict]) -> list[dict]:
    return sorted(groups, key=lambda g: g["name"])


def rules_of(files: dict[str, str]) -> list[dict]:
    return by_name(yaml.safe_load(files[RULES_PATH])["groups"])


def mixed(out: dict) -> list[dict]:
    return by_name(out["alerts"]["groups"] + out["rules"]["groups"])


def alerts(out: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for group in out["alerts"]["groups"]:
        for rule in group["rules"]:
            found.setdefault(rule["alert"], []).append(rule)
    return found


# Specs unlike the example: 28d windows, latency SLOs, integer threshold (le regex "1([.]0*)?"), labels, another
# exporter job; no page guard, an objective so low that the fast pairs can never fire (skipped), other severities.
OTHER_SPECS = {
    "28d-latency-labels": fleet_spec_text("checkout", 3, "pg-checkout", "28d", "team: payments, tier: '1'",
                                          threshold="1"),
    "no-guard-low-objective-severities": fleet_spec_text("search", 2, objective="90", extra=(
        "alerting:\n  page: {for: 5m, min_events: 0, windows: [{long: 1h, short: 5m, budget_fraction: 0.02}, "
        "{long: 6h, short: 30m, budget_fraction: 0.05}]}\n  severities: {latency_p99: critical, budget_low: warning, "
        "outage: warning}\n")),
}


# ------------------------------------------------------------------------------------------ default render

@pytest.fixture(scope="module")
def default_out(rendered):
    return evaluate(rendered)


def test_default_render_equals_the_generated_rules(rendered, default_out):
    out = default_out
    assert mixed(out) == rules_of(rendered)
    assert all(any("alert" in r for r in g["rules"]) for g in out["alerts"]["groups"])
    assert all("record" in r for g in out["rules"]["groups"] for r in g["rules"])
    assert out["alerts"]["groups"] and out["rules"]["groups"]


@pytest.mark.parametrize("name", sorted(OTHER_SPECS))
def test_default_render_equals_the_generated_rules_of_other_specs(name):
    from sloguard.spec import parse_spec
    spec = parse_spec(OTHER_SPECS[name], f"{name}.yaml")
    files = render_all(spec)
    assert mixed(evaluate(files)) == rules_of(files)


@pytest.mark.parametrize("path", sorted((ROOT / "tests" / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_default_render_equals_the_generated_rules_of_the_test_owned_specs(path):
    from sloguard.spec import load_spec
    files = render_all(load_spec(str(path)))
    assert mixed(evaluate(files)) == rules_of(files)


def test_default_render_equals_the_generated_dashboards(rendered, default_out):
    out = default_out
    expected = {path.rsplit("/", 1)[-1]: json.loads(text) for path, text in rendered.items()
                if path.startswith("dashboards/") and path.endswith(".json")}
    assert len(expected) == 2
    assert out["dashboards"] == expected


def test_config_is_data_from_the_spec(spec, default_out):
    config = default_out["config"]
    assert config == mixin.default_config(spec)
    service = config["services"][spec.service]
    assert {s: v["objective"] for s, v in service["slos"].items()} == {s.name: s.objective for s in spec.slos}
    assert service["burnRateAlerts"]["page"]["for"] == spec.alerting.page.for_.text


# ------------------------------------------------------------------------------------------ overrides

def test_overriding_thresholds_renders_what_the_generator_renders_for_that_spec():
    """Objective, pool threshold and page `for:` changed in _config give exactly the rules Python generates for a
    spec with those values: the jsonnet builds from _config, it does not patch the generated text."""
    spec = fleet_spec("shop", 2, "pg-shop")
    overrides = {"services+": {"shop+": {
        "slos+": {"s1+": {"objective": 0.995}},
        "database+": {"pool+": {"saturationRatio": 0.75}},
        "burnRateAlerts+": {"page+": {"for": "5m"}},
    }}}
    changed = replace(
        spec,
        slos=(spec.slos[0], replace(spec.slos[1], objective=0.995)),
        database=replace(spec.database, pool=replace(spec.database.pool, saturation_ratio=0.75)),
        alerting=replace(spec.alerting, page=replace(spec.alerting.page, for_=Duration("5m", 300))),
    )
    out = evaluate(render_all(spec), overrides)
    assert mixed(out) == rules_of(render_all(changed))
    pool = alerts(out)["AppDbPoolSaturated"][0]
    assert pool["expr"].endswith("> 0.75") and "threshold 75%" in pool["annotations"]["description"]
    assert {r["for"] for r in alerts(out)["S1ErrorBudgetBurn"] if r["labels"]["severity"] == "critical"} == {"5m"}


def test_links_selector_and_dashboard_overrides(spec, rendered):
    overrides = {"grafanaUrl": "https://grafana.example.org", "runbookUrl": "https://wiki.example.org/rb.md",
                 "dashboardTags": ["db"], "dashboardRefresh": "1m", "datasource": "Thanos",
                 "services+": {spec.service + "+": {"exporterJob": "pg-eu1"}}}
    out = evaluate(rendered, overrides)
    for name, rules in alerts(out).items():
        for rule in rules:
            assert rule["annotations"]["dashboard_url"].startswith("https://grafana.example.org/d/"), name
            assert rule["annotations"]["runbook_url"].startswith("https://wiki.example.org/rb.md#"), name
    exprs = [r["expr"] for g in out["alerts"]["groups"] + out["rules"]["groups"] for r in g["rules"]]
    assert sum('job="pg-eu1"' in e for e in exprs) > 10
    assert not any(f'job="{spec.database.exporter_job}"' in e for e in exprs)
    for board in out["dashboards"].values():
        assert board["tags"] == ["db"] and board["refresh"] == "1m"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == "Thanos"
        runbook_links = [lk["url"] for lk in board["links"] if lk["title"] == "Runbook"]
        runbook_links += [lk["url"] for p in board["panels"] for lk in p.get("links", [])]
        assert runbook_links and all(u.startswith("https://wiki.example.org/rb.md") for u in runbook_links)
    incident = next(b for b in out["dashboards"].values() if "incident" in b["uid"])
    job = next(v for v in incident["templating"]["list"] if v["name"] == "job")
    assert job["current"]["value"] == ["pg-eu1"]


# ------------------------------------------------------------------------------------------ composition

OTHER_MIXIN = """{
  prometheusAlerts+:: { groups+: [{ name: 'other-alerts', rules: [{ alert: 'OtherDown', expr: 'up == 0' }] }] },
  prometheusRules+:: { groups+: [{ name: 'other-rules', rules: [{ record: 'other:up', expr: 'sum(up)' }] }] },
  grafanaDashboards+:: { 'other.json': { uid: 'other' } },
  _config+:: { otherSelector: 'job="other"' },
}"""


@pytest.mark.parametrize("order", ["sloguard first", "other first"])
def test_combined_with_another_mixin_both_keep_their_groups(rendered, default_out, order):
    combined = f"({SLOGUARD} + {OTHER_MIXIN})" if order == "sloguard first" else f"({OTHER_MIXIN} + {SLOGUARD})"
    out = evaluate(rendered, mixins=combined)
    alone = default_out
    names = {g["name"] for g in out["alerts"]["groups"]}
    assert names == {g["name"] for g in alone["alerts"]["groups"]} | {"other-alerts"}
    assert {g["name"] for g in out["rules"]["groups"]} == {g["name"] for g in alone["rules"]["groups"]} | {"other-rules"}
    assert set(out["dashboards"]) == set(alone["dashboards"]) | {"other.json"}
    assert out["config"]["otherSelector"] == 'job="other"' and out["config"]["services"] == alone["config"]["services"]


# ------------------------------------------------------------------------------------------ on disk

def test_committed_mixin_matches_committed_rules(repo_root):
    """The files on disk, as a jsonnet user vendoring this repository sees them (after `make generate`)."""
    if not os.path.exists(os.path.join(repo_root, mixin.MIXIN_PATH)):
        pytest.skip("mixin.libsonnet not generated yet: run `make generate`")
    out = json.loads(_jsonnet.evaluate_snippet(
        os.path.join(repo_root, "main.jsonnet"), SNIPPET % (SLOGUARD, "{}"), jpathdir=[repo_root]))
    with open(os.path.join(repo_root, RULES_PATH)) as fh:
        groups = yaml.safe_load(fh)["groups"]
    assert mixed(out) == by_name(groups)


# ------------------------------------------------------------------------------------------ library helpers

def test_library_spells_numbers_and_durations_like_the_generator():
    from sloguard.promql import fmt_number, parse_duration
    numbers = [0.999, 1 - 0.999, 1 - 0.995, 0.48 * 30, 14.4, 6.000000000000001, 0.02 * 100, 99.9, 0.999 * 100,
               1e-05, 0.5, 1, 1000000, 2 / 3, 0.25, 123.456, 0.1 + 0.2, -0.75, 86400 * 28 / 3600 * 0.02,
               0.0001234, 123456.789, 0.1, 1e-07, 12345678.5, 0.00001234567891]
    durations = ["5m", "30m", "1h", "1h30m", "6h", "1d", "3d", "28d", "30d", "1w", "90s", "1y"]
    snippet = (f"local p = import 'mixin/lib/promql.libsonnet'; {{ n: [p.fmtNumber(x) for x in {json.dumps(numbers)}], "
               f"d: [p.durationSeconds(t) for t in {json.dumps(durations)}] }}")
    out = json.loads(_jsonnet.evaluate_snippet("/helpers.jsonnet", snippet, jpathdir=[str(ROOT)]))
    assert out["n"] == [fmt_number(x) for x in numbers]
    assert out["d"] == [parse_duration(t).seconds for t in durations]
