"""The console scripts the Makefile installs (pyproject [project.scripts]) start and answer --help."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("script,expected", [
    ("sloguard-pg-exporter", "--web.listen-address"),
    ("sloguard-diagnose", "--format"),
])
def test_console_script_runs(script, expected):
    path = os.path.join(BIN, script)
    assert os.access(path, os.X_OK), f"{path} missing: run `make venv` (it installs the project's console scripts)"
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ") and expected in proc.stdout
