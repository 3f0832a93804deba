"""The host layer's front door: discover this node, execute planned actions, find the path to
the API server.

Why a facade: the reconciler and the CLI talk to one object with three verbs, and the real
drivers (pyroute2, sysfs, ovs-vsctl) are imported only when `Host.for_node` builds them, so the
pure parts (and their tests) never pay for or depend on them.

The drivers (netlink, sysfs, OVS) follow one convention: `discover*` reads, `ensure_*` is an
idempotent create-or-update, `delete_*` tolerates absence, `wait_for_*` is bounded, `set_*` is
idempotent. Each re-validates names (plumber_agent.validation) before they reach a path, a
netlink call or an argv, and raises plumber_agent.errors types with a message a user can act
on. The executor's dispatch table (host/executor.py) is the list of calls they must offer.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

from plumber_agent.errors import NotAvailable
from plumber_agent.host.executor import ExecutionReport, Executor, is_netlink_only
from plumber_agent.host.ledger import Ledger
from plumber_agent.models.actions import Action
from plumber_agent.models.observed import DEFAULT_PF_CLASSES, ObservedHost
from plumber_agent.models.plan import ApiServerPath, PlanIssue, PlanResult

DEFAULT_STATE_DIR = "/var/lib/plumber-agent"
LOCAL_TABLE = 255  # RT_TABLE_LOCAL: where `ip route get` finds the node's own addresses

logger = logging.getLogger(__name__)

__all__ = ["Host", "DEFAULT_STATE_DIR"]


class Host:
    def __init__(self, netlink, sysfs, ovs, ledger: Ledger, *, dry_run: bool = False,
                 log: logging.Logger = logger):
        self.netlink = netlink
        self.sysfs = sysfs
        self.ovs = ovs
        self.ledger = ledger
        self.log = log
        self.executor = Executor(netlink, sysfs, ovs, ledger, dry_run=dry_run, log=log)
        self._last_pfs: Optional[dict] = None

    @classmethod
    def for_node(cls, *, netns: Optional[str] = None, sysfs_root: str = "/sys",
                 ovsdb: Optional[str] = None, state_dir: str = DEFAULT_STATE_DIR,
                 dry_run: bool = False,
                 pf_classes: tuple[str, ...] = DEFAULT_PF_CLASSES) -> "Host":
        """The real drivers for this node (or for the seams the CLI was given)."""
        # Imported here: only host drivers import pyroute2/pyudev/run OVS, and only when used.
        from plumber_agent.host.netlink import Netlink
        from plumber_agent.host.ovs import Ovs
        from plumber_agent.host.sriov import Sysfs

        return cls(Netlink(netns), Sysfs(sysfs_root, pf_classes=pf_classes), Ovs(ovsdb),
                   Ledger(state_dir),
                   dry_run=dry_run)

    def discover(self) -> ObservedHost:
        """The whole node. Netlink re-dumps only when the kernel reported a change since its
        last dump; a change in the SR-IOV PFs (which can alter the VF lists netlink reports
        without a link notification) forces a re-dump too."""
        pfs = self.sysfs.discover_pfs()
        if pfs != self._last_pfs:
            self.netlink.forget_snapshot()
        self._last_pfs = pfs
        links, routes = self.netlink.discover()
        self.sysfs.annotate_links(links)
        observed = ObservedHost(links=links, routes=routes, pfs=pfs,
                                module_aliases=self.sysfs.module_aliases(),
                                kernel_modules=self.sysfs.kernel_modules())
        try:
            observed.bridges = self.ovs.discover()
        except NotAvailable as exc:
            observed.bridges, observed.ovs_error = None, str(exc) or "Open vSwitch is not available"
        return observed

    def execute(self, actions: Iterable[Action] | PlanResult,
                refusals: Iterable[PlanIssue] = (), *,
                may_start: Optional[Callable[[Action], Optional[str]]] = None) -> ExecutionReport:
        report = self.executor.execute(actions, refusals, may_start=may_start)
        if not all(is_netlink_only(result.action) for result in report.results):
            # sysfs and OVS changes may alter links without a notification naming them: the
            # next discovery dumps everything instead of re-reading what was notified.
            self.netlink.forget_snapshot()
        return report


    def api_server_path(self, ip: Optional[str]) -> Optional[ApiServerPath]:
        """How this node reaches the API server at `ip` (None if unknown/unreachable): the
        kernel's answer to `ip route get IP` (RTM_GETROUTE), an address of the node's own
        being a route of the local table."""
        if not ip:
            return None
        route = self.netlink.route_to(ip)
        if route is None:
            return None
        return ApiServerPath(ip=ip, dev=route.dev, src=route.src, gw=route.gw,
                             table=route.table, local=route.table == LOCAL_TABLE)

    def api_server_paths(self, ips: Iterable[str]) -> list[ApiServerPath]:
        """`api_server_path` of each endpoint the agent dials (the unreachable ones left out:
        there is no path to guard)."""
        paths = []
        for ip in dict.fromkeys(ips):
            path = self.api_server_path(ip)
            if path is not None:
                paths.append(path)
        return paths

    def close(self) -> None:
        for closer in (getattr(self.netlink, "close", None), self.ledger.release_lock):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                    self.log.warning("closing host drivers: %s", exc)
