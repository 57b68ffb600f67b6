"""The validated spec as plain frozen data. `sloguard.spec.load_spec` builds it; builders only read it.

Durations are kept both as the text the user wrote (for PromQL, e.g. "30d") and in seconds (for maths).
Objectives are ratios (0.999), converted once from the percent the user writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Duration:
    text: str      # normalised PromQL duration, e.g. "5m", "1h", "30d"
    seconds: int


@dataclass(frozen=True)
class EventsSLI:
    total: str     # PromQL selector of a counter, e.g. http_requests_total{job="api"}
    errors: str


@dataclass(frozen=True)
class LatencySLI:
    metric: str      # histogram base selector, e.g. http_request_duration_seconds{job="api"}
    threshold: float  # seconds


@dataclass(frozen=True)
class SLO:
    name: str
    description: str
    objective: float          # ratio, e.g. 0.999
    window: Duration
    sli: EventsSLI | LatencySLI

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective


@dataclass(frozen=True)
class BurnWindow:
    long: Duration
    short: Duration
    budget_fraction: float    # share of the period's budget spent over `long` that triggers the alert


@dataclass(frozen=True)
class AlertTier:
    severity: str             # alerts.severities["page"] / ["ticket"]: "critical" / "warning" by default
    for_: Duration
    windows: tuple[BurnWindow, ...]
    min_events: int = 0       # requests the short window must hold before the pair may fire (page only; 0: no guard)


# Alert families whose severity the spec can set (alerting.severities); the defaults page only on user-facing
# symptoms (burn-rate page pairs) and on a hard outage.
SEVERITY_DEFAULTS = {
    "page": "critical",             # burn-rate page pairs
    "ticket": "warning",            # burn-rate ticket pairs
    "outage": "critical",           # SloTargetDown, SloMetricAbsent
    "budget_exhausted": "warning",  # SloErrorBudgetExhausted
    "budget_low": "info",           # SloErrorBudgetLow
    "slo_config": "warning",        # SloHistogramBucketMissing, SloHistogramBucketPartial
    "latency_p99": "warning",       # ApiLatencyP99High: a single-window symptom
    "pool": "warning",              # AppDbPoolSaturated, AppDbPoolWaiters: causes
    "database": "warning",          # every Postgres* / PgStatStatements* alert: causes
}
SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True)
class Alerting:
    page: AlertTier
    ticket: AlertTier
    severities: dict[str, str] = field(default_factory=lambda: dict(SEVERITY_DEFAULTS))


@dataclass(frozen=True)
class LatencyP99:
    metric: str
    threshold: float
    for_: Duration


@dataclass(frozen=True)
class Pool:
    in_use: str
    max: str
    waiting: str
    saturation_ratio: float
    max_waiting: float
    for_: Duration


@dataclass(frozen=True)
class Connections:
    saturation_ratio: float
    for_: Duration


@dataclass(frozen=True)
class SlowStatements:
    mean_seconds: float
    min_calls_per_second: float
    regression_factor: float
    for_: Duration


@dataclass(frozen=True)
class SeqScans:
    min_live_rows: int
    rows_read_per_second: float
    for_: Duration


@dataclass(frozen=True)
class LockWaits:
    max_waiting_sessions: int
    for_: Duration


@dataclass(frozen=True)
class LongTransactions:
    max_seconds: float
    for_: Duration


@dataclass(frozen=True)
class Database:
    exporter_job: str
    latency_p99: LatencyP99
    pool: Pool
    connections: Connections
    slow_statements: SlowStatements
    seq_scans: SeqScans
    lock_waits: LockWaits
    long_transactions: LongTransactions


@dataclass(frozen=True)
class Links:
    runbook: str
    grafana: str


@dataclass(frozen=True)
class Spec:
    service: str
    labels: dict[str, str]
    links: Links
    slos: tuple[SLO, ...]
    alerting: Alerting
    database: Database
    source: str = field(default="slo.yaml", compare=False)   # file it was loaded from, for messages
