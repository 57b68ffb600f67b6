"""The exporter as postgres_exporter users run it: --web.config.file (TLS, basic auth), --web.telemetry-path, the
landing page, --collector.* switches, --log.format/--log.level and SIGTERM, against real PostgreSQL 15."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import bcrypt
import psycopg
import pytest
import requests

from sloguard import names
from tests.exporter_support import ROOT, RunningExporter, one, parse

DB = "exporter_web"
SCRAPE_PASSWORD = "scr4pe-Pw-5517-kestrel"
PROBE_ROLE = "switch_probe"


@pytest.fixture(scope="module")
def cluster(pg_cluster):
    with pg_cluster.database(DB):
        pg_cluster.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;"
                        "CREATE TABLE beehives (id int PRIMARY KEY, apiary text, weight_kg numeric);"
                        "INSERT INTO beehives SELECT g, 'apiary-' || (g % 40), g % 90 FROM generate_series(1, 500) g;"
                        "CREATE TABLE schema_migrations (version text, applied_at timestamptz);"
                        "INSERT INTO schema_migrations VALUES ('20250301000000', '2025-03-01T00:00Z');", DB)
        yield pg_cluster


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def self_signed(dirpath, name: str) -> None:
    """name.crt / name.key: a self-signed certificate for 127.0.0.1 (it is its own CA for the client)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", cwd=dirpath)


def web_config(tmp_path, text: str) -> str:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return str(path)


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()


def test_basic_auth_over_https_401_without_credentials_200_with_them(cluster, tmp_path):
    self_signed(tmp_path, "server")
    hashed = bcrypt_hash(SCRAPE_PASSWORD)
    # relative paths: resolved against the web config's directory, as the toolkit does
    cfg = web_config(tmp_path, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                               f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--web.config.file", cfg, "--log.level", "debug"],
                          scheme="https", verify=str(tmp_path / "server.crt"), auth=("prometheus", SCRAPE_PASSWORD))
    try:
        anonymous = requests.get(exp.url, verify=str(tmp_path / "server.crt"), timeout=30)
        wrong = requests.get(exp.url, verify=str(tmp_path / "server.crt"), auth=("prometheus", "guess"), timeout=30)
        stranger = requests.get(exp.url, verify=str(tmp_path / "server.crt"), auth=("grafana", SCRAPE_PASSWORD),
                                timeout=30)
        landing_anonymous = requests.get(exp.base_url + "/", verify=str(tmp_path / "server.crt"), timeout=30)
        text = exp.scrape_text()
        again = exp.scrape_text()   # the second check is served from the verified-credentials cache
        landing = exp.session.get(exp.base_url + "/", timeout=30)
        with pytest.raises(requests.ConnectionError):   # HTTPS only: plain HTTP on the same port gets nothing
            requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=10)
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    for r in (anonymous, wrong, stranger, landing_anonymous):
        assert r.status_code == 401, r.status_code
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert "sloguard_pg" not in r.text
    assert one(parse(text), names.PG_UP) == 1 and one(parse(again), names.PG_UP) == 1
    assert landing.status_code == 200 and 'href="/metrics"' in landing.text
    assert "https://127.0.0.1" in log   # the startup line says where it serves
    for secret in (SCRAPE_PASSWORD, hashed, "guess"):
        assert secret not in log


def test_client_certificate_required_when_configured(cluster, tmp_path):
    self_signed(tmp_path, "server")
    self_signed(tmp_path, "client")   # self-signed: its own CA, given to the exporter as client_ca_file
    cfg = web_config(tmp_path, f"tls_server_config:\n  cert_file: {tmp_path}/server.crt\n"
                               f"  key_file: {tmp_path}/server.key\n  client_ca_file: {tmp_path}/client.crt\n"
                               "  client_auth_type: RequireAndVerifyClientCert\n")
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--web.config.file", cfg], scheme="https",
                          verify=str(tmp_path / "server.crt"),
                          cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key")))
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(exp.url, verify=str(tmp_path / "server.crt"), timeout=10)
        assert one(exp.scrape(), names.PG_UP) == 1
    finally:
        exp.cleanup()


BAD_CONFIGS = [
    # (file text, field the message must name); {dir} is the test's directory with server.crt/key
    ("tls_server_config:\n  cert_file: {dir}/server.crt\n", "tls_server_config.key_file"),
    ("tls_server_config:\n  cert_file: {dir}/nowhere.crt\n  key_file: {dir}/server.key\n",
     "tls_server_config.cert_file"),
    ("tls_server_config:\n  cert_file: {dir}/server.key\n  key_file: {dir}/server.crt\n",
     "tls_server_config.cert_file/key_file"),
    ("tls_server_config:\n  cert_file: {dir}/server.crt\n  key_file: {dir}/server.key\n"
     "  client_auth_type: RequireAnyClientCert\n", "tls_server_config.client_auth_type"),
    ("tls_server_config:\n  cert_file: {dir}/server.crt\n  key_file: {dir}/server.key\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", "tls_server_config.client_ca_file"),
    ("tls_server_config:\n  cert_file: {dir}/server.crt\n  key_file: {dir}/server.key\n  min_version: TLS9\n",
     "tls_server_config.min_version"),
    ("tls_server_config:\n  cert_file: {dir}/server.crt\n  key_file: {dir}/server.key\n"
     "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites"),
    ("basic_auth_users:\n  prometheus: plain-text-not-a-hash\n", "basic_auth_users.prometheus"),
    ("basic_auth_users:\n  - prometheus\n", "basic_auth_users"),
    ("basic_auth_user:\n  prometheus: x\n", "basic_auth_user"),
    ("tls_server_config: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("text,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_web_config_exits_2_naming_file_and_field(tmp_path, text, field):
    self_signed(tmp_path, "server")
    cfg = web_config(tmp_path, text.replace("{dir}", str(tmp_path)))
    proc = run_cli(["--dsn", "host=127.0.0.1 dbname=unused", "--web.config.file", cfg])
    assert proc.returncode == 2, proc.stderr
    assert cfg in proc.stderr and field in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "plain-text-not-a-hash" not in proc.stderr


def test_unreadable_web_config_exits_2(tmp_path):
    missing = str(tmp_path / "absent.yml")
    proc = run_cli(["--dsn", "host=127.0.0.1 dbname=unused", "--web.config.file", missing])
    assert proc.returncode == 2 and missing in proc.stderr and "cannot read" in proc.stderr, proc.stderr


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporters.pg_exporter", "--web.listen-address", "127.0.0.1:0",
                           *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                          timeout=60)


def test_telemetry_path_and_landing_page(cluster):
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--web.telemetry-path", "/internal/pg-metrics"],
                          path="/internal/pg-metrics")
    try:
        assert one(exp.scrape(), names.PG_UP) == 1
        assert requests.get(exp.base_url + "/metrics", timeout=30).status_code == 404
        landing = requests.get(exp.base_url + "/", timeout=30)
        assert landing.status_code == 200 and 'href="/internal/pg-metrics"' in landing.text
    finally:
        exp.cleanup()
    assert run_cli(["--dsn", "host=127.0.0.1", "--web.telemetry-path", "metrics"]).returncode == 2


@pytest.fixture
def probe_role(cluster):
    cluster.psql(f"DROP ROLE IF EXISTS {PROBE_ROLE}; CREATE ROLE {PROBE_ROLE} LOGIN SUPERUSER PASSWORD '{PROBE_ROLE}-pw'")
    yield PROBE_ROLE
    cluster.psql(f"DROP ROLE IF EXISTS {PROBE_ROLE}")


def queries_sent_by(cluster, role: str) -> list[str]:
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT s.query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s",
            (role,))]


def test_disabled_collectors_expose_nothing_and_send_no_query(cluster, probe_role):
    off = ("statements", "missing_indexes", "tables")
    exp = RunningExporter(["--dsn", cluster.dsn(DB, user=probe_role, password=f"{probe_role}-pw"),
                           *(f"--no-collector.{c}" for c in off)])
    try:
        samples = exp.scrape()
        samples = exp.scrape()
    finally:
        exp.cleanup()
    found = {s.name for s in samples}
    assert one(samples, names.PG_UP) == 1
    for name in (names.STATEMENT_CALLS, names.STATEMENT_MEAN_SECONDS, names.MISSING_INDEX, names.TABLE_SEQ_SCAN,
                 names.TABLE_LIVE_ROWS):
        assert name not in found
    assert {s.labels["collector"] for s in samples if s.name in (
        names.COLLECTOR_SUCCESS, names.COLLECTOR_DURATION, names.SCRAPE_ERRORS)} == {
        "connection", "connections", "locks", "migrations"}
    assert one(samples, names.MIGRATION_LAST_APPLIED, datname=DB, version="20250301000000") > 0
    sent = " ".join(queries_sent_by(cluster, probe_role))
    assert "pg_stat_activity" in sent   # the enabled collectors did run
    for table in ("pg_stat_statements", "pg_stat_user_tables", "hypopg"):
        assert table not in sent, f"a disabled collector queried {table}"


def test_log_formats_and_level(cluster):
    lines = {}
    for fmt in ("json", "logfmt"):
        exp = RunningExporter(["--dsn", cluster.dsn(DB), "--log.format", fmt, "--log.level", "debug"])
        try:
            exp.scrape()
        finally:
            exp.stop()
        lines[fmt] = [line for line in exp.log().splitlines() if line.strip()]
        exp.cleanup()
    records = [json.loads(line) for line in lines["json"]]
    assert all({"ts", "level", "caller", "msg"} <= set(r) for r in records)
    assert {"info", "debug"} <= {r["level"] for r in records}
    assert any(r["msg"].startswith("serving metrics on http://127.0.0.1") for r in records)
    logfmt = re.compile(r'^ts=\S+Z level=(debug|info|warn|error) caller=\S+:\d+ msg=("([^"\\]|\\.)*"|\S+)( |$)')
    assert lines["logfmt"] and all(logfmt.match(line) for line in lines["logfmt"]), lines["logfmt"]
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--log.level", "warn"])
    try:
        exp.scrape()
    finally:
        exp.stop()
    quiet = exp.log()
    exp.cleanup()
    assert "serving metrics" not in quiet and "level=info" not in quiet and "level=debug" not in quiet


def stop_and_time(exp: RunningExporter) -> tuple[int, float]:
    start = time.monotonic()
    exp.proc.send_signal(signal.SIGTERM)
    code = exp.proc.wait(timeout=10)
    return code, time.monotonic() - start


def test_sigterm_stops_cleanly_within_a_second(cluster):
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--log.level", "debug"])
    try:
        exp.scrape()
        code, took = stop_and_time(exp)
        log = exp.log()
    finally:
        exp.cleanup()
    assert code == 0, log
    assert "shutting down" in log and "Traceback" not in log
    assert took < 1.0, took


def test_sigterm_during_a_stuck_scrape_still_stops_within_a_second(tmp_path):
    """The database accepts TCP and never answers: a scrape hangs in connect; SIGTERM must not wait for it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    exp = RunningExporter(["--dsn", f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=never",
                           "--query-timeout", "30"])
    stuck = threading.Thread(target=lambda: _swallow(exp.url), daemon=True)
    try:
        stuck.start()
        time.sleep(0.5)   # the scrape is now inside connect()
        code, took = stop_and_time(exp)
    finally:
        exp.cleanup()
        silent.close()
    assert code == 0, exp.log() if os.path.exists(exp.log_path) else ""
    assert took < 1.0, took


def _swallow(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.get(url, timeout=20)


def test_hash_password_and_check_commands_make_a_config_the_exporter_accepts(tmp_path):
    def webconfig_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "exporters.pg_exporter.webconfig", *args], input=stdin, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60)

    made = webconfig_cli("hash-password", stdin=SCRAPE_PASSWORD + "\n")
    hashed = made.stdout.strip()
    assert made.returncode == 0 and bcrypt.checkpw(SCRAPE_PASSWORD.encode(), hashed.encode())
    cfg = web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    checked = webconfig_cli("check", cfg)
    assert checked.returncode == 0 and "http, 1 basic auth user" in checked.stdout, checked.stderr
    bad = web_config(tmp_path, "basic_auth_users:\n  prometheus: nope\n")
    assert webconfig_cli("check", bad).returncode == 2


def test_web_config_changes_apply_without_restart_and_a_broken_edit_keeps_the_last_good_one(cluster, tmp_path):
    """As the toolkit re-reads the file per connection: rotate the scrape password with no restart."""
    new_password = "r0tated-Pw-8812-heron"
    cfg = web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{bcrypt_hash(SCRAPE_PASSWORD)}'\n")
    exp = RunningExporter(["--dsn", cluster.dsn(DB), "--web.config.file", cfg],
                          auth=("prometheus", SCRAPE_PASSWORD))

    def status(password: str) -> int:
        with requests.Session() as s:   # a new connection: the config is looked at when one arrives
            return s.get(exp.url, auth=("prometheus", password), timeout=30).status_code

    def eventually(password: str, code: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if status(password) == code:
                return True
            time.sleep(0.3)
        return False

    try:
        assert status(SCRAPE_PASSWORD) == 200 and status(new_password) == 401
        web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{bcrypt_hash(new_password)}'\n")
        assert eventually(new_password, 200)
        assert status(SCRAPE_PASSWORD) == 401
        web_config(tmp_path, "basic_auth_users:\n  prometheus: not-a-hash\n")   # a bad edit
        time.sleep(1.5)
        assert status(new_password) == 200   # still the last good configuration
    finally:
        exp.stop()
    log = exp.log()
    exp.cleanup()
    assert "reloaded" in log and f"web config {cfg}: basic_auth_users.prometheus" in log, log
    assert new_password not in log and SCRAPE_PASSWORD not in log
