"""Shared by the measurement scripts of docs/analysis: write a report and its figures, both or neither."""
from __future__ import annotations

import json
import os


def write_report(md_path: str, markdown: str, figures: dict) -> str:
    """`<name>.md` and `<name>.json` side by side, each written to a temp file then renamed; returns the json path."""
    json_path = os.path.splitext(md_path)[0] + ".json"
    for path, text in ((md_path, markdown), (json_path, json.dumps(figures, indent=2, sort_keys=True) + "\n")):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return json_path
