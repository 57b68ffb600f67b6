"""Assemble every rule group from the spec. Groups hold at most 20 rules (mixtool lint)."""
from __future__ import annotations

from sloguard.rules.burn_alerts import build_bucket_missing_alert, build_burn_alerts
from sloguard.rules.database_alerts import build_database_alerts, build_database_recordings
from sloguard.rules.slo_recording import build_slo_recordings
from sloguard.spec import model

MAX_GROUP_RULES = 20


def _chunked(name: str, rules: list[dict]) -> list[dict]:
    if len(rules) <= MAX_GROUP_RULES:
        return [{"name": name, "rules": rules}] if rules else []
    return [{"name": f"{name}-{i // MAX_GROUP_RULES + 1}", "rules": rules[i:i + MAX_GROUP_RULES]}
            for i in range(0, len(rules), MAX_GROUP_RULES)]


def build_groups(spec: model.Spec) -> tuple[list[dict], list[str]]:
    """(groups, warnings). Pure: same spec, same groups."""
    groups, warnings = [], []
    for slo in spec.slos:
        # Recordings and alerts in separate groups (mixin convention: prometheusRules vs prometheusAlerts, as Sloth).
        # An alert may read ratios one evaluation old; promtool tests pin the order with group_eval_order.
        groups += _chunked(f"sloguard-slo-{spec.service}-{slo.name}-recordings", build_slo_recordings(spec, slo))
        alerts, warns = build_burn_alerts(spec, slo)
        alerts += build_bucket_missing_alert(spec, slo)
        groups += _chunked(f"sloguard-slo-{spec.service}-{slo.name}-alerts", alerts)
        warnings += warns
    groups += _chunked("sloguard-database-recordings", build_database_recordings(spec))
    groups += _chunked("sloguard-database-alerts", build_database_alerts(spec))
    return groups, warnings
