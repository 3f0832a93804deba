"""The small interfaces the host layer offers (the only code that touches the host).

Each driver owns one kind of host object. Verbs: `discover_*` reads, `ensure_*` is idempotent
create-or-update, `delete_*` tolerates absence, `wait_for_*` is bounded, `set_*` is idempotent.
Every driver re-validates names with plumber_agent.validation before they reach a path, a netlink
call or an argv (defence in depth behind the spec validator), and raises plumber_agent.errors
types (HostError, HostTimeout, NotAvailable, InvalidSpec) with a message a user can act on.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol

from plumber_agent.models.observed import (ObservedBridge, ObservedLink, ObservedPf,
                                           ObservedRoute)


class NetlinkDriver(Protocol):
    """Links, addresses and routes of one network namespace, through pyroute2 (host/netlink.py).

    One instance per thread (pyroute2 0.9 sockets are not shared between threads)."""

    def discover(self) -> tuple[dict[str, ObservedLink], list[ObservedRoute]]:
        """All links (with canonical addresses, VF info) and the main table's v4+v6 routes.
        May return its previous answer again when the kernel reported no change since."""

    def forget_snapshot(self) -> None:
        """The next discover() reads the kernel again (after changes it cannot be told of)."""

    def ensure_vlan(self, ifname: str, parent: str, vlan_id: int) -> None:
        """ip link add link PARENT name IFNAME type vlan id ID; ip link set IFNAME up."""

    def delete_link(self, ifname: str) -> None:
        """ip link del IFNAME (absent is fine)."""

    def set_mtu(self, ifname: str, mtu: int) -> None:
        """ip link set IFNAME mtu MTU (waits until visible)."""

    def set_up(self, ifname: str) -> None:
        """ip link set IFNAME up."""

    def add_address(self, ifname: str, cidr: str) -> None:
        """ip addr add CIDR dev IFNAME (EEXIST is fine)."""

    def delete_address(self, ifname: str, cidr: str) -> None:
        """ip addr del CIDR dev IFNAME (absent is fine)."""

    def add_route(self, route: ObservedRoute) -> None:
        """ip route replace DST via GW dev DEV src SRC metric M (idempotent)."""

    def delete_route(self, route: ObservedRoute) -> None:
        """ip route del ... (absent is fine)."""

    def route_to(self, ip: str) -> Optional[ObservedRoute]:
        """ip route get IP: which dev/src this namespace uses to reach `ip` (None if unreachable)."""

    def close(self) -> None: ...


class SriovDriver(Protocol):
    """SR-IOV PFs and VFs through sysfs under a configurable root (host/sriov.py)."""

    def discover_pfs(self) -> dict[str, ObservedPf]:
        """Every PCI network function with sriov_totalvfs, by PCI address, VFs via virtfnN."""

    def annotate_links(self, links: dict[str, ObservedLink]) -> None:
        """Fill pci_addr/vendor_id/device_id/driver of links backed by a PCI device."""

    def set_num_vfs(self, pf_pci_addr: str, num_vfs: int) -> int:
        """Write sriov_numvfs (decimal; 0 first when changing between non-zero counts);
        read back and return what the kernel enabled. Bounded in time."""

    def wait_for_vfs(self, pf_pci_addr: str, num_vfs: int, timeout_s: float) -> ObservedPf:
        """Wait until `num_vfs` virtfnN links (and their drivers, if any) are present."""

    def bind_vf_driver(self, vf_pci_addr: str, driver: str) -> None:
        """driver_override + unbind + drivers_probe; verify the driver link. Bounded."""

    def driver_available(self, driver: str) -> bool:
        """Is /sys/bus/pci/drivers/DRIVER there (the module loaded)?"""


class OvsDriver(Protocol):
    """Open vSwitch bridges and ports through ovs-vsctl with --timeout and an argv list
    (host/ovs.py). Everything created is tagged external_ids:plumber-managed=true."""

    def discover(self) -> dict[str, ObservedBridge]:
        """All bridges with ports and interfaces; raises NotAvailable when OVS is unreachable."""

    def ensure_bridge(self, name: str, datapath_type: Optional[str]) -> None: ...

    def delete_bridge(self, name: str) -> None: ...

    def ensure_port(self, bridge: str, port: str, interfaces: list[str],
                    bond_mode: Optional[str] = None, lacp: Optional[str] = None,
                    mtu_request: Optional[int] = None) -> None:
        """One interface: a plain port named after it. Two or more: a bond named `port`."""

    def delete_port(self, bridge: str, port: str) -> None: ...


HostEventCallback = Callable[[str], None]
"""Called (from a monitor thread) with a short description when the kernel reports a change."""
