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


@pytest.fixture(scope="session")
def spec(repo_root):
    """The repository's own slo.yaml, loaded and validated."""
    from sloguard.spec import load_spec
    return load_spec(os.path.join(repo_root, "slo.yaml"))


@pytest.fixture(scope="session")
def rendered(spec):
    """Every file `make generate` would write, in memory: {relative path: text}."""
    from sloguard.outputs import render_all
    return render_all(spec)
