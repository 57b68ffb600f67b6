"""Grafana provisioning: a file dashboard provider and the Prometheus and Alertmanager datasources.

Paths inside the Grafana container (docker-compose.yml mounts them):
  ./dashboards               -> /var/lib/grafana/dashboards/sloguard   (the JSON files)
  ./dashboards/provisioning  -> /etc/grafana/provisioning              (these two YAML files)
"""
from __future__ import annotations

import yaml

from sloguard.dashboards.common import GENERATED_NOTE

DASHBOARDS_DIR_IN_GRAFANA = "/var/lib/grafana/dashboards/sloguard"
PROMETHEUS_URL = "http://prometheus:9090"      # compose service names
ALERTMANAGER_URL = "http://alertmanager:9093"
PROMETHEUS_UID = "sloguard-prometheus"
ALERTMANAGER_UID = "sloguard-alertmanager"
SCRAPE_INTERVAL = "15s"   # Grafana derives $__rate_interval from it; keep equal to prometheus.yml's

PROVIDER_PATH = "dashboards/provisioning/dashboards/sloguard.yaml"
DATASOURCES_PATH = "dashboards/provisioning/datasources/sloguard.yaml"


def _yaml(data: dict) -> str:
    return f"# {GENERATED_NOTE}\n" + yaml.safe_dump(data, sort_keys=True, default_flow_style=False)


def provider_yaml() -> str:
    return _yaml({
        "apiVersion": 1,
        "providers": [{
            "name": "sloguard", "orgId": 1, "folder": "sloguard", "type": "file",
            # Generated dashboards: edits in the UI would be lost at the next `make generate`.
            "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_DIR_IN_GRAFANA, "foldersFromFilesStructure": False},
        }],
    })


def datasources_yaml() -> str:
    return _yaml({
        "apiVersion": 1,
        "datasources": [
            {"name": "Prometheus", "uid": PROMETHEUS_UID, "type": "prometheus", "access": "proxy",
             "url": PROMETHEUS_URL, "isDefault": True, "editable": False,
             "jsonData": {"timeInterval": SCRAPE_INTERVAL, "httpMethod": "POST"}},
            {"name": "Alertmanager", "uid": ALERTMANAGER_UID, "type": "alertmanager", "access": "proxy",
             "url": ALERTMANAGER_URL, "editable": False,
             "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False}},
        ],
    })


def render() -> dict[str, str]:
    return {PROVIDER_PATH: provider_yaml(), DATASOURCES_PATH: datasources_yaml()}
