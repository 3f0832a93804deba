"""Our rtnetlink parser reads a bond's IFLA_INFO_DATA and a member's IFLA_INFO_SLAVE_DATA as
pyroute2 (an independent encoder of the same uapi) writes them: this kernel has no bonding
module, so the real kernel's messages are read in tests/fullkernel/test_bond_kernel.py."""
from __future__ import annotations

import pytest

from plumber_agent.host.netlink import bond as nl_bond
from plumber_agent.host.netlink.messages import parse_link
from plumber_agent.models.bond_spec import BOND_MODES, LACP_RATES, XMIT_HASH_POLICIES
from plumber_agent.models.observed import ObservedBond, ObservedBondMember


def encoded(index: int, attrs: list) -> bytes:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("mode", BOND_MODES)
def test_a_bonds_settings_are_read_by_name(mode):
    data = encoded(7, [("IFLA_IFNAME", "bond0"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "bond"), ("IFLA_INFO_DATA", {"attrs": [
            ("IFLA_BOND_MODE", BOND_MODES.index(mode)), ("IFLA_BOND_MIIMON", 100),
            ("IFLA_BOND_AD_LACP_RATE", LACP_RATES.index("fast")),
            ("IFLA_BOND_XMIT_HASH_POLICY", XMIT_HASH_POLICIES.index("layer3+4")),
            ("IFLA_BOND_ACTIVE_SLAVE", 3), ("IFLA_BOND_PRIMARY", 4)]})]})])
    link, _parent, extras = parse_link(data, 16, len(data))
    assert link.kind == "bond"
    assert link.bond == ObservedBond(mode=mode, miimon=100, lacp_rate="fast",
                                     xmit_hash_policy="layer3+4")
    named = nl_bond.name_bond(link.bond, {k[5:]: v for k, v in extras.items()
                                          if k.startswith("bond_")}, {3: "n1", 4: "n2"})
    assert (named.active_member, named.primary) == ("n1", "n2")


@pytest.mark.parametrize("state, mii, expect", [
    (0, 0, ObservedBondMember(state="active", mii_status="up")),
    (1, 2, ObservedBondMember(state="backup", mii_status="down")),
    (1, 1, ObservedBondMember(state="backup", mii_status="fail")),
])
def test_a_members_state_is_read(state, mii, expect):
    data = encoded(3, [("IFLA_IFNAME", "n1"), ("IFLA_MASTER", 7), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_SLAVE_KIND", "bond"), ("IFLA_INFO_SLAVE_DATA", {"attrs": [
            ("IFLA_BOND_SLAVE_STATE", state), ("IFLA_BOND_SLAVE_MII_STATUS", mii)]})]})])
    link, _parent, extras = parse_link(data, 16, len(data))
    assert link.bond_member == expect and extras["master_index"] == 7 and link.bond is None


def test_a_bridge_port_is_not_a_bond_member():
    data = encoded(3, [("IFLA_IFNAME", "n1"), ("IFLA_MASTER", 7), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_SLAVE_KIND", "bridge")]})])
    link, _parent, _extras = parse_link(data, 16, len(data))
    assert link.bond_member is None


def test_the_driver_refuses_settings_it_cannot_send():
    from plumber_agent.errors import InvalidSpec
    from plumber_agent.validation import require
    for bad in ({"mode": "lacp"}, {"mode": "802.3ad", "lacp_rate": "quick"},
                {"mode": "802.3ad", "miimon": -1}, {"mode": "802.3ad", "arp_interval": 1},
                {"mode": "active-backup", "primary": "../x"}, "802.3ad"):
        with pytest.raises(InvalidSpec):
            require(nl_bond._check_settings, bad, "bond settings")
