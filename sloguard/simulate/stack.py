"""Starts the whole stack on 127.0.0.1 and stops it: PostgreSQL, exporter, demo API, alert sink, Alertmanager,
Prometheus, load generator. Ports are picked free just before each bind; configs are the deploy/ files rewritten
by configs.py."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from demo.alert_sink import AlertSink
from sloguard.pgcluster import TempCluster, free_port
from sloguard.simulate import configs, seed
from sloguard.simulate.modes import Mode
from sloguard.simulate.processes import Child, PortInUse, ProcessGroup
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
        self.ports: dict[str, int] = {}     # filled as each service is launched (see _launch)
        self.pick_port = free_port
        self.rules_summary: dict = {}
        self.loadgen = None
        self._prometheus: Child | None = None

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
        # Assigned before start() so that stop() cleans up whatever happens next.
        self.cluster = TempCluster(max_connections=self.mode.max_connections)
        self.cluster.start()
        self.cluster.psql(f"CREATE DATABASE {DB}")
        t = time.monotonic()
        self.cluster.psql(seed.setup_sql(self.mode.users), DB)
        # VACUUM now (not in setup_sql: it cannot run in psql's one-transaction -c string) so that autovacuum, woken
        # by the bulk insert, does not land in the healthy phase and slow the login queries there.
        self.cluster.psql(seed.VACUUM_SQL, DB)
        return time.monotonic() - t

    def start_services(self) -> None:
        """Everything up and scraped, no rule loaded yet: call arm_alerting() next."""
        self.sink = AlertSink("127.0.0.1", 0).start()    # in-process, port 0: bound at once, no race
        # The exporter, the API and Alertmanager start together; Prometheus last, as its config names their ports.
        children = {name: self._launch(name) for name in ("exporter", "demo-api", "alertmanager")}
        for name, child in children.items():
            self._wait_listening(name, child)
        self._prometheus = self._wait_listening("prometheus", self._launch("prometheus"))
        self._wait_first_scrapes(60)

    def arm_alerting(self) -> None:
        """Load the rules and the Alertmanager target (SIGHUP reload) once every target has been scraped.

        Prometheus starts with no rules: loaded at once, absent(up{...}) and up == 0 would be true until the
        exporter's first scrape (slow: its first statistics and index checks), and PostgresExporterDown would fire
        and notify before any load. Armed after the first successful scrapes, the rules start from real data."""
        self._write_prometheus_config(armed=True)
        self._prometheus.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (self.prometheus.rule_groups() and self.prometheus.alertmanagers()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus did not load the rules within 30s:\n{self._prometheus.tail()}")
            self.procs.check_alive()
            time.sleep(0.2)

    # Each port is picked just before its process binds it, and picked again if another process took it meanwhile.
    PORT_ATTEMPTS = 3
    _READY = {"exporter": ("/metrics", 60), "demo-api": ("/healthz", 30), "alertmanager": ("/-/ready", 30),
              "prometheus": ("/-/ready", 30)}
    _PORT_KEY = {"exporter": "exporter", "demo-api": "api", "alertmanager": "alertmanager", "prometheus": "prometheus"}

    def _launch(self, name: str) -> Child:
        port = self.pick_port()
        self.ports[self._PORT_KEY[name]] = port
        py, listen = sys.executable, f"127.0.0.1:{port}"
        if name == "exporter":
            return self.procs.start(name, [
                py, "-m", "exporters.pg_exporter", "--dsn", self.dsn(), "--web.listen-address", listen,
                # Re-check candidate indexes every few seconds: the fix must show within the compressed timeline.
                "--missing-index.recheck-seconds", "5",
                "--query-timeout", str(self.mode.exporter_query_timeout_s)], cwd=self.repo)
        if name == "demo-api":
            return self.procs.start(name, [
                py, "-m", "demo.app", "--dsn", self.dsn(), "--listen", listen,
                "--pool-size", str(self.mode.pool_size), "--request-timeout", str(self.mode.request_timeout)],
                cwd=self.repo)
        if name == "alertmanager":
            self._write_alertmanager_config()
            return self.procs.start(name, [
                ALERTMANAGER_BIN, f"--config.file={self.workdir}/alertmanager.yml",
                f"--storage.path={self.workdir}/am-data", f"--web.listen-address={listen}",
                "--cluster.listen-address=", "--log.level=warn"])
        if name == "prometheus":
            self._write_prometheus_config(armed=False)
            return self.procs.start(name, [
                PROMETHEUS_BIN, f"--config.file={self.workdir}/prometheus.yml",
                f"--storage.tsdb.path={self.workdir}/tsdb", f"--web.listen-address={listen}",
                "--storage.tsdb.retention.time=1d", "--log.level=warn"])
        raise ValueError(f"unknown service {name!r}")

    def _wait_listening(self, name: str, child: Child) -> Child:
        path, timeout = self._READY[name]
        for attempt in range(1, self.PORT_ATTEMPTS + 1):
            try:
                self.procs.wait_http(child, self.url(self._PORT_KEY[name]) + path, timeout)
                return child
            except PortInUse:
                if attempt == self.PORT_ATTEMPTS:
                    raise
                self.say(f"  {name}: port {self.ports[self._PORT_KEY[name]]} taken meanwhile, picking another")
                child = self._launch(name)
        return child

    def _wait_first_scrapes(self, timeout: float) -> None:
        """Until every target's last scrape succeeded and the exporter reaches PostgreSQL (sloguard_pg_up 1)."""
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        pg_up: list[dict] = []
        while time.monotonic() < deadline:
            health = self.prometheus.target_health()
            if health and all(h == "up" for h in health.values()):
                pg_up = self.prometheus.query(f'sloguard_pg_up{{job="{self.exporter_job}"}} == 1')
                if pg_up:
                    return
            self.procs.check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus targets not all scraped successfully after {timeout:.0f}s: {health}, "
                           f"sloguard_pg_up == 1: {bool(pg_up)}")

    def _write(self, name: str, text: str) -> None:
        with open(os.path.join(self.workdir, name), "w") as f:
            f.write(text)

    def _write_alertmanager_config(self) -> None:
        with open(os.path.join(self.repo, "deploy", "alertmanager", "alertmanager.yml")) as f:
            self._write("alertmanager.yml", configs.alertmanager_config(f.read(), f"http://127.0.0.1:{self.sink.port}"))

    def _write_prometheus_config(self, armed: bool) -> None:
        """Scrape-only at start-up (armed False); with the compressed rules and Alertmanager once armed."""
        if armed:
            with open(os.path.join(self.repo, "alerts", "sloguard-rules.yaml")) as f:
                rules, self.rules_summary = configs.compress_rules(
                    f.read(), self.mode.time_factor, self.mode.min_range_ms, self.mode.keep_ticket_tier,
                    self.mode.min_for_ms)
            self._write("rules.yaml", rules)
        with open(os.path.join(self.repo, "deploy", "prometheus", "prometheus.yml")) as f:
            prom_cfg = configs.prometheus_config(
                f.read(), f"{self.workdir}/rules.yaml" if armed else None,
                {"api": f"127.0.0.1:{self.ports['api']}", self.exporter_job: f"127.0.0.1:{self.ports['exporter']}",
                 "prometheus": f"127.0.0.1:{self.ports['prometheus']}"},
                f"127.0.0.1:{self.ports['alertmanager']}" if armed else None, self.mode.scrape_interval,
                self.exporter_job, self.mode.exporter_interval)
        self._write("prometheus.yml", prom_cfg)

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
