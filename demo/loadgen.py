"""Open-loop load for the demo API: `python -m demo.loadgen --url http://127.0.0.1:8080 --rate 60 --duration 120`.

Open loop (requests are scheduled at a fixed rate whatever the answers) so a slow database builds a queue, as real
users do; a closed loop would slow down with the server and hide the incident. Bounded three ways: duration,
request count and in-flight workers; ticks that find every worker busy are counted as shed, not queued forever.
Only 127.0.0.1/localhost targets are accepted.
"""
from __future__ import annotations

import argparse
import http.client
import json
import queue
import random
import signal
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def user_email(n: int) -> str:
    """Same shape as sloguard.scenario_data.seed_sql's emails."""
    return f"user{n}@example.com"


class LoadGen:
    def __init__(self, url: str, rate: float, duration: float, max_requests: int, workers: int, users: int,
                 orders_share: float, timeout: float, seed: int = 42):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
            raise ValueError(f"--url {url!r}: only http://127.0.0.1:PORT (or localhost) targets are allowed")
        self.host, self.port = parts.hostname, parts.port or 80
        self.rate, self.duration, self.max_requests = rate, duration, max_requests
        self.workers, self.users, self.orders_share, self.timeout = workers, users, orders_share, timeout
        self.rng = random.Random(seed)
        self.tickets: queue.Queue = queue.Queue(maxsize=workers)
        self.stop_event = threading.Event()
        self.results: Counter = Counter()
        self.lock = threading.Lock()

    def _path(self) -> str:
        if self.rng.random() < self.orders_share:
            return "/orders/recent?since=2023-12-30"
        return f"/login?email={user_email(self.rng.randint(1, self.users))}"

    def _worker(self) -> None:
        conn = None
        while True:
            path = self.tickets.get()
            if path is None:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                outcome = str(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"client-{type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.results[outcome] += 1
        if conn is not None:
            conn.close()

    def run(self) -> dict:
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        start = time.monotonic()
        sent = 0
        interval = 1.0 / self.rate
        try:
            while not self.stop_event.is_set() and sent < self.max_requests:
                now = time.monotonic()
                if now - start >= self.duration:
                    break
                next_at = start + sent * interval
                if next_at > now:
                    self.stop_event.wait(next_at - now)
                    continue
                try:
                    self.tickets.put_nowait(self._path())
                except queue.Full:
                    with self.lock:
                        self.results["shed"] += 1
                sent += 1
        finally:
            for _ in threads:
                self.tickets.put(None)
            for t in threads:
                t.join(timeout=self.timeout + 1)
        return {"scheduled": sent, "seconds": round(time.monotonic() - start, 1), "outcomes": dict(self.results)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds, at most 3600")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=32, help="requests in flight at most")
    p.add_argument("--users", type=int, default=100_000, help="seeded users to pick login emails from")
    p.add_argument("--orders-share", type=float, default=0.05, help="share of requests to /orders/recent")
    p.add_argument("--timeout", type=float, default=10.0, help="client socket timeout, seconds")
    args = p.parse_args(argv)
    problems = []
    if not 0 < args.rate <= 2000:
        problems.append("--rate must be in (0, 2000]")
    if not 0 < args.duration <= 3600:
        problems.append("--duration must be in (0, 3600]")
    if not 1 <= args.workers <= 256:
        problems.append("--workers must be in [1, 256]")
    if not 0 <= args.orders_share <= 1:
        problems.append("--orders-share must be in [0, 1]")
    try:
        gen = LoadGen(args.url, args.rate, args.duration, args.max_requests, args.workers, args.users,
                      args.orders_share, args.timeout)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        print("demo.loadgen: " + "; ".join(problems), file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: gen.stop_event.set())
    summary = gen.run()
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
