"""`--web.config.file`: the prometheus/exporter-toolkit web configuration (TLS and basic auth), read and checked.

Same YAML as every official exporter (https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to the web config file, as in the toolkit
      key_file: server.key
      client_ca_file: clients-ca.crt   # optional
      client_auth_type: RequireAndVerifyClientCert   # default when client_ca_file is set
      min_version: TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n', or `hash-password` below)

TLS is Python's `ssl` module (OpenSSL); bcrypt hashes are checked with the `bcrypt` package (pyca). Everything is
validated at start: a bad file is a ConfigError naming the file and the field, never a half-configured server.
Keys the toolkit has but we do not implement (cipher_suites, curve_preferences, ...) are refused rather than
ignored: silently weaker TLS than the file asks for would be worse than not starting.

`python -m exporters.pg_exporter.webconfig hash-password` reads a password on stdin and prints its bcrypt hash.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field

import bcrypt
import yaml

# exporter-toolkit's client_auth_type values -> what OpenSSL can do. Go's RequestClientCert/RequireAnyClientCert
# accept a certificate without verifying it; OpenSSL (ssl module) cannot, so they are refused with the fix.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
                "TLS13": ssl.TLSVersion.TLSv1_3}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
TOOLKIT_ONLY_TLS_KEYS = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                         "prefer_server_cipher_suites", "client_allowed_sans"}
HTTP_KEYS = {"headers", "http2"}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
log = logging.getLogger(__name__)


class ConfigError(Exception):
    """One line: the file, the field, what is wrong and how to fix it."""


@dataclass
class WebConfig:
    path: str
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)   # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()   # the config and the certificate files it names: a change to any reloads it

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"


def _err(path: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"web config {path}: {where}: {message}")


def _mapping(path: str, where: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _unknown(path: str, where: str, value: dict, allowed: set[str], unsupported: set[str] = frozenset()) -> None:
    for key in value:
        if key in unsupported:
            raise _err(path, f"{where}.{key}", "not supported by sloguard-pg-exporter (Python ssl/OpenSSL defaults "
                                               "apply); remove it")
        if key not in allowed:
            raise _err(path, f"{where}.{key}" if where else str(key),
                       f"unknown field; expected one of {', '.join(sorted(allowed))}")


def load(path: str) -> WebConfig:
    """Read and validate the file; raise ConfigError (exit 2 for the caller)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"web config {path}: cannot read: {e.strerror}; check --web.config.file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else "YAML"
        raise _err(path, line, f"not valid YAML ({getattr(e, 'problem', None) or e})") from None
    doc = _mapping(path, "top level", doc)
    _unknown(path, "", doc, TOP_KEYS)
    base = os.path.dirname(os.path.abspath(path))
    cfg = WebConfig(path)
    tls = _mapping(path, "tls_server_config", doc.get("tls_server_config"))
    if tls:
        cfg.ssl_context = _ssl_context(path, base, tls)
    cfg.files = (path, *(f for key in ("cert_file", "key_file", "client_ca_file")
                         if isinstance(tls.get(key), str) and (f := _file(path, base, tls, key))))
    http = _mapping(path, "http_server_config", doc.get("http_server_config"))
    _unknown(path, "http_server_config", http, HTTP_KEYS)
    for name, value in _mapping(path, "http_server_config.headers", http.get("headers")).items():
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise _err(path, f"http_server_config.headers.{name}", "expected a one-line string value")
        cfg.headers[str(name)] = value
    for user, hashed in _mapping(path, "basic_auth_users", doc.get("basic_auth_users")).items():
        where = f"basic_auth_users.{user}"   # the user name is not secret; the hash never appears in a message
        if not isinstance(hashed, str):
            raise _err(path, where, "expected a bcrypt hash string (quote it in YAML)")
        raw = hashed.encode()
        if not raw.startswith(BCRYPT_PREFIXES) or len(raw) != 60 or not raw[4:6].isdigit() or raw[6:7] != b"$":
            raise _err(path, where, "not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters); make one with "
                                    "`python -m exporters.pg_exporter.webconfig hash-password`")
        cfg.users[str(user)] = raw
    return cfg


def _file(path: str, base: str, tls: dict, key: str) -> str | None:
    value = tls.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _err(path, f"tls_server_config.{key}", "expected a file path")
    full = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.access(full, os.R_OK):
        raise _err(path, f"tls_server_config.{key}", f"cannot read {full}")
    return full


def _ssl_context(path: str, base: str, tls: dict) -> ssl.SSLContext | None:
    _unknown(path, "tls_server_config", tls, TLS_KEYS, TOOLKIT_ONLY_TLS_KEYS)
    cert, key = _file(path, base, tls, "cert_file"), _file(path, base, tls, "key_file")
    ca = _file(path, base, tls, "client_ca_file")
    auth = tls.get("client_auth_type") or ("RequireAndVerifyClientCert" if ca else "NoClientCert")
    if not (cert or key or ca or tls.get("client_auth_type")):
        return None   # an empty tls_server_config means plain HTTP, as in the toolkit
    if not cert:
        raise _err(path, "tls_server_config.cert_file", "missing (key_file needs its certificate)")
    if not key:
        raise _err(path, "tls_server_config.key_file", "missing (cert_file needs its private key)")
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise _err(path, "tls_server_config.client_auth_type",
                   f"{auth} (accept a certificate without verifying it) is not supported; use "
                   "VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file")
    if auth not in CLIENT_AUTH:
        raise _err(path, "tls_server_config.client_auth_type",
                   f"{auth!r} unknown; expected one of {', '.join(CLIENT_AUTH)}")
    if CLIENT_AUTH[auth] != ssl.CERT_NONE and not ca:
        raise _err(path, "tls_server_config.client_ca_file", f"required by client_auth_type {auth}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2   # the toolkit's default minimum
    for field_name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        value = tls.get(field_name)
        if value is not None:
            if value not in TLS_VERSIONS:
                raise _err(path, f"tls_server_config.{field_name}",
                           f"{value!r} unknown; expected one of {', '.join(TLS_VERSIONS)}")
            setattr(ctx, attr, TLS_VERSIONS[value])
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise _err(path, "tls_server_config.cert_file/key_file",
                   f"cannot load the certificate and key ({e}); check that they are PEM and belong together") from None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as e:
            raise _err(path, "tls_server_config.client_ca_file", f"not a PEM CA bundle ({e})") from None
    ctx.verify_mode = CLIENT_AUTH[auth]
    return ctx


class BasicAuth:
    """Checks an Authorization header against the bcrypt hashes.

    bcrypt is deliberately slow (~50-250 ms per check); like the toolkit, successful (user, password) pairs are
    remembered (as a salted SHA-256, never the password) so a scrape every 15 s does not pay it each time.
    """

    def __init__(self, users: dict[str, bytes], cache_size: int = 64):
        self.users = users
        self._salt = os.urandom(16)
        self._ok: dict[bytes, None] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        # unknown users still cost one bcrypt check at the configured cost, so timing does not tell who exists
        rounds = int(next(iter(users.values()))[4:6]) if users else 4
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=rounds))

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def check(self, header: str | None) -> bool:
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = self.users.get(user)
        digest = hashlib.sha256(self._salt + hashed if hashed else self._salt).digest()
        key = hmac.new(digest, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if key in self._ok:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:   # malformed hash (checked at load) or a password with a NUL byte
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) >= self._cache_size:
                    self._ok.pop(next(iter(self._ok)))
                self._ok[key] = None
        return ok


def _stamp(files: tuple[str, ...]) -> tuple:
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((f, None, None))
    return tuple(out)


class LiveWebConfig:
    """The web config as the toolkit serves it: re-read when the file or a certificate it names changes (looked at
    most once a second, when a connection arrives), so users and certificates rotate without a restart. A change
    that does not load keeps the previous configuration, and the error is logged once."""

    def __init__(self, cfg: WebConfig | None, check_interval: float = 1.0):
        self._cfg = cfg
        self._auth = BasicAuth(cfg.users) if cfg and cfg.users else None
        self._stamp = _stamp(cfg.files) if cfg else ()
        self._interval = check_interval
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._last_error = ""

    def current(self) -> tuple[WebConfig | None, BasicAuth | None]:
        if self._cfg is not None and time.monotonic() - self._checked >= self._interval:
            with self._lock:
                if time.monotonic() - self._checked >= self._interval:
                    self._checked = time.monotonic()
                    stamp = _stamp(self._cfg.files)
                    if stamp != self._stamp:
                        self._reload(stamp)
        return self._cfg, self._auth

    def _reload(self, stamp: tuple) -> None:
        try:
            cfg = load(self._cfg.path)
        except ConfigError as e:
            if str(e) != self._last_error:
                self._last_error = str(e)
                log.error("%s; still serving with the previous web config", e)
            return
        self._cfg, self._auth, self._stamp, self._last_error = (
            cfg, BasicAuth(cfg.users) if cfg.users else None, _stamp(cfg.files), "")
        log.info("web config %s reloaded (%s, %d basic auth user(s))", cfg.path, cfg.scheme, len(cfg.users))


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hash-password"]:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("hash-password: give the password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        try:
            cfg = load(argv[1])
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"{argv[1]}: ok ({cfg.scheme}, {len(cfg.users)} basic auth user(s))")
        return 0
    print("usage: python -m exporters.pg_exporter.webconfig hash-password < password | check FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
