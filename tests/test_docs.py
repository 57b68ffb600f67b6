"""Checks that keep the incident documents true: runbook anchors and SQL, action-item artefacts, impact maths.

The runbook is linked from every generated alert, the post-mortem's numbers are recomputed from the incident
record's inputs, and every artefact an action item names must exist in the repository.
"""
from __future__ import annotations

import ast
import datetime as dt
import glob
import importlib.util
import json
import operator
import os
import re
import subprocess
from urllib.parse import urlparse

import pglast
import psycopg
import pytest
import yaml

from sloguard import names
from sloguard.pgcluster import PG_BIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNBOOK = os.path.join(ROOT, names.RUNBOOK_PATH)
POST_MORTEM = os.path.join(ROOT, "post-mortem-2024-01-15.md")
PREVENTION = os.path.join(ROOT, "docs", "prevention.md")
ANALYSIS = os.path.join(ROOT, "docs", "analysis")
PLANS_JSON = os.path.join(ANALYSIS, "plans-pg15.json")
CIC_JSON = os.path.join(ANALYSIS, "cic-pg15.json")
# the post-mortem's appendices: impact figures, detection, five whys, database analysis
IMPACT, DETECTION, ROOT_CAUSES, DATABASE = (os.path.join(ANALYSIS, f"{n}.md")
                                            for n in ("impact", "detection", "root-causes", "database"))
APPENDICES = (IMPACT, DETECTION, ROOT_CAUSES, DATABASE)
SCENARIO = os.path.join(ROOT, "..", "shared", "seed", "incident-2024-01-15-scenario.md")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def strip_fences(md: str) -> str:
    """Markdown without fenced code blocks (headings and links inside code do not count)."""
    return re.sub(r"^[ \t]*```.*?^[ \t]*```", "", md, flags=re.S | re.M)


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation except '-' and '_' removed, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(.+?)[`*_]{1,2}", r"\1", heading.strip())  # inline formatting keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(md: str) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", strip_fences(md), flags=re.M):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    found.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', md))
    return found


def sections(md: str) -> dict[str, str]:
    """'## ' sections by anchor."""
    parts = re.split(r"^## (.+)$", strip_fences(md), flags=re.M)
    return {github_slug(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def md_table_after(md: str, marker: str) -> list[list[str]]:
    """Rows (cells stripped) of the first markdown table after `marker`, header and rule excluded."""
    rest = md[md.index(marker):]
    lines = rest.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[2:]


# --------------------------------------------------------------------------------------------- runbook

def test_every_alert_anchor_exists_in_runbook():
    have = anchors(read(RUNBOOK))
    missing = {alert: anchor for alert, anchor in names.ALERT_ANCHORS.items() if anchor not in have}
    assert not missing, f"{names.RUNBOOK_PATH} lacks a heading for: {missing} (have {sorted(have)})"


def generated_runbook_urls() -> dict[str, set[str]]:
    urls: dict[str, set[str]] = {}

    def walk(node, alert=None):
        if isinstance(node, dict):
            alert = node.get("alert", alert)
            for key, value in node.items():
                if key == "runbook_url":
                    urls.setdefault(value, set()).add(alert)
                else:
                    walk(value, alert)
        elif isinstance(node, list):
            for item in node:
                walk(item, alert)

    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "**", "*.y*ml"), recursive=True)):
        for doc in yaml.safe_load_all(read(path)):
            walk(doc)
    return urls


def test_generated_runbook_urls_point_at_existing_anchors():
    urls = generated_runbook_urls()
    assert urls, "no runbook_url found under alerts/: run `make generate`"
    have = anchors(read(RUNBOOK))
    for url, alerts in urls.items():
        parsed = urlparse(url)
        assert parsed.path.endswith(names.RUNBOOK_PATH), f"{url} (alerts {alerts}) is not {names.RUNBOOK_PATH}"
        assert parsed.fragment in have, f"{url}: anchor #{parsed.fragment} missing in {names.RUNBOOK_PATH}"
        for alert in alerts:
            assert parsed.fragment == names.runbook_anchor(alert), f"{alert} links #{parsed.fragment}"


def test_internal_links_resolve():
    runbook_anchors = anchors(read(RUNBOOK))
    for path in (RUNBOOK, POST_MORTEM, PREVENTION, *APPENDICES):
        md = read(path)
        own = anchors(md)
        for target in re.findall(r"\]\(#([^)]+)\)", md):
            assert target in own, f"{os.path.relpath(path, ROOT)}: link to #{target} has no heading"
        for target in re.findall(r"high-latency-response\.md#([\w-]+)", md):
            assert target in runbook_anchors, f"{os.path.relpath(path, ROOT)}: runbook has no #{target}"
        for rel in re.findall(r"\]\((?!https?:|#)([^)#]+)", md):
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), rel))
            assert os.path.exists(resolved), f"{os.path.relpath(path, ROOT)}: link {rel} points nowhere"


@pytest.mark.parametrize("anchor", sorted(set(names.ALERT_ANCHORS.values())))
def test_runbook_section_is_complete(anchor):
    body = sections(read(RUNBOOK))[anchor]
    for part in ("**Symptoms.**", "**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation",
                 "**Verification.**", "**Escalation.**"):
        assert part in body, f"section #{anchor} lacks {part}"
    for alert, target in names.ALERT_ANCHORS.items():
        if target == anchor and alert != "ErrorBudgetBurn":
            assert f"`{alert}`" in body, f"section #{anchor} does not name its alert {alert}"


def sql_blocks(md: str) -> list[str]:
    # fences may be indented inside list items
    blocks = re.findall(r"^[ \t]*```sql\n(.*?)^[ \t]*```", md, flags=re.S | re.M)
    # psql meta-commands (\x, \watch ...) are not SQL
    return ["\n".join(line for line in b.splitlines() if not line.lstrip().startswith("\\")) for b in blocks]


def test_runbook_has_the_safe_statements():
    sql = "\n".join(sql_blocks(read(RUNBOOK)))
    # no IF NOT EXISTS on the index build: it would pass silently over an INVALID index left by a failed build
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" not in sql
    for needed in ("SET lock_timeout = '5s'", "SET lock_timeout = 0", "SET statement_timeout = 0",
                   "CREATE INDEX CONCURRENTLY users_email_idx", "indisvalid FROM pg_index",
                   "pg_stat_progress_create_index", "NOT indisvalid", "DROP INDEX CONCURRENTLY",
                   "pg_cancel_backend", "pg_terminate_backend", "max_connections", "DROP COLUMN",
                   "hypopg_create_index", "pg_blocking_pids"):
        assert needed in sql, f"no ```sql block in the runbook contains {needed!r}"


@pytest.mark.parametrize("index", range(len(sql_blocks(read(RUNBOOK)))))
def test_runbook_sql_parses(index):
    block = sql_blocks(read(RUNBOOK))[index]
    try:
        statements = pglast.parse_sql(block)
    except pglast.parser.ParseError as e:
        pytest.fail(f"```sql block #{index + 1} of {names.RUNBOOK_PATH} does not parse: {e}\n{block}")
    assert statements, f"```sql block #{index + 1} is empty"


def test_runbook_names_only_real_metrics_and_rules(rendered):
    """Recording rules as generated for the incident's API spec (test-owned): the user's windows may differ."""
    md = read(RUNBOOK)
    unknown = sorted(set(re.findall(rf"\b{names.PREFIX}_\w+", md)) - set(names.EXPORTER_METRICS))
    assert not unknown, f"{names.RUNBOOK_PATH} names metrics the exporter does not expose: {unknown}"
    records = set()
    for path, text in rendered.items():
        if path.startswith("alerts/") and "kubernetes" not in path:
            for group in (yaml.safe_load(text) or {}).get("groups", []):
                records.update(r["record"] for r in group["rules"] if "record" in r)
    used = set(re.findall(r"\b(?:slo|sloguard):[\w:]+", md))
    assert used - records == set(), f"recording rules named in the runbook but not generated: {used - records}"


def test_runbook_panel_titles_exist(rendered):
    """Against the dashboards of the incident's API spec (test-owned): the runbook is that service's, and the
    user's slo.yaml may name its SLOs differently."""
    titles = set()

    def walk(panels):
        for p in panels:
            titles.add(p.get("title"))
            walk(p.get("panels", []))

    for path, text in rendered.items():
        if path.startswith("dashboards/") and path.endswith(".json"):
            walk(json.loads(text).get("panels", []))
    # a title may wrap across lines in the markdown source
    quoted = {re.sub(r"\s+", " ", t) for t in re.findall(r'panel "([^"]+)"', read(RUNBOOK))}
    assert quoted, "the runbook should name dashboard panels as: panel \"<title>\""
    assert titles, "no dashboard generated"
    assert quoted <= titles, f"panels named in the runbook but absent from the dashboards: {sorted(quoted - titles)}"


# --------------------------------------------------------------------------------------------- action items

ROLE_WORDS = ("on-call", "team", "lead", "manager", "role", "rota")


def action_items() -> list[list[str]]:
    return md_table_after(read(POST_MORTEM), "<!-- action-items -->")


def test_action_items_are_complete_and_artefacts_exist():
    rows = action_items()
    assert len(rows) >= 10
    ids = [r[0] for r in rows]
    assert ids == [f"AI-{i}" for i in range(1, len(rows) + 1)], f"ids must be AI-1..AI-n in order: {ids}"
    for ident, _action, owner, priority, deadline, status, artefact in rows:
        assert any(w in owner for w in ROLE_WORDS), f"{ident}: owner {owner!r} is not a role"
        assert priority in ("P0", "P1", "P2"), f"{ident}: priority {priority!r}"
        day = dt.date.fromisoformat(deadline)
        assert dt.date(2024, 1, 15) <= day <= dt.date(2024, 12, 31), f"{ident}: deadline {day} not after the incident"
        assert status in ("done", "open", "in progress"), f"{ident}: status {status!r}"
        paths = re.findall(r"`([^`]+)`", artefact)
        if status == "done":
            assert paths, f"{ident} is done but names no artefact"
        else:
            assert paths or artefact == "planned", f"{ident}: artefact must be paths or 'planned'"
        for p in paths:
            assert os.path.exists(os.path.join(ROOT, p)), f"{ident}: artefact {p} does not exist in the repository"


def test_action_item_references_resolve():
    ids = {r[0] for r in action_items()}
    for path in (POST_MORTEM, RUNBOOK, PREVENTION, *APPENDICES):
        used = set(re.findall(r"\bAI-\d+\b", read(path)))
        assert used <= ids, f"{os.path.relpath(path, ROOT)} cites unknown action items {sorted(used - ids)}"
    prevention = set(re.findall(r"\bAI-\d+\b", read(PREVENTION)))
    assert len(prevention) >= 6, "docs/prevention.md should tie each measure to an action item"


# --------------------------------------------------------------------------------------------- impact maths

# The incident record's inputs (quoted in the post-mortem's inputs table, checked against the record below).
INPUTS = {
    "normal_rps": 900, "incident_rps": 850, "failed": 22500, "timeouts": 67500, "error_rate_at_alert": 0.085,
    "timeout_rate": 0.30, "users": 12000, "users_share": 0.30, "revenue": 8500, "sla_credits": 2300,
    "engineering": 1200, "engineers": 3, "objective_availability": 0.999, "objective_latency": 0.99,
    "slow_share": 0.45, "error_rate_peak": 0.15,
}
START, END, MIGRATION = 14 * 60 + 32, 15 * 60 + 17, 14 * 60 + 31   # minutes of the day, from the record
RECORD_BUDGET_USED, RECORD_BUDGET_MONTH = 43.2, 43.8
CIC_IDLE_KEY = "create_email_index_concurrently_seconds"


def expected_figures(i: dict, cic_idle_s: float) -> dict[str, float]:
    """Independent recomputation of every figure, from the inputs (not from the document's formulas)."""
    minutes = END - START
    b_avail, b_lat = 1 - i["objective_availability"], 1 - i["objective_latency"]
    window_requests = i["normal_rps"] * 86400 * 30
    incident_requests = i["incident_rps"] * minutes * 60
    bad = i["failed"] + i["timeouts"]
    peak_bad = i["error_rate_at_alert"] + i["timeout_rate"]
    timeouts_30 = i["timeout_rate"] * incident_requests
    # the document's definition: bad = 5xx and timeouts (504), at the alert's and at the 14:35 rates
    bad_alert = (i["error_rate_at_alert"] + i["timeout_rate"]) * incident_requests
    bad_peak = (i["error_rate_peak"] + i["timeout_rate"]) * incident_requests
    baseline_bad = 0.001 * window_requests   # the normal 0.1% error rate, over the whole window
    cic_minutes = 15 * 60 + 10 - (14 * 60 + 50)
    workbook = 60 * 14.4  # 1h long window (minutes) x 14.4 page factor for a 30d period
    return {
        "incident_min": minutes,
        "impact_min": END - MIGRATION,
        "budget_min_30d": 30 * 1440 * b_avail,
        "days_for_43_8": RECORD_BUDGET_MONTH / b_avail / 1440,
        "budget_min_month": 365 / 12 * 1440 * b_avail,
        "record_budget_pct": 100 * RECORD_BUDGET_USED / RECORD_BUDGET_MONTH,
        "time_based_pct": 100 * minutes / (30 * 1440 * b_avail),
        "requests_30d": window_requests,
        "request_budget_30d": window_requests * b_avail,
        "bad_requests": bad,
        "bad_pct_of_budget": 100 * bad / (window_requests * b_avail),
        "bad_at_alert_rates": bad_alert,
        "budget_pct_at_alert_rates": 100 * bad_alert / (window_requests * b_avail),
        "avail_at_alert_rates": 100 * (1 - b_avail - bad_alert / window_requests),
        "bad_at_peak_rates": bad_peak,
        "budget_pct_at_peak_rates": 100 * bad_peak / (window_requests * b_avail),
        "avail_at_peak_rates": 100 * (1 - b_avail - bad_peak / window_requests),
        "month_spent_low": 100 * (baseline_bad + bad) / (window_requests * b_avail),
        "month_spent_high": 100 * (baseline_bad + bad_peak) / (window_requests * b_avail),
        "fastest_timed_out_quantile": 100 * (1 - i["timeout_rate"]),
        "incident_requests": incident_requests,
        "bad_ratio_counts": 100 * bad / incident_requests,
        "peak_bad_pct": 100 * peak_bad,
        "peak_minutes_for_counts": bad / (i["incident_rps"] * peak_bad) / 60,
        "bad_for_0_03": 0.0003 * window_requests,
        "timeouts_30pct": timeouts_30,
        "avail_if_30pct": 100 * (1 - b_avail - timeouts_30 / window_requests),
        "budget_pct_if_30pct": 100 * timeouts_30 / (window_requests * b_avail),
        "avail_from_counts": 100 * (1 - b_avail - bad / window_requests),
        "baseline_burn": 0.001 / b_avail,
        "latency_budget": window_requests * b_lat,
        "slow_if_45pct": i["slow_share"] * incident_requests,
        "latency_budget_pct": 100 * i["slow_share"] * incident_requests / (window_requests * b_lat),
        "active_base": i["users"] / i["users_share"],
        "bad_per_user": bad / i["users"],
        "money_total": i["revenue"] + i["sla_credits"] + i["engineering"],
        "eng_hours": i["engineers"] * minutes / 60,
        "eng_rate": i["engineering"] / (i["engineers"] * minutes / 60),
        "revenue_per_user": i["revenue"] / i["users"],
        "pool_throughput": 100 / 30,
        "detect_latency_page": b_lat / i["slow_share"] * workbook,
        "detect_avail_page": b_avail / peak_bad * workbook,
        "detect_avail_errors_only": b_avail / i["error_rate_at_alert"] * workbook,
        "cic_slowdown": cic_minutes * 60 / cic_idle_s,
        "cic_wait_bound_s": 3 * 30,   # three waits, each at most one 30 s login (the application's timeout)
        "cic_wait_share": 100 * 3 * 30 / (cic_minutes * 60),
    }


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str) -> float:
    """Arithmetic only (numbers, + - * /, parentheses): the document's computation column."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")
    return ev(ast.parse(expr, mode="eval"))


def number(text: str) -> tuple[float, int]:
    """'2,332,800' -> (2332800.0, 0 decimals); '98.63' -> (98.63, 2)."""
    clean = text.replace(",", "").strip()
    return float(clean), len(clean.split(".")[1]) if "." in clean else 0


def close(value: float, shown: float, decimals: int) -> bool:
    return abs(value - shown) <= 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(value))


def figure_rows() -> list[list[str]]:
    return md_table_after(read(IMPACT), "Figures (the computation column")


def test_impact_figures_match_their_computation_and_the_inputs():
    with open(PLANS_JSON) as f:
        cic_idle = json.load(f)[CIC_IDLE_KEY]
    expected = expected_figures(INPUTS, cic_idle)
    rows = figure_rows()
    ids = [r[0].strip("`") for r in rows]
    assert sorted(ids) == sorted(expected), f"figures table and test disagree: {set(ids) ^ set(expected)}"
    for ident, _what, computation, shown_text in rows:
        ident = ident.strip("`")
        shown, decimals = number(shown_text)
        from_doc = safe_eval(computation.strip("`"))
        assert close(from_doc, shown, decimals), f"{ident}: {computation} = {from_doc}, table shows {shown_text}"
        assert close(expected[ident], shown, decimals), (
            f"{ident}: recomputed from the inputs = {expected[ident]}, table shows {shown_text}")


def test_prose_figures_match_the_table():
    """Each `[`id`]` citation in the text follows the number it names: that number must equal the table's."""
    table = {r[0].strip("`"): number(r[3]) for r in figure_rows()}
    body = strip_fences(read(POST_MORTEM))
    assert len(re.findall(r"\[`(\w+)`\]", body)) >= 10, "the post-mortem's body should cite its figures"
    md = "\n".join(strip_fences(read(p)) for p in (POST_MORTEM, *APPENDICES))
    citations = list(re.finditer(r"\[`(\w+)`\]", md))
    assert len(citations) >= 40, f"expected the reconciliation to cite its figures, found {len(citations)}"
    for m in citations:
        ident = m.group(1)
        assert ident in table, f"prose cites unknown figure {ident}"
        before = md[max(0, m.start() - 60):m.start()]
        numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", before)
        assert numbers, f"no number before the citation of {ident}"
        value, decimals = number(numbers[-1])
        assert close(table[ident][0], value, decimals), (
            f"prose shows {numbers[-1]} just before [{ident}], the table has {table[ident][0]}: ...{before!r}")


def test_inputs_table_matches_the_record():
    rows = {r[0].strip("`"): r for r in md_table_after(read(IMPACT), "Inputs quoted from the record")}
    for key, value in INPUTS.items():
        assert key in rows, f"input {key} missing from the post-mortem's inputs table"
        assert float(rows[key][1]) == value, f"input {key}: table {rows[key][1]}, test {value}"
    if not os.path.exists(SCENARIO):
        pytest.skip(f"incident record not present at {SCENARIO}; quotes not verified")
    record = re.sub(r"\s+", " ", read(SCENARIO).replace("**", ""))
    for key, row in rows.items():
        for quote in re.findall(r'"([^"]+)"', row[2]):
            assert re.sub(r"\s+", " ", quote) in record, f"input {key}: quote {quote!r} is not in the record"


def test_database_figures_quoted_from_the_measurement():
    with open(PLANS_JSON) as f:
        plans = json.load(f)
    md = read(POST_MORTEM) + read(DATABASE)
    quoted = {
        "login_seqscan_cost": f"{plans['login_seqscan_cost']:,.0f}",
        "login_forced_status_index_cost": f"{plans['login_forced_status_index_cost']:,.0f}",
        "hypopg_email_cost": f"{plans['hypopg_login']['email']['cost']:.2f}",
        "hypopg_email_cost_cut_percent": f"{plans['hypopg_email_cost_cut_percent']:.2f}%",
        CIC_IDLE_KEY: f"{plans[CIC_IDLE_KEY]:.3f}",
    }
    for key, text in quoted.items():
        assert text in md, f"post-mortem should quote {key} = {text} from docs/analysis/plans-pg15.json"
    assert plans["login_with_status_index_nodes"] == plans["login_seqscan_nodes"], "status index changed the plan"
    assert plans["migration_rewrote_table"] is False


# --------------------------------------------------------------------------------------------- measurement script

def load_measure_plans():
    """docs/analysis is not a package: load the script by path."""
    spec = importlib.util.spec_from_file_location(
        "measure_plans", os.path.join(ROOT, "docs", "analysis", "measure_plans.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_plans_script_reproduces_the_plan_shapes(tmp_path):
    """The script the post-mortem quotes still runs and still finds what it says, at a small scale."""
    module = load_measure_plans()
    out = tmp_path / "plans.md"
    assert module.main(["--users", "20000", "--out", str(out)]) == 0
    figures = json.loads((tmp_path / "plans.json").read_text())
    assert "Seq Scan on users" in figures["login_with_status_index_nodes"][-1]
    assert figures["hypopg_login"]["status"]["cost"] == figures["hypopg_login_cost_without"]
    assert figures["hypopg_login"]["email"]["cost"] < 0.5 * figures["hypopg_login_cost_without"]
    assert figures["login_with_email_index_nodes"] == ["Index Scan on users using idx_users_email"]
    assert figures["migration_rewrote_table"] is False and figures["rewrite_changed_filenode"] is True
    assert figures["migration_lock_modes"] == ["AccessExclusiveLock"]
    assert figures["lock_queue_lookup_wait_seconds"] >= 1.0, "a lookup behind the waiting ALTER should queue"
    assert "waiting for writers before build" in figures["cic_phases_seen"]
    assert "## 4. An index on (status)" in out.read_text()


def test_measure_plans_rejects_a_tiny_scale(tmp_path, capsys):
    module = load_measure_plans()
    assert module.main(["--users", "10", "--out", str(tmp_path / "x.md")]) == 2
    assert "--users 10" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


# --------------------------------------------------------------------------------------------- detection

REPLAY = os.path.join(ROOT, "tests", "promtool", "incident-2024-01-15-replay.yml")


def replay_ttd_rows() -> list[tuple[str, ...]]:
    """The time-to-detect table in the replay file's header comment: alert, fires, TTD, resolves, full history."""
    rows = []
    for line in read(REPLAY).splitlines():
        m = re.match(r"^#\s+([A-Z]\w+.*?)\s+(\d\d:\d\d)\s+(\d+ min)\s+(\d\d:\d\d)\s+(.+?)\s*$", line)
        if m:
            rows.append((re.sub(r"\s+", " ", m.group(1)), *m.groups()[1:]))
    return rows


def test_detection_table_matches_the_replay_file():
    replay = replay_ttd_rows()
    assert len(replay) >= 10, f"no time-to-detect table found in the header of {os.path.relpath(REPLAY, ROOT)}"
    quoted = [tuple(re.sub(r"\s+", " ", c.replace("`", "")) for c in row)
              for row in md_table_after(read(DETECTION), "<!-- replay-ttd")]
    assert quoted == replay, (
        "docs/analysis/detection.md must quote the replay's time-to-detect table verbatim; differences: "
        f"{sorted(set(quoted) ^ set(replay))}")
    # the replay must also assert these alerts: every alert in the table appears in an alert_rule_test
    tested = set(re.findall(r"alertname:\s*(\w+)", read(REPLAY)))
    assert {row[0].split()[0] for row in replay} <= tested


def load_analysis_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "docs", "analysis", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cic_script_measures_the_waits_on_small_data(tmp_path):
    """The CIC experiment still shows what the post-mortem's lesson rests on, on 20k rows and short holds."""
    module = load_analysis_script("measure_cic")
    out = tmp_path / "cic.md"
    assert module.main(["--users", "20000", "--hold", "1.5", "--every", "0.3", "--select-seconds", "2.5",
                        "--readers", "2", "--shed-readers", "1", "--out", str(out)]) == 0
    res = json.loads((tmp_path / "cic.json").read_text())["scenarios"]
    assert set(res) == set(module.SCENARIOS)
    assert all(r["valid"] for r in res.values()), "every build must end with a valid index"
    assert not any(r["load_errors"] for r in res.values()), res
    writers = {p["phase"]: p for p in res["writers"]["phases"]}
    # writers kept arriving during the build, yet it ended: a wait covers only the writers present at its start
    assert res["writers"]["started_during_build"] >= 3
    assert "waiting for writers before build" in writers and writers["waiting for writers before build"]["max_lockers"] >= 1
    assert max(p["seconds"] for p in res["writers"]["phases"] if p["phase"] in module.WAIT_PHASES) < 3 * 1.5
    # a read-only SELECT delays only the final snapshot wait, never the waits for writers
    select = {p["phase"]: p for p in res["long_select"]["phases"]}
    assert select["waiting for old snapshots"]["seconds"] >= 1.0
    writers_wait = sum(p["seconds"] for p in res["long_select"]["phases"] if p["phase"].startswith("waiting for writers"))
    assert writers_wait < 0.25 * select["waiting for old snapshots"]["seconds"], res["long_select"]["phases"]
    # every scanning session was signalled (a scan of 20k rows may have ended before the signal arrived)
    assert res["load_cancelled"]["cancel_signals"] == res["load_cancelled"]["reader_sessions"] == 2
    assert "## What the measurements say" in out.read_text()


def test_cic_script_rejects_writers_that_do_not_overlap(tmp_path, capsys):
    module = load_analysis_script("measure_cic")
    assert module.main(["--users", "20000", "--hold", "1", "--every", "2", "--out", str(tmp_path / "x.md")]) == 2
    assert "--every 2.0 --hold 1.0" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_cached_plan_script_reproduces_the_error(tmp_path):
    module = load_analysis_script("measure_cached_plan")
    assert module.main(["--out", str(tmp_path / "cp.md")]) == 0
    res = json.loads((tmp_path / "cp.json").read_text())
    assert res["before"]["star"].startswith("ok")
    assert "cached plan must not change result type" in res["after_migration"]["star"]
    assert "cached plan must not change result type" in res["after_migration_again"]["star"]
    assert res["after_migration"]["columns"].startswith("ok"), "an explicit column list is not affected"
    assert res["after_prepare_again"]["star"] == "ok, 1 row of 6 columns"
    assert len(res["queryids_of_star_statement"]) == 2, "ADD COLUMN changes the SELECT * statement's queryid"


# --------------------------------------------------------------------------------------------- fix migrations

def index_migrations() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "migrations", "*.sql"))
                  if re.search(r"CREATE\s+INDEX", read(p), flags=re.I))


def test_indexes_come_in_their_own_dated_migrations_not_in_the_applied_initial_schema():
    """Production applied 20240101 before the incident: a fix added to it would never run there."""
    assert not re.search(r"CREATE\s+INDEX", read(os.path.join(ROOT, "migrations", "20240101_initial_schema.sql")),
                         flags=re.I)
    assert "20240116_add_orders_user_id_index.sql" in index_migrations()


@pytest.mark.parametrize("name", index_migrations())
def test_index_migration_uses_the_safe_build_and_stops_on_an_invalid_leftover(name, pg_cluster):
    """The pattern the documents prescribe: CONCURRENTLY, no IF NOT EXISTS, lock_timeout 0, indisvalid checked;
    behaviour: over an INVALID index left by a failed build it stops naming the drop, and after the drop it works."""
    path = os.path.join(ROOT, "migrations", name)
    sql = read(path)
    build = re.search(r"^CREATE INDEX CONCURRENTLY (\w+) ON (\w+) \((\w+)\);$", sql, flags=re.M)
    assert build, f"{name}: expected one `CREATE INDEX CONCURRENTLY <name> ON <table> (<column>);`"
    index, table, column = build.groups()
    assert "IF NOT EXISTS" not in sql.split("CREATE INDEX", 1)[1].split(";")[0]
    assert sql.index("SET lock_timeout = 0;") < build.start()
    db = f"docs_{index}"
    with pg_cluster.database(db):
        pg_cluster.psql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, {column} bigint NOT NULL); "
                        f"INSERT INTO {table} SELECT g, g FROM generate_series(1, 2000) g", db)
        dsn = pg_cluster.dsn(db)
        with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as builder:
            writer.execute(f"UPDATE {table} SET {column} = {column} WHERE id = 1")   # an open writer
            builder.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                builder.execute(f"CREATE INDEX CONCURRENTLY {index} ON {table} ({column})")
            writer.rollback()
        psql = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", path]
        proc = subprocess.run(psql, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and f"DROP INDEX CONCURRENTLY {index}" in proc.stderr, proc.stderr
        pg_cluster.psql(f"DROP INDEX CONCURRENTLY {index}", db)
        proc = subprocess.run(psql, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert pg_cluster.psql(f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{index}'::regclass", db) == "t"


# --------------------------------------------------------------------------------------------- length and consistency

MAX_POST_MORTEM_WORDS = 3000


def words(md: str) -> int:
    return len(md.split())


def test_post_mortem_body_fits_the_word_budget():
    """The whole file, tables and résumé included: details belong in the docs/analysis appendices."""
    n = words(read(POST_MORTEM))
    assert n <= MAX_POST_MORTEM_WORDS, f"post-mortem is {n} words; move details to docs/analysis/ (max {MAX_POST_MORTEM_WORDS})"


def test_post_mortem_opens_with_a_french_resume_and_a_one_screen_summary():
    md = read(POST_MORTEM)
    secs = sections(md)
    order = [github_slug(h) for h in re.findall(r"^## (.+)$", strip_fences(md), flags=re.M)]
    assert order[:2] == ["résumé-français", "summary-read-this-in-a-minute"], order
    resume = secs["résumé-français"]
    assert sum(resume.count(w) for w in (" le ", " la ", " les ", " des ", " est ")) >= 10, "the résumé is not French"
    summary = secs["summary-read-this-in-a-minute"]
    assert words(summary) <= 300, "the summary should fit on one screen"
    # what a VP must learn from it: the index built during the incident, the spent baseline, what is open
    assert "`status`" in summary and "baseline_burn" in summary and "open" in summary.lower()


def test_severity_follows_the_runbooks_rule():
    """The runbook's SEV rule, applied to the record's error ratio, gives the post-mortem's severity."""
    rule = re.search(r"\*\*SEV-1\*\* if the error ratio is above (\d+)%", read(RUNBOOK))
    assert rule, "the runbook's escalation table should state the SEV-1 error-ratio threshold"
    expected = "SEV-1" if 100 * INPUTS["error_rate_at_alert"] > float(rule.group(1)) else "SEV-2"
    header = re.search(r"^\| Incident \| \*\*(SEV-\d)\*\*", read(POST_MORTEM), flags=re.M)
    assert header and header.group(1) == expected


def test_no_document_says_an_alert_resolves_after_its_for():
    """`for:` only delays firing; an alert resolves at the first evaluation where its condition is false."""
    wrong = re.compile(r"resolves?\s+\d+\s*min(?:utes)?\s+(?:later|after)|\(its\s+`for`\)", flags=re.I)
    for path in (RUNBOOK, POST_MORTEM, PREVENTION, *APPENDICES):
        hits = wrong.findall(re.sub(r"\s+", " ", read(path)))
        assert not hits, f"{os.path.relpath(path, ROOT)}: {hits}"


def test_fix_migration_timeouts_are_described_as_they_are_set():
    sql = read(os.path.join(ROOT, "migrations", "20240115_add_users_email_index.sql"))
    assert "SET lock_timeout = 0;" in sql and "SET statement_timeout = 0;" in sql
    for path in (POST_MORTEM, PREVENTION, *APPENDICES):
        text = re.sub(r"\s+", " ", read(path))
        assert "with lock and statement timeouts" not in text, os.path.relpath(path, ROOT)


def test_cic_figures_are_quoted_from_the_measurement():
    with open(CIC_JSON) as f:
        cic = json.load(f)["scenarios"]
    md = read(DATABASE)
    for name in ("idle", "writers", "long_select", "load", "load_cancelled", "load_shed"):
        assert f"| {cic[name]['seconds']} s | {cic[name]['wait_seconds']} s |" in md, (
            f"docs/analysis/database.md should quote scenario {name} from cic-pg15.json")
    # the lesson the documents draw must be what the measurement shows
    assert cic["load_shed"]["seconds"] < cic["load"]["seconds"], "shedding load should shorten the build"
    assert cic["load_cancelled"]["seconds"] > 0.8 * cic["load"]["seconds"], "cancelling once should not help much"
    assert "Shed load first" in read(POST_MORTEM)


def test_the_review_enforcement_prevention_claims_exists():
    """docs/prevention.md says the checklist is in the PR template and CODEOWNERS requests the review."""
    template = read(os.path.join(ROOT, ".github", "pull_request_template.md"))
    why = sections(read(PREVENTION))["1-migration-review-process-ai-9-ai-10"]
    explained = re.findall(r"^- \*\*([^*]+?)\.\*\*", why.split("Why each item is there:")[1], flags=re.M)
    checklist = re.findall(r"^- \[ \] \*\*([^*]+?)\.\*\*", template.split("## Migration checklist")[1], flags=re.M)
    assert len(checklist) >= 8 and sorted(explained) == sorted(checklist), (
        f"prevention explains {explained}, the PR template's migration checklist has {checklist}")
    owners: dict[str, list[str]] = {}
    for line in read(os.path.join(ROOT, ".github", "CODEOWNERS")).splitlines():
        if line.strip() and not line.startswith("#"):
            path, *who = line.split()
            owners[path] = who
            assert who and all(re.fullmatch(r"@[\w-]+/[\w-]+", w) for w in who), (
                f"CODEOWNERS {path}: owners must be teams (@org/team), not people: {who}")
    for path in ("/migrations/", "/queries/"):
        assert owners.get(path) == ["@sloguard/database-platform"], f"{path} must be reviewed by database platform"
    ai10 = next(r for r in action_items() if r[0] == "AI-10")
    assert ai10[5] == "in progress", "required review needs branch protection, outside the repository"


def test_runbook_contents_lists_every_alert():
    rows = md_table_after(read(RUNBOOK), "## Contents")
    listed = set(re.findall(r"`(\w+)`", " ".join(r[0] for r in rows)))
    for alert, anchor in names.ALERT_ANCHORS.items():
        if alert == "ErrorBudgetBurn":
            continue
        row = next((r for r in rows if f"`{alert}`" in r[0]), None)
        assert row, f"the runbook's contents table omits {alert} (listed: {sorted(listed)})"
        assert f"(#{anchor})" in row[1], f"contents: {alert} should link #{anchor}, not {row[1]}"


def replay_ttp_rows() -> list[tuple[str, ...]]:
    """The time-to-page table in the replay file's header: page `for:`, replay, full history."""
    header = read(REPLAY).split("# TIME TO PAGE", 1)[1].split("# END OF TIME TO PAGE", 1)[0]
    rows = []
    for line in header.splitlines():
        m = re.match(r"^#\s+(\d+[smh])\s+(\d\d:\d\d \(\d+ min\))\s+(\d\d:\d\d \(\d+ min\))\s*(<- the spec's)?", line)
        if m:
            rows.append((m.group(1) + (" (the spec's)" if m.group(4) else ""), m.group(2), m.group(3)))
    return rows


def test_post_mortem_time_to_page_matches_the_replay_file():
    replay = replay_ttp_rows()
    assert len(replay) >= 3, f"no time-to-page table in the header of {os.path.relpath(REPLAY, ROOT)}"
    quoted = [tuple(c.replace("`", "") for c in row) for row in md_table_after(read(POST_MORTEM), "<!-- replay-ttp")]
    assert quoted == replay, f"post-mortem section 3 must quote the replay's time-to-page table: {quoted} != {replay}"
    spec = [r for r in replay if "(the spec's)" in r[0]]
    assert len(spec) == 1
    page_minutes = int(re.search(r"\((\d+) min\)", spec[0][1]).group(1))
    assert page_minutes <= 3, "the replay must page within 3 minutes of the migration"
