"""Kernel collateral in the plan (models/collateral.py): name what the kernel will remove by
itself because of a planned change, and put back, after an undo, what it did remove.

Foreseen from the observed host (the main table, the links' addresses), with the kernel's
rules as this kernel shows them (tests/host/test_collateral.py):
- deleting an IPv4 address removes the routes whose preferred source it is; deleting the
  device's LAST IPv4 address removes every route through the device, in every table (the
  default route among them); a primary's secondaries in the same subnet go with it (unless
  promote_secondaries is set);
- an MTU below 1280 disables IPv6 on the device: its IPv6 addresses and routes go;
- deleting a link removes every route through it;
- replacing a route (same table, destination and metric) replaces the one there;
- writing numVfs between non-zero counts destroys every VF (0 is written first) and creates
  them bare: the VF settings (MAC, VLAN, trust...) recorded before are put back on undo.
IPv6 address removal only clears the preferred source of routes that named it: not named.

Undo: a `collateral:<owner>` record is restored once its owner's record is undone (released in
this plan, or gone already), in RESTORE_COLLATERAL, after every other undo of the plan. Each
item only where it is missing (someone may have re-created it; the executor adds routes with
`ip route add`, never replace), and never on a device that is gone (the undo line says so).
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.collateral import (ADDRESSES, IPV6_MIN_MTU, KERNEL_MADE_PROTOS,
                                             ROUTES, VFS, item_text, items_of, route_identity,
                                             route_item, route_text, vf_is_bare, vf_item,
                                             vf_settings, vf_text)
from plumber_agent.models.keys import KeyKind, LedgerKey, key_route, parse_key
from plumber_agent.models.observed import MAIN_TABLE
from plumber_agent.planner.context import (PlanContext, canonical_metric, family_of,
                                           is_ipv6_link_local)


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    """Put back what the kernel removed with the owner's change, once that change is undone."""
    owner = parsed.name
    if owner in ctx.wanted:
        return  # the change stands: what went with it stays gone (the plan said so)
    if owner in ctx.records and not _released(ctx, owner):
        return  # its undo is not in this plan (refused, or waiting): not before it
    items = items_of(rec)
    because = f"the kernel removed it with {_owner_text(owner)}"
    present = _present_routes(ctx)
    restore: dict[str, list[dict]] = {ROUTES: [], ADDRESSES: [], VFS: []}
    said, skipped = [], []
    for item in items[ADDRESSES]:
        link = ctx.observed.links.get(item["ifname"])
        if link is None or item["ifname"] in ctx.doomed_links:
            skipped.append(f"not restoring {item_text(ADDRESSES, item)}: "
                           f"{item['ifname']} is gone")
        elif item["cidr"] not in link.ipv4 + link.ipv6:
            restore[ADDRESSES].append(item)
            said.append(f"restores {item_text(ADDRESSES, item)} ({because})")
    for item in items[VFS]:
        pf = ctx.observed.links.get(item["ifname"])
        if pf is None or item["ifname"] in ctx.doomed_links:
            skipped.append(f"not restoring {vf_text(item)}: {item['ifname']} is gone")
            continue
        now = {vf.id: vf for vf in pf.vfs}.get(item["id"])
        if (item["pf"] not in ctx.numvfs_changing and now is not None
                and vf_settings(vf_item(item["pf"], item["ifname"], now)) == vf_settings(item)):
            continue  # as recorded already (numVfs back by someone else, and configured)
        restore[VFS].append(item)
        said.append(f"restores {vf_text(item)} (the kernel removed them with "
                    f"{_owner_text(owner)})")
    for item in items[ROUTES]:
        dev = item.get("dev")
        if dev and (not ctx.link_exists(dev) or dev in ctx.doomed_links):
            skipped.append(f"not restoring {route_text(item)}: {dev} is gone")
        elif route_identity(item) not in present:
            restore[ROUTES].append(item)
            said.append(f"restores {route_text(item)} ({because})")
    if not said:
        ctx.forget(Phase.RESTORE_COLLATERAL, key,
                   "; ".join(skipped) or f"nothing removed with {_owner_text(owner)} is missing")
        return
    ctx.release(Phase.RESTORE_COLLATERAL, (owner,), Verb.RESTORE_COLLATERAL, owner,
                {"items": restore}, key, rec)
    ctx.out[-1][1].side_effects = said + skipped


def annotate(ctx: PlanContext) -> None:
    """Name, on each planned action, what the kernel will remove or replace because of it."""
    deleted = _deleted_addresses(ctx)
    for _, action in ctx.out:
        verb = action.verb
        if verb == Verb.DELETE_ADDRESS:
            effects = _address_effects(ctx, action.target, action.params["address"], deleted)
        elif verb == Verb.SET_MTU:
            effects = _mtu_effects(ctx, action.target, int(action.params["mtu"]))
        elif verb == Verb.ADD_ROUTE:
            effects = _replace_effects(ctx, action)
        elif verb == Verb.DELETE_LINK:
            effects = [f"drops {route_text(item)} (the kernel removes it with "
                       f"{action.target})" for item in _routes_via(ctx, action.target)]
        elif verb == Verb.SET_NUM_VFS and action.params.get("destroys_vfs"):
            pf = ctx.observed.pfs.get(action.target)
            count = pf.num_vfs if pf is not None else 0
            effects = [f"destroys the {count} VF(s) of {action.target} with their drivers and "
                       "settings (the kernel re-creates VFs bare)"] if count else []
            link = ctx.observed.links.get(pf.ifname) if pf is not None and pf.ifname else None
            effects += [f"drops {vf_text(vf_item(action.target, link.ifname, vf))}"
                        for vf in (link.vfs if link is not None else []) if not vf_is_bare(vf)]
        else:
            continue
        action.side_effects.extend(effects)


def _address_effects(ctx: PlanContext, ifname: str, cidr: str,
                     deleted: dict[str, set[str]]) -> list[str]:
    if family_of(cidr) != 4:
        return []
    ip = cidr.split("/")[0]
    link = ctx.observed.links.get(ifname)
    others = [a for a in (link.ipv4 if link else []) if a != cidr]
    remaining = [a for a in others if a not in deleted.get(ifname, set())]
    because = f"the kernel removes it with {cidr}"
    out = []
    net = ipaddress.ip_interface(cidr).network
    for other in others:
        if ipaddress.ip_interface(other).network == net and other not in deleted.get(ifname, ()):
            out.append(f"may drop address {other} of {ifname} (a secondary goes with its "
                       "primary unless promote_secondaries is set)")
    for route in ctx.observed.routes:
        if route.family != 4 or route.proto in KERNEL_MADE_PROTOS or route.table != MAIN_TABLE:
            continue
        if route.src == ip or (route.dev == ifname and not remaining):
            out.append(f"drops {route_text(route_item(route))} ({because})")
    return out


def _mtu_effects(ctx: PlanContext, ifname: str, mtu: int) -> list[str]:
    link = ctx.observed.links.get(ifname)
    if link is None or mtu >= IPV6_MIN_MTU or (link.mtu or 0) < IPV6_MIN_MTU:
        return []
    because = f"the kernel disables IPv6 on {ifname} below MTU {IPV6_MIN_MTU}"
    out = [f"drops address {a} of {ifname} ({because})" for a in link.ipv6
           if not is_ipv6_link_local(a)]
    out += [f"drops {route_text(item)} ({because})" for item in _routes_via(ctx, ifname)
            if item["family"] == 6]
    return out


def _replace_effects(ctx: PlanContext, action: Action) -> list[str]:
    p = action.params
    family, dst = p.get("family"), p.get("dst")
    if family not in (4, 6):
        return []  # a restore from a hand-edited ledger record: nothing to foresee
    metric = canonical_metric(family, p.get("metric"))
    for route in ctx.observed.routes:
        if (route.table == MAIN_TABLE and route.family == family and route.dst == dst
                and canonical_metric(family, route.metric) == metric):
            return [f"replaces {route_text(route_item(route))}"]
    return []


def _routes_via(ctx: PlanContext, ifname: str) -> list[dict]:
    return [route_item(r) for r in ctx.observed.routes
            if r.dev == ifname and r.proto not in KERNEL_MADE_PROTOS]


def _deleted_addresses(ctx: PlanContext) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for _, action in ctx.out:
        if action.verb == Verb.DELETE_ADDRESS:
            out.setdefault(action.target, set()).add(action.params["address"])
    return out


def _released(ctx: PlanContext, owner: str) -> bool:
    return any(a.ledger_key == owner and a.ledger_op == LedgerOp.RELEASE for _, a in ctx.out)


def _present_routes(ctx: PlanContext) -> set[tuple]:
    """Main-table routes there after this plan's own deletions (by identity). Routes of other
    tables are not observed: the executor's `ip route add` leaves one that is there alone."""
    deleting = {key_route(a.params["family"], a.params.get("dst"),
                          canonical_metric(a.params["family"], a.params.get("metric")))
                for _, a in ctx.out if a.verb == Verb.DELETE_ROUTE}
    out = set()
    for route in ctx.observed.routes:
        metric = canonical_metric(route.family, route.metric)
        if key_route(route.family, route.dst, metric) not in deleting:
            out.add(route_identity(route_item(route)))
    return out


def _owner_text(owner: str) -> str:
    try:
        parsed: Optional[LedgerKey] = parse_key(owner)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.kind is KeyKind.ADDR:
        return parsed.cidr
    if parsed is not None and parsed.kind is KeyKind.MTU:
        return f"the MTU change of {parsed.name}"
    if parsed is not None and parsed.kind is KeyKind.NUMVFS:
        return f"the numVfs change of {parsed.name}"
    return owner
