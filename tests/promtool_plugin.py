"""pytest plugin: promtool as test items.

- `promtool check rules` on every generated rule file in alerts/ (the PrometheusRule object is unwrapped first),
- `promtool test rules` on every tests/promtool/*.yml,
each file one pytest item; a failure shows promtool's own output. promtool comes from Debian's `prometheus`
package (scripts/setup-system.sh).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL_DIR = ROOT / "tests" / "promtool"
ALERTS_DIR = ROOT / "alerts"
PROMTOOL_TIMEOUT_S = 300


def _promtool() -> str:
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool not found: run `bash scripts/setup-system.sh` (Debian package prometheus)")
    return exe


class PromtoolFailure(Exception):
    pass


def _run(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise PromtoolFailure(f"promtool {' '.join(args)} timed out after {PROMTOOL_TIMEOUT_S}s") from exc
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise PromtoolFailure(f"promtool {' '.join(args)} exited {proc.returncode}:\n{output}")
    return output


class _PromtoolItem(pytest.Item):
    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, PromtoolFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.name


class CheckRulesItem(_PromtoolItem):
    """promtool check rules <file>; a PrometheusRule object is checked through its spec.groups."""

    def runtest(self):
        data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("kind") == "PrometheusRule":
            with tempfile.TemporaryDirectory() as tmp:
                plain = Path(tmp) / "rules.yaml"
                plain.write_text(yaml.safe_dump({"groups": data["spec"]["groups"]}), encoding="utf-8")
                _run(["check", "rules", str(plain)], cwd=ROOT)
        else:
            _run(["check", "rules", str(self.path)], cwd=ROOT)


class PromtoolTestItem(_PromtoolItem):
    """promtool test rules <file>; rule_files inside are relative to the test file."""

    def runtest(self):
        _run(["test", "rules", self.path.name], cwd=self.path.parent)


def rule_files() -> list[Path]:
    return sorted(p for p in ALERTS_DIR.rglob("*.yaml") if p.is_file()) if ALERTS_DIR.is_dir() else []


class PromtoolFile(pytest.File):
    def collect(self):
        yield PromtoolTestItem.from_parent(self, name="promtool-test-rules")


class GeneratedRulesFile(pytest.File):
    def collect(self):
        yield CheckRulesItem.from_parent(self, name="promtool-check-rules")


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".yml" and file_path.parent == PROMTOOL_DIR:
        return PromtoolFile.from_parent(parent, path=file_path)
    return None


class PromtoolDirectory(pytest.Dir):
    """tests/promtool: its .yml files, plus one check item per generated rule file (they live in alerts/)."""

    def collect(self):
        for path in rule_files():
            yield GeneratedRulesFile.from_parent(self, path=path)
        yield from super().collect()


def pytest_collect_directory(path: Path, parent):
    if path == PROMTOOL_DIR:
        return PromtoolDirectory.from_parent(parent, path=path)
    return None
