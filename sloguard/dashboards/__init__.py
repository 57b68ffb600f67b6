"""Grafana dashboards from the spec: pure builders, spec -> grafanalib objects -> JSON text (no I/O here).

`render_files(specs, rendered)` returns every file this package generates (dashboards, provisioning, mixin) for
one spec or several (a fleet: one overview templated by service, one incident dashboard per service);
`rendered` is what the rule builders produced. grafanalib is imported only when a dashboard is built: generating
or checking rules alone does not pay for it.
"""
from __future__ import annotations

from collections.abc import Sequence

from sloguard.dashboard_links import INCIDENT_UID, SLO_OVERVIEW_UID, fleet_incident_uid
from sloguard.dashboards.promql_names import metric_names
from sloguard.dashboards.queries import annotation_queries, iter_panels, panel_queries, variable_values
from sloguard.spec.model import Spec

__all__ = ["annotation_queries", "build_dashboards", "dashboard_path", "incident_uids", "iter_panels",
           "metric_names", "panel_queries", "render_files", "variable_values"]

def dashboard_path(uid: str) -> str:
    return f"dashboards/{uid}.json"


def as_specs(specs: Spec | Sequence[Spec]) -> list[Spec]:
    return [specs] if isinstance(specs, Spec) else list(specs)


def incident_uids(specs: Spec | Sequence[Spec]) -> dict[str, str]:
    """{service: incident dashboard uid}. One service keeps the historical uid; in a fleet each service gets its
    own (the one its alerts' dashboard_url names when the fleet run set it on the spec)."""
    specs = as_specs(specs)
    uids = {}
    for s in specs:
        uid = getattr(s, "incident_uid", INCIDENT_UID)
        uids[s.service] = fleet_incident_uid(s.service) if len(specs) > 1 and uid == INCIDENT_UID else uid
    return uids


def build_dashboards(specs: Spec | Sequence[Spec]) -> dict[str, dict]:
    """{uid: dashboard JSON data}: the overview over every spec, then one incident dashboard per spec."""
    from sloguard.dashboards import incident, panel_links, slo_overview

    specs = as_specs(specs)
    uids = incident_uids(specs)
    overview = slo_overview.build(specs, uids)
    boards = {SLO_OVERVIEW_UID: panel_links.add_runbook_links(overview, SLO_OVERVIEW_UID, specs[0].links.runbook)}
    for s in specs:
        board = incident.build(s, uids[s.service])
        boards[uids[s.service]] = panel_links.add_runbook_links(board, INCIDENT_UID, s.links.runbook)
    return boards


def render_files(specs: Spec | Sequence[Spec], rendered: dict[str, str] | None = None) -> dict[str, str]:
    """{relative path: text} for dashboards/*.json, dashboards/provisioning/..., mixin.libsonnet, mixin/."""
    from sloguard.dashboards import common, mixin, provisioning

    specs = as_specs(specs)
    files = {dashboard_path(uid): common.to_text(data) for uid, data in build_dashboards(specs).items()}
    files.update(provisioning.render())
    files.update(mixin.render(specs, rendered or {}, sorted(p for p in files if p.endswith(".json"))))
    return files
