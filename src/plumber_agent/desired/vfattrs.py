"""VF attributes (sriovConfig[].vfs): one field per PF + VF id + attribute, so two templates
setting different attributes of one VF (or the same attribute of different VFs) never conflict,
and two setting the same attribute of one VF to different values do (the oldest wins).

Only the VFs and attributes a template names are desired: nobody else's VF is ever touched. A
VF at or beyond the PF's VF count (the numVfs the merge settles on, else the one found) fails its
template with the entry's path, so a typo'd id fails (and holds what the template applied)
instead of moving an attribute to a VF that does not exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from plumber_agent.desired.base import MergeContext, Owned
from plumber_agent.desired.sriov import PF, resolve_pfs
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.spec import TemplateSpec
from plumber_agent.models.status import TemplateState
from plumber_agent.models.vfattrs_spec import ATTRS

VF = "vf"
_ENTRIES = "vf-entries"  # touched per (pci, first id, last id, template, path): checked in assemble


@dataclass
class DesiredVf:
    pci_addr: str  # the PF's
    pf_ifname: str  # the PF netdev the attributes are set through
    id: int
    attrs: dict[str, Owned[Any]] = field(default_factory=dict)  # by vfattrs_spec.ATTRS name


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    observed = ctx.observed
    for i, entry in enumerate(spec.sriov_config):
        if not entry.vfs:
            continue
        # sriov.offer reports selectors matching nothing and PFs of another PCI class.
        pcis = [pci for pci in resolve_pfs(entry, observed) if observed.pfs[pci].is_network()]
        for pci in pcis:
            pf = observed.pfs[pci]
            if not pf.ifname:
                ctx.results[name].raise_to(
                    TemplateState.FAILED,
                    f"spec.sriovConfig[{i}].vfs: PF {pci} has no netdev in this network "
                    "namespace, and VF attributes are set through it (ip link set PF vf "
                    "N ...); left alone")
                continue
            # No VF at or beyond this can exist on the PF (bounded work for "0-65534").
            possible = max(pf.total_vfs, pf.num_vfs, entry.num_vfs or 0)
            for j, vf_entry in enumerate(entry.vfs):
                ids = vf_entry.ids()
                ctx.touch(_ENTRIES, (pci, ids[0], ids[-1], name, f"spec.sriovConfig[{i}].vfs[{j}]",
                                     vf_entry.describe_ids()))
                attributes = vf_entry.attributes()
                for vf in range(ids[0], min(ids[-1] + 1, possible)):
                    for attr, value in attributes.items():
                        ctx.offer((VF, pci, vf, attr), value, name,
                                  f"{attr} of VF {vf} of PF {pci} ({pf.ifname})")


def vf_count(ctx: MergeContext, pci: str) -> int:
    """The VFs PF `pci` will have: the numVfs the merge settled on, else the count found."""
    wanted = ctx.get((PF, pci, "numVfs"))
    return wanted.value if wanted is not None else ctx.observed.pfs[pci].num_vfs


def assemble(ctx: MergeContext) -> dict[tuple[str, int], DesiredVf]:
    counts: dict[str, int] = {}
    for pci, first, last, template, path, what in ctx.objects(_ENTRIES):
        count = counts.setdefault(pci, vf_count(ctx, pci))
        if last >= count:
            ctx.results[template].raise_to(
                TemplateState.FAILED,
                f"{path}: {what} of PF {_label(pci, ctx.observed)}: VF {max(first, count)} "
                f"does not exist (numVfs {count}" + (f": VFs 0..{count - 1})" if count else ")"))
    out: dict[tuple[str, int], DesiredVf] = {}
    # The fields offered (one per PF, VF and attribute; not ctx.touch per VF: a list, and a
    # range of many VFs in many entries would make it quadratic).
    for _, pci, vf, attr in sorted(key for key in ctx.merger.fields if key[0] == VF):
        if vf >= counts.get(pci, 0):
            continue
        owned: Optional[Owned] = ctx.get((VF, pci, vf, attr))
        dvf = out.get((pci, vf))
        if dvf is None:
            dvf = out[(pci, vf)] = DesiredVf(pci_addr=pci, id=vf,
                                             pf_ifname=ctx.observed.pfs[pci].ifname or "")
        dvf.attrs[attr] = owned
    for dvf in out.values():  # in ATTRS order
        dvf.attrs = {attr: dvf.attrs[attr] for attr, _ in ATTRS if attr in dvf.attrs}
    return out


def _label(pci: str, observed: ObservedHost) -> str:
    ifname = observed.pfs[pci].ifname
    return f"{pci} ({ifname})" if ifname else pci
