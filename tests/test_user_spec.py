"""The user's slo.yaml: only what holds for any valid spec is checked (it loads and satisfies the schema, the committed
output is what it generates, promtool accepts every generated rule file). Behaviour tests use tests/specs/.

Proof that the suite survives the user's edits: copies of the repository whose slo.yaml gains a third SLO
(`search-latency` on a `/search` route, what issue 13 reported breaking `make test`), or loses one SLO and
renames another, are regenerated; the user-spec checks and the test files that read the repository's spec or
its committed output then run green on each copy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from sloguard.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# The test files that read the repository's slo.yaml or its committed output (the rest use tests/specs/ only).
# test_docs' plan measurement needs PostgreSQL and does not read the spec: left out to keep the copies fast.
READS_USER_SPEC = ["tests/test_rule_lint.py", "tests/test_mixin.py", "tests/test_spec_loader.py",
                   "tests/test_compose.py", "tests/test_docs.py", "tests/test_user_spec.py"]
DESELECT = "not measure_plans and not edited_copy"


def user_spec_problems(root: Path) -> list[str]:
    """What must hold for any valid spec in a checkout at `root`; [] when it does."""
    problems = []
    spec_path = root / "slo.yaml"
    try:
        load_spec(str(spec_path))
    except Exception as exc:  # noqa: BLE001 (the message is the finding)
        return [f"slo.yaml does not load: {exc}"]
    schema = jsonschema.Draft202012Validator(json.loads((root / "slo.schema.json").read_text(encoding="utf-8")))
    problems += [f"slo.schema.json rejects slo.yaml: {e.message}"
                 for e in schema.iter_errors(yaml.safe_load(spec_path.read_text(encoding="utf-8")))]
    fresh = subprocess.run([sys.executable, str(root / "generate.py"), "--spec", str(spec_path), "--out", str(root),
                            "--check"], capture_output=True, text=True, timeout=120)
    if fresh.returncode != 0:
        problems.append(f"committed output is not what slo.yaml generates:\n{fresh.stderr}")
    for path in sorted((root / "alerts").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        groups = data["spec"]["groups"] if data.get("kind") == "PrometheusRule" else data["groups"]
        plain = root / ".user-spec-check.yaml"
        plain.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
        try:
            proc = subprocess.run([PROMTOOL, "check", "rules", str(plain)], capture_output=True, text=True,
                                  timeout=120)
        finally:
            plain.unlink()
        if proc.returncode != 0:
            problems.append(f"promtool rejects {path.relative_to(root)}:\n{proc.stdout}{proc.stderr}")
    return problems


def test_the_repositorys_spec_passes_the_user_spec_checks():
    assert user_spec_problems(ROOT) == []


# --- edited copies --------------------------------------------------------------------------------------------

SEARCH_SLO = """  - name: search-latency
    description: Search answered within 300 ms.
    objective: 99.5
    window: 30d
    sli:
      latency:
        metric: http_request_duration_seconds{job="api",route="/search"}
        threshold: 0.3
"""


def add_search_latency(text: str) -> str:
    assert "\nalerting:" in text
    return text.replace("\nalerting:", "\n" + SEARCH_SLO + "\nalerting:", 1)


def rename_and_remove(text: str) -> str:
    """Drop the first SLO, rename every remaining one (names as a user might pick them)."""
    data = yaml.safe_load(text)
    assert len(data["slos"]) >= 2
    data["slos"] = [{**slo, "name": f"api-{slo['name']}-v2"} for slo in data["slos"][1:]]
    return yaml.safe_dump(data, sort_keys=False)


def copy_repository(dest: Path) -> Path:
    """The files of this checkout git knows or would add (not ignored ones such as .venv), as they are on disk."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


@pytest.mark.timeout(600)
@pytest.mark.parametrize("edit", [add_search_latency, rename_and_remove], ids=["add-search-latency",
                                                                              "rename-and-remove"])
def test_edited_copy_of_the_users_spec_keeps_the_suite_green(edit, tmp_path):
    repo = copy_repository(tmp_path / "repo")
    spec = repo / "slo.yaml"
    spec.write_text(edit(spec.read_text(encoding="utf-8")), encoding="utf-8")
    generated = subprocess.run([sys.executable, "generate.py"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stderr
    assert user_spec_problems(repo) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *READS_USER_SPEC,
                            "-k", DESELECT], cwd=repo, capture_output=True, text=True, timeout=540, env=env)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert " passed" in suite.stdout
