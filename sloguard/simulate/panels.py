"""Every dashboard panel query, run against the live Prometheus over the replay's time range.

A panel is "with data" when each of its targets returns at least one sample somewhere in the range: the replay
covers healthy, incident and recovery, so a panel that stays empty there would stay empty on the real night too.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

from sloguard.dashboards.queries import panel_queries
from sloguard.simulate.promapi import Prometheus


@dataclass
class PanelCheck:
    uid: str
    panel_id: int
    title: str
    expr: str
    series: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.series > 0 and not self.error


def check_panels(repo: str, prometheus: Prometheus, start: float, end: float, rate_interval: str,
                 step: float = 2.0) -> list[PanelCheck]:
    results = []
    for path in sorted(glob.glob(os.path.join(repo, "dashboards", "*.json"))):
        with open(path) as f:
            dashboard = json.load(f)
        for uid, panel_id, title, expr in panel_queries(dashboard, rate_interval):
            try:
                series = len(prometheus.query_range(expr, start, end, step))
                results.append(PanelCheck(uid, panel_id, title, expr, series))
            except Exception as exc:  # noqa: BLE001 (a failing query is a result to report, not a crash)
                results.append(PanelCheck(uid, panel_id, title, expr, 0, f"{type(exc).__name__}: {exc}"))
    return results
