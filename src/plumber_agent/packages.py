"""Import a third-party package's submodules without running the package's own `__init__.py`.

Why: some packages' `__init__.py` import everything they have, so importing one submodule
loads them all: `kubernetes/__init__.py` imports its config loaders (requests, oauthlib),
dynamic client, watch, stream (websocket-client), informer and leader election;
`pyroute2/__init__.py` imports NDB (sqlite3), IPDB, nftables, ipset, wireguard, nl80211 and
thirty other sockets. The agent calls a handful of submodules of each, and every agent on every
node paid for the rest in resident memory (bench B4, README "Footprint"). Only the owners of
those packages call this (kube/sdk.py for `kubernetes`, host/netlink/driver.py for `pyroute2`),
and each says which submodules it imports and why.

How: `unexecuted_package(name)` puts into `sys.modules` the real package module, found the way
the import system finds it (same `__path__`, `__spec__` and loader), with its `__init__.py` not
run yet; its submodules are then ordinary imports of the package's own files. Nothing is
copied or patched. The module gets a PEP 562 `__getattr__` that runs its real `__init__.py`
into the same module object the first time anyone asks it for a name it does not have and
that is not one of its submodules (`kubernetes.__version__`, `from pyroute2 import NDB`; a
submodule is simply imported, as the import system does), so other code in the process (tests,
a debugging session) still sees the whole package, and the classes are the same objects either
way. `importlib.util.LazyLoader` cannot do this: it executes a package as soon as the import
system reads its `__path__`, that is on the first submodule import.

A package already imported (in full, or by an earlier call) is returned as it is.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType

_lock = threading.RLock()  # re-entrant: one package's __init__ may complete another


def _complete(module: ModuleType) -> None:
    """Run the real `__init__.py` of a package left unexecuted by `unexecuted_package`."""
    with _lock:
        if "__getattr__" not in vars(module):
            return  # completed meanwhile (another thread, or re-entered while running it)
        lazy = vars(module).pop("__getattr__")
        try:
            module.__spec__.loader.exec_module(module)
        except BaseException:
            module.__getattr__ = lazy  # as before: a later use tries again, and fails the same
            raise


def unexecuted_package(name: str) -> ModuleType:
    """`sys.modules[name]`: the package `name`, its `__init__.py` run only when asked for a name
    it lacks. A parent package must be in `sys.modules` already (imported, or left unexecuted
    by an earlier call)."""
    with _lock:  # two threads' first writes must not put two different modules in place
        return sys.modules.get(name) or _put_unexecuted(name)


def _put_unexecuted(name: str) -> ModuleType:
    parent_name, _, leaf = name.rpartition(".")
    parent = sys.modules[parent_name] if parent_name else None
    spec = importlib.machinery.PathFinder.find_spec(
        name, parent.__path__ if parent is not None else None)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package", name=name)
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attribute: str):
        # `from pyroute2 import netns` asks the package for `netns` before importing it as a
        # submodule: answer with the submodule, as the import system would, without the rest.
        if importlib.machinery.PathFinder.find_spec(f"{name}.{attribute}",
                                                    module.__path__) is not None:
            return importlib.import_module(f"{name}.{attribute}")
        _complete(module)
        return getattr(module, attribute)

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    if parent is not None:
        setattr(parent, leaf, module)
    return module
