"""A fake cluster for real agent processes: the in-repo fake API server (tests/fakeapi) with a
Node, helpers to write templates and read this node's HostNetwork status, and `kill()` /
`restart()` that take the server off its port and bring it back with its objects (an API server
restart keeps etcd's data; watches and connections are cut).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from tests.fakeapi import FakeApiServer
from tests.fakeapi.server import HOSTNETWORKS, NODES, TEMPLATES
from tests.helpers.ports import free_port

DEFAULT_NODE = "node-a"
# Bookmarks every second so the agent's watches stay demonstrably alive during tests.
BOOKMARK_INTERVAL_S = 1.0


class ClusterFixture:
    def __init__(self, workdir, *, node: str = DEFAULT_NODE, host: str = "127.0.0.1",
                 port: Optional[int] = None, labels: Optional[dict] = None,
                 start_fn: Optional[Callable[[FakeApiServer], None]] = None):
        self.workdir = Path(workdir)
        self.node = node
        self.host = host
        self.port = port or free_port(host)
        # How to start a server (e.g. inside another network namespace): a seam for nsnet.py.
        self._start = start_fn or (lambda server: server.start())
        self.kubeconfig = self.workdir / "kubeconfig"
        self.server = self._new_server()
        self._start(self.server)
        self.server.kubeconfig(self.kubeconfig)
        self.server.put_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node, "labels": dict({"kubernetes.io/hostname": node}, **(labels or {}))}})
        self.killed = False

    def _new_server(self) -> FakeApiServer:
        return FakeApiServer(bookmark_interval_s=BOOKMARK_INTERVAL_S, host=self.host,
                             port=self.port)

    def __enter__(self) -> "ClusterFixture":
        return self

    def __exit__(self, *exc) -> None:
        if not self.killed:
            self.server.stop()

    # -- faults -----------------------------------------------------------------------------
    def kill(self) -> None:
        """Stop serving: listening socket closed, open connections and watches cut."""
        self.server.stop()
        self.killed = True

    def restart(self) -> None:
        """A new server process on the same port, with the old one's objects and history
        (reads of `server` keep working across restarts; the request log restarts empty)."""
        old = self.server
        new = self._new_server()
        new.take_state_of(old)
        if not self.killed:
            old.stop()
        self._start(new)
        self.server = new
        self.killed = False

    # -- objects ----------------------------------------------------------------------------
    def put_template(self, name: str, spec: dict) -> dict:
        old = self.server.get(TEMPLATES, name)
        obj = {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
               "metadata": {"name": name}, "spec": spec}
        if old is not None:
            obj["metadata"] = dict(old["metadata"])
        return self.server.put_object(TEMPLATES, obj)

    def delete_template(self, name: str) -> bool:
        return self.server.delete_object(TEMPLATES, name)

    def set_node_labels(self, labels: dict) -> None:
        node = self.server.get(NODES, self.node)
        node["metadata"]["labels"] = dict({"kubernetes.io/hostname": self.node}, **labels)
        self.server.put_object(NODES, node)

    def hostnetwork(self) -> Optional[dict]:
        return self.server.get(HOSTNETWORKS, self.node)

    def template_statuses(self) -> dict[str, dict]:
        status = (self.hostnetwork() or {}).get("status") or {}
        return {t["name"]: t for t in status.get("templates") or []}

    def template_state(self, name: str, *, generation: Optional[int] = None) -> Optional[str]:
        entry = self.template_statuses().get(name)
        if entry is None:
            return None
        if generation is not None and entry.get("observedGeneration") != generation:
            return None
        return entry.get("state")
