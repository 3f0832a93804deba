"""Linux bonds over rtnetlink: the bond's IFLA_INFO_DATA and a member's IFLA_INFO_SLAVE_DATA
parsed (for discovery), and the driver's bond verbs (`BondLinks`, mixed into driver.Netlink).

Why its own module: the bond kind keeps its pieces in its own rooms. The attribute numbers are
the kernel's uapi (include/uapi/linux/if_link.h: IFLA_BOND_*, IFLA_BOND_SLAVE_*); the value
names are those of the bonding driver's option tables (drivers/net/bonding/bond_options.c),
as `ip -d link` and /sys/class/net/BOND/bonding/* print them.

What the kernel requires of a member (bond_enslave in drivers/net/bonding/bond_main.c): it is
down when enslaved (else EPERM, "Device can not be enslaved while up"); the kernel opens it,
gives it the bond's MTU, and on release (__bond_release_one) closes it and puts back its MTU.
"""
from __future__ import annotations

import errno
import struct
from typing import Optional

from plumber_agent.errors import HostError, NotAvailable
from plumber_agent.models.bond_spec import BOND_MODES, LACP_RATES, XMIT_HASH_POLICIES
from plumber_agent.models.observed import ObservedBond, ObservedBondMember
from plumber_agent.validation import check_ifname, check_int_range, require

IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 4, 5
IFLA_BOND_MODE, IFLA_BOND_ACTIVE_SLAVE, IFLA_BOND_MIIMON = 1, 2, 3
IFLA_BOND_PRIMARY, IFLA_BOND_XMIT_HASH_POLICY, IFLA_BOND_AD_LACP_RATE = 11, 14, 21
IFLA_BOND_SLAVE_STATE, IFLA_BOND_SLAVE_MII_STATUS = 1, 2
SLAVE_STATES = ("active", "backup")  # BOND_STATE_ACTIVE, BOND_STATE_BACKUP
MII_STATES = ("up", "fail", "down", "back")  # BOND_LINK_UP, _FAIL, _DOWN, _BACK
BOND_MISSING_MESSAGE = "this kernel has no bonding support (module bonding)"

_NLA = struct.Struct("=HH")
_U8 = struct.Struct("=B")
_U32 = struct.Struct("=I")
_NLA_TYPE_MASK = 0x3FFF


def _named(table: tuple, number: int) -> str:
    return table[number] if 0 <= number < len(table) else str(number)


def _attrs(data: bytes, start: int, end: int):
    """(type, value start, value end) of each attribute in data[start:end]."""
    pos = start
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            return
        yield atype & _NLA_TYPE_MASK, pos + 4, pos + alen
        pos += (alen + 3) & ~3


def parse_bond_data(data: bytes, start: int, end: int) -> tuple[ObservedBond, dict]:
    """A bond's IFLA_INFO_DATA -> (settings, {"primary_index", "active_index"}): the two
    ifindexes are named by the caller, who knows every link (snapshot.py)."""
    values: dict = {}
    indexes: dict = {}
    for atype, v, e in _attrs(data, start, end):
        if atype == IFLA_BOND_MODE and e - v >= 1:
            values["mode"] = _named(BOND_MODES, data[v])
        elif atype == IFLA_BOND_MIIMON and e - v >= 4:
            values["miimon"] = _U32.unpack_from(data, v)[0]
        elif atype == IFLA_BOND_AD_LACP_RATE and e - v >= 1:
            values["lacp_rate"] = _named(LACP_RATES, data[v])
        elif atype == IFLA_BOND_XMIT_HASH_POLICY and e - v >= 1:
            values["xmit_hash_policy"] = _named(XMIT_HASH_POLICIES, data[v])
        elif atype == IFLA_BOND_PRIMARY and e - v >= 4:
            indexes["primary_index"] = _U32.unpack_from(data, v)[0]
        elif atype == IFLA_BOND_ACTIVE_SLAVE and e - v >= 4:
            indexes["active_index"] = _U32.unpack_from(data, v)[0]
    return ObservedBond(**values), indexes


def parse_bond_member(data: bytes, start: int, end: int) -> ObservedBondMember:
    """A bond member's IFLA_INFO_SLAVE_DATA -> its state."""
    values: dict = {}
    for atype, v, e in _attrs(data, start, end):
        if atype == IFLA_BOND_SLAVE_STATE and e - v >= 1:
            values["state"] = _named(SLAVE_STATES, data[v])
        elif atype == IFLA_BOND_SLAVE_MII_STATUS and e - v >= 1:
            values["mii_status"] = _named(MII_STATES, data[v])
    return ObservedBondMember(**values)


def name_bond(bond: ObservedBond, indexes: dict, names: dict) -> ObservedBond:
    """`bond` with its primary and active member named (`names`: ifindex -> name)."""
    primary = names.get(indexes.get("primary_index") or 0)
    active = names.get(indexes.get("active_index") or 0)
    if primary is None and active is None:
        return bond
    return ObservedBond(mode=bond.mode, miimon=bond.miimon, lacp_rate=bond.lacp_rate,
                        xmit_hash_policy=bond.xmit_hash_policy, primary=primary,
                        active_member=active)


def _check_settings(settings) -> Optional[str]:
    if not isinstance(settings, dict) or settings.get("mode") not in BOND_MODES:
        return f"{settings!r} has no bond mode of {', '.join(BOND_MODES)}"
    unknown = set(settings) - {"mode", "miimon", "lacp_rate", "xmit_hash_policy", "primary"}
    if unknown:
        return f"unknown bond settings {', '.join(sorted(unknown))}"
    if "miimon" in settings and check_int_range(settings["miimon"], 0, 2**31 - 1):
        return f"miimon {settings['miimon']!r} is not 0..2147483647"
    if settings.get("lacp_rate", "slow") not in LACP_RATES:
        return f"lacp_rate {settings['lacp_rate']!r} is not one of {', '.join(LACP_RATES)}"
    if settings.get("xmit_hash_policy", "layer2") not in XMIT_HASH_POLICIES:
        return f"xmit_hash_policy {settings['xmit_hash_policy']!r} is unknown"
    if "primary" in settings and check_ifname(settings["primary"]):
        return f"primary: {check_ifname(settings['primary'])}"
    return None


class BondLinks:
    """The bond verbs of driver.Netlink (uses its plumbing: _enter, _link, _require_link,
    _write, _wait_for, set_up, _where)."""

    def _bond_request(self, settings: dict, *, with_mode: bool) -> dict:
        """pyroute2's IFLA_INFO_DATA keywords for `settings` (names -> the kernel's numbers)."""
        out: dict = {}
        if with_mode:
            out["bond_mode"] = BOND_MODES.index(settings["mode"])
        if "miimon" in settings:
            out["bond_miimon"] = int(settings["miimon"])
        if "lacp_rate" in settings:
            out["bond_ad_lacp_rate"] = LACP_RATES.index(settings["lacp_rate"])
        if "xmit_hash_policy" in settings:
            out["bond_xmit_hash_policy"] = XMIT_HASH_POLICIES.index(settings["xmit_hash_policy"])
        if "primary" in settings:
            out["bond_primary"] = self._require_link(settings["primary"],
                                                     "setting a bond's primary")[0].index
        return out

    def _bond_is(self, ifname: str, settings: dict) -> bool:
        """Does the bond show `settings`? A primary counts only once it is a member: the
        kernel keeps the name of a primary not enslaved yet and reports none."""
        found = self._link(ifname)
        if found is None or found[0].kind != "bond" or found[0].bond is None:
            return False
        bond, extras = found[0].bond, found[2]
        for key, want in settings.items():
            if key != "primary":
                if getattr(bond, key) != want:
                    return False
                continue
            member = self._link(want)
            if member is not None and member[2].get("master_index") == found[0].index \
                    and extras.get("bond_primary_index") != member[0].index:
                return False
        return True

    def ensure_bond(self, ifname: str, settings: dict) -> None:
        """ip link add IFNAME type bond mode M [miimon N] [lacp_rate R] [xmit_hash_policy P]
        [primary DEV]; on an existing bond of that mode, ip link set IFNAME type bond ... (an
        lacp_rate change needs the bond down for a moment: BOND_OPTFLAG_IFDOWN)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        require(_check_settings, settings, "bond settings")
        what = f"bond {ifname} (mode {settings['mode']})"
        existing = self._link(ifname)
        if existing is None:
            request = self._bond_request(settings, with_mode=True)
            code = self._write(f"creating {what}",
                               lambda ipr: ipr.link("add", ifname=ifname, kind="bond", **request),
                               tolerate=(errno.EEXIST, errno.EOPNOTSUPP))
            if code == errno.EOPNOTSUPP:
                raise NotAvailable(f"cannot create {what}: {BOND_MISSING_MESSAGE}")
            if code == 0:
                self._wait_for(f"creating {what}", lambda: self._bond_is(ifname, settings))
                return
            existing = self._link(ifname)  # EEXIST: made meanwhile; compared below
            if existing is None:
                raise HostError(f"creating {what} in {self._where}: it exists and vanished")
        link, _parent, extras = existing
        if link.kind != "bond" or link.bond is None:
            raise HostError(f"link {ifname!r} already exists in {self._where} and is of kind "
                            f"{link.kind or 'plain device'}, not a bond; it is left untouched")
        if link.bond.mode != settings["mode"]:
            raise HostError(f"bond {ifname!r} in {self._where} is in mode {link.bond.mode}, not "
                            f"{settings['mode']}: the kernel changes the mode of a bond without "
                            "members only; it is left untouched")
        if self._bond_is(ifname, settings):
            return
        request = self._bond_request(settings, with_mode=False)
        index = link.index
        bounce = (link.admin_up and "lacp_rate" in settings
                  and link.bond.lacp_rate != settings["lacp_rate"])
        if bounce:
            self._write(f"setting {ifname} down to change its lacp_rate",
                        lambda ipr: ipr.link("set", index=index, state="down"))
        self._write(f"setting {what}",
                    lambda ipr: ipr.link("set", index=index, kind="bond", **request))
        if bounce:
            self.set_up(ifname)
        self._wait_for(f"setting {what}", lambda: self._bond_is(ifname, settings))

    def enslave(self, member: str, bond: str) -> None:
        """ip link set MEMBER down; ip link set MEMBER master BOND (the kernel opens it again
        and gives it the bond's MTU). Already in BOND: nothing to do."""
        self._enter()
        require(check_ifname, member, "member")
        require(check_ifname, bond, "bond")
        what = f"enslaving {member} to bond {bond}"
        bond_index = self._require_link(bond, what)[0].index
        link, _parent, extras = self._require_link(member, what)
        master = extras.get("master_index")
        if master == bond_index:
            return
        if master:
            raise HostError(f"{what} in {self._where}: {member} already has a master "
                            f"(ifindex {master}); it is left untouched")
        index = link.index
        if link.admin_up:
            self._write(f"setting {member} down to enslave it to {bond}",
                        lambda ipr: ipr.link("set", index=index, state="down"))
        self._write(what, lambda ipr: ipr.link("set", index=index, master=bond_index))

        def enslaved() -> bool:
            found = self._link(member)
            return bool(found and found[2].get("master_index") == bond_index)
        self._wait_for(what, enslaved)

    def release_member(self, member: str, *, up: bool) -> None:
        """ip link set MEMBER nomaster (the kernel closes it and puts back its MTU); then
        ip link set MEMBER up when `up` (its state before it was enslaved). Absent is fine."""
        self._enter()
        require(check_ifname, member, "member")
        found = self._link(member)
        if found is None:
            return
        index = found[0].index
        if found[2].get("master_index"):
            what = f"releasing {member} from its bond"
            self._write(what, lambda ipr: ipr.link("set", index=index, master=0),
                        tolerate=(errno.ENODEV,))

            def released() -> bool:
                again = self._link(member)
                return again is None or not again[2].get("master_index")
            self._wait_for(what, released)
        if up:
            self.set_up(member)
