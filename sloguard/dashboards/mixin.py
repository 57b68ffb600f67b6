"""The monitoring mixin: `mixin.libsonnet` yields exactly the generated rules and dashboards.

It imports the generated files themselves (dashboards/*.json, and the rule files under alerts/ through
std.parseYaml), so jsonnet users get the very output the tests prove, and nothing is parsed at generate time.
`_config` rewrites the few things a user reasonably changes:
  grafanaUrl        prefix of every dashboard_url annotation and link   (default: slo.yaml links.grafana)
  runbookUrl        prefix of every runbook_url annotation              (default: slo.yaml links.runbook)
  exporterSelector  matcher selecting the sloguard exporter's series    (default: job="<database.exporter_job>")
  dashboardTags     tags of the Grafana dashboards
With the defaults the output is exactly the generated data. A group holding any alert goes to prometheusAlerts,
the others to prometheusRules (Prometheus loads both the same way).
"""
from __future__ import annotations

import json
import re

from sloguard.dashboards.common import GENERATED_NOTE, TAGS
from sloguard.spec.model import Spec

MIXIN_PATH = "mixin.libsonnet"


def rule_file_paths(rendered: dict[str, str]) -> list[str]:
    """Generated Prometheus rule files: YAML under alerts/ with top-level `groups:`, except promtool test files
    (`rule_files:`) and the Kubernetes PrometheusRule variant (`kind:`). Text checks only: the rules of 1,000
    SLOs take seconds to parse."""
    return [
        path for path in sorted(rendered)
        if path.startswith("alerts/") and path.endswith((".yaml", ".yml"))
        and re.search(r"^groups:", rendered[path], re.M)
        and not re.search(r"^(kind|rule_files):", rendered[path], re.M)
    ]


def default_config(spec: Spec) -> dict:
    return {
        "grafanaUrl": spec.links.grafana,
        "runbookUrl": spec.links.runbook,
        "exporterSelector": f'job="{spec.database.exporter_job}"',
        "dashboardTags": list(TAGS),
    }


def mixin_libsonnet(spec: Spec, dashboard_paths: list[str], rule_paths: list[str]) -> str:
    defaults = json.dumps(default_config(spec), sort_keys=True, indent=2)
    rule_imports = ",\n".join(f"  std.parseYaml(importstr {json.dumps(path)})" for path in rule_paths)
    imports = "\n".join(f"    {json.dumps(path.rsplit('/', 1)[-1])}: import {json.dumps(path)},"
                        for path in sorted(dashboard_paths))
    return f"""// {GENERATED_NOTE}
// sloguard monitoring mixin: prometheusAlerts, prometheusRules, grafanaDashboards and _config.
// Overridable in _config: grafanaUrl, runbookUrl (link prefixes), exporterSelector (matcher of the exporter's
// series), dashboardTags. The data comes from the generated files, so defaults reproduce them exactly.
local defaults = {defaults};
local ruleFiles = [
{rule_imports}
];
local groups = std.flattenArrays([f.groups for f in ruleFiles]);
local isAlertGroup(g) = std.length([r for r in g.rules if std.objectHas(r, "alert")]) > 0;
local dashboards = {{
{imports}
}};

// Apply f to every string in a JSON value.
local mapStrings(f, v) =
  if std.isString(v) then f(v)
  else if std.isArray(v) then [mapStrings(f, x) for x in v]
  else if std.isObject(v) then {{ [k]: mapStrings(f, v[k]) for k in std.objectFields(v) }}
  else v;

local replace(s, from, to) = if from == to || from == "" then s else std.strReplace(s, from, to);

{{
  _config+:: defaults,

  local cfg = self._config,
  local changed = std.any([cfg[k] != defaults[k] for k in ["grafanaUrl", "runbookUrl", "exporterSelector"]]),
  local rewrite(s) = replace(replace(replace(s, defaults.grafanaUrl, cfg.grafanaUrl),
                                     defaults.runbookUrl, cfg.runbookUrl),
                             defaults.exporterSelector, cfg.exporterSelector),
  local adapt(v) = if changed then mapStrings(rewrite, v) else v,

  prometheusAlerts+:: adapt({{ groups: [g for g in groups if isAlertGroup(g)] }}),
  prometheusRules+:: adapt({{ groups: [g for g in groups if !isAlertGroup(g)] }}),
  grafanaDashboards+:: {{
    [name]: adapt(dashboards[name]) + {{ tags: cfg.dashboardTags }}
    for name in std.objectFields(dashboards)
  }},
}}
"""


def render(specs, rendered: dict[str, str], dashboard_paths: list[str]) -> dict[str, str]:
    return {MIXIN_PATH: mixin_libsonnet(specs[0], dashboard_paths, rule_file_paths(rendered))}
