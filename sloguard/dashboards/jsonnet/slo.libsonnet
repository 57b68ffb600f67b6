// SLO recording rules (Sloth-compatible names), multiwindow multi-burn-rate alerts, outage, budget and histogram
// alerts of one service, built from its _config entry. The jsonnet twin of sloguard/rules/slo_recording.py,
// burn_alerts.py, outage_alerts.py, budget_alerts.py and histogram_alerts.py.
local links = import 'links.libsonnet';
local p = import 'promql.libsonnet';
local names = import '../names.libsonnet';

local ident = ['sloth_id', 'sloth_service', 'sloth_slo'];
local baseWindow = '5m';
local periodStep = '5m';  // the period group's interval and the increase it records
local bucketWindow = '1h';
local outageMaxFor = 300;
local lowRemaining = 0.25;

{
  camel(name)::
    std.join('', [p.capitalize(part) for part in std.split(std.strReplace(name, '_', '-'), '-') if part != '']),

  labels(svc, name)::
    svc.labels + std.get(svc.slos[name], 'labels', {})
    + { sloth_id: svc.service + '-' + name, sloth_service: svc.service, sloth_slo: name },

  ident(svc, name):: '{' + p.labelMatchers($.labels(svc, name), ident) + '}',

  ratioMetric(window):: names.sliErrorRatioPrefix + window,

  totalSelector(slo)::
    if std.objectHas(slo.sli, 'events') then slo.sli.events.total
    else p.withSuffix(slo.sli.latency.metric, '_count'),

  thresholdBucket(slo)::
    p.inject(p.withSuffix(slo.sli.latency.metric, '_bucket'),
             p.matcher('le', '=~', p.leRegex(slo.sli.latency.threshold))),

  // Requests of a latency SLI, only from series that have the threshold bucket. `total` and `bucket` are the
  // selectors, computed once per SLO by the caller (C++ jsonnet re-evaluates, it does not memoize).
  latencyTotal(total, bucket, fn, window)::
    'sum(' + fn + '(' + total + '[' + window + ']) and ignoring (le) ' + fn + '(' + bucket + '[' + window + ']))',

  errorBudget(slo):: 1 - slo.objective,

  errorRatioExpr(slo, total, bucket, window)::
    if std.objectHas(slo.sli, 'events') then
      '(sum(rate(' + slo.sli.events.errors + '[' + window + '])) or vector(0))\n/\nsum(rate(' + total + '[' + window + ']))'
    else
      '1 - (\n  sum(rate(' + bucket + '[' + window + ']))\n  /\n  ' + $.latencyTotal(total, bucket, 'rate', window) + '\n)',

  tiers(svc):: [{ name: 'page' } + svc.burnRateAlerts.page, { name: 'ticket' } + svc.burnRateAlerts.ticket],

  // 5m and every burn-rate window shorter than the period, shortest first.
  ratioWindows(svc, slo)::
    local period = p.durationSeconds(slo.window);
    local all = [baseWindow] + std.flattenArrays([
      std.flattenArrays([[w.long, w.short] for w in tier.windows]) for tier in $.tiers(svc)
    ]);
    [d.text for d in std.set([{ s: p.durationSeconds(t), text: t } for t in all], function(d) d.s) if d.s < period],

  recordings(svc, name, slo)::
    local labels = $.labels(svc, name);
    local sel = $.ident(svc, name);
    local on = 'on (sloth_id, sloth_slo, sloth_service) group_left';
    local total = $.totalSelector(slo);
    local bucket = if std.objectHas(slo.sli, 'latency') then $.thresholdBucket(slo) else null;
    [
      { record: $.ratioMetric(w), expr: $.errorRatioExpr(slo, total, bucket, w), labels: labels { sloth_window: w } }
      for w in $.ratioWindows(svc, slo)
    ] + [
      { record: 'slo:objective:ratio', expr: 'vector(' + p.fmtNumber(slo.objective) + ')', labels: labels },
      { record: 'slo:error_budget:ratio', expr: 'vector(' + p.fmtNumber($.errorBudget(slo)) + ')', labels: labels },
      {
        record: 'slo:time_period:days',
        expr: 'vector(' + p.fmtNumber(p.durationSeconds(slo.window) / 86400) + ')',
        labels: labels,
      },
      {
        record: 'slo:current_burn_rate:ratio',
        expr: $.ratioMetric(baseWindow) + sel + '\n/ ' + on + '\nslo:error_budget:ratio' + sel,
        labels: labels,
      },
      {
        record: 'sloth_slo_info',
        expr: 'vector(1)',
        labels: labels {
          sloth_mode: 'cli-gen-prom',
          sloth_objective: p.fmtNumber(slo.objective * 100),
          sloth_spec: 'sloguard/v1',
          sloth_version: 'sloguard',
        },
      },
    ],

  // The period ratio from recorded 5m increases, in a group evaluated every 5m.
  periodRecordings(svc, name, slo)::
    local labels = $.labels(svc, name);
    local sel = $.ident(svc, name);
    local on = 'on (sloth_id, sloth_slo, sloth_service) group_left';
    local m = names.metrics;
    local total = $.totalSelector(slo);
    local bucket = if std.objectHas(slo.sli, 'latency') then $.thresholdBucket(slo) else null;
    local requests =
      if std.objectHas(slo.sli, 'events') then 'sum(increase(' + total + '[' + periodStep + ']))'
      else $.latencyTotal(total, bucket, 'increase', periodStep);
    local errors =
      if std.objectHas(slo.sli, 'events') then 'sum(increase(' + slo.sli.events.errors + '[' + periodStep + '])) or vector(0)'
      else requests + '\n-\nsum(increase(' + bucket + '[' + periodStep + ']))';
    [
      { record: m.SLO_REQUESTS_INCREASE, expr: requests, labels: labels },
      { record: m.SLO_ERRORS_INCREASE, expr: errors, labels: labels },
      {
        record: $.ratioMetric(slo.window),
        // through a [period:5m] subquery: one recorded increase per aligned step, whatever the group's interval
        expr: 'sum_over_time(' + m.SLO_ERRORS_INCREASE + sel + '[' + slo.window + ':' + periodStep + '])\n/\n'
              + 'sum_over_time(' + m.SLO_REQUESTS_INCREASE + sel + '[' + slo.window + ':' + periodStep + '])',
        labels: labels { sloth_window: slo.window },
      },
      {
        record: 'slo:period_burn_rate:ratio',
        expr: $.ratioMetric(slo.window) + sel + '\n/ ' + on + '\nslo:error_budget:ratio' + sel,
        labels: labels,
      },
      { record: 'slo:period_error_budget_remaining:ratio', expr: '1 - slo:period_burn_rate:ratio' + sel, labels: labels },
    ],

  // factor = budget_fraction * period / long window; a pair whose threshold reaches 100% errors is left out.
  burnPairs(svc, slo)::
    local seconds = p.durationSeconds(slo.window);
    local budget = $.errorBudget(slo);
    [
      pair
      for pair in [
        { tier: tier, window: w, factor: p.round12(w.budgetFraction * seconds / p.durationSeconds(w.long)) }
        for tier in $.tiers(svc)
        for w in tier.windows
      ]
      if pair.factor * budget < 1
    ],

  burnAlerts(svc, linkCfg, name, slo)::
    local labels = $.labels(svc, name);
    local sel = $.ident(svc, name);
    local alert = $.camel(name) + names.burnRateAlertSuffix;
    local budget = p.fmtNumber($.errorBudget(slo));
    local words = p.templateSafe(slo.description);
    local days = p.fmtNumber(p.durationSeconds(slo.window) / 86400);
    local total = $.totalSelector(slo);
    [
      local w = pair.window;
      local factor = p.fmtNumber(pair.factor);
      local limit = '(' + factor + ' * ' + budget + ')';
      local minEvents = std.get(pair.tier, 'minEvents', 0);
      local guard =
        if minEvents > 0 then
          '\nand on ()\nsum(increase(' + total + '[' + w.short + '])) >= ' + minEvents
        else '';
      {
        alert: alert,
        expr: 'max without (sloth_window) (' + $.ratioMetric(w.long) + sel + ' > ' + limit + ')\nand\n'
              + 'max without (sloth_window) (' + $.ratioMetric(w.short) + sel + ' > ' + limit + ')' + guard,
        'for': pair.tier['for'],
        labels: labels {
          severity: svc.severities[pair.tier.name],
          sloth_severity: pair.tier.name,
          burn_window: w.long + '/' + w.short,
        },
        annotations: {
          summary: 'The ' + name + ' SLO of ' + svc.service + ' is burning its error budget too fast.',
          description: p.rstrip(
            'Error ratio over the last ' + w.long + ' is {{ $value | humanizePercentage }} (the ' + w.short
            + ' window agrees), above ' + factor + 'x the ' + p.fmtNumber($.errorBudget(slo) * 100)
            + '% error budget (' + p.fmtNumber(w.budgetFraction * 100) + '% of the ' + days
            + '-day budget spent in ' + w.long + '). ' + words
          ),
        } + links.annotations(linkCfg, alert),
      }
      for pair in $.burnPairs(svc, slo)
    ],

  // Absent traffic pages as the fastest page pair would at 100% errors, plus its `for`; 1m to 5m.
  outageForSeconds(svc, slo)::
    local page = svc.burnRateAlerts.page;
    local fastest = std.sort(page.windows, function(w) p.durationSeconds(w.long))[0];
    local seconds = fastest.budgetFraction * p.durationSeconds(slo.window) * $.errorBudget(slo)
                    + p.durationSeconds(page['for']);
    std.min(outageMaxFor, std.max(60, p.roundHalfEven(seconds / 60) * 60)),

  metricAbsentAlert(svc, linkCfg, name, slo)::
    local total = $.totalSelector(slo);
    local forText = p.formatDuration($.outageForSeconds(svc, slo));
    // absent() keeps the selector's equality matchers as labels: name the job when the selector has one
    local hasJob = std.length(std.split(total, '{job="')) > 1 || std.length(std.split(total, ',job="')) > 1;
    local who = if hasJob then 'the application (job {{ $labels.job }})'
    else 'the application ({{ $value }} selector absent)';
    [{
      alert: 'SloMetricAbsent',
      expr: 'absent(' + total + ')',
      'for': forText,
      labels: $.labels(svc, name) { severity: svc.severities.outage },
      annotations: {
        summary: 'The ' + name + ' SLO of ' + svc.service + ' has no traffic series at all.',
        description: 'No series matches ' + p.templateSafe(total) + ' for ' + forText + ': ' + who + ' '
                     + 'stopped exporting (process dead, target gone from service discovery, metric renamed), so the '
                     + name + ' error ratio and its burn-rate alerts are absent, not healthy.',
      } + links.annotations(linkCfg, 'SloMetricAbsent'),
    }],

  budgetAlerts(svc, linkCfg, name, slo)::
    local remaining = 'slo:period_error_budget_remaining:ratio' + $.ident(svc, name);
    local period = slo.window;
    local labels = $.labels(svc, name);
    [
      {
        alert: 'SloErrorBudgetExhausted',
        expr: remaining + ' < 0',
        'for': '5m',
        labels: labels { severity: svc.severities.budget_exhausted },
        annotations: {
          summary: 'The ' + name + ' SLO of ' + svc.service + ' has spent its whole ' + period + ' error budget.',
          description: '{{ $value | humanizePercentage }} of the ' + period + ' error budget is left: the objective '
                       + 'is missed for the period. Reliability work before features, per the error budget policy.',
        } + links.annotations(linkCfg, 'SloErrorBudgetExhausted'),
      },
      {
        alert: 'SloErrorBudgetLow',
        expr: remaining + ' < ' + p.fmtNumber(lowRemaining) + ' >= 0',
        'for': '5m',
        labels: labels { severity: svc.severities.budget_low },
        annotations: {
          summary: 'The ' + name + ' SLO of ' + svc.service + ' has less than ' + p.fmtNumber(lowRemaining * 100)
                   + '% of its ' + period + ' error budget left.',
          description: '{{ $value | humanizePercentage }} of the ' + period + ' error budget is left.',
        } + links.annotations(linkCfg, 'SloErrorBudgetLow'),
      },
    ],

  // A latency SLO's threshold bucket missing everywhere (no ratio) or on some series only (ratio leaves them out).
  histogramAlerts(svc, linkCfg, name, slo)::
    if !std.objectHas(slo.sli, 'latency') then [] else
      local threshold = p.fmtNumber(slo.sli.latency.threshold);
      local metric = p.templateSafe(slo.sli.latency.metric);
      local count = 'rate(' + $.totalSelector(slo) + '[' + bucketWindow + '])';
      local bucket = 'rate(' + $.thresholdBucket(slo) + '[' + bucketWindow + '])';
      local labels = $.labels(svc, name) { severity: svc.severities.slo_config };
      [
        {
          alert: 'SloHistogramBucketMissing',
          expr: 'sum(' + count + ') > 0\nunless on ()\nsum(' + bucket + ')',
          'for': '10m',
          labels: labels,
          annotations: {
            summary: 'The ' + name + ' SLO of ' + svc.service + ' cannot be computed: no histogram bucket at '
                     + threshold + 's.',
            description: metric + ' serves {{ $value | humanize }} requests/s but has no bucket with le="' + threshold
                         + '", the SLO threshold: the ' + name + ' error ratio and its burn-rate alerts are absent, '
                         + 'not healthy. Set the threshold in the spec to one of the '
                         + "histogram's bucket boundaries, or add this boundary to the application's buckets.",
          } + links.annotations(linkCfg, 'SloHistogramBucketMissing'),
        },
        {
          alert: 'SloHistogramBucketPartial',
          expr: 'sum by (job, instance) (' + count + ' unless ignoring (le) ' + bucket + ') > 0\n'
                + 'and on ()\nsum(' + bucket + ') > 0',
          'for': '10m',
          labels: labels,
          annotations: {
            summary: 'Part of the ' + name + " SLO's traffic has no histogram bucket at " + threshold + 's.',
            description: '{{ $labels.instance }} (job {{ $labels.job }}) serves {{ $value | humanize }} requests/s of '
                         + metric + ' without a bucket at le="' + threshold + '", while other series have it: the '
                         + name + " ratio leaves those requests out. Align the application's buckets "
                         + '(a deploy half rolled out?).',
          } + links.annotations(linkCfg, 'SloHistogramBucketPartial'),
        },
      ],

  // One alert per distinct `job` matcher of the SLIs (config: each SLO's jobMatchers): all its targets down.
  targetDownAlerts(svc, linkCfg)::
    local found = std.flattenArrays([
      [{ key: m, seconds: $.outageForSeconds(svc, svc.slos[name]) } for m in std.get(svc.slos[name], 'jobMatchers', [])]
      for name in std.objectFields(svc.slos)
    ]);
    local keys = std.set([f.key for f in found]);
    [
      local seconds = std.foldl(std.min, [f.seconds for f in found if f.key == key], outageMaxFor);
      {
        alert: 'SloTargetDown',
        expr: 'max by (job) (up{' + key + '}) == 0',
        'for': p.formatDuration(seconds),
        labels: svc.labels { sloth_service: svc.service, severity: svc.severities.outage },
        annotations: {
          summary: 'Every scrape target of ' + svc.service + ' is down.',
          description: 'Prometheus cannot scrape any target of job {{ $labels.job }}: the application is down or '
                       + 'unreachable, and the SLOs of ' + svc.service + ' have no data to burn.',
        } + links.annotations(linkCfg, 'SloTargetDown'),
      }
      for key in keys
    ],

  groups(svc, linkCfg)::
    local prefix(name) = 'sloguard-slo-' + svc.service + '-' + name;
    {
      recordings: std.flattenArrays([
        p.chunked(prefix(name) + '-recordings', $.recordings(svc, name, svc.slos[name]))
        + [g { interval: periodStep } for g in p.chunked(prefix(name) + '-period',
                                                           $.periodRecordings(svc, name, svc.slos[name]))]
        for name in std.objectFields(svc.slos)
      ]),
      alerts: std.flattenArrays([
        local slo = svc.slos[name];
        p.chunked(prefix(name) + '-alerts',
                  $.burnAlerts(svc, linkCfg, name, slo) + $.metricAbsentAlert(svc, linkCfg, name, slo)
                  + $.budgetAlerts(svc, linkCfg, name, slo) + $.histogramAlerts(svc, linkCfg, name, slo))
        for name in std.objectFields(svc.slos)
      ]) + p.chunked('sloguard-' + svc.service + '-outage-alerts', $.targetDownAlerts(svc, linkCfg)),
    },
}
