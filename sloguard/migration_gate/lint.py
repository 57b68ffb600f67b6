"""Lint migrations with squawk (squawk-cli from PyPI, configured by .squawk.toml at the repo root)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from sloguard.migration_gate.errors import GateInputError


@dataclass(frozen=True)
class LintViolation:
    file: str
    line: int
    rule: str
    message: str
    help: str


def squawk_binary() -> str:
    # Prefer the one pinned in the venv next to this interpreter.
    candidate = os.path.join(os.path.dirname(sys.executable), "squawk")
    found = candidate if os.access(candidate, os.X_OK) else shutil.which("squawk")
    if not found:
        raise GateInputError("squawk not found. Fix: `.venv/bin/pip install -r requirements.txt` (squawk-cli)")
    return found


def lint(paths: list[str], config: str | None) -> list[LintViolation]:
    if not paths:
        return []
    cmd = [squawk_binary(), "--reporter", "json"]
    if config:
        if not os.path.exists(config):
            raise GateInputError(f"{config}: squawk config not found. Fix: pass --squawk-config or create it")
        cmd += ["--config", config]
    proc = subprocess.run(cmd + paths, capture_output=True, text=True, timeout=120)
    try:
        items = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as e:
        raise GateInputError(f"squawk failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}") from e
    if proc.returncode not in (0, 1):
        raise GateInputError(f"squawk failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
    # squawk's json lines are 0-based
    return [LintViolation(i["file"], int(i.get("line", 0)) + 1, i["rule_name"], i["message"], i.get("help") or "")
            for i in items]
