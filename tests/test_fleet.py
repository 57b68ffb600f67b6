"""Many services in one run: `generate.py --spec DIR` or several --spec, per-service output, collisions refused.

Specs are test-owned (tests/specs/fleet: api, checkout, search, billing; billing shares checkout's exporter job).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sloguard import dashboard_links
from sloguard.dashboards import dashboard_path
from sloguard.outputs import FleetError, render_all
from sloguard.spec import load_spec, load_specs, spec_files
from tests.conftest import SPECS_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATE = os.path.join(ROOT, "generate.py")
FLEET = os.path.join(SPECS_DIR, "fleet")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, GENERATE, *args], capture_output=True, text=True, timeout=120)


def fleet_specs():
    return [s for f in spec_files(FLEET) for s in load_specs(f)]


@pytest.fixture(scope="module")
def fleet_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fleet")
    proc = generate("--spec", FLEET, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]


def test_directory_gives_one_rule_file_and_one_prometheusrule_per_service(fleet_out):
    services = sorted(s.service for s in fleet_specs())
    assert services == ["api", "billing", "checkout", "search"]
    rule_files = sorted(p.name for p in (fleet_out / "alerts").glob("*.yaml"))
    assert rule_files == [f"sloguard-{s}-rules.yaml" for s in services]
    for service in services:
        k8s = yaml.safe_load((fleet_out / "alerts" / "kubernetes" / f"sloguard-{service}-prometheusrule.yaml")
                             .read_text(encoding="utf-8"))
        assert k8s["metadata"]["name"] == f"sloguard-{service}"
        assert k8s["spec"]["groups"] == _groups(fleet_out / "alerts" / f"sloguard-{service}-rules.yaml")
        header = (fleet_out / "alerts" / f"sloguard-{service}-rules.yaml").read_text(encoding="utf-8").splitlines()[0]
        assert f"from {service}.yaml" in header


def test_every_rule_carries_its_service_and_groups_are_unique(fleet_out):
    names = []
    for path in sorted((fleet_out / "alerts").glob("sloguard-*-rules.yaml")):
        service = path.name[len("sloguard-"):-len("-rules.yaml")]
        for group in _groups(path):
            names.append(group["name"])
            assert service in group["name"], group["name"]
            for rule in group["rules"]:
                assert rule["labels"]["service"] == service, (path.name, rule.get("alert") or rule.get("record"))
    assert len(names) == len(set(names))
    # billing and checkout share exporter job pg-checkout: their database recordings differ by the service label
    recorded = {}
    for service in ("billing", "checkout"):
        for group in _groups(fleet_out / "alerts" / f"sloguard-{service}-rules.yaml"):
            for rule in group["rules"]:
                if "record" in rule and "pg-checkout" in rule["expr"]:
                    key = (rule["record"], tuple(sorted(rule["labels"].items())))
                    assert key not in recorded, key
                    recorded[key] = service
    assert {"billing", "checkout"} == set(recorded.values())


def test_all_rule_files_load_together_in_promtool(fleet_out):
    files = sorted(str(p) for p in (fleet_out / "alerts").glob("*.yaml"))
    proc = subprocess.run([PROMTOOL, "check", "rules", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_one_overview_and_an_incident_dashboard_per_service_that_alerts_link_to(fleet_out):
    boards = {p.stem: json.loads(p.read_text()) for p in (fleet_out / "dashboards").glob("*.json")}
    services = [s.service for s in fleet_specs()]
    incident = {s: dashboard_links.fleet_incident_uid(s) for s in services}
    assert set(boards) == {dashboard_links.SLO_OVERVIEW_UID, *incident.values()}
    titles = [b["title"] for b in boards.values()]
    assert len(titles) == len(set(titles)), titles          # Grafana wants unique titles in a folder
    # one overview for the whole fleet: a single SLO row repeated per selected SLO, every service selectable
    overview = boards[dashboard_links.SLO_OVERVIEW_UID]
    repeated = [p for p in overview["panels"] if p["type"] == "row" and p.get("repeat")]
    assert [p["repeat"] for p in repeated] == ["slo"], repeated
    service_var = next(v for v in overview["templating"]["list"] if v["name"] == "service")
    default = service_var["current"]["text"]
    assert service_var["includeAll"] and (default in ("All", ["All"]) or set(default) == set(services)), service_var
    panels = {uid: {p["id"] for p in b["panels"]} for uid, b in boards.items()}
    for service in services:
        for group in _groups(fleet_out / "alerts" / f"sloguard-{service}-rules.yaml"):
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule["annotations"]["dashboard_url"]
                uid, panel = url.split("/d/")[1].split("?viewPanel=")
                assert uid in (dashboard_links.SLO_OVERVIEW_UID, incident[service]), url
                assert int(panel) in panels[uid], url


def test_several_spec_flags_equal_the_directory(fleet_out, tmp_path):
    args = [a for f in spec_files(FLEET) for a in ("--spec", f)]
    proc = generate(*args, "--out", str(fleet_out), "--check")
    assert proc.returncode == 0, proc.stderr


def test_long_service_names_get_short_unique_dashboard_uids():
    a, b = "x" * 40 + "-orders", "x" * 40 + "-refunds"
    uids = {dashboard_links.fleet_incident_uid(s) for s in (a, b, "api")}
    assert len(uids) == 3 and all(len(u) <= dashboard_links.MAX_UID for u in uids)


def test_single_spec_keeps_the_historical_layout(spec, rendered):
    assert "alerts/sloguard-rules.yaml" in rendered and "alerts/kubernetes/prometheusrule.yaml" in rendered
    assert dashboard_path(dashboard_links.INCIDENT_UID) in rendered
    # no `service` label is added to a single spec's rules (only sloth_service)
    assert not [line for line in rendered["alerts/sloguard-rules.yaml"].splitlines() if line.strip() == "service: api"]


def _write(tmp_path: Path, name: str, service: str, slo: str = "availability") -> str:
    text = Path(FLEET, "checkout.yaml").read_text(encoding="utf-8")
    text = text.replace("service: checkout", f"service: {service}").replace("name: availability", f"name: {slo}")
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)


def test_two_specs_of_one_service_are_refused_naming_both_files(tmp_path):
    first, second = _write(tmp_path, "a.yaml", "orders"), _write(tmp_path, "b.yaml", "orders")
    out = tmp_path / "out"
    proc = generate("--spec", first, "--spec", second, "--out", str(out))
    assert proc.returncode == 2
    assert first in proc.stderr and second in proc.stderr and "service: 'orders'" in proc.stderr
    assert "Fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_colliding_rule_groups_are_refused_naming_both_files(tmp_path):
    """service a-b with SLO c and service a with SLO b-c both make sloguard-slo-a-b-c-recordings."""
    first, second = _write(tmp_path, "ab.yaml", "a-b", "c"), _write(tmp_path, "a.yaml", "a", "b-c")
    with pytest.raises(FleetError) as exc:
        render_all([load_spec(first), load_spec(second)])
    message = str(exc.value)
    assert "sloguard-slo-a-b-c-recordings" in message and first in message and second in message
    proc = generate("--spec", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "sloguard-slo-a-b-c-recordings" in proc.stderr


def test_bad_spec_in_a_directory_names_its_file_and_writes_nothing(tmp_path):
    _write(tmp_path, "good.yaml", "orders")
    bad = _write(tmp_path, "bad.yaml", "refunds")
    Path(bad).write_text(Path(bad).read_text().replace("objective: 99.95", "objective: 100.5"))
    proc = generate("--spec", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and f"{bad}:" in proc.stderr and "slos[0].objective" in proc.stderr
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = generate("--spec", str(empty), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "no *.yaml" in proc.stderr


def test_the_mixin_carries_every_services_groups_and_dashboards(fleet_out):
    import _jsonnet

    mixin = json.loads(_jsonnet.evaluate_snippet(
        str(fleet_out / "check.jsonnet"), 'local m = import "mixin.libsonnet"; {groups: m.prometheusAlerts.groups + m.prometheusRules.groups,'
        " dashboards: std.objectFields(m.grafanaDashboards)}"))
    expected = [g["name"] for p in sorted((fleet_out / "alerts").glob("*.yaml")) for g in _groups(p)]
    assert sorted(g["name"] for g in mixin["groups"]) == sorted(expected)
    assert sorted(mixin["dashboards"]) == sorted(p.name for p in (fleet_out / "dashboards").glob("*.json"))
