"""An in-memory host at OUR seam: the three drivers the executor calls (netlink, sysfs, OVS).

Why: planner + executor round trips (plan -> execute -> discover -> plan is empty, and cleanup
returns the host to where it started) must be testable without root. The fake behaves like the
kernel/OVS where it matters and raises REAL error types with errno values:
  - adds are idempotent (an existing identical VLAN/address/bridge is fine), a clashing object
    is EEXIST; deletes tolerate absence;
  - a missing parent/device is ENODEV, a VLAN MTU above its parent's is ERANGE (and lowering a
    parent lowers its VLANs, as the kernel does), a gateway not on any connected prefix is
    ENETUNREACH; adding an address adds its connected (proto kernel) prefix route; deleting
    one drops the routes whose source it was or whose gateway it made reachable, and an MTU
    below 1280 drops the link's IPv6 addresses and routes;
  - numVfs above sriov_totalvfs is ERANGE, no PF driver is ENOENT, changing between non-zero
    counts destroys and re-creates every VF (the driver writes 0 first), a PF can be made to
    enable fewer VFs than asked; VFs get the default VF driver, a netdev if that driver has one;
  - an unloaded VF driver is NotAvailable; OVS can be made unreachable (NotAvailable);
  - Linux bonds as the bonding driver does them (fakebond.py: a member must be down to be
    enslaved, its MTU follows the bond's, releasing closes it and puts its MTU back).
  - VF attributes (set_vf) on a VF that does not exist, a multicast MAC, a VLAN above 4095, a
    qos above 7 or a min rate above a non-zero max are EINVAL, a PF driver without VF ops is
    EOPNOTSUPP; a rate not given keeps its value (the netlink driver reads it first).
`calls` records every mutating driver call in order; `fail(verb, target, exc)` injects a
one-shot failure.
"""
from __future__ import annotations

import copy
import errno
import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Optional

from plumber_agent import validation as v
from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.models import lbridge_spec
from plumber_agent.models.observed import (ObservedBridge, ObservedLink, ObservedLinuxBridge,
                                           ObservedOvsInterface, ObservedOvsPort, ObservedPf,
                                           ObservedRoute, ObservedVf, ObservedVfInfo)
from tests.support import fakebond

NETDEV_VF_DRIVERS = {"iavf", "i40evf", "ixgbevf", "mlx5_core"}
BARE_VF = {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "spoofchk": True, "trust": False,
           "link_state": 0, "min_tx_rate": 0, "max_tx_rate": 0}


def host_error(code: int, message: str) -> HostError:
    exc = HostError(f"{message} ({errno.errorcode[code]})")
    exc.errno = code
    return exc


@dataclass
class FakePf:
    pci_addr: str
    ifname: Optional[str]
    vendor_id: str = "8086"
    device_id: str = "1572"
    driver: Optional[str] = "i40e"
    total_vfs: int = 8
    num_vfs: int = 0
    vf_default_driver: Optional[str] = "iavf"
    vf_base: tuple[str, int, int] = ("0000", 0x02, 0x0a)  # domain, bus, first device
    enable_limit: Optional[int] = None  # a driver that enables fewer VFs than asked
    vf_drivers: dict[int, Optional[str]] = field(default_factory=dict)
    # IFLA_VF_INFO per VF id, as the PF netdev reports it; VFs are created bare
    vf_settings: dict[int, dict] = field(default_factory=dict)
    vf_ops: bool = True  # the PF driver can set VF attributes (ndo_set_vf_*)

    def vf_pci(self, i: int) -> str:
        domain, bus, dev = self.vf_base
        return f"{domain}:{bus:02x}:{dev + i // 8:02x}.{i % 8}"

    def vf_ifname(self, i: int) -> str:
        return f"{self.ifname}v{i}" if self.ifname else f"vf{self.vf_base[1]:02x}{self.vf_base[2] + i // 8:02x}{i % 8}"


class FakeHost:
    def __init__(self) -> None:
        self.links: dict[str, ObservedLink] = {}
        self.routes: list[ObservedRoute] = []
        self.pfs: dict[str, FakePf] = {}
        self.available_drivers: set[str] = {"iavf", "i40evf", "ixgbevf", "vfio-pci"}
        self.ovs_available = True
        # CONFIG_BRIDGE_VLAN_FILTERING: without it (the CI kernel) vlan_filtering and VLAN
        # entries are refused with EOPNOTSUPP.
        self.bridge_vlan_filtering = True
        self.bridges: dict[str, ObservedBridge] = {}
        self.calls: list[tuple] = []
        self.failures: dict[tuple[str, str], Exception] = {}
        self._next_index = 1
        self._next_ofport = 1
        # IPv4 primaries/secondaries: insertion order per link; like the kernel's default
        # (promote_secondaries=0), deleting a primary deletes its secondaries.
        self._addr_order: dict[str, list[str]] = {}
        self.promote_secondaries = False
        self.netlink = FakeNetlink(self)
        self.sysfs = FakeSysfs(self)
        self.driver_overrides: dict[str, str] = {}  # VF PCI address -> driver_override
        self.ovs = FakeOvs(self)
        self.bonding_available = True  # the bonding module (fakebond.py)
        self.bond_original_mtu: dict[str, int] = {}  # member -> its MTU before enslaving
        self.bond_primaries: dict[str, str] = {}  # bond -> primary (kept by name, as the kernel)

    # -- building the initial host ------------------------------------------------------------

    def add_link(self, ifname: str, *, mtu: int = 1500, kind: Optional[str] = None,
                 parent: Optional[str] = None, vlan_id: Optional[int] = None,
                 ipv4: tuple = (), ipv6: tuple = (), up: bool = True,
                 mac: Optional[str] = None) -> ObservedLink:
        link = ObservedLink(ifname=ifname, index=self._next_index, kind=kind, mtu=mtu,
                            mac=mac or f"52:54:00:00:{self._next_index // 256:02x}:"
                                        f"{self._next_index % 256:02x}",
                            admin_up=up, oper_state="up" if up else "down", parent=parent,
                            vlan_id=vlan_id)
        self._next_index += 1
        self.links[ifname] = link
        if up:
            link.ipv6.append(self._link_local(ifname))
        for cidr in ipv4:
            self._add_address(link, cidr)
        for cidr in ipv6:
            self._add_address(link, cidr)
        return link

    def add_linux_bridge(self, name: str, *, stp: bool = False, vlan_filtering: bool = False,
                         ports: tuple = (), **kw) -> ObservedLink:
        """A Linux bridge found on the host (not ours), with `ports` (existing links) in it."""
        link = self.add_link(name, kind="bridge", **kw)
        link.linux_bridge = ObservedLinuxBridge(stp=stp, vlan_filtering=vlan_filtering,
                                                default_pvid=1)
        for port in ports:
            self._join_bridge(self.links[port], link)
        return link

    def _join_bridge(self, port: ObservedLink, bridge: ObservedLink) -> None:
        """nbp_vlan_init: a new port gets the bridge's default_pvid, pvid and untagged."""
        port.master = bridge.ifname
        pvid = bridge.linux_bridge.default_pvid if bridge.linux_bridge else None
        port.bridge_vlans = [f"{pvid} pvid untagged"] if pvid else []

    def add_pf(self, pci: str, ifname: Optional[str], **kw) -> FakePf:
        pf = FakePf(pci_addr=pci, ifname=ifname, **{k: kw.pop(k) for k in list(kw)
                                                    if k in FakePf.__dataclass_fields__})
        self.pfs[pci] = pf
        if ifname:
            self.add_link(ifname, **kw)
        if pf.num_vfs:
            count, pf.num_vfs = pf.num_vfs, 0
            self._create_vfs(pf, count)
        return pf

    def add_route(self, *, family: int = 4, dst: Optional[str] = None, gw: Optional[str] = None,
                  dev: Optional[str] = None, src: Optional[str] = None,
                  metric: Optional[int] = None, proto: str = "boot") -> None:
        self.routes.append(ObservedRoute(family=family, dst=dst, gw=gw, dev=dev, src=src,
                                         metric=metric, proto=proto))

    def fail(self, verb: str, target: str, exc: Exception) -> None:
        self.failures[(verb, target)] = exc

    def _maybe_fail(self, verb: str, target: str) -> None:
        exc = self.failures.pop((verb, target), None)
        if exc is not None:
            raise exc

    # -- kernel-like internals -----------------------------------------------------------------

    def _is_primary(self, link: ObservedLink, canon: str, order: list[str]) -> bool:
        """The first address of its subnet still on the link (before `canon` was removed)."""
        net = ipaddress.ip_interface(canon).network
        for a in order:
            if ipaddress.ip_interface(a).network == net:
                return a == canon
        return False

    @staticmethod
    def _link_local(ifname: str) -> str:
        return f"fe80::{zlib.crc32(ifname.encode()) & 0xffff:x}/64"

    def _add_address(self, link: ObservedLink, cidr: str) -> None:
        canon = v.canonical_interface_address(cidr)
        family = 6 if ":" in canon else 4
        addrs = link.ipv4 if family == 4 else link.ipv6
        if canon in addrs:
            return
        addrs.append(canon)
        addrs.sort()
        self._addr_order.setdefault(link.ifname, []).append(canon)
        net = ipaddress.ip_interface(canon).network
        if net.prefixlen < net.max_prefixlen and not self._find_route(
                family, net.compressed, link.ifname):
            self.routes.append(ObservedRoute(
                family=family, dst=net.compressed, dev=link.ifname,
                src=canon.split("/")[0] if family == 4 else None,
                metric=None if family == 4 else 256, proto="kernel", scope=253))

    def _find_route(self, family, dst, dev) -> Optional[ObservedRoute]:
        for r in self.routes:
            if r.family == family and r.dst == dst and r.dev == dev and r.proto == "kernel":
                return r
        return None

    def _del_address(self, link: ObservedLink, canon: str) -> None:
        family = 6 if ":" in canon else 4
        addrs = link.ipv4 if family == 4 else link.ipv6
        if canon not in addrs:
            return
        addrs.remove(canon)
        net = ipaddress.ip_interface(canon).network
        order = self._addr_order.setdefault(link.ifname, [])
        same_net = [a for a in order if a in addrs and ipaddress.ip_interface(a).network == net]
        if family == 4 and not self.promote_secondaries and self._is_primary(link, canon, order):
            for secondary in same_net:  # the kernel default: secondaries die with the primary
                addrs.remove(secondary)
            same_net = []
        order[:] = [a for a in order if a in addrs]
        prefix = self._find_route(family, net.compressed, link.ifname)
        if prefix is not None:
            if not same_net:
                self.routes.remove(prefix)
            elif family == 4 and prefix.src == canon.split("/")[0]:
                # promote_secondaries=1: a secondary takes over the prefix route
                prefix.src = same_net[0].split("/")[0]
        if family == 4:  # routes whose preferred source it was go (fib_sync_down_addr)
            ip = canon.split("/")[0]
            self.routes = [r for r in self.routes if r.src != ip]
        # Routes whose gateway is no longer reachable go too (as the kernel does).
        self.routes = [r for r in self.routes if not (r.gw and r.dev == link.ifname
                                                      and not self._reachable(r.gw, r.dev))]

    def _reachable(self, gw: str, dev: Optional[str]) -> Optional[str]:
        ip = ipaddress.ip_address(gw)
        if ip.version == 6 and ip.is_link_local:
            return dev
        for r in self.routes:
            if r.proto == "kernel" and r.dst and (dev is None or r.dev == dev) \
                    and ip in ipaddress.ip_network(r.dst):
                return r.dev
        return None

    def _remove_link(self, ifname: str) -> None:
        link = self.links.get(ifname)
        if link is None:
            return
        if link.kind == "bond":
            fakebond.bond_deleted(self, ifname)
        del self.links[ifname]
        for child in [n for n, lk in self.links.items() if lk.parent == ifname]:
            self._remove_link(child)
        for port in self.links.values():  # a deleted bridge lets its ports go
            if port.master == ifname:
                port.master, port.bridge_vlans = None, None
        self.routes = [r for r in self.routes if r.dev != ifname]
        for bridge in self.bridges.values():
            for port in bridge.ports:
                for iface in port.interfaces:
                    if iface.name == ifname:
                        iface.ofport = -1  # docs/pitfalls.md 32: the row stays, ofport -1

    def _need_link(self, ifname: str) -> ObservedLink:
        link = self.links.get(ifname)
        if link is None:
            raise host_error(errno.ENODEV, f"no such device {ifname}")
        return link

    def _create_vfs(self, pf: FakePf, count: int) -> None:
        for i in range(count):
            driver = pf.vf_default_driver
            pf.vf_drivers[i] = driver
            pf.vf_settings[i] = dict(BARE_VF)
            if driver in NETDEV_VF_DRIVERS:
                self.add_link(pf.vf_ifname(i), up=False)
        pf.num_vfs = count

    def _destroy_vfs(self, pf: FakePf) -> None:
        for i in range(pf.num_vfs):
            self._remove_link(pf.vf_ifname(i))
        pf.vf_drivers.clear()
        pf.vf_settings.clear()
        pf.num_vfs = 0

    # -- what tests compare -------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Everything observable except link indexes (a re-created link gets a new one)."""
        return {
            "links": {n: (lk.kind, lk.mtu, lk.parent, lk.vlan_id, lk.admin_up, tuple(lk.ipv4),
                          tuple(lk.ipv6), lk.master, lk.bond)
                      for n, lk in sorted(self.links.items())},
            "routes": sorted((r.family, r.dst or "", r.gw or "", r.dev or "", r.src or "",
                              r.metric or 0, r.proto or "") for r in self.routes),
            "pfs": {p: (pf.num_vfs, tuple(sorted(pf.vf_drivers.items(), key=lambda kv: kv[0])),
                        tuple(sorted((i, tuple(sorted(v.items())))
                                     for i, v in pf.vf_settings.items())))
                    for p, pf in sorted(self.pfs.items())},
            "linux_bridges": {n: (lk.linux_bridge.stp, lk.linux_bridge.vlan_filtering)
                              for n, lk in sorted(self.links.items()) if lk.linux_bridge},
            "bridge_ports": {n: (lk.master, tuple(lk.bridge_vlans or ()))
                             for n, lk in sorted(self.links.items()) if lk.master},
            "bridges": {n: (b.datapath_type, tuple(sorted(
                (p.name, tuple(sorted(i.name for i in p.interfaces)), p.bond_mode, p.lacp,
                 tuple(i.mtu_request for i in p.interfaces)) for p in b.ports)))
                for n, b in sorted(self.bridges.items())},
        }


class FakeNetlink(fakebond.FakeBondNetlink):
    def __init__(self, host: FakeHost):
        self.h = host

    def discover(self):
        links = copy.deepcopy(self.h.links)
        for link in links.values():
            link.ipv4.sort()
            link.ipv6.sort()
        for pf in self.h.pfs.values():
            if pf.ifname in links:
                links[pf.ifname].vfs = self._vfs(pf)
        return links, copy.deepcopy(self.h.routes)

    @staticmethod
    def _vfs(pf: FakePf) -> list[ObservedVfInfo]:
        return [ObservedVfInfo(id=i, **settings) for i, settings in sorted(pf.vf_settings.items())]

    def _pf_of(self, ifname: str) -> Optional[FakePf]:
        return next((pf for pf in self.h.pfs.values() if pf.ifname == ifname), None)

    def discover_vfs(self, ifname: str):
        if ifname not in self.h.links:
            return None
        pf = self._pf_of(ifname)
        return self._vfs(pf) if pf is not None else []

    def set_vf(self, ifname: str, vf_id: int, settings: dict) -> None:
        self.h.calls.append(("set_vf", ifname, vf_id))
        self.h._maybe_fail("set_vf", ifname)
        pf = self._pf_of(ifname)
        if ifname not in self.h.links:
            raise NotAvailable(f"setting VF {vf_id}: link {ifname!r} does not exist")
        if pf is None or not pf.vf_ops:
            # rtnetlink's do_setvfinfo: a driver without ndo_set_vf_* ops
            raise host_error(errno.EOPNOTSUPP, f"{ifname} cannot set VF attributes")
        if vf_id not in pf.vf_settings:
            raise host_error(errno.EINVAL, f"{ifname} has no VF {vf_id}")
        given = {k: v for k, v in settings.items() if v is not None}
        after = {**pf.vf_settings[vf_id], **given}
        mac = given.get("mac")
        # What the PF drivers refuse (i40e, ice): a multicast MAC (all-zero clears it), a VLAN
        # above 4095 or a priority above 7, a minimum rate above a non-zero maximum.
        if mac is not None and int(mac[:2], 16) & 1:
            raise host_error(errno.EINVAL, f"{ifname}: {mac} is not a unicast MAC")
        if after["vlan"] > 4095 or after["qos"] > 7:
            raise host_error(errno.EINVAL, f"{ifname}: vlan {after['vlan']} qos {after['qos']}")
        if after["max_tx_rate"] and after["min_tx_rate"] > after["max_tx_rate"]:
            raise host_error(errno.EINVAL, f"{ifname}: min_tx_rate {after['min_tx_rate']} is "
                                           f"above max_tx_rate {after['max_tx_rate']}")
        pf.vf_settings[vf_id] = after

    def forget_snapshot(self) -> None:
        """Nothing to forget: this fake reads its host afresh every time."""

    def ensure_vlan(self, ifname: str, parent: str, vlan_id: int) -> None:
        v.require(v.check_ifname, ifname, "VLAN name")
        self.h.calls.append(("ensure_vlan", ifname, parent, vlan_id))
        self.h._maybe_fail("ensure_vlan", ifname)
        parent_link = self.h._need_link(parent)
        existing = self.h.links.get(ifname)
        if existing is not None:
            if existing.kind == "vlan" and existing.parent == parent and existing.vlan_id == vlan_id:
                self.set_up(ifname)
                return
            raise host_error(errno.EEXIST, f"{ifname} exists and is not VLAN {vlan_id} on {parent}")
        for other in self.h.links.values():
            if other.kind == "vlan" and other.parent == parent and other.vlan_id == vlan_id:
                raise host_error(errno.EEXIST, f"VLAN {vlan_id} on {parent} exists as {other.ifname}")
        self.h.add_link(ifname, kind="vlan", parent=parent, vlan_id=vlan_id,
                        mtu=parent_link.mtu, up=True)

    # -- Linux bridges (host/netlink/lbridge.py), as the kernel's bridge does them ---------

    def _vlan_filtering_missing(self, what: str) -> None:
        if not self.h.bridge_vlan_filtering:
            raise NotAvailable(f"{what}: this kernel's bridge has no VLAN filtering "
                               "(CONFIG_BRIDGE_VLAN_FILTERING)")

    def ensure_linux_bridge(self, name: str, *, stp=None, vlan_filtering=None) -> None:
        v.require(v.check_ifname, name, "name")
        self.h.calls.append(("ensure_linux_bridge", name, stp, vlan_filtering))
        self.h._maybe_fail("ensure_linux_bridge", name)
        if vlan_filtering:
            self._vlan_filtering_missing(f"linux bridge {name}")
        link = self.h.links.get(name)
        if link is None:  # the kernel creates a bridge down, with default_pvid 1
            link = self.h.add_link(name, kind="bridge", up=False)
            link.linux_bridge = ObservedLinuxBridge(stp=False, vlan_filtering=False,
                                                    default_pvid=1)
        elif link.kind != "bridge" or link.linux_bridge is None:
            raise host_error(errno.EEXIST, f"{name} exists and is not a linux bridge")
        if stp is not None:
            link.linux_bridge.stp = stp
        if vlan_filtering is not None:
            link.linux_bridge.vlan_filtering = vlan_filtering

    def set_linux_bridge_port(self, port: str, bridge: Optional[str]) -> None:
        self.h.calls.append(("set_linux_bridge_port", port, bridge))
        self.h._maybe_fail("set_linux_bridge_port", port)
        link = self.h._need_link(port)
        if bridge is None:
            link.master, link.bridge_vlans = None, None
            return
        master = self.h._need_link(bridge)
        if master.kind != "bridge":
            raise host_error(errno.EOPNOTSUPP, f"{bridge} is not a bridge")
        if link.kind == "bridge":
            raise host_error(errno.ELOOP, f"{port} is a bridge")
        if link.master != bridge:
            self.h._join_bridge(link, master)

    def linux_bridge_vlans(self, port: str) -> Optional[list[str]]:
        link = self.h.links.get(port)
        return list(link.bridge_vlans) if link and link.bridge_vlans is not None else None

    def set_linux_bridge_vlans(self, port: str, *, add=None, delete=None) -> None:
        self.h.calls.append(("set_linux_bridge_vlans", port, tuple(add or ()),
                             tuple(delete or ())))
        self.h._maybe_fail("set_linux_bridge_vlans", port)
        self._vlan_filtering_missing(f"the VLANs of {port}")
        link = self.h._need_link(port)
        if link.bridge_vlans is None:
            raise host_error(errno.EINVAL, f"{port} is not a bridge port")
        have = lbridge_spec.expand(link.bridge_vlans)
        for vid in lbridge_spec.expand(list(delete or ())):
            have.pop(vid, None)  # ENOENT for an absent id is tolerated by the driver
        for vid, (pvid, untagged) in lbridge_spec.expand(list(add or ())).items():
            if pvid:  # one pvid per port: the old one loses the flag (__vlan_add_flags)
                have = {k: (False, u) for k, (_p, u) in have.items()}
            have[vid] = (pvid, untagged)
        link.bridge_vlans = lbridge_spec.compress(have)

    def delete_link(self, ifname: str) -> None:
        self.h.calls.append(("delete_link", ifname))
        self.h._maybe_fail("delete_link", ifname)
        self.h._remove_link(ifname)

    def set_mtu(self, ifname: str, mtu: int) -> None:
        self.h.calls.append(("set_mtu", ifname, mtu))
        self.h._maybe_fail("set_mtu", ifname)
        link = self.h._need_link(ifname)
        if not v.MTU_MIN <= mtu <= v.MTU_MAX:
            raise host_error(errno.EINVAL, f"MTU {mtu} is out of range")
        if link.kind == "vlan" and link.parent in self.h.links \
                and mtu > self.h.links[link.parent].mtu:
            raise host_error(errno.ERANGE, f"MTU {mtu} of {ifname} is above its parent's")
        link.mtu = mtu
        if mtu < 1280:  # the kernel disables IPv6 on the device: its addresses and routes go
            link.ipv6.clear()
            self.h.routes = [r for r in self.h.routes if not (r.family == 6 and r.dev == ifname)]
        for child in self.h.links.values():
            if child.parent == ifname and child.kind == "vlan" and child.mtu > mtu:
                child.mtu = mtu
        if link.kind == "bond":
            fakebond.bond_mtu_set(self.h, ifname, mtu)

    def set_up(self, ifname: str) -> None:
        self.h.calls.append(("set_up", ifname))
        self.h._maybe_fail("set_up", ifname)
        link = self.h._need_link(ifname)
        if not link.admin_up:
            link.admin_up, link.oper_state = True, "up"
            ll = self.h._link_local(ifname)
            if ll not in link.ipv6:
                link.ipv6.append(ll)
                link.ipv6.sort()

    def add_address(self, ifname: str, cidr: str) -> None:
        self.h.calls.append(("add_address", ifname, cidr))
        self.h._maybe_fail("add_address", ifname)
        self.h._add_address(self.h._need_link(ifname), cidr)

    def delete_address(self, ifname: str, cidr: str) -> None:
        self.h.calls.append(("delete_address", ifname, cidr))
        self.h._maybe_fail("delete_address", ifname)
        link = self.h.links.get(ifname)
        if link is not None:
            self.h._del_address(link, v.canonical_interface_address(cidr))

    @staticmethod
    def _metric(family: int, metric: Optional[int]) -> int:
        return metric or (1024 if family == 6 else 0)

    def add_route(self, route: ObservedRoute) -> None:
        target = route.dst or "default"
        self.h.calls.append(("add_route", target, route.gw, route.dev))
        self.h._maybe_fail("add_route", target)
        dev = route.dev
        if dev is not None:
            self.h._need_link(dev)
        if route.gw:
            via = self.h._reachable(route.gw, dev)
            if via is None:
                raise host_error(errno.ENETUNREACH, f"gateway {route.gw} is not reachable")
            dev = dev or via
        if dev is None:
            raise host_error(errno.EINVAL, "a route needs a gateway or a device")
        metric = self._metric(route.family, route.metric)
        self.h.routes = [r for r in self.h.routes if not (
            r.family == route.family and r.dst == route.dst and r.table == route.table
            and self._metric(r.family, r.metric) == metric)]
        self.h.routes.append(ObservedRoute(family=route.family, dst=route.dst, gw=route.gw,
                                           dev=dev, src=route.src,
                                           metric=metric if metric else None, proto="static"))

    def discover_collateral(self, ifname: str):
        link = self.h.links.get(ifname)
        addresses = sorted(link.ipv4 + link.ipv6) if link is not None else None
        return addresses, copy.deepcopy(self.h.routes)

    def create_route(self, route: ObservedRoute) -> bool:
        """`ip route add`: False (left alone) when a route with that key is there."""
        metric = self._metric(route.family, route.metric)
        if any(r.family == route.family and r.dst == route.dst and r.table == route.table
               and self._metric(r.family, r.metric) == metric for r in self.h.routes):
            self.h.calls.append(("create_route", route.dst or "default", "exists"))
            return False
        self.add_route(route)
        self.h.routes[-1].proto = route.proto or "static"
        return True

    def delete_route(self, route: ObservedRoute) -> None:
        target = route.dst or "default"
        self.h.calls.append(("delete_route", target))
        self.h._maybe_fail("delete_route", target)
        metric = self._metric(route.family, route.metric)
        self.h.routes = [r for r in self.h.routes if not (
            r.family == route.family and r.dst == route.dst and r.table == route.table
            and self._metric(r.family, r.metric) == metric)]

    def route_to(self, ip: str) -> Optional[ObservedRoute]:
        addr = ipaddress.ip_address(ip)
        best = None
        for r in self.h.routes:
            if r.family != addr.version:
                continue
            net = ipaddress.ip_network(r.dst or ("0.0.0.0/0" if addr.version == 4 else "::/0"))
            if addr in net:
                rank = (-net.prefixlen, self._metric(r.family, r.metric))
                if best is None or rank < best[0]:
                    best = (rank, r)
        if best is None:
            return None
        r = best[1]
        link = self.h.links.get(r.dev)
        addrs = (link.ipv4 if addr.version == 4 else link.ipv6) if link else []
        src = r.src or next((a.split("/")[0] for a in addrs
                             if not ipaddress.ip_interface(a).ip.is_link_local), None)
        return ObservedRoute(family=r.family, dst=ip, gw=r.gw, dev=r.dev, src=src)

    def close(self) -> None:
        pass


class FakeSysfs:
    def __init__(self, host: FakeHost):
        self.h = host

    module_aliases_map: Optional[dict] = None  # the host's modules.alias (None: unreadable)

    def module_aliases(self) -> Optional[dict]:
        return self.module_aliases_map

    def kernel_modules(self):
        return None  # not known: driver names are not checked

    def discover_pfs(self) -> dict[str, ObservedPf]:
        out = {}
        for pci, pf in self.h.pfs.items():
            vfs = []
            for i in range(pf.num_vfs):
                name = pf.vf_ifname(i)
                vfs.append(ObservedVf(id=i, pci_addr=pf.vf_pci(i), driver=pf.vf_drivers.get(i),
                                      ifname=name if name in self.h.links else None))
            out[pci] = ObservedPf(pci_addr=pci, ifname=pf.ifname, vendor_id=pf.vendor_id,
                                  device_id=pf.device_id, driver=pf.driver,
                                  total_vfs=pf.total_vfs, num_vfs=pf.num_vfs, vfs=vfs)
        return out

    def annotate_links(self, links: dict[str, ObservedLink]) -> None:
        for pf in self.h.pfs.values():
            if pf.ifname in links:
                link = links[pf.ifname]
                link.pci_addr, link.vendor_id, link.device_id, link.driver = (
                    pf.pci_addr, pf.vendor_id, pf.device_id, pf.driver)
            for i in range(pf.num_vfs):
                if pf.vf_ifname(i) in links:
                    link = links[pf.vf_ifname(i)]
                    link.pci_addr, link.driver = pf.vf_pci(i), pf.vf_drivers.get(i)

    def _pf(self, pci: str) -> FakePf:
        pf = self.h.pfs.get(pci)
        if pf is None:
            raise host_error(errno.ENODEV, f"no PCI device {pci}")
        return pf

    def set_num_vfs(self, pf_pci_addr: str, num_vfs: int) -> int:
        self.h.calls.append(("set_num_vfs", pf_pci_addr, num_vfs))
        self.h._maybe_fail("set_num_vfs", pf_pci_addr)
        pf = self._pf(pf_pci_addr)
        if pf.driver is None:
            raise host_error(errno.ENOENT, f"PF {pf_pci_addr} has no driver")
        if num_vfs > pf.total_vfs:
            raise host_error(errno.ERANGE, f"{num_vfs} is above sriov_totalvfs {pf.total_vfs}")
        if num_vfs == pf.num_vfs:
            return num_vfs
        if pf.num_vfs:
            self.h._destroy_vfs(pf)  # the driver writes 0 first between non-zero counts
        enabled = min(num_vfs, pf.enable_limit) if pf.enable_limit is not None else num_vfs
        self.h._create_vfs(pf, enabled)
        return enabled

    def wait_for_vfs(self, pf_pci_addr: str, num_vfs: int, timeout_s: float) -> ObservedPf:
        pf = self._pf(pf_pci_addr)
        if pf.num_vfs < num_vfs:
            raise HostTimeout(f"PF {pf_pci_addr}: {pf.num_vfs} of {num_vfs} VFs after {timeout_s} s")
        return self.discover_pfs()[pf_pci_addr]

    def bind_vf_driver(self, vf_pci_addr: str, driver: str) -> None:
        v.require(v.check_driver, driver, "VF driver")
        self.h.calls.append(("bind_vf_driver", vf_pci_addr, driver))
        self.h._maybe_fail("bind_vf_driver", vf_pci_addr)
        for pf in self.h.pfs.values():
            for i in range(pf.num_vfs):
                if pf.vf_pci(i) == vf_pci_addr:
                    if driver not in self.h.available_drivers:
                        raise NotAvailable(f"VF driver {driver} is not loaded on this node")
                    if pf.vf_drivers.get(i) == driver:
                        return
                    self.h.driver_overrides[vf_pci_addr] = driver  # bound via driver_override
                    self.h._remove_link(pf.vf_ifname(i))
                    pf.vf_drivers[i] = driver
                    if driver in NETDEV_VF_DRIVERS:
                        self.h.add_link(pf.vf_ifname(i), up=False)
                    return
        raise host_error(errno.ENODEV, f"no VF {vf_pci_addr}")

    def clear_driver_override(self, vf_pci_addr: str) -> None:
        self.h.calls.append(("clear_driver_override", vf_pci_addr))
        self.h.driver_overrides.pop(vf_pci_addr, None)

    def driver_available(self, driver: str) -> bool:
        return driver in self.h.available_drivers


class FakeOvs:
    def __init__(self, host: FakeHost):
        self.h = host

    def _check(self) -> None:
        if not self.h.ovs_available:
            raise NotAvailable("cannot connect to the OVS database (fake: OVS is down)")

    def discover(self) -> dict[str, ObservedBridge]:
        self._check()
        return copy.deepcopy(self.h.bridges)

    def ensure_bridge(self, name: str, datapath_type: Optional[str]) -> None:
        v.require(v.check_ifname, name, "bridge name")
        self.h.calls.append(("ensure_bridge", name, datapath_type))
        self._check()
        self.h._maybe_fail("ensure_bridge", name)
        bridge = self.h.bridges.get(name)
        if bridge is None:
            self.h.bridges[name] = ObservedBridge(name=name, datapath_type=datapath_type or "",
                                                  external_ids={"plumber-managed": "true"})
        elif datapath_type:
            bridge.datapath_type = datapath_type

    def delete_bridge(self, name: str) -> None:
        self.h.calls.append(("delete_bridge", name))
        self._check()
        self.h._maybe_fail("delete_bridge", name)
        self.h.bridges.pop(name, None)

    def ensure_port(self, bridge: str, port: str, interfaces: list[str],
                    bond_mode: Optional[str] = None, lacp: Optional[str] = None,
                    mtu_request: Optional[int] = None) -> None:
        self.h.calls.append(("ensure_port", bridge, port, tuple(interfaces)))
        self._check()
        self.h._maybe_fail("ensure_port", port)
        if bridge not in self.h.bridges:
            raise HostError(f"no bridge named {bridge}")
        for other in self.h.bridges.values():
            if other.name != bridge and any(p.name == port for p in other.ports):
                raise host_error(errno.EEXIST, f"port {port} is on bridge {other.name}")
        for name in interfaces:
            if name not in self.h.links:
                raise host_error(errno.ENODEV, f"could not open network device {name}")
        ifaces = []
        for name in interfaces:
            ifaces.append(ObservedOvsInterface(name=name, ofport=self.h._next_ofport,
                                               mtu_request=mtu_request,
                                               external_ids={"plumber-managed": "true"}))
            self.h._next_ofport += 1
        ports = self.h.bridges[bridge].ports
        ports[:] = [p for p in ports if p.name != port]
        ports.append(ObservedOvsPort(name=port, interfaces=ifaces,
                                     bond_mode=bond_mode if len(interfaces) > 1 else None,
                                     lacp=lacp if len(interfaces) > 1 else None,
                                     external_ids={"plumber-managed": "true"}))

    def delete_port(self, bridge: str, port: str) -> None:
        self.h.calls.append(("delete_port", bridge, port))
        self._check()
        self.h._maybe_fail("delete_port", port)
        if bridge in self.h.bridges:
            ports = self.h.bridges[bridge].ports
            ports[:] = [p for p in ports if p.name != port]


# -- crashes at our seam -------------------------------------------------------------------------

class SimulatedCrash(BaseException):
    """A SIGKILL stand-in raised from a driver call. A BaseException, not an Exception, so
    nothing in the agent catches it: execution stops right there, nothing else is written."""


MUTATING_CALLS = frozenset({
    "ensure_vlan", "delete_link", "set_mtu", "set_up", "add_address", "delete_address",
    "add_route", "delete_route", "set_num_vfs", "bind_vf_driver", "ensure_bridge",
    "delete_bridge", "ensure_port", "delete_port", "create_route", "set_vf", "ensure_bond",
    "enslave", "release_member", "ensure_linux_bridge", "set_linux_bridge_port",
    "set_linux_bridge_vlans"})


class CrashAt:
    """Kills the 'agent' at its Nth mutating driver call (1-based, counted over the three
    drivers it wraps): BEFORE the call reaches the host, or AFTER the host changed and before
    the executor gets control back (so before the ledger confirm)."""

    def __init__(self, n: int, *, after: bool):
        self.n, self.after = n, after
        self.count = 0
        self.fired: Optional[tuple] = None  # (method, args) of the call that crashed

    def wrap(self, driver):
        return _CrashingDriver(driver, self)


class _CrashingDriver:
    def __init__(self, inner, plan: CrashAt):
        self._inner, self._plan = inner, plan

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in MUTATING_CALLS:
            return attr
        plan = self._plan

        def call(*args, **kwargs):
            plan.count += 1
            if plan.count != plan.n:
                return attr(*args, **kwargs)
            plan.fired = (name, args)
            if plan.after:
                attr(*args, **kwargs)
            raise SimulatedCrash(f"killed {'after' if plan.after else 'before'} {name}{args}")
        return call


# -- helpers shared by the unit tests ------------------------------------------------------------

def make_template(name: str, spec: dict, *, created: str = "2024-01-01T00:00:00Z",
                  generation: int = 1):
    """A Template through the real boundary (template_from_object validates the spec)."""
    from plumber_agent.models.parse import template_from_object

    return template_from_object({"metadata": {"name": name, "generation": generation,
                                              "creationTimestamp": created},
                                 "spec": spec})


class Node:
    """One simulated node: a fake host, a real Host facade + Ledger, and the reconciler's own
    loop (Reconciler.converge: merge, discover, plan, execute; re-plan until empty)."""

    def __init__(self, fake: FakeHost, state_dir, *, labels: Optional[dict] = None,
                 api_ip: Optional[str] = None, crash: Optional[CrashAt] = None):
        from plumber_agent.host import Host
        from plumber_agent.host.ledger import Ledger

        self.fake = fake
        self.state_dir = state_dir
        self.ledger = Ledger(str(state_dir))
        assert self.ledger.acquire()
        drivers = (fake.netlink, fake.sysfs, fake.ovs)
        if crash is not None:
            drivers = tuple(crash.wrap(d) for d in drivers)
        self.host = Host(*drivers, self.ledger)
        self.labels = labels or {}
        self.api_ip = api_ip

    def restart(self) -> "Node":
        """A fresh agent on the same host and state dir, as after a SIGKILL (the kernel
        drops a dead process's flock; here the old ledger lets go of it)."""
        self.ledger.release_lock()
        return Node(self.fake, self.state_dir, labels=self.labels, api_ip=self.api_ip)

    def plan(self, templates):
        """(the merge, its plan) from the host as it is now (the reconciler's pipeline)."""
        from plumber_agent.pipeline import plan_templates

        planned = plan_templates(templates, self.host.discover(), labels=self.labels,
                                 records=self.ledger.records(),
                                 api_path=self.host.api_server_path(self.api_ip))
        return planned.merged, planned.plan

    def reconcile(self, templates):
        """Returns (rounds of (plan, report), final plan). When a failed round stopped the
        loop (the agent would retry later), the final plan is made here, for the test."""
        from plumber_agent.reconciler import Reconciler, SyncOutcome

        reconciler = Reconciler(host=self.host, source=ListSource(templates, self.labels),
                                publish=lambda status: None, api_server_ip=self.api_ip)
        run = reconciler.converge(templates, self.labels, SyncOutcome())
        return run.rounds, run.final if run.final is not None else self.plan(templates)[1]


class ListSource:
    """A TemplateSource over a list a test may replace (`items`) and fixed node labels."""

    def __init__(self, templates, labels: Optional[dict] = None):
        self.items = list(templates)
        self.labels = labels or {}

    def synced(self) -> bool:
        return True

    def templates(self):
        return list(self.items)

    def node_labels(self) -> dict:
        return dict(self.labels)


def seed_host() -> FakeHost:
    """A realistic node for the seed README's examples: two i40e PFs (eno1, eno2), two ixgbe
    82599 PFs (enp3s0f0/1), a third 82599 whose netdev is not in this namespace, and bond0
    carrying the node's own address and default route (the path to the API server)."""
    h = FakeHost()
    h.add_pf("0000:01:00.0", "eno1", device_id="1572", total_vfs=64, vf_base=("0000", 0x02, 0x02))
    h.add_pf("0000:01:00.1", "eno2", device_id="1572", total_vfs=64, vf_base=("0000", 0x02, 0x0a))
    for pci, name, base in (("0000:03:00.0", "enp3s0f0", 0x10), ("0000:03:00.1", "enp3s0f1", 0x18),
                            ("0000:05:00.0", None, 0x20)):
        h.add_pf(pci, name, device_id="1528", driver="ixgbe", total_vfs=63,
                 vf_default_driver="ixgbevf", vf_base=("0000", 0x04, base))
    h.add_link("bond0", kind="bond", ipv4=("145.40.65.95/31",), ipv6=("2604:1380:45d1:2600::3/127",))
    h.add_route(dst=None, gw="145.40.65.94", dev="bond0")
    h.add_route(family=6, dst=None, gw="2604:1380:45d1:2600::2", dev="bond0", metric=1024)
    return h


API_SERVER_IP = "10.20.0.1"  # reached through bond0's default route from 145.40.65.95
