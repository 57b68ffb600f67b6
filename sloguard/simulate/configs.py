"""The simulation's copies of the deployed configuration: same files as docker-compose, local targets, fast clock.

Time compression: the generated rules speak in hours and days (1h/5m burn windows, `for: 2m`, rate over 5m), which
a replay of a few minutes cannot show firing *and* resolving. The simulation therefore loads a copy of
alerts/sloguard-rules.yaml, the very output of `make generate` from slo.yaml, in which every PromQL range,
subquery step, offset and `for:` is divided by the same factor K (60: an hour becomes a minute). Burn-rate factors
are ratios of windows, so they are unchanged; rule and series names are unchanged, so the dashboards' queries read
the same series as in production. Ranges never drop below a floor of a few scrape intervals, so rate() has samples,
and `for:` never drops below a few evaluations, so one noisy evaluation cannot fire an alert.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import yaml

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "y": 31_536_000_000}
_DURATION = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")
_TOKEN = re.compile(r"(\d+)(ms|[smhdwy])")
# A range or subquery: [5m], [30d:5m], [1h:]. Label matchers never look like this (they contain = or quotes).
_RANGE = re.compile(r"\[(?P<range>(?:\d+(?:ms|[smhdwy]))+)(?P<colon>:(?P<step>(?:\d+(?:ms|[smhdwy]))*))?\]")
_OFFSET = re.compile(r"\boffset\s+(?P<d>(?:\d+(?:ms|[smhdwy]))+)")


def parse_duration_ms(text: str) -> int:
    if not _DURATION.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in _TOKEN.findall(text))


def format_duration_ms(ms: int) -> str:
    """Prometheus duration text, largest units first (72m -> 1h12m, 7500ms -> 7s500ms)."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, _UNITS_MS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def compress_expr(expr: str, factor: float, min_range_ms: int) -> str:
    def scale(text: str, floor: int) -> str:
        return format_duration_ms(max(floor, round(parse_duration_ms(text) / factor)))

    def on_range(m: re.Match) -> str:
        out = "[" + scale(m["range"], min_range_ms)
        if m["colon"] is not None:
            out += ":" + (scale(m["step"], 1000) if m["step"] else "")
        return out + "]"

    expr = _RANGE.sub(on_range, expr)
    return _OFFSET.sub(lambda m: "offset " + scale(m["d"], 1000), expr)


# Series over the whole SLO period (Sloth's names: slo:period_burn_rate:ratio, slo:period_error_budget_remaining:
# ratio). Compressed, the period still holds the entire replay, so an alert on them (budget exhausted, budget low)
# fires on the incident and cannot resolve before the replay ends.
_PERIOD_SERIES = re.compile(r"\bslo:period_\w+")


def compress_rules(rules_text: str, factor: float, min_range_ms: int, keep_ticket_tier: bool,
                   min_for_ms: int = 0) -> tuple[str, dict]:
    """Returns the compressed rule file and a summary {alerts kept, alerts dropped (with why), factor} for the
    report. Group evaluation intervals are compressed too (never below 1 s)."""
    doc = yaml.safe_load(rules_text)
    dropped: list[str] = []
    kept: set[str] = set()
    for group in doc.get("groups", []):
        if group.get("interval"):
            group["interval"] = format_duration_ms(max(1000, round(parse_duration_ms(str(group["interval"])) / factor)))
        rules = []
        for rule in group.get("rules", []):
            labels = rule.get("labels", {}) or {}
            name = " ".join(filter(None, (rule.get("alert"), labels.get("sloth_id"), labels.get("burn_window"))))
            if "alert" in rule and not keep_ticket_tier and labels.get("sloth_severity") == "ticket":
                # Ticket windows (2h, 6h short windows) cannot clear within a quick run even compressed.
                dropped.append(f"{name} (ticket tier)")
                continue
            if "alert" in rule and _PERIOD_SERIES.search(str(rule["expr"])):
                dropped.append(f"{name} (SLO-period window: the replay is all of its compressed period)")
                continue
            rule = dict(rule)
            rule["expr"] = compress_expr(str(rule["expr"]), factor, min_range_ms)
            if "for" in rule:
                for_ms = parse_duration_ms(str(rule["for"]))
                rule["for"] = format_duration_ms(max(min_for_ms, round(for_ms / factor)) if for_ms else 0)
            if "alert" in rule:
                kept.add(rule["alert"])
            rules.append(rule)
        group["rules"] = rules
    header = (f"# Simulation copy of the generated rules, time compressed {factor:g}x "
              f"(sloguard/simulate/configs.py). Not for production.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=200), {
        "factor": factor, "alerts": sorted(kept), "dropped": dropped, "min_for_ms": min_for_ms,
        "min_range_ms": min_range_ms}


def prometheus_config(deploy_text: str, rules_path: str | None, targets: dict[str, str], alertmanager: str | None,
                      scrape_interval: str, exporter_job: str, exporter_interval: str) -> str:
    """deploy/prometheus/prometheus.yml with local rule file, 127.0.0.1 targets and a fast clock.

    Every job of the deployed file must get a target: a job the simulation forgot is an error, not a gap.
    rules_path and alertmanager None: scrape only (no rules, no notifications), the start-up configuration.
    """
    cfg = yaml.safe_load(deploy_text)
    cfg["global"]["scrape_interval"] = scrape_interval
    cfg["global"]["evaluation_interval"] = scrape_interval
    cfg["global"]["scrape_timeout"] = scrape_interval
    cfg["rule_files"] = [rules_path] if rules_path else []
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}] if alertmanager else []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            raise KeyError(f"deploy/prometheus/prometheus.yml: job {name!r} has no local target in the simulation")
        job["static_configs"] = [{"targets": [targets[name]]}]
        if name == exporter_job:
            job["scrape_interval"] = exporter_interval
            job["scrape_timeout"] = exporter_interval
        else:
            job.pop("scrape_timeout", None)
    return yaml.safe_dump(cfg, sort_keys=False)


def alertmanager_config(deploy_text: str, sink_base_url: str) -> str:
    """deploy/alertmanager/alertmanager.yml with webhooks sent to the local sink and timers in seconds."""
    cfg = yaml.safe_load(deploy_text)
    sink = urlsplit(sink_base_url)

    def fast(route: dict) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "5s"), ("repeat_interval", "1h")):
            if key in route or route is cfg["route"]:
                route[key] = value
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    for receiver in cfg.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            url = urlsplit(hook["url"])
            hook["url"] = urlunsplit((sink.scheme, sink.netloc, url.path, url.query, ""))
    return yaml.safe_dump(cfg, sort_keys=False)
