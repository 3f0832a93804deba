"""Builds the published HostNetwork status from what discovery observed and the per-template
results, and keeps it bounded.

Every link except loopback is reported (VLANs and bridges the agent manages included), in the
seed's shape. Lists are sorted so that two builds of an unchanged host compare equal and the
reporter writes nothing. Size policy (etcd refuses objects over ~1.5 MB): at most
MAX_INTERFACES interfaces, MAX_VFS_LISTED VFs per PF, MAX_ROUTES_PER_FAMILY routes per family,
MAX_ADDRESSES_PER_FAMILY addresses per interface and MAX_OVS_PORTS ports per bridge are listed,
and template messages are cut at MAX_MESSAGE characters; device-backed and managed interfaces
and non-kernel routes are kept first, and `status.truncated` says how many of each exist in all,
so nothing is dropped silently. Interfaces an `exclusion` names (the agent's --status-exclude-
interfaces patterns, never one a template manages: interest.py) are left out with the routes
through them, and `status.truncated.excludedInterfaces` lists the patterns that did it.
"""
from __future__ import annotations

import dataclasses
import socket
from typing import Iterable, Optional

from plumber_agent.kinds import stacked_link_kinds
from plumber_agent.models.observed import (ObservedHost, ObservedLink, ObservedPf, ObservedRoute,
                                           ovs_managed)
from plumber_agent.models.status import (AddressClaimStatus, AddressStatus, BondMemberStatus,
                                         BondStatus, HostNetworkStatus, InterfaceStatus,
                                         LinuxBridgeStatus, OvsBridgeStatus, OvsPortStatus,
                                         RoutesStatus, RouteStatus,
                                         SriovStatus, StatusSummary, MAX_TEMPLATE_MESSAGE, TemplateState, TemplateStatus,
                                         VfStatus)
from plumber_agent.models.text import truncate
from plumber_agent.models.vfattrs_spec import link_state_name

MAX_INTERFACES = 1024
STACKED_KINDS = stacked_link_kinds()  # kinds whose IFLA_LINK is a parent (kinds/)
MAX_VFS_LISTED = 256
MAX_ROUTES_PER_FAMILY = 2048
MAX_ADDRESSES_PER_FAMILY = 64  # per interface
MAX_OVS_PORTS = 256  # per bridge
MAX_ALTNAMES_LISTED = 8  # per interface (the CRD's maxItems)
MAX_LINUX_BRIDGE_PORTS_LISTED = 256  # per Linux bridge
MAX_BRIDGE_VLANS_LISTED = 256  # VLAN entries per Linux bridge port
MAX_MESSAGE = MAX_TEMPLATE_MESSAGE  # per template
MAX_BOND_MEMBERS_LISTED = 64  # per bond (the spec's maximum of members)


def _vf_statuses(pf: ObservedPf, link: Optional[ObservedLink]) -> list[VfStatus]:
    info = {vf.id: vf for vf in (link.vfs if link else [])}
    out = []
    for vf in sorted(pf.vfs, key=lambda vf: vf.id)[:MAX_VFS_LISTED]:
        extra = info.get(vf.id)
        out.append(VfStatus(id=vf.id, pci_addr=vf.pci_addr, vf_driver=vf.driver,
                            mac=extra.mac if extra else None, vlan=extra.vlan if extra else None,
                            qos=extra.qos if extra else None,
                            spoofchk=extra.spoofchk if extra else None,
                            trust=extra.trust if extra else None,
                            link_state=link_state_name(extra.link_state) if extra else None,
                            min_tx_rate=extra.min_tx_rate if extra else None,
                            max_tx_rate=extra.max_tx_rate if extra else None))
    return out


def _bond(link: ObservedLink, members: list[ObservedLink]) -> BondStatus:
    """A bond's mode, active member and its members' states (members sorted by name)."""
    return BondStatus(
        mode=link.bond.mode if link.bond else None,
        active_member=link.bond.active_member if link.bond else None,
        members=[BondMemberStatus(name=m.ifname,
                                  state=m.bond_member.state if m.bond_member else None,
                                  mii_status=m.bond_member.mii_status if m.bond_member else None)
                 for m in sorted(members, key=lambda m: m.ifname)[:MAX_BOND_MEMBERS_LISTED]])


def _interface(link: Optional[ObservedLink], pf: Optional[ObservedPf],
               ports: Optional[list[str]] = None,
               members: Optional[list[ObservedLink]] = None) -> InterfaceStatus:
    name = link.ifname if link else (pf.ifname or pf.pci_addr)
    status = InterfaceStatus(pf_name=name)
    if link:
        status.mac = link.mac
        status.mtu = link.mtu
        status.pci_addr = link.pci_addr
        status.vendor_id = link.vendor_id
        status.device_id = link.device_id
        status.pf_driver = link.driver
        status.kind = link.kind
        status.parent = link.parent if link.kind in STACKED_KINDS else None  # veth: a peer
        status.vlan_id = link.vlan_id
        status.oper_state = link.oper_state
        status.perm_mac = link.perm_mac
        status.alt_names = link.altnames[:MAX_ALTNAMES_LISTED] or None
        status.master = link.master
        if link.kind == "bond":
            status.bond = _bond(link, members or [])
        if link.bridge_vlans is not None:
            status.bridge_vlans = link.bridge_vlans[:MAX_BRIDGE_VLANS_LISTED]
        if link.linux_bridge is not None:
            status.linux_bridge = LinuxBridgeStatus(
                stp=link.linux_bridge.stp, vlan_filtering=link.linux_bridge.vlan_filtering,
                ports=sorted(ports or ())[:MAX_LINUX_BRIDGE_PORTS_LISTED])
        if link.ipv4:
            status.ipv4 = AddressStatus(address=sorted(link.ipv4)[:MAX_ADDRESSES_PER_FAMILY])
        if link.ipv6:
            status.ipv6 = AddressStatus(address=sorted(link.ipv6)[:MAX_ADDRESSES_PER_FAMILY])
    if pf:
        status.pci_addr = pf.pci_addr
        status.vendor_id = pf.vendor_id
        status.device_id = pf.device_id
        status.pf_driver = pf.driver or status.pf_driver
        status.sriov_enabled = pf.total_vfs > 0
        status.sriov_status = SriovStatus(total_vfs=pf.total_vfs,
                                          num_vfs=pf.num_vfs if pf.num_vfs else None,
                                          vfs=_vf_statuses(pf, link) or None)
    return status


def _route_sort_key(route: ObservedRoute) -> tuple:
    """Numeric order of destinations; inet_pton instead of ipaddress objects (10k routes are
    sorted on every status build)."""
    if route.dst is None:
        return (0, b"", 0, route.dev or "", route.gw or "")
    addr, _, prefix = route.dst.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return (1, socket.inet_pton(family, addr), int(prefix or 0), route.dev or "", route.gw or "")


# id(ObservedRoute) -> (route, sort key, RouteStatus) for the routes the last build listed.
# Discovery hands out the same route objects while the kernel's route messages do not change,
# so the listed routes are not re-keyed and re-wrapped on every build (bench B2); rebuilt on
# each build, so it holds at most the listed routes.
_route_cache: dict[int, tuple] = {}


def _routes(routes: Iterable[ObservedRoute], family: int, cache_before: dict,
            cache_now: dict, exclusion=None) -> tuple[list[RouteStatus], int]:
    selected = [r for r in routes if r.family == family]
    if exclusion is not None:
        hidden = exclusion.links
        selected = [r for r in selected if r.dev not in hidden or exclusion.keeps_route(r)]
    total = len(selected)
    if total > MAX_ROUTES_PER_FAMILY:
        # Keep what a user configured or needs first: default and non-kernel routes.
        selected.sort(key=lambda r: (r.dst is not None, r.proto == "kernel"))
        selected = selected[:MAX_ROUTES_PER_FAMILY]
    entries = []
    for route in selected:
        entry = cache_before.get(id(route))
        if entry is None or entry[0] is not route:
            entry = (route, _route_sort_key(route),
                     RouteStatus(dev=route.dev, dst=route.dst, gw=route.gw, src=route.src))
        cache_now[id(route)] = entry
        entries.append(entry)
    entries.sort(key=lambda e: e[1])
    return [e[2] for e in entries], total


def build_status(observed: ObservedHost, templates: Optional[list[TemplateStatus]] = None,
                 managed_ifnames: Iterable[str] = (), address_claims: Iterable = (),
                 exclusion=None, conditions: Iterable = ()) -> HostNetworkStatus:
    """The HostNetwork status for `observed`; `templates` are the per-template results;
    `address_claims` the pool addresses this node holds (pools.claims.Claim); `exclusion`
    (interest.Exclusion) what to leave out; `conditions` the node's NodeConditions."""
    managed = set(managed_ifnames)
    hidden = exclusion.links if exclusion is not None else frozenset()
    pfs_by_ifname = {pf.ifname: pf for pf in observed.pfs.values() if pf.ifname}
    members: dict[str, list[ObservedLink]] = {}  # bond -> its members
    for link in observed.links.values():
        if link.bond_member is not None and link.master:
            members.setdefault(link.master, []).append(link)
    entries: list[tuple[tuple, InterfaceStatus]] = []
    ports_of: dict[str, list[str]] = {}
    for name, link in observed.links.items():
        if link.master and link.bridge_vlans is not None:
            ports_of.setdefault(link.master, []).append(name)
    for name, link in observed.links.items():
        if name == "lo" or name in hidden:
            continue
        pf = pfs_by_ifname.get(name)
        priority = 0 if (pf or link.pci_addr or name in managed) else 1
        entries.append(((priority, name), _interface(link, pf, ports_of.get(name),
                                                     members.get(name))))
    linked = {link.ifname for link in observed.links.values()}
    for pf in observed.pfs.values():  # PFs without a netdev in this namespace
        if not pf.ifname or pf.ifname not in linked:
            entries.append(((0, pf.ifname or pf.pci_addr), _interface(None, pf)))
    truncated: dict = {}
    if len(entries) > MAX_INTERFACES:
        truncated["interfaces"] = len(entries)
        entries.sort(key=lambda e: e[0])
        entries = entries[:MAX_INTERFACES]
    interfaces = [status for _, status in sorted(entries, key=lambda e: e[1].pf_name)]
    for pf in observed.pfs.values():
        if len(pf.vfs) > MAX_VFS_LISTED:
            truncated.setdefault("vfs", {})[pf.pci_addr] = len(pf.vfs)

    global _route_cache
    listed: dict[int, tuple] = {}
    ipv4, total4 = _routes(observed.routes, 4, _route_cache, listed, exclusion)
    ipv6, total6 = _routes(observed.routes, 6, _route_cache, listed, exclusion)
    _route_cache = listed
    if total4 > len(ipv4):
        truncated["routesIpv4"] = total4
    if total6 > len(ipv6):
        truncated["routesIpv6"] = total6

    bridges = None
    if observed.bridges is not None:
        bridges = [OvsBridgeStatus(
            name=br.name, datapath_type=br.datapath_type or None,
            managed=ovs_managed(br.external_ids),
            ports=[OvsPortStatus(name=port.name, interfaces=sorted(i.name for i in port.interfaces),
                                 bond_mode=port.bond_mode, lacp=port.lacp)
                   for port in sorted(br.ports, key=lambda p: p.name)[:MAX_OVS_PORTS]])
            for br in sorted(observed.bridges.values(), key=lambda b: b.name)]
    if exclusion is not None:
        truncated["excludedInterfaces"] = list(exclusion.patterns)
    for link in observed.links.values():
        if link.ifname not in hidden and max(len(link.ipv4), len(link.ipv6)) > MAX_ADDRESSES_PER_FAMILY:
            truncated.setdefault("addresses", {})[link.ifname] = len(link.ipv4) + len(link.ipv6)
    for link in observed.links.values():
        if link.ifname not in hidden and len(link.bridge_vlans or ()) > MAX_BRIDGE_VLANS_LISTED:
            truncated.setdefault("bridgeVlans", {})[link.ifname] = len(link.bridge_vlans)
    for bridge, ports in ports_of.items():
        if bridge not in hidden and len(ports) > MAX_LINUX_BRIDGE_PORTS_LISTED:
            truncated.setdefault("linuxBridgePorts", {})[bridge] = len(ports)
    for br in (observed.bridges or {}).values():
        if len(br.ports) > MAX_OVS_PORTS:
            truncated.setdefault("ovsPorts", {})[br.name] = len(br.ports)
    if templates is not None:
        # Cut copies, never the caller's statuses: the reconciler compares those with the next
        # pass's to skip idle publishes, and a cut one would never equal a fresh one again.
        templates = sorted((dataclasses.replace(t, message=truncate(t.message, MAX_MESSAGE))
                            if t.message and len(t.message) > MAX_MESSAGE else t
                            for t in templates), key=lambda t: t.name)
    states = [t.state for t in templates or []]
    summary = StatusSummary(
        interfaces=len(interfaces), vfs=sum(pf.num_vfs for pf in observed.pfs.values()),
        bridges=len(bridges or []), applied=states.count(TemplateState.APPLIED),
        failed=states.count(TemplateState.FAILED), conflict=states.count(TemplateState.CONFLICT),
        invalid=states.count(TemplateState.INVALID))
    return HostNetworkStatus(
        interface_status=interfaces, routes=RoutesStatus(ipv4=ipv4, ipv6=ipv6),
        ovs_status=bridges, ovs_error=observed.ovs_error, templates=templates,
        truncated=truncated or None, summary=summary,
        address_claims=sorted((AddressClaimStatus(
            address=f"{c.address}/{c.prefix_length}", interface=c.interface, template=c.template,
            pool=c.pool) for c in address_claims), key=lambda c: c.address) or None,
        conditions=sorted(conditions, key=lambda c: c.type) or None)
