"""SR-IOV: numVfs per PF, the VF driver and the VF netdevs' MTU.

One `set_num_vfs` per PF (the driver writes 0 first between non-zero counts; the action is
marked destroys_vfs=True whenever existing VFs go away). VF driver binds and VF MTUs are
planned only for VFs that exist: when numVfs changes, VFs appear after the write, so the
reconciler's re-plan (after execute, at most 3 rounds) binds them. This keeps the plan pure and
every action concrete (chosen over wildcard "<pf>/vf*" actions expanded by the executor).
"""
from __future__ import annotations

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_mtu, key_numvfs, key_vfdriver
from plumber_agent.planner.context import PlanContext


def plan(ctx: PlanContext) -> None:
    for pci, dpf in ctx.desired.pfs.items():
        pf = ctx.observed.pfs.get(pci)
        if pf is None:
            continue  # merge resolved it against this observation; cannot happen
        if dpf.num_vfs is not None:
            want = dpf.num_vfs.value
            ctx.wanted.add(key_numvfs(pci))
            if want != pf.num_vfs:
                if pf.total_vfs and want > pf.total_vfs:
                    ctx.note(pci, f"numVfs {want} of PF {pci} is above its sriov_totalvfs "
                                  f"{pf.total_vfs}", dpf.num_vfs.templates)
                else:
                    params = {"num_vfs": want}
                    if pf.num_vfs > 0:
                        params["destroys_vfs"] = True
                        params["pf_ifname"] = pf.ifname  # its VF settings are recorded first
                    ctx.emit(Phase.SRIOV_NUMVFS, (pci,), Verb.SET_NUM_VFS, pci, params,
                             templates=dpf.num_vfs.templates, key=key_numvfs(pci),
                             op=LedgerOp.CLAIM, prior=pf.num_vfs)
                    ctx.numvfs_changing.add(pci)
        for vf in sorted(pf.vfs, key=lambda v: v.id):
            if dpf.vf_driver is not None:
                ctx.wanted.add(key_vfdriver(vf.pci_addr))
            if dpf.mtu is not None and vf.ifname:
                ctx.wanted.add(key_mtu(vf.ifname))
        if pci in ctx.numvfs_changing:
            continue  # VFs come and go: bind drivers / set MTUs on the next round
        for vf in sorted(pf.vfs, key=lambda v: v.id):
            if dpf.vf_driver is not None and vf.driver != dpf.vf_driver.value:
                ctx.emit(Phase.SRIOV_VF_DRIVER, (pci, vf.id), Verb.BIND_VF_DRIVER,
                         vf.pci_addr, {"driver": dpf.vf_driver.value, "pf": pci},
                         templates=dpf.vf_driver.templates,
                         key=key_vfdriver(vf.pci_addr), op=LedgerOp.CLAIM, prior=vf.driver)
                if vf.ifname:
                    ctx.doomed_links.add(vf.ifname)  # its netdev goes with the old driver
                continue  # MTU of the new netdev: next round
            if dpf.mtu is not None and vf.ifname:
                link = ctx.observed.links.get(vf.ifname)
                if link is not None and link.mtu != dpf.mtu.value:
                    ctx.emit(Phase.SRIOV_MTU, (1, vf.ifname), Verb.SET_MTU, vf.ifname,
                             {"mtu": dpf.mtu.value}, templates=dpf.mtu.templates,
                             key=key_mtu(vf.ifname), op=LedgerOp.CLAIM, prior=link.mtu)


def cleanup_numvfs(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    pci = parsed.name
    pf = ctx.observed.pfs.get(pci)
    prior = rec.get("prior")
    if pf is None or not isinstance(prior, int) or pf.num_vfs == prior:
        ctx.forget(Phase.RESTORE_NUMVFS, key,
                   f"PF {pci} is gone" if pf is None else f"PF {pci} already has {prior} VFs")
        return
    params = {"num_vfs": prior}
    if pf.num_vfs > 0:
        params["destroys_vfs"] = True
    ctx.numvfs_changing.add(pci)
    ctx.release(Phase.RESTORE_NUMVFS, (pci,), Verb.SET_NUM_VFS, pci, params, key, rec)


def cleanup_vfdriver(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    vf_pci = parsed.name
    found = [(pci, vf) for pci, pf in ctx.observed.pfs.items() for vf in pf.vfs
             if vf.pci_addr == vf_pci]
    prior = rec.get("prior")
    if not found:
        ctx.forget(Phase.RESTORE_VF_DRIVER, key, f"VF {vf_pci} is gone")
        return
    if found[0][0] in ctx.numvfs_changing:
        ctx.forget(Phase.RESTORE_VF_DRIVER, key,
                   f"VF {vf_pci} goes away with its PF's numVfs change")
        return
    if not prior:
        ctx.forget(Phase.RESTORE_VF_DRIVER, key, f"VF {vf_pci} had no driver before")
        return
    pci, vf = found[0]
    if vf.driver == prior:
        ctx.forget(Phase.RESTORE_VF_DRIVER, key, f"VF {vf_pci} has {prior} already")
        return
    if vf.ifname:
        ctx.doomed_links.add(vf.ifname)
    ctx.release(Phase.RESTORE_VF_DRIVER, (pci, vf.id), Verb.BIND_VF_DRIVER, vf_pci,
                {"driver": prior, "pf": pci, "restore": True}, key, rec)
