"""Test-owned specs for the dashboard and mixin tests: invented services, metrics, windows and labels, so the
behaviour is checked on more than the example slo.yaml (which the user may edit)."""
from __future__ import annotations

from sloguard.spec import parse_spec


def fleet_spec_text(service: str, n_slos: int, exporter_job: str = "pg", window: str = "30d", labels: str = "",
                    objective: str = "99.5", threshold: str = "0.25", extra: str = "") -> str:
    """`n_slos` SLOs alternating latency (even) and availability (odd) on service-specific metrics."""
    lines = [f"service: {service}",
             "links: {runbook: 'https://wiki.example.org/rb.md', grafana: 'https://g.example.org'}"]
    if labels:
        lines.append(f"labels: {{{labels}}}")
    lines.append("slos:")
    for i in range(n_slos):
        if i % 2:
            sli = (f"{{events: {{total: '{service}_requests_total{{job=\"{service}\"}}', "
                   f"errors: '{service}_requests_total{{job=\"{service}\",code=~\"5..\"}}'}}}}")
        else:
            sli = f"{{latency: {{metric: '{service}_seconds{{job=\"{service}\"}}', threshold: {threshold}}}}}"
        lines.append(f"  - {{name: s{i}, objective: {objective}, window: {window}, sli: {sli}}}")
    lines += ["database:", f"  exporter_job: {exporter_job}",
              f"  latency_p99: {{metric: '{service}_seconds{{job=\"{service}\"}}'}}",
              f"  pool: {{in_use: 'pool_in_use{{job=\"{service}\"}}', max: 'pool_max{{job=\"{service}\"}}', "
              f"waiting: 'pool_waiting{{job=\"{service}\"}}'}}"]
    return "\n".join(lines) + "\n" + extra


def fleet_spec(service: str, n_slos: int, exporter_job: str = "pg", window: str = "30d", labels: str = "", **kw):
    return parse_spec(fleet_spec_text(service, n_slos, exporter_job, window, labels, **kw), f"{service}.yaml")
