"""Fixtures for the e2e scenarios: one cluster per session (LOCAL or KIND, by $E2E_TARGET),
a baseline taken once, and a per-test `steps` object that cleans up after itself.

E2E_TARGET=local (default): simulated nodes on this machine (harness.py); needs root.
E2E_TARGET=kind: the cluster named by $KUBECONFIG, prepared by scripts/e2e-kind.sh.
On a failure, the agents' logs are attached to the test report (and, locally, copied to
$E2E_LOG_DIR/plumber-e2e-logs, default /tmp/plumber-e2e-logs).
"""
from __future__ import annotations

import os
from typing import Iterator, Optional

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.steps import Steps, take_baseline

TARGET_ENV = "E2E_TARGET"

_state: dict = {"cluster": None, "failed": False}


def target() -> str:
    return os.environ.get(TARGET_ENV, "local").strip().lower() or "local"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    which = target()
    if which == "kind":
        from tests.e2e.kindharness import KindCluster, kind_skip_reason
        reason = kind_skip_reason()
        if reason:
            pytest.skip(reason)
        instance: Cluster = KindCluster.from_env()
    elif which == "local":
        from tests.e2e.harness import LocalCluster, local_skip_reason
        reason = local_skip_reason()
        if reason:
            pytest.skip(reason)
        instance = LocalCluster.start()
    else:
        raise pytest.UsageError(f"{TARGET_ENV}={which!r}: use 'local' or 'kind'")
    _state["cluster"] = instance
    try:
        yield instance
    finally:
        if _state["failed"] and hasattr(instance, "save_logs"):
            where = instance.save_logs()
            if where:
                print(f"\ne2e: agent logs saved in {where}")
        _state["cluster"] = None
        instance.close()


@pytest.fixture(scope="session")
def baseline(cluster: Cluster) -> dict:
    return take_baseline(cluster)


@pytest.fixture
def steps(cluster: Cluster, baseline: dict) -> Iterator[Steps]:
    helper = Steps(cluster, baseline)
    yield helper
    helper.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    instance: Optional[Cluster] = _state["cluster"]
    if report.failed and instance is not None:
        _state["failed"] = True
        report.sections.append(("plumber agent logs", instance.collect_logs()))
