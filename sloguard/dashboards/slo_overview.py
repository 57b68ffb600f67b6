"""SLO overview dashboard: one panel set templated by the service and SLO variables, for one service or a fleet.

Every number is read from the recorded Sloth-named series (objective, error budget, period, burn rates, budget
remaining), never from a constant of the spec, so one dashboard serves every service whose rules are loaded, and
its JSON does not grow with the number of SLOs (Sloth's dashboards 14348/14643 work the same way). The spec only
contributes the burn-rate window pairs to draw, the default service and the links.
"""
from __future__ import annotations

from collections.abc import Sequence

from grafanalib import core as g

from sloguard.dashboard_links import SLO_OVERVIEW_UID, panel_for
from sloguard.dashboards import common as c
from sloguard.names import BURN_RATE_ALERT_SUFFIX
from sloguard.spec.model import AlertTier, BurnWindow, Spec

TITLE = "sloguard / SLO overview"
SERVICE_VAR = "service"
SLO_VAR = "slo"
SEL = f'sloth_service=~"${SERVICE_VAR}",sloth_slo=~"${SLO_VAR}"'
BY = "sloth_service, sloth_slo"
LEGEND = "{{sloth_service}} / {{sloth_slo}}"
DAY_SECONDS = 86400

SLI_ERROR_RATIO = "slo:sli_error:ratio_rate"   # + window text, e.g. slo:sli_error:ratio_rate1h
OBJECTIVE = "slo:objective:ratio"
ERROR_BUDGET = "slo:error_budget:ratio"
PERIOD_DAYS = "slo:time_period:days"
CURRENT_BURN_RATE = "slo:current_burn_rate:ratio"
PERIOD_BURN_RATE = "slo:period_burn_rate:ratio"
BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"
SLO_INFO = "sloth_slo_info"
FIRING_SLO_ALERTS = f'ALERTS{{alertstate="firing",{SEL}}}'
# the selected services' alerts, those about a whole service too (SloTargetDown has no sloth_slo)
FIRING_SERVICE_ALERTS = f'ALERTS{{alertstate="firing",sloth_service=~"${SERVICE_VAR}"}}'
BASE_WINDOW = "5m"


class P:
    """Panel ids: fixed, whatever the number of SLOs. Every <Slo>ErrorBudgetBurn alert links to BURN_SUMMARY
    (sloguard/dashboard_links.py); the ids inside the repeated SLO row are those of its first copy."""

    ROW_SUMMARY = 1
    TABLE = 2
    FIRING = 3
    BURN_SUMMARY = panel_for(BURN_RATE_ALERT_SUFFIX)[1]
    BUDGET_SUMMARY = 5
    ROW_SLO = 10
    SLI_VS_OBJECTIVE = 11
    BUDGET_BURN_DOWN = 12
    CURRENT_BURN = 13
    REMAINING = 14
    TIME_TO_EXHAUSTION = 15
    SLO_FIRING = 16
    BURN_PAGE = 17
    BURN_TICKET = 18


def recorded(metric: str) -> str:
    """One value per (service, SLO): max() drops rule labels and HA duplicates alike."""
    return f"max by ({BY}) ({metric}{{{SEL}}})"


def burn_rate_expr(window: str) -> str:
    """Error ratio over `window` divided by the SLO's recorded error budget: 1 = spending exactly the budget."""
    return f"{recorded(SLI_ERROR_RATIO + window)} / {recorded(ERROR_BUDGET)}"


def burn_threshold_expr(pair: BurnWindow) -> str:
    """The alert's factor, budget_fraction * period / long window, from each SLO's recorded period (14.4 for
    1h at 2% of 30d, 13.44 for 28d)."""
    per_day = c.fmt_number(pair.budget_fraction * DAY_SECONDS / pair.long.seconds)
    return f"{recorded(PERIOD_DAYS)} * {per_day}"


def _unique(items):
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _tier(specs: Sequence[Spec], severity: str) -> AlertTier:
    """The window pairs of one severity across the specs (a fleet usually shares them), in spec order."""
    tiers = [s.alerting.page if severity == "critical" else s.alerting.ticket for s in specs]
    return AlertTier(severity, tiers[0].for_, tuple(_unique(w for t in tiers for w in t.windows)))


def _ref(i: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]


def summary_panels(specs: Sequence[Spec], y: int) -> list:
    first = _tier(specs, "critical").windows[0]
    pair = f"{first.long.text}/{first.short.text}"
    table = c.table(
        P.TABLE, "Selected SLOs at a glance",
        "One line per selected SLO, every value read from its recording rules: objective, share of the period's "
        "error budget left, burn rate over the period and over the last 5 minutes, firing alerts. Bad: budget "
        "under 25% (freeze risky changes) or at 0% (the SLO is missed), a burn rate above 1, any firing alert.",
        c.UNIT_COUNT,
        [c.target(recorded(OBJECTIVE), ref="A", instant=True, table=True),
         c.target(recorded(BUDGET_REMAINING), ref="B", instant=True, table=True),
         c.target(recorded(PERIOD_BURN_RATE), ref="C", instant=True, table=True),
         c.target(recorded(CURRENT_BURN_RATE), ref="D", instant=True, table=True),
         # 0, not an empty cell, for an SLO with nothing firing
         c.target(f"count by ({BY}) ({FIRING_SLO_ALERTS}) or {recorded(OBJECTIVE)} * 0", ref="E", instant=True,
                  table=True)],
        c.gridpos(0, y + 1, 16, 8),
        {"sloth_service": "service", "sloth_slo": "SLO", "Value #A": "objective",
         "Value #B": "budget remaining", "Value #C": "period burn rate", "Value #D": "burn rate 5m",
         "Value #E": "firing alerts"},
        {"objective": c.UNIT_PERCENT, "budget remaining": c.UNIT_PERCENT, "period burn rate": c.UNIT_COUNT,
         "burn rate 5m": c.UNIT_COUNT, "firing alerts": c.UNIT_COUNT}, sort_by="period burn rate")
    burn = c.timeseries(
        P.BURN_SUMMARY, f"Burn rate of every SLO over {first.long.text}",
        f"Error ratio over {first.long.text} divided by each SLO's recorded error budget, with each SLO's "
        f"{pair} page threshold (budget_fraction x period / {first.long.text}, from its recorded period). Every "
        f"burn-rate alert links here. Bad: a line above its threshold (the page also needs the "
        f"{first.short.text} window above it).",
        c.UNIT_COUNT,
        [c.target(burn_rate_expr(first.long.text), f"{LEGEND} {first.long.text}", "A"),
         c.target(burn_threshold_expr(first), f"{LEGEND} page threshold {pair}", "B")],
        c.gridpos(0, y + 9, 16, 9), overrides=[_dashed("B")])
    firing = c.stat(
        P.FIRING, "Firing SLO alerts by severity",
        "Alerts of the selected services firing now (burn rate, budget, outage, SLO configuration), 0 when "
        "none. Bad: any non-zero value; critical pages, warning opens a ticket, info is for the next review.",
        c.UNIT_COUNT, [c.target(f"count by (severity) ({FIRING_SERVICE_ALERTS}) or on() vector(0)", "{{severity}}")],
        c.gridpos(16, y + 9, 8, 9), c.threshold_steps(1.0))
    budget = c.stat(
        P.BUDGET_SUMMARY, "Error budget remaining per SLO",
        "Share of each selected SLO's error budget left over its period, from its recording rules. Bad: under 25% "
        "(freeze risky changes); at or under 0% the SLO is missed for the period.",
        c.UNIT_PERCENT, [c.target(recorded(BUDGET_REMAINING), LEGEND)], c.gridpos(16, y + 1, 8, 8),
        c.steps((c.RED, None), (c.ORANGE, 0.0), (c.GREEN, 0.25)), decimals=1)
    return [c.row(P.ROW_SUMMARY, "Selected SLOs", y), table, budget, burn, firing]


def _dashed(ref: str) -> dict:
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}]}


def _burn_panel(tier: AlertTier, panel_id: int, x: int, y: int) -> g.TimeSeries:
    kind = "page" if tier.severity == "critical" else "ticket"
    windows = _unique(w.text for pair in tier.windows for w in (pair.long, pair.short))
    targets = [c.target(burn_rate_expr(w), f"{LEGEND} {w}", _ref(i)) for i, w in enumerate(windows)]
    thresholds = [c.target(burn_threshold_expr(pair), f"{LEGEND} threshold {pair.long.text}/{pair.short.text}",
                           _ref(len(windows) + i)) for i, pair in enumerate(tier.windows)]
    pairs = ", ".join(f"{p.long.text}/{p.short.text}" for p in tier.windows)
    return c.timeseries(
        panel_id, f"Burn rate, {kind} windows ({pairs})",
        f"Burn rate (error ratio / recorded error budget) over each {kind} window, with each pair's threshold. "
        f"1 = spending exactly the budget over the period. Bad: both windows of a pair above its threshold for "
        f"{tier.for_.text}: that fires the {tier.severity} alert.",
        c.UNIT_COUNT, targets + thresholds, c.gridpos(x, y, 12, 9),
        overrides=[_dashed(t.refId) for t in thresholds])


def slo_row(specs: Sequence[Spec], y: int) -> list:
    """The detail of one SLO; Grafana repeats the row for every value of the SLO variable."""
    page, ticket = _tier(specs, "critical"), _tier(specs, "warning")
    first = page.windows[0].long.text
    longest = max((slo.window for s in specs for slo in s.slos), key=lambda d: d.seconds)
    row = c.row(P.ROW_SLO, f"SLO ${SLO_VAR}", y)
    row.repeat = g.Repeat(variable=SLO_VAR)
    sli = c.timeseries(
        P.SLI_VS_OBJECTIVE, "SLI vs objective",
        f"Share of good events over 5 minutes and over {first}, against the recorded objective. Bad: the SLI "
        f"under the objective line: the error budget is burning faster than the period allows.",
        c.UNIT_PERCENT,
        [c.target(f"1 - {recorded(SLI_ERROR_RATIO + BASE_WINDOW)}", f"{LEGEND} SLI {BASE_WINDOW}", "A"),
         c.target(f"1 - {recorded(SLI_ERROR_RATIO + first)}", f"{LEGEND} SLI {first}", "B"),
         c.target(recorded(OBJECTIVE), f"{LEGEND} objective", "C")],
        c.gridpos(0, y + 1, 12, 8), overrides=[_dashed("C")])
    burn_down = c.timeseries(
        P.BUDGET_BURN_DOWN, "Error budget remaining over the period (burn-down)",
        f"Share of the error budget left over each SLO's rolling period, shown over the last {longest.text}: "
        f"the burn-down of the period's budget. Bad: a steep fall (an incident spent it), under 25% (freeze "
        f"risky changes), at or under 0% (the SLO is missed for the period).",
        c.UNIT_PERCENT, [c.target(recorded(BUDGET_REMAINING), LEGEND)], c.gridpos(12, y + 1, 12, 8),
        c.steps((c.RED, None), (c.ORANGE, 0.0), (c.GREEN, 0.25)), draw_thresholds=True)
    burn_down.timeFrom = longest.text
    exhaustion = (f"max by ({BY}) (clamp_min({BUDGET_REMAINING}{{{SEL}}}, 0)) * {recorded(PERIOD_DAYS)} * "
                  f"{DAY_SECONDS} / ({burn_rate_expr(first)})")
    stats_y = y + 9
    stats = [
        c.stat(P.CURRENT_BURN, "Burn rate now (5m)",
               "Recorded burn rate over the last 5 minutes (error ratio / error budget). Bad: above 1 the period's "
               "budget runs out before the period ends; far above 1 for long is what pages.",
               c.UNIT_COUNT, [c.target(recorded(CURRENT_BURN_RATE), LEGEND)], c.gridpos(0, stats_y, 6, 5),
               c.steps((c.GREEN, None), (c.ORANGE, 1.0)), decimals=2),
        c.stat(P.REMAINING, "Error budget remaining (period)",
               "Share of the period's error budget not yet spent (ratio of sums over the period). Bad: under 25% "
               "means freeze risky changes; at or under 0% the SLO is missed for the period.",
               c.UNIT_PERCENT, [c.target(recorded(BUDGET_REMAINING), LEGEND)], c.gridpos(6, stats_y, 6, 5),
               c.steps((c.RED, None), (c.ORANGE, 0.0), (c.GREEN, 0.25)), decimals=1),
        c.stat(P.TIME_TO_EXHAUSTION, "Time to budget exhaustion",
               f"Remaining budget x period / burn rate over {first}: how long until the budget is gone if "
               "nothing changes. Infinity means no errors at all. Bad: under a day is page territory, under a "
               "week needs a ticket.",
               c.UNIT_SECONDS, [c.target(exhaustion, LEGEND)], c.gridpos(12, stats_y, 6, 5),
               c.steps((c.RED, None), (c.ORANGE, 86400.0), (c.GREEN, 7 * 86400.0))),
        c.stat(P.SLO_FIRING, "Firing alerts of this SLO",
               "Firing burn-rate (and bucket-missing) alerts of this SLO by severity and window pair, 0 when "
               "none. Bad: any non-zero value.",
               c.UNIT_COUNT,
               [c.target(f"count by (severity, burn_window) ({FIRING_SLO_ALERTS}) or on() vector(0)",
                         "{{severity}} {{burn_window}}")],
               c.gridpos(18, stats_y, 6, 5), c.threshold_steps(1.0)),
    ]
    return [row, sli, burn_down, *stats,
            _burn_panel(page, P.BURN_PAGE, 0, y + 14), _burn_panel(ticket, P.BURN_TICKET, 12, y + 14)]


def firing_alerts_annotation() -> dict:
    return {
        "datasource": c.DATASOURCE, "enable": True, "iconColor": "red", "name": "SLO alerts",
        "expr": FIRING_SERVICE_ALERTS, "step": "1m", "titleFormat": "{{alertname}} {{burn_window}}",
        "textFormat": "{{sloth_service}} / {{sloth_slo}}, severity {{severity}}", "tagKeys": "severity",
        "useValueForTime": False,
    }


def variables(specs: Sequence[Spec]) -> list[dict]:
    services = _unique(s.service for s in specs)
    return [
        c.query_variable(SERVICE_VAR, "Service", f"label_values({SLO_INFO}, sloth_service)",
                         services[0] if len(services) == 1 else None),
        c.query_variable(SLO_VAR, "SLO", f'label_values({SLO_INFO}{{sloth_service=~"${SERVICE_VAR}"}}, sloth_slo)'),
    ]


def links(specs: Sequence[Spec], incident_uids: dict[str, str]) -> list[dict]:
    out = [c.link(f"Incident: {service}", f"/d/{uid}", "API latency and database incident dashboard of "
                  f"{service}", "dashboard", include_vars=False) for service, uid in incident_uids.items()]
    out += [c.link("Runbook", runbook, "What to do for each alert", "doc", target_blank=True)
            for runbook in _unique(s.links.runbook for s in specs)]
    out += [c.link("Alert rules", "/alerting/list", "Grafana's list of alert rules "
                   "(Prometheus datasource rules included)", "bolt"),
            c.dashboards_link(c.TAGS[:1])]
    return out


def build(specs: Sequence[Spec], incident_uids: dict[str, str]) -> dict:
    panels = summary_panels(specs, 0) + slo_row(specs, 18)
    services = ", ".join(_unique(s.service for s in specs))
    return c.dashboard(
        SLO_OVERVIEW_UID, TITLE,
        f"SLOs of {services}: budgets, burn rates and objectives from the recorded slo:* series, one panel set "
        "templated by the service and SLO variables.",
        panels, [firing_alerts_annotation()], variables(specs), links(specs, incident_uids),
    )

