"""VF attributes: one `set_vf` per VF and attribute that differs from what the PF reports
(IFLA_VF_INFO), each claimed under its own ledger key with the value found as its prior, so
cleanup puts back exactly the attributes the agent set, on exactly the VFs it set them on.

VFs come and go with numVfs: while this plan changes a PF's numVfs (context.numvfs_changing)
its VF attributes wait for the next round, when the re-created (bare) VFs exist and are read
again; a re-creation behind the agent's back is drift and is put back the same way. A VF that
does not exist (yet) when it should is a per-template note (the template fails and holds).

Rates: IFLA_VF_RATE carries the minimum and the maximum together, and the driver fills in the
one not given from the VF's current value (as `ip link` does); the two are ordered so that no
step asks the kernel for a minimum above a non-zero maximum (docs/pitfalls.md 41, 42).
"""
from __future__ import annotations

from typing import Any, Optional

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_vfattr
from plumber_agent.models.observed import ObservedVfInfo
from plumber_agent.models.vfattrs_spec import ATTRS, LINK_STATES, VfVlan, link_state_name
from plumber_agent.planner.context import PlanContext

_ORDER = {name: 2 * i for i, (name, _) in enumerate(ATTRS)}  # odd slots: max_tx_rate
_FIELDS = {"vlan": ("qos", "vlan")}  # the settings of an attribute, when not just its own name


def current_settings(info: ObservedVfInfo, attr: str) -> Optional[dict[str, Any]]:
    """What the PF reports for one attribute of a VF, as set_vf settings (None: not reported)."""
    if attr == "vlan":
        if info.vlan is None:
            return None
        return {"vlan": info.vlan, "qos": info.qos or 0}
    if attr == "link_state":
        if info.link_state is None:
            return None
        name = link_state_name(info.link_state)
        return {"link_state": name if name in LINK_STATES else info.link_state}
    value = getattr(info, attr)
    return None if value is None else {attr: value}


def wanted_settings(attr: str, value: Any) -> dict[str, Any]:
    if isinstance(value, VfVlan):
        return {"vlan": value.vlan, "qos": value.qos}
    return {attr: value}


def _rate_order(attr: str, want: dict, info: ObservedVfInfo) -> int:
    """min before max only when the new maximum is below the current minimum."""
    if attr == "max_tx_rate":
        new_max = want.get("max_tx_rate") or 0
        return _ORDER["min_tx_rate"] + 1 if new_max and new_max < (info.min_tx_rate or 0) \
            else _ORDER["min_tx_rate"] - 1
    return _ORDER[attr]


def _vf_info(ctx: PlanContext, pf_ifname: Optional[str], vf: int) -> Optional[ObservedVfInfo]:
    link = ctx.observed.links.get(pf_ifname) if pf_ifname else None
    return next((info for info in (link.vfs if link else []) if info.id == vf), None)


def plan(ctx: PlanContext) -> None:
    for (pci, vf), dvf in ctx.desired.vfs.items():
        for attr in dvf.attrs:
            ctx.wanted.add(key_vfattr(pci, vf, attr))
        pf = ctx.observed.pfs.get(pci)
        if pf is None or pci in ctx.numvfs_changing:
            continue  # VFs come and go with this plan: their attributes are set next round
        templates = sorted({t for owned in dvf.attrs.values() for t in owned.templates})
        if vf not in {found.id for found in pf.vfs}:
            ctx.note(f"{pci}/vf{vf}", f"VF {vf} of PF {pci} ({dvf.pf_ifname}) does not exist "
                                      f"(the PF has {pf.num_vfs} VFs)", templates)
            continue
        info = _vf_info(ctx, dvf.pf_ifname, vf)
        if info is None:
            ctx.note(f"{pci}/vf{vf}", f"PF {dvf.pf_ifname} reports no settings for its VF {vf} "
                                      "(IFLA_VF_INFO): its driver cannot set VF attributes",
                     templates)
            continue
        for attr, owned in dvf.attrs.items():
            want = wanted_settings(attr, owned.value)
            current = current_settings(info, attr)
            if current == want:
                continue
            ctx.emit(Phase.SRIOV_VF_ATTR, (pci, vf, _rate_order(attr, want, info)), Verb.SET_VF,
                     dvf.pf_ifname, {"pf": pci, "vf": vf, **want}, templates=owned.templates,
                     key=key_vfattr(pci, vf, attr), op=LedgerOp.CLAIM, prior=current)


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    pci, vf, attr = parsed.name, parsed.vf, parsed.attr
    pf = ctx.observed.pfs.get(pci)
    prior = rec.get("prior")
    if pf is None:
        ctx.forget(Phase.RESTORE_VF_ATTR, key, f"PF {pci} is gone")
        return
    if pci in ctx.numvfs_changing:
        ctx.forget(Phase.RESTORE_VF_ATTR, key,
                   f"VF {vf} of PF {pci} goes away with its PF's numVfs change")
        return
    info = _vf_info(ctx, pf.ifname, vf) if vf in {found.id for found in pf.vfs} else None
    if info is None:
        ctx.forget(Phase.RESTORE_VF_ATTR, key, f"VF {vf} of PF {pci} is gone")
        return
    if attr not in _ORDER or not isinstance(prior, dict) \
            or tuple(sorted(prior)) != _FIELDS.get(attr, (attr,)):
        ctx.forget(Phase.RESTORE_VF_ATTR, key, f"the {attr} of VF {vf} of PF {pci} had no "
                                               "known value before")
        return
    if current_settings(info, attr) == prior:
        ctx.forget(Phase.RESTORE_VF_ATTR, key, f"VF {vf} of PF {pci} has its {attr} as before")
        return
    ctx.release(Phase.RESTORE_VF_ATTR, (pci, vf, _rate_order(attr, prior, info)), Verb.SET_VF,
                pf.ifname, {"pf": pci, "vf": vf, **prior}, key, rec)
