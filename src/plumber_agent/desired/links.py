"""Interface fields: the MTU (also offered by sriov.py for a PF's netdev) and, per family, the
whole address list (the final-state rule: None = the family is not managed)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plumber_agent.desired.base import MergeContext, Owned
from plumber_agent.models.spec import TemplateSpec

LINK = "link"


@dataclass
class DesiredLink:
    ifname: str
    mtu: Optional[Owned[int]] = None
    ipv4: Optional[Owned[list[str]]] = None  # canonical, sorted; None = family unmanaged
    ipv6: Optional[Owned[list[str]]] = None

    def addresses(self, family: int) -> Optional[Owned[list[str]]]:
        return self.ipv4 if family == 4 else self.ipv6


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    for iface in spec.interface_config:
        ctx.touch(LINK, iface.name)
        if iface.mtu is not None:
            ctx.offer((LINK, iface.name, "mtu"), iface.mtu, name,
                      f"MTU of interface {iface.name}")
        for family, addrs in ((4, iface.ipv4), (6, iface.ipv6)):
            if addrs is not None:
                ctx.offer((LINK, iface.name, f"ipv{family}"), sorted(addrs.address), name,
                          f"IPv{family} addresses of interface {iface.name}")


def assemble(ctx: MergeContext) -> dict[str, DesiredLink]:
    out = {}
    for ifname in sorted(ctx.objects(LINK)):
        link = DesiredLink(ifname, mtu=ctx.get((LINK, ifname, "mtu")),
                           ipv4=ctx.get((LINK, ifname, "ipv4")),
                           ipv6=ctx.get((LINK, ifname, "ipv6")))
        if link.mtu or link.ipv4 or link.ipv6:
            out[ifname] = link
    return out
