"""Starts the whole stack on 127.0.0.1 and stops it: PostgreSQL, exporter, demo API, alert sink, Alertmanager,
Prometheus, load generator. Ports are picked free; configs are the deploy/ files rewritten by configs.py."""
from __future__ import annotations

import contextlib
import os
import sys
import time

from demo.alert_sink import AlertSink
from sloguard.pgcluster import TempCluster, free_port
from sloguard.simulate import configs, seed
from sloguard.simulate.modes import Mode
from sloguard.simulate.processes import ProcessGroup
from sloguard.simulate.promapi import Alertmanager, Prometheus

PROMETHEUS_BIN = os.environ.get("SLOGUARD_PROMETHEUS", "/usr/bin/prometheus")
ALERTMANAGER_BIN = os.environ.get("SLOGUARD_ALERTMANAGER", "/usr/bin/prometheus-alertmanager")
DB = "app"


class Stack:
    def __init__(self, repo: str, workdir: str, mode: Mode, exporter_job: str, say=print):
        self.repo, self.workdir, self.mode, self.exporter_job, self.say = repo, workdir, mode, exporter_job, say
        self.procs = ProcessGroup(workdir)
        self.cluster: TempCluster | None = None
        self.sink: AlertSink | None = None
        self.ports = {k: free_port() for k in ("api", "exporter", "prometheus", "alertmanager")}
        self.rules_summary: dict = {}
        self.loadgen = None

    # --- addresses ---
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def prometheus(self) -> Prometheus:
        return Prometheus(self.url("prometheus"))

    @property
    def alertmanager(self) -> Alertmanager:
        return Alertmanager(self.url("alertmanager"))

    def dsn(self) -> str:
        assert self.cluster is not None
        return self.cluster.dsn(DB)

    # --- start ---
    def start_database(self) -> float:
        self.cluster = TempCluster(max_connections=self.mode.max_connections).start()
        self.cluster.psql(f"CREATE DATABASE {DB}")
        t = time.monotonic()
        self.cluster.psql(seed.setup_sql(self.mode.users), DB)
        return time.monotonic() - t

    def start_services(self) -> None:
        py = sys.executable
        exporter = self.procs.start("exporter", [
            py, "-m", "exporters.pg_exporter", "--dsn", self.dsn(),
            "--web.listen-address", f"127.0.0.1:{self.ports['exporter']}",
            # Re-check candidate indexes every few seconds: the fix must show within the compressed timeline.
            "--missing-index.recheck-seconds", "5", "--query-timeout", "3"], cwd=self.repo)
        api = self.procs.start("demo-api", [
            py, "-m", "demo.app", "--dsn", self.dsn(), "--listen", f"127.0.0.1:{self.ports['api']}",
            "--pool-size", str(self.mode.pool_size), "--request-timeout", str(self.mode.request_timeout)],
            cwd=self.repo)
        self.sink = AlertSink("127.0.0.1", 0).start()
        self._write_configs()
        am = self.procs.start("alertmanager", [
            ALERTMANAGER_BIN, f"--config.file={self.workdir}/alertmanager.yml",
            f"--storage.path={self.workdir}/am-data", f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
            "--cluster.listen-address=", "--log.level=warn"])
        prom = self.procs.start("prometheus", [
            PROMETHEUS_BIN, f"--config.file={self.workdir}/prometheus.yml",
            f"--storage.tsdb.path={self.workdir}/tsdb", f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
            "--storage.tsdb.retention.time=1d", "--log.level=warn"])
        self.procs.wait_http(exporter, f"{self.url('exporter')}/metrics", 60)
        self.procs.wait_http(api, f"{self.url('api')}/healthz")
        self.procs.wait_http(am, f"{self.url('alertmanager')}/-/ready")
        self.procs.wait_http(prom, f"{self.url('prometheus')}/-/ready")
        self._wait_targets_up(30)

    def _wait_targets_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            health = self.prometheus.target_health()
            if health and all(h == "up" for h in health.values()):
                return
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus targets not all up after {timeout:.0f}s: {health}")

    def _write_configs(self) -> None:
        with open(os.path.join(self.repo, "alerts", "sloguard-rules.yaml")) as f:
            rules, self.rules_summary = configs.compress_rules(
                f.read(), self.mode.time_factor, self.mode.min_range_ms, self.mode.keep_ticket_tier)
        with open(os.path.join(self.repo, "deploy", "prometheus", "prometheus.yml")) as f:
            prom_cfg = configs.prometheus_config(
                f.read(), f"{self.workdir}/rules.yaml",
                {"api": f"127.0.0.1:{self.ports['api']}", self.exporter_job: f"127.0.0.1:{self.ports['exporter']}",
                 "prometheus": f"127.0.0.1:{self.ports['prometheus']}"},
                f"127.0.0.1:{self.ports['alertmanager']}", self.mode.scrape_interval, self.exporter_job,
                self.mode.exporter_interval)
        with open(os.path.join(self.repo, "deploy", "alertmanager", "alertmanager.yml")) as f:
            am_cfg = configs.alertmanager_config(f.read(), f"http://127.0.0.1:{self.sink.port}")
        for name, text in (("rules.yaml", rules), ("prometheus.yml", prom_cfg), ("alertmanager.yml", am_cfg)):
            with open(os.path.join(self.workdir, name), "w") as f:
                f.write(text)

    def start_load(self, duration: float) -> None:
        self.loadgen = self.procs.start("loadgen", [
            sys.executable, "-m", "demo.loadgen", "--url", self.url("api"), "--rate", str(self.mode.rate),
            "--duration", str(int(duration)), "--users", str(self.mode.users), "--workers", "128",
            "--timeout", str(self.mode.request_timeout + 5)], cwd=self.repo)

    def stop_load(self) -> str:
        if self.loadgen is None:
            return ""
        self.procs.stop(self.loadgen, grace=self.mode.request_timeout + 8)
        return self.loadgen.tail(1).strip()

    def stop(self) -> None:
        self.procs.stop_all()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.stop()
        if self.cluster is not None:
            self.cluster.stop()


def exporter_job_from_spec(repo: str) -> str:
    """The Prometheus job of the exporter, as slo.yaml's database.exporter_job says (the rules select on it)."""
    from sloguard.spec import load_spec
    return load_spec(os.path.join(repo, "slo.yaml")).database.exporter_job
