"""Findings and evidence -> text (terminal), JSON (machines) or markdown (paste into the post-mortem)."""
from __future__ import annotations

import json
from dataclasses import asdict

from sloguard.diagnose.collect import DatabaseEvidence
from sloguard.diagnose.prom import PrometheusEvidence
from sloguard.diagnose.rank import Finding
from sloguard.pginsight import window

TOP = 5
VERDICT = {0: "healthy: no findings", 1: "findings: see above, most urgent first"}


def _one_line(sql: str | None, width: int = 100) -> str:
    text = " ".join((sql or "(text not available)").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _by_mean(db: DatabaseEvidence):
    return sorted(db.statements, key=lambda s: -db.mean_now(s)[0])[:TOP]


def _recent_ms(db: DatabaseEvidence, s) -> str:
    recent = db.recent.get(window.key(s))
    return f"{recent.mean_seconds * 1000:.1f}" if recent else "-"


def _sections(db: DatabaseEvidence, prom: PrometheusEvidence | None) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) per section: one table model shared by text and markdown."""
    used = sum(c.count for c in db.connections)
    conn_rows = [[c.datname or "-", c.state or "-", c.wait_event_type or "-", c.count]
                 for c in sorted(db.connections, key=lambda c: -c.count)]
    conn_rows.append(["total", "", "", f"{used} / {db.max_connections - db.reserved_connections} usable"])
    stmt = lambda s: [s.queryid, s.calls, f"{s.total_exec_seconds:.2f}", f"{s.mean_exec_seconds * 1000:.1f}",  # noqa: E731
                      _recent_ms(db, s), _one_line(s.query)]
    # "recent": the calls of the last --sample-seconds ("-": not called then)
    stmt_header = ["queryid", "calls", "total s", "mean ms", f"last {db.sample_seconds:.0f} s mean ms" if db.sample_seconds else "recent mean ms", "statement"]
    tables = [[f"{t.schemaname}.{t.relname}", f"{t.live_rows:,}", f"{t.seq_scan:,}", f"{t.seq_tup_read:,}",
               f"{t.idx_scan:,}"] for t in db.tables if t.seq_scan][:TOP]
    idx = [[f"{s.schemaname}.{s.relname} ({', '.join(s.columns)})", f"{s.cost_before:,.0f}",
            "-" if s.cost_after is None else f"{s.cost_after:,.2f}", "yes" if s.verified else "no", s.queryid]
           for s in db.suggestions]
    locks = [[w.pid, f"{w.waiting_seconds:.0f}", ", ".join(map(str, w.blocking_pids)) or "-", w.wait_event]
             for w in db.lock_waiters]
    blockers = [[r.pid, r.session.state or r.session.backend_type, f"{r.age_seconds:.0f}",
                 f"{r.lock.mode} {r.lock.relation or r.lock.locktype}" if r.lock else "-", r.waiters,
                 ", ".join(str(x.pid) for x in (r.session, *r.queued) if db.is_ddl(x)) or "-",
                 r.session.query_id if r.session.query_id is not None else "-",
                 _one_line(db.lock_texts.get(r.session.query_id), 60)] for r in db.root_blockers]
    txs = [[t.datname, f"{t.age_seconds:.0f}", t.open_transactions] for t in db.transactions]
    mig = [[db.migration.table, db.migration.version, db.migration.applied_at.isoformat()]] if db.migration else []
    out = [
        ("Connections", ["database", "state", "wait", "count"], conn_rows),
        ("Top statements by total time", stmt_header, [stmt(s) for s in db.statements[:TOP]]),
        ("Top statements by mean time", stmt_header, [stmt(s) for s in _by_mean(db)]),
        ("Large tables read by sequential scans", ["table", "live rows", "seq scans", "rows seq-read", "idx scans"],
         tables),
        ("Candidate indexes (HypoPG)", ["index", "cost before", "cost after", "verified", "queryid"], idx),
        ("Lock waits", ["pid", "waiting s", "blocked by", "wait event"], locks),
        ("Root blockers", ["pid", "state", "age s", "holds", "queued", "DDL pids", "queryid", "statement"],
         blockers),
        ("Long transactions", ["database", "oldest s", "open"], txs),
        ("Latest migrations", ["table", "version", "applied at"], mig),
    ]
    if prom is not None:
        out.append(("Prometheus: firing alerts", ["alert", "severity", "since", "summary"],
                    [[a.name, a.severity, a.active_since, a.summary] for a in prom.alerts]))
        out.append(("Prometheus: burn rates (5m)", ["slo", "error ratio", "budget", "burn rate"],
                    [[b.slo, f"{b.error_ratio_5m:.4f}", f"{b.error_budget:.4f}", f"{b.burn_rate:.1f}"]
                     for b in prom.burn_rates]))
    return out


def _empty(db: DatabaseEvidence, title: str) -> str:
    """What an empty section means: for the index candidates, whether statements could not be planned."""
    if title.startswith("Candidate indexes") and db.blind_statements:
        return f"none: {len(db.blind_statements)} statement(s) not planned, see the notes"
    return "none"


def _notes(db: DatabaseEvidence, prom: PrometheusEvidence | None, extra: list[str]) -> list[str]:
    return db.notes + ([prom.error] if prom and prom.error else []) + extra


def render_text(db, prom, findings: list[Finding], code: int, notes: list[str]) -> str:
    out = [f"sloguard diagnose — {db.target} (PostgreSQL {db.server_version}) at {db.collected_at:%Y-%m-%d %H:%M:%S %Z}",
           ""]
    ranked = [f for f in findings if f.severity != "info"]
    out.append(f"FINDINGS ({len(ranked)}), most urgent first:" if ranked else "FINDINGS: none")
    for i, f in enumerate(ranked, 1):
        out.append(f"{i:>2}. [{f.severity.upper()}] {f.title}")
        if f.detail:
            out.append(f"      {f.detail}")
        if f.action:
            out.append("      run: " + f.action.replace("\n", "\n           "))
    info = [f for f in findings if f.severity == "info"]
    if info:
        out += ["", "CONTEXT:"] + [f"  - {f.title}" for f in info]
    for title, header, rows in _sections(db, prom):
        out += ["", title.upper()]
        if not rows:
            out.append(f"  ({_empty(db, title)})")
            continue
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        for row in [header, *rows]:
            out.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip())
    for n in _notes(db, prom, notes):
        out.append(f"note: {n}")
    out += ["", f"exit {code}: {VERDICT[code]}"]
    return "\n".join(out)


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(db, prom, findings: list[Finding], code: int, notes: list[str]) -> str:
    out = [f"# Diagnose report: {db.target}", "",
           f"PostgreSQL {db.server_version}, collected {db.collected_at:%Y-%m-%d %H:%M:%S %Z} by "
           "`make diagnose` (read-only).", "", "## Findings", ""]
    ranked = [f for f in findings if f.severity != "info"]
    if not ranked:
        out.append("No findings: the database looks healthy.")
    for i, f in enumerate(ranked, 1):
        out.append(f"{i}. **{f.severity}** — {_md_cell(f.title)}  ")
        if f.detail:
            out.append(f"   {_md_cell(f.detail)}")
        if f.action and f.action_is_sql:
            out += ["", "   ```sql", *[f"   {line}" for line in f.action.splitlines()], "   ```"]
        elif f.action:
            out.append(f"   Next: {_md_cell(f.action)}")
    for title, header, rows in _sections(db, prom):
        out += ["", f"## {title}", ""]
        if not rows:
            out.append(f"{_empty(db, title).capitalize()}.")
            continue
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
    all_notes = _notes(db, prom, notes)
    if all_notes:
        out += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in all_notes]
    out += ["", f"Exit code {code}: {VERDICT[code]}.", ""]
    return "\n".join(out)


def render_json(db, prom, findings: list[Finding], code: int, notes: list[str]) -> str:
    def default(o):
        return o.isoformat() if hasattr(o, "isoformat") else str(o)
    doc = {
        "target": db.target, "server_version": db.server_version, "database": db.database,
        "collected_at": db.collected_at, "exit_code": code,
        "findings": [asdict(f) for f in findings],
        "evidence": {
            "max_connections": db.max_connections, "superuser_reserved_connections": db.reserved_connections,
            "connections": [asdict(c) for c in db.connections],
            "statements": [{**asdict(s), "mean_exec_seconds": s.mean_exec_seconds, **_recent_json(db, s)}
                           for s in db.statements],
            "statement_sample_seconds": db.sample_seconds,
            "tables": [asdict(t) for t in db.tables],
            "index_suggestions": [asdict(s) for s in db.suggestions],
            "lock_waiters": [asdict(w) for w in db.lock_waiters],
            "root_blockers": [{**asdict(r.session), "lock": asdict(r.lock) if r.lock else None,
                               "queued_pids": [w.pid for w in r.queued], "statement": db.lock_texts.get(
                                   r.session.query_id)} for r in db.root_blockers],
            "advisor_blind": {str(qid): asdict(b) for qid, b in db.blind_statements.items()},
            "long_transactions": [asdict(t) for t in db.transactions],
            "latest_migration": asdict(db.migration) if db.migration else None,
            "prometheus": asdict(prom) if prom else None,
        },
        "notes": _notes(db, prom, notes),
    }
    return json.dumps(doc, indent=2, default=default)


def _recent_json(db: DatabaseEvidence, s) -> dict:
    recent = db.recent.get(window.key(s))
    return {"recent_calls": recent.calls if recent else 0,
            "recent_mean_exec_seconds": recent.mean_seconds if recent else None}


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
