"""Small clients for the Prometheus and Alertmanager HTTP APIs, and the alert timeline built from both."""
from __future__ import annotations

import copy
import json
import queue
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Prometheus:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        body = _get(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        body = _get(f"{self.base}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=30)
        if body.get("status") != "success":
            raise RuntimeError(f"query_range failed for {expr!r}: {body.get('error')}")
        return body["data"]["result"]

    def alerts(self) -> list[dict]:
        return _get(f"{self.base}/api/v1/alerts")["data"]["alerts"]

    def rule_groups(self) -> list[dict]:
        return _get(f"{self.base}/api/v1/rules")["data"]["groups"]

    def alertmanagers(self) -> list[dict]:
        return _get(f"{self.base}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]

    def target_health(self) -> dict[str, str]:
        active = _get(f"{self.base}/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}


class Alertmanager:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def alerts(self) -> list[dict]:
        return _get(f"{self.base}/api/v2/alerts")


# Labels that tell instances of one alert apart: the SLO (SloMetricAbsent exists once per SLO), the window pair,
# the table, the statement (by queryid or by fingerprint), the index columns.
KEY_LABELS = ("sloth_id", "burn_window", "relname", "queryid", "fingerprint", "columns")


def alert_key(labels: dict) -> str:
    """One alert instance: its name plus the labels of KEY_LABELS it carries."""
    parts = [labels.get("alertname", "?")]
    for key in KEY_LABELS:
        if labels.get(key):
            parts.append(f"{key}={labels[key]}")
    return " ".join(parts)


@dataclass
class AlertRecord:
    key: str
    alertname: str
    severity: str
    pending_at: float | None = None           # first poll where it was pending
    firing_at: float | None = None            # first poll where it was firing
    resolved_at: float | None = None          # last poll where Prometheus stopped reporting it
    alertmanager_at: float | None = None      # first poll where Alertmanager had it active
    alertmanager_inhibited: bool = False
    periods: list[list[float]] = field(default_factory=list)   # [firing start, end or None], every one of them
    state: str = ""                           # as of the last successful poll: "", "pending" or "firing"


class AlertTimeline:
    """Polled once a second: every transition of every alert (pending, firing, resolved, pending dropped without
    firing), when each reached Alertmanager, and how many polls ran and failed (a failed poll is a gap).

    Thread-safe: the poller thread (AlertPoller) writes while the replay reads."""

    def __init__(self, prometheus: Prometheus, alertmanager: Alertmanager):
        self.prometheus, self.alertmanager = prometheus, alertmanager
        self.records: dict[str, AlertRecord] = {}
        self.events: list[tuple[float, str, str]] = []   # (time, source, text) in order
        self.polls = 0
        self.errors = 0
        self.poll_times: list[float] = []     # every successful poll, for the report's gap figures
        self._lock = threading.RLock()

    def poll(self, now: float | None = None) -> list[str]:
        """Returns the new events as printable lines."""
        try:
            # Alertmanager first: asked second, it could already hold an alert Prometheus was asked about as pending.
            am = self.alertmanager.alerts()
            prom = self.prometheus.alerts()
        except (OSError, ValueError, KeyError):   # unreachable, not JSON, not the API's shape: counted, reported
            with self._lock:
                self.polls += 1
                self.errors += 1
            return []
        now = now or time.time()
        with self._lock:
            self.polls += 1
            self.poll_times.append(now)
            return self._apply(now, prom, am)

    def _apply(self, now: float, prom: list[dict], am: list[dict]) -> list[str]:
        new: list[str] = []
        states: dict[str, tuple[dict, str]] = {}
        for a in prom:
            key = alert_key(a["labels"])
            # One key may cover several series (an unlisted label differs): firing wins over pending.
            if key not in states or a["state"] == "firing":
                states[key] = (a["labels"], a["state"])
        for key, (labels, state) in states.items():
            rec = self.records.get(key)
            if rec is None:
                rec = self.records[key] = AlertRecord(key, labels.get("alertname", "?"), labels.get("severity", ""))
            if state == "pending" and rec.state != "pending":
                rec.pending_at = rec.pending_at or now
                new.append(self._event(now, "prometheus", f"pending  {key}"))
            if state == "firing" and rec.state != "firing":
                rec.firing_at = rec.firing_at or now
                rec.periods.append([now, None])
                again = f" (again, firing period {len(rec.periods)})" if len(rec.periods) > 1 else ""
                new.append(self._event(now, "prometheus", f"FIRING   {key} [{rec.severity}]{again}"))
            rec.state = state
        for key, rec in self.records.items():
            if key in states or not rec.state:
                continue
            if rec.state == "firing":
                rec.periods[-1][1] = now
                new.append(self._event(now, "prometheus", f"resolved {key}"))
            else:
                new.append(self._event(now, "prometheus", f"inactive {key} (pending, never fired)"))
            rec.resolved_at = now
            rec.state = ""
        for a in am:
            key = alert_key(a["labels"])
            rec = self.records.get(key)
            if rec and rec.alertmanager_at is None and a["status"]["state"] in ("active", "suppressed"):
                rec.alertmanager_at = now
                rec.alertmanager_inhibited = bool(a["status"].get("inhibitedBy"))
                how = "inhibited by a critical alert" if rec.alertmanager_inhibited else "active"
                new.append(self._event(now, "alertmanager", f"received {key} ({how})"))
        return new

    def _event(self, when: float, source: str, text: str) -> str:
        self.events.append((when, source, text))
        return f"[{source}] {text}"

    def snapshot(self) -> list[AlertRecord]:
        """Copies of the records, safe to read while the poller runs."""
        with self._lock:
            return [copy.deepcopy(r) for r in self.records.values()]

    def firing(self) -> list[AlertRecord]:
        return [r for r in self.snapshot() if r.state == "firing"]

    def active_or_pending(self) -> list[str]:
        return [r.key for r in self.snapshot() if r.state]

    def largest_gap(self, start: float, end: float) -> float:
        """Longest stretch of [start, end] without a successful poll, in seconds."""
        with self._lock:
            times = [t for t in self.poll_times if start <= t <= end]
        edges = [start, *times, end]
        return max(b - a for a, b in zip(edges, edges[1:], strict=False))


class AlertPoller:
    """Polls an AlertTimeline once a second in a thread, from start-up to the end of the replay, whatever the
    replay's main thread is doing (waiting for diagnose, building the index). New event lines are queued for the
    main thread to print."""

    def __init__(self, timeline: AlertTimeline, interval: float = 1.0):
        self.timeline, self.interval = timeline, interval
        self.lines: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-poller", daemon=True)

    def start(self) -> AlertPoller:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            for line in self.timeline.poll():
                self.lines.put((time.time(), line))
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def drain(self) -> list[tuple[float, str]]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        """Stops after the poll under way (each poll's requests time out after 10 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(25)
