"""The authenticated scrape (docker-compose.auth.yml, deploy/prometheus/prometheus.auth.yml,
deploy/exporter/make-web-config.sh): valid, in step with the plain files, and working with real Prometheus 2.42."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml

from sloguard.pgcluster import free_port
from tests.exporter_support import RunningExporter
from tests.test_compose import mounts

EXPORTER_JOB = "sloguard-pg-exporter"
AUTH_KEYS = ("scheme", "basic_auth", "tls_config")
DB = "compose_auth"


def load(repo_root: str, rel: str) -> dict:
    with open(os.path.join(repo_root, rel)) as f:
        return yaml.safe_load(f)


def exporter_job(cfg: dict) -> dict:
    return next(j for j in cfg["scrape_configs"] if j["job_name"] == EXPORTER_JOB)


@pytest.fixture(scope="module")
def secrets(repo_root, tmp_path_factory):
    """What an operator runs once, into a test directory."""
    out = tmp_path_factory.mktemp("exporter-secrets")
    proc = subprocess.run(["bash", os.path.join(repo_root, "deploy/exporter/make-web-config.sh"), str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_auth_prometheus_config_is_the_plain_one_plus_the_exporter_jobs_auth(repo_root):
    plain, auth = load(repo_root, "deploy/prometheus/prometheus.yml"), load(repo_root, "deploy/prometheus/prometheus.auth.yml")
    job = exporter_job(auth)
    assert job["scheme"] == "https"
    assert job["basic_auth"]["username"] == "prometheus" and "password" not in job["basic_auth"]
    assert job["tls_config"]["server_name"] == "pg-exporter"
    stripped = copy.deepcopy(auth)
    for key in AUTH_KEYS:
        exporter_job(stripped).pop(key)
    assert stripped == plain, "prometheus.auth.yml drifted from prometheus.yml beyond the exporter job's auth"


def test_compose_override_mounts_the_web_config_and_the_auth_prometheus_config(repo_root):
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (scripts/setup-system.sh)")
    env = {**os.environ, "POSTGRES_PASSWORD": "test-only"}
    proc = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "-f", "docker-compose.auth.yml", "config"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    command = services["pg-exporter"]["command"]
    web_config = command[command.index("--web.config.file") + 1]
    exporter_mounts = mounts(services["pg-exporter"])
    mount = os.path.dirname(web_config)
    assert exporter_mounts[mount].endswith("deploy/exporter/secrets")
    prom_mounts = mounts(services["prometheus"])
    assert prom_mounts["/etc/prometheus/prometheus.yml"].endswith("deploy/prometheus/prometheus.auth.yml")
    job = exporter_job(load(repo_root, "deploy/prometheus/prometheus.auth.yml"))
    for path in (job["basic_auth"]["password_file"], job["tls_config"]["ca_file"]):
        assert os.path.dirname(path) in prom_mounts and prom_mounts[os.path.dirname(path)] == exporter_mounts[mount]
    with open(os.path.join(repo_root, ".gitignore")) as f:
        assert "deploy/exporter/secrets/" in f.read().split()


def local_copy(repo_root: str, secrets, target: str, rules: bool) -> dict:
    """prometheus.auth.yml with the secrets directory and the exporter target of this test."""
    cfg = load(repo_root, "deploy/prometheus/prometheus.auth.yml")
    job = exporter_job(cfg)
    job["basic_auth"]["password_file"] = str(secrets / os.path.basename(job["basic_auth"]["password_file"]))
    job["tls_config"]["ca_file"] = str(secrets / os.path.basename(job["tls_config"]["ca_file"]))
    if not rules:
        cfg.pop("rule_files")
        cfg.pop("alerting")
    cfg["scrape_configs"] = [job]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    return cfg


def test_promtool_accepts_the_auth_config(repo_root, secrets, tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(local_copy(repo_root, secrets, "127.0.0.1:9188", rules=False)))
    proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_scrapes_the_exporter_over_https_with_basic_auth(repo_root, secrets, pg_cluster, tmp_path):
    with pg_cluster.database(DB) as dsn:
        exp = RunningExporter(["--dsn", dsn, "--web.config.file", str(secrets / "web-config.yml")], scheme="https",
                              verify=str(secrets / "tls.crt"),
                              auth=("prometheus", (secrets / "scrape-password").read_text()))
        prom_port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(local_copy(repo_root, secrets, f"127.0.0.1:{exp.port}", rules=False)))
        prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            health, error, up = None, None, None
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    targets = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5).json()
                    active = targets["data"]["activeTargets"]
                    if active and active[0]["health"] != "unknown":
                        health, error = active[0]["health"], active[0]["lastError"]
                        if health == "up":
                            r = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                                             params={"query": "sloguard_pg_up"}, timeout=5).json()
                            if r["data"]["result"]:
                                up = r["data"]["result"][0]["value"][1]
                                break
                except requests.ConnectionError:
                    pass
                time.sleep(0.5)
        finally:
            prom.terminate()
            prom.wait(timeout=20)
            log = exp.log()
            exp.cleanup()
    assert health == "up" and up == "1", (health, error, log)
    assert (secrets / "scrape-password").read_text() not in log
