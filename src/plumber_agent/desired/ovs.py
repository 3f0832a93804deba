"""Open vSwitch bridges: the ports and params of one bridge are one field."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.desired.base import MergeContext
from plumber_agent.models.spec import OvsConfig, TemplateSpec

BRIDGE = "bridge"


@dataclass
class DesiredBridge:
    name: str
    interfaces: list[str] = field(default_factory=list)  # [] = bridge only
    datapath_type: Optional[str] = None
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None
    mtu_request: Optional[int] = None
    templates: list[str] = field(default_factory=list)

    def port_name(self) -> Optional[str]:
        return bond_port_name(self.name, self.interfaces)


def bond_port_name(bridge: str, interfaces: list[str]) -> Optional[str]:
    """One interface: the port is named after it. Several: a bond port named after the bridge
    (at most 15 characters, so it is a valid netdev name too)."""
    if not interfaces:
        return None
    if len(interfaces) == 1:
        return interfaces[0]
    return f"{bridge[:10]}-bond"


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    for ovs in spec.ovs_config:
        if ctx.offer((BRIDGE, ovs.bridge_name), _bridge_value(ovs), name,
                     f"OVS bridge {ovs.bridge_name}"):
            ctx.touch(BRIDGE, ovs.bridge_name)


def assemble(ctx: MergeContext) -> dict[str, DesiredBridge]:
    out = {}
    for bname in sorted(ctx.objects(BRIDGE)):
        owned = ctx.get((BRIDGE, bname))
        out[bname] = DesiredBridge(bname, templates=owned.templates, **owned.value)
    return out


def _bridge_value(ovs: OvsConfig) -> dict:
    params = ovs.params
    return {"interfaces": ovs.interfaces(),
            "datapath_type": params.datapath_type if params else None,
            "bond_mode": params.bond_mode if params else None,
            "lacp": params.lacp if params else None,
            "mtu_request": params.mtu_request if params else None}
