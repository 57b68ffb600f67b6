"""SLO overview dashboard: one row per SLO of the spec, read from the Sloth-named recording rules.

Burn rates divide the recorded error ratio by the SLO's error budget, a constant known from the spec, so a panel
never depends on how the rule builder labels its meta rules.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from grafanalib import core as g

from sloguard.dashboard_links import SLO_OVERVIEW_UID, panel_for
from sloguard.dashboards import common as c
from sloguard.names import BURN_RATE_ALERT_SUFFIX
from sloguard.spec.model import SLO, AlertTier, Spec

TITLE = "sloguard / SLO overview"
SUMMARY_HEIGHT = 10  # row header 1 + all-SLO panels 9
ROW_HEIGHT = 15      # row header 1 + stats 5 + burn-rate graphs 9

# Every <Slo>ErrorBudgetBurn alert links to one panel (sloguard/dashboard_links.py): the all-SLO burn-rate panel.
BURN_SUMMARY_PANEL = panel_for(BURN_RATE_ALERT_SUFFIX)[1]
SUMMARY_ROW_PANEL = 1
BUDGET_SUMMARY_PANEL = 2


class SloPanel:
    """Offsets inside one SLO's row; the row of the i-th SLO (0-based, spec order) starts at 100 * (i + 1), so
    ids stay unique and stable for any number of SLOs and never meet the summary panels' small ids."""

    ROW = 0
    CURRENT_SLI = 1
    OBJECTIVE = 2
    BUDGET_REMAINING = 3
    TIME_TO_EXHAUSTION = 4
    FIRING_ALERTS = 5
    BURN_RATE_PAGE = 6
    BURN_RATE_TICKET = 7


def slo_panel_id(slo_index: int, offset: int) -> int:
    return 100 * (slo_index + 1) + offset

SLI_ERROR_RATIO = "slo:sli_error:ratio_rate"   # + window text, e.g. slo:sli_error:ratio_rate1h
OBJECTIVE = "slo:objective:ratio"
BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"


def slo_camel(name: str) -> str:
    """'api-latency' -> 'ApiLatency': the prefix of the SLO's burn-rate alert name."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def burn_alert_name(slo: SLO) -> str:
    return slo_camel(slo.name) + BURN_RATE_ALERT_SUFFIX


def slo_matchers(spec: Spec, slo: SLO) -> str:
    return f'sloth_service="{spec.service}",sloth_slo="{slo.name}"'


def burn_factor(slo: SLO, long_seconds: int, budget_fraction: float) -> float:
    """Workbook: spending `budget_fraction` of the period's budget within `long` burns at f * P / L."""
    return budget_fraction * slo.window.seconds / long_seconds


def error_ratio(spec: Spec, slo: SLO, window: str) -> str:
    # max() drops the rule labels so the constant maths below never needs label matching.
    return f"max({SLI_ERROR_RATIO}{window}{{{slo_matchers(spec, slo)}}})"


def burn_rate_expr(spec: Spec, slo: SLO, window: str) -> str:
    return f"{error_ratio(spec, slo, window)} / {c.fmt_number(slo.error_budget)}"


def _stats(spec: Spec, slo: SLO, index: int, y: int) -> list:
    sel = slo_matchers(spec, slo)
    budget = c.fmt_number(slo.error_budget)
    current_window = spec.alerting.page.windows[0].long.text
    period = slo.window.text
    pid = lambda offset: slo_panel_id(index, offset)  # noqa: E731
    time_to_exhaustion = (
        f"clamp_min(max({BUDGET_REMAINING}{{{sel}}}), 0) * {slo.window.seconds}"
        f" / ({error_ratio(spec, slo, current_window)} / {budget})"
    )
    firing = (f'count by (severity, burn_window) (ALERTS{{alertname="{burn_alert_name(slo)}",'
              f'alertstate="firing"}}) or on() vector(0)')
    return [
        c.stat(pid(SloPanel.CURRENT_SLI), f"{slo.name}: SLI, last 5m",
               f"Share of good events over the last 5 minutes ({slo.description}). "
               f"Bad: below the objective {c.fmt_number(slo.objective * 100)}%: the budget is burning right now.",
               c.UNIT_PERCENT, [c.target(f"1 - {error_ratio(spec, slo, '5m')}", slo.name)],
               c.gridpos(0, y, 4, 5), c.steps((c.RED, None), (c.GREEN, slo.objective)), decimals=3),
        c.stat(pid(SloPanel.OBJECTIVE), f"{slo.name}: objective",
               f"The objective from slo.yaml, as recorded by the rules; error budget = 1 - objective = {budget}. "
               "Bad: no value means the recording rules are not loaded in this Prometheus.",
               c.UNIT_PERCENT, [c.target(f"max({OBJECTIVE}{{{sel}}})", "objective")],
               c.gridpos(4, y, 4, 5), decimals=3),
        c.stat(pid(SloPanel.BUDGET_REMAINING), f"{slo.name}: error budget remaining ({period})",
               f"Share of the {period} error budget not yet spent (ratio of sums over the period). "
               "Bad: under 25% means freeze risky changes; at or under 0% the SLO is missed for the period.",
               c.UNIT_PERCENT, [c.target(f"max({BUDGET_REMAINING}{{{sel}}})", "remaining")],
               c.gridpos(8, y, 5, 5), c.steps((c.RED, None), (c.ORANGE, 0.0), (c.GREEN, 0.25)), decimals=1),
        c.stat(pid(SloPanel.TIME_TO_EXHAUSTION), f"{slo.name}: time to budget exhaustion",
               f"Remaining budget divided by the burn rate of the last {current_window}: how long until the "
               f"{period} budget is gone if nothing changes. Infinity means no errors at all. "
               "Bad: under a day is page territory, under a week needs a ticket.",
               c.UNIT_SECONDS, [c.target(time_to_exhaustion, "time left")],
               c.gridpos(13, y, 5, 5), c.steps((c.RED, None), (c.ORANGE, 86400.0), (c.GREEN, 7 * 86400.0))),
        c.stat(pid(SloPanel.FIRING_ALERTS), f"{slo.name}: firing burn-rate alerts",
               f"Firing {burn_alert_name(slo)} alerts by severity and window pair (0 when none). "
               "Bad: any non-zero value; critical pages, warning opens a ticket.",
               c.UNIT_COUNT, [c.target(firing, "{{severity}} {{burn_window}}")],
               c.gridpos(18, y, 6, 5), c.threshold_steps(1.0)),
    ]


def _burn_panel(spec: Spec, slo: SLO, index: int, tier: AlertTier, offset: int, x: int, y: int):
    targets, seen = [], set()
    refs = (_ref(i) for i in range(10**4))
    for pair in tier.windows:
        for window in (pair.long, pair.short):
            if window.text not in seen:
                seen.add(window.text)
                targets.append(c.target(burn_rate_expr(spec, slo, window.text), f"burn rate {window.text}",
                                        next(refs)))
        factor = c.fmt_number(burn_factor(slo, pair.long.seconds, pair.budget_fraction))
        targets.append(c.target(f"vector({factor})", f"threshold {pair.long.text}/{pair.short.text} = {factor}",
                                next(refs)))
    kind = "page" if tier.severity == "critical" else "ticket"
    pairs = ", ".join(f"{p.long.text}/{p.short.text}" for p in tier.windows)
    description = (
        f"Burn rate (error ratio / budget {c.fmt_number(slo.error_budget)}) over each {kind} window "
        f"({pairs}) with the threshold of its pair. 1 = spending exactly the budget over {slo.window.text}. "
        f"Bad: both the long and the short window of a pair above its threshold for {tier.for_.text}: "
        f"that is what fires the {tier.severity} alert."
    )
    return c.timeseries(slo_panel_id(index, offset), f"{slo.name}: burn rate, {kind} windows", description,
                        c.UNIT_COUNT, targets, c.gridpos(x, y, 12, 9))


def summary_panels(specs: Spec | Sequence[Spec]) -> list:
    """The landing panels of a burn-rate page: which SLO burns, and how much budget each has left."""
    specs = as_list(specs)
    pairs = [(spec, slo) for spec in specs for slo in spec.slos]
    first = specs[0].alerting.page.windows[0]
    burn_targets, budget_targets = [], []
    for index, (spec, slo) in enumerate(pairs):
        ref = _ref(index)
        sel = slo_matchers(spec, slo)
        label = slo.name if len(specs) == 1 else f"{spec.service}/{slo.name}"
        burn_targets.append(c.target(burn_rate_expr(spec, slo, first.long.text), f"{label} {first.long.text}",
                                     ref))
        budget_targets.append(c.target(f"max({BUDGET_REMAINING}{{{sel}}})", label, ref))
    factors = sorted({c.fmt_number(burn_factor(slo, first.long.seconds, first.budget_fraction))
                      for _, slo in pairs})
    burn_targets += [c.target(f"vector({factor})", f"page threshold {first.long.text}/{first.short.text} = {factor}",
                              _ref(len(pairs) + i)) for i, factor in enumerate(factors)]
    return [
        c.row(SUMMARY_ROW_PANEL, "All SLOs", 0),
        c.timeseries(BURN_SUMMARY_PANEL, f"Burn rate of every SLO over {first.long.text}",
                     f"Error ratio over {first.long.text} divided by each SLO's error budget, with the fast-page "
                     f"threshold. Every burn-rate alert links here; the SLO rows below show all windows. Bad: a "
                     f"line above its threshold (the alert also needs the {first.short.text} window above it).",
                     c.UNIT_COUNT, burn_targets, c.gridpos(0, 1, 16, 9)),
        c.stat(BUDGET_SUMMARY_PANEL, "Error budget remaining per SLO",
               "Share of each SLO's error budget left over its period. Bad: under 25%; at 0% the SLO is missed.",
               c.UNIT_PERCENT, budget_targets, c.gridpos(16, 1, 8, 9),
               c.steps((c.RED, None), (c.ORANGE, 0.0), (c.GREEN, 0.25)), decimals=1),
    ]


def _ref(i: int) -> str:
    """Grafana refIds A..Z, then AA, AB, ... for specs with many SLOs."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return letters[i] if i < 26 else _ref(i // 26 - 1) + letters[i % 26]


def slo_row(spec: Spec, slo: SLO, index: int) -> list:
    y = SUMMARY_HEIGHT + index * ROW_HEIGHT
    return [
        c.row(slo_panel_id(index, SloPanel.ROW), f"SLO {slo.name}: {c.fmt_number(slo.objective * 100)}% over "
              f"{slo.window.text}", y),
        *_stats(spec, slo, index, y + 1),
        _burn_panel(spec, slo, index, spec.alerting.page, SloPanel.BURN_RATE_PAGE, 0, y + 6),
        _burn_panel(spec, slo, index, spec.alerting.ticket, SloPanel.BURN_RATE_TICKET, 12, y + 6),
    ]


def firing_alerts_annotation() -> dict:
    return {
        "datasource": c.DATASOURCE, "enable": True, "iconColor": "red", "name": "Burn-rate alerts",
        "expr": f'ALERTS{{alertname=~".+{BURN_RATE_ALERT_SUFFIX}",alertstate="firing"}}',
        "step": "1m", "titleFormat": "{{alertname}} {{burn_window}}", "textFormat": "severity {{severity}}",
        "tagKeys": "severity", "useValueForTime": False,
    }


def as_list(specs: Spec | Sequence[Spec]) -> list[Spec]:
    """Builders take one spec or the fleet's list (generate.py with several specs)."""
    return [specs] if isinstance(specs, Spec) else list(specs)


def build(specs: Spec | Sequence[Spec]) -> g.Dashboard:
    """One overview for every SLO of every service given (rows in spec order)."""
    specs = as_list(specs)
    panels = summary_panels(specs)
    pairs = [(spec, slo) for spec in specs for slo in spec.slos]
    panels += [panel for index, (spec, slo) in enumerate(pairs) for panel in slo_row(spec, slo, index)]
    services = ", ".join(spec.service for spec in specs)
    return c.dashboard(
        SLO_OVERVIEW_UID, TITLE,
        f"Service{'s' if len(specs) > 1 else ''} {services}: every SLO of the spec with its budget and burn rates.",
        panels, [firing_alerts_annotation()],
    )
