"""Several specs in one run (a fleet): each service gets its own incident dashboard uid and a `service` label,
database rule groups are named per service, and two specs that would collide are refused naming both files.

Why the label: database alerts carry only the spec's labels, so ApiLatencyP99High of two services would otherwise
be one alert in Alertmanager. A spec that sets `labels.service` itself keeps its value.
"""
from __future__ import annotations

from dataclasses import replace

from sloguard.dashboard_links import fleet_incident_uid
from sloguard.rules.groups import build_groups
from sloguard.spec import model

SERVICE_LABEL = "service"
_DATABASE_GROUP_PREFIX = "sloguard-database-"


class FleetError(ValueError):
    """Two specs that cannot be generated together; the message names both files and the fix."""


def _qualified(spec: model.Spec) -> model.Spec:
    labels = dict(sorted({SERVICE_LABEL: spec.service, **spec.labels}.items()))
    return replace(spec, labels=labels, incident_uid=fleet_incident_uid(spec.service))


def _database_groups_per_service(spec: model.Spec, groups: list[dict]) -> list[dict]:
    # A single spec keeps the historical names (sloguard-database-alerts); in a fleet each service has its own.
    return [{**g, "name": _DATABASE_GROUP_PREFIX + spec.service + "-" + g["name"][len(_DATABASE_GROUP_PREFIX):]}
            if g["name"].startswith(_DATABASE_GROUP_PREFIX) else g for g in groups]


def prepare_fleet(specs: list[model.Spec]) -> tuple[list[model.Spec], list[tuple[list[dict], list[str]]]]:
    """(specs as generated, [(rule groups, warnings)] per spec). Raises FleetError on a collision."""
    by_service: dict[str, model.Spec] = {}
    for spec in specs:
        if spec.service in by_service:
            raise FleetError(f"{spec.source}: service: {spec.service!r} is also the service of "
                             f"{by_service[spec.service].source}. Fix: give each service one spec file (merge the "
                             "SLOs into one, or rename one service)")
        by_service[spec.service] = spec
    prepared = [_qualified(spec) for spec in specs]
    built, group_owner, uid_owner = [], {}, {}
    for spec in prepared:
        if spec.incident_uid in uid_owner:
            raise FleetError(f"{spec.source}: service: {spec.service!r} gets the dashboard uid {spec.incident_uid!r}, "
                             f"as does {uid_owner[spec.incident_uid]}. Fix: rename one of the services")
        uid_owner[spec.incident_uid] = spec.source
        groups, warnings = build_groups(spec)
        groups = _database_groups_per_service(spec, groups)
        for group in groups:
            other = group_owner.get(group["name"])
            if other is not None:
                raise FleetError(f"{spec.source}: rule group {group['name']!r} is also generated from {other}. "
                                 "Fix: rename a service or an SLO so that <service>-<slo> differs between them")
            group_owner[group["name"]] = spec.source
        built.append((groups, warnings))
    return prepared, built
