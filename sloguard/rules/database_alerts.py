"""Cause and symptom alerts around the database, driven by the spec's `database` section.

Burn-rate pages are right for the budget but slow for a cliff (the latency page needs ~19 min on the 2024-01-15
incident); these short-window alerts on the pool, the statements and the tables are what make detection fast.
Metric names come from sloguard.names (the exporter's contract).
"""
from __future__ import annotations

from sloguard import names, promql
from sloguard.rules.burn_alerts import min_events_guard
from sloguard.rules.common import link_annotations, severity
from sloguard.spec import model

STATEMENT_MEAN_5M = names.RECORDED_STATEMENT_MEAN_5M
STATEMENT_CALLS_5M = names.RECORDED_STATEMENT_CALLS_5M
FP_MEAN_5M = names.RECORDED_FINGERPRINT_MEAN_5M
FP_MEAN_1H = names.RECORDED_FINGERPRINT_MEAN_1H
FP_CALLS_5M = names.RECORDED_FINGERPRINT_CALLS_5M
FP_BASELINE = names.RECORDED_FINGERPRINT_MEAN_BASELINE
STATEMENT_KEYS = "job, instance, datname, user"
EXPORTER_DOWN_FOR = "5m"
STATEMENTS_UNAVAILABLE_FOR = "10m"


def _job(spec: model.Spec, metric: str, *extra: promql.Matcher) -> str:
    """metric{job="<exporter_job>", ...}, escaped by Matcher.render (the loader also restricts the job name)."""
    return promql.Selector(metric, (promql.Matcher("job", "=", spec.database.exporter_job), *extra)).render()


def _by_fingerprint(spec: model.Spec, counter: str, window: str) -> str:
    """Per-fingerprint rate: every queryid of a statement (before and after ADD COLUMN re-hashed it) summed."""
    info = _job(spec, names.STATEMENT_FINGERPRINT)
    return (f"sum by ({STATEMENT_KEYS}, fingerprint) (\n  rate({_job(spec, counter)}[{window}])\n"
            f"  * on ({STATEMENT_KEYS}, queryid) group_left (fingerprint)\n  {info}\n)")


def build_database_recordings(spec: model.Spec) -> list[dict]:
    """Per-statement mean execution time and call rate from pg_stat_statements counters, per queryid (slow
    statements) and per fingerprint (regressions: the identity survives a queryid change), plus the baseline."""
    ex, calls = _job(spec, names.STATEMENT_EXEC_SECONDS), _job(spec, names.STATEMENT_CALLS)
    labels = dict(spec.labels)

    def fp_mean(window: str) -> str:
        return (f"{_by_fingerprint(spec, names.STATEMENT_EXEC_SECONDS, window)}\n/\n"
                f"{_by_fingerprint(spec, names.STATEMENT_CALLS, window)}\n> 0")

    mean_1h = _job(spec, FP_MEAN_1H)
    return [
        {"record": STATEMENT_CALLS_5M, "expr": f"rate({calls}[5m])", "labels": labels},
        {"record": STATEMENT_MEAN_5M, "expr": f"rate({ex}[5m])\n/\nrate({calls}[5m]) > 0", "labels": labels},
        {"record": FP_CALLS_5M, "expr": _by_fingerprint(spec, names.STATEMENT_CALLS, "5m"), "labels": labels},
        {"record": FP_MEAN_5M, "expr": fp_mean("5m"), "labels": labels},
        {"record": FP_MEAN_1H, "expr": fp_mean("1h"), "labels": labels},
        # The same hour a day (else a week) earlier: a regression is compared with the statement's own normal, and
        # the baseline does not absorb the regression as the previous hour did (it cleared ~15 min in). Without
        # that history (a new statement, a new Prometheus): the lowest hourly mean recorded over the hour before
        # the last 5m, which holds the pre-regression mean for the first hour of a regression.
        {"record": FP_BASELINE,
         "expr": f"{mean_1h} offset 1d\nor\n{mean_1h} offset 1w\nor\nmin_over_time({mean_1h}[1h] offset 5m)",
         "labels": labels},
    ]


def _alert(spec: model.Spec, name: str, expr: str, for_: str, family: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {**spec.labels, "severity": severity(spec, family)},
        "annotations": {"summary": summary, "description": description, **link_annotations(spec, name)},
    }


def build_database_alerts(spec: model.Spec) -> list[dict]:
    db, n = spec.database, promql.fmt_number
    job = db.exporter_job
    job_up = _job(spec, "up")
    p99 = db.latency_p99
    bucket = promql.with_suffix(p99.metric, "_bucket")
    pool = db.pool
    conn_on = "on (job, instance)"
    ss = db.slow_statements
    stmt_keys = "{{ $labels.datname }} queryid {{ $labels.queryid }} (user {{ $labels.user }})"
    table = "{{ $labels.datname }}.{{ $labels.schemaname }}.{{ $labels.relname }}"
    p99_expr = f"histogram_quantile(0.99, sum by (le) (rate({bucket}[5m]))) > {n(p99.threshold)}"
    if spec.alerting.page.min_events > 0:
        # same low-traffic guard as the burn-rate pages: 3 requests in 5 min, one slow, mean nothing
        count = promql.with_suffix(p99.metric, "_count")
        p99_expr += f"\nand on ()\n{min_events_guard(count, '5m', spec.alerting.page.min_events)}"
    return [
        _alert(spec, "ApiLatencyP99High", p99_expr,
               p99.for_.text, "latency_p99", "API p99 latency is above its threshold.",
               f"p99 latency over 5m is {{{{ $value | humanizeDuration }}}} (threshold {n(p99.threshold)}s). "
               "Check the pool and slow-statement alerts for the cause."),
        _alert(spec, "AppDbPoolSaturated",
               f"{pool.in_use}\n/\n{pool.max}\n> {n(pool.saturation_ratio)}",
               pool.for_.text, "pool", "The application database connection pool is nearly exhausted.",
               f"{{{{ $labels.instance }}}} uses {{{{ $value | humanizePercentage }}}} of its pool "
               f"(threshold {n(pool.saturation_ratio * 100)}%). Requests will queue then time out."),
        _alert(spec, "AppDbPoolWaiters",
               f"{pool.waiting} > {n(pool.max_waiting)}",
               pool.for_.text, "pool", "Requests are waiting for a database connection.",
               f"{{{{ $value }}}} requests wait for a pool connection on {{{{ $labels.instance }}}} "
               f"(threshold {n(pool.max_waiting)})."),
        _alert(spec, "PostgresConnectionsNearLimit",
               f"sum by (job, instance) ({_job(spec, names.CONNECTIONS)})\n/ {conn_on}\n"
               f"({_job(spec, names.MAX_CONNECTIONS)} - {conn_on} {_job(spec, names.SUPERUSER_RESERVED_CONNECTIONS)})\n"
               f"> {n(db.connections.saturation_ratio)}",
               db.connections.for_.text, "database", "PostgreSQL connections are close to the usable limit.",
               "{{ $labels.instance }} uses {{ $value | humanizePercentage }} of max_connections - "
               f"superuser_reserved_connections (threshold {n(db.connections.saturation_ratio * 100)}%)."),
        _alert(spec, "PostgresStatementSlow",
               f'{_job(spec, STATEMENT_MEAN_5M)} > {n(ss.mean_seconds)}\n'
               f'and\n{_job(spec, STATEMENT_CALLS_5M)} > {n(ss.min_calls_per_second)}',
               ss.for_.text, "database", "A frequent PostgreSQL statement is slow.",
               f"Statement {stmt_keys} takes {{{{ $value | humanizeDuration }}}} on average over 5m "
               f"(threshold {n(ss.mean_seconds)}s)."),
        _alert(spec, "PostgresStatementRegression",
               f'{_job(spec, FP_MEAN_5M)}\n> {n(ss.regression_factor)} * {_job(spec, FP_BASELINE)}\n'
               f'and\n{_job(spec, FP_CALLS_5M)} > {n(ss.min_calls_per_second)}',
               ss.for_.text, "database", "A PostgreSQL statement became much slower than it usually is.",
               "Statement fingerprint {{ $labels.fingerprint }} in {{ $labels.datname }} (user {{ $labels.user }}) "
               f"now takes {{{{ $value | humanizeDuration }}}} on average, more than {n(ss.regression_factor)}x its "
               "mean at the same hour a day earlier (else a week earlier, else the hour before). Its queryid may "
               "have changed (ADD COLUMN re-hashes SELECT *). A deploy or migration changed its plan?"),
        _alert(spec, "PostgresSeqScanLargeTable",
               f"rate({_job(spec, names.TABLE_SEQ_TUP_READ)}[5m]) > {n(db.seq_scans.rows_read_per_second)}\n"
               f"and on (job, instance, datname, schemaname, relname)\n"
               f"{_job(spec, names.TABLE_LIVE_ROWS)} >= {db.seq_scans.min_live_rows}",
               db.seq_scans.for_.text, "database", "A large table is being read by sequential scans.",
               f"{table} is seq-scanned at {{{{ $value | humanize }}}} rows/s "
               f"(threshold {n(db.seq_scans.rows_read_per_second)}); a filter column probably lacks an index."),
        _alert(spec, "PostgresMissingIndexSuspected",
               f"{_job(spec, names.MISSING_INDEX)} == 1",
               db.seq_scans.for_.text, "database", "A frequent statement would be much cheaper with an index.",
               f"Statement {{{{ $labels.queryid }}}} on {table} filters on ({{{{ $labels.columns }}}}) "
               "without an index. Proposed: {{ $labels.index }}"),
        _alert(spec, "PostgresLockWaits",
               f"{_job(spec, names.LOCK_WAITING_SESSIONS)} > {db.lock_waits.max_waiting_sessions}",
               db.lock_waits.for_.text, "database", "PostgreSQL sessions are waiting for locks.",
               f"{{{{ $value }}}} sessions wait for a lock in {{{{ $labels.datname }}}} "
               f"(threshold {db.lock_waits.max_waiting_sessions})."),
        _alert(spec, "PostgresLongRunningTransaction",
               f"{_job(spec, names.OLDEST_TRANSACTION_SECONDS)} > {n(db.long_transactions.max_seconds)}",
               db.long_transactions.for_.text, "database", "A PostgreSQL transaction has been open for too long.",
               f"The oldest transaction in {{{{ $labels.datname }}}} has run for {{{{ $value | humanizeDuration }}}} "
               f"(threshold {n(db.long_transactions.max_seconds)}s); it holds locks and blocks vacuum."),
        _alert(spec, "PostgresExporterDown",
               f'{job_up} == 0\nor\n{_job(spec, names.PG_UP)} == 0\nor\nabsent({job_up})',
               EXPORTER_DOWN_FOR, "database", "The PostgreSQL exporter or its database is unreachable.",
               f"Prometheus cannot scrape job {job} (instance {{{{ $labels.instance }}}}), or the exporter cannot "
               "reach PostgreSQL: every database alert is blind until it is back."),
        _alert(spec, "PgStatStatementsUnavailable",
               f'{_job(spec, names.COLLECTOR_SUCCESS, promql.Matcher("collector", "=", "statements"))} == 0',
               STATEMENTS_UNAVAILABLE_FOR, "database", "The pg_stat_statements view cannot be read.",
               "The statements collector of {{ $labels.instance }} fails: slow-statement alerts are blind. "
               "Is pg_stat_statements in shared_preload_libraries and the extension created?"),
    ]
