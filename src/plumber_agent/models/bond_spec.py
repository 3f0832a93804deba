"""spec.bondConfig: Linux bonds (the kernel's bonding driver), their type and validation.

Why a module of its own: the bond kind keeps its pieces in its own rooms (desired/bond.py,
planner/bond.py, host/netlink/bond.py) so that registering it is a few lines; models/spec.py
keeps the list and models/parse.py calls `parse_bonds`.

Shape, after kubernetes-nmstate's `link-aggregation` (mode, options, port):
  bondConfig:
    - name: bond0
      mode: active-backup          # or 802.3ad, balance-xor, ...
      members: [eno1, eno2]        # physical NICs or VFs (or pci:, mac:, altname:)
      options: {miimon: 100, primary: eno1}           # active-backup, balance-tlb/-alb
      options: {miimon: 100, lacpRate: fast, xmitHashPolicy: layer3+4}   # 802.3ad
Addresses, routes, VLANs and the MTU of the bond come from interfaceConfig (name: bond0) as for
any interface; a member's MTU follows its bond's (the kernel sets it on enslaving), so a member
may not have an mtu, addresses or VLANs of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from plumber_agent import validation as v
from plumber_agent.models.codec import camel_json
from plumber_agent.models.ifref import canonical_ifref, check_ifref

# The kernel's mode names (bond_mode_tbl in drivers/net/bonding/bond_options.c) in the order of
# their numbers (BOND_MODE_ROUNDROBIN = 0 ...).
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")
LACP_RATES = ("slow", "fast")  # ad_lacp_rate: 0, 1
XMIT_HASH_POLICIES = ("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac")
LACP_MODES = ("802.3ad",)  # lacp_rate applies to these only
HASH_MODES = ("balance-xor", "802.3ad", "balance-tlb")  # xmit_hash_policy applies to these
PRIMARY_MODES = ("active-backup", "balance-tlb", "balance-alb")  # primary applies to these
MIIMON_MAX_MS = 2**31 - 1  # the kernel keeps miimon in an int
MAX_BOND_MEMBERS = 64

_BOND_KEYS = {"name", "mode", "members", "options"}
_OPTION_KEYS = {"miimon", "lacpRate", "xmitHashPolicy", "primary"}


@camel_json
@dataclass
class BondOptions:
    miimon: Optional[int] = None  # ms between MII link checks; 0 = off
    lacp_rate: Optional[str] = None
    xmit_hash_policy: Optional[str] = None
    primary: Optional[str] = None  # a member that is active whenever it is up


@camel_json
@dataclass
class BondConfig:
    name: str
    mode: str
    members: list[str] = field(default_factory=list)
    options: Optional[BondOptions] = None

    def settings(self) -> dict:
        """The bond's kernel settings as one mergeable value (unset options left out)."""
        opts = self.options or BondOptions()
        out = {"mode": self.mode, "miimon": opts.miimon, "lacp_rate": opts.lacp_rate,
               "xmit_hash_policy": opts.xmit_hash_policy, "primary": opts.primary}
        return {k: val for k, val in out.items() if val is not None}


def _not_one_of(value: Any, allowed: tuple) -> Optional[str]:
    return None if value in allowed else f"{value!r} is not one of {', '.join(allowed)}"


def _one_of(p, path: str, value: Any, allowed: tuple) -> bool:
    return p.check(path, _not_one_of(value, allowed))


def _validate_options(p, path: str, raw: Any, mode: Any, members: list) -> Optional[BondOptions]:
    from plumber_agent.models import parse as s  # the shared walkers (parse.py imports us)
    m = s._as_map(p, path, raw, _OPTION_KEYS)
    if m is None:
        return None
    out = BondOptions()
    if "miimon" in m and p.check(f"{path}.miimon", v.check_int_range(m["miimon"], 0,
                                                                       MIIMON_MAX_MS)):
        out.miimon = m["miimon"]
    for key, attr, allowed, modes in (
            ("lacpRate", "lacp_rate", LACP_RATES, LACP_MODES),
            ("xmitHashPolicy", "xmit_hash_policy", XMIT_HASH_POLICIES, HASH_MODES)):
        if key not in m or not _one_of(p, f"{path}.{key}", m[key], allowed):
            continue
        if mode in BOND_MODES and mode not in modes:
            p.add(f"{path}.{key}", f"applies to mode {' or '.join(modes)} only, not {mode}")
            continue
        setattr(out, attr, m[key])
    if "primary" in m:
        if mode in BOND_MODES and mode not in PRIMARY_MODES:
            p.add(f"{path}.primary", f"applies to mode {', '.join(PRIMARY_MODES)} only, "
                                     f"not {mode}")
        elif not p.check(f"{path}.primary", check_ifref(m["primary"])):
            pass
        elif canonical_ifref(m["primary"]) not in members:
            p.add(f"{path}.primary", f"{m['primary']!r} is not one of the bond's members")
        else:
            out.primary = canonical_ifref(m["primary"])
    return out


def _validate_bond(p, path: str, raw: dict) -> Optional[BondConfig]:
    from plumber_agent.models import parse as s
    before = len(p.items)
    name = s._required(p, f"{path}.name", raw.get("name"), v.check_ifname)
    mode = s._required(p, f"{path}.mode", raw.get("mode"), lambda m: _not_one_of(m, BOND_MODES))
    members: list[str] = []
    raw_members = s._as_list(p, f"{path}.members", raw.get("members"))
    if not raw_members:
        # An empty list (or what a server leaves after pruning a misspelt field) read as "no
        # members" would release every member the bond has.
        p.add(f"{path}.members", "a bond needs at least one member")
    elif len(raw_members) > MAX_BOND_MEMBERS:
        p.add(f"{path}.members", f"has {len(raw_members)} entries; at most "
                                 f"{MAX_BOND_MEMBERS} are allowed")
    else:
        for j, member in enumerate(raw_members):
            if not p.check(f"{path}.members[{j}]", check_ifref(member)):
                continue
            member = canonical_ifref(member)  # a NIC by pci:, mac: or altname: (models/ifref.py)
            if member == name:
                p.add(f"{path}.members[{j}]", "a bond cannot be its own member")
            elif member in members:
                p.add(f"{path}.members[{j}]", f"{member!r} is listed twice")
            else:
                members.append(member)
    options = (_validate_options(p, f"{path}.options", raw.get("options"), mode, members)
               if "options" in raw else None)
    if len(p.items) != before:
        return None
    return BondConfig(name=name, mode=mode, members=members, options=options)


def parse_bonds(p, path: str, raw: Any, *, interfaces: list, ovs: list) -> list[BondConfig]:
    """spec.bondConfig -> bonds; problems go to `p` (parse.py's collector), path-annotated.
    `interfaces` and `ovs` are the template's parsed interfaceConfig and ovsConfig: a member
    may carry nothing of its own there (its MTU follows the bond's, its traffic is the bond's)."""
    bonds: list[BondConfig] = []
    seen: dict[str, str] = {}  # bond or member name -> where it is named
    for bpath, m in p.objects(path, raw, _BOND_KEYS):
        bond = _validate_bond(p, bpath, m)
        if bond is None:
            continue
        clash = [n for n in [bond.name] + bond.members if n in seen]
        if clash:
            p.add(bpath, f"{clash[0]!r} is already named at {seen[clash[0]]} (a bond or a "
                         "member belongs to one bond)")
            continue
        seen[bond.name] = f"{bpath}.name"
        seen.update({member: f"{bpath}.members" for member in bond.members})
        bonds.append(bond)
    for where, _, problem in member_clashes(bonds, interfaces, ovs, path.rpartition(".")[0]
                                            or path):
        p.add(where, problem)
    return bonds


def member_clashes(bonds: list[BondConfig], interfaces: list, ovs: list,
                   base: str = "spec") -> list[tuple[str, tuple[str, int], str]]:
    """(path, (list, index) of the entry at fault, problem) for each member named twice or
    carrying something of its own in interfaceConfig or ovsConfig. Run by parse_bonds on the
    names as written, and by the merge again once references are resolved: one NIC may be
    written two ways (pci:... in members, its kernel name in interfaceConfig)."""
    out = []
    members: dict[str, str] = {}
    for i, bond in enumerate(bonds):
        for member in bond.members:
            if members.get(member, bond.name) != bond.name or bond.members.count(member) > 1:
                out.append((f"{base}.bondConfig[{i}].members", ("bondConfig", i),
                            f"{member!r} is named twice (a member belongs to one bond, once)"))
                break
            members[member] = bond.name
    for i, iface in enumerate(interfaces):
        bond = members.get(iface.name)
        if bond is not None and (iface.mtu is not None or iface.vlan or iface.ipv4 is not None
                                 or iface.ipv6 is not None):
            out.append((f"{base}.interfaceConfig[{i}]", ("interfaceConfig", i),
                        f"{iface.name} is a member of bond {bond}: its MTU follows the bond's "
                        f"and its traffic is the bond's; configure {bond} instead"))
    for i, bridge in enumerate(ovs):
        for port in bridge.interfaces():
            if port in members:
                out.append((f"{base}.ovsConfig[{i}].nodeInterface", ("ovsConfig", i),
                            f"{port} is a member of bond {members[port]}; attach "
                            f"{members[port]} instead"))
    return out
