"""Assemble every rule group from the spec. Groups hold at most 20 rules (mixtool lint)."""
from __future__ import annotations

from sloguard.rules.budget_alerts import build_budget_alerts
from sloguard.rules.burn_alerts import build_burn_alerts
from sloguard.rules.database_alerts import build_database_alerts, build_database_recordings
from sloguard.rules.histogram_alerts import build_histogram_alerts
from sloguard.rules.outage_alerts import build_metric_absent_alert, build_target_down_alerts
from sloguard.rules.slo_recording import PERIOD_STEP, build_period_recordings, build_slo_recordings
from sloguard.spec import model

MAX_GROUP_RULES = 20


def _chunked(name: str, rules: list[dict], interval: str | None = None) -> list[dict]:
    extra = {"interval": interval} if interval else {}
    if len(rules) <= MAX_GROUP_RULES:
        return [{"name": name, **extra, "rules": rules}] if rules else []
    return [{"name": f"{name}-{i // MAX_GROUP_RULES + 1}", **extra, "rules": rules[i:i + MAX_GROUP_RULES]}
            for i in range(0, len(rules), MAX_GROUP_RULES)]


def build_groups(spec: model.Spec) -> tuple[list[dict], list[str]]:
    """(groups, warnings). Pure: same spec, same groups."""
    groups, warnings = [], []
    for slo in spec.slos:
        # Recordings and alerts in separate groups (mixin convention: prometheusRules vs prometheusAlerts, as Sloth).
        # An alert may read ratios one evaluation old; promtool tests pin the order with group_eval_order.
        prefix = f"sloguard-slo-{spec.service}-{slo.name}"
        groups += _chunked(f"{prefix}-recordings", build_slo_recordings(spec, slo))
        groups += _chunked(f"{prefix}-period", build_period_recordings(spec, slo), PERIOD_STEP)
        alerts, warns = build_burn_alerts(spec, slo)
        alerts += build_metric_absent_alert(spec, slo)
        alerts += build_budget_alerts(spec, slo)
        alerts += build_histogram_alerts(spec, slo)
        groups += _chunked(f"{prefix}-alerts", alerts)
        warnings += warns
    groups += _chunked(f"sloguard-{spec.service}-outage-alerts", build_target_down_alerts(spec))
    groups += _chunked("sloguard-database-recordings", build_database_recordings(spec))
    groups += _chunked("sloguard-database-alerts", build_database_alerts(spec))
    return groups, warnings
