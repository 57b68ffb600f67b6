"""docker-compose.yml and the deploy/ files it shares with `make simulate`: validated without a Docker engine.

`docker-compose config` (Debian's docker-compose) resolves and validates the file; the rest checks that the pieces
agree with each other: services, mounts, job names, ports, receivers, provisioning, seed data and image pins.
"""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement

from sloguard.dashboards import provisioning
from sloguard.outputs import RULES_PATH
from sloguard.simulate import configs, seed

SERVICES = {"postgres", "pg-exporter", "demo-api", "loadgen", "alert-sink", "prometheus", "alertmanager", "grafana"}


def compose_config(repo_root: str, password: str | None = "test-only") -> subprocess.CompletedProcess:
    # Only the tests that resolve the compose file need docker-compose; the others (seed, pins, imports) always run.
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (scripts/setup-system.sh)")
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run(["docker-compose", "-f", os.path.join(repo_root, "docker-compose.yml"), "config"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose(repo_root) -> dict:
    proc = compose_config(repo_root)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def prom_cfg(repo_root) -> dict:
    with open(os.path.join(repo_root, "deploy/prometheus/prometheus.yml")) as f:
        return yaml.safe_load(f)


def mounts(service: dict) -> dict[str, str]:
    """container path -> host path"""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            host, container = v.split(":")[:2]
        else:
            host, container = v.get("source", ""), v["target"]
        out[container] = host
    return out


def command_listen_port(service: dict) -> int:
    text = " ".join(service["command"])
    m = re.search(r"(?:--listen|--web\.listen-address)[ =]\S*:(\d+)", text)
    assert m, f"no listen address in {text}"
    return int(m.group(1))


def test_compose_config_is_valid_and_has_every_service(compose):
    assert set(compose["services"]) == SERVICES


def test_compose_refuses_to_start_without_a_password(repo_root):
    proc = compose_config(repo_root, password=None)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr


def test_no_password_or_secret_is_written_in_the_compose_file(repo_root, compose):
    with open(os.path.join(repo_root, "docker-compose.yml")) as f:
        text = f.read()
    assert "test-only" not in text
    assert "test-only" in compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_prometheus_mounts_the_deployed_config_and_the_generated_rules(repo_root, compose, prom_cfg):
    m = mounts(compose["services"]["prometheus"])
    assert os.path.realpath(m["/etc/prometheus/prometheus.yml"]) == \
        os.path.realpath(os.path.join(repo_root, "deploy/prometheus/prometheus.yml"))
    for rule_file in prom_cfg["rule_files"]:
        assert rule_file in m, f"rule file {rule_file} from prometheus.yml is not mounted"
        assert os.path.realpath(m[rule_file]) == os.path.realpath(os.path.join(repo_root, "alerts/sloguard-rules.yaml"))
        assert os.path.exists(m[rule_file])


def test_scrape_targets_are_compose_services_on_the_ports_they_listen_on(compose, prom_cfg, spec):
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom_cfg["scrape_configs"]}
    # deploy/ serves the incident's API spec (test-owned copy): its rules select job="api" and the exporter job.
    assert "api" in jobs and spec.database.exporter_job in jobs
    services = compose["services"]
    for job, targets in jobs.items():
        for target in targets:
            host, port = target.rsplit(":", 1)
            if host == "localhost":
                continue
            assert host in services, f"job {job}: target host {host} is not a compose service"
            assert command_listen_port(services[host]) == int(port), f"job {job}: {host} does not listen on {port}"
    am_host, am_port = prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].split(":")
    assert am_host in services and am_port == "9093"


def test_alertmanager_config_is_valid_and_routes_page_and_ticket(repo_root, compose):
    path = os.path.join(repo_root, "deploy/alertmanager/alertmanager.yml")
    proc = subprocess.run(["amtool", "check-config", path], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(path) as f:
        cfg = yaml.safe_load(f)
    routes = {r["receiver"]: r["matchers"] for r in cfg["route"]["routes"]}
    assert routes["page"] == ['severity="critical"'] and routes["ticket"] == ['severity="warning"']
    # info alerts (budget low) reach no receiver: a receiver with no integration
    assert routes["none"] == ['severity="info"']
    assert [r for r in cfg["receivers"] if r["name"] == "none"] == [{"name": "none"}]
    inhibit = cfg["inhibit_rules"][0]
    assert set(inhibit["equal"]) == {"alertname", "sloth_slo"}
    sink_port = command_listen_port(compose["services"]["alert-sink"])
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith(f"http://alert-sink:{sink_port}/")
    assert mounts(compose["services"]["alertmanager"])["/etc/alertmanager/alertmanager.yml"].endswith(
        "deploy/alertmanager/alertmanager.yml")


def test_grafana_gets_the_generated_provisioning_and_dashboards(repo_root, compose):
    m = mounts(compose["services"]["grafana"])
    assert os.path.realpath(m["/etc/grafana/provisioning"]) == os.path.realpath(
        os.path.join(repo_root, "dashboards/provisioning"))
    assert os.path.realpath(m[provisioning.DASHBOARDS_DIR_IN_GRAFANA]) == os.path.realpath(
        os.path.join(repo_root, "dashboards"))
    for url in (provisioning.PROMETHEUS_URL, provisioning.ALERTMANAGER_URL):
        host = url.split("//")[1].split(":")[0]
        assert host in compose["services"], f"datasource {url} names no compose service"
    for rel in (provisioning.PROVIDER_PATH, provisioning.DATASOURCES_PATH):
        assert os.path.exists(os.path.join(repo_root, rel)), f"{rel} missing: run `make generate`"


def test_loadgen_only_targets_loopback_inside_the_api_network_namespace(compose):
    loadgen = compose["services"]["loadgen"]
    assert loadgen["network_mode"] == "service:demo-api"
    url = loadgen["command"][loadgen["command"].index("--url") + 1]
    assert url.startswith("http://127.0.0.1:")


def test_postgres_image_has_hypopg_and_preloads_pg_stat_statements(repo_root, compose):
    with open(os.path.join(repo_root, "deploy/postgres/Dockerfile")) as f:
        assert "postgresql-15-hypopg" in f.read()
    assert "shared_preload_libraries=pg_stat_statements" in compose["services"]["postgres"]["command"]


def test_compose_seed_is_the_simulation_seed(repo_root):
    with open(os.path.join(repo_root, seed.COMPOSE_INIT_PATH)) as f:
        assert f.read() == seed.compose_init_sql(), "stale: run `python -m sloguard.simulate.seed`"


def test_app_image_pins_match_the_repository_pins(repo_root):
    def pins(path):
        with open(os.path.join(repo_root, path)) as f:
            return {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].strip()
                    for line in f if "==" in line and not line.startswith("#")}
    image, repo = pins("deploy/app/requirements.txt"), pins("requirements.txt")
    assert image and all(repo.get(name) == version for name, version in image.items()), (image, repo)


def test_simulation_copy_of_prometheus_config_passes_promtool(repo_root, tmp_path, spec, rendered):
    rules, _ = configs.compress_rules(rendered[RULES_PATH], 60, 6000, keep_ticket_tier=False)
    (tmp_path / "rules.yaml").write_text(rules)
    with open(os.path.join(repo_root, "deploy/prometheus/prometheus.yml")) as f:
        text = configs.prometheus_config(
            f.read(), str(tmp_path / "rules.yaml"),
            {"api": "127.0.0.1:1", spec.database.exporter_job: "127.0.0.1:2", "prometheus": "127.0.0.1:3"},
            "127.0.0.1:4", "1s", spec.database.exporter_job, "2s")
    (tmp_path / "prometheus.yml").write_text(text)
    proc = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the app image can run every command compose runs or documents ---

REPO_PACKAGES = ("sloguard", "exporters", "demo")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_pins(repo_root: str) -> dict[str, str]:
    with open(os.path.join(repo_root, "deploy/app/requirements.txt")) as f:
        return {_norm(line.split("==")[0]): line.split("==")[1].strip()
                for line in f if "==" in line and not line.startswith("#")}


def _module_file(repo_root: str, module: str) -> str | None:
    base = os.path.join(repo_root, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(path):
            return path
    return None


def third_party_imports(repo_root: str, module: str) -> dict[str, str]:
    """Top-level third-party imports reachable from `module` through the repository's own modules (lazy imports
    inside functions included): {import name: the repository module that imports it}."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    todo = [module, module + ".__main__"]
    while todo:
        mod = todo.pop()
        path = _module_file(repo_root, mod)
        if mod in seen or path is None:
            continue
        seen.add(mod)
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in REPO_PACKAGES:
                    todo.append(name)
                elif top and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, mod)
    return found


def compose_python_modules(repo_root: str) -> set[str]:
    """Every `python -m X` in docker-compose.yml, the commands it runs and the ones its header documents."""
    with open(os.path.join(repo_root, "docker-compose.yml")) as f:
        text = f.read()
    modules = set(re.findall(r"python[\"',\s]+-m[\"',\s]+([A-Za-z_][\w.]*)", text))
    assert modules, "no `python -m` command found in docker-compose.yml"
    return modules


def test_app_image_installs_what_every_compose_command_imports(repo_root):
    pins = image_pins(repo_root)
    dists = importlib.metadata.packages_distributions()
    modules = compose_python_modules(repo_root)
    assert "sloguard.diagnose" in modules, "the documented diagnose command should be checked too"
    missing = []
    for module in sorted(modules):
        assert _module_file(repo_root, module) or _module_file(repo_root, module + ".__main__"), module
        for top, importer in third_party_imports(repo_root, module).items():
            names = {_norm(d) for d in dists.get(top, [top])}
            if not names & set(pins):
                missing.append(f"{module}: {importer} imports {top} ({', '.join(sorted(names))})")
    assert not missing, "not in deploy/app/requirements.txt:\n" + "\n".join(missing)


def test_app_image_pins_every_dependency_of_its_pins(repo_root):
    """pip would pull an unpinned transitive dependency at whatever version is newest on build day."""
    pins = image_pins(repo_root)
    env = {"python_version": "3.11", "sys_platform": "linux", "implementation_name": "cpython", "extra": ""}
    unpinned = []
    for dist in pins:
        for text in importlib.metadata.requires(dist) or []:
            req = Requirement(text)
            if (req.marker is None or req.marker.evaluate(env)) and _norm(req.name) not in pins:
                unpinned.append(f"{dist} needs {req}")
    assert not unpinned, "deploy/app/requirements.txt: add pinned lines for\n" + "\n".join(unpinned)
