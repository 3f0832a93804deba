"""Linux bridges (spec.linuxBridgeConfig): the settings of one bridge (stp, vlanFiltering) are
one field, and each port (the bridge it joins and its VLAN entries) is one field of its own, so
two templates that put one interface into different bridges, or give it different VLANs, are
in Conflict while their other bridges and ports still apply."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.desired.base import MergeContext
from plumber_agent.models.spec import TemplateSpec

LINUX_BRIDGE = "linux bridge"
LINUX_BRIDGE_PORT = "linux bridge port"


@dataclass
class DesiredLinuxBridge:
    name: str
    stp: Optional[bool] = None  # None: not managed
    vlan_filtering: Optional[bool] = None
    templates: list[str] = field(default_factory=list)


@dataclass
class DesiredLinuxBridgePort:
    name: str
    bridge: str
    vlans: Optional[list[str]] = None  # canonical entries (models/lbridge_spec.py); None: unmanaged
    templates: list[str] = field(default_factory=list)


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    for bridge in spec.linux_bridge_config:
        if ctx.offer((LINUX_BRIDGE, bridge.name),
                     {"stp": bridge.stp, "vlan_filtering": bridge.vlan_filtering}, name,
                     f"linux bridge {bridge.name}"):
            ctx.touch(LINUX_BRIDGE, bridge.name)
        for port in bridge.ports:
            value = {"bridge": bridge.name,
                     "vlans": port.vlans() if port.manages_vlans() else None}
            if ctx.offer((LINUX_BRIDGE_PORT, port.name), value, name,
                         f"linux bridge port {port.name}"):
                ctx.touch(LINUX_BRIDGE_PORT, port.name)


def assemble_bridges(ctx: MergeContext) -> dict[str, DesiredLinuxBridge]:
    out = {}
    for bname in sorted(ctx.objects(LINUX_BRIDGE)):
        owned = ctx.get((LINUX_BRIDGE, bname))
        out[bname] = DesiredLinuxBridge(bname, templates=owned.templates, **owned.value)
    return out


def assemble_ports(ctx: MergeContext) -> dict[str, DesiredLinuxBridgePort]:
    out = {}
    for pname in sorted(ctx.objects(LINUX_BRIDGE_PORT)):
        owned = ctx.get((LINUX_BRIDGE_PORT, pname))
        out[pname] = DesiredLinuxBridgePort(pname, templates=owned.templates, **owned.value)
    return out


def offer_none(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    """The ports' row of MERGERS: `offer` (the bridges' row) offered them already."""
