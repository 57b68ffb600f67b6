"""Text exposition and the HTTP server.

prometheus_client's generate_latest validates and escapes every label name of every sample; with 10k series that
took ~110 ms per scrape, more than the database work. Our label names are fixed identifiers, so only values are
escaped here, and gzip uses level 1 (prometheus_client uses 9) since the payload crosses a LAN, not the internet.
The collectors remain prometheus_client custom collectors; only the rendering is ours.
"""
from __future__ import annotations

import gzip
import html
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from .webconfig import LiveWebConfig, WebConfig

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


def landing_page(telemetry_path: str, version: str) -> bytes:
    """The exporter-toolkit style landing page: name, version, a link to the metrics."""
    return (f"<html><head><title>sloguard-pg-exporter</title></head><body><h1>sloguard-pg-exporter</h1>"
            f"<p>Prometheus exporter for PostgreSQL with missing-index evidence, version {html.escape(version)}</p>"
            f'<ul><li><a href="{html.escape(telemetry_path)}">Metrics</a></li></ul></body></html>\n').encode()


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    telemetry_path: str
    landing: bytes
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        cfg, auth = self.server.web.current()
        self.headers_out = cfg.headers if cfg else {}
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            # every path, landing page included, as the toolkit does; the credentials are never logged
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       extra={"WWW-Authenticate": 'Basic realm="sloguard-pg-exporter"'})
            return
        path = self.path.split("?")[0]
        if path == self.telemetry_path:
            body = render(self.registry)
            gz = _gzip_accepted(self.headers.get("Accept-Encoding"))
            self._send(200, gzip.compress(body, compresslevel=1) if gz else body, CONTENT_TYPE, gz)
        elif path == "/":
            self._send(200, self.landing, "text/html; charset=utf-8")
        else:
            self._send(404, f"not found: try {self.telemetry_path}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str, gz: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gz:
            self.send_header("Content-Encoding", "gzip")
        for name, value in {**self.headers_out, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        # the request line only: headers (Authorization) never reach a log
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """TLS, when configured, is negotiated in the request's own thread (not in accept()), so a client that never
    finishes its handshake cannot stall the others; a plain-HTTP client on an HTTPS port just gets disconnected."""
    daemon_threads = True
    allow_reuse_address = True
    web: LiveWebConfig
    handshake_timeout = 10.0

    def finish_request(self, request, client_address):
        cfg, _ = self.web.current()
        if cfg is not None and cfg.ssl_context is not None:
            request.settimeout(self.handshake_timeout)
            try:
                request = cfg.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address[0], e)
                return
            request.settimeout(None)
            try:
                super().finish_request(request, client_address)
            finally:
                self.shutdown_request(request)   # the wrapped socket: the caller only knows the raw one
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)


class MetricsServer:
    """ThreadingHTTPServer in a daemon thread; `shutdown()` stops it within its 0.1 s poll interval."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, *, telemetry_path: str = "/metrics",
                 web_config: WebConfig | None = None, version: str = ""):
        handler = type("Handler", (_Handler,), {
            "registry": registry, "telemetry_path": telemetry_path, "landing": landing_page(telemetry_path, version)})
        self.httpd = _Server((host, port), handler)
        self.httpd.web = LiveWebConfig(web_config)
        self.scheme = web_config.scheme if web_config else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(1)
