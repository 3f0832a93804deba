"""VLAN interfaces: created on their parent (parents first, by depth), set up, and deleted on
cleanup only when the host shows it is the VLAN we created.

A same-named link that is not the VLAN we want is left alone (a note) unless our ledger says we
created it (then it is drift: deleted and re-created). A missing parent gives a note, no action.
"""
from __future__ import annotations

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_vlan
from plumber_agent.planner.context import PlanContext


def plan(ctx: PlanContext) -> None:
    for vname in sorted(ctx.desired.vlans, key=lambda n: (ctx.depth(n), n)):
        dv = ctx.desired.vlans[vname]
        key = key_vlan(vname)
        ctx.wanted.add(key)
        if not ctx.link_exists(dv.parent):
            ctx.note(vname, f"VLAN {vname}: parent interface {dv.parent} does not exist on "
                            "this node", dv.templates)
            continue
        obs = ctx.observed.links.get(vname)
        rec = ctx.records.get(key)
        sub = (ctx.depth(vname), vname)
        params = {"parent": dv.parent, "vlan_id": dv.vlan_id}
        if obs is not None:
            if obs.kind == "vlan" and obs.parent == dv.parent and obs.vlan_id == dv.vlan_id:
                if obs.admin_up is False:
                    ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, vname, templates=dv.templates)
                continue
            if rec is None or (rec.get("pending") and not vlan_matches(obs, rec)):
                ctx.note(vname, f"interface {vname} already exists and is not VLAN "
                                f"{dv.vlan_id} on {dv.parent}; it was not created by "
                                "HostPlumber, so it is left alone", dv.templates)
                continue
            ctx.emit(Phase.LINK_CREATE, sub + (0,), Verb.DELETE_LINK, vname,
                     templates=dv.templates, drift=True)
        ctx.emit(Phase.LINK_CREATE, sub + (1,), Verb.ENSURE_VLAN, vname, params,
                 templates=dv.templates, key=key, op=LedgerOp.CLAIM, prior=None)
        ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, vname, templates=dv.templates)
        ctx.planned_links.add(vname)


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    ifname = parsed.name
    obs = ctx.observed.links.get(ifname)
    if obs is None or obs.kind != "vlan":
        ctx.forget(Phase.DELETE_LINK, key, f"{ifname} is already gone")
        return
    if not rec.get("created") or (rec.get("pending") and not vlan_matches(obs, rec)):
        ctx.forget(Phase.DELETE_LINK, key, f"{ifname} was not created by HostPlumber")
        return
    ctx.doomed_links.add(ifname)
    ctx.release(Phase.DELETE_LINK, (-ctx.depth(ifname), ifname), Verb.DELETE_LINK, ifname,
                None, key, rec)


def vlan_matches(obs, rec: dict) -> bool:
    """Is observed link `obs` the VLAN a (pending) record was creating?"""
    value = rec.get("value")
    return (isinstance(value, dict) and obs.kind == "vlan" and obs.parent == value.get("parent")
            and obs.vlan_id == value.get("vlan_id"))
