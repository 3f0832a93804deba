"""Kernel collateral: what the kernel removes by itself when the agent changes something else,
as recorded in the ledger (a `collateral:<owner key>` record) and named in plan lines.

Why: deleting an address makes the kernel drop the routes that used it (the default route
among them: with the last IPv4 address of a device every route through it goes, in every
table); an MTU below 1280 disables IPv6 on the device (its addresses and routes go); deleting a
primary IPv4 address deletes its secondaries. An undo that restores only the change it recorded
leaves the node without those. The executor (host/collateral.py) records
what is at risk before such a change and what actually went after it; the planner
(planner/collateral.py) names the foreseeable losses in `plan` and puts the recorded ones back
after undoing the owner.

A record's `prior` is the ITEMS AT RISK (read from the kernel just before the owner's change,
written ahead and fsync'd like any intent); its `value` is the items the kernel ACTUALLY removed
(read right after it). A pending record (a crash between the two) is restored from `prior`,
item by item, only where the item is missing. Items:
  routes     {"family", "dst", "gw", "dev", "src", "metric", "table", "proto", "scope"}
  addresses  {"ifname", "cidr"}
  vfs        {"pf", "ifname", "id", "mac", "vlan", "qos", "spoofchk", "trust", "link_state",
              "min_tx_rate", "max_tx_rate"}: a VF's settings, on the PF netdev `ifname`
              (writing numVfs between non-zero counts destroys every VF and creates them bare)
"""
from __future__ import annotations

from typing import Any, Optional

from plumber_agent.models.observed import MAIN_TABLE, ObservedRoute

IPV6_MIN_MTU = 1280  # below this the kernel disables IPv6 on a device (RFC 8200, addrconf)

# Routes the kernel makes and remakes by itself (a connected prefix comes back with its
# address, an RA route with the next advertisement): never recorded, never restored.
KERNEL_MADE_PROTOS = frozenset({"kernel", "ra"})

ROUTES, ADDRESSES, VFS = "routes", "addresses", "vfs"
KINDS = (ROUTES, ADDRESSES, VFS)
VF_SETTINGS = ("mac", "vlan", "qos", "spoofchk", "trust", "link_state", "min_tx_rate",
               "max_tx_rate")
ZERO_MAC = "00:00:00:00:00:00"


def route_item(route: ObservedRoute) -> dict:
    """A route as a collateral item (dev by name)."""
    return {"family": route.family, "dst": route.dst, "gw": route.gw, "dev": route.dev,
            "src": route.src, "metric": route.metric, "table": route.table,
            "proto": route.proto, "scope": route.scope}


def item_route(item: dict) -> ObservedRoute:
    return ObservedRoute(family=item["family"], dst=item.get("dst"), gw=item.get("gw"),
                         dev=item.get("dev"), src=item.get("src"), metric=item.get("metric"),
                         proto=item.get("proto"), scope=item.get("scope"),
                         table=item.get("table") or MAIN_TABLE)


def route_identity(item: dict) -> tuple:
    """What tells one recorded route from another and finds it again: the kernel's key (table,
    destination, metric) plus the next hop. The preferred source is left out: IPv6 clears it
    from a route when the address goes, without removing the route."""
    family = item["family"]
    metric = item.get("metric") or (1024 if family == 6 else 0)
    return (family, item.get("table") or MAIN_TABLE, item.get("dst"), metric, item.get("gw"),
            item.get("dev"))


def route_text(item: dict) -> str:
    """'the default route via 10.0.0.1 dev eno1', 'route 10.1.0.0/16 via 10.0.0.254 dev eno1
    table 100': what a person reads in a plan line."""
    text = ("the default route" if item.get("dst") is None else f"route {item['dst']}")
    if item.get("family") == 6 and item.get("dst") is None:
        text = "the IPv6 default route"
    if item.get("gw"):
        text += f" via {item['gw']}"
    if item.get("dev"):
        text += f" dev {item['dev']}"
    if item.get("src"):
        text += f" src {item['src']}"
    table = item.get("table") or MAIN_TABLE
    if table != MAIN_TABLE:
        text += f" table {table}"
    return text


def address_text(item: dict) -> str:
    return f"address {item['cidr']} of {item['ifname']}"


def vf_item(pf: str, ifname: str, info) -> dict:
    """An ObservedVfInfo as a collateral item."""
    return {"pf": pf, "ifname": ifname, "id": info.id,
            **{name: getattr(info, name) for name in VF_SETTINGS}}


def vf_settings(item: dict) -> dict:
    return {name: item.get(name) for name in VF_SETTINGS}


def vf_is_bare(info) -> bool:
    """As the kernel creates a VF: no MAC, no VLAN, no trust (nobody has configured it)."""
    return ((info.mac in (None, ZERO_MAC)) and not info.vlan and not info.qos
            and not info.trust)


def vf_text(item: dict) -> str:
    parts = []
    if item.get("mac") not in (None, ZERO_MAC):
        parts.append(f"mac {item['mac']}")
    if item.get("vlan"):
        parts.append(f"vlan {item['vlan']}" + (f" qos {item['qos']}" if item.get("qos") else ""))
    for name in ("spoofchk", "trust"):
        if item.get(name) is not None:
            parts.append(f"{name} {'on' if item[name] else 'off'}")
    if item.get("link_state"):
        parts.append(f"state {({1: 'enable', 2: 'disable'}).get(item['link_state'], item['link_state'])}")
    if item.get("max_tx_rate"):
        parts.append(f"max_tx_rate {item['max_tx_rate']}")
    if item.get("min_tx_rate"):
        parts.append(f"min_tx_rate {item['min_tx_rate']}")
    return (f"the settings of VF {item['id']} of {item['ifname']}"
            + (f" ({', '.join(parts)})" if parts else ""))


def item_text(kind: str, item: dict) -> str:
    if kind == VFS:
        return vf_text(item)
    return route_text(item) if kind == ROUTES else address_text(item)


def item_identity(kind: str, item: dict) -> tuple:
    if kind == ROUTES:
        return route_identity(item)
    if kind == VFS:
        return (item["pf"], item["id"])
    return (item["ifname"], item["cidr"])


def items_of(rec: Any) -> dict[str, list[dict]]:
    """The items a collateral record says to put back: what the kernel removed (`value`), or,
    for a pending record (no `value` yet), everything that was at risk (`prior`)."""
    if not isinstance(rec, dict):
        raise TypeError("a collateral record must be a mapping")
    source = rec.get("value") if not rec.get("pending") else None
    if not isinstance(source, dict):
        source = rec.get("prior")
    if not isinstance(source, dict):
        raise TypeError("a collateral record names no routes, addresses or VFs")
    out: dict[str, list[dict]] = {}
    for kind in KINDS:
        items = source.get(kind) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TypeError(f"a collateral record's {kind} is not a list of mappings")
        out[kind] = items
    return out


def merge(old: Optional[dict], new: dict) -> dict:
    """Items of two recordings of one owner, each once (a change made again, after someone
    re-created what the first removed, may remove more)."""
    out: dict[str, list[dict]] = {}
    for kind in KINDS:
        seen, items = set(), []
        for item in ((old or {}).get(kind) or []) + (new.get(kind) or []):
            ident = item_identity(kind, item)
            if ident not in seen:
                seen.add(ident)
                items.append(item)
        out[kind] = items
    return out
