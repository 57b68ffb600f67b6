// The generated Grafana dashboards with the _config-driven parts applied as object overrides: tags, refresh,
// timezone, the datasource selected by default, the incident dashboard's exporter job, and the runbook links.
local retemplate(board, current) = board {
  templating+: {
    list: [
      if std.objectHas(current, v.name) then v { current+: current[v.name] } else v
      for v in super.list
    ],
  },
};

local relink(links, runbookUrl) = [
  if l.title == 'Runbook' then l { url: runbookUrl }
  else if std.startsWith(l.title, 'Runbook: ') then l { url: runbookUrl + '#' + std.substr(l.title, std.length('Runbook: '), std.length(l.title)) }
  else l
  for l in links
];

{
  // entry: { board: <dashboard JSON>, service: <service name or null for the fleet overview> }
  dashboard(cfg, entry)::
    local svc = if entry.service == null then {} else cfg.services[entry.service];
    local runbookUrl = std.get(svc, 'runbookUrl', cfg.runbookUrl);
    local current = {
      datasource: { text: cfg.datasource, value: cfg.datasource },
    } + (if std.objectHas(svc, 'exporterJob') then { job: { text: [svc.exporterJob], value: [svc.exporterJob] } } else {});
    retemplate(entry.board, current) {
      tags: cfg.dashboardTags,
      refresh: cfg.dashboardRefresh,
      timezone: cfg.dashboardTimezone,
      links: relink(super.links, runbookUrl),
      panels: [
        panel + (if std.objectHas(panel, 'links') then { links: relink(panel.links, runbookUrl) } else {})
        for panel in super.panels
      ],
    },
}
