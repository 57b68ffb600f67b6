"""`--log.format logfmt|json` and `--log.level`, as postgres_exporter (go-kit) writes them, on stderr.

    ts=2026-01-15T14:31:00.123Z level=info caller=__main__.py:120 msg="listening" address=127.0.0.1:9188
    {"ts": "2026-01-15T14:31:00.123Z", "level": "info", "caller": "__main__.py:120", "msg": "listening"}

Message text is whatever the modules log with %-formatting; extra key/values come from `extra={"kv": {...}}`.
Nothing here adds request headers or DSNs: callers log redacted values only.
"""
from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("logfmt", "json")
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
                logging.CRITICAL: "error"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
    out: dict[str, object] = {"ts": ts, "level": _LEVEL_NAMES.get(record.levelno, "info"),
                              "caller": f"{record.filename}:{record.lineno}", "msg": record.getMessage()}
    out.update(getattr(record, "kv", None) or {})
    if record.exc_info:
        out["err"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def configure(fmt: str, level: str, stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.getLogger("psycopg").setLevel(max(LEVELS[level], logging.WARNING))   # its debug chatter is not ours
