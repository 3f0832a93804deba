"""Ledger keys: the name of one host object or field the agent owns, defined (format AND parse)
in this one place.

Why one place: the planner writes keys, the ledger reads them back (which interfaces are
managed), and the planner's cleanup parses keys written by an earlier version of itself; two
copies of the format would drift apart silently. Keys are plain strings in the ledger file, so
the format is part of the on-disk format (host/ledger.py FORMAT_VERSION).

  numvfs:<PF pci>            vfdriver:<VF pci>          mtu:<ifname>        vlan:<ifname>
  addr:<ifname>:<cidr>       route:<family>:<dst|default>:<metric>
  bridge:<name>              port:<bridge>:<port>
  bond:<ifname>              bondmember:<member ifname>   (planner/bond.py)
  lbridge:<name>             lbport:<ifname>            lbvlan:<ifname>   (Linux bridges)
  collateral:<owner key>     (what the kernel removed along with the owner's change)
  vfattr:<PF pci>:<VF id>:<attribute>   (one attribute of one VF, set on its PF: vfattrs_spec.py)
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from plumber_agent.kinds import interface_key_kinds


class KeyKind(StrEnum):
    NUMVFS = "numvfs"
    VFDRIVER = "vfdriver"
    MTU = "mtu"
    VLAN = "vlan"
    ADDR = "addr"
    ROUTE = "route"
    BRIDGE = "bridge"
    PORT = "port"
    LBRIDGE = "lbridge"  # a Linux bridge (created, or its stp/vlan_filtering changed)
    LBPORT = "lbport"  # an interface made a Linux bridge port (prior: its master before)
    LBVLAN = "lbvlan"  # a Linux bridge port's VLAN entries (prior: the entries before)
    COLLATERAL = "collateral"
    BOND = "bond"  # a Linux bond we created
    BOND_MEMBER = "bondmember"  # a NIC we enslaved to a bond (prior: its admin state)
    VFATTR = "vfattr"  # one attribute of one VF, set on its PF (planner/vfattrs.py)


DEFAULT_DST = "default"  # how a default route's destination is spelled in a key

# Kinds whose key names an interface (for the status's `managed` marks): kinds/<kind>.py
# interface_keys.
_INTERFACE_KINDS = tuple(KeyKind(kind) for kind in interface_key_kinds())


def key_numvfs(pci: str) -> str:
    return f"{KeyKind.NUMVFS}:{pci}"


def key_vfdriver(vf_pci: str) -> str:
    return f"{KeyKind.VFDRIVER}:{vf_pci}"


def key_mtu(ifname: str) -> str:
    return f"{KeyKind.MTU}:{ifname}"


def key_vlan(ifname: str) -> str:
    return f"{KeyKind.VLAN}:{ifname}"


def key_addr(ifname: str, cidr: str) -> str:
    return f"{KeyKind.ADDR}:{ifname}:{cidr}"


def key_route(family: int, dst: Optional[str], metric: int) -> str:
    return f"{KeyKind.ROUTE}:{family}:{dst or DEFAULT_DST}:{metric}"


def key_bridge(name: str) -> str:
    return f"{KeyKind.BRIDGE}:{name}"


def key_port(bridge: str, port: str) -> str:
    return f"{KeyKind.PORT}:{bridge}:{port}"


def key_bond(ifname: str) -> str:
    return f"{KeyKind.BOND}:{ifname}"


def key_bond_member(ifname: str) -> str:
    return f"{KeyKind.BOND_MEMBER}:{ifname}"


def key_lbridge(name: str) -> str:
    return f"{KeyKind.LBRIDGE}:{name}"


def key_lbport(ifname: str) -> str:
    return f"{KeyKind.LBPORT}:{ifname}"


def key_lbvlan(ifname: str) -> str:
    return f"{KeyKind.LBVLAN}:{ifname}"


def key_collateral(owner: str) -> str:
    """The record of what the kernel removed as a side effect of the change `owner` records
    (routes that went with an address, IPv6 state that went with an MTU below 1280)."""
    return f"{KeyKind.COLLATERAL}:{owner}"


def key_vfattr(pci: str, vf: int, attr: str) -> str:
    return f"{KeyKind.VFATTR}:{pci}:{vf}:{attr}"


@dataclass(frozen=True)
class LedgerKey:
    """A parsed key. Only the fields of its kind are set."""

    kind: KeyKind
    name: str = ""  # pci (numvfs, vfdriver), ifname (mtu, vlan, addr, bond, bondmember), bridge (bridge, port),
    # the owner's key (collateral)
    cidr: str = ""  # addr
    port: str = ""  # port
    family: int = 0  # route
    dst: Optional[str] = None  # route; None = default
    metric: int = 0  # route
    vf: int = -1  # vfattr: the VF id (name: its PF's pci)
    attr: str = ""  # vfattr

    @property
    def ifname(self) -> Optional[str]:
        """The interface this key is about, if it is about one."""
        return self.name if self.kind in _INTERFACE_KINDS else None


def parse_key(key: str) -> Optional[LedgerKey]:
    """The parts of `key`; None for a kind this version does not know (left alone). Raises
    ValueError for a known kind whose key is malformed (a hand-edited ledger)."""
    text, sep, rest = key.partition(":")
    try:
        kind = KeyKind(text)
    except ValueError:
        return None
    if not sep or not rest:
        raise ValueError(f"ledger key {key!r} has no object name")
    if kind in (KeyKind.ADDR, KeyKind.PORT):
        name, sep, second = rest.partition(":")
        if not sep or not name or not second:
            raise ValueError(f"ledger key {key!r} is not {kind}:<name>:<{kind}>")
        if kind is KeyKind.ADDR:
            return LedgerKey(kind, name=name, cidr=second)
        return LedgerKey(kind, name=name, port=second)
    if kind is KeyKind.VFATTR:
        # vfattr:0000:01:00.1:3:mac -- a PCI address contains ':'.
        pci, sep, rest = rest.rpartition(":")
        pci, sep2, vf = pci.rpartition(":")
        if not sep or not sep2 or not pci or not rest or not vf.isdigit():
            raise ValueError(f"ledger key {key!r} is not vfattr:<pci>:<vf>:<attribute>")
        return LedgerKey(kind, name=pci, vf=int(vf), attr=rest)
    if kind is KeyKind.ROUTE:
        # route:6:2001:db8::/64:1024 -- IPv6 destinations contain ':'.
        family, sep, rest = rest.partition(":")
        dst, sep2, metric = rest.rpartition(":")
        if not sep or not sep2 or not dst:
            raise ValueError(f"ledger key {key!r} is not route:<family>:<dst>:<metric>")
        return LedgerKey(kind, family=int(family), dst=None if dst == DEFAULT_DST else dst,
                         metric=int(metric))
    return LedgerKey(kind, name=rest)
