"""Linux bridges (kernel `bridge` devices; Open vSwitch bridges are ovs.py): the bridge, its
ports and each port's VLAN entries, three ledger keys with three undos.

  lbridge:<name>   created (cleanup deletes it) or, for a bridge that was there, its
                   stp/vlan_filtering changed (cleanup puts the prior values back)
  lbport:<ifname>  the interface made a port of the bridge; prior: its master before (none, or
                   another Linux bridge); cleanup gives it back that master
  lbvlan:<ifname>  the port's VLAN entries; prior: the entries before. Cleanup deletes the
                   entries we added and only those, and puts back flags we changed; the entry
                   the kernel gives a new port (the bridge's default_pvid, VLAN 1) is counted
                   as the prior of a port this plan enslaves, so it is never "ours".

A port already in a bond, an OVS bridge or anything but a Linux bridge is left where it is (a
note); so is an interface of the bridge's name that is not a Linux bridge. A port that does not
exist (and is not created by this plan: a VLAN, a bridge) gives a note, which holds what the
template applied before (a typo does not undo). Bridges this plan creates count as existing
links for MTUs, addresses and routes (context.planned_links).
"""
from __future__ import annotations

from typing import Optional

from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_lbport, key_lbridge, key_lbvlan
from plumber_agent.models.lbridge_spec import compress, expand
from plumber_agent.planner.context import PlanContext

KERNEL_DEFAULT_PVID = 1  # br_vlan_init: the default_pvid of a bridge created without one
SETTINGS = ("stp", "vlan_filtering")


def plan(ctx: PlanContext) -> None:
    for name, db in sorted(ctx.desired.linux_bridges.items()):
        _plan_bridge(ctx, name, db)
    for _, dp in sorted(ctx.desired.linux_bridge_ports.items()):
        _plan_port(ctx, dp)


def is_linux_bridge(ctx: PlanContext, name: Optional[str]) -> bool:
    """An observed Linux bridge, or one this plan creates."""
    if not name:
        return False
    obs = ctx.observed.links.get(name)
    if obs is not None:
        return obs.kind == "bridge" and obs.linux_bridge is not None
    return name in ctx.planned_links and name in ctx.desired.linux_bridges


def settings_of(obs) -> dict:
    info = obs.linux_bridge
    return {"stp": info.stp, "vlan_filtering": info.vlan_filtering} if info else {}


def _plan_bridge(ctx: PlanContext, name: str, db) -> None:
    key = key_lbridge(name)
    ctx.wanted.add(key)
    obs = ctx.observed.links.get(name)
    want = {"stp": db.stp, "vlan_filtering": db.vlan_filtering}
    sub = (ctx.depth(name), name)
    if obs is None:
        ctx.emit(Phase.LINUX_BRIDGE, (name,), Verb.ENSURE_LINUX_BRIDGE, name, want,
                 templates=db.templates, key=key, op=LedgerOp.CLAIM, prior=None)
        ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, name, templates=db.templates)
        ctx.planned_links.add(name)
        return
    if obs.kind != "bridge" or obs.linux_bridge is None:
        ctx.note(name, f"interface {name} already exists and is not a linux bridge (it is "
                       f"{obs.kind or 'a plain device'}); it is left alone", db.templates)
        return
    have = settings_of(obs)
    if any(value is not None and have.get(setting) != value for setting, value in want.items()):
        ctx.emit(Phase.LINUX_BRIDGE, (name,), Verb.ENSURE_LINUX_BRIDGE, name, want,
                 templates=db.templates, key=key, op=LedgerOp.CLAIM, prior=have)
    rec = ctx.records.get(key)
    if rec and rec.get("created") and obs.admin_up is False:
        ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, name, templates=db.templates)


def _plan_port(ctx: PlanContext, dp) -> None:
    port, bridge = dp.name, dp.bridge
    ctx.wanted.add(key_lbport(port))
    if dp.vlans is not None:
        ctx.wanted.add(key_lbvlan(port))
    if not is_linux_bridge(ctx, bridge):
        return  # the bridge's own note says why
    if not ctx.link_exists(port):
        ctx.note(port, f"linux bridge {bridge}: port {port} does not exist on this node (and "
                       "no template creates it)", dp.templates)
        return
    obs = ctx.observed.links.get(port)
    master = obs.master if obs is not None else None
    joining = master != bridge
    if joining:
        if master is not None and not is_linux_bridge(ctx, master):
            ctx.note(port, f"linux bridge {bridge}: {port} is already a member of {master}; "
                           "it is left where it is", dp.templates)
            return
        ctx.emit(Phase.LINUX_BRIDGE_PORT, (port,), Verb.SET_LINUX_BRIDGE_PORT, port,
                 {"bridge": bridge}, templates=dp.templates, key=key_lbport(port),
                 op=LedgerOp.CLAIM, prior={"master": master})
    if dp.vlans is not None:
        _plan_vlans(ctx, dp, obs, joining)


def _joining_entries(ctx: PlanContext, bridge: str) -> dict:
    """The entry the kernel gives a port on joining `bridge` (nbp_vlan_init): its default_pvid,
    pvid and egress-untagged."""
    obs = ctx.observed.links.get(bridge)
    pvid = (obs.linux_bridge.default_pvid if obs is not None and obs.linux_bridge
            else KERNEL_DEFAULT_PVID)
    return {pvid: (True, True)} if pvid else {}


def _plan_vlans(ctx: PlanContext, dp, obs, joining: bool) -> None:
    key = key_lbvlan(dp.name)
    if joining or obs is None:
        current = _joining_entries(ctx, dp.bridge)
    else:
        current = expand(obs.bridge_vlans or [])
    rec = ctx.records.get(key)
    prior = expand(rec.get("prior") or []) if rec else current
    previous = expand((rec.get("value") or {}).get("vlans") or []) if rec else {}
    want = expand(dp.vlans)
    add = {vid: flags for vid, flags in want.items() if current.get(vid) != flags}
    delete = {vid: (False, False) for vid in current
              if vid not in want and vid in previous and vid not in prior}
    add.update(_pvid_back(prior, current, want, previous))
    if not add and not delete:
        return
    ctx.emit(Phase.LINUX_BRIDGE_VLANS, (dp.name,), Verb.SET_LINUX_BRIDGE_VLANS, dp.name,
             {"vlans": list(dp.vlans), "vlan_add": compress(add) or None,
              "vlan_delete": compress(delete) or None},
             templates=dp.templates, key=key, op=LedgerOp.CLAIM, prior=compress(current))


def _pvid_back(prior: dict, current: dict, want: dict, ours: dict) -> dict:
    """Prior entries to put back as they were: those we changed (in `ours`), and the prior
    pvid, which the kernel took away when ours became the pvid, once we want no pvid of our own."""
    own_pvid = any(flags[0] for flags in want.values())
    return {vid: flags for vid, flags in prior.items()
            if vid not in want and current.get(vid) != flags
            and ((vid in ours and vid in current) or (flags[0] and not own_pvid
                                                     and vid in current))}


# -- cleanup ----------------------------------------------------------------------------------

def cleanup_bridge(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    name = parsed.name
    obs = ctx.observed.links.get(name)
    if obs is None or obs.kind != "bridge":
        ctx.forget(Phase.DELETE_LINK, key, f"linux bridge {name} is already gone")
        return
    if rec.get("created"):
        ctx.doomed_links.add(name)
        ctx.release(Phase.DELETE_LINK, (-ctx.depth(name), name), Verb.DELETE_LINK, name, None,
                    key, rec)
        return
    have = settings_of(obs)
    prior = rec.get("prior") or {}
    back = {s: prior[s] for s in SETTINGS
            if isinstance(prior.get(s), bool) and have.get(s) != prior[s]}
    if not back:
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE, key, f"linux bridge {name} is as it was")
        return
    ctx.release(Phase.RESTORE_LINUX_BRIDGE, (name,), Verb.ENSURE_LINUX_BRIDGE, name, back, key,
                rec)


def cleanup_port(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    port = parsed.name
    obs = ctx.observed.links.get(port)
    bridge = (rec.get("value") or {}).get("bridge")
    if obs is None or port in ctx.doomed_links:
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE_PORT, key, f"{port} is already gone")
        return
    if obs.master != bridge:
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE_PORT, key, f"{port} is not a port of {bridge}")
        return
    prior = (rec.get("prior") or {}).get("master")
    if prior is not None and (not is_linux_bridge(ctx, prior) or prior in ctx.doomed_links):
        prior = None  # that bridge is gone (or going): the port is just taken out
    ctx.unbridged_ports.add(port)
    if prior is None and bridge in ctx.doomed_links:
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE_PORT, key,
                   f"{port} leaves with the deletion of {bridge}")
        return
    ctx.release(Phase.RESTORE_LINUX_BRIDGE_PORT, (port,), Verb.SET_LINUX_BRIDGE_PORT, port,
                {"bridge": prior}, key, rec)


def cleanup_vlans(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    port = parsed.name
    obs = ctx.observed.links.get(port)
    if (obs is None or obs.bridge_vlans is None or port in ctx.doomed_links
            or port in ctx.unbridged_ports or obs.master in ctx.doomed_links):
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE_VLANS, key,
                   f"the VLAN entries of {port} go with it leaving the bridge")
        return
    current = expand(obs.bridge_vlans)
    prior = expand(rec.get("prior") or [])
    ours = expand((rec.get("value") or {}).get("vlans") or [])
    delete = {vid: (False, False) for vid in current if vid in ours and vid not in prior}
    back = _pvid_back(prior, current, {}, ours)
    if not delete and not back:
        ctx.forget(Phase.RESTORE_LINUX_BRIDGE_VLANS, key, f"VLANs of {port} are as they were")
        return
    ctx.release(Phase.RESTORE_LINUX_BRIDGE_VLANS, (port,), Verb.SET_LINUX_BRIDGE_VLANS, port,
                {"vlan_add": compress(back) or None, "vlan_delete": compress(delete) or None},
                key, rec)


# -- the API-path guard's questions (planner/apipath.py) --------------------------------------

def taken_from_ip(action: Action) -> set[str]:
    """Netdevs whose traffic `action` hands to a Linux bridge (an enslaved port)."""
    if action.verb == Verb.SET_LINUX_BRIDGE_PORT and action.params.get("bridge"):
        return {action.target}
    return set()


def device_change(action: Action, carries) -> Optional[tuple[str, str]]:
    """(what, device) when `action` changes a Linux bridge device the API path runs over
    (`carries(ifname)`): a port joining or leaving, its VLANs, the bridge's settings."""
    verb, target, p = action.verb, action.target, action.params
    if not carries(target):
        return None
    if verb == Verb.SET_LINUX_BRIDGE_PORT:
        if p.get("bridge"):
            return f"adding {target} to linux bridge {p['bridge']}", target
        return f"taking {target} out of its linux bridge", target
    if verb == Verb.SET_LINUX_BRIDGE_VLANS:
        return f"changing the VLANs of linux bridge port {target}", target
    if verb == Verb.ENSURE_LINUX_BRIDGE:
        return f"changing linux bridge {target}", target
    return None
