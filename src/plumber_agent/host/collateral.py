"""Recording kernel collateral around one host change (models/collateral.py says what and why).

Before a change that can make the kernel remove other state -- deleting a pre-existing address
(the final-state rule), an MTU below 1280, numVfs written between non-zero counts -- the
executor asks `before()`: it reads the kernel (the link's addresses, the routes of every table;
the PF netdev's VF settings) and writes the items at risk as a pending
`collateral:<owner key>` record, fsync'd, before the change (write-ahead: a crash right after
the change still leaves a record to restore from). `after()` reads again and confirms the
record with the items that are actually gone, or drops it when the kernel removed nothing.
`restore()` carries out the planner's restore_collateral action (planner/collateral.py decides
when and what).

Only items that depend on the changed link are watched (routes through it or whose preferred
source is the address, the link's other addresses of that family): a diff of the whole host
would record the pod routes a CNI removed meanwhile as ours to restore.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Optional

from plumber_agent.models.actions import Action, LedgerOp, Verb
from plumber_agent.models.collateral import (ADDRESSES, IPV6_MIN_MTU, KERNEL_MADE_PROTOS, KINDS,
                                             ROUTES, VFS, item_route, item_text, merge,
                                             route_identity, route_item, route_text, vf_is_bare,
                                             vf_item, vf_settings, vf_text)
from plumber_agent.models.keys import key_addr, key_collateral, key_route, key_vfattr
from plumber_agent.models.observed import MAIN_TABLE
from plumber_agent.models.spec import kernel_metric
from plumber_agent.models.vfattrs_spec import ATTRS

logger = logging.getLogger(__name__)


@dataclass
class Watch:
    """One change being watched: the record's key, the items at risk, the ifname to re-read."""

    key: str
    ifname: str
    at_risk: dict
    fresh: bool  # this change wrote the record (nothing recorded for the owner before)
    pf: Optional[str] = None  # a numVfs change: the PF (its netdev is `ifname`)


def _family(cidr: str) -> int:
    return ipaddress.ip_interface(cidr).version


def _link_local(cidr: str) -> bool:
    iface = ipaddress.ip_interface(cidr)
    return iface.version == 6 and iface.ip.is_link_local


def at_risk(action: Action, addresses: Optional[list[str]], routes: list) -> dict:
    """The items the kernel may remove because of `action` (empty lists: nothing to watch)."""
    out: dict[str, list] = {kind: [] for kind in KINDS}
    if action.ledger_op != LedgerOp.CLAIM or addresses is None:
        return out
    ifname = action.target
    if action.verb == Verb.DELETE_ADDRESS:
        cidr = action.params["address"]
        family, ip = _family(cidr), cidr.split("/")[0]
        out[ROUTES] = [route_item(r) for r in routes if r.family == family
                       and r.proto not in KERNEL_MADE_PROTOS and (r.dev == ifname or r.src == ip)]
        out[ADDRESSES] = [{"ifname": ifname, "cidr": a} for a in addresses
                          if a != cidr and _family(a) == family and not _link_local(a)]
    elif action.verb == Verb.SET_MTU and int(action.params["mtu"]) < IPV6_MIN_MTU:
        out[ROUTES] = [route_item(r) for r in routes if r.family == 6 and r.dev == ifname
                       and r.proto not in KERNEL_MADE_PROTOS]
        out[ADDRESSES] = [{"ifname": ifname, "cidr": a} for a in addresses
                          if _family(a) == 6 and not _link_local(a)]
    return out


def gone(watched: dict, addresses: Optional[list[str]], routes: list) -> dict:
    """The watched items that are no longer there."""
    present = {route_identity(route_item(r)) for r in routes}
    have = set(addresses or [])
    return {ROUTES: [i for i in watched[ROUTES] if route_identity(i) not in present],
            ADDRESSES: [i for i in watched[ADDRESSES] if i["cidr"] not in have], VFS: []}


def vfs_gone(watched: list[dict], pf: str, ifname: str, vfs: Optional[list]) -> list[dict]:
    """The watched VFs whose settings are not there any more (the VF was re-created bare, or
    is not there at all)."""
    now = {vf.id: vf_settings(vf_item(pf, ifname, vf)) for vf in vfs or []}

    def kept(item: dict) -> bool:  # a None setting is not watched (_vf_not_owned)
        found = now.get(item["id"])
        return found is not None and all(found[name] == value for name, value
                                         in vf_settings(item).items() if value is not None)
    return [i for i in watched if not kept(i)]


def _empty(items: Optional[dict]) -> bool:
    return not items or not any(items.get(kind) for kind in KINDS)


class CollateralRecorder:
    def __init__(self, netlink, ledger, *, log: logging.Logger = logger):
        self.netlink = netlink
        self.ledger = ledger
        self.log = log

    def before(self, action: Action) -> Optional[Watch]:
        """Record what `action` puts at risk (write-ahead); None when nothing is."""
        if action.ledger_op != LedgerOp.CLAIM or not action.ledger_key:
            return None
        pf = ifname = None
        if action.verb == Verb.SET_NUM_VFS:
            pf, ifname = action.target, action.params.get("pf_ifname")
            if not (action.params.get("destroys_vfs") and ifname):
                return None
            vfs = self.netlink.discover_vfs(ifname) or []
            items = {ROUTES: [], ADDRESSES: [], VFS: [vf_item(pf, ifname, vf) for vf in vfs]}
        elif action.verb in (Verb.DELETE_ADDRESS, Verb.SET_MTU):
            ifname = action.target
            addresses, routes = self.netlink.discover_collateral(ifname)
            items = at_risk(action, addresses, routes)
        else:
            return None
        items = self._not_owned(items)
        if _empty(items):
            return None
        key = key_collateral(action.ledger_key)
        existing = self.ledger.get(key)
        if existing is not None and existing.get("pending"):
            # A crash left this record unconfirmed: what it held at risk is kept at risk.
            items = merge(existing.get("prior") if isinstance(existing.get("prior"), dict)
                          else None, items)
        fresh = self.ledger.intend(key, prior=items, created=False, templates=action.templates)
        return Watch(key=key, ifname=ifname, at_risk=items, fresh=fresh, pf=pf)

    def _not_owned(self, items: dict) -> dict:
        """Leave out routes and addresses a ledger record already owns: their own record undoes
        them (a route we added is deleted on undo, not put back because the kernel dropped it
        once). A pre-existing route the agent re-adds AFTER the kernel dropped it was not owned
        when recorded here, so undo still brings the original back."""
        def owned_route(item: dict) -> bool:
            family = item["family"]
            return ((item.get("table") or MAIN_TABLE) == MAIN_TABLE and key_route(
                family, item.get("dst"), kernel_metric(family, item.get("metric"))) in self.ledger)
        return dict(items, **{
            ROUTES: [i for i in items[ROUTES] if not owned_route(i)],
            ADDRESSES: [i for i in items[ADDRESSES]
                        if key_addr(i["ifname"], i["cidr"]) not in self.ledger],
            VFS: [self._vf_not_owned(i) for i in items[VFS]]})

    def _vf_not_owned(self, item: dict) -> dict:
        """A VF's settings without the attributes a vfattr record owns (None: left as they
        are): the agent sets those again itself, and its own record undoes them to what was
        there before it, so undoing a numVfs change must not put the agent's values back."""
        out = dict(item)
        for attr, _ in ATTRS:
            if key_vfattr(item["pf"], item["id"], attr) in self.ledger:
                for name in (("vlan", "qos") if attr == "vlan" else (attr,)):
                    out[name] = None
        return out

    def after(self, watch: Optional[Watch]) -> None:
        """Confirm the record with what the kernel actually removed (never raises: a record
        left pending is restored from its items at risk, each only where missing)."""
        if watch is None:
            return
        try:
            if watch.pf is not None:
                removed = {ROUTES: [], ADDRESSES: [], VFS: vfs_gone(
                    watch.at_risk[VFS], watch.pf, watch.ifname,
                    self.netlink.discover_vfs(watch.ifname))}
            else:
                addresses, routes = self.netlink.discover_collateral(watch.ifname)
                removed = gone(watch.at_risk, addresses, routes)
            rec = self.ledger.get(watch.key) or {}
            earlier = rec.get("value") if isinstance(rec.get("value"), dict) else None
            if _empty(removed) and _empty(earlier):
                if watch.fresh:
                    self.ledger.abandon(watch.key)
                return
            for kind in KINDS:
                for item in removed[kind]:
                    self.log.info("the kernel removed %s along with %s; undo puts it back",
                                  item_text(kind, item), watch.key)
            self.ledger.claim(watch.key, prior=watch.at_risk, created=False,
                              templates=rec.get("templates") or [],
                              value=merge(earlier, removed))
        except Exception as exc:  # noqa: BLE001 - the owner's change already happened
            self.log.warning("collateral of %s: could not confirm what the kernel removed "
                             "(%s); the record stays pending and undo restores what is missing "
                             "of what was at risk", watch.key, exc)

    def restore(self, action: Action) -> None:
        """The `restore_collateral` verb: put back what the kernel removed with an undone change.
        Addresses first (routes may need them); routes with `ip route add`, so one someone
        re-created meanwhile stays; VF settings only on a VF that is still bare (numVfs was put
        back first, in RESTORE_NUMVFS)."""
        items = action.params["items"]
        for item in items.get(ADDRESSES) or []:
            self.netlink.add_address(item["ifname"], item["cidr"])
        for item in items.get(ROUTES) or []:
            if not self.netlink.create_route(item_route(item)):
                self.log.info("restore %s: one is there already (re-created meanwhile), "
                              "left as it is", route_text(item))
        found: dict[str, dict] = {}  # PF netdev -> its VFs now, read once
        for item in items.get(VFS) or []:
            ifname = item["ifname"]
            if ifname not in found:
                found[ifname] = {vf.id: vf for vf in self.netlink.discover_vfs(ifname) or []}
            now = found[ifname].get(item["id"])
            if now is None:
                self.log.warning("not restoring %s: %s has no VF %s now", vf_text(item),
                                 ifname, item["id"])
            elif not vf_is_bare(now):
                self.log.info("restore %s: configured meanwhile, left as it is", vf_text(item))
            else:
                self.netlink.set_vf(ifname, item["id"], vf_settings(item))
