"""A second network namespace holding the fake API server, reachable from the node namespace
over a veth pair, so tests can cut the node's path to the API server (link down, address or
route removed) exactly as a template could.

The server is started in-process: a helper thread setns()es into the API namespace and creates
the listening socket there (network namespaces are per thread; the socket stays in its
namespace whichever thread later serves it), so the test keeps full control of the server.
The agent runs inside the node namespace (`ip netns exec NODE ...`) so its API traffic takes
the veth path.
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import threading
from typing import Callable

from tests.support.cluster import ClusterFixture
from tests.helpers.netns import ip, netns

CLONE_NEWNET = 0x40000000
API_PORT = 6443


def run_in_netns(ns: str, fn: Callable[[], object]) -> object:
    """Run fn() on a fresh thread that has joined network namespace `ns`."""
    result: dict = {}

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"in-{ns}", daemon=True)
    thread.start()
    thread.join(30)
    if "error" in result:
        raise result["error"]
    return result.get("value")


class ApiNamespace:
    def __init__(self, node_ns: str, *, node_ifname: str, node_addr: str, api_addr: str):
        self.node_ns, self.node_ifname = node_ns, node_ifname
        self.node_addr, self.api_addr = node_addr, api_addr
        self.api_ip = str(ipaddress.ip_interface(api_addr).ip)
        self._ctx = None
        self.api_ns = ""

    def __enter__(self) -> "ApiNamespace":
        self._ctx = netns()
        self.api_ns = self._ctx.__enter__()
        peer = "apipeer0"
        ip(self.node_ns, "link", "add", "name", self.node_ifname, "type", "veth", "peer", "name",
           peer)
        ip(self.node_ns, "link", "set", peer, "netns", self.api_ns)
        ip(self.node_ns, "addr", "add", self.node_addr, "dev", self.node_ifname)
        ip(self.node_ns, "link", "set", self.node_ifname, "up")
        ip(self.api_ns, "addr", "add", self.api_addr, "dev", peer)
        ip(self.api_ns, "link", "set", peer, "up")
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def cluster(self, workdir) -> ClusterFixture:
        return ClusterFixture(workdir, host=self.api_ip, port=API_PORT,
                              start_fn=lambda server: run_in_netns(self.api_ns, server.start))

    def in_node(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.node_ns] + list(argv)

    def link_down(self) -> None:
        ip(self.node_ns, "link", "set", self.node_ifname, "down")

    def link_up(self) -> None:
        ip(self.node_ns, "link", "set", self.node_ifname, "up")
