"""Fixtures for the fleet tests: the in-repo fake API server over real HTTP, kubeconfigs for the
plugin (plain http, like the kube tests' client) and for kubectl (HTTPS: kubectl sends the token
only over TLS), and a runner for the real kubectl binary."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.fakeapi_fixtures import fake_api_fixture, kubeconfig_fixture  # noqa: F401

# Longest a kubectl call may take before the test fails instead of hanging.
KUBECTL_TIMEOUT_S = 60


@pytest.fixture
def tls_kubeconfig(fake_api, tmp_path):
    """A kubeconfig kubectl accepts: the server's HTTPS listener and its self-signed CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the fake API server cannot serve HTTPS")
    return fake_api.kubectl_kubeconfig(tmp_path / "kubectl.kubeconfig")


@pytest.fixture
def kubectl_binary():
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    return binary


@pytest.fixture
def run_kubectl(kubectl_binary, tls_kubeconfig, tmp_path):
    """run_kubectl(*args, env=None, timeout=...) -> CompletedProcess of the real kubectl against
    the fake server (its own discovery cache per test, so CRD edits are seen)."""
    def run(*args, env=None, timeout=KUBECTL_TIMEOUT_S):
        return subprocess.run([kubectl_binary, "--kubeconfig", tls_kubeconfig, "--cache-dir",
                               str(tmp_path / "kubectl-cache"), *args], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    return run
