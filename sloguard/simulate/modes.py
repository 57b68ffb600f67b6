"""Simulation modes: scale, load and timings. Flags override any field (see __main__)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Mode:
    name: str
    users: int                 # rows in `users` (orders: 2 per user)
    rate: float                # requests per second, open loop
    pool_size: int             # the demo API's connection pool
    request_timeout: float     # seconds before the API answers 504
    max_connections: int       # PostgreSQL's, small so the connections alert has something to say
    time_factor: float         # rule time compression (configs.py)
    keep_ticket_tier: bool     # ticket burn-rate alerts need minutes to clear even compressed
    healthy_s: float           # healthy traffic before the migration
    max_degraded_s: float      # give up waiting for the alerts after this long
    settle_s: float            # after every expected alert and notification showed, a few more samples
    max_recovery_s: float      # give up waiting for every alert to resolve after this long
    scrape_interval: str = "1s"
    # The exporter's scrape timeout is its interval; every query it sends is bounded by exporter_query_timeout_s,
    # well inside it, so a slow catalogue query under load costs one collector, not the whole scrape.
    exporter_interval: str = "3s"
    exporter_query_timeout_s: int = 1
    min_range_ms: int = 9000   # no PromQL range below 3 exporter scrapes
    min_for_ms: int = 5000     # no `for:` below 5 evaluations: one noisy evaluation cannot fire an alert


MODES = {
    "quick": Mode("quick", users=500_000, rate=80, pool_size=10, request_timeout=1.0, max_connections=20,
                  time_factor=60, keep_ticket_tier=False, healthy_s=25, max_degraded_s=100, settle_s=5,
                  max_recovery_s=75),
    "default": Mode("default", users=1_000_000, rate=100, pool_size=10, request_timeout=2.0, max_connections=20,
                    time_factor=120, keep_ticket_tier=True, healthy_s=60, max_degraded_s=200, settle_s=30,
                    max_recovery_s=300),
}
