"""The fake host's Linux bonds (mixed into fakehost.FakeNetlink), behaving as the bonding
driver does where the agent depends on it (drivers/net/bonding/bond_main.c, bond_options.c):
  - a bond is created down, with miimon 100, lacp_rate slow and xmit_hash_policy layer2 unless
    told (bond_check_params' defaults); the mode changes only without members (EPERM);
  - a member must be down to be enslaved (EPERM: "Device can not be enslaved while up"), and
    have no master (EBUSY); enslaving opens it, gives it the bond's MTU and, for the first
    member, its MAC to the bond; a bond MTU change sets every member's;
  - releasing (and deleting the bond) closes the member and puts back the MTU it had;
  - active-backup: the primary (when a member) or else the first member is active, the others
    backup; in the other modes every member is active.
"""
from __future__ import annotations

import errno
from typing import Optional

from plumber_agent import validation as v
from plumber_agent.models.bond_spec import BOND_MODES
from plumber_agent.models.observed import ObservedBond, ObservedBondMember, ObservedLink

DEFAULTS = {"miimon": 100, "lacp_rate": "slow", "xmit_hash_policy": "layer2"}
ONE_ACTIVE_MODES = ("active-backup",)


def _error(code: int, message: str):
    from tests.support.fakehost import host_error
    return host_error(code, message)


def members_of(host, bond: str) -> list[ObservedLink]:
    return [link for link in host.links.values() if link.master == bond
            and link.bond_member is not None]


def refresh(host, bond: str) -> None:
    """Recompute the members' states and the active member (bond_select_active_slave)."""
    link = host.links.get(bond)
    if link is None or link.bond is None:
        return
    members = members_of(host, bond)
    primary = host.bond_primaries.get(bond)
    if link.bond.mode in ONE_ACTIVE_MODES:
        names = [m.ifname for m in members]
        active = primary if primary in names else (names[0] if names else None)
    else:
        active = None
    for m in members:
        state = "active" if active is None or m.ifname == active else "backup"
        m.bond_member = ObservedBondMember(state=state, mii_status="up")
    link.bond = ObservedBond(mode=link.bond.mode, miimon=link.bond.miimon,
                             lacp_rate=link.bond.lacp_rate,
                             xmit_hash_policy=link.bond.xmit_hash_policy,
                             primary=primary if primary in [m.ifname for m in members] else None,
                             active_member=active)


def release(host, member: ObservedLink) -> None:
    """__bond_release_one: out of the bond, closed, its own MTU back."""
    bond = member.master
    member.master, member.bond_member = None, None
    member.admin_up, member.oper_state = False, "down"
    member.ipv6 = [a for a in member.ipv6 if not a.startswith("fe80:")]
    member.mtu = host.bond_original_mtu.pop(member.ifname, member.mtu)
    refresh(host, bond)


def bond_deleted(host, bond: str) -> None:
    for member in members_of(host, bond):
        release(host, member)
    host.bond_primaries.pop(bond, None)


def bond_mtu_set(host, bond: str, mtu: int) -> None:
    """bond_change_mtu: every member gets the bond's MTU."""
    for member in members_of(host, bond):
        member.mtu = mtu


class FakeBondNetlink:
    """The bond verbs of the fake netlink driver (self.h is the FakeHost)."""

    def ensure_bond(self, ifname: str, settings: dict) -> None:
        v.require(v.check_ifname, ifname, "bond name")
        self.h.calls.append(("ensure_bond", ifname, settings.get("mode")))
        self.h._maybe_fail("ensure_bond", ifname)
        if not self.h.bonding_available:
            from plumber_agent.errors import NotAvailable
            raise NotAvailable(f"cannot create bond {ifname}: no bonding module")
        mode = settings["mode"]
        if mode not in BOND_MODES:
            raise _error(errno.EINVAL, f"unknown bond mode {mode!r}")
        link = self.h.links.get(ifname)
        if link is None:
            link = self.h.add_link(ifname, kind="bond", up=False)
            link.bond = ObservedBond(mode=mode, **DEFAULTS)
        elif link.kind != "bond":
            raise _error(errno.EEXIST, f"{ifname} exists and is not a bond")
        elif link.bond.mode != mode:
            if members_of(self.h, ifname):
                raise _error(errno.EPERM, f"bond {ifname} has members: its mode stays "
                                          f"{link.bond.mode}")
        values = {"mode": mode, "miimon": link.bond.miimon, "lacp_rate": link.bond.lacp_rate,
                  "xmit_hash_policy": link.bond.xmit_hash_policy}
        values.update({k: val for k, val in settings.items() if k in values})
        if "primary" in settings:
            self.h._need_link(settings["primary"])  # IFLA_BOND_PRIMARY is an ifindex
            self.h.bond_primaries[ifname] = settings["primary"]
        link.bond = ObservedBond(**values)
        refresh(self.h, ifname)

    def enslave(self, member: str, bond: str) -> None:
        """The driver's enslave: down first (the kernel wants it down), then IFLA_MASTER."""
        self.h.calls.append(("enslave", member, bond))
        self.h._maybe_fail("enslave", member)
        bond_link = self.h._need_link(bond)
        link = self.h._need_link(member)
        if link.master == bond and bond_link.kind == "bond":
            return
        if link.admin_up and link.master is None:
            self.set_down(member)
        self.kernel_enslave(member, bond)

    def set_down(self, ifname: str) -> None:
        """ip link set IFNAME down: its routes go, and its IPv6 link-local address."""
        link = self.h._need_link(ifname)
        link.admin_up, link.oper_state = False, "down"
        link.ipv6 = [a for a in link.ipv6 if not a.startswith("fe80:")]
        self.h.routes = [r for r in self.h.routes if r.dev != ifname]

    def kernel_enslave(self, member: str, bond: str) -> None:
        """IFLA_MASTER = bond, as the kernel answers it (bond_enslave)."""
        bond_link = self.h._need_link(bond)
        link = self.h._need_link(member)
        if bond_link.kind != "bond":
            raise _error(errno.EOPNOTSUPP, f"{bond} is not a bond")
        if link.master == bond:
            return
        if link.master is not None:
            raise _error(errno.EBUSY, f"{member} already has master {link.master}")
        if link.admin_up:
            raise _error(errno.EPERM, f"{member}: Device can not be enslaved while up")
        first = not members_of(self.h, bond)
        self.h.bond_original_mtu[member] = link.mtu
        link.master = bond
        link.mtu = bond_link.mtu
        link.admin_up, link.oper_state = True, "up"  # bond_enslave opens it
        if first:
            bond_link.mac = link.mac
        link.bond_member = ObservedBondMember()
        refresh(self.h, bond)

    def release_member(self, member: str, *, up: bool) -> None:
        self.h.calls.append(("release_member", member, up))
        self.h._maybe_fail("release_member", member)
        link = self.h.links.get(member)
        if link is None:
            return
        if link.master is not None:
            release(self.h, link)
        if up:
            self.set_up(member)

    def bond_of(self, member: str) -> Optional[str]:
        link = self.h.links.get(member)
        return link.master if link else None
