"""Demo API: `python -m demo.app --dsn DSN --listen 127.0.0.1:8080`.

Routes (GET): /login?email=E (the scenario's login lookup), /orders/recent?since=YYYY-MM-DD (the scenario's join),
/healthz, /metrics. Each request has a deadline (`--request-timeout`): waiting for a pool connection or for the
database past it answers 504, the scenario's timeouts, which the availability SLO counts as errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from demo.metrics import ApiMetrics
from demo.pool import BoundedPool, PoolTimeout
from sloguard.scenario_data import LOGIN_QUERY, RECENT_ORDERS_QUERY

log = logging.getLogger("demo.app")

# Bound the join's output: the scenario's query returns every matching order, we only need its plan and cost.
RECENT_ORDERS_SQL = RECENT_ORDERS_QUERY + " LIMIT 50"


class DemoApi:
    def __init__(self, pool: BoundedPool, request_timeout: float):
        self.pool = pool
        self.request_timeout = request_timeout
        self.metrics = ApiMetrics(pool)
        self._last_logged: dict[str, float] = {}

    def handle(self, path: str, query: dict[str, list[str]]) -> tuple[str, int, dict]:
        """Returns (route label, status code, JSON body). Route labels are fixed strings: bounded cardinality."""
        if path == "/login":
            email = (query.get("email") or [""])[0]
            if not email:
                return "/login", 400, {"error": "missing query parameter: email"}
            return "/login", *self._query(LOGIN_QUERY, (email,))
        if path == "/orders/recent":
            since = (query.get("since") or ["2023-12-30"])[0]
            return "/orders/recent", *self._query(RECENT_ORDERS_SQL, (since,))
        if path == "/healthz":
            return "/healthz", 200, {"status": "ok"}
        return "other", 404, {"error": "not found"}

    def _query(self, sql: str, params: tuple) -> tuple[int, dict]:
        deadline = time.monotonic() + self.request_timeout
        try:
            with self.pool.connection(deadline) as conn, conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
            return 200, {"rows": len(rows)}
        except PoolTimeout:
            return 504, {"error": "timed out waiting for a database connection"}
        except psycopg.errors.QueryCanceled:
            return 504, {"error": "database statement timed out"}
        except psycopg.Error as exc:
            self._log_db_error(type(exc).__name__)
            return 500, {"error": "database error"}

    def _log_db_error(self, name: str) -> None:
        # The class name only (the message may quote data), at most once per 10 s per class: an outage must not
        # turn into thousands of log lines a second.
        now = time.monotonic()
        if now - self._last_logged.get(name, -1e9) >= 10:
            self._last_logged[name] = now
            log.warning("database error: %s", name)


def make_handler(api: DemoApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            start = time.perf_counter()
            url = urlsplit(self.path)
            if url.path == "/metrics":
                body = generate_latest(api.metrics.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
                return
            route, code, payload = api.handle(url.path, parse_qs(url.query))
            self._send(code, json.dumps(payload).encode(), "application/json")
            api.metrics.observe(route, code, time.perf_counter() - start)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:  # access logs off: thousands of lines per minute
            pass

    return Handler


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo.app", description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("DEMO_DSN"), help="libpq DSN (or DEMO_DSN); password via PGPASSWORD")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8080), help="HOST:PORT")
    p.add_argument("--pool-size", type=int, default=int(os.environ.get("DEMO_POOL_SIZE", "10")))
    p.add_argument("--request-timeout", type=float, default=float(os.environ.get("DEMO_REQUEST_TIMEOUT", "2")),
                   help="seconds before a request answers 504")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.dsn:
        print("demo.app: no database: pass --dsn or set DEMO_DSN, e.g. 'host=127.0.0.1 dbname=app'", file=sys.stderr)
        return 2
    if args.pool_size < 1 or args.request_timeout <= 0:
        print("demo.app: --pool-size must be >= 1 and --request-timeout > 0", file=sys.stderr)
        return 2
    pool = BoundedPool(args.dsn, args.pool_size, statement_timeout_ms=int(args.request_timeout * 1000))
    api = DemoApi(pool, args.request_timeout)
    server = ThreadingHTTPServer(args.listen, make_handler(api))
    server.daemon_threads = True

    def stop(signum, _frame):
        # shutdown() blocks until serve_forever returns, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on %s:%d, pool size %d, request timeout %.1fs", *args.listen, args.pool_size,
             args.request_timeout)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
