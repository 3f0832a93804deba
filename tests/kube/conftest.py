"""Fixtures for the kube tests: a fake API server over real HTTP and a client pointed at it."""
from __future__ import annotations

import pytest

from plumber_agent.clock import FakeClock
from tests.support.fakeapi_fixtures import fake_api_fixture, kubeconfig_fixture  # noqa: F401


@pytest.fixture
def kube(kubeconfig):
    from plumber_agent.kube.client import KubeClient

    client = KubeClient.from_kubeconfig(kubeconfig)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clock():
    return FakeClock(auto_advance=True)
