"""kube/sdk.py: the agent imports only the pieces of `kubernetes` it calls, and they still work.

Each check runs in a fresh interpreter (this test process has imported `kubernetes` in full
already): it imports what `plumber-agent run` imports, talks to the fake API server through
KubeClient, and reports which modules got loaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from tests.fakeapi import HOSTNETWORKS
from tests.helpers.agent_env import agent_env

CHILD_TIMEOUT_S = 120.0

# What the generated client and the package's __init__ would have loaded: none of it is needed
# to speak raw JSON.
NEVER_LOADED = (
    "kubernetes.client.models.v1_pod", "kubernetes.client.models.v1_node",
    "kubernetes.client.api.core_v1_api", "kubernetes.client.api.coordination_v1_api",
    "kubernetes.client.api.custom_objects_api",
    "kubernetes.dynamic", "kubernetes.watch", "kubernetes.stream", "kubernetes.informer",
    "kubernetes.leaderelection", "websocket",
)
# The kubeconfig loader and what it pulls in (ApiClient and pydantic with it): only when a
# kubeconfig is loaded.
KUBECONFIG_ONLY = ("kubernetes.config.kube_config", "requests", "oauthlib", "requests_oauthlib",
                   "kubernetes.client.api_client", "pydantic", "pydantic_core", "dateutil",
                   "multiprocessing.pool")

CHILD = """
import json, sys
import plumber_agent.agent, plumber_agent.cli, plumber_agent.cluster  # what `run` imports
from plumber_agent.kube.client import KubeClient

mode, where, token_path = sys.argv[1:4]
client = (KubeClient.from_kubeconfig(where) if mode == "kubeconfig"
          else KubeClient.from_token_file(where, token_path))
client.list_templates()
client.create_hostnetwork({"metadata": {"name": "n1"}, "spec": {}})
client.patch_hostnetwork_status("n1", {"status": {"interfaceStatus": [{"pfName": "eth0"}]}})
absent = client.get_hostnetwork("absent")
client.create_lease("default", {"metadata": {"name": "slot-0"}, "spec": {}})
gone = client.delete_lease("default", "slot-0")
stream = client.watch_templates(None, 1, 10.0)
stream.close()
client.close()
print(json.dumps({"modules": sorted(sys.modules), "absent": absent, "gone": gone}))
"""


def _run_child(mode: str, where: str, token_path: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, where, token_path],
                         env=agent_env(), capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("mode", ["token-file", "kubeconfig"])
def test_the_agent_loads_no_generated_models_or_apis(fake_api, tmp_path, mode):
    token = tmp_path / "token"
    token.write_text(fake_api.token + "\n")
    where = fake_api.kubeconfig(tmp_path / "kubeconfig") if mode == "kubeconfig" else fake_api.url
    result = _run_child(mode, str(where), str(token))

    modules = set(result["modules"])
    assert (result["absent"], result["gone"]) == (None, True)
    assert fake_api.get(HOSTNETWORKS, "n1")["status"] == {"interfaceStatus": [{"pfName": "eth0"}]}
    assert not modules & set(NEVER_LOADED)
    assert not [m for m in modules if m.startswith("kubernetes.client.models.v1_node")]
    loader = modules & set(KUBECONFIG_ONLY)
    if mode == "kubeconfig":
        assert loader == set(KUBECONFIG_ONLY)  # the check above can see a loaded module
    else:
        assert loader == set()  # in the cluster: no requests, no oauthlib, no pydantic


COMPLETE = """
import importlib.metadata, json
from plumber_agent.kube import sdk
import kubernetes
from kubernetes import watch
from kubernetes.config import load_kube_config, ConfigException
from kubernetes.client import ApiException, V1Pod
print(json.dumps({"version": kubernetes.__version__,
                  "same": [ApiException is sdk.ApiException, ConfigException is sdk.ConfigException,
                           kubernetes.client.rest.RESTClientObject is sdk.RESTClientObject],
                  "client": kubernetes.client.ApiClient.__name__,
                  "watch": watch.Watch.__name__, "pod": V1Pod.__name__,
                  "loader": callable(load_kube_config)}))
"""


def test_the_rest_of_the_package_is_still_there_for_other_code():
    """Asking the un-run packages for anything else runs their real __init__ (packages.py)."""
    out = subprocess.run([sys.executable, "-c", COMPLETE], env=agent_env(), capture_output=True,
                         text=True, timeout=CHILD_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result == {"version": metadata.version("kubernetes"), "same": [True, True, True],
                      "client": "ApiClient",
                      "watch": "Watch", "pod": "V1Pod", "loader": True}
