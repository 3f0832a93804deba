"""Discovery of what interface references match (models/ifref.py): altnames (IFLA_PROP_LIST) and
the permanent MAC (IFLA_PERM_ADDRESS) read over real netlink in a throw-away namespace, kept
current by the discovery snapshot's notifications, and a reference resolved against what the
kernel reports before and after a rename."""
from __future__ import annotations

import struct

import pytest

from plumber_agent.desired import merge
from plumber_agent.host.netlink import Netlink, parse_link
from plumber_agent.host.netlink import messages as nl_mod
from plumber_agent.models.observed import ObservedHost
from tests.helpers.netns import ip, veth_pair
from tests.host.test_netlink import _link_body, _nla
from tests.support.fakehost import make_template

WAIT_BOUND_S = 10.0
privileged = pytest.mark.privileged


@pytest.fixture
def driver(netns_name):
    veth_pair(netns_name, "va", "vb")
    drv = Netlink(netns_name, wait_timeout_s=WAIT_BOUND_S)
    yield drv
    drv.close()


@privileged
def test_altnames_are_discovered_and_follow_changes(netns_name, driver):
    links, _ = driver.discover()
    assert links["va"].altnames == [] and links["vb"].altnames == []
    # Behind the driver's back, after its snapshot: the kernel's notification must say so.
    ip(netns_name, "link", "property", "add", "dev", "va", "altname", "uplink-a",
       "altname", "a-second-name-longer-than-ifnamsiz")
    links, _ = driver.discover()
    assert links["va"].altnames == ["a-second-name-longer-than-ifnamsiz", "uplink-a"]
    ip(netns_name, "link", "property", "del", "dev", "va", "altname", "a-second-name-longer-than-ifnamsiz")
    links, _ = driver.discover()
    assert links["va"].altnames == ["uplink-a"]
    assert links["vb"].altnames == []


@privileged
def test_a_veth_has_no_permanent_mac(driver):
    """veth addresses are random (NET_ADDR_RANDOM): the kernel sends no IFLA_PERM_ADDRESS, and
    discovery says unknown rather than inventing one from the current MAC."""
    links, _ = driver.discover()
    assert links["va"].mac and links["va"].perm_mac is None


def test_a_permanent_mac_is_parsed_beside_a_different_current_one():
    """What a bond member reports: its current MAC is the bond's, the permanent one its own."""
    attrs = (_nla(nl_mod.IFLA_ADDRESS, bytes.fromhex("020000000009"))
             + _nla(nl_mod.IFLA_PERM_ADDRESS, bytes.fromhex("B49691701939"))
             + _nla(nl_mod.IFLA_PROP_LIST | 0x8000,
                    _nla(nl_mod.IFLA_ALT_IFNAME, b"enp59s0f1np1\0")
                    + _nla(nl_mod.IFLA_ALT_IFNAME, b"data0\0")))
    body = _link_body(3, "eth1", attrs)
    link, _parent, _extras = parse_link(body, 0, len(body))
    assert (link.mac, link.perm_mac, link.altnames) == (
        "02:00:00:00:00:09", "b4:96:91:70:19:39", ["data0", "enp59s0f1np1"])
    assert struct.calcsize("=HH") == 4  # the NLA header _nla writes


@privileged
def test_a_reference_follows_the_kernel_rename(netns_name, driver):
    tpl = make_template("t", {"interfaceConfig": [{"name": "altname:uplink-a", "mtu": 1400}],
                              "routes": {"ipv4": [{"dst": "10.9.0.0/16",
                                                   "dev": "altname:uplink-a"}]}})
    ip(netns_name, "link", "property", "add", "dev", "va", "altname", "uplink-a")

    def resolved() -> tuple:
        links, routes = driver.discover()
        merged = merge([tpl], {}, ObservedHost(links=links, routes=routes, bridges={}))
        result = merged.results["t"]
        return (result.state, result.interface_references, sorted(merged.desired.links),
                [r.dev for r in merged.desired.routes.values()])

    assert resolved() == ("Applied", {"altname:uplink-a": "va"}, ["va"], ["va"])
    ip(netns_name, "link", "set", "va", "down")  # the kernel renames only a down device
    ip(netns_name, "link", "set", "va", "name", "nic7")
    ip(netns_name, "link", "set", "nic7", "up")
    assert resolved() == ("Applied", {"altname:uplink-a": "nic7"}, ["nic7"], ["nic7"])
    ip(netns_name, "link", "property", "del", "dev", "nic7", "altname", "uplink-a")
    state, references, links, devs = resolved()
    assert (state, references, links, devs) == ("Failed", {}, [], [])


@privileged
def test_an_altname_change_on_a_down_link_is_seen_by_the_next_full_dump(netns_name, driver):
    """The kernel notifies a property change only for an up device (netdev_state_change), so
    the snapshot learns of it from its periodic full dump (SNAPSHOT_MAX_AGE_S) or the next
    change of the link; udev gives altnames when the device appears, which is notified."""
    ip(netns_name, "link", "set", "va", "down")
    driver.discover()
    ip(netns_name, "link", "property", "add", "dev", "va", "altname", "late-name")
    links, _ = driver.discover(reuse=False)
    assert links["va"].altnames == ["late-name"]


NET_ADDR_PERM = 0  # sysfs addr_assign_type: the address is the device's permanent one


@privileged
def test_the_permanent_mac_of_this_machines_own_nics_is_read():
    """Read-only, in the initial namespace: a NIC whose address is its permanent one (sysfs
    addr_assign_type NET_ADDR_PERM; virtio-net with a MAC from the hypervisor is one) reports
    IFLA_PERM_ADDRESS, and discovery reads it; a random-address device (ifb, veth) has none."""
    import os

    drv = Netlink(None)
    try:
        links, _ = drv.discover()
    finally:
        drv.close()
    checked = []
    for name, link in links.items():
        try:
            with open(f"/sys/class/net/{name}/addr_assign_type") as f:
                assign = int(f.read())
        except (OSError, ValueError):
            continue
        if name == "lo" or not os.path.lexists(f"/sys/class/net/{name}/device"):
            continue
        if assign == NET_ADDR_PERM:
            assert link.perm_mac == link.mac, name
            checked.append(name)
    if not checked:
        pytest.skip("no device-backed NIC with its permanent address in this machine's "
                    "namespace (virtio-net, a PCI NIC): the crafted-message test covers parsing")
