"""The thresholds diagnose judges by: the `database:` section of slo.yaml (the same numbers the alerts use)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    connections_ratio: float = 0.8        # of max_connections - superuser_reserved
    pool_ratio: float = 0.9
    pool_max_waiting: float = 5
    slow_mean_seconds: float = 0.1
    min_live_rows: int = 100_000          # a "large" table
    lock_waiting_sessions: int = 5
    long_transaction_seconds: float = 300
    pool_in_use: str = 'db_pool_connections_in_use{job="api"}'
    pool_max: str = 'db_pool_connections_max{job="api"}'
    pool_waiting: str = 'db_pool_waiting_requests{job="api"}'
    page_burn_rate: float = 14.4          # 2% of a 30d budget in 1h; derived from the spec when it loads


def from_spec(path: str) -> tuple[Thresholds, str | None]:
    """Thresholds from the spec; defaults (and a note saying why) when it cannot be read."""
    try:
        from sloguard.spec import load_spec
        spec = load_spec(path)
        db = spec.database
    except Exception as e:  # noqa: BLE001 - any spec problem falls back to defaults, reported as a note
        return Thresholds(), f"spec {path} not used ({str(e).splitlines()[0] if str(e) else type(e).__name__}): " \
                             "default thresholds"
    return Thresholds(
        connections_ratio=db.connections.saturation_ratio,
        pool_ratio=db.pool.saturation_ratio,
        pool_max_waiting=db.pool.max_waiting,
        slow_mean_seconds=db.slow_statements.mean_seconds,
        min_live_rows=db.seq_scans.min_live_rows,
        lock_waiting_sessions=db.lock_waits.max_waiting_sessions,
        long_transaction_seconds=db.long_transactions.max_seconds,
        pool_in_use=db.pool.in_use, pool_max=db.pool.max, pool_waiting=db.pool.waiting,
        page_burn_rate=_page_factor(spec),
    ), None


def _page_factor(spec) -> float:
    """Highest page factor f * P / L (SRE Workbook) over the page windows, for the shortest SLO period."""
    period = min(slo.window.seconds for slo in spec.slos)
    return max(w.budget_fraction * period / w.long.seconds for w in spec.alerting.page.windows)
