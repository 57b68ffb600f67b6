"""Text exposition and the HTTP server.

prometheus_client's generate_latest validates and escapes every label name of every sample; with 10k series that
took ~110 ms per scrape, more than the database work. Our label names are fixed identifiers, so only values are
escaped here, and gzip uses level 1 (prometheus_client uses 9) since the payload crosses a LAN, not the internet.
The collectors remain prometheus_client custom collectors; only the rendering is ours.
"""
from __future__ import annotations

import gzip
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger(__name__)


def _escape_value(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4 for gauge and counter families (all the exporter emits)."""
    out: list[str] = []
    # collectors share one labels dict across a row's families (base.add_rows): format it once per scrape.
    # Keyed by id(): the families, and so the dicts, stay alive until this function returns.
    label_text: dict[int, str] = {}
    families = list(registry.collect())
    for fam in families:
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        if fam.type == "counter":
            out.append(f"# HELP {name} {_escape_help(fam.documentation)}\n# TYPE {name} counter\n")
        else:
            out.append(f"# HELP {fam.name} {_escape_help(fam.documentation)}\n# TYPE {fam.name} {fam.type}\n")
        for s in fam.samples:
            value = floatToGoString(s.value)
            if s.labels:
                labels = label_text.get(id(s.labels))
                if labels is None:
                    labels = label_text[id(s.labels)] = ",".join(
                        f'{k}="{_escape_value(v)}"' for k, v in s.labels.items())
                out.append(f"{s.name}{{{labels}}} {value}\n")
            else:
                out.append(f"{s.name} {value}\n")
    return "".join(out).encode()


def _gzip_accepted(header: str | None) -> bool:
    return any(part.split(";")[0].strip() == "gzip" for part in (header or "").split(","))


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")
            return
        if self.path == "/":
            self._send(200, b'<html><body><a href="/metrics">metrics</a></body></html>\n', "text/html")
            return
        body = render(self.registry)
        gz = _gzip_accepted(self.headers.get("Accept-Encoding"))
        self._send(200, gzip.compress(body, compresslevel=1) if gz else body, CONTENT_TYPE, gz)

    def _send(self, code: int, body: bytes, content_type: str, gz: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """ThreadingHTTPServer in a daemon thread; `shutdown()` stops it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry):
        handler = type("Handler", (_Handler,), {"registry": registry})
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
