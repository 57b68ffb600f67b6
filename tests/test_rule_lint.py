"""mixtool-style lint of the generated rules: on the committed output (whatever the user's slo.yaml says, these
hold for any valid spec) and on test-owned specs: a wider API spec, a fleet of services, Sloth and OpenSLO inputs."""
from __future__ import annotations

import functools
import os
import re

import pytest
import yaml

from sloguard import names, outputs
from sloguard.spec import load_defaults, load_spec, load_specs, parse_spec, spec_files
from tests.conftest import API_SPEC, SPECS_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMEL = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
ANCHORS = set(names.ALERT_ANCHORS.values())


def _rule_groups(files: dict[str, str]) -> list[dict]:
    return [g for path in sorted(files) if path.startswith("alerts/") and "kubernetes" not in path
            for g in yaml.safe_load(files[path])["groups"]]


@functools.cache
def _committed():
    """The committed output of the user's slo.yaml (check-generated keeps it fresh)."""
    with open(os.path.join(ROOT, outputs.RULES_PATH), encoding="utf-8") as fh:
        return [(load_spec(os.path.join(ROOT, "slo.yaml")), yaml.safe_load(fh)["groups"])]


@functools.cache
def _wide():
    """The test-owned API spec with more SLOs of both kinds and other windows, rendered in memory."""
    with open(API_SPEC, encoding="utf-8") as fh:
        text = fh.read()
    text = text.replace("slos:\n", """slos:
  - name: search-latency
    objective: 99.5
    window: 28d
    sli: {latency: {metric: 'search_duration_seconds{job="search"}', threshold: 0.25}}
  - name: login_availability
    objective: 99.95
    window: 7d
    sli: {events: {total: 'logins_total', errors: 'logins_total{result="error"}'}}
""", 1)
    spec = parse_spec(text, API_SPEC)
    return [(spec, _rule_groups(outputs.render_all(spec)))]


@functools.cache
def _fleet():
    """Every service of tests/specs/fleet in one run: per-service files, one lint over all of them."""
    specs = [s for f in spec_files(os.path.join(SPECS_DIR, "fleet")) for s in load_specs(f)]
    files = outputs.render_all(specs)
    groups = _rule_groups(files)
    by_service = {s.service: s for s in specs}
    return [(by_service[_service_of(g)], [g]) for g in groups]


@functools.cache
def _converted():
    """Sloth and OpenSLO test specs with their defaults, one run."""
    defaults = load_defaults(os.path.join(SPECS_DIR, "sloth", "defaults.yaml"))
    specs = [s for d in ("sloth", "openslo") for f in spec_files(os.path.join(SPECS_DIR, d))
             if not f.endswith("defaults.yaml") for s in load_specs(f, defaults)]
    files = outputs.render_all(specs)
    by_service = {s.service: s for s in specs}
    return [(by_service[_service_of(g)], [g]) for g in _rule_groups(files)]


def _service_of(group: dict) -> str:
    return next(r["labels"]["service"] for r in group["rules"] if "service" in r.get("labels", {}))


SOURCES = {"committed": _committed, "wide": _wide, "fleet": _fleet, "converted": _converted}


def alerts(groups) -> list[dict]:
    return [r for _, gs in groups for g in gs for r in g["rules"] if "alert" in r]


def all_groups(groups) -> list[dict]:
    return [g for _, gs in groups for g in gs]


@pytest.fixture(params=sorted(SOURCES))
def groups(request) -> list[tuple]:
    """[(spec, its rule groups)]"""
    return SOURCES[request.param]()   # cached: rendered once per session, never mutated by the tests


def test_group_size_and_unique_names(groups):
    groups = all_groups(groups)
    assert all(1 <= len(g["rules"]) <= 20 for g in groups), [(g["name"], len(g["rules"])) for g in groups]
    assert len({g["name"] for g in groups}) == len(groups)


def test_alert_names_are_camel_case_and_short(groups):
    for rule in alerts(groups):
        assert CAMEL.match(rule["alert"]) and len(rule["alert"]) <= 40, rule["alert"]


def test_severity_values(groups):
    for rule in alerts(groups):
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]


def test_summary_static_capitalised_with_period(groups):
    for rule in alerts(groups):
        summary = rule["annotations"]["summary"]
        assert summary[0].isupper() and summary.endswith("."), summary
        assert "{{" not in summary, f"{rule['alert']}: summary must be static"


def test_description_is_templated(groups):
    for rule in alerts(groups):
        assert "{{" in rule["annotations"]["description"], rule["alert"]


def test_runbook_and_dashboard_links(groups):
    for spec, gs in groups:
        for rule in alerts([(spec, gs)]):
            _check_links(spec, rule)


def _check_links(spec, rule):
    runbook, anchor = rule["annotations"]["runbook_url"].split("#")
    assert runbook == spec.links.runbook and runbook.endswith(names.RUNBOOK_PATH)
    assert anchor in ANCHORS and anchor == names.runbook_anchor(rule["alert"])
    assert re.match(re.escape(spec.links.grafana) + r"/d/[a-z0-9-]+\?viewPanel=\d+$",
                    rule["annotations"]["dashboard_url"]), rule["annotations"]["dashboard_url"]


def test_every_named_alert_is_generated_with_a_for(groups):
    generated = {r["alert"] for r in alerts(groups)}
    expected = {n for n in names.ALERT_ANCHORS if n != "ErrorBudgetBurn"}
    assert expected <= generated
    assert any(n.endswith(names.BURN_RATE_ALERT_SUFFIX) for n in generated)
    for rule in alerts(groups):
        assert re.match(r"^\d+[smhd]", rule["for"]), rule["alert"]


def test_no_metric_name_typed_outside_names(groups):
    """Exporter metrics in rule expressions all come from sloguard.names (a typo would silently never match)."""
    exported = set(names.EXPORTER_METRICS)
    for g in all_groups(groups):
        for rule in g["rules"]:
            for metric in re.findall(r"\b(sloguard_pg_[a-z_]+)", rule["expr"]):
                assert metric in exported, metric
