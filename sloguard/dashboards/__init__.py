"""Grafana dashboards from the spec: pure builders, spec -> grafanalib objects -> JSON text (no I/O here).

`render_files(spec, rendered)` returns every file this package generates (dashboards, provisioning, mixin);
`rendered` is what the rule builders produced, which the mixin re-exposes.
"""
from __future__ import annotations

from collections.abc import Sequence

from sloguard.dashboard_links import SLO_OVERVIEW_UID
from sloguard.dashboards import common, incident, mixin, provisioning, slo_overview
from sloguard.dashboards.promql_names import metric_names
from sloguard.dashboards.queries import annotation_queries, iter_panels, panel_queries
from sloguard.spec.model import Spec

__all__ = ["annotation_queries", "build_dashboards", "dashboard_path", "iter_panels", "metric_names",
           "panel_queries", "render_files"]


def dashboard_path(uid: str) -> str:
    return f"dashboards/{uid}.json"


def build_dashboards(specs: Spec | Sequence[Spec]) -> dict[str, dict]:
    """{uid: dashboard JSON data}: one SLO overview for all services, one incident dashboard per service
    (uid `spec.incident_uid`: INCIDENT_UID for a single spec)."""
    specs = slo_overview.as_list(specs)
    boards = {SLO_OVERVIEW_UID: common.dashboard_json(slo_overview.build(specs))}
    for spec in specs:
        boards[spec.incident_uid] = common.dashboard_json(incident.build(spec))
    return boards


def render_files(specs: Spec | Sequence[Spec], rendered: dict[str, str] | None = None) -> dict[str, str]:
    """{relative path: text} for dashboards/*.json, dashboards/provisioning/..., mixin.libsonnet, mixin/.
    `specs`: one spec or the fleet's list; the mixin's _config defaults come from the first."""
    specs = slo_overview.as_list(specs)
    files = {dashboard_path(uid): common.to_text(data) for uid, data in build_dashboards(specs).items()}
    files.update(provisioning.render())
    files.update(mixin.render(specs[0], rendered or {}, sorted(p for p in files if p.endswith(".json"))))
    return files
