"""Panel links to the runbook: a panel an alert points at links back to that alert's runbook section, so the
on-call goes from the graph to the procedure in one click (and from the alert to the graph by dashboard_url)."""
from __future__ import annotations

from sloguard import names
from sloguard.dashboard_links import ALERT_PANELS
from sloguard.dashboards.queries import iter_panels


def runbook_anchors(uid: str) -> dict[int, list[str]]:
    """{panel id: runbook anchors of the alerts linking to it}, in a stable order."""
    out: dict[int, list[str]] = {}
    for alertname, (board, panel_id) in sorted(ALERT_PANELS.items()):
        anchor = names.runbook_anchor(alertname)
        if board == uid and anchor not in out.setdefault(panel_id, []):
            out[panel_id].append(anchor)
    return out


def add_runbook_links(board: dict, kind_uid: str, runbook: str) -> dict:
    """`kind_uid`: the uid the alerts' links agree on (sloguard/dashboard_links.py), whatever the board's own."""
    anchors = runbook_anchors(kind_uid)
    for panel in iter_panels(board):
        for anchor in anchors.get(panel["id"], []):
            panel["links"] = [*panel.get("links", []), {"title": f"Runbook: {anchor}", "url": f"{runbook}#{anchor}",
                                                         "targetBlank": True}]
    return board
