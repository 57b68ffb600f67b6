// sloguard monitoring mixin library: prometheusRules, prometheusAlerts and grafanaDashboards built from _config.
// Import the generated ../../mixin.libsonnet (it adds the spec's _config and the dashboards), then override:
//   (import 'sloguard/mixin.libsonnet') + { _config+:: { services+: { api+: { database+: { pool+: { saturationRatio: 0.8 } } } } } }
local dashboards = import 'dashboards.libsonnet';
local database = import 'database.libsonnet';
local slo = import 'slo.libsonnet';

{
  _config+:: {
    grafanaUrl: 'http://localhost:3000',  // prefix of every alert's dashboard_url
    runbookUrl: '',  // prefix of every alert's runbook_url (a service may set its own)
    dashboardTags: ['sloguard', 'generated'],
    dashboardRefresh: '30s',
    dashboardTimezone: 'utc',
    datasource: 'Prometheus',  // datasource variable's default
    services+: {},  // name -> the service's labels, SLOs, burn-rate windows, database thresholds (config.libsonnet)
  },

  // Dashboards added by the generated mixin.libsonnet: file name -> { board, service }.
  sloguardDashboards:: {},

  local cfg = self._config,
  local services = [
    { service: name } + cfg.services[name]
    for name in std.objectFields(cfg.services)
  ],
  local links(svc) = {
    grafanaUrl: std.get(svc, 'grafanaUrl', cfg.grafanaUrl),
    runbookUrl: std.get(svc, 'runbookUrl', cfg.runbookUrl),
  } + (if std.objectHas(svc, 'incidentUid') then { incidentUid: svc.incidentUid } else {}),
  // several services: database groups are named per service, as generate.py names them for a fleet
  local fleet = std.length(services) > 1,
  local built = [
    { slo: slo.groups(svc, links(svc)), database: database.groups(svc, links(svc), fleet) }
    for svc in services
  ],

  prometheusRules+:: {
    groups+: std.flattenArrays([b.slo.recordings + b.database.recordings for b in built]),
  },
  prometheusAlerts+:: {
    groups+: std.flattenArrays([b.slo.alerts + b.database.alerts for b in built]),
  },
  grafanaDashboards+:: {
    [file]: dashboards.dashboard(cfg, $.sloguardDashboards[file])
    for file in std.objectFields($.sloguardDashboards)
  },
}
