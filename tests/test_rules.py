"""Rule builders: burn-rate factors from the SLO's own window, dead pairs skipped with a warning, Sloth names,
ratio-of-sums period, robust `le` matching, byte-identical output and --check."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from sloguard import outputs, promql
from sloguard.rules.burn_alerts import build_burn_alerts
from sloguard.rules.groups import MAX_GROUP_RULES, build_groups
from sloguard.rules.slo_recording import PERIOD_STEP, build_period_recordings, build_slo_recordings
from sloguard.spec import parse_spec
from sloguard.writer import diff_tree, write_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATE = os.path.join(ROOT, "generate.py")


def spec_text(window: str = "30d", objective: float = 99.9, extra_slo: str = "") -> str:
    return f"""\
service: shop
links: {{runbook: "https://example.com/rb.md", grafana: "https://grafana.example.com/"}}
slos:
  - name: checkout-availability
    objective: {objective}
    window: {window}
    sli:
      events: {{total: 'http_requests_total{{job="shop"}}', errors: 'http_requests_total{{job="shop",code=~"5.."}}'}}
{extra_slo}
database:
  latency_p99: {{metric: 'http_request_duration_seconds{{job="shop"}}'}}
  pool: {{in_use: 'pool_in_use{{job="shop"}}', max: 'pool_max{{job="shop"}}', waiting: 'pool_waiting{{job="shop"}}'}}
"""


def burn_thresholds(text: str) -> dict[str, str]:
    """burn_window -> the '(factor * budget)' text of each generated burn-rate alert."""
    spec = parse_spec(text)
    rules, _ = build_burn_alerts(spec, spec.slos[0])
    return {r["labels"]["burn_window"]: re.search(r"> \(([^)]*)\)", r["expr"]).group(1) for r in rules}


def test_factors_for_30d_window_are_the_workbook_ones():
    assert burn_thresholds(spec_text("30d")) == {
        "1h/5m": "14.4 * 0.001", "6h/30m": "6 * 0.001", "1d/2h": "3 * 0.001", "3d/6h": "1 * 0.001"}


def test_factors_for_28d_window_are_derived_not_hard_coded():
    assert burn_thresholds(spec_text("28d")) == {
        "1h/5m": "13.44 * 0.001", "6h/30m": "5.6 * 0.001", "1d/2h": "2.8 * 0.001", "3d/6h": "0.933333333333 * 0.001"}


def test_90_percent_slo_skips_the_pair_that_can_never_fire_and_says_so(tmp_path):
    text = spec_text("30d", 90)
    thresholds = burn_thresholds(text)
    assert "1h/5m" not in thresholds             # 14.4 * 10% = 144% errors: impossible
    assert thresholds["6h/30m"] == "6 * 0.1"      # 60%: possible, kept
    spec = parse_spec(text)
    _, warnings = build_burn_alerts(spec, spec.slos[0])
    assert len(warnings) == 1 and "1h/5m skipped" in warnings[0] and "144%" in warnings[0]
    (tmp_path / "slo.yaml").write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, GENERATE, "--spec", str(tmp_path / "slo.yaml"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "1h/5m skipped" in proc.stderr
    generated = (tmp_path / "alerts" / "sloguard-rules.yaml").read_text(encoding="utf-8")
    assert "burn_window: 1h/5m" not in generated and "burn_window: 6h/30m" in generated


def test_sloth_recording_names_labels_and_ratio_of_sums():
    spec = parse_spec(spec_text("28d"))
    rules = build_slo_recordings(spec, spec.slos[0]) + build_period_recordings(spec, spec.slos[0])
    records = [r["record"] for r in rules]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "28d"):
        assert f"slo:sli_error:ratio_rate{window}" in records
    for name in ("slo:objective:ratio", "slo:error_budget:ratio", "slo:time_period:days", "slo:current_burn_rate:ratio",
                 "slo:period_burn_rate:ratio", "slo:period_error_budget_remaining:ratio", "sloth_slo_info"):
        assert name in records
    for r in rules:
        assert {"sloth_id", "sloth_service", "sloth_slo"} <= set(r["labels"])
        assert r["labels"]["sloth_id"] == "shop-checkout-availability"
    period = next(r for r in rules if r["record"] == "slo:sli_error:ratio_rate28d")
    # a ratio of sums over the period, built from recorded 5m increases: never 28 days of raw samples
    assert "avg_over_time" not in period["expr"] and "increase(" not in period["expr"]
    assert period["expr"].count("sum_over_time(") == 2 and f"[28d:{PERIOD_STEP}]" in period["expr"]
    increases = [r for r in rules if r["record"].endswith(":increase5m")]
    assert len(increases) == 2 and all("[5m]" in r["expr"] and "[28d]" not in r["expr"] for r in increases)
    days = next(r for r in rules if r["record"] == "slo:time_period:days")
    assert days["expr"] == "vector(28)"


def test_period_group_runs_every_step_and_its_increases_tile_it():
    """The recorded increases cover exactly the group's interval: consecutive evaluations tile the period."""
    spec = parse_spec(spec_text("28d"))
    groups, _ = build_groups(spec)
    period_groups = [g for g in groups if g["name"].endswith("-period")]
    assert [g["interval"] for g in period_groups] == [PERIOD_STEP]
    assert all(f"[{PERIOD_STEP}]" in r["expr"] for r in period_groups[0]["rules"] if r["record"].endswith("increase5m"))
    assert all("interval" not in g for g in groups if not g["name"].endswith("-period"))


def test_numbers_carry_no_float_noise():
    assert promql.fmt_number(1 - 0.999) == "0.001"
    assert promql.fmt_number(0.1 + 0.2) == "0.3"
    assert promql.fmt_number(14.0) == "14"
    assert promql.fmt_number(1e6) == "1000000"
    text = outputs.render_all(parse_spec(spec_text("30d", 99.95)))["alerts/sloguard-rules.yaml"]
    assert not re.search(r"\d\.\d*0000000\d|\d\.\d*9999999\d", text)
    assert "vector(0.9995)" in text and "vector(0.0005)" in text


@pytest.mark.parametrize("threshold,matches,rejects", [
    (0.5, ["0.5", "0.50", "0.500"], ["0.05", "5", "0.51", "1.5"]),
    (1, ["1", "1.0", "1.00"], ["10", "0.1", "1.5", "11"]),
    (0.25, ["0.25", "0.250"], ["0.2", "0.255", "2.5"]),
    (2.5, ["2.5", "2.50"], ["25", "0.25"]),
])
def test_le_regex_matches_every_spelling_and_nothing_else(threshold, matches, rejects):
    pattern = re.compile(promql.le_regex(threshold))       # Prometheus anchors label regexes: use fullmatch
    assert all(pattern.fullmatch(s) for s in matches)
    assert not any(pattern.fullmatch(s) for s in rejects)


def test_latency_sli_reads_bucket_and_count_with_robust_le():
    text = spec_text(extra_slo="""  - name: fast
    objective: 99
    window: 30d
    sli: {latency: {metric: 'http_request_duration_seconds{job="shop"}', threshold: 1}}""")
    spec = parse_spec(text)
    ratio = build_slo_recordings(spec, spec.slos[1])[0]["expr"]
    assert 'http_request_duration_seconds_bucket{job="shop",le=~"1([.]0*)?"}' in ratio
    assert 'http_request_duration_seconds_count{job="shop"}' in ratio


def test_selector_helpers():
    sel = promql.parse_selector('m_total{a="x", b!~"y|z",}')
    assert sel.render() == 'm_total{a="x",b!~"y|z"}'
    assert promql.inject('m{le="1"}', promql.Matcher("le", "=~", "2")) == 'm{le=~"2"}'
    assert promql.with_suffix('h{job="a\\"b"}', "_count") == 'h_count{job="a\\"b"}'
    assert promql.parse_duration("90m").text == "1h30m" and promql.parse_duration("1w").text == "7d"
    for bad in ("m{", "{a=\"b\"}", "m{a=b}", "m{a=\"b\" c=\"d\"}"):
        with pytest.raises(promql.PromQLError):
            promql.parse_selector(bad)


def test_groups_never_exceed_20_rules():
    many = "\n".join(f"""  - name: s{i}
    objective: 99
    window: 30d
    sli: {{events: {{total: 'a_total', errors: 'b_total'}}}}""" for i in range(3))
    spec = parse_spec(spec_text(extra_slo=many))
    groups, _ = build_groups(spec)
    assert all(len(g["rules"]) <= MAX_GROUP_RULES for g in groups)
    assert len({g["name"] for g in groups}) == len(groups)


def _generate(spec: str, out: str, *extra: str, seed: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, GENERATE, "--spec", spec, "--out", out, *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def test_two_runs_are_byte_identical(tmp_path):
    spec = os.path.join(ROOT, "slo.yaml")
    a, b = tmp_path / "a", tmp_path / "b"
    assert _generate(spec, str(a), seed="1").returncode == 0
    assert _generate(spec, str(b), seed="2").returncode == 0
    files_a = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert files_a == files_b and files_a
    header = files_a[next(p for p in files_a if str(p).startswith("alerts"))].decode()
    assert header.startswith("# Generated by sloguard from slo.yaml — do not edit; run `make generate`.")


def test_check_detects_hand_edit_missing_and_extra_files(tmp_path):
    spec = os.path.join(ROOT, "slo.yaml")
    assert _generate(spec, str(tmp_path)).returncode == 0
    ok = _generate(spec, str(tmp_path), "--check")
    assert ok.returncode == 0, ok.stderr
    rules = tmp_path / "alerts" / "sloguard-rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("for: 2m", "for: 20m", 1), encoding="utf-8")
    (tmp_path / "alerts" / "kubernetes" / "prometheusrule.yaml").unlink()
    (tmp_path / "alerts" / "old-rules.yaml").write_text("groups: []\n", encoding="utf-8")
    stale = _generate(spec, str(tmp_path), "--check")
    assert stale.returncode == 1
    assert "stale:   alerts/sloguard-rules.yaml" in stale.stderr
    assert "missing: alerts/kubernetes/prometheusrule.yaml" in stale.stderr
    assert "extra:   alerts/old-rules.yaml" in stale.stderr
    assert "make generate" in stale.stderr


def test_writer_is_all_or_nothing(tmp_path):
    (tmp_path / "alerts").mkdir()
    keep = tmp_path / "alerts" / "a.yaml"
    keep.write_text("old\n", encoding="utf-8")
    (tmp_path / "blocked").write_text("a file where a directory is needed\n", encoding="utf-8")
    with pytest.raises(OSError):
        write_tree(str(tmp_path), {"alerts/a.yaml": "new\n", "blocked/b.yaml": "x\n"})
    assert keep.read_text(encoding="utf-8") == "old\n"
    assert not [p for p in tmp_path.rglob("*.tmp")]
    changed = write_tree(str(tmp_path), {"alerts/a.yaml": "new\n"})
    assert changed == ["alerts/a.yaml"] and keep.read_text(encoding="utf-8") == "new\n"
    assert diff_tree(str(tmp_path), {"alerts/a.yaml": "new\n"}).clean


def test_prometheus_rule_object_carries_the_same_groups():
    files = outputs.render_all(parse_spec(spec_text()))
    plain = yaml.safe_load(files[outputs.RULES_PATH])
    k8s = yaml.safe_load(files[outputs.PROMETHEUS_RULE_PATH])
    assert k8s["apiVersion"] == "monitoring.coreos.com/v1" and k8s["kind"] == "PrometheusRule"
    assert k8s["spec"]["groups"] == plain["groups"]


REPLAY = os.path.join(ROOT, "tests", "promtool", "incident-2024-01-15-replay.yml")
FULL_HISTORY = os.path.join(ROOT, "tests", "promtool", "full-history", "incident-2024-01-15-after-3-days.yml")
FULL_HISTORY_OFFSET_MIN = 3 * 1440
MIGRATION_MIN = 31          # 14:31, minutes after the replay's t0 (14:00)
LAST_MIN = 450              # 21:30, the replays' last evaluation
PAIRS = ("", "1h/5m", "6h/30m", "1d/2h", "3d/6h")
SLO_NAMES = ("availability", "latency")
TABLE_ROW = re.compile(r"^#\s+([A-Za-z0-9]+)(?: (\d+[hd]/\d+[mh]) (?:page|ticket))?(?: \(([a-z ]+)\))?\s+"
                       r"(\d\d):(\d\d)\s+(\d+) min\s+(\d\d):(\d\d)\s+(.+?)\s*$", re.M)


def _minutes(eval_time: str) -> int:
    units = {"d": 1440, "h": 60, "m": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhm])", eval_time))


def _clock(hh: str, mm: str) -> int:
    return (int(hh) - 14) * 60 + int(mm)


def _row_tag(alert: str, labels: dict, tags: dict[str, str]) -> str:
    """Statement alerts are one row per statement (tag by queryid or fingerprint), SLO-level Slo* alerts one per
    SLO (tag = the SLO name), the others one row per alert and burn window."""
    if alert.startswith("PostgresStatement"):
        return tags.get(labels.get("fingerprint") or labels.get("queryid", ""), "")
    if alert.startswith("Slo"):
        return labels.get("sloth_slo", "")
    return ""


def _asserted_states(path: str, tags: dict[str, str], offset: int = 0):
    """(firing, silent): (alert, burn_window, statement tag) -> eval minutes (relative to 14:00) asserted so."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    firing: dict[tuple, set[int]] = {}
    silent: dict[tuple, set[int]] = {}
    for case in doc["tests"][0]["alert_rule_test"]:
        minute = _minutes(str(case["eval_time"])) - offset
        present = {(c["exp_labels"].get("burn_window", ""), _row_tag(case["alertname"], c["exp_labels"], tags))
                   for c in case.get("exp_alerts") or []}
        for key in present:
            firing.setdefault((case["alertname"], *key), set()).add(minute)
        for key in {(p, t) for p in PAIRS for t in ("", *tags.values(), *SLO_NAMES)} - present:
            silent.setdefault((case["alertname"], *key), set()).add(minute)
    return firing, silent


def test_replay_detection_table_matches_its_assertions():
    """The post-mortem quotes the TTD table at the top of the replay; every column must be what the files assert:
    silent one minute before `fires` and firing then, firing one minute before `resolves` and silent then, and
    the full-history column likewise in the 3-days-of-history replay ("never": silent at every minute)."""
    with open(REPLAY, encoding="utf-8") as fh:
        text = fh.read()
    tags = {ident: tag for tag, ident in re.findall(r"\(([a-z ]+)\) = (?:queryid|fingerprint) ([0-9a-f]+)", text)}
    assert set(tags.values()) == {"login", "orders join"} and len(tags) == 4
    firing, silent = _asserted_states(REPLAY, tags)
    full_firing, full_silent = _asserted_states(FULL_HISTORY, tags, FULL_HISTORY_OFFSET_MIN)
    rows = TABLE_ROW.findall(text)
    assert len(rows) >= 17
    for alert, pair, tag, hh, mm, ttd, rh, rm, full in rows:
        key, name = (alert, pair, tag), " ".join(x for x in (alert, pair, tag) if x)
        fires, resolves = _clock(hh, mm), _clock(rh, rm)
        assert fires - MIGRATION_MIN == int(ttd), f"{name}: TTD must be counted from 14:31"
        assert fires in firing.get(key, set()), f"{name}: no assertion that it fires at {hh}:{mm}"
        assert fires - 1 in silent.get(key, set()), f"{name}: no assertion that it is silent before {hh}:{mm}"
        assert resolves - 1 in firing.get(key, set()), f"{name}: no assertion that it still fires before {rh}:{rm}"
        assert resolves in silent.get(key, set()), f"{name}: no assertion that it is silent at {rh}:{rm}"
        if full == "never":
            missing = set(range(MIGRATION_MIN, LAST_MIN + 1)) - full_silent.get(key, set())
            assert not missing, f"{name}: full history says never, but minutes {sorted(missing)[:5]} are not asserted"
            continue
        if full == "same":
            full_fires = fires
        else:
            m = re.fullmatch(r"(\d\d):(\d\d) \((\d+) min\)", full)
            assert m, f"{name}: full-history cell {full!r} is not 'same', 'never' or 'HH:MM (N min)'"
            full_fires = _clock(m.group(1), m.group(2))
            assert full_fires - MIGRATION_MIN == int(m.group(3)), f"{name}: full-history TTD is counted from 14:31"
        assert full_fires in full_firing.get(key, set()), f"{name}: full history does not assert it fires then"
        assert full_fires - 1 in full_silent.get(key, set()), f"{name}: full history does not assert silence before"


PAGING_ALERTS = {"AvailabilityErrorBudgetBurn", "LatencyErrorBudgetBurn", "SloTargetDown", "SloMetricAbsent"}
PAGE_ROW = re.compile(r"^#\s+(\d+[sm])\s+(\d\d):(\d\d) \((\d+) min\)\s+(\d\d):(\d\d) \((\d+) min\)(\s+<- the spec's)?$", re.M)


def _first_critical(path: str, offset: int = 0) -> tuple[int, set[int]]:
    """(first minute from 14:31 where the file asserts a critical alert firing, minutes asserted without one)."""
    with open(path, encoding="utf-8") as fh:
        cases = yaml.safe_load(fh)["tests"][0]["alert_rule_test"]
    paging, quiet = set(), set()
    by_minute: dict[int, list] = {}
    for case in cases:
        by_minute.setdefault(_minutes(str(case["eval_time"])) - offset, []).append(case)
    for minute, at in by_minute.items():
        if any(c["exp_labels"].get("severity") == "critical" for case in at for c in case.get("exp_alerts") or []):
            paging.add(minute)
        elif {case["alertname"] for case in at} >= PAGING_ALERTS:
            quiet.add(minute)
    return min(m for m in paging if m >= MIGRATION_MIN), quiet


def test_replay_pages_within_3_minutes_and_the_time_to_page_table_says_so():
    """Issue 10: only burn-rate pairs and outages page now; the replay must still page within 3 min of 14:31. The
    header's time-to-page table (page `for:` variants) is checked against what the replays assert for the spec's."""
    with open(REPLAY, encoding="utf-8") as fh:
        rows = PAGE_ROW.findall(fh.read())
    assert len(rows) >= 3, "no time-to-page table in the replay header"
    spec_rows = [r for r in rows if r[7]]
    assert len(spec_rows) == 1
    _for, hh, mm, ttd, fhh, fmm, fttd, _ = spec_rows[0]
    first, quiet = _first_critical(REPLAY)
    assert first == _clock(hh, mm) and first - MIGRATION_MIN == int(ttd) <= 3
    assert first - 1 in quiet, "the replay must assert that nothing pages the minute before"
    full_first, full_quiet = _first_critical(FULL_HISTORY, FULL_HISTORY_OFFSET_MIN)
    assert full_first == _clock(fhh, fmm) and full_first - MIGRATION_MIN == int(fttd)
    assert full_first - 1 in full_quiet
    # a shorter `for:` pages sooner, minute for minute
    ttds = [int(r[3]) for r in rows]
    assert ttds == sorted(ttds)


@pytest.mark.slow
def test_full_history_replay_passes_promtool():
    """The 3-days-of-history replay is outside tests/promtool (about a minute of promtool): run it here."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run `bash scripts/setup-system.sh`"
    proc = subprocess.run([promtool, "test", "rules", os.path.basename(FULL_HISTORY)], cwd=os.path.dirname(FULL_HISTORY),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "SUCCESS" in proc.stdout + proc.stderr


@pytest.mark.parametrize("events,guarded", [(10, True), (0, False)])
def test_pages_and_p99_are_guarded_by_events_in_the_short_window_tickets_never(events, guarded):
    text = spec_text().replace("database:", f"""alerting:
  page: {{min_events: {events}, windows: [{{long: 1h, short: 5m, budget_fraction: 0.02}}]}}
  ticket: {{windows: [{{long: 1d, short: 2h, budget_fraction: 0.1}}]}}
database:""")
    groups, _ = build_groups(parse_spec(text))
    rules = {r.get("alert") + r["labels"].get("burn_window", ""): r for g in groups for r in g["rules"] if "alert" in r}
    guard = f'sum(increase(http_request_duration_seconds_count{{job="shop"}}[5m])) >= {events}'
    assert (guard in rules["ApiLatencyP99High"]["expr"]) is guarded
    page = rules["CheckoutAvailabilityErrorBudgetBurn1h/5m"]["expr"]
    assert (f'sum(increase(http_requests_total{{job="shop"}}[5m])) >= {events}' in page) is guarded
    ticket = rules["CheckoutAvailabilityErrorBudgetBurn1d/2h"]["expr"]
    assert "increase(" not in ticket and "rate(" not in ticket          # tickets: no traffic guard at all
