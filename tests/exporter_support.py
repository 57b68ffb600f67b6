"""Start the real exporter CLI as a subprocess and scrape it over HTTP (shared by tests/test_exporter*.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

from sloguard.pgcluster import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Sample:
    name: str
    labels: dict
    value: float


class RunningExporter:
    """`scheme`, `path`, `verify` (CA file), `auth` (user, password) and `cert` (client cert, key): the HTTP side
    of an exporter run with --web.* flags."""

    def __init__(self, args: list[str], env: dict | None = None, *, scheme: str = "http", path: str = "/metrics",
                 verify: str | bool = True, auth: tuple[str, str] | None = None,
                 cert: tuple[str, str] | None = None):
        self.port = free_port()
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.url = self.base_url + path
        self.session = requests.Session()
        self.session.trust_env = False   # else REQUESTS_CA_BUNDLE from the environment overrides `verify`
        self.session.verify = verify
        self.session.auth = auth
        self.session.cert = cert
        fd, self.log_path = tempfile.mkstemp(prefix="sloguard-exporter-", suffix=".log")
        inherited = {k: v for k, v in os.environ.items() if k not in ("PG_EXPORTER_DSN", "PG_EXPORTER_PASSWORD_FILE",
                                                                      "PGPASSWORD")}
        with os.fdopen(fd, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exporters.pg_exporter", "--web.listen-address", f"127.0.0.1:{self.port}",
                 *args],
                cwd=ROOT, env={**inherited, "PYTHONPATH": ROOT, **(env or {})}, stdout=log_file,
                stderr=subprocess.STDOUT)
        try:
            self._wait_listening()
        except BaseException:
            self.cleanup()
            raise

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited {self.proc.returncode}: {self.log()}")
            try:
                self.session.get(self.url, timeout=10)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"exporter not listening after {timeout}s: {self.log()}")

    def scrape_text(self) -> str:
        r = self.session.get(self.url, timeout=30)
        r.raise_for_status()
        return r.text

    def scrape(self) -> list[Sample]:
        return parse(self.scrape_text())

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def finish(self) -> str:
        """Stop, remove the log file and return what it said."""
        self.stop()
        text = self.log()
        self.cleanup()
        return text

    def cleanup(self) -> None:
        self.stop()
        self.session.close()
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)


def parse(text: str) -> list[Sample]:
    return [Sample(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def values(samples: list[Sample], name: str, **labels) -> list[float]:
    return [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def one(samples: list[Sample], name: str, **labels) -> float:
    found = values(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: expected one sample, got {found}"
    return found[0]
