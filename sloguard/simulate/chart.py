"""The replay's PNG: latency quantiles, pool use, pool waiters, errors, and each alert's firing periods.

Layout choices, each against a way the chart used to mislead: legends sit outside the plotting area (they covered
lines); pool use and waiting requests get a panel each (on twin axes the waiting line hid under the pool line at
saturation); alert labels are wrapped, never cut; the latency panel says that p95/p99 are interpolated inside
histogram buckets and draws the bucket bounds, so a flat line reads as "somewhere in this bucket".
"""
from __future__ import annotations

import os
import tempfile
import textwrap

import matplotlib

matplotlib.use("Agg")   # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from demo.metrics import LATENCY_BUCKETS  # noqa: E402
from sloguard.simulate.promapi import AlertRecord, Prometheus  # noqa: E402

LABEL_WIDTH = 46      # characters per line of an alert label; longer labels wrap onto more lines


def chart_series(prom: Prometheus, start: float, end: float, window: str) -> dict[str, list[tuple[float, float]]]:
    bucket = f'rate(http_request_duration_seconds_bucket{{job="api"}}[{window}])'
    total = f'sum(rate(http_requests_total{{job="api"}}[{window}]))'
    exprs = {
        "p50": f"histogram_quantile(0.5, sum by (le) ({bucket}))",
        "p95": f"histogram_quantile(0.95, sum by (le) ({bucket}))",
        "p99": f"histogram_quantile(0.99, sum by (le) ({bucket}))",
        "pool_use": 'sum(db_pool_connections_in_use{job="api"}) / sum(db_pool_connections_max{job="api"})',
        "pool_waiting": 'sum(db_pool_waiting_requests{job="api"})',
        "error_ratio": f'(sum(rate(http_requests_total{{job="api",code=~"5.."}}[{window}])) or vector(0)) / {total}',
        "timeout_ratio": f'(sum(rate(http_requests_total{{job="api",code="504"}}[{window}])) or vector(0)) / {total}',
        "request_rate": total,
    }
    out = {}
    for name, expr in exprs.items():
        result = prom.query_range(expr, start, end, 1.0)
        points = result[0]["values"] if result else []
        out[name] = [(float(t), float(v)) for t, v in points if v not in ("NaN", "+Inf", "-Inf")]
    return out


def alert_label(key: str) -> str:
    """The whole alert key (name and distinguishing labels), wrapped on spaces: nothing is cut."""
    return "\n".join(textwrap.wrap(key, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False))


def _legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)


def draw_chart(path: str, series: dict, records: list[AlertRecord], marks, title: str) -> None:
    t0 = marks.migration
    ordered = sorted(records, key=lambda r: (r.periods[0][0] if r.periods else 1e18, r.key))
    ordered = [r for r in ordered if r.periods]
    # The replay's own actions share the timeline with the alerts (grey bars), so no shading has to carry them.
    phases = [(name, start, end) for name, start, end in (
        ("diagnose running", marks.diagnose_start, marks.diagnose_end),
        ("CREATE INDEX CONCURRENTLY", marks.fix_start, marks.fix_end)) if start]
    labels = [name for name, _, _ in phases] + [alert_label(r.key) for r in ordered]
    gantt_height = max(2.0, 0.16 * sum(label.count("\n") + 1 for label in labels) + 0.12 * len(labels))
    fig, axes = plt.subplots(5, 1, figsize=(13, 9 + gantt_height), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [3, 1.6, 1.6, 1.8, gantt_height]})
    lat, pool, waiting, err, gantt = axes

    def xs(points):
        return [t - t0 for t, _ in points]

    top = max([v for q in ("p50", "p95", "p99") for _, v in series[q]] or [1.0])
    for bound in LATENCY_BUCKETS:
        if bound <= top * 1.1:
            lat.axhline(bound, color="grey", linewidth=0.6, alpha=0.5)
    lat.axhline(0.5, color="red", linestyle=":", label="SLO threshold 0.5 s")
    for q, style, width in (("p50", "-", 1.2), ("p95", "--", 1.2), ("p99", "-", 2.0)):
        lat.plot(xs(series[q]), [v for _, v in series[q]], style, label=q, linewidth=width)
    lat.plot([], [], color="grey", linewidth=0.6, alpha=0.5, label="histogram bucket bounds")
    lat.set_ylabel("latency (s)")
    lat.set_title("p50/p95/p99 are histogram_quantile estimates: between two bucket bounds they are linearly "
                  "interpolated,\nso a flat stretch means \"somewhere in this bucket\" (a request timing out at "
                  "the deadline lands in the bucket above it), not a measured value", fontsize=8, loc="left")
    _legend(lat)

    pool.plot(xs(series["pool_use"]), [v * 100 for _, v in series["pool_use"]], label="pool in use (% of max)")
    pool.set_ylabel("pool use (%)")
    pool.set_ylim(0, 110)
    _legend(pool)
    waiting.plot(xs(series["pool_waiting"]), [v for _, v in series["pool_waiting"]], color="tab:orange",
                 label="requests waiting\nfor a connection")
    waiting.set_ylabel("waiting")
    _legend(waiting)
    err.plot(xs(series["error_ratio"]), [v * 100 for _, v in series["error_ratio"]], color="tab:red",
             label="5xx (all)")
    err.plot(xs(series.get("timeout_ratio", [])), [v * 100 for _, v in series.get("timeout_ratio", [])],
             color="tab:purple", linestyle="--", label="504 (timeouts)")
    err.set_ylabel("errors (% of answers)")
    _legend(err)

    for i, (_, start, end) in enumerate(phases):
        gantt.broken_barh([(start - t0, end - start)], (i - 0.4, 0.8), color="tab:gray")
    for i, rec in enumerate(ordered, start=len(phases)):
        color = "tab:red" if rec.severity == "critical" else "tab:orange"
        bars = [(s - t0, (e or marks.end) - s) for s, e in rec.periods]
        gantt.broken_barh(bars, (i - 0.4, 0.8), color=color)
        for ax in (lat, pool, waiting, err):
            for start, width in bars if rec.severity == "critical" else []:
                ax.axvspan(start, start + width, color="red", alpha=0.03, linewidth=0)
    gantt.set_yticks(range(len(labels)), labels, fontsize=7)
    gantt.set_ylim(-0.6, max(0.6, len(labels) - 0.4))
    gantt.invert_yaxis()          # first to fire on top
    gantt.set_xlabel("seconds since the migration; grey: the replay's actions; red/orange: critical/warning "
                     "alerts firing (critical periods also shaded above)")
    for ax in axes:
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        if marks.fix_start:
            ax.axvline(marks.fix_start - t0, color="green", linestyle="--", linewidth=1)
            ax.axvline(marks.fix_end - t0, color="green", linewidth=1)
        ax.grid(alpha=0.3)
    fig.suptitle(title + "\nblack dashed: migration; green dashed/solid: CREATE INDEX CONCURRENTLY start/end",
                 fontsize=10)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
