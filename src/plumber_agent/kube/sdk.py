"""The few pieces of the `kubernetes` package the agent calls, imported without the package's
own `__init__` files: the agent's only door to `kubernetes` (kube/client.py imports from here).

Why: the agent speaks raw JSON (client.py `RawCalls`, `_preload_content=False`), so it needs the
HTTP plumbing (`ApiClient`, `rest`, `Configuration`, `ApiException`) and the kubeconfig loader,
nothing else. But `import kubernetes.client.api_client` first runs `kubernetes/__init__.py`,
which imports `config` (its kube_config pulls requests, oauthlib, requests-oauthlib and, through
charset-normalizer, every codec in `encodings`), `dynamic`, `watch`, `stream` (websocket-client),
`utils`, `leaderelection` and `informer`: 7.6 MiB of resident memory in every agent on every
node for code it never runs (bench B4, README "Footprint").

How: `kubernetes` and `kubernetes.config` are left unexecuted (plumber_agent/packages.py: the
real package objects, their `__init__.py` run only if someone asks them for a name they lack),
and the submodules below are ordinary imports. The modules are the real ones: `ApiException`
here is the class every other `kubernetes` module raises, and code that uses the rest of the
package (tests, a debugging session) still finds all of it.

`kubernetes.client/__init__.py` itself is run as usual: in the pinned 37.x it resolves its API
classes and models lazily (PEP 562 `__getattr__`), so it costs about 1 MiB, and `ApiClient` imports it
anyway (`import kubernetes.client.models`). `ApiClient.deserialize` would load model modules
by name, but a response asked for with `_preload_content=False` is never deserialized: nothing
here loads `kubernetes.client.models.v1_*` (tests/kube/test_sdk.py asserts it).

The kubeconfig loader (`kubernetes.config.kube_config`) is imported only when a kubeconfig is
loaded (`load_kube_config`): in the cluster the agent reads its service account itself
(client.py `KubeClient.in_cluster`) and never needs requests or oauthlib.
"""
from __future__ import annotations

from plumber_agent.packages import unexecuted_package

__all__ = ["ApiClient", "ApiException", "ConfigException", "Configuration", "load_kube_config"]

# The packages whose __init__ the agent does not need (see the module doc): parents first.
UNEXECUTED_PACKAGES = ("kubernetes", "kubernetes.config")

for _name in UNEXECUTED_PACKAGES:
    unexecuted_package(_name)

# The pieces the agent calls (imported after the packages are in place, on purpose).
from kubernetes.client.api_client import ApiClient  # noqa: E402
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402


def load_kube_config(**kwargs) -> None:
    """`kubernetes.config.load_kube_config`, its module (requests, oauthlib) imported on the
    first call only: agents in the cluster never load a kubeconfig."""
    from kubernetes.config.kube_config import load_kube_config as load
    load(**kwargs)

