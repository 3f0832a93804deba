"""Interface MTUs (a PF netdev's MTU in the SR-IOV phase, before its VFs'; others parents
first). A VLAN's MTU above its parent's is refused; cleanup restores children before parents.
"""
from __future__ import annotations

from typing import Optional

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_mtu
from plumber_agent.planner.context import PlanContext


def plan(ctx: PlanContext) -> None:
    for ifname, dl in ctx.desired.links.items():
        if dl.mtu is None:
            continue
        want = dl.mtu.value
        ctx.wanted.add(key_mtu(ifname))
        if not ctx.link_exists(ifname):
            ctx.note(ifname, f"interface {ifname} does not exist on this node", dl.mtu.templates)
            continue
        obs = ctx.observed.links.get(ifname)
        current = obs.mtu if obs is not None else _creation_mtu(ctx, ifname)
        if current == want:
            continue
        parent = ctx.parent_of(ifname)
        if parent is not None:
            parent_mtu = _effective_mtu(ctx, parent)
            if parent_mtu is not None and want > parent_mtu:
                ctx.refuse(ifname, f"MTU {want} of VLAN {ifname} is above the MTU "
                                   f"{parent_mtu} of its parent {parent}; refused",
                           dl.mtu.templates)
                continue
        if ctx.observed.pf_by_ifname(ifname) is not None:
            phase, sub = Phase.SRIOV_MTU, (0, ifname)  # PF netdev before its VFs
        else:
            phase, sub = Phase.LINK_MTU, (ctx.depth(ifname), ifname)  # parents first
        ctx.emit(phase, sub, Verb.SET_MTU, ifname, {"mtu": want}, templates=dl.mtu.templates,
                 key=key_mtu(ifname), op=LedgerOp.CLAIM, prior=current)


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    ifname = parsed.name
    obs = ctx.observed.links.get(ifname)
    prior = rec.get("prior")
    doomed_vfs = {vf.ifname for pci in ctx.numvfs_changing for vf in ctx.vfs_of(pci)}
    if (obs is None or ifname in ctx.doomed_links or ifname in doomed_vfs
            or not isinstance(prior, int) or obs.mtu == prior):
        ctx.forget(Phase.RESTORE_MTU, key, f"MTU of {ifname} needs no restore")
        return
    # Children before parents: a parent's MTU may only go down once its VLANs' did.
    ctx.release(Phase.RESTORE_MTU, (-ctx.depth(ifname), ifname), Verb.SET_MTU, ifname,
                {"mtu": prior}, key, rec)


def _effective_mtu(ctx: PlanContext, ifname: str) -> Optional[int]:
    link = ctx.desired.links.get(ifname)
    if link and link.mtu:
        return link.mtu.value
    obs = ctx.observed.links.get(ifname)
    if obs is not None:
        return obs.mtu
    vlan = ctx.desired.vlans.get(ifname)
    return _effective_mtu(ctx, vlan.parent) if vlan else None


def _creation_mtu(ctx: PlanContext, ifname: str) -> Optional[int]:
    """The MTU a VLAN this plan creates starts with: its parent's at LINK_CREATE time
    (a PF netdev's MTU is already changed then, in SRIOV_MTU)."""
    vlan = ctx.desired.vlans.get(ifname)
    if vlan is None:
        return None
    parent = ctx.observed.links.get(vlan.parent)
    if parent is None:
        return _creation_mtu(ctx, vlan.parent)
    dl = ctx.desired.links.get(vlan.parent)
    if dl and dl.mtu and ctx.observed.pf_by_ifname(vlan.parent) is not None:
        return dl.mtu.value
    return parent.mtu
