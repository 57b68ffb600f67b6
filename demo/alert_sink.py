"""A local Alertmanager webhook receiver: `python -m demo.alert_sink --listen 127.0.0.1:9099`.

POST /<receiver> records each notification (receiver, status, alert names); GET /notifications returns them as
JSON, GET /metrics counts them. The simulation embeds `AlertSink` to prove the page/ticket routing; compose runs it
as the stand-in for PagerDuty or a ticket system.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_KEPT = 10_000          # bounded memory whatever Alertmanager sends
MAX_BODY = 1_000_000


class AlertSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.notifications: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def _record(self, receiver: str, payload: dict) -> None:
        entry = {
            "received_at": time.time(), "receiver": receiver, "status": payload.get("status", ""),
            "alerts": [{"alertname": a.get("labels", {}).get("alertname", ""), "status": a.get("status", ""),
                        "severity": a.get("labels", {}).get("severity", "")}
                       for a in payload.get("alerts", [])],
        }
        with self.lock:
            if len(self.notifications) < MAX_KEPT:
                self.notifications.append(entry)

    def _handler(self):
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._reply(413, {"error": "body too large"})
                    return
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._reply(400, {"error": "body is not JSON"})
                    return
                sink._record(self.path.strip("/") or "default", payload)
                self._reply(200, {"ok": True})

            def do_GET(self) -> None:  # noqa: N802
                with sink.lock:
                    items = list(sink.notifications)
                if self.path == "/metrics":
                    counts: dict[tuple[str, str], int] = {}
                    for n in items:
                        counts[(n["receiver"], n["status"])] = counts.get((n["receiver"], n["status"]), 0) + 1
                    lines = ["# TYPE alert_sink_notifications_total counter"] + [
                        f'alert_sink_notifications_total{{receiver="{r}",status="{s}"}} {c}'
                        for (r, s), c in sorted(counts.items())]
                    self._reply(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
                    return
                self._reply(200, items)

            def _reply(self, code: int, body, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args) -> None:
                pass

        return Handler

    def start(self) -> AlertSink:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo.alert_sink", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:9099", help="HOST:PORT")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        print(f"demo.alert_sink: --listen {args.listen!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    sink = AlertSink(host or "127.0.0.1", int(port))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=sink.server.shutdown, daemon=True).start())
    print(f"alert sink listening on {args.listen}", flush=True)
    try:
        sink.server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sink.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
