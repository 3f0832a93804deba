"""Fixtures for the kube tests: a fake API server over real HTTP and a client pointed at it."""
from __future__ import annotations

import pytest

from plumber_agent.clock import FakeClock
from tests.fakeapi import FakeApiServer

# Bookmarks every 50 ms so tests see several within a short bounded poll.
TEST_BOOKMARK_INTERVAL_S = 0.05


@pytest.fixture
def fake_api():
    server = FakeApiServer(bookmark_interval_s=TEST_BOOKMARK_INTERVAL_S)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fake_api, tmp_path):
    return fake_api.kubeconfig(tmp_path / "kubeconfig")


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
