"""The demo API's instrumentation, under the names slo.yaml declares (job label comes from the scrape config)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 0.5 s is the latency SLO threshold and must be a bucket boundary; the rest give p50/p95/p99 resolution.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# Routes that talk to the database: their series exist from start-up (see ApiMetrics).
ROUTES = ("/login", "/orders/recent")


class ApiMetrics:
    def __init__(self, pool) -> None:
        self.registry = CollectorRegistry()
        # Counter "http_requests" is exposed as http_requests_total.
        self.requests = Counter("http_requests", "HTTP requests answered, by route and status code.",
                                ["route", "code"], registry=self.registry)
        self.duration = Histogram("http_request_duration_seconds", "Time to answer an HTTP request.",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        in_use = Gauge("db_pool_connections_in_use", "Pool connections lent to requests.", registry=self.registry)
        in_use.set_function(lambda: pool.in_use)
        size = Gauge("db_pool_connections_max", "Pool size limit.", registry=self.registry)
        size.set(pool.max_size)
        waiting = Gauge("db_pool_waiting_requests", "Requests waiting for a pool connection.",
                        registry=self.registry)
        waiting.set_function(lambda: pool.waiting)
        # Labelled series appear only once observed; created at zero here, a scrape before the first request
        # already has them, so absent() rules (an outage alert) stay quiet on an idle service that just started.
        for route in ROUTES:
            self.requests.labels(route=route, code="200")
            self.duration.labels(route=route)

    def observe(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route=route, code=str(code)).inc()
        self.duration.labels(route=route).observe(seconds)
