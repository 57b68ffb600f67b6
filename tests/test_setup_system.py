"""scripts/setup-system.sh, which `make test` runs first: fast and silent work when everything is installed, and a
clear message (not a sudo prompt or a stack of apt errors) for a non-root user when something is missing."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup-system.sh"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run(args: list[str], path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PATH": path})


def test_everything_present_is_a_no_op():
    proc = _run([], os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("setup-system: all ") and "packages present" in proc.stdout


def test_non_root_without_usable_sudo_gets_the_command_to_run(tmp_path):
    """dpkg says postgresql-15 is missing; the user is not root and sudo wants a password: no install attempt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "apt-get-ran"
    _stub(bin_dir, "id", 'echo 1000')
    _stub(bin_dir, "sudo", 'exit 1')
    _stub(bin_dir, "apt-get", f'touch {marker}; exit 1')
    # every package installed except postgresql-15
    _stub(bin_dir, "dpkg-query", 'for a in "$@"; do case "$a" in -*|*Package*) ;; postgresql-15) ;; '
                                 '*) echo "$a install ok installed";; esac; done')
    proc = _run([], f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode == 1
    assert "missing system packages: postgresql-15" in proc.stderr
    assert "run once as root: bash scripts/setup-system.sh" in proc.stderr
    assert not marker.exists()


def test_python_group_checks_only_python(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "dpkg-query", 'for a in "$@"; do case "$a" in -*|*Package*) ;; '
                                 '*) echo "$a install ok installed";; esac; done')
    proc = _run(["python"], f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode == 0 and "all 2 packages present" in proc.stdout
    assert _run(["bogus"], os.environ["PATH"]).returncode == 2


def test_make_test_runs_the_system_setup_first():
    # under `make test` the environment carries MAKEFLAGS/MAKELEVEL ("Entering directory" lines): not ours to read
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    proc = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert "scripts/setup-system.sh" in lines[0], lines[:3]
