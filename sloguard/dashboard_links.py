"""Where each alert's dashboard_url points: dashboard uid and panel id.

The rule builders write these links; the dashboards builders create panels with exactly these ids, and a test
checks every (uid, panel id) below exists in the generated dashboards. Change both sides together.
"""
from __future__ import annotations

import hashlib

from sloguard import names

SLO_OVERVIEW_UID = "sloguard-slo-overview"
INCIDENT_UID = "sloguard-api-db-incident"

# alert name (as in names.ALERT_ANCHORS) -> (dashboard uid, panel id)
ALERT_PANELS: dict[str, tuple[str, int]] = {
    "ErrorBudgetBurn": (SLO_OVERVIEW_UID, 4),          # burn-rate panel; every <Slo>ErrorBudgetBurn alert
    "ApiLatencyP99High": (INCIDENT_UID, 2),
    "AppDbPoolSaturated": (INCIDENT_UID, 4),
    "AppDbPoolWaiters": (INCIDENT_UID, 4),
    "PostgresConnectionsNearLimit": (INCIDENT_UID, 5),
    "PostgresStatementSlow": (INCIDENT_UID, 6),
    "PostgresStatementRegression": (INCIDENT_UID, 6),
    "PostgresSeqScanLargeTable": (INCIDENT_UID, 7),
    "PostgresMissingIndexSuspected": (INCIDENT_UID, 8),
    "PostgresLockWaits": (INCIDENT_UID, 9),
    "PostgresLongRunningTransaction": (INCIDENT_UID, 9),
    "PostgresExporterDown": (INCIDENT_UID, 10),
    "PgStatStatementsUnavailable": (INCIDENT_UID, 10),
    "SloHistogramBucketMissing": (SLO_OVERVIEW_UID, 4),
    "SloHistogramBucketPartial": (SLO_OVERVIEW_UID, 4),
    "SloTargetDown": (SLO_OVERVIEW_UID, 4),
    "SloMetricAbsent": (SLO_OVERVIEW_UID, 4),
    "SloErrorBudgetExhausted": (SLO_OVERVIEW_UID, 4),
    "SloErrorBudgetLow": (SLO_OVERVIEW_UID, 4),
}


def panel_for(alertname: str) -> tuple[str, int]:
    key = names.BURN_RATE_ALERT_SUFFIX if alertname.endswith(names.BURN_RATE_ALERT_SUFFIX) else alertname
    return ALERT_PANELS[key]


MAX_UID = 40   # Grafana's limit on dashboard uids


def fleet_incident_uid(service: str) -> str:
    """The incident dashboard uid of one service in a multi-service run: readable, unique, at most 40 chars."""
    uid = f"{INCIDENT_UID}-{service}"
    if len(uid) <= MAX_UID:
        return uid
    digest = hashlib.sha1(service.encode()).hexdigest()[:8]
    return f"{uid[:MAX_UID - 9]}-{digest}"


def dashboard_url(grafana: str, alertname: str, incident_uid: str = INCIDENT_UID) -> str:
    """Link of an alert to its panel; `incident_uid` is the service's incident dashboard (fleet runs: one each)."""
    uid, panel = panel_for(alertname)
    uid = incident_uid if uid == INCIDENT_UID else uid
    return f"{grafana.rstrip('/')}/d/{uid}?viewPanel={panel}"
