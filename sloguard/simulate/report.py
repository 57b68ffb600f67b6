"""The replay's outputs: a PNG chart, a markdown report and a JSON summary (what the tests read)."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")   # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from sloguard.simulate.configs import format_duration_ms  # noqa: E402
from sloguard.simulate.promapi import AlertRecord, Prometheus  # noqa: E402


def _atomic_write(path: str, data: bytes) -> None:
    # Dot-prefixed and ending in .tmp: .gitignore's reports/*.tmp covers a file left by a crash.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)      # mkstemp's 0600 would make the committed reports private
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def chart_series(prom: Prometheus, start: float, end: float, window: str) -> dict[str, list[tuple[float, float]]]:
    bucket = f'rate(http_request_duration_seconds_bucket{{job="api"}}[{window}])'
    exprs = {
        "p50": f"histogram_quantile(0.5, sum by (le) ({bucket}))",
        "p95": f"histogram_quantile(0.95, sum by (le) ({bucket}))",
        "p99": f"histogram_quantile(0.99, sum by (le) ({bucket}))",
        "pool_use": 'sum(db_pool_connections_in_use{job="api"}) / sum(db_pool_connections_max{job="api"})',
        "pool_waiting": 'sum(db_pool_waiting_requests{job="api"})',
        "error_ratio": f'(sum(rate(http_requests_total{{job="api",code=~"5.."}}[{window}])) or vector(0))'
                       f' / sum(rate(http_requests_total{{job="api"}}[{window}]))',
        "request_rate": f'sum(rate(http_requests_total{{job="api"}}[{window}]))',
    }
    out = {}
    for name, expr in exprs.items():
        result = prom.query_range(expr, start, end, 1.0)
        points = result[0]["values"] if result else []
        out[name] = [(float(t), float(v)) for t, v in points if v not in ("NaN", "+Inf", "-Inf")]
    return out


def _short_label(key: str, width: int = 44) -> str:
    """Alert name and the first distinguishing label, short enough to leave room for the plots."""
    parts = key.split(" ")
    text = " ".join(parts[:2]).replace("burn_window=", "").replace("relname=", "").replace("queryid=", "q")
    return text if len(text) <= width else text[: width - 1] + "…"


def draw_chart(path: str, series: dict, records: list[AlertRecord], marks, title: str) -> None:
    t0 = marks.migration
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 2, max(2, len(records) * 0.45)]})
    lat, pool, err, gantt = axes

    def xs(points):
        return [t - t0 for t, _ in points]

    for q, style in (("p50", "-"), ("p95", "--"), ("p99", "-")):
        lat.plot(xs(series[q]), [v for _, v in series[q]], style, label=q, linewidth=1.2 if q != "p99" else 2)
    lat.axhline(0.5, color="red", linestyle=":", label="SLO threshold 0.5 s")
    lat.set_ylabel("latency (s)")
    lat.legend(loc="upper left", fontsize=8)
    pool.plot(xs(series["pool_use"]), [v * 100 for _, v in series["pool_use"]], label="pool in use (% of max)")
    pool.set_ylabel("pool use (%)")
    pool.set_ylim(0, 105)
    waiting = pool.twinx()
    waiting.plot(xs(series["pool_waiting"]), [v for _, v in series["pool_waiting"]], color="tab:orange",
                 label="requests waiting")
    waiting.set_ylabel("waiting")
    pool.legend(loc="upper left", fontsize=8)
    waiting.legend(loc="upper right", fontsize=8)
    err.plot(xs(series["error_ratio"]), [v * 100 for _, v in series["error_ratio"]], color="tab:red",
             label="5xx ratio (504 timeouts included)")
    err.set_ylabel("errors (%)")
    err.legend(loc="upper left", fontsize=8)

    ordered = sorted(records, key=lambda r: (r.firing_at or 1e18))
    for i, rec in enumerate(ordered):
        color = "tab:red" if rec.severity == "critical" else "tab:orange"
        bars = [(s - t0, (e or marks.end) - s) for s, e in rec.periods]
        gantt.broken_barh(bars, (i - 0.4, 0.8), color=color)
        for ax in (lat, pool, err):
            for start, width in bars if rec.severity == "critical" else []:
                ax.axvspan(start, start + width, color="red", alpha=0.04)
    gantt.set_yticks(range(len(ordered)), [_short_label(r.key) for r in ordered], fontsize=7)
    gantt.set_xlabel("seconds since the migration (critical alerts shaded red, warnings orange)")
    for ax in axes:
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        if marks.fix_start:
            ax.axvline(marks.fix_start - t0, color="green", linestyle="--", linewidth=1)
            ax.axvline(marks.fix_end - t0, color="green", linewidth=1)
        ax.grid(alpha=0.3)
    lat.set_title(title + "\n(black: migration; green dashed/solid: CREATE INDEX CONCURRENTLY start/end)", fontsize=10)
    fig.tight_layout()
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


def detection_rows(records: list[AlertRecord], marks, factor: float) -> list[dict]:
    rows = []
    for rec in sorted(records, key=lambda r: (r.firing_at or 1e18, r.key)):
        if rec.firing_at is None or rec.firing_at < marks.migration:
            continue
        ttd = rec.firing_at - marks.migration
        first_end = rec.periods[-1][1] if rec.periods else None
        rows.append({
            "alert": rec.key, "alertname": rec.alertname, "severity": rec.severity,
            "pending_after_s": round(rec.pending_at - marks.migration, 1) if rec.pending_at else None,
            "firing_after_s": round(ttd, 1),
            "production_clock": format_duration_ms(round(ttd * factor) * 1000),
            "alertmanager_after_s": round(rec.alertmanager_at - marks.migration, 1) if rec.alertmanager_at else None,
            "inhibited": rec.alertmanager_inhibited,
            "resolved_after_fix_s": round(first_end - marks.fix_end, 1) if first_end and marks.fix_end else None,
        })
    return rows


def _rel(t: float, marks) -> str:
    return f"{t - marks.migration:+.0f}s" if t else "-"


def markdown(mode, outcome, rows, timeline_events, notifications, panels, rules_summary, chart_name) -> str:
    m = outcome.marks
    ok_panels = [p for p in panels if p.ok]
    lines = [
        f"# Incident replay, {mode.name} mode",
        "",
        "Generated by `python -m sloguard.simulate` (`make simulate`). Times are relative to the migration (t=0).",
        "",
        "## Set-up",
        "",
        f"- PostgreSQL 15 (pg_stat_statements, HypoPG), `users` {mode.users:,} rows (80% 'active'), "
        f"`orders` {2 * mode.users:,}; max_connections {mode.max_connections}; seeded in {outcome.seed_seconds:.1f}s.",
        f"- Demo API: pool of {mode.pool_size} connections, request timeout {mode.request_timeout:g}s (504); "
        f"load {mode.rate:g} req/s open loop, 95% login by email+status, 5% recent-orders join.",
        f"- Prometheus 2.42 with the generated rules time-compressed {rules_summary.get('factor', 0):g}x "
        f"(every range, offset and `for:` divided; ranges at least {mode.min_range_ms / 1000:g}s, `for:` at least "
        f"{mode.min_for_ms / 1000:g}s; names unchanged, see sloguard/simulate/configs.py); "
        f"scrape and evaluation every {mode.scrape_interval} (exporter {mode.exporter_interval}, "
        f"its queries bounded at {mode.exporter_query_timeout_s}s).",
        "- Not loaded in this mode: " + (", ".join(rules_summary.get("dropped", [])) or "nothing") + ".",
        "- Modelling: the migration adds `user_preferences` and drops the index on `users(email)` the login query "
        "relied on (sloguard/simulate/seed.py says why).",
        "",
        "## Phases",
        "",
        "| phase | at |",
        "|---|---|",
        f"| healthy traffic starts | {_rel(m.load_start, m)} |",
        "| migration applied | +0s |",
        f"| page and a database alert both firing | {_rel(m.detected, m)} |",
        f"| diagnose run | {_rel(m.diagnose_start, m)} to {_rel(m.diagnose_end, m)} |",
        f"| CREATE INDEX CONCURRENTLY | {_rel(m.fix_start, m)} to {_rel(m.fix_end, m)} |",
        f"| every alert resolved | {_rel(m.recovered, m) if outcome.all_resolved else 'NOT within the limit'} |",
        "",
        f"Alert API polls (once a second) that failed: {outcome.poll_errors}"
        + (" (the timeline below may have gaps of that many seconds)." if outcome.poll_errors else "."),
        "",
    ] + ([f"Expected but not seen before the diagnosis: {', '.join(outcome.missing_signals)}.", ""]
         if outcome.missing_signals else []) + [
        f"![latency, pool, errors and alerts]({chart_name})",
        "",
        "## Time to detect",
        "",
        "Firing time after the migration as measured here, and the same rule timing on the production clock "
        f"(x{rules_summary.get('factor', 0):g}; the load's own dynamics are not scaled, so read it as an order of "
        "magnitude).",
        "",
        "| alert | severity | pending | firing | production clock | at Alertmanager | resolved after fix |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        am = f"+{r['alertmanager_after_s']}s" + (" (inhibited)" if r["inhibited"] else "") \
            if r["alertmanager_after_s"] is not None else "-"
        res = f"{r['resolved_after_fix_s']}s" if r["resolved_after_fix_s"] is not None else "-"
        pend = f"+{r['pending_after_s']}s" if r["pending_after_s"] is not None else "-"
        lines.append(f"| {r['alert']} | {r['severity']} | {pend} | +{r['firing_after_s']}s | "
                     f"{r['production_clock']} | {am} | {res} |")
    lines += ["", "## Diagnosis", "",
              f"`python -m sloguard.diagnose --format json` exited {outcome.diagnose_exit} "
              f"in {m.diagnose_end - m.diagnose_start:.1f}s. Top findings:", ""]
    lines += [f"- [{f.get('severity')}] {f.get('title')}" for f in outcome.diagnose_findings[:8]]
    if outcome.recommended:
        lines += ["", f"Its index recommendation: **{outcome.recommended.get('title')}**: "
                  f"{outcome.recommended.get('detail')}"]
    lines += ["", "Exporter's missing-index evidence while degraded (`sloguard_pg_missing_index_suspect`):", ""]
    lines += [f"- `{e.get('relname')}` ({e.get('columns')}): {e.get('index')}" for e in outcome.missing_index_evidence]
    if not outcome.missing_index_evidence:
        lines.append("- none")
    lines += ["", "Applied:", "", "```sql", outcome.fix_sql or "-- nothing recommended", "```", "",
              "Login query plan after the migration and after the fix:", "", "```",
              outcome.plan_before_fix, "---", outcome.plan_after_fix or "(no fix applied)", "```", ""]
    lines += ["## Alertmanager notifications", "", "| receiver | status | notifications |", "|---|---|---|"]
    counts: dict[tuple[str, str], int] = {}
    for n in notifications:
        counts[(n["receiver"], n["status"])] = counts.get((n["receiver"], n["status"]), 0) + 1
    lines += [f"| {r} | {s} | {c} |" for (r, s), c in sorted(counts.items())] or ["| - | - | 0 |"]
    lines += ["", f"## Dashboard panels against the live Prometheus: {len(ok_panels)}/{len(panels)} queries "
              "returned data", ""]
    lines += [f"- NO DATA: `{p.uid}` panel {p.panel_id} \"{p.title}\": `{p.expr}` {p.error}"
              for p in panels if not p.ok] or ["- every panel query returned data"]
    lines += ["", "## Timeline (from the Prometheus and Alertmanager APIs)", "", "| t | source | event |",
              "|---|---|---|"]
    lines += [f"| {_rel(t, m)} | {src} | {text} |" for t, src, text in timeline_events]
    lines += ["", f"Load generator: `{outcome.loadgen_summary}`", ""]
    return "\n".join(lines)


def write_outputs(out_dir: str, mode, outcome, records, timeline_events, notifications, panels, series,
                  rules_summary) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"simulation-{mode.name}")
    rows = detection_rows(records, outcome.marks, rules_summary.get("factor", 1))
    draw_chart(base + ".png", series, records, outcome.marks,
               f"sloguard incident replay ({mode.name}): {mode.users:,} users, {mode.rate:g} req/s")
    text = markdown(mode, outcome, rows, timeline_events, notifications, panels, rules_summary,
                    os.path.basename(base + ".png"))
    _atomic_write(base + ".md", text.encode())
    summary = {
        "mode": asdict(mode), "outcome": asdict(outcome), "detection": rows,
        "alerts": [asdict(r) for r in records], "events": timeline_events, "notifications": notifications,
        "panels": [{**asdict(p), "ok": p.ok} for p in panels], "rules": rules_summary,
    }
    _atomic_write(base + ".json", json.dumps(summary, indent=1, default=str).encode())
    return {"markdown": base + ".md", "chart": base + ".png", "json": base + ".json"}
