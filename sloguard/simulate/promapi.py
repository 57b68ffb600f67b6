"""Small clients for the Prometheus and Alertmanager HTTP APIs, and the alert timeline built from both."""
from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Prometheus:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        body = _get(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        body = _get(f"{self.base}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=30)
        if body.get("status") != "success":
            raise RuntimeError(f"query_range failed for {expr!r}: {body.get('error')}")
        return body["data"]["result"]

    def alerts(self) -> list[dict]:
        return _get(f"{self.base}/api/v1/alerts")["data"]["alerts"]

    def target_health(self) -> dict[str, str]:
        active = _get(f"{self.base}/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}


class Alertmanager:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def alerts(self) -> list[dict]:
        return _get(f"{self.base}/api/v2/alerts")


def alert_key(labels: dict) -> str:
    """One alert instance: its name plus the labels that tell instances apart (window pair, table, statement)."""
    parts = [labels.get("alertname", "?")]
    for key in ("burn_window", "relname", "queryid", "columns"):
        if labels.get(key):
            parts.append(f"{key}={labels[key]}")
    return " ".join(parts)


@dataclass
class AlertRecord:
    key: str
    alertname: str
    severity: str
    pending_at: float | None = None
    firing_at: float | None = None
    resolved_at: float | None = None          # first poll where Prometheus no longer had it
    alertmanager_at: float | None = None      # first poll where Alertmanager had it active
    alertmanager_inhibited: bool = False
    periods: list[list[float]] = field(default_factory=list)   # [firing start, end or None]


class AlertTimeline:
    """Polled once a second: records when each alert went pending, firing, reached Alertmanager and resolved."""

    def __init__(self, prometheus: Prometheus, alertmanager: Alertmanager):
        self.prometheus, self.alertmanager = prometheus, alertmanager
        self.records: dict[str, AlertRecord] = {}
        self.events: list[tuple[float, str, str]] = []   # (time, source, text) in order
        self.errors = 0

    def poll(self, now: float | None = None) -> list[str]:
        """Returns the new events as printable lines."""
        now = now or time.time()
        try:
            prom = self.prometheus.alerts()
            am = self.alertmanager.alerts()
        except (OSError, ValueError, KeyError):   # unreachable, not JSON, not the API's shape: counted, reported
            self.errors += 1
            return []
        new: list[str] = []
        seen = set()
        for a in prom:
            labels = a["labels"]
            key = alert_key(labels)
            seen.add(key)
            rec = self.records.get(key)
            if rec is None:
                rec = self.records[key] = AlertRecord(key, labels.get("alertname", "?"), labels.get("severity", ""))
            if a["state"] == "pending" and rec.pending_at is None:
                rec.pending_at = now
                new.append(self._event(now, "prometheus", f"pending  {key}"))
            if a["state"] == "firing" and (not rec.periods or rec.periods[-1][1] is not None):
                rec.firing_at = rec.firing_at or now
                rec.resolved_at = None
                rec.periods.append([now, None])
                new.append(self._event(now, "prometheus", f"FIRING   {key} [{rec.severity}]"))
        for key, rec in self.records.items():
            if key not in seen and rec.periods and rec.periods[-1][1] is None:
                rec.periods[-1][1] = now
                rec.resolved_at = now
                new.append(self._event(now, "prometheus", f"resolved {key}"))
            if key not in seen and not rec.periods and rec.pending_at and rec.resolved_at is None:
                rec.resolved_at = now     # pending that never fired
        for a in am:
            key = alert_key(a["labels"])
            rec = self.records.get(key)
            if rec and rec.alertmanager_at is None and a["status"]["state"] in ("active", "suppressed"):
                rec.alertmanager_at = now
                rec.alertmanager_inhibited = bool(a["status"].get("inhibitedBy"))
                how = "inhibited by a critical alert" if rec.alertmanager_inhibited else "active"
                new.append(self._event(now, "alertmanager", f"received {key} ({how})"))
        return new

    def _event(self, when: float, source: str, text: str) -> str:
        self.events.append((when, source, text))
        return f"[{source}] {text}"

    def firing(self) -> list[AlertRecord]:
        return [r for r in self.records.values() if r.periods and r.periods[-1][1] is None]

    def active_or_pending(self) -> list[str]:
        return [k for k, r in self.records.items()
                if (r.periods and r.periods[-1][1] is None) or (r.pending_at and not r.periods and not r.resolved_at)]
