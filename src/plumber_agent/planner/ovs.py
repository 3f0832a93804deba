"""Open vSwitch bridges and their one port each (one interface: a port named after it; several:
a bond). Ports wait for the netdevs they attach (present, or created by this plan). A bridge or
port that exists with other settings and is not tagged as ours is left as it is (a note).
Without OVS (observed.bridges is None) nothing is planned and ledger records are kept, to be
undone when OVS is back.
"""
from __future__ import annotations

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_bridge, key_port
from plumber_agent.models.observed import ovs_managed
from plumber_agent.planner.context import PlanContext


def plan(ctx: PlanContext) -> None:
    if not ctx.desired.bridges:
        return
    if ctx.observed.bridges is None:
        for name, db in ctx.desired.bridges.items():
            ctx.wanted.add(key_bridge(name))
            port = db.port_name()
            if port:
                ctx.wanted.add(key_port(name, port))
            ctx.note(name, f"OVS bridge {name}: Open vSwitch is not available "
                     f"({ctx.observed.ovs_error or 'unknown reason'})", db.templates)
        return
    for name, db in ctx.desired.bridges.items():
        key = key_bridge(name)
        ctx.wanted.add(key)
        obs = ctx.observed.bridges.get(name)
        if obs is None:
            ctx.emit(Phase.OVS, (name,), Verb.ENSURE_BRIDGE, name,
                     {"datapath_type": db.datapath_type}, templates=db.templates, key=key,
                     op=LedgerOp.CLAIM, prior=None)
        elif db.datapath_type and obs.datapath_type != db.datapath_type:
            if not ovs_managed(obs.external_ids):
                ctx.note(name, f"OVS bridge {name} exists with datapath_type "
                         f"{obs.datapath_type or 'system'} and was not created by "
                         "HostPlumber: it is left as it is", db.templates)
                continue
            ctx.emit(Phase.OVS, (name,), Verb.ENSURE_BRIDGE, name,
                     {"datapath_type": db.datapath_type}, templates=db.templates, key=key,
                     op=LedgerOp.CLAIM, prior={"datapath_type": obs.datapath_type or None})
        port = db.port_name()
        if not port:
            continue
        pkey = key_port(name, port)
        ctx.wanted.add(pkey)
        missing = [i for i in db.interfaces if not ctx.link_exists(i)]
        if missing:
            ctx.note(name, f"OVS bridge {name}: nodeInterface {', '.join(missing)} does not "
                     "exist on this node (and no template creates it)", db.templates)
            continue
        want = {"bridge": name, "interfaces": list(db.interfaces), "bond_mode": db.bond_mode,
                "lacp": db.lacp, "mtu_request": db.mtu_request}
        oport = next((p for p in obs.ports if p.name == port), None) if obs else None
        prior = None
        if oport is not None:
            have = port_config(oport)
            same = (sorted(have["interfaces"]) == sorted(db.interfaces)
                    and (db.bond_mode is None or have["bond_mode"] == db.bond_mode)
                    and (db.lacp is None or have["lacp"] == db.lacp)
                    and (db.mtu_request is None or have["mtu_request"] == db.mtu_request))
            if same:
                continue
            if not ovs_managed(oport.external_ids):
                ctx.note(name, f"OVS port {port} on bridge {name} exists with other settings "
                         "and was not created by HostPlumber: it is left as it is",
                         db.templates)
                continue
            prior = have
        ctx.emit(Phase.OVS_PORT, (name, port), Verb.ENSURE_PORT, port, want,
                 templates=db.templates, key=pkey, op=LedgerOp.CLAIM, prior=prior)


def cleanup_bridge(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    if ctx.observed.bridges is None:
        return  # OVS unreachable: keep the record, undo when it is back
    name = parsed.name
    obs = (ctx.observed.bridges or {}).get(name)
    if obs is None:
        ctx.forget(Phase.DELETE_OVS, key, f"bridge {name} is already gone")
    elif rec.get("created") and rec.get("pending") and not ovs_managed(obs.external_ids):
        ctx.forget(Phase.DELETE_OVS, key, f"bridge {name} was not created by HostPlumber")
    elif rec.get("created"):
        ctx.release(Phase.DELETE_OVS, (name,), Verb.DELETE_BRIDGE, name, None, key, rec)
    else:
        prior = (rec.get("prior") or {}).get("datapath_type")
        if prior and prior != obs.datapath_type:
            ctx.release(Phase.DELETE_OVS, (name,), Verb.ENSURE_BRIDGE, name,
                        {"datapath_type": prior}, key, rec)
        else:
            ctx.forget(Phase.DELETE_OVS, key, f"bridge {name} is as it was")


def cleanup_port(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    if ctx.observed.bridges is None:
        return
    bridge, port = parsed.name, parsed.port
    obs_bridge = (ctx.observed.bridges or {}).get(bridge)
    oport = next((p for p in obs_bridge.ports if p.name == port), None) if obs_bridge else None
    if oport is None:
        ctx.forget(Phase.DELETE_OVS_PORT, key, f"port {port} is already gone")
    elif rec.get("created") and rec.get("pending") and not ovs_managed(oport.external_ids):
        ctx.forget(Phase.DELETE_OVS_PORT, key,
                   f"port {port} was not created by HostPlumber")
    elif rec.get("created"):
        ctx.release(Phase.DELETE_OVS_PORT, (bridge, port), Verb.DELETE_PORT, port,
                    {"bridge": bridge}, key, rec)
    elif rec.get("pending") and port_config(oport) == rec.get("prior"):
        ctx.forget(Phase.DELETE_OVS_PORT, key, f"port {port} is as it was")
    else:
        prior = dict(rec.get("prior") or {})
        prior["bridge"] = bridge
        ctx.release(Phase.DELETE_OVS_PORT, (bridge, port), Verb.ENSURE_PORT, port, prior,
                    key, rec)


def port_config(port) -> dict:
    mtus = {i.mtu_request for i in port.interfaces}
    return {"interfaces": sorted(i.name for i in port.interfaces), "bond_mode": port.bond_mode,
            "lacp": port.lacp, "mtu_request": mtus.pop() if len(mtus) == 1 else None}
