"""The one place where metric names, alert names and runbook anchors are agreed.

The exporter (exporters/pg_exporter), the rule builders, the dashboard builders, the runbook checks and the
simulation all import from here, so a rename is a one-line change that every test then checks.
"""

# --- Metrics exposed by exporters/pg_exporter (prefix keeps them apart from postgres_exporter's pg_*) ---
PREFIX = "sloguard_pg"

# health
PG_UP = f"{PREFIX}_up"                                          # gauge 1/0: database reachable on last scrape
COLLECTOR_SUCCESS = f"{PREFIX}_collector_success"              # gauge {collector}
COLLECTOR_DURATION = f"{PREFIX}_collector_duration_seconds"    # gauge {collector}
SCRAPE_ERRORS = f"{PREFIX}_scrape_errors_total"                # counter {collector}
EXPORTER_INFO = f"{PREFIX}_exporter_info"                      # gauge 1 {version, server_version}

# pg_stat_statements, top-N by total execution time; labels {datname, user, queryid}
STATEMENT_CALLS = f"{PREFIX}_statement_calls_total"
STATEMENT_EXEC_SECONDS = f"{PREFIX}_statement_exec_seconds_total"
STATEMENT_ROWS = f"{PREFIX}_statement_rows_total"
STATEMENT_SHARED_BLKS_HIT = f"{PREFIX}_statement_shared_blocks_hit_total"
STATEMENT_SHARED_BLKS_READ = f"{PREFIX}_statement_shared_blocks_read_total"
STATEMENT_MEAN_SECONDS = f"{PREFIX}_statement_mean_exec_seconds"   # gauge, cumulative mean since reset
STATEMENT_MAX_SECONDS = f"{PREFIX}_statement_max_exec_seconds"     # gauge
STATEMENT_INFO = f"{PREFIX}_statement_info"   # gauge 1 {datname,user,queryid,query} only when query text is on
# gauge 1 {datname,user,queryid,fingerprint}, always on: a hash of the normalised text (never the text), so a
# statement keeps its identity when PG re-hashes its queryid (SELECT * after ADD COLUMN)
STATEMENT_FINGERPRINT = f"{PREFIX}_statement_fingerprint_info"

# per table, labels {datname, schemaname, relname}
TABLE_SEQ_SCAN = f"{PREFIX}_table_seq_scan_total"
TABLE_SEQ_TUP_READ = f"{PREFIX}_table_seq_tup_read_total"
TABLE_IDX_SCAN = f"{PREFIX}_table_idx_scan_total"
TABLE_LIVE_ROWS = f"{PREFIX}_table_live_rows"
TABLE_SIZE_BYTES = f"{PREFIX}_table_size_bytes"

# missing-index evidence, labels {datname, queryid, schemaname, relname, columns, index}
#   columns: comma-separated candidate columns in index order, e.g. "email"
#   index:   the proposed DDL, e.g. "CREATE INDEX CONCURRENTLY ON public.users (email)"
MISSING_INDEX = f"{PREFIX}_missing_index_suspect"                     # gauge 1 per suspect
MISSING_INDEX_COST_BEFORE = f"{PREFIX}_missing_index_plan_cost_before"  # gauge, planner cost units
MISSING_INDEX_COST_AFTER = f"{PREFIX}_missing_index_plan_cost_after"    # gauge, with the HypoPG index

# connections; labels {datname, state, wait_event_type} on CONNECTIONS
CONNECTIONS = f"{PREFIX}_connections"
MAX_CONNECTIONS = f"{PREFIX}_max_connections"
SUPERUSER_RESERVED_CONNECTIONS = f"{PREFIX}_superuser_reserved_connections"
LOCK_WAITING_SESSIONS = f"{PREFIX}_lock_waiting_sessions"          # gauge {datname}
OLDEST_TRANSACTION_SECONDS = f"{PREFIX}_oldest_transaction_seconds"  # gauge {datname}

# migrations table (configurable); labels {version}
MIGRATION_LAST_APPLIED = f"{PREFIX}_migration_last_applied_timestamp_seconds"

EXPORTER_METRICS = (
    PG_UP, COLLECTOR_SUCCESS, COLLECTOR_DURATION, SCRAPE_ERRORS, EXPORTER_INFO,
    STATEMENT_CALLS, STATEMENT_EXEC_SECONDS, STATEMENT_ROWS, STATEMENT_SHARED_BLKS_HIT,
    STATEMENT_SHARED_BLKS_READ, STATEMENT_MEAN_SECONDS, STATEMENT_MAX_SECONDS, STATEMENT_INFO, STATEMENT_FINGERPRINT,
    TABLE_SEQ_SCAN, TABLE_SEQ_TUP_READ, TABLE_IDX_SCAN, TABLE_LIVE_ROWS, TABLE_SIZE_BYTES,
    MISSING_INDEX, MISSING_INDEX_COST_BEFORE, MISSING_INDEX_COST_AFTER,
    CONNECTIONS, MAX_CONNECTIONS, SUPERUSER_RESERVED_CONNECTIONS, LOCK_WAITING_SESSIONS,
    OLDEST_TRANSACTION_SECONDS, MIGRATION_LAST_APPLIED,
)

# Collector names used as the {collector} label value.
COLLECTORS = ("statements", "tables", "missing_indexes", "connections", "locks", "migrations")

# Default listen port: postgres_exporter owns 9187.
EXPORTER_DEFAULT_PORT = 9188

# --- Alert names (CamelCase) and the runbook anchor each one links to ---
# Burn-rate alerts are generated per SLO as <SloCamel>ErrorBudgetBurn, label burn_window="1h/5m" etc.
BURN_RATE_ALERT_SUFFIX = "ErrorBudgetBurn"

ALERT_ANCHORS = {
    # alert name -> anchor in runbooks/high-latency-response.md
    "ErrorBudgetBurn": "slo-error-budget-burn",  # every <Slo>ErrorBudgetBurn alert
    "ApiLatencyP99High": "api-latency-p99-high",
    "AppDbPoolSaturated": "connection-pool-saturation",
    "AppDbPoolWaiters": "connection-pool-saturation",
    "PostgresConnectionsNearLimit": "postgres-connections-near-limit",
    "PostgresStatementSlow": "slow-statements",
    "PostgresStatementRegression": "slow-statements",
    "PostgresSeqScanLargeTable": "sequential-scans-on-large-tables",
    "PostgresMissingIndexSuspected": "sequential-scans-on-large-tables",
    "PostgresLockWaits": "lock-waits",
    "PostgresLongRunningTransaction": "long-running-transactions",
    "PostgresExporterDown": "exporter-down",
    "PgStatStatementsUnavailable": "exporter-down",
    "SloHistogramBucketMissing": "slo-error-budget-burn",  # a latency SLO whose threshold is no bucket boundary
    "SloHistogramBucketPartial": "slo-histogram-bucket-on-some-series-only",
    "SloTargetDown": "service-outage",
    "SloMetricAbsent": "service-outage",
    "SloErrorBudgetExhausted": "slo-error-budget-exhausted",
    "SloErrorBudgetLow": "slo-error-budget-exhausted",
}

RUNBOOK_PATH = "runbooks/high-latency-response.md"


def runbook_anchor(alertname: str) -> str:
    """Anchor for an alert; burn-rate alerts share one section."""
    if alertname.endswith(BURN_RATE_ALERT_SUFFIX):
        return ALERT_ANCHORS["ErrorBudgetBurn"]
    return ALERT_ANCHORS[alertname]

# --- Recording rules written by sloguard.rules (dashboards may read them) ---
# Sloth-compatible SLO series: slo:sli_error:ratio_rate<window>, slo:error_budget:ratio, ... (labels sloth_*).
SLI_ERROR_RATIO_PREFIX = "slo:sli_error:ratio_rate"
# Per SLO, in the 5m-interval period group: requests and errors over the last 5m (the period ratio sums them).
SLO_REQUESTS_INCREASE = "sloguard:slo_requests:increase5m"
SLO_ERRORS_INCREASE = "sloguard:slo_errors:increase5m"
# Per statement {job, instance, datname, user, queryid}: recent mean and call rate.
RECORDED_STATEMENT_MEAN_5M = "sloguard:pg_statement_mean_seconds:rate5m"
RECORDED_STATEMENT_CALLS_5M = "sloguard:pg_statement_calls:rate5m"
# Per statement fingerprint {job, instance, datname, user, fingerprint}: the same statement across queryid changes.
RECORDED_FINGERPRINT_MEAN_5M = "sloguard:pg_fingerprint_mean_seconds:rate5m"
RECORDED_FINGERPRINT_MEAN_1H = "sloguard:pg_fingerprint_mean_seconds:rate1h"
RECORDED_FINGERPRINT_CALLS_5M = "sloguard:pg_fingerprint_calls:rate5m"
# its 1h mean a day earlier, else a week earlier, else the lowest 1h mean of the hour before (no history yet)
RECORDED_FINGERPRINT_MEAN_BASELINE = "sloguard:pg_fingerprint_mean_seconds:baseline"
