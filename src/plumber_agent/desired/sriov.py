"""SR-IOV fields, per PF the entry selects (by name, PCI address, or every vendor+device
match): numVfs, vfDriver and mtu. The mtu is also the PF netdev's MTU, so it is offered as the
interface MTU field too (links.py owns that field: a template setting the same interface's MTU
in interfaceConfig competes for it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plumber_agent.desired.base import MergeContext, Owned
from plumber_agent.desired.links import LINK
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.spec import SriovConfig, TemplateSpec
from plumber_agent.models.status import TemplateState

PF = "pf"


@dataclass
class DesiredPf:
    pci_addr: str
    ifname: Optional[str] = None
    num_vfs: Optional[Owned[int]] = None
    vf_driver: Optional[Owned[str]] = None
    mtu: Optional[Owned[int]] = None  # for the VF netdevs (the PF netdev's MTU is in links)


def resolve_pfs(entry: SriovConfig, observed: ObservedHost) -> list[str]:
    """PCI addresses of the PFs an sriovConfig entry selects (sorted)."""
    kind, value = entry.selector()
    if kind == "pfName":
        pf = observed.pf_by_ifname(value)
        return [pf.pci_addr] if pf else []
    if kind == "pciAddr":
        return [value] if value in observed.pfs else []
    return sorted(pci for pci, pf in observed.pfs.items()
                  if pf.vendor_id == entry.vendor_id and pf.device_id == entry.device_id)


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    observed = ctx.observed
    for i, entry in enumerate(spec.sriov_config):
        kind, value = entry.selector()
        pcis = resolve_pfs(entry, observed)
        if not pcis:
            ctx.results[name].raise_to(
                TemplateState.FAILED,
                f"spec.sriovConfig[{i}]: no PF matches {kind} {value} on this node")
            continue
        # SR-IOV here means network VFs: a storage or accelerator PF (NVMe, QAT) that matches
        # a vendor/device pair or a typo'd pciAddr is refused, never given VFs.
        for pci in [pci for pci in pcis if not observed.pfs[pci].is_network()]:
            ctx.results[name].raise_to(
                TemplateState.FAILED,
                f"spec.sriovConfig[{i}]: {pci} is PCI class "
                f"{observed.pfs[pci].pci_class}, not a network device (class 0x02); "
                "left alone (--pf-pci-classes accepts other classes)")
            pcis.remove(pci)
        problem = unknown_driver(entry.vf_driver, observed)
        if problem:
            ctx.results[name].raise_to(TemplateState.FAILED,
                                       f"spec.sriovConfig[{i}].vfDriver: {problem}")
            continue
        for pci in pcis:
            label = _pf_label(pci, observed)
            ctx.touch(PF, pci)
            if entry.num_vfs is not None:
                ctx.offer((PF, pci, "numVfs"), entry.num_vfs, name, f"numVfs of {label}")
            if entry.vf_driver is not None:
                ctx.offer((PF, pci, "vfDriver"), entry.vf_driver, name, f"vfDriver of {label}")
            if entry.mtu is not None:
                ctx.offer((PF, pci, "mtu"), entry.mtu, name, f"mtu of {label}")
                ifname = observed.pfs[pci].ifname
                if ifname:
                    ctx.touch(LINK, ifname)
                    ctx.offer((LINK, ifname, "mtu"), entry.mtu, name,
                              f"MTU of interface {ifname}")


def unknown_driver(driver: Optional[str], observed: ObservedHost) -> Optional[str]:
    """Why `driver` names no module of this kernel, where its modules are known."""
    if driver is None or observed.kernel_modules is None:
        return None
    name = driver.replace("-", "_")
    module = (observed.module_aliases or {}).get(name, name)
    if module in observed.kernel_modules:
        return None
    return (f"{driver!r} is neither a module nor a module alias of this node's kernel "
            "(modules.dep, modules.builtin, modules.alias)")


def _resolved(driver: Optional[Owned], observed: ObservedHost) -> Optional[Owned]:
    """A vfDriver as `modprobe --resolve-alias` names it: the seed's i40evf is the alias of
    iavf on current kernels, and the driver a VF is bound to is the module's name."""
    if driver is None or not observed.module_aliases:
        return driver
    module = observed.module_aliases.get(driver.value.replace("-", "_"))
    return Owned(module, list(driver.templates)) if module else driver


def assemble(ctx: MergeContext) -> dict[str, DesiredPf]:
    out = {}
    for pci in sorted(ctx.objects(PF)):
        pf = DesiredPf(pci_addr=pci, ifname=ctx.observed.pfs[pci].ifname,
                       num_vfs=ctx.get((PF, pci, "numVfs")),
                       vf_driver=_resolved(ctx.get((PF, pci, "vfDriver")), ctx.observed),
                       mtu=ctx.get((PF, pci, "mtu")))
        if pf.num_vfs or pf.vf_driver or pf.mtu:
            out[pci] = pf
    return out


def _pf_label(pci: str, observed: ObservedHost) -> str:
    ifname = observed.pfs[pci].ifname
    return f"PF {pci} ({ifname})" if ifname else f"PF {pci}"
