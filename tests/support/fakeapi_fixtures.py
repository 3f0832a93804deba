"""The fake API server fixtures the kube and fleet tiers share: the in-repo server over real
HTTP (bookmarks every 50 ms, so a short bounded poll sees several, and `kubectl wait`'s
streams stay lively) and a kubeconfig for KubeClient (plain http). A conftest imports them
(`from tests.support.fakeapi_fixtures import fake_api_fixture, kubeconfig_fixture`): each is
registered under its `name`, so a fixture taking `fake_api` shadows no import."""
from __future__ import annotations

import pytest

from tests.fakeapi import FakeApiServer

TEST_BOOKMARK_INTERVAL_S = 0.05


@pytest.fixture(name="fake_api")
def fake_api_fixture():
    server = FakeApiServer(bookmark_interval_s=TEST_BOOKMARK_INTERVAL_S)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="kubeconfig")
def kubeconfig_fixture(fake_api, tmp_path):
    """A kubeconfig for KubeClient over plain http."""
    return fake_api.kubeconfig(tmp_path / "kubeconfig")
