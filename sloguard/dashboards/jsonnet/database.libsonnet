// Cause and symptom alerts around the database, and the per-statement recordings they read: the jsonnet twin
// of sloguard/rules/database_alerts.py, driven by a service's `database` _config entry.
local links = import 'links.libsonnet';
local p = import 'promql.libsonnet';
local names = import '../names.libsonnet';

local m = names.metrics;
local n = p.fmtNumber;
local statementKeys = 'job, instance, datname, user';

{
  exporterSelector(svc)::
    if std.objectHas(svc, 'exporterSelector') then svc.exporterSelector else p.matcher('job', '=', svc.exporterJob),

  // metric{<exporter selector>[, extra]}
  job(svc, metric, extra=null)::
    metric + '{' + self.exporterSelector(svc) + (if extra == null then '' else ',' + extra) + '}',

  // Per-fingerprint rate: every queryid of a statement (before and after ADD COLUMN re-hashed it) summed.
  byFingerprint(svc, counter, window)::
    'sum by (' + statementKeys + ', fingerprint) (\n  rate(' + $.job(svc, counter) + '[' + window + '])\n'
    + '  * on (' + statementKeys + ', queryid) group_left (fingerprint)\n  ' + $.job(svc, m.STATEMENT_FINGERPRINT) + '\n)',

  recordings(svc)::
    local ex = $.job(svc, m.STATEMENT_EXEC_SECONDS);
    local calls = $.job(svc, m.STATEMENT_CALLS);
    local fpMean(window) =
      $.byFingerprint(svc, m.STATEMENT_EXEC_SECONDS, window) + '\n/\n'
      + $.byFingerprint(svc, m.STATEMENT_CALLS, window) + '\n> 0';
    local mean1h = $.job(svc, m.RECORDED_FINGERPRINT_MEAN_1H);
    [
      { record: m.RECORDED_STATEMENT_CALLS_5M, expr: 'rate(' + calls + '[5m])', labels: svc.labels },
      { record: m.RECORDED_STATEMENT_MEAN_5M, expr: 'rate(' + ex + '[5m])\n/\nrate(' + calls + '[5m]) > 0', labels: svc.labels },
      { record: m.RECORDED_FINGERPRINT_CALLS_5M, expr: $.byFingerprint(svc, m.STATEMENT_CALLS, '5m'), labels: svc.labels },
      { record: m.RECORDED_FINGERPRINT_MEAN_5M, expr: fpMean('5m'), labels: svc.labels },
      { record: m.RECORDED_FINGERPRINT_MEAN_1H, expr: fpMean('1h'), labels: svc.labels },
      {
        record: m.RECORDED_FINGERPRINT_MEAN_BASELINE,
        expr: mean1h + ' offset 1d\nor\n' + mean1h + ' offset 1w\nor\nmin_over_time(' + mean1h + '[1h] offset 5m)',
        labels: svc.labels,
      },
    ],

  alert(svc, linkCfg, name, expr, forDuration, family, summary, description):: {
    alert: name,
    expr: expr,
    'for': forDuration,
    labels: svc.labels { severity: svc.severities[family] },
    annotations: { summary: summary, description: description } + links.annotations(linkCfg, name),
  },

  alerts(svc, linkCfg)::
    local db = svc.database;
    local a(name, expr, f, sev, summary, description) = $.alert(svc, linkCfg, name, expr, f, sev, summary, description);
    local jobUp = $.job(svc, 'up');
    local p99 = db.latencyP99;
    local bucket = p.withSuffix(p99.metric, '_bucket');
    local pool = db.pool;
    local connOn = 'on (job, instance)';
    local ss = db.slowStatements;
    local stmtKeys = '{{ $labels.datname }} queryid {{ $labels.queryid }} (user {{ $labels.user }})';
    local table = '{{ $labels.datname }}.{{ $labels.schemaname }}.{{ $labels.relname }}';
    local minEvents = std.get(svc.burnRateAlerts.page, 'minEvents', 0);
    local guard =
      if minEvents > 0 then
        '\nand on ()\nsum(increase(' + p.withSuffix(p99.metric, '_count') + '[5m])) >= ' + minEvents
      else '';
    local mean5m = $.job(svc, m.RECORDED_STATEMENT_MEAN_5M);
    local calls5m = $.job(svc, m.RECORDED_STATEMENT_CALLS_5M);
    [
      a('ApiLatencyP99High',
        'histogram_quantile(0.99, sum by (le) (rate(' + bucket + '[5m]))) > ' + n(p99.threshold) + guard,
        p99['for'], 'latency_p99', 'API p99 latency is above its threshold.',
        'p99 latency over 5m is {{ $value | humanizeDuration }} (threshold ' + n(p99.threshold) + 's). '
        + 'Check the pool and slow-statement alerts for the cause.'),
      a('AppDbPoolSaturated',
        pool.inUse + '\n/\n' + pool.max + '\n> ' + n(pool.saturationRatio),
        pool['for'], 'pool', 'The application database connection pool is nearly exhausted.',
        '{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its pool (threshold '
        + n(pool.saturationRatio * 100) + '%). Requests will queue then time out.'),
      a('AppDbPoolWaiters',
        pool.waiting + ' > ' + n(pool.maxWaiting),
        pool['for'], 'pool', 'Requests are waiting for a database connection.',
        '{{ $value }} requests wait for a pool connection on {{ $labels.instance }} (threshold '
        + n(pool.maxWaiting) + ').'),
      a('PostgresConnectionsNearLimit',
        'sum by (job, instance) (' + $.job(svc, m.CONNECTIONS) + ')\n/ ' + connOn + '\n('
        + $.job(svc, m.MAX_CONNECTIONS) + ' - ' + connOn + ' ' + $.job(svc, m.SUPERUSER_RESERVED_CONNECTIONS)
        + ')\n> ' + n(db.connections.saturationRatio),
        db.connections['for'], 'database', 'PostgreSQL connections are close to the usable limit.',
        '{{ $labels.instance }} uses {{ $value | humanizePercentage }} of max_connections - '
        + 'superuser_reserved_connections (threshold ' + n(db.connections.saturationRatio * 100) + '%).'),
      a('PostgresStatementSlow',
        mean5m + ' > ' + n(ss.meanSeconds) + '\nand\n' + calls5m + ' > ' + n(ss.minCallsPerSecond),
        ss['for'], 'database', 'A frequent PostgreSQL statement is slow.',
        'Statement ' + stmtKeys + ' takes {{ $value | humanizeDuration }} on average over 5m (threshold '
        + n(ss.meanSeconds) + 's).'),
      a('PostgresStatementRegression',
        $.job(svc, m.RECORDED_FINGERPRINT_MEAN_5M) + '\n> ' + n(ss.regressionFactor) + ' * '
        + $.job(svc, m.RECORDED_FINGERPRINT_MEAN_BASELINE) + '\nand\n' + $.job(svc, m.RECORDED_FINGERPRINT_CALLS_5M)
        + ' > ' + n(ss.minCallsPerSecond),
        ss['for'], 'database', 'A PostgreSQL statement became much slower than it usually is.',
        'Statement fingerprint {{ $labels.fingerprint }} in {{ $labels.datname }} (user {{ $labels.user }}) now takes '
        + '{{ $value | humanizeDuration }} on average, more than ' + n(ss.regressionFactor) + 'x its mean at the same '
        + 'hour a day earlier (else a week earlier, else the hour before). Its queryid may have changed (ADD COLUMN '
        + 're-hashes SELECT *). A deploy or migration changed its plan?'),
      a('PostgresSeqScanLargeTable',
        'rate(' + $.job(svc, m.TABLE_SEQ_TUP_READ) + '[5m]) > ' + n(db.seqScans.rowsReadPerSecond)
        + '\nand on (job, instance, datname, schemaname, relname)\n' + $.job(svc, m.TABLE_LIVE_ROWS) + ' >= '
        + db.seqScans.minLiveRows,
        db.seqScans['for'], 'database', 'A large table is being read by sequential scans.',
        table + ' is seq-scanned at {{ $value | humanize }} rows/s (threshold ' + n(db.seqScans.rowsReadPerSecond)
        + '); a filter column probably lacks an index.'),
      a('PostgresMissingIndexSuspected',
        $.job(svc, m.MISSING_INDEX) + ' == 1',
        db.seqScans['for'], 'database', 'A frequent statement would be much cheaper with an index.',
        'Statement {{ $labels.queryid }} on ' + table + ' filters on ({{ $labels.columns }}) without an index. '
        + 'Proposed: {{ $labels.index }}'),
      a('PostgresLockWaits',
        $.job(svc, m.LOCK_WAITING_SESSIONS) + ' > ' + db.lockWaits.maxWaitingSessions,
        db.lockWaits['for'], 'database', 'PostgreSQL sessions are waiting for locks.',
        '{{ $value }} sessions wait for a lock in {{ $labels.datname }} (threshold '
        + db.lockWaits.maxWaitingSessions + ').'),
      a('PostgresLongRunningTransaction',
        $.job(svc, m.OLDEST_TRANSACTION_SECONDS) + ' > ' + n(db.longTransactions.maxSeconds),
        db.longTransactions['for'], 'database', 'A PostgreSQL transaction has been open for too long.',
        'The oldest transaction in {{ $labels.datname }} has run for {{ $value | humanizeDuration }} (threshold '
        + n(db.longTransactions.maxSeconds) + 's); it holds locks and blocks vacuum.'),
      a('PostgresExporterDown',
        jobUp + ' == 0\nor\n' + $.job(svc, m.PG_UP) + ' == 0\nor\nabsent(' + jobUp + ')',
        '5m', 'database', 'The PostgreSQL exporter or its database is unreachable.',
        'Prometheus cannot scrape job ' + svc.exporterJob + ' (instance {{ $labels.instance }}), or the exporter '
        + 'cannot reach PostgreSQL: every database alert is blind until it is back.'),
      a('PgStatStatementsUnavailable',
        $.job(svc, m.COLLECTOR_SUCCESS, p.matcher('collector', '=', 'statements')) + ' == 0',
        '10m', 'database', 'The pg_stat_statements view cannot be read.',
        'The statements collector of {{ $labels.instance }} fails: slow-statement alerts are blind. '
        + 'Is pg_stat_statements in shared_preload_libraries and the extension created?'),
    ],

  groups(svc, linkCfg, fleet=false)::
    local prefix = 'sloguard-database-' + (if fleet then svc.service + '-' else '');
    {
      recordings: p.chunked(prefix + 'recordings', $.recordings(svc)),
      alerts: p.chunked(prefix + 'alerts', $.alerts(svc, linkCfg)),
    },
}
