"""The one Prometheus call check-live needs: an instant query, bounded in time."""
from __future__ import annotations

import requests

TIMEOUT_SECONDS = 10


class Unreachable(Exception):
    """Prometheus did not answer, or refused a query: the check cannot run (exit 2)."""


class PrometheusAPI:
    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.queries = 0

    def query(self, expr: str) -> list[dict]:
        """Instant query -> result vector ([{"metric": {...}, "value": [t, "v"]}])."""
        self.queries += 1
        try:
            resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach Prometheus at {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            raise Unreachable(f"{self.url} did not answer like a Prometheus API (HTTP {resp.status_code}, "
                              "not JSON)") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise Unreachable(f"Prometheus at {self.url} refused {expr!r}: {body.get('error', resp.status_code)}")
        return body["data"]["result"]
