"""The few pieces of the `kubernetes` package the agent calls, imported without the package's
own `__init__` files: the agent's only door to `kubernetes` (kube/client.py imports from here).

Why: the agent speaks raw JSON (client.py `RawCalls`, `_preload_content=False`), so it needs the
HTTP plumbing (`rest.RESTClientObject`: urllib3 with the configuration's TLS, proxy and
timeouts; `Configuration`; `ApiException`) and the kubeconfig loader, nothing else. But
`import kubernetes.client.rest` first runs `kubernetes/__init__.py`, which imports `config`
(its kube_config pulls requests, oauthlib, requests-oauthlib and, through charset-normalizer,
every codec in `encodings`), `dynamic`, `watch`, `stream` (websocket-client), `utils`,
`leaderelection` and `informer`: 7.6 MiB of resident memory in every agent on every node for
code it never runs (bench B4, README "Footprint").

Not `ApiClient` either: it imports pydantic (`SecretStr`, and the `ApiResponse` model) with its
4 MiB native core, dateutil, `multiprocessing.pool` and `kubernetes.client.models`: 9-10 MiB
for request building the agent does in a few lines (client.py `RestTransport`, which names the
`ApiClient` methods it follows).

How: `kubernetes`, `kubernetes.config`, `kubernetes.client` and `kubernetes.utils` are left
unexecuted (plumber_agent/packages.py: the real package objects, their `__init__.py` run only
if someone asks them for a name they lack), and the submodules below are ordinary imports. The
modules are the real ones: `ApiException` here is the class every other `kubernetes` module
raises, and code that uses the rest of the package (tests, a debugging session) still finds all
of it.

The kubeconfig loader (`kubernetes.config.kube_config`) is imported only when a kubeconfig is
loaded (`load_kube_config`); it imports `ApiClient` (and so pydantic) itself. In the cluster the
agent reads its service account (client.py `KubeClient.in_cluster`) and never needs it:
tests/kube/test_sdk.py checks what each path loads.
"""
from __future__ import annotations

from plumber_agent.packages import unexecuted_package

__all__ = ["ApiException", "ConfigException", "Configuration", "RESTClientObject",
           "load_kube_config"]

# The packages whose __init__ the agent does not need (see the module doc): parents first.
# `kubernetes.utils`: rest.py imports its retry and keepalive modules; its __init__ would
# import create_from_yaml and the metrics helpers.
UNEXECUTED_PACKAGES = ("kubernetes", "kubernetes.config", "kubernetes.client",
                       "kubernetes.utils")

for _name in UNEXECUTED_PACKAGES:
    unexecuted_package(_name)

# The pieces the agent calls (imported after the packages are in place, on purpose).
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.client.rest import RESTClientObject  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402


def load_kube_config(**kwargs) -> None:
    """`kubernetes.config.load_kube_config`, its module (requests, oauthlib, ApiClient)
    imported on the first call only: agents in the cluster never load a kubeconfig."""
    from kubernetes.config.kube_config import load_kube_config as load
    load(**kwargs)
