"""make simulate replays the incident of the demo API with rules and dashboards generated from demo/slo.yaml, so a
user's slo.yaml (another route, renamed SLOs) cannot empty the live panels or silence the replay's alerts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from sloguard import promql
from sloguard.outputs import RULES_PATH, render_all
from sloguard.simulate.replay_view import DEMO_SPEC, replay_view
from sloguard.simulate.stack import exporter_job_from_spec
from sloguard.spec import load_spec
from tests.test_user_spec import add_search_latency

ROOT = Path(__file__).resolve().parent.parent
DEMO_ROUTES = {"/login", "/orders/recent", "/healthz"}   # demo/app.py API.handle


def test_the_replay_ignores_the_users_spec(tmp_path):
    repo = tmp_path / "repo"
    (repo / "demo").mkdir(parents=True)
    shutil.copy(ROOT / DEMO_SPEC, repo / DEMO_SPEC)
    shutil.copytree(ROOT / "deploy", repo / "deploy")
    user = add_search_latency((ROOT / "slo.yaml").read_text(encoding="utf-8")).replace(
        "exporter_job: sloguard-pg-exporter", "exporter_job: pg-prod")
    (repo / "slo.yaml").write_text(user, encoding="utf-8")
    (repo / "alerts").mkdir()
    (repo / "alerts" / "sloguard-rules.yaml").write_text("groups: []\n")   # the user's own output, stale or not
    (repo / "mixin").mkdir()     # a generated directory of the user's: the view must not write through a link to it
    (repo / "mixin" / "config.libsonnet").write_text("{}\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    view = Path(replay_view(str(repo), str(workdir)))
    demo = load_spec(str(repo / DEMO_SPEC))
    expected = render_all(demo)
    for rel, text in expected.items():
        assert (view / rel).read_text(encoding="utf-8") == text, rel
    assert "search-latency" not in (view / RULES_PATH).read_text(encoding="utf-8")
    assert (view / "slo.yaml").read_text() == (repo / DEMO_SPEC).read_text()
    assert exporter_job_from_spec(str(view)) == demo.database.exporter_job != "pg-prod"
    assert (view / "deploy").is_symlink() and os.path.realpath(view / "deploy") == str(repo / "deploy")
    assert (repo / "mixin" / "config.libsonnet").read_text() == "{}\n"
    assert not any((view / top).is_symlink() for top in {rel.split("/")[0] for rel in expected})


def test_the_demo_spec_selects_what_the_demo_serves():
    """Every selector of demo/slo.yaml is on a job deploy/prometheus scrapes, and names only routes the demo has."""
    spec = load_spec(str(ROOT / DEMO_SPEC))
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    selectors = [s for slo in spec.slos for s in vars(slo.sli).values() if isinstance(s, str)]
    selectors += [spec.database.latency_p99.metric, spec.database.pool.in_use, spec.database.pool.max,
                  spec.database.pool.waiting]
    assert spec.database.exporter_job in jobs
    for text in selectors:
        for m in promql.parse_selector(text).matchers:
            if m.name == "job":
                assert m.op == "=" and m.value in jobs, text
            if m.name == "route":
                assert m.op == "=" and m.value in DEMO_ROUTES, text
