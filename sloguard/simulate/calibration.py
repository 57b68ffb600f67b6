"""The replay's load measured against the incident record, so the report can say how and why they differ.

Record figures are the scenario's (/work/shared/seed/incident-2024-01-15-scenario.md, "Métriques observées"):
at 14:32 p50 450 ms, p95 2.3 s, p99 5.847 s, errors 8.5% (15% from 14:35), timeouts 30% of requests; normal
p50 80 ms, p95 150 ms, p99 250 ms, errors 0.1%. Replay figures come from the live Prometheus over two windows:
healthy (load start to the migration) and saturated (the pool-saturation alert's first firing, or the migration,
to the start of the index build).
"""
from __future__ import annotations

from dataclasses import dataclass

from sloguard.simulate.promapi import Prometheus

RECORD_HEALTHY = {"p50_s": 0.080, "p95_s": 0.150, "p99_s": 0.250, "error_ratio": 0.001}
# "error_ratio" is the record's error rate (8.5% at 14:32, 15% from 14:35), "timeout_ratio" its 30% timeouts:
# the post-mortem reads them as 5xx answers plus timeouts, about 45% of requests failing at the worst.
RECORD_SATURATED = {"p50_s": 0.450, "p95_s": 2.3, "p99_s": 5.847, "error_ratio": 0.15, "timeout_ratio": 0.30}


@dataclass
class Window:
    name: str
    start: float
    end: float


def _scalar(prom: Prometheus, expr: str, at: float) -> float | None:
    result = prom.query(expr, at)
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value      # NaN: no requests in the window


def measure(prom: Prometheus, window: Window) -> dict[str, float | None]:
    """Answered requests per second, 5xx split into 504 (timeouts) and others, p50/p95/p99, over the window."""
    seconds = max(1, int(window.end - window.start))
    rng = f"[{seconds}s]"
    total = f'sum(increase(http_requests_total{{job="api"}}{rng}))'

    def share(codes: str) -> str:
        return f'(sum(increase(http_requests_total{{job="api",code=~"{codes}"}}{rng})) or vector(0)) / {total}'

    def quantile(q: float) -> str:
        return (f"histogram_quantile({q}, sum by (le) "
                f'(increase(http_request_duration_seconds_bucket{{job="api"}}{rng})))')

    at = window.end
    return {
        "seconds": seconds,
        "answered_per_s": _scalar(prom, f"{total} / {seconds}", at),
        "timeout_ratio": _scalar(prom, share("504"), at),
        "error_ratio": _scalar(prom, share("5(0[0-35-9]|[1-9].)"), at),    # 5xx other than 504
        "p50_s": _scalar(prom, quantile(0.5), at),
        "p95_s": _scalar(prom, quantile(0.95), at),
        "p99_s": _scalar(prom, quantile(0.99), at),
    }
