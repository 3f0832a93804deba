"""Linux bonds (bondConfig[]): one bond's settings (mode, options, members) are one field, and
each member belongs to one bond, a field of its own.

Why the member is a field too: two templates may each define a different bond (bond0, bond1)
and both name eno1; the kernel lets a NIC be in one bond only, so the older template wins eno1
and the newer one is Conflict, its bond built without eno1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from plumber_agent.desired.base import MergeContext
from plumber_agent.models.spec import TemplateSpec

BOND = "bond"
BOND_MEMBER = "bond-member"


@dataclass
class DesiredBond:
    name: str
    mode: str
    members: list[str]  # in the order given (the first enslaved gives the bond its MAC)
    options: dict = field(default_factory=dict)  # miimon, lacp_rate, xmit_hash_policy, primary
    templates: list[str] = field(default_factory=list)

    def settings(self) -> dict:
        """Mode and options as the netlink driver takes them (unset options absent)."""
        return {"mode": self.mode, **self.options}


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    for bond in spec.bond_config:
        value = {"settings": bond.settings(), "members": list(bond.members)}
        if not ctx.offer((BOND, bond.name), value, name, f"bond {bond.name}"):
            continue
        ctx.touch(BOND, bond.name)
        for member in bond.members:
            ctx.offer((BOND_MEMBER, member), bond.name, name, f"member {member} of a bond")


def assemble(ctx: MergeContext) -> dict[str, DesiredBond]:
    out = {}
    for bname in sorted(ctx.objects(BOND)):
        owned = ctx.get((BOND, bname))
        settings = dict(owned.value["settings"])
        mode = settings.pop("mode")
        members = [m for m in owned.value["members"]
                   if (winner := ctx.get((BOND_MEMBER, m))) is not None and winner.value == bname]
        if settings.get("primary") not in (None, *members):
            settings.pop("primary")  # its member went to an older template's bond
        out[bname] = DesiredBond(bname, mode, members, settings, owned.templates)
    return out
