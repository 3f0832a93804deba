"""What this node's applied templates manage or depend on, and so which kernel events and which
parts of the published status matter at once. Pure: no I/O, no clock.

Why: a node's pods come and go all day, and each pod's veth and /32 route is a handful of
rtnetlink events. Running a full pass (~150 ms on a busy node) and writing the HostNetwork for
each one multiplied the API load by the pod churn of the whole fleet (issue 19: 61 writes and 62
passes for 60 s of one pod up and one down per second). Each event is classified here first,
with set lookups only:

  managed      an object an applied template manages (or the ledger still holds: cleanup):
               a configured interface, a VLAN, an OVS or Linux bridge, a Linux bridge port,
               a PF and its VFs, a route's destination
  depended-on  something a managed object needs: a VLAN's parent, a route's device, the
               address or connected route that makes a managed route's gateway reachable, an
               OVS port's interface, a new netdev while a template manages SR-IOV (a VF
               appearing or being renamed)
  unmanaged    everything else: pod veths (`cali*`, `veth*`, `lxc*`) and their routes

Managed and depended-on events keep the immediate pass; unmanaged ones only make the status
stale, which the agent publishes at most once per interval (agent.py, reporter.py). The same
classes decide which part of a status change must be written at once (`managed_view`), and
which interfaces a StatusFilter may leave out of the HostNetwork (never one a template manages
or depends on). While the last pass had not converged (a failed round, changes still planned)
every event counts as managed: the host is in motion and names may not be known yet.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional

from plumber_agent.models.events import EventKind, KernelEvent
from plumber_agent.models.keys import KeyKind, parse_key


class EventClass(StrEnum):
    MANAGED = "managed"
    DEPENDED_ON = "depended-on"
    UNMANAGED = "unmanaged"


MANAGED, DEPENDED_ON, UNMANAGED = EventClass.MANAGED, EventClass.DEPENDED_ON, EventClass.UNMANAGED

NETWORK_CACHE_MAX = 65536
"""Parsed addresses kept (an address event is checked against managed gateways; route
destinations use Interest.gateway_networks, one set lookup)."""

# Status fields whose changes follow from unmanaged objects as much as managed ones: counts
# (summary.interfaces grows with every pod) and truncation notes. Left out of `managed_view`;
# template results, OVS and address claims stay in it whole.
_COUNT_FIELDS = ("summary", "truncated")


@dataclass(frozen=True)
class Interest:
    """The names, indexes, routes and gateways the applied templates care about."""

    links: Mapping[str, EventClass] = field(default_factory=dict)  # ifname (or PF pci) -> class
    indexes: Mapping[int, EventClass] = field(default_factory=dict)  # ifindex -> class (renames)
    routes: frozenset = frozenset()  # (family, dst) of managed routes; dst None = default
    gateways: tuple = ()  # (family, int) of managed routes' gateways, link-local ones left out
    # Every network (canonical text, prefix 1..32 or 1..128) holding one of `gateways`: a
    # route's destination is checked with one set lookup.
    gateway_networks: frozenset = frozenset()
    new_netdevs: bool = False  # a template manages SR-IOV: a new device netdev may be its VF
    everything: bool = False  # not converged: every event counts as managed

    def name_class(self, ifname: Optional[str]) -> EventClass:
        return self.links.get(ifname, UNMANAGED) if ifname else UNMANAGED

    def link_class(self, ifname: Optional[str], index: Optional[int] = None) -> EventClass:
        found = self.name_class(ifname)
        if found is UNMANAGED and index is not None:
            found = self.indexes.get(index, UNMANAGED)
        return found

    def route_class(self, family: int, dst: Optional[str], dev: Optional[str],
                    index: Optional[int] = None) -> EventClass:
        if (family, dst) in self.routes:
            return MANAGED
        on_link = self.link_class(dev, index)
        if on_link is not UNMANAGED:
            return on_link
        return DEPENDED_ON if dst in self.gateway_networks else UNMANAGED

    def reaches_gateway(self, cidr: str) -> bool:
        """Does the network of `cidr` (an address, in any spelling) hold a managed route's
        gateway? A default route does not count: a gateway must be on a link."""
        if not self.gateways:
            return False
        parsed = _network(cidr)
        if parsed is None:
            return False
        family, net, mask = parsed
        return mask != 0 and any(f == family and (gw & mask) == net for f, gw in self.gateways)


EVERYTHING = Interest(everything=True)
"""Before the first pass: nothing is known, everything is managed."""


@lru_cache(maxsize=NETWORK_CACHE_MAX)
def _network(cidr: str) -> Optional[tuple[int, int, int]]:
    """(family, network as int, mask as int) of 'ip/prefix'; None if unparsable."""
    try:
        net = ipaddress.ip_interface(cidr).network
    except ValueError:
        return None
    return net.version, int(net.network_address), int(net.netmask)


def interest_of(desired, observed, records: Mapping[str, Any], *, settled: bool = True) -> Interest:
    """The Interest of one pass: `desired` (desired.DesiredState) as applied, `observed` the
    host after it (its VF netdev names and link indexes), `records` the ledger (what cleanup
    still owns). `settled`: the pass converged (else every event counts as managed)."""
    links: dict[str, EventClass] = {}
    routes: set[tuple] = set()
    gateways: set[tuple[int, int]] = set()

    def mark(name: Optional[str], cls: EventClass) -> None:
        if name and links.get(name) is not MANAGED:
            links[name] = cls

    for name in desired.links:
        mark(name, MANAGED)
    for name, vlan in desired.vlans.items():
        mark(name, MANAGED)
        mark(vlan.parent, DEPENDED_ON)
    for pci, pf in desired.pfs.items():
        mark(pci, MANAGED)  # a PF without a netdev is listed under its PCI address
        mark(pf.ifname, MANAGED)
        found = observed.pfs.get(pci)
        for vf in found.vfs if found else ():
            mark(vf.ifname, MANAGED)
    for dvf in desired.vfs.values():
        mark(dvf.pf_ifname, MANAGED)  # the PF netdev reports its VFs' attributes
    for route in desired.routes.values():
        routes.add((route.family, route.dst))
        mark(route.dev, DEPENDED_ON)
        gateway = _gateway(route.gw)
        if gateway:
            gateways.add(gateway)
    for name, bond in desired.bonds.items():
        mark(name, MANAGED)
        for member in bond.members:  # its state (active, failed over) is the bond's status
            mark(member, MANAGED)
    for name, bridge in desired.bridges.items():
        mark(name, MANAGED)  # the bridge's own netdev
        for ifname in bridge.interfaces:
            mark(ifname, DEPENDED_ON)
    for name in desired.linux_bridges:  # the bridge and its ports (their VLAN changes are
        mark(name, MANAGED)              # notified as link changes of the port)
    for name in desired.linux_bridge_ports:
        mark(name, MANAGED)
    for key in records:
        _mark_record(key, mark, routes)
    indexes = {observed.links[name].index: cls for name, cls in links.items()
               if name in observed.links}
    return Interest(links=links, indexes=indexes, routes=frozenset(routes),
                    gateways=tuple(sorted(gateways)), gateway_networks=_networks_holding(gateways),
                    new_netdevs=bool(desired.pfs or desired.vfs), everything=not settled)


def _networks_holding(gateways: Iterable[tuple[int, int]]) -> frozenset:
    """Canonical text of every network of prefix 1..max that holds one of `gateways` (33 or
    129 strings a gateway): what a route destination that reaches it looks like."""
    out = set()
    for family, value in gateways:
        cls = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
        bits = 32 if family == 4 else 128
        for prefix in range(1, bits + 1):
            out.add(str(cls((value, prefix), strict=False)))
    return frozenset(out)


def _mark_record(key: str, mark, routes: set) -> None:
    try:
        parsed = parse_key(key)
    except ValueError:
        return  # unreadable: the planner reports it
    if parsed is None:
        return
    if parsed.ifname:
        mark(parsed.ifname, MANAGED)
    elif parsed.kind is KeyKind.ROUTE:
        routes.add((parsed.family, parsed.dst))
    elif parsed.kind is KeyKind.BRIDGE:
        mark(parsed.name, MANAGED)


def _gateway(gw: Optional[str]) -> Optional[tuple[int, int]]:
    """A gateway's (family, int); None for none or a link-local one (reachable only through
    the route's own device, which is depended on already: every pod veth's fe80::/64 would
    otherwise hold an IPv6 gateway like fe80::1)."""
    if not gw:
        return None
    try:
        ip = ipaddress.ip_address(gw)
    except ValueError:
        return None
    return None if ip.is_link_local else (ip.version, int(ip))


def classify(event: KernelEvent, interest: Interest) -> EventClass:
    """Which class a kernel event falls in (see the module docstring). Set lookups, plus one
    cached prefix check per address or route when a managed route has a gateway."""
    if interest.everything or event.kind in (EventKind.LOST, EventKind.UNDECODABLE):
        return MANAGED
    if event.kind is EventKind.LINK:
        found = interest.link_class(event.ifname, event.index)
        if (found is UNMANAGED and interest.new_netdevs and not event.removed
                and event.link_kind is None):
            return DEPENDED_ON  # a device netdev (a VF appearing, renamed by udev), not a veth
        return found
    if event.kind is EventKind.ADDRESS:
        found = interest.link_class(event.ifname, event.index)
        if found is UNMANAGED and event.cidr and interest.reaches_gateway(event.cidr):
            return DEPENDED_ON
        return found
    if event.kind is EventKind.ROUTE:
        return interest.route_class(event.family, event.dst, event.ifname, event.index)
    return MANAGED  # a kind this version does not know: the safe side


def managed_view(status: dict, interest: Interest) -> dict:
    """The part of an API status (models.status.to_api) whose change is written at once:
    template results, address claims, OVS, and the interfaces and routes of `interest`'s
    managed and depended-on objects. Two statuses with equal views differ only in unmanaged
    objects (and the counts that follow them)."""
    if interest.everything:
        return status
    view = {key: value for key, value in status.items()
            if key not in _COUNT_FIELDS and key not in ("interfaceStatus", "routes")}
    links, managed_routes = interest.links, interest.routes  # links: managed or depended on
    view["interfaceStatus"] = [entry for entry in status.get("interfaceStatus") or []
                               if entry.get("pfName") in links]

    def kept(family: int, route: dict) -> bool:  # route_class(...) is not UNMANAGED, inlined
        dst = route.get("dst")  # 10k routes on a busy node: this runs on every status change
        return ((family, dst) in managed_routes or route.get("dev") in links
                or dst in interest.gateway_networks)
    routes = status.get("routes") or {}
    view["routes"] = {name: [r for r in routes.get(name) or [] if kept(family, r)]
                      for name, family in (("ipv4", 4), ("ipv6", 6))}
    return view


# ---------------------------------------------------------------------------------------------
# What the published HostNetwork leaves out

DEFAULT_STATUS_EXCLUDE = "veth*"
"""kubernetes-nmstate's default: the host ends of pods' veths (bridge CNI, flannel, kindnet,
Docker). `cali*` stays listed: the seed's own HostNetwork example shows Calico's pod routes."""
_PATTERN_FORBIDDEN = set("/ \t\n\r\x00")


@dataclass(frozen=True)
class Exclusion:
    """What one status build leaves out: the links (and the routes through them, unless a
    template manages the route's destination) and the patterns that chose them."""

    links: frozenset
    patterns: tuple
    interest: Interest

    def keeps_route(self, route) -> bool:
        """Is a route (models.observed.ObservedRoute) through an excluded link still listed?"""
        return self.interest.route_class(route.family, route.dst, None) is not UNMANAGED


@dataclass(frozen=True)
class StatusFilter:
    """Glob patterns (fnmatch, case-sensitive) of interfaces the HostNetwork leaves out."""

    patterns: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "StatusFilter":
        """'veth*,lxc*' -> StatusFilter; '' leaves nothing out. Raises ValueError naming a
        pattern that no interface name could match."""
        patterns = []
        for raw in text.split(","):
            pattern = raw.strip()
            if not pattern:
                continue
            if set(pattern) & _PATTERN_FORBIDDEN:
                raise ValueError(f"interface pattern {pattern!r}: an interface name has no "
                                 "'/', whitespace or NUL")
            patterns.append(pattern)
        return cls(tuple(patterns))

    def hides(self, ifname: Optional[str]) -> bool:
        return bool(ifname) and any(fnmatch.fnmatchcase(ifname, p) for p in self.patterns)

    def exclusion(self, ifnames: Iterable[str], interest: Interest) -> Optional[Exclusion]:
        """What to leave out of a status of links `ifnames`: those matching a pattern that no
        template manages or depends on (`interest`'s names, whether or not it is settled).
        None when nothing is left out."""
        if not self.patterns:
            return None
        hidden = frozenset(name for name in ifnames
                           if self.hides(name) and interest.name_class(name) is UNMANAGED)
        if not hidden:
            return None
        return Exclusion(links=hidden, patterns=self.patterns, interest=interest)
