"""The jsonnet mixin evaluates (Python binding of jsonnet) to exactly the generated rules and dashboards,
and its _config overrides reach every link and exporter selector."""
from __future__ import annotations

import json
import os

import _jsonnet
import pytest
import yaml

from sloguard.dashboards import mixin
from sloguard.outputs import RULES_PATH

SNIPPET = """
local m = (import 'mixin.libsonnet') + { _config+:: %s };
{ alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards, config: m._config }
"""


def evaluate(files: dict[str, str], overrides: dict | None = None) -> dict:
    """Evaluate against the in-memory generated files: what `make generate` would write, no disk involved."""
    def import_callback(directory: str, rel: str):
        path = os.path.normpath(os.path.join(directory, rel)).lstrip("/")
        if path not in files:
            raise RuntimeError(f"mixin imports {rel!r}, which is not a generated file")
        return path, files[path].encode()
    text = _jsonnet.evaluate_snippet("/main.jsonnet", SNIPPET % json.dumps(overrides or {}),
                                     import_callback=import_callback)
    return json.loads(text)


def generated_groups(rendered) -> list[dict]:
    return yaml.safe_load(rendered[RULES_PATH])["groups"]


def test_mixin_yields_exactly_the_generated_rules(rendered):
    out = evaluate(rendered)
    groups = generated_groups(rendered)
    mixed = out["alerts"]["groups"] + out["rules"]["groups"]
    assert sorted(mixed, key=lambda g: g["name"]) == sorted(groups, key=lambda g: g["name"])
    assert all(any("alert" in r for r in g["rules"]) for g in out["alerts"]["groups"])
    assert all("record" in r for g in out["rules"]["groups"] for r in g["rules"])
    assert out["alerts"]["groups"] and out["rules"]["groups"]


def test_mixin_yields_exactly_the_generated_dashboards(rendered):
    out = evaluate(rendered)
    expected = {path.rsplit("/", 1)[-1]: json.loads(text) for path, text in rendered.items()
                if path.startswith("dashboards/") and path.endswith(".json")}
    assert len(expected) == 2
    assert out["dashboards"] == expected


def test_config_overrides_links_selector_and_tags(spec, rendered):
    overrides = {"grafanaUrl": "https://grafana.example.org", "runbookUrl": "https://wiki.example.org/rb.md",
                 "exporterSelector": 'job="pg",cluster="eu1"', "dashboardTags": ["db"]}
    out = evaluate(rendered, overrides)
    assert out["config"] == {**mixin.default_config(spec), **overrides}
    alerts = [r for g in out["alerts"]["groups"] for r in g["rules"] if "alert" in r]
    for rule in alerts:
        assert rule["annotations"]["dashboard_url"].startswith("https://grafana.example.org/d/"), rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("https://wiki.example.org/rb.md#"), rule["alert"]
    text = json.dumps(out)
    default_selector = mixin.default_config(spec)["exporterSelector"]
    assert default_selector not in text and spec.links.grafana not in text
    exprs = [t["expr"] for d in out["dashboards"].values() for p in d["panels"] for t in p.get("targets", [])]
    assert sum('job="pg",cluster="eu1"' in e for e in exprs) > 10
    assert all(d["tags"] == ["db"] for d in out["dashboards"].values())


def test_rule_files_skip_promtool_tests_and_prometheusrule():
    groups = yaml.safe_dump({"groups": [{"name": "a", "rules": [{"alert": "X", "expr": "up == 0"}]}]})
    files = {"alerts/rules.yaml": groups,
             "alerts/tests/x_test.yaml": yaml.safe_dump({"rule_files": ["r.yaml"], "tests": []}),
             "alerts/kubernetes/pr.yaml": "kind: PrometheusRule\nspec:\n  " + groups,
             "dashboards/x.yaml": groups}
    assert mixin.rule_file_paths(files) == ["alerts/rules.yaml"]


def test_committed_mixin_matches_committed_rules(repo_root):
    """The files on disk, as a jsonnet user vendoring this repository sees them (after `make generate`)."""
    if not os.path.exists(os.path.join(repo_root, mixin.MIXIN_PATH)):
        pytest.skip("mixin.libsonnet not generated yet: run `make generate`")
    out = json.loads(_jsonnet.evaluate_snippet(
        os.path.join(repo_root, "main.jsonnet"), SNIPPET % "{}", jpathdir=[repo_root]))
    with open(os.path.join(repo_root, RULES_PATH)) as fh:
        groups = yaml.safe_load(fh)["groups"]
    assert sorted(out["alerts"]["groups"] + out["rules"]["groups"], key=lambda g: g["name"]) == \
        sorted(groups, key=lambda g: g["name"])
