"""Production-clock times to detect, read from the promtool replay rather than estimated from the simulation.

The simulation's seconds cannot be scaled back to production: they are dominated by the `for:` and range floors
and the evaluation step (configs.py), not by the rules' own timing. The promtool replay
(tests/promtool/incident-2024-01-15-replay.yml) evaluates the uncompressed rules on the incident's series and its
header tabulates each alert's time to detect; the report quotes that table, read at report time, so it cannot go
stale when the replay changes.
"""
from __future__ import annotations

import os
import re

PROMTOOL_REPLAY = "tests/promtool/incident-2024-01-15-replay.yml"

# "#   AvailabilityErrorBudgetBurn 6h/30m page     14:34   3 min   15:40      14:38 (7 min)"
_ROW = re.compile(r"^#\s+(?P<name>[A-Z][A-Za-z0-9]+)(?P<rest>(?: \S+)*?)\s{2,}(?P<fires>\d{1,2}:\d\d)\s+"
                  r"(?P<ttd>\d+\s*min)\b")
_WINDOW = re.compile(r"\b\d+[smhdw]/\d+[smhdw]\b")
_QUALIFIER = re.compile(r"\(([^)]*)\)")


def promtool_ttd(repo: str) -> dict[tuple[str, str], list[str]]:
    """{(alertname, burn window or ""): ["3 min", "4 min (login)", ...]} from the replay's header table.

    Empty when the file or its table is missing: the report then points at the file instead of quoting it."""
    try:
        with open(os.path.join(repo, PROMTOOL_REPLAY)) as f:
            header = [line.rstrip("\n") for line in f if line.startswith("#")]
    except OSError:
        return {}
    out: dict[tuple[str, str], list[str]] = {}
    for line in header:
        m = _ROW.match(line)
        if not m:
            continue
        window = _WINDOW.search(m["rest"])
        qualifier = _QUALIFIER.search(m["rest"])
        ttd = re.sub(r"\s+", " ", m["ttd"]) + (f" ({qualifier[1]})" if qualifier else "")
        out.setdefault((m["name"], window[0] if window else ""), []).append(ttd)
    return out


def production_ttd(table: dict[tuple[str, str], list[str]], alertname: str, burn_window: str = "") -> str:
    """The replay's time to detect for one alert instance, "" when the replay has no row for it."""
    return ", ".join(table.get((alertname, burn_window or ""), []))
