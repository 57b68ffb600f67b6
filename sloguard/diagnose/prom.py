"""Evidence from Prometheus (optional): firing alerts, current burn rates, application pool usage.

Burn rate = slo:sli_error:ratio_rate5m / slo:error_budget:ratio, matched on sloth_id (Sloth's naming,
which our generated recording rules follow). Every request is bounded in time; failures become notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import requests

from sloguard.diagnose.thresholds import Thresholds

TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class FiringAlert:
    name: str
    severity: str
    labels: dict[str, str]
    active_since: str
    summary: str


@dataclass(frozen=True)
class BurnRate:
    slo: str            # sloth_id, or the label set when absent
    error_ratio_5m: float
    error_budget: float

    @property
    def burn_rate(self) -> float:
        return self.error_ratio_5m / self.error_budget if self.error_budget > 0 else float("inf")


@dataclass
class PrometheusEvidence:
    url: str
    alerts: list[FiringAlert] = field(default_factory=list)
    burn_rates: list[BurnRate] = field(default_factory=list)
    pool_in_use: float | None = None
    pool_max: float | None = None
    pool_waiting: float | None = None
    error: str | None = None


def _get(url: str, path: str, params: dict | None = None) -> dict:
    r = requests.get(url.rstrip("/") + path, params=params, timeout=TIMEOUT_SECONDS)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise ValueError(f"{path}: {body.get('error', 'status is not success')}")
    return body["data"]


def _scalar(url: str, expr: str) -> float | None:
    result = _get(url, "/api/v1/query", {"query": expr})["result"]
    return float(result[0]["value"][1]) if result else None


def _vector(url: str, expr: str) -> dict[str, float]:
    out = {}
    for s in _get(url, "/api/v1/query", {"query": expr})["result"]:
        labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "sloth_window")}
        key = labels.get("sloth_id") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        out[key] = float(s["value"][1])
    return out


def collect_prometheus(url: str, th: Thresholds) -> PrometheusEvidence:
    ev = PrometheusEvidence(url=url)
    try:
        for a in _get(url, "/api/v1/alerts")["alerts"]:
            if a.get("state") != "firing":
                continue
            labels = a.get("labels", {})
            ev.alerts.append(FiringAlert(labels.get("alertname", "?"), labels.get("severity", ""), labels,
                                         a.get("activeAt", ""), a.get("annotations", {}).get("summary", "")))
        ratios = _vector(url, "slo:sli_error:ratio_rate5m")
        budgets = _vector(url, "slo:error_budget:ratio")
        ev.burn_rates = [BurnRate(k, v, budgets[k]) for k, v in sorted(ratios.items()) if k in budgets]
        ev.pool_in_use = _scalar(url, f"max({th.pool_in_use})")
        ev.pool_max = _scalar(url, f"max({th.pool_max})")
        ev.pool_waiting = _scalar(url, f"max({th.pool_waiting})")
    except (requests.RequestException, ValueError, KeyError) as e:
        ev.error = f"Prometheus at {url} not usable: {str(e).splitlines()[0][:200]}"
    return ev
