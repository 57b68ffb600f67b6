// SLO recording rules (Sloth-compatible names) and multiwindow multi-burn-rate alerts of one service, built from
// its _config entry. The jsonnet twin of sloguard/rules/slo_recording.py and burn_alerts.py.
local links = import 'links.libsonnet';
local p = import 'promql.libsonnet';
local names = import '../names.libsonnet';

local ident = ['sloth_id', 'sloth_service', 'sloth_slo'];
local baseWindow = '5m';

{
  camel(name)::
    std.join('', [p.capitalize(part) for part in std.split(std.strReplace(name, '_', '-'), '-')
                  if part != '']),

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

  errorBudget(slo):: 1 - slo.objective,

  // Ratio of sums over the window; increase() over the SLO's own period, rate() otherwise.
  errorRatioExpr(slo, window)::
    local fn = if window == slo.window then 'increase' else 'rate';
    local total = 'sum(' + fn + '(' + $.totalSelector(slo) + '[' + window + ']))';
    if std.objectHas(slo.sli, 'events') then
      '(sum(' + fn + '(' + slo.sli.events.errors + '[' + window + '])) or vector(0))\n/\n' + total
    else
      '1 - (\n  sum(' + fn + '(' + $.thresholdBucket(slo) + '[' + window + ']))\n  /\n  ' + total + '\n)',

  tiers(svc):: [svc.burnRateAlerts.page, svc.burnRateAlerts.ticket],

  // 5m, every burn-rate window and the SLO period, shortest first.
  ratioWindows(svc, slo)::
    local all = [baseWindow, slo.window] + std.flattenArrays([
      std.flattenArrays([[w.long, w.short] for w in tier.windows]) for tier in $.tiers(svc)
    ]);
    [d.text for d in std.set([{ s: p.durationSeconds(t), text: t } for t in all], function(d) d.s)],

  recordings(svc, name, slo)::
    local labels = $.labels(svc, name);
    local sel = $.ident(svc, name);
    local on = 'on (sloth_id, sloth_slo, sloth_service) group_left';
    local seconds = p.durationSeconds(slo.window);
    [
      { record: $.ratioMetric(w), expr: $.errorRatioExpr(slo, w), labels: labels { sloth_window: w } }
      for w in $.ratioWindows(svc, slo)
    ] + [
      { record: 'slo:objective:ratio', expr: 'vector(' + p.fmtNumber(slo.objective) + ')', labels: labels },
      { record: 'slo:error_budget:ratio', expr: 'vector(' + p.fmtNumber($.errorBudget(slo)) + ')', labels: labels },
      { record: 'slo:time_period:days', expr: 'vector(' + p.fmtNumber(seconds / 86400) + ')', labels: labels },
      {
        record: 'slo:current_burn_rate:ratio',
        expr: $.ratioMetric(baseWindow) + sel + '\n/ ' + on + '\nslo:error_budget:ratio' + sel,
        labels: labels,
      },
      {
        record: 'slo:period_burn_rate:ratio',
        expr: $.ratioMetric(slo.window) + sel + '\n/ ' + on + '\nslo:error_budget:ratio' + sel,
        labels: labels,
      },
      { record: 'slo:period_error_budget_remaining:ratio', expr: '1 - slo:period_burn_rate:ratio' + sel, labels: labels },
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

  // factor = budget_fraction * period / long window; a pair whose threshold reaches 100% errors is left out.
  burnPairs(svc, slo)::
    local seconds = p.durationSeconds(slo.window);
    [
      { tier: tier, window: w, factor: p.round12(w.budgetFraction * seconds / p.durationSeconds(w.long)) }
      for tier in $.tiers(svc)
      for w in tier.windows
      if p.round12(w.budgetFraction * seconds / p.durationSeconds(w.long)) * $.errorBudget(slo) < 1
    ],

  burnAlerts(svc, linkCfg, name, slo)::
    local labels = $.labels(svc, name);
    local sel = $.ident(svc, name);
    local alert = $.camel(name) + names.burnRateAlertSuffix;
    local budget = p.fmtNumber($.errorBudget(slo));
    local words = p.templateSafe(slo.description);
    local days = p.fmtNumber(p.durationSeconds(slo.window) / 86400);
    [
      local w = pair.window;
      local factor = p.fmtNumber(pair.factor);
      local limit = '(' + factor + ' * ' + budget + ')';
      local guard =
        if svc.minRequestRate > 0 then
          '\nand on ()\nsum(rate(' + $.totalSelector(slo) + '[' + w.long + '])) >= ' + p.fmtNumber(svc.minRequestRate)
        else '';
      {
        alert: alert,
        expr: 'max without (sloth_window) (' + $.ratioMetric(w.long) + sel + ' > ' + limit + ')\nand\n'
              + 'max without (sloth_window) (' + $.ratioMetric(w.short) + sel + ' > ' + limit + ')' + guard,
        'for': pair.tier['for'],
        labels: labels {
          severity: pair.tier.severity,
          sloth_severity: if pair.tier.severity == 'critical' then 'page' else 'ticket',
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

  // A latency SLO whose threshold is no bucket boundary has no ratio and no burn-rate alert: say so.
  bucketMissingAlert(svc, linkCfg, name, slo)::
    local alert = 'SloHistogramBucketMissing';
    local threshold = p.fmtNumber(slo.sli.latency.threshold);
    if !std.objectHas(slo.sli, 'latency') then [] else [{
      alert: alert,
      expr: 'sum(rate(' + $.totalSelector(slo) + '[1h])) > 0\nunless on ()\nsum(rate(' + $.thresholdBucket(slo) + '[1h]))',
      'for': '10m',
      labels: $.labels(svc, name) { severity: 'warning' },
      annotations: {
        summary: 'The ' + name + ' SLO of ' + svc.service + ' cannot be computed: no histogram bucket at '
                 + threshold + 's.',
        description: p.templateSafe(slo.sli.latency.metric) + ' serves {{ $value | humanize }} requests/s but has no '
                     + 'bucket with le="' + threshold + '", the SLO threshold: the ' + name + ' error ratio and its '
                     + 'burn-rate alerts are absent, not healthy. Set the threshold in the spec to one of the '
                     + "histogram's bucket boundaries, or add this boundary to the application's buckets.",
      } + links.annotations(linkCfg, alert),
    }],

  groups(svc, linkCfg):: {
    recordings: std.flattenArrays([
      p.chunked('sloguard-slo-' + svc.service + '-' + name + '-recordings', $.recordings(svc, name, svc.slos[name]))
      for name in std.objectFields(svc.slos)
    ]),
    alerts: std.flattenArrays([
      p.chunked('sloguard-slo-' + svc.service + '-' + name + '-alerts',
                $.burnAlerts(svc, linkCfg, name, svc.slos[name]) + $.bucketMissingAlert(svc, linkCfg, name, svc.slos[name]))
      for name in std.objectFields(svc.slos)
    ]),
  },
}
