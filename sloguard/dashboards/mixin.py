"""The monitoring mixin: a jsonnet library fed with the spec as `_config`.

The library is source in sloguard/dashboards/jsonnet/; it is written out as mixin/lib/ next to the rest, so any
--out directory holds a complete, vendorable mixin. Generated here, data only:
  mixin/config.libsonnet   `_config` from the spec(s): per service its labels, SLOs (objective, window, SLI
                           selectors), burn-rate windows and `for:`, database thresholds and `for:`, exporter job;
                           plus grafanaUrl / runbookUrl, dashboard tags, refresh, timezone, datasource.
  mixin/names.libsonnet    the metric, alert, runbook-anchor and dashboard-panel names agreed in sloguard.names and
                           sloguard.dashboard_links, so the library never retypes one.
  mixin.libsonnet          library + config + the generated dashboards (imported JSON; the library applies the
                           _config parts to them as object overrides).
The library builds every rule from `_config` in jsonnet; with the defaults it renders exactly the generated rules
(tests/test_mixin.py), and overriding a threshold in `_config` changes the rendered alert.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

from sloguard import dashboard_links, names
from sloguard.dashboards.common import GENERATED_NOTE, TAGS
from sloguard.rules.common import job_matchers
from sloguard.spec.model import EventsSLI, Spec

MIXIN_PATH = "mixin.libsonnet"
CONFIG_PATH = "mixin/config.libsonnet"
NAMES_PATH = "mixin/names.libsonnet"
LIB_DIR = "mixin/lib"
LIB_PATH = f"{LIB_DIR}/mixin.libsonnet"
LIB_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jsonnet")
DASHBOARD_REFRESH = "30s"
DASHBOARD_TIMEZONE = "utc"
DATASOURCE = "Prometheus"


def _sli(slo) -> dict:
    if isinstance(slo.sli, EventsSLI):
        return {"events": {"total": slo.sli.total, "errors": slo.sli.errors}}
    return {"latency": {"metric": slo.sli.metric, "threshold": slo.sli.threshold}}


def _tier(tier) -> dict:
    # the tier's severity is severities.page / severities.ticket
    return {"for": tier.for_.text, "minEvents": tier.min_events,
            "windows": [{"long": w.long.text, "short": w.short.text, "budgetFraction": w.budget_fraction}
                        for w in tier.windows]}


def _slo(slo) -> dict:
    out = {"description": slo.description, "objective": slo.objective, "window": slo.window.text, "sli": _sli(slo),
           # the SLI's job matchers, whose `up` says the application is there (SloTargetDown); derived from the
           # selectors above: set them too when overriding those
           "jobMatchers": [m.render() for m in job_matchers(slo)]}
    labels = getattr(slo, "labels", None)      # per-SLO labels, where the spec model has them (Sloth, OpenSLO)
    if labels:
        out["labels"] = dict(labels)
    return out


def service_config(spec: Spec) -> dict:
    db = spec.database
    config = {
        "labels": dict(spec.labels),
        "burnRateAlerts": {"page": _tier(spec.alerting.page), "ticket": _tier(spec.alerting.ticket)},
        "severities": dict(spec.alerting.severities),
        "slos": {slo.name: _slo(slo) for slo in spec.slos},
        "exporterJob": db.exporter_job,
        "database": {
            "latencyP99": {"metric": db.latency_p99.metric, "threshold": db.latency_p99.threshold,
                           "for": db.latency_p99.for_.text},
            "pool": {"inUse": db.pool.in_use, "max": db.pool.max, "waiting": db.pool.waiting,
                     "saturationRatio": db.pool.saturation_ratio, "maxWaiting": db.pool.max_waiting,
                     "for": db.pool.for_.text},
            "connections": {"saturationRatio": db.connections.saturation_ratio, "for": db.connections.for_.text},
            "slowStatements": {"meanSeconds": db.slow_statements.mean_seconds,
                               "minCallsPerSecond": db.slow_statements.min_calls_per_second,
                               "regressionFactor": db.slow_statements.regression_factor,
                               "for": db.slow_statements.for_.text},
            "seqScans": {"minLiveRows": db.seq_scans.min_live_rows,
                         "rowsReadPerSecond": db.seq_scans.rows_read_per_second, "for": db.seq_scans.for_.text},
            "lockWaits": {"maxWaitingSessions": db.lock_waits.max_waiting_sessions, "for": db.lock_waits.for_.text},
            "longTransactions": {"maxSeconds": db.long_transactions.max_seconds,
                                 "for": db.long_transactions.for_.text},
        },
    }
    # a fleet run gives each service its own incident dashboard, which its alerts link to
    incident_uid = getattr(spec, "incident_uid", dashboard_links.INCIDENT_UID)
    if incident_uid != dashboard_links.INCIDENT_UID:
        config["incidentUid"] = incident_uid
    return config


def default_config(specs: Spec | Sequence[Spec]) -> dict:
    specs = [specs] if isinstance(specs, Spec) else list(specs)
    first = specs[0].links
    services = {}
    for spec in specs:
        services[spec.service] = service_config(spec)
        # a service whose links differ from the first one's keeps its own
        if spec.links.grafana != first.grafana:
            services[spec.service]["grafanaUrl"] = spec.links.grafana
        if spec.links.runbook != first.runbook:
            services[spec.service]["runbookUrl"] = spec.links.runbook
    return {"grafanaUrl": first.grafana, "runbookUrl": first.runbook, "dashboardTags": list(TAGS),
            "dashboardRefresh": DASHBOARD_REFRESH, "dashboardTimezone": DASHBOARD_TIMEZONE, "datasource": DATASOURCE,
            "services": services}


def names_data() -> dict:
    return {
        "metrics": {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)},
        "sliErrorRatioPrefix": names.SLI_ERROR_RATIO_PREFIX,
        "burnRateAlertSuffix": names.BURN_RATE_ALERT_SUFFIX,
        "incidentUid": dashboard_links.INCIDENT_UID,
        "runbookAnchors": dict(names.ALERT_ANCHORS),
        "alertPanels": {alert: {"uid": uid, "panel": panel}
                        for alert, (uid, panel) in dashboard_links.ALERT_PANELS.items()},
    }


def _data_file(what: str, data: dict) -> str:
    # One JSON value (jsonnet is a superset of JSON): sorted, indented, byte-stable.
    body = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)
    return f"// {GENERATED_NOTE}\n// {what}\n{body}\n"


def _line(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)   # no indent: the C encoder


def config_libsonnet(config: dict) -> str:
    """`{ _config+:: {...} }` with one SLO per line: a spec edit is a one-line diff, and 1,000 SLOs are written
    by the C JSON encoder (an indented dump is the pure-Python one, 10x slower)."""
    out = [f"// {GENERATED_NOTE}", "// _config from the spec: override any field with _config+:: { ... }",
           "{", "  _config+:: {"]
    out += [f"    {_line(k)}: {_line(v)}," for k, v in sorted(config.items()) if k != "services"]
    out.append('    "services": {')
    for name, service in sorted(config["services"].items()):
        out.append(f"      {_line(name)}: {{")
        out += [f"        {_line(k)}: {_line(v)}," for k, v in sorted(service.items()) if k != "slos"]
        out.append('        "slos": {')
        out += [f"          {_line(slo)}: {_line(v)}," for slo, v in sorted(service["slos"].items())]
        out += ["        },", "      },"]
    out += ["    },", "  },", "}"]
    return "\n".join(out) + "\n"


def mixin_libsonnet(dashboards: dict[str, str | None]) -> str:
    """`dashboards`: {path: service of a per-service dashboard, or None for the fleet overview}."""
    entries = "\n".join(
        f"    {json.dumps(path.rsplit('/', 1)[-1])}: {{ service: {json.dumps(service)}, board: import {json.dumps(path)} }},"
        for path, service in sorted(dashboards.items()))
    return f"""// {GENERATED_NOTE}
// sloguard monitoring mixin: prometheusAlerts, prometheusRules, grafanaDashboards and _config.
// Rules and alerts are built in jsonnet ({LIB_PATH}) from _config ({CONFIG_PATH}): override
// thresholds, objectives, selectors and `for:` durations there, e.g.
//   (import 'mixin.libsonnet') + {{ _config+:: {{ services+: {{ api+: {{ database+: {{ pool+: {{ saturationRatio: 0.8 }} }} }} }} }} }}
(import {json.dumps(LIB_PATH)}) + (import {json.dumps(CONFIG_PATH)}) + {{
  sloguardDashboards+:: {{
{entries}
  }},
}}
"""


def library_files() -> dict[str, str]:
    """{mixin/lib/<name>: text}: the library source, marked as a generated copy."""
    out = {}
    for name in sorted(os.listdir(LIB_SOURCE)):
        if name.endswith(".libsonnet"):
            with open(os.path.join(LIB_SOURCE, name), encoding="utf-8") as fh:
                out[f"{LIB_DIR}/{name}"] = (f"// Generated by sloguard (make generate), a copy of "
                                            f"sloguard/dashboards/jsonnet/{name}: edit that file, not this one.\n"
                                            + fh.read())
    return out


def render(specs: Sequence[Spec], rendered: dict[str, str], dashboard_paths: list[str]) -> dict[str, str]:
    from sloguard.dashboards import dashboard_path, incident_uids

    per_service = {dashboard_path(uid): service for service, uid in incident_uids(specs).items()}
    dashboards = {path: per_service.get(path) for path in dashboard_paths}
    config = config_libsonnet(default_config(specs))
    return {
        MIXIN_PATH: mixin_libsonnet(dashboards),
        CONFIG_PATH: config,
        NAMES_PATH: _data_file("Names agreed in sloguard/names.py and sloguard/dashboard_links.py.", names_data()),
        **library_files(),
    }
