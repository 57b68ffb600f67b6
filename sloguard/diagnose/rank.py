"""Evidence -> ranked findings. critical/warning findings make the exit code 1; info is context only.

Rank: severity first, then a per-kind weight (the actionable cause before its symptoms), then size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sloguard.diagnose.collect import DatabaseEvidence, is_ddl_text
from sloguard.diagnose.prom import PrometheusEvidence
from sloguard.diagnose.thresholds import Thresholds
from sloguard.pginsight import advisor, blind

SEVERITIES = ("critical", "warning", "info")
# The missing index is the cause; slow statements, seq scans and the pool are what it causes. A lock queue's root
# blocker comes first: while it holds, everything queued behind it (and the alerts) follows from it.
KIND_WEIGHT = {"lock_blocker": 110, "alert": 100, "pool": 95, "connections": 90, "missing_index": 85,
               "slow_statement": 70, "seq_scan": 60, "long_transaction": 50, "burn_rate": 40, "migration": 10}
PGHERO_INDEX_SHARE = 0.95    # a large table whose scans are < 95% index scans is "read by seq scans"
SLOW_MIN_CALLS = 20          # one-off statements (seeding, ANALYZE, a migration) are not the app's hot path


@dataclass
class Finding:
    kind: str
    severity: str
    title: str                 # one line, names the object (table, statement, pid)
    detail: str = ""
    action: str = ""           # what to run or check next
    score: float = 0.0         # size within the same kind (seconds, rows, ratio)
    data: dict = field(default_factory=dict)
    action_is_sql: bool = False   # markdown puts it in a ```sql block

    def sort_key(self) -> tuple:
        return (SEVERITIES.index(self.severity), -KIND_WEIGHT.get(self.kind, 0), -self.score)


def build_sql(sug: advisor.IndexSuggestion) -> str:
    """The exact statements to run, one per line: no lock timeout, no statement timeout, CONCURRENTLY, then a check
    that fails loudly on an INVALID index (see pginsight.advisor.safe_build_statements for why)."""
    return "\n".join(advisor.safe_build_statements(sug.schemaname, sug.relname, tuple(sug.columns)))


def _short(sql: str | None, width: int = 160) -> str:
    text = " ".join((sql or "(text not available)").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def connection_findings(db: DatabaseEvidence, th: Thresholds) -> list[Finding]:
    usable = max(db.max_connections - db.reserved_connections, 1)
    used = sum(c.count for c in db.connections)
    ratio = used / usable
    waiting = sum(c.count for c in db.connections if c.wait_event_type == "Lock")
    sev = "critical" if ratio >= 0.95 else "warning" if ratio >= th.connections_ratio else "info"
    return [Finding("connections", sev, f"PostgreSQL connections {used}/{usable} ({ratio:.0%} of usable)",
                    f"max_connections={db.max_connections}, superuser_reserved={db.reserved_connections}, "
                    f"waiting on locks: {waiting}; alert threshold {th.connections_ratio:.0%}",
                    "find who holds them: pg_stat_activity by application_name and state" if sev != "info" else "",
                    ratio, {"used": used, "usable": usable, "ratio": ratio})]


def _waits_on_lock(db: DatabaseEvidence, queryid: int) -> bool:
    """Its sessions queue on a lock now, or it reads a table locked exclusively: a lock, not an index, slows it."""
    b = db.blind_statements.get(queryid)
    return queryid in db.queued_query_ids or (b is not None and b.reason == blind.TABLE_LOCKED)


def statement_findings(db: DatabaseEvidence, th: Thresholds) -> list[Finding]:
    out = []
    roots = ", ".join(str(r.pid) for r in db.root_blockers[:3])
    for s in db.statements:
        # judged on the calls of the sample window when it ran in it: a cheap history must not hide it
        mean, recent = db.mean_now(s)
        if mean >= th.slow_mean_seconds and s.calls >= SLOW_MIN_CALLS:
            when = (f"over the last {db.sample_seconds:.0f} s ({recent.calls} calls)" if recent
                    else "since the statistics were reset")
            out.append(Finding(
                "slow_statement", "warning", f"slow statement {s.queryid}: mean {mean * 1000:.0f} ms {when}",
                f"{_short(s.query)} — {s.calls} calls, {s.total_exec_seconds:.1f} s total, mean since reset "
                f"{s.mean_exec_seconds * 1000:.0f} ms, max {s.max_exec_seconds * 1000:.0f} ms "
                f"(threshold {th.slow_mean_seconds * 1000:.0f} ms)",
                (f"it waits on a lock (root blocker pid {roots or '?'}: see the lock finding), not on a missing index"
                 if _waits_on_lock(db, s.queryid) else "see the candidate index below, or EXPLAIN (ANALYZE, BUFFERS) it"),
                s.total_exec_seconds, {"queryid": s.queryid, "mean_seconds": mean, "recent": recent is not None,
                                       "waits_on_lock": _waits_on_lock(db, s.queryid)}))
    return out


def table_findings(db: DatabaseEvidence, th: Thresholds) -> list[Finding]:
    out = []
    locked = {r.lock.relation for r in db.root_blockers if r.lock and r.lock.relation} | {
        t for b in db.blind_statements.values() if b.reason == blind.TABLE_LOCKED for t in b.table_names}
    for t in db.tables:
        scans = t.seq_scan + t.idx_scan
        # at least one full table's worth of rows read sequentially: a scan that found the table empty is no sign
        if (t.live_rows < th.min_live_rows or t.seq_tup_read < t.live_rows
                or t.idx_scan / max(scans, 1) >= PGHERO_INDEX_SHARE):
            continue
        out.append(Finding(
            "seq_scan", "warning", f"large table {t.schemaname}.{t.relname} read by sequential scans",
            f"{t.live_rows:,} live rows, {t.seq_scan:,} seq scans read {t.seq_tup_read:,} rows, "
            f"{t.idx_scan:,} index scans ({t.idx_scan / max(scans, 1):.0%} of scans)",
            ("locked now (see the lock finding): its statements were not planned, re-run diagnose once the lock "
             "is gone" if f"{t.schemaname}.{t.relname}" in locked else
             "see the candidate index for the statements filtering this table"), float(t.seq_tup_read),
            {"table": f"{t.schemaname}.{t.relname}"}))
    return out


def index_findings(db: DatabaseEvidence) -> list[Finding]:
    texts = {s.queryid: s for s in db.statements}
    out = []
    for sug in db.suggestions:
        stmt = texts.get(sug.queryid)
        cost = (f"plan cost {sug.cost_before:,.0f} -> {sug.cost_after:,.2f} with HypoPG"
                if sug.verified and sug.cost_after is not None else f"plan cost {sug.cost_before:,.0f}, "
                "unverified (no HypoPG)")
        detail = f"{cost}; statement {sug.queryid}: {_short(stmt.query if stmt else None)}"
        if stmt:
            mean, recent = db.mean_now(stmt)
            detail += f" ({stmt.calls} calls, mean {mean * 1000:.1f} ms{' recently' if recent else ''})"
        gain = sug.cost_before / max(sug.cost_after or sug.cost_before, 0.01)
        out.append(Finding("missing_index", "warning",
                           f"missing index on {sug.schemaname}.{sug.relname} ({', '.join(sug.columns)})",
                           detail, build_sql(sug), gain,
                           {"table": f"{sug.schemaname}.{sug.relname}", "columns": list(sug.columns),
                            "queryid": sug.queryid, "verified": sug.verified, "cost_before": sug.cost_before,
                            "cost_after": sug.cost_after, "ddl": build_sql(sug),
                            "index": f"{sug.schemaname}.{advisor.index_name(sug.relname, tuple(sug.columns))}"},
                           action_is_sql=True))
    return out


def lock_findings(db: DatabaseEvidence, th: Thresholds) -> list[Finding]:
    """One finding per root blocker (pginsight.lockqueue): the session its queue waits for, what it runs, and the
    advice in order: cancel an active blocker, terminate only an idle-in-transaction one, re-run the DDL with a lock
    timeout and retries. The waiters themselves are evidence (Lock waits), not findings."""
    out = []
    for root in db.root_blockers:
        s = root.session
        ddl = [x for x in (s, *root.queued) if db.is_ddl(x)]
        longest = root.longest_wait_seconds
        sev = ("critical" if root.waiters >= th.lock_waiting_sessions or (ddl and longest >= 1)
               else "warning" if longest >= 1 else "info")
        lock = root.lock
        held = f"holds {lock.mode} on {lock.relation or lock.locktype}" if lock else "holds the lock they need"
        title = (f"lock queue: {root.waiters} session(s) wait behind pid {s.pid} ({s.state or s.backend_type}, "
                 f"{root.age_seconds:.0f} s){'; DDL in the chain' if ddl else ''}")
        detail = (f"pid {s.pid} ({s.user or '-'}, {s.application or 'no application_name'}) {held}; its statement "
                  f"(queryid {s.query_id if s.query_id is not None else '-'}): {_statement(db, s)}; "
                  f"longest wait {longest:.0f} s; queued: {', '.join(str(w.pid) for w in root.queued[:10])}"
                  f"{' ...' if root.waiters > 10 else ''}")
        waiting_ddl = [x for x in root.waiting_ddl if x.pid != s.pid]
        if waiting_ddl:
            w = waiting_ddl[0]
            detail += (f"; the queue forms behind DDL pid {w.pid}, waiting for {w.wants.mode if w.wants else 'a lock'}:"
                       f" {_statement(db, w)}")
        out.append(Finding(
            "lock_blocker", sev, title, detail, _lock_advice(db, root, ddl), float(root.waiters),
            {"pid": s.pid, "state": s.state, "age_seconds": root.age_seconds, "waiters": root.waiters,
             "queued_pids": [w.pid for w in root.queued], "query_id": s.query_id,
             "statement": db.lock_texts.get(s.query_id), "mode": lock.mode if lock else None,
             "relation": lock.relation if lock else None, "ddl_in_chain": bool(ddl),
             "ddl_pids": [x.pid for x in ddl], "longest_wait_seconds": longest},
            action_is_sql=True))
    return out


def _statement(db: DatabaseEvidence, s) -> str:
    text = db.lock_texts.get(s.query_id) if s.query_id is not None else None
    return _short(text, 120) if text else "(text not in pg_stat_statements)"


def _lock_advice(db: DatabaseEvidence, root, ddl: list) -> str:
    s = root.session
    lines = []
    for w in root.waiting_ddl:   # active, and what the queue is directly behind: cancelling it frees the queue
        lines += [f"-- DDL pid {w.pid} waits for {w.wants.mode if w.wants else 'a lock'} and everyone queues behind "
                  "it: cancel it first (nothing is lost; re-run it below)", f"SELECT pg_cancel_backend({w.pid});"]
    if root.idle_in_transaction:
        lines += [f"-- pid {s.pid} is {s.state} for {s.state_seconds or 0:.0f} s: a cancel does nothing; end its "
                  "session (its transaction rolls back)", f"SELECT pg_terminate_backend({s.pid});"]
    else:
        lines += [f"-- pid {s.pid} is {s.state or 'running'}: cancel its statement (the session stays; do not "
                  "terminate an active session)", f"SELECT pg_cancel_backend({s.pid});"]
    if ddl:
        text = next((db.lock_texts.get(x.query_id) for x in ddl if is_ddl_text(db.lock_texts.get(x.query_id))), None)
        lines += ["-- then re-run the DDL with a lock timeout, retrying after a pause while it gives up "
                  "(\"canceling statement due to lock timeout\")", "SET lock_timeout = '5s';",
                  (" ".join(text.split()).rstrip(";") + ";") if text else "-- <the DDL statement>;"]
    return "\n".join(lines)


def transaction_findings(db: DatabaseEvidence, th: Thresholds) -> list[Finding]:
    return [Finding("long_transaction", "warning", f"transaction open for {t.age_seconds:.0f} s in {t.datname}",
                    f"{t.open_transactions} open transaction(s); threshold {th.long_transaction_seconds:.0f} s",
                    "pg_stat_activity WHERE xact_start < now() - interval '5 minutes': commit or terminate",
                    t.age_seconds, {"age_seconds": t.age_seconds})
            for t in db.transactions if t.age_seconds >= th.long_transaction_seconds]


def migration_findings(db: DatabaseEvidence) -> list[Finding]:
    if db.migration is None:
        return []
    m = db.migration
    ago = (db.collected_at - m.applied_at).total_seconds() if db.collected_at else None
    when = f" ({ago / 60:.0f} min before this report)" if ago is not None and ago >= 0 else ""
    return [Finding("migration", "info", f"latest migration {m.version} applied {m.applied_at:%Y-%m-%d %H:%M:%S %Z}"
                    f"{when}", "a regression that started right after it points at it", "",
                    0.0, {"version": m.version, "applied_at": m.applied_at.isoformat()})]


# labels that tell two firings of one alert apart (burn-rate window pairs, tables, statements)
_DETAIL_LABELS = ("burn_window", "relname", "queryid", "datname")


def _alert_detail(labels: dict[str, str]) -> str:
    shown = [f"{k}={labels[k]}" for k in _DETAIL_LABELS if labels.get(k)]
    return f" ({', '.join(shown)})" if shown else ""


def prometheus_findings(prom: PrometheusEvidence | None, th: Thresholds) -> list[Finding]:
    if prom is None or prom.error:
        return []
    out = [Finding("alert", "critical" if a.severity == "critical" else "warning" if a.severity == "warning"
                   else "info", f"alert {a.name}{_alert_detail(a.labels)} firing since {a.active_since}",
                   a.summary, "", 0.0,
                   {"labels": a.labels}) for a in prom.alerts]
    for b in prom.burn_rates:
        burn = round(b.burn_rate, 6)   # 0.0144 / 0.001 is 14.399999999999999 in floats
        sev = "critical" if burn >= round(th.page_burn_rate, 6) else "warning" if burn >= 1 else "info"
        out.append(Finding("burn_rate", sev, f"SLO {b.slo} burning its error budget at {b.burn_rate:.1f}x",
                           f"5m error ratio {b.error_ratio_5m:.4f}, budget {b.error_budget:.4f}", "", b.burn_rate,
                           {"slo": b.slo, "burn_rate": b.burn_rate}))
    if prom.pool_in_use is not None and prom.pool_max:
        ratio = prom.pool_in_use / prom.pool_max
        waiting = prom.pool_waiting or 0
        sev = "critical" if ratio >= th.pool_ratio or waiting > th.pool_max_waiting else "info"
        out.append(Finding("pool", sev, f"application pool {prom.pool_in_use:.0f}/{prom.pool_max:.0f} in use "
                           f"({ratio:.0%}), {waiting:.0f} waiting", f"threshold {th.pool_ratio:.0%}, "
                           f"max waiting {th.pool_max_waiting:g}", "", ratio, {"ratio": ratio, "waiting": waiting}))
    return out


def rank(db: DatabaseEvidence, prom: PrometheusEvidence | None, th: Thresholds) -> list[Finding]:
    found = (connection_findings(db, th) + statement_findings(db, th) + table_findings(db, th)
             + index_findings(db) + lock_findings(db, th) + transaction_findings(db, th) + migration_findings(db)
             + prometheus_findings(prom, th))
    return sorted(found, key=Finding.sort_key)


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.severity in ("critical", "warning") for f in findings) else 0
