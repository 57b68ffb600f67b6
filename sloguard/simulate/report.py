"""The replay's outputs: a markdown report, a JSON summary (what the tests read) and the PNG (chart.py)."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict

from sloguard.simulate.calibration import RECORD_HEALTHY, RECORD_SATURATED
from sloguard.simulate.chart import draw_chart
from sloguard.simulate.production import PROMTOOL_REPLAY, production_ttd
from sloguard.simulate.promapi import AlertRecord


def _atomic_write(path: str, data: bytes) -> None:
    # Dot-prefixed and ending in .tmp: .gitignore's *.tmp covers a file left by a crash.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)      # mkstemp's 0600 would make the committed reports private
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _label(key: str, name: str) -> str:
    m = re.search(rf"\b{name}=(\S+)", key)
    return m[1] if m else ""


def detection_rows(records: list[AlertRecord], marks, production: dict) -> list[dict]:
    """One row per alert that fired after the migration. Every time is relative to the migration except
    `resolved_after_fix_s`, which is set only when the alert's last firing period ended after the index was built
    (an alert that resolved earlier, e.g. during the build, has `resolved_before_fix_end` instead: never a
    negative "after")."""
    rows = []
    for rec in records:
        periods = [p for p in rec.periods if p[0] >= marks.migration]
        if not periods:
            continue
        last_end = periods[-1][1]
        after_fix = last_end is not None and bool(marks.fix_end) and last_end >= marks.fix_end
        rows.append({
            "alert": rec.key, "alertname": rec.alertname, "severity": rec.severity,
            "pending_after_s": round(rec.pending_at - marks.migration, 1)
            if rec.pending_at and rec.pending_at >= marks.migration else None,
            "firing_after_s": round(periods[0][0] - marks.migration, 1),
            "firing_periods": [[round(s - marks.migration, 1), round(e - marks.migration, 1) if e else None]
                               for s, e in periods],
            "alertmanager_after_s": round(rec.alertmanager_at - marks.migration, 1)
            if rec.alertmanager_at and rec.alertmanager_at >= marks.migration else None,
            "inhibited": rec.alertmanager_inhibited,
            "resolved_after_s": round(last_end - marks.migration, 1) if last_end else None,
            "resolved_after_fix_s": round(last_end - marks.fix_end, 1) if after_fix else None,
            "resolved_before_fix_end": last_end is not None and bool(marks.fix_end) and not after_fix,
            "production_ttd": production_ttd(production, rec.alertname, _label(rec.key, "burn_window")),
        })
    return sorted(rows, key=lambda r: (r["firing_after_s"], r["alert"]))


def _rel(t: float, marks) -> str:
    return f"{t - marks.migration:+.0f}s" if t else "-"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _secs(v) -> str:
    return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def loadgen_outcomes(summary_line: str) -> dict:
    try:
        return json.loads(summary_line)
    except (TypeError, ValueError):
        return {}


def _resolved_cell(r: dict) -> str:
    if r["resolved_after_s"] is None:
        return "still firing"
    if r["resolved_after_fix_s"] is not None:
        return f"+{r['resolved_after_s']}s ({r['resolved_after_fix_s']}s after the index was built)"
    if r["resolved_before_fix_end"]:
        return f"+{r['resolved_after_s']}s (before the index build ended)"
    return f"+{r['resolved_after_s']}s (no fix applied)"


def _periods_cell(r: dict) -> str:
    if len(r["firing_periods"]) == 1:
        return "1"
    return f"{len(r['firing_periods'])}: " + ", ".join(
        f"+{s}s to " + (f"+{e}s" if e is not None else "end") for s, e in r["firing_periods"])


def _refired(rows: list[dict]) -> list[str]:
    flapping = [f"{r['alert']} ({len(r['firing_periods'])} firing periods)" for r in rows
                if len(r["firing_periods"]) > 1]
    return [f"Resolved and fired again during the incident: {', '.join(flapping)}.", ""] if flapping else []


def _before_migration(outcome, records, notifications) -> list[str]:
    """Anything pending, firing or notified before the migration: on the start-up state or healthy traffic, it
    would be noise (or a page) the incident did not cause, so it is listed, never filtered out."""
    m = outcome.marks
    early = [r for r in records if (r.pending_at and r.pending_at < m.migration)
             or any(s < m.migration for s, _ in r.periods)]
    sent = [n for n in notifications if n["received_at"] < m.migration]
    if not early and not sent:
        return ["No alert was pending or firing, and Alertmanager sent no notification, before the migration "
                f"(rules loaded at {_rel(m.rules_loaded, m)}, after every target's first successful scrape; "
                f"load from {_rel(m.load_start, m)})."]
    lines = [f"**Before the migration** (rules loaded at {_rel(m.rules_loaded, m)}, load from "
             f"{_rel(m.load_start, m)}):", ""]
    for r in early:
        firing = [f"{_rel(s, m)} to {_rel(e, m) if e else 'end'}" for s, e in r.periods if s < m.migration]
        lines.append(f"- {r.key}: " + (f"fired {', '.join(firing)}" if firing else
                                       f"pending at {_rel(r.pending_at, m)}, never fired before the migration"))
    lines += [f"- notification to {n['receiver']} ({n['status']}) at {_rel(n['received_at'], m)}: "
              + ", ".join(a["alertname"] for a in n["alerts"]) for n in sent]
    return lines


def _calibration(mode, outcome) -> list[str]:
    cal = outcome.calibration or {}
    healthy, saturated = cal.get("healthy") or {}, cal.get("saturated") or {}
    rows = [
        ("p50", "p50_s", _secs), ("p95", "p95_s", _secs), ("p99", "p99_s", _secs),
        ("5xx other than 504", "error_ratio", _pct), ("504 (timeouts)", "timeout_ratio", _pct),
    ]
    lines = ["## The load against the record", "",
             "Record: the scenario's figures before the incident and at 14:32 (its error rate rose from 8.5% "
             "then to 15% from 14:35; the 30% timeouts are on top). Replay: measured in Prometheus over the "
             f"healthy phase and over the saturated window ({saturated.get('seconds', '-')} s, from the pool "
             "alert firing to the start of the index build).", "",
             "| figure | record, normal | replay, healthy | record, incident | replay, saturated |",
             "|---|---|---|---|---|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt(RECORD_HEALTHY.get(key))} | {fmt(healthy.get(key))} | "
                     f"{fmt(RECORD_SATURATED.get(key))} | {fmt(saturated.get(key))} |")
    lg = loadgen_outcomes(outcome.loadgen_summary)
    shed = (lg.get("outcomes") or {}).get("shed", 0)
    lines += [
        "", "How and why the replay differs, on purpose:", "",
        f"- **The deadline is {mode.request_timeout:g} s, not the record's 30 s**, so that the replay lasts minutes "
        "and the pool of "
        f"{mode.pool_size} drains in seconds after the fix. Past it the API answers 504; every timed-out request is "
        "also observed in the latency histogram at about the deadline, so the replay's p95/p99 sit in the bucket "
        "above the deadline instead of the record's 2.3 s / 5.8 s. The record cannot be reproduced as written: "
        "30% of requests at a 30 s timeout would put p99 at 30 s, so its percentiles must leave the timed-out "
        "requests out (the post-mortem's impact analysis discusses this).",
        f"- **Load over degraded capacity, not a calibrated 45%.** {mode.rate:g} req/s open loop against a pool "
        f"of {mode.pool_size} whose login query now seq-scans {mode.users:,} rows: once arrivals exceed what "
        "the pool serves, every excess request waits out its deadline, so the failing share is set by "
        "(arrivals - capacity) / arrivals, and capacity depends on the machine's CPU. Tuning the rate to the "
        "record's 15% + 30% on one machine would not hold on another; the replay shows the same mechanism (queue, "
        "timeouts, pool at 100%) at a severity that depends on the host.",
        "- **No 500s.** The record's 15% error rate came with \"Too many connections (100/100)\"; here the pool "
        f"({mode.pool_size}) stays below max_connections ({mode.max_connections}), so the API never fails to "
        "connect and every error is a 504.",
        f"- **Shed requests: {shed}.** The load generator sends each request from a pool of 128 client workers; "
        "a tick that finds every worker still waiting for an answer is counted as `shed` and not sent (bounded "
        "memory, no unbounded client queue). Shed requests never reach the API, so they are in no SLI and the "
        "API's real arrival rate was lower than the nominal rate by that many requests.",
        "",
    ]
    return lines


def markdown(mode, outcome, rows, timeline_events, notifications, panels, rules_summary, chart_name,
             records=()) -> str:
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
        f"its queries bounded at {mode.exporter_query_timeout_s}s). Rules and Alertmanager are loaded only after "
        "every target's first successful scrape, so nothing fires on the empty start-up state.",
        "- Not loaded in this mode: " + (", ".join(rules_summary.get("dropped", [])) or "nothing") + ".",
        "- Modelling: the migration adds `user_preferences` and drops the index on `users(email)` the login query "
        "relied on (sloguard/simulate/seed.py says why).",
        "",
        "## Phases",
        "",
        "| phase | at |",
        "|---|---|",
        f"| rules and Alertmanager loaded | {_rel(m.rules_loaded, m)} |",
        f"| healthy traffic starts | {_rel(m.load_start, m)} |",
        "| migration applied | +0s |",
        f"| page and a database alert both firing | {_rel(m.detected, m)} |",
        f"| diagnose run | {_rel(m.diagnose_start, m)} to {_rel(m.diagnose_end, m)} |",
        f"| CREATE INDEX CONCURRENTLY | {_rel(m.fix_start, m)} to {_rel(m.fix_end, m)} |",
        f"| every alert resolved | {_rel(m.recovered, m) if outcome.all_resolved else 'NOT within the limit'} |",
        "",
        f"Alert API polls: {outcome.polls}, one a second in their own thread from start-up to the end, "
        f"diagnosis and index build included; failed: {outcome.poll_errors}; longest stretch without a "
        f"successful poll: {outcome.largest_poll_gap_s:g}s"
        + (" (an alert shorter than that may be missing from the timeline)." if outcome.largest_poll_gap_s > 2
           else "."),
        "",
    ] + _refired(rows) + _before_migration(outcome, list(records), notifications) + [""] + (
        [f"Expected but not seen before the diagnosis: {', '.join(outcome.missing_signals)}.", ""]
        if outcome.missing_signals else []) + [
        f"![latency, pool, errors and alerts]({chart_name})",
        "",
    ] + _calibration(mode, outcome) + [
        "## Time to detect",
        "",
        "\"pending\" and \"firing\" are this replay's seconds after the migration. They are not a production "
        "estimate: with the rules compressed, they are dominated by the `for:` floor "
        f"({mode.min_for_ms / 1000:g}s), the range floor ({mode.min_range_ms / 1000:g}s) and the "
        f"{mode.scrape_interval} evaluation step, not by the rules' own timing. The production figure is the "
        f"promtool replay's (`{PROMTOOL_REPLAY}`: the uncompressed rules evaluated on the record's series), "
        "quoted from that file's header when this report was written; \"-\": no row there. An alert that "
        "resolved and fired again shows each firing period.",
        "",
        "| alert | severity | pending | firing | firing periods | at Alertmanager | resolved | "
        "production TTD (promtool replay) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        am = f"+{r['alertmanager_after_s']}s" + (" (inhibited)" if r["inhibited"] else "") \
            if r["alertmanager_after_s"] is not None else "-"
        pend = f"+{r['pending_after_s']}s" if r["pending_after_s"] is not None else "-"
        lines.append(f"| {r['alert']} | {r['severity']} | {pend} | +{r['firing_after_s']}s | {_periods_cell(r)} | "
                     f"{am} | {_resolved_cell(r)} | {r['production_ttd'] or '-'} |")
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
    lines += ["", f"Load generator (`shed`: not sent, every client worker busy; see above): "
              f"`{outcome.loadgen_summary}`", ""]
    return "\n".join(lines)


def write_outputs(out_dir: str, mode, outcome, records, timeline_events, notifications, panels, series,
                  rules_summary, production: dict) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"simulation-{mode.name}")
    rows = detection_rows(records, outcome.marks, production)
    draw_chart(base + ".png", series, records, outcome.marks,
               f"sloguard incident replay ({mode.name}): {mode.users:,} users, {mode.rate:g} req/s")
    text = markdown(mode, outcome, rows, timeline_events, notifications, panels, rules_summary,
                    os.path.basename(base + ".png"), records)
    _atomic_write(base + ".md", text.encode())
    summary = {
        "mode": asdict(mode), "outcome": asdict(outcome), "detection": rows,
        "alerts": [asdict(r) for r in records], "events": timeline_events, "notifications": notifications,
        "panels": [{**asdict(p), "ok": p.ok} for p in panels], "rules": rules_summary,
    }
    _atomic_write(base + ".json", json.dumps(summary, indent=1, default=str).encode())
    return {"markdown": base + ".md", "chart": base + ".png", "json": base + ".json"}
