"""API latency and database incident dashboard: the one the 2024-01-15 on-call lacked.

Top to bottom it follows the investigation: symptoms (traffic, errors, timeouts, latency against the SLO
threshold), saturation (app pool, Postgres connections), the statements that got slow, the tables read by
sequential scans with the index the exporter proposes, then locks, long transactions and the exporter's health.

One dashboard per service: the API panels read the spec's own selectors; the database panels read the exporter's
series through the `job` and `instance` variables (default: the spec's exporter job, every instance), so a fleet
of databases behind one exporter job is one dropdown away.
"""
from __future__ import annotations

from grafanalib import core as g

from sloguard import names as n
from sloguard.dashboard_links import INCIDENT_UID, SLO_OVERVIEW_UID, panel_for
from sloguard.dashboards import common as c
from sloguard.spec.model import EventsSLI, LatencySLI, Spec

TITLE = "sloguard / API latency and database incident"
RI = c.RATE_INTERVAL
TOP_N = 10
SERVICE_VAR = "service"
JOB_VAR = "job"
INSTANCE_VAR = "instance"
# The exporter's series of the selected databases (dashboard-linter: every target filters on $job and $instance).
EXPORTER = f'job=~"${JOB_VAR}",instance=~"${INSTANCE_VAR}"'
# Alerts on the application's own metrics: they carry neither the exporter's job nor sloth_service.
APP_ALERTS = ("ApiLatencyP99High", "AppDbPoolSaturated", "AppDbPoolWaiters")


def _alert_panel(alertname: str) -> int:
    uid, panel_id = panel_for(alertname)
    assert uid == INCIDENT_UID, f"{alertname} links to {uid}, expected the incident dashboard"
    return panel_id


class P:
    """Panel ids. Those an alert links to come from sloguard/dashboard_links.py (the rule builders' contract);
    the others are fixed here at 20+ so they never meet a linked id."""

    LATENCY_PERCENTILES = _alert_panel("ApiLatencyP99High")
    APP_POOL = _alert_panel("AppDbPoolSaturated")
    PG_CONNECTIONS = _alert_panel("PostgresConnectionsNearLimit")
    STATEMENT_MEAN_TREND = _alert_panel("PostgresStatementSlow")      # also PostgresStatementRegression
    SEQ_ROWS_READ = _alert_panel("PostgresSeqScanLargeTable")
    MISSING_INDEX = _alert_panel("PostgresMissingIndexSuspected")
    LOCKS_AND_LONG_TX = _alert_panel("PostgresLockWaits")             # also PostgresLongRunningTransaction
    EXPORTER_HEALTH = _alert_panel("PostgresExporterDown")           # also PgStatStatementsUnavailable
    ROW_API = 20
    REQUEST_RATE = 21
    ERROR_RATIO = 22
    TIMEOUTS = 23
    ROW_POOL = 24
    ROW_STATEMENTS = 25
    TOP_BY_TOTAL = 26
    TOP_BY_MEAN = 27
    ROW_TABLES = 28
    TABLE_SCANS = 29
    ROW_LOCKS = 30


def _api_selectors(spec: Spec) -> tuple[str, str, float | None]:
    """(total, errors, availability budget) from the first events SLO; without one, the latency histogram's
    _count with 5xx codes stands in."""
    for slo in spec.slos:
        if isinstance(slo.sli, EventsSLI):
            return slo.sli.total, slo.sli.errors, slo.error_budget
    total = c.with_suffix(spec.database.latency_p99.metric, "_count")
    return total, c.selector(total, 'code=~"5.."'), None


def _latency_slo_threshold(spec: Spec) -> float:
    for slo in spec.slos:
        if isinstance(slo.sli, LatencySLI):
            return slo.sli.threshold
    return spec.database.latency_p99.threshold


def _rate(sel: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({sel}[{RI}]))"


def api_panels(spec: Spec, y: int) -> list:
    total, errors, budget = _api_selectors(spec)
    timeouts = c.selector(total, 'code="504"')
    histogram = spec.database.latency_p99.metric
    bucket = c.with_suffix(histogram, "_bucket")
    p99_limit = spec.database.latency_p99.threshold
    slo_limit = _latency_slo_threshold(spec)
    error_steps = c.threshold_steps(budget) if budget is not None else None
    return [
        c.row(P.ROW_API, "API symptoms: traffic, errors, timeouts, latency", y),
        c.timeseries(P.REQUEST_RATE, "Request rate by status code",
                     "Requests per second answered by the API, split by HTTP status code. "
                     "Bad: 5xx codes appearing, or total traffic dropping while clients retry.",
                     c.UNIT_REQPS, [c.target(_rate(total, "code"), "{{code}}")], c.gridpos(0, y + 1, 8, 8)),
        c.timeseries(P.ERROR_RATIO, "Error ratio (5xx / all)",
                     "Share of requests answered with a server error (timeouts included), 0 when none. The line is the "
                     "availability error budget. Bad: above the line, the availability budget is burning "
                     "faster than the SLO allows.",
                     c.UNIT_PERCENT, [c.target(f"({_rate(errors)} or on() vector(0)) / {_rate(total)}", "error ratio")],
                     c.gridpos(8, y + 1, 8, 8), error_steps, draw_thresholds=budget is not None),
        c.timeseries(P.TIMEOUTS, "Timeouts (HTTP 504)",
                     "Requests per second that timed out (504), 0 when none. Bad: any sustained value: requests "
                     "wait for a database connection or a slow statement past the gateway timeout.",
                     c.UNIT_REQPS, [c.target(f"{_rate(timeouts)} or on() vector(0)", "504/s")],
                     c.gridpos(16, y + 1, 8, 8)),
        c.timeseries(P.LATENCY_PERCENTILES, "Latency p50 / p95 / p99",
                     f"Percentiles from the {c.split_selector(histogram)[0]} histogram. The line is the p99 "
                     f"threshold ({c.fmt_number(p99_limit)} s; the latency SLO counts requests over "
                     f"{c.fmt_number(slo_limit)} s). Bad: p99 above the line; p50 rising too means every "
                     "request is slow (pool or database), not a few outliers.",
                     c.UNIT_SECONDS,
                     [c.target(f"histogram_quantile({q}, sum by (le) (rate({bucket}[{RI}])))", f"p{label}", ref)
                      for q, label, ref in (("0.5", "50", "A"), ("0.95", "95", "B"), ("0.99", "99", "C"))],
                     c.gridpos(0, y + 9, 24, 8), c.threshold_steps(p99_limit), draw_thresholds=True),
    ]


def saturation_panels(spec: Spec, y: int) -> list:
    pool = spec.database.pool
    job = EXPORTER
    max_conn = f"max({c.selector(n.MAX_CONNECTIONS, job)})"
    reserved = f"max({c.selector(n.SUPERUSER_RESERVED_CONNECTIONS, job)})"
    return [
        c.row(P.ROW_POOL, "Saturation: application pool and Postgres connections", y),
        c.timeseries(P.APP_POOL, "Application DB pool: in use / max / waiting",
                     f"Connections the API holds from its pool, the pool size, and requests queued for a "
                     f"connection. Bad: in use at max (alert at {c.fmt_number(pool.saturation_ratio * 100)}%) "
                     f"or more than {c.fmt_number(pool.max_waiting)} waiting: requests queue, then time out.",
                     c.UNIT_COUNT,
                     [c.target(f"sum({pool.in_use})", "in use", "A"), c.target(f"sum({pool.max})", "max", "B"),
                      c.target(f"sum({pool.waiting})", "waiting", "C")],
                     c.gridpos(0, y + 1, 12, 8)),
        c.timeseries(P.PG_CONNECTIONS, "Postgres connections by state vs max_connections",
                     "Server connections by state (active, idle, idle in transaction, ...), against "
                     "max_connections and the share applications may use (max_connections - "
                     "superuser_reserved_connections). Bad: total near the usable limit (alert at "
                     f"{c.fmt_number(spec.database.connections.saturation_ratio * 100)}%), or many 'active' "
                     "connections piling up behind slow statements.",
                     c.UNIT_COUNT,
                     [c.target(f"sum by (state) ({c.selector(n.CONNECTIONS, job)})", "{{state}}", "A"),
                      c.target(max_conn, "max_connections", "B"),
                      c.target(f"{max_conn} - {reserved}", "usable by applications", "C")],
                     c.gridpos(12, y + 1, 12, 8)),
    ]


def _statement_table(panel_id: int, title: str, description: str, rank_expr: str, x: int, y: int,
                     job: str, sort_by: str) -> g.Table:
    by = "datname, queryid"
    exec_rate = _rate(c.selector(n.STATEMENT_EXEC_SECONDS, job), by)
    calls_rate = _rate(c.selector(n.STATEMENT_CALLS, job), by)
    top = f"topk({TOP_N}, {rank_expr})"
    keep = f" and on({by}) {top}"
    targets = [
        c.target(f"({calls_rate}){keep}", ref="A", instant=True, table=True),
        c.target(f"({exec_rate} / ({calls_rate} > 0)){keep}", ref="B", instant=True, table=True),
        c.target(f"({exec_rate} / scalar(sum(rate({c.selector(n.STATEMENT_EXEC_SECONDS, job)}[{RI}])))){keep}",
                 ref="C", instant=True, table=True),
        c.target(f"({exec_rate}){keep}", ref="D", instant=True, table=True),
    ]
    rename = {"Value #A": "calls/s", "Value #B": "mean time", "Value #C": "share of total time",
              "Value #D": "exec seconds/s"}
    units = {"calls/s": c.UNIT_OPS, "mean time": c.UNIT_SECONDS, "share of total time": c.UNIT_PERCENT,
             "exec seconds/s": c.UNIT_SECONDS}
    return c.table(panel_id, title, description, c.UNIT_COUNT, targets, c.gridpos(x, y, 12, 9), rename, units,
                   sort_by=sort_by)


def statement_panels(spec: Spec, y: int) -> list:
    job = EXPORTER
    slow = spec.database.slow_statements
    by = "datname, queryid"
    exec_rate = _rate(c.selector(n.STATEMENT_EXEC_SECONDS, job), by)
    calls_rate = _rate(c.selector(n.STATEMENT_CALLS, job), by)
    # Ranked like the slow-statement alert: only statements called more than min_calls_per_second count.
    frequent_mean = f"{exec_rate} / ({calls_rate} > {c.fmt_number(slow.min_calls_per_second)})"
    top5 = f"topk(5, {frequent_mean})"
    return [
        c.row(P.ROW_STATEMENTS, "Statements (pg_stat_statements)", y),
        _statement_table(P.TOP_BY_TOTAL, f"Top {TOP_N} statements by total execution time",
                         "Statements ranked by execution seconds per second right now, with calls, mean time "
                         "and their share of all statement time. Bad: one queryid taking most of the time, "
                         "especially one whose mean jumped: it holds the pool's connections.",
                         exec_rate, 0, y + 1, job, "exec seconds/s"),
        _statement_table(P.TOP_BY_MEAN, f"Top {TOP_N} statements by mean execution time",
                         f"Statements ranked by recent mean execution time (seconds per call). Bad: a frequent "
                         f"statement above {c.fmt_number(slow.mean_seconds)} s per call (the slow-statement "
                         f"alert threshold); on 2024-01-15 the users lookup by email went from ms to seconds.",
                         frequent_mean, 12, y + 1, job, "mean time"),
        # No "past hour" baseline series: it has no data for the first hour of a Prometheus (or of a replay),
        # and the step at the migration annotation shows the regression anyway.
        c.timeseries(P.STATEMENT_MEAN_TREND, "Mean execution time per statement (top 5)",
                     f"Recent mean seconds per call of the five slowest frequent statements (over "
                     f"{c.fmt_number(slow.min_calls_per_second)} calls/s, like the alerts). The line is the "
                     f"slow-statement threshold. Bad: a statement above the line, or a step up of "
                     f"{c.fmt_number(slow.regression_factor)}x or more against its own level an hour before "
                     "(the regression alert), usually right at a migration annotation.",
                     c.UNIT_SECONDS, [c.target(top5, "{{datname}} {{queryid}}")],
                     c.gridpos(0, y + 10, 24, 8), c.threshold_steps(slow.mean_seconds), draw_thresholds=True),
    ]


def table_panels(spec: Spec, y: int) -> list:
    job = EXPORTER
    seq = spec.database.seq_scans
    by = "datname, schemaname, relname"
    index_by = "datname, schemaname, relname, columns, index, queryid"
    scans = c.table(
        P.TABLE_SCANS, "Tables: live rows, sequential vs index scans",
        f"Per table right now: live rows, sequential scans/s, rows read by them/s, index scans/s. Bad: a table "
        f"over {seq.min_live_rows:,} live rows with sequential scans every second and few index scans: a "
        f"query is missing an index.",
        c.UNIT_COUNT,
        [c.target(f"max by ({by}) ({c.selector(n.TABLE_LIVE_ROWS, job)})", ref="A", instant=True, table=True),
         c.target(_rate(c.selector(n.TABLE_SEQ_SCAN, job), by), ref="B", instant=True, table=True),
         c.target(_rate(c.selector(n.TABLE_SEQ_TUP_READ, job), by), ref="C", instant=True, table=True),
         c.target(_rate(c.selector(n.TABLE_IDX_SCAN, job), by), ref="D", instant=True, table=True)],
        c.gridpos(12, y + 1, 12, 8),
        {"Value #A": "live rows", "Value #B": "seq scans/s", "Value #C": "seq rows read/s",
         "Value #D": "index scans/s"},
        {"live rows": c.UNIT_COUNT, "seq scans/s": c.UNIT_OPS, "seq rows read/s": c.UNIT_ROWS_PER_SECOND,
         "index scans/s": c.UNIT_OPS}, sort_by="seq rows read/s")
    suspects = c.table(
        P.MISSING_INDEX, "Missing-index suspects and the index that fixes them",
        "Statements the exporter found seq-scanning a large table, the candidate columns, and the index it "
        "proposes, checked with a HypoPG hypothetical index (plan cost before and after). Bad: any row; run "
        "the proposed CREATE INDEX CONCURRENTLY (see the runbook) once the cost drop is large.",
        c.UNIT_COUNT,
        [c.target(f"max by ({index_by}) ({c.selector(n.MISSING_INDEX, job)})", ref="A", instant=True, table=True),
         c.target(f"max by ({index_by}) ({c.selector(n.MISSING_INDEX_COST_BEFORE, job)})", ref="B", instant=True,
                  table=True),
         c.target(f"max by ({index_by}) ({c.selector(n.MISSING_INDEX_COST_AFTER, job)})", ref="C", instant=True,
                  table=True)],
        c.gridpos(0, y + 9, 24, 7),
        {"index": "proposed index", "Value #B": "plan cost before", "Value #C": "plan cost with index"},
        {"plan cost before": c.UNIT_COUNT, "plan cost with index": c.UNIT_COUNT},
        sort_by="plan cost before", hide=("Time", "Value #A"))
    return [
        c.row(P.ROW_TABLES, "Tables: sequential scans and missing indexes", y),
        c.timeseries(P.SEQ_ROWS_READ, "Rows read by sequential scans, per table",
                     f"Rows per second read by sequential scans; the line is the seq-scan alert threshold "
                     f"({seq.rows_read_per_second:,.0f} rows/s on tables over {seq.min_live_rows:,} rows). "
                     "Bad: millions of rows/s on a big table, e.g. users after the 14:31 migration.",
                     c.UNIT_ROWS_PER_SECOND,
                     [c.target(_rate(c.selector(n.TABLE_SEQ_TUP_READ, job), "datname, relname"),
                               "{{datname}}.{{relname}}")],
                     c.gridpos(0, y + 1, 12, 8), c.threshold_steps(seq.rows_read_per_second),
                     draw_thresholds=True),
        scans,
        suspects,
    ]


def lock_panels(spec: Spec, y: int) -> list:
    job = EXPORTER
    locks = spec.database.lock_waits
    long_tx = spec.database.long_transactions
    return [
        c.row(P.ROW_LOCKS, "Locks, long transactions, exporter health", y),
        c.timeseries(P.LOCKS_AND_LONG_TX, "Lock waits and longest open transaction",
                     f"Left axis: backends waiting for a lock, per database (alert at "
                     f"{locks.max_waiting_sessions}, the line). Right axis: age of the oldest open transaction "
                     f"(alert at {c.fmt_number(long_tx.max_seconds)} s). Bad: a growing lock queue, usually behind "
                     "a migration or a transaction that climbs steadily (idle in transaction, stuck batch).",
                     c.UNIT_COUNT,
                     [c.target(f"sum by (datname) ({c.selector(n.LOCK_WAITING_SESSIONS, job)})",
                               "waiting on a lock {{datname}}", "A"),
                      c.target(f"max by (datname) ({c.selector(n.OLDEST_TRANSACTION_SECONDS, job)})",
                               "longest transaction {{datname}}", "B")],
                     c.gridpos(0, y + 1, 12, 8), c.threshold_steps(float(locks.max_waiting_sessions)),
                     draw_thresholds=True,
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "unit", "value": c.UNIT_SECONDS},
                                                {"id": "custom.axisPlacement", "value": "right"},
                                                {"id": "custom.thresholdsStyle", "value": {"mode": "off"}}]}]),
        c.timeseries(P.EXPORTER_HEALTH, "Exporter health: scrape, database, collectors",
                     "1 = yes. Scraped: Prometheus reaches the exporter; database reachable: the exporter "
                     "reaches Postgres; one line per collector. Bad: any 0: the panels above are blind "
                     "(e.g. pg_stat_statements missing turns the statements collector to 0).",
                     c.UNIT_BOOL,
                     [c.target(f"min(up{{{job}}})", "scraped", "A"),
                      c.target(f"min({c.selector(n.PG_UP, job)})", "database reachable", "B"),
                      c.target(f"min by (collector) ({c.selector(n.COLLECTOR_SUCCESS, job)})", "{{collector}}",
                               "C")],
                     c.gridpos(12, y + 1, 12, 8)),
    ]


def migration_annotation() -> dict:
    """The exporter reports each applied migration's timestamp; useValueForTime puts the mark at that instant
    (Grafana wants milliseconds), not at the scrape that first saw it."""
    return {
        "datasource": c.DATASOURCE, "enable": True, "iconColor": "orange", "name": "Migrations",
        "expr": f"max by (version) ({c.selector(n.MIGRATION_LAST_APPLIED, EXPORTER)}) * 1000",
        "step": "1m", "titleFormat": "Migration {{version}} applied", "textFormat": "version {{version}}",
        "tagKeys": "version", "useValueForTime": True,
    }


def service_alerts(spec: Spec) -> str:
    """Firing alerts of this service only: its SLO alerts (sloth_service), the database alerts of the selected
    exporter job and instances (they keep the exporter's labels), and the application alerts by name and the
    spec's own labels."""
    firing = 'alertstate="firing"'
    app = [firing, f'alertname=~"{"|".join(APP_ALERTS)}"'] + [f'{k}="{v}"' for k, v in spec.labels.items()]
    return (f'ALERTS{{{firing},sloth_service="${SERVICE_VAR}"}} or ALERTS{{{firing},{EXPORTER}}} '
            f'or ALERTS{{{",".join(app)}}}')


def alerts_annotation(spec: Spec) -> dict:
    return {
        "datasource": c.DATASOURCE, "enable": True, "iconColor": "red", "name": "Firing alerts",
        "expr": service_alerts(spec), "step": "1m",
        "titleFormat": "{{alertname}}", "textFormat": "severity {{severity}}", "tagKeys": "alertname,severity",
        "useValueForTime": False,
    }


def variables(spec: Spec) -> list[dict]:
    return [
        c.constant_variable(SERVICE_VAR, spec.service),
        c.query_variable(JOB_VAR, "Exporter job", f"label_values({n.PG_UP}, job)", spec.database.exporter_job),
        c.query_variable(INSTANCE_VAR, "Database instance", f'label_values({n.PG_UP}{{job=~"${JOB_VAR}"}}, instance)'),
    ]


def links(spec: Spec) -> list[dict]:
    return [
        c.link("SLO overview", f"/d/{SLO_OVERVIEW_UID}?var-service={spec.service}", "Budgets and burn rates of "
               f"{spec.service}'s SLOs", "dashboard"),
        c.link("Runbook", spec.links.runbook, "What to do for each alert", "doc", target_blank=True),
        c.link("Alert rules", "/alerting/list", "Grafana's list of alert rules (Prometheus datasource rules "
               "included)", "bolt"),
        c.dashboards_link(c.TAGS[:1]),
    ]


def build(spec: Spec, uid: str = INCIDENT_UID) -> dict:
    panels = [*api_panels(spec, 0), *saturation_panels(spec, 17), *statement_panels(spec, 26),
              *table_panels(spec, 44), *lock_panels(spec, 61)]
    return c.dashboard(
        uid, f"{TITLE} ({spec.service})",
        f"Service {spec.service}: API symptoms, connection saturation, slow statements, missing indexes, locks.",
        panels, [migration_annotation(), alerts_annotation(spec)], variables(spec), links(spec),
    )
