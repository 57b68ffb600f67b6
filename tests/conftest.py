"""Shared fixtures: one throwaway PostgreSQL 15 cluster per test session, started and stopped here."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sloguard.pgcluster import TempCluster  # noqa: E402

pytest_plugins = ["tests.promtool_plugin"]   # promtool check/test rules items


@pytest.fixture(scope="session")
def pg_cluster():
    """A running cluster with pg_stat_statements preloaded; tests create their own databases in it."""
    cluster = TempCluster().start()
    cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def repo_root() -> str:
    return ROOT


# Behaviour tests run on specs the tests own (tests/specs/); the user's slo.yaml may say anything valid.
SPECS_DIR = os.path.join(ROOT, "tests", "specs")
API_SPEC = os.path.join(SPECS_DIR, "fleet", "api.yaml")   # the incident's API service, test-owned


@pytest.fixture(scope="session")
def spec():
    """The test-owned API spec (tests/specs/fleet/api.yaml), loaded and validated."""
    from sloguard.spec import load_spec
    return load_spec(API_SPEC)


@pytest.fixture(scope="session")
def rendered(spec):
    """Every file `generate.py --spec tests/specs/fleet/api.yaml` would write, in memory: {relative path: text}."""
    from sloguard.outputs import render_all
    return render_all(spec)
