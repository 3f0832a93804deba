"""VLAN interfaces (interfaceConfig[].vlan[]): the (parent, VLAN id) behind one interface
name is one field."""
from __future__ import annotations

from dataclasses import dataclass, field

from plumber_agent.desired.base import MergeContext
from plumber_agent.models.spec import TemplateSpec

VLAN = "vlan"


@dataclass
class DesiredVlan:
    ifname: str
    parent: str
    vlan_id: int
    templates: list[str] = field(default_factory=list)


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    for iface in spec.interface_config:
        for vlan in iface.vlan:
            vname = vlan.ifname(iface.name)
            if ctx.offer((VLAN, vname), {"parent": iface.name, "vlan_id": vlan.id}, name,
                         f"VLAN interface {vname}"):
                ctx.touch(VLAN, vname)


def assemble(ctx: MergeContext) -> dict[str, DesiredVlan]:
    out = {}
    for vname in sorted(ctx.objects(VLAN)):
        owned = ctx.get((VLAN, vname))
        out[vname] = DesiredVlan(vname, owned.value["parent"], owned.value["vlan_id"],
                                 owned.templates)
    return out
