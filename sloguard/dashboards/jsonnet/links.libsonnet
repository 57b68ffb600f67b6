// runbook_url and dashboard_url annotations, as sloguard/rules/common.py link_annotations writes them.
local names = import '../names.libsonnet';

local trimSlash(url) = if std.endsWith(url, '/') then trimSlash(std.substr(url, 0, std.length(url) - 1)) else url;

{
  key(alertname)::
    local suffix = names.burnRateAlertSuffix;
    if std.endsWith(alertname, suffix) then suffix else alertname,

  annotations(links, alertname)::
    local key = self.key(alertname);
    local panel = names.alertPanels[key];
    // a service of a fleet has its own incident dashboard
    local uid = if panel.uid == names.incidentUid then std.get(links, 'incidentUid', panel.uid) else panel.uid;
    {
      runbook_url: links.runbookUrl + '#' + names.runbookAnchors[key],
      dashboard_url: trimSlash(links.grafanaUrl) + '/d/' + uid + '?viewPanel=' + panel.panel,
    },
}
