"""Grafana dashboards from the spec: pure builders, spec -> grafanalib objects -> JSON text (no I/O here).

`render_files(spec, rendered)` returns every file this package generates (dashboards, provisioning, mixin);
`rendered` is what the rule builders produced, which the mixin re-exposes.
"""
from __future__ import annotations

from sloguard.dashboard_links import INCIDENT_UID, SLO_OVERVIEW_UID
from sloguard.dashboards import common, incident, mixin, provisioning, slo_overview
from sloguard.dashboards.promql_names import metric_names
from sloguard.dashboards.queries import annotation_queries, iter_panels, panel_queries
from sloguard.spec.model import Spec

__all__ = ["annotation_queries", "build_dashboards", "dashboard_path", "iter_panels", "metric_names",
           "panel_queries", "render_files"]


def dashboard_path(uid: str) -> str:
    return f"dashboards/{uid}.json"


def build_dashboards(spec: Spec) -> dict[str, dict]:
    """{uid: dashboard JSON data}."""
    return {
        SLO_OVERVIEW_UID: common.dashboard_json(slo_overview.build(spec)),
        INCIDENT_UID: common.dashboard_json(incident.build(spec)),
    }


def render_files(spec: Spec, rendered: dict[str, str] | None = None) -> dict[str, str]:
    """{relative path: text} for dashboards/*.json, dashboards/provisioning/..., mixin.libsonnet, mixin/."""
    files = {dashboard_path(uid): common.to_text(data) for uid, data in build_dashboards(spec).items()}
    files.update(provisioning.render())
    files.update(mixin.render(spec, rendered or {}, sorted(p for p in files if p.endswith(".json"))))
    return files
