"""mixtool-style lint of the generated rules, on the committed file and on a larger in-memory spec."""
from __future__ import annotations

import os
import re

import pytest
import yaml

from sloguard import names, outputs
from sloguard.spec import load_spec, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMEL = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
ANCHORS = set(names.ALERT_ANCHORS.values())


def _committed() -> list[dict]:
    with open(os.path.join(ROOT, outputs.RULES_PATH), encoding="utf-8") as fh:
        return yaml.safe_load(fh)["groups"]


def _wide() -> list[dict]:
    """A spec with several SLOs of both kinds and a 28d window, rendered in memory."""
    with open(os.path.join(ROOT, "slo.yaml"), encoding="utf-8") as fh:
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
    return yaml.safe_load(outputs.render_all(parse_spec(text))[outputs.RULES_PATH])["groups"]


SOURCES = {"committed": _committed, "wide": _wide}


def alerts(groups: list[dict]) -> list[dict]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


@pytest.fixture(params=sorted(SOURCES))
def groups(request) -> list[dict]:
    return SOURCES[request.param]()


def test_group_size_and_unique_names(groups):
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
    spec = load_spec(os.path.join(ROOT, "slo.yaml"))
    for rule in alerts(groups):
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
    for g in groups:
        for rule in g["rules"]:
            for metric in re.findall(r"\b(sloguard_pg_[a-z_]+)", rule["expr"]):
                assert metric in exported, metric
