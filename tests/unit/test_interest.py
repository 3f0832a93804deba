"""Classification of kernel events and status changes (plumber_agent/interest.py): managed,
depended on, unmanaged, on real merged templates over the seed's host, plus the status filter
that never leaves out what a template manages."""
from __future__ import annotations

import pytest

from plumber_agent.desired import merge
from plumber_agent.interest import (DEPENDED_ON, EVERYTHING, MANAGED, UNMANAGED, StatusFilter,
                                    classify, interest_of, managed_view)
from plumber_agent.models.events import EventKind, KernelEvent
from plumber_agent.models.observed import ObservedRoute
from plumber_agent.models.status import to_api
from plumber_agent.status_builder import build_status
from tests.support.fakehost import Node, make_template, seed_host

# One template of every kind that names host objects: an MTU and addresses (eno1), a VLAN on
# eno2, a route through a gateway (on eno1's subnet) and one by device, an OVS bridge on
# enp3s0f1, SR-IOV VFs on enp3s0f0.
SPEC = {
    "interfaceConfig": [{"name": "eno1", "mtu": 9000, "ipv4": {"address": ["192.168.50.2/24"]}},
                        {"name": "eno2", "vlan": [{"id": 100}]}],
    "routes": {"ipv4": [{"dst": "10.60.0.0/16", "gw": "192.168.50.1"},
                        {"dst": "10.61.0.0/16", "dev": "eno1"},
                        {"dst": "10.62.0.0/16", "gw": "10.244.7.7"}],
               "ipv6": [{"dst": "2001:db8:60::/48", "gw": "fe80::1", "dev": "eno1"}]},
    "ovsConfig": [{"bridgeName": "br-data", "nodeInterface": "enp3s0f1"}],
    "sriovConfig": [{"pfName": "enp3s0f0", "numVfs": 2}],
}


@pytest.fixture(scope="module")
def host():
    fake = seed_host()
    fake.add_link("cali1a2b3c4d5e6", kind="veth")
    fake.add_link("veth9f8e7d6c", kind="veth")
    fake.add_route(dst="10.244.1.5/32", dev="cali1a2b3c4d5e6", proto="boot")
    fake.add_route(dst="10.244.1.6/32", dev="veth9f8e7d6c", proto="boot")
    return fake


def _observed(fake):
    """What discovery finds on `fake` (links, routes, PFs and VFs, OVS), through the real Host."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="interest-") as state_dir:
        node = Node(fake, state_dir)
        try:
            return node.host.discover()
        finally:
            node.ledger.release_lock()


@pytest.fixture(scope="module")
def interest(host):
    observed = _observed(host)
    merged = merge([make_template("all", SPEC)], {}, observed)
    assert set(merged.desired.routes) and merged.desired.bridges and merged.desired.vlans
    records = {"mtu:enp3s0f1": {"value": 1500}, "route:4:10.70.0.0/16:0": {}}  # cleanup owns these
    return interest_of(merged.desired, observed, records)


def link(name, *, index=None, kind="veth", removed=False):
    return KernelEvent(EventKind.LINK, f"link {name}", ifname=name, index=index, link_kind=kind,
                       removed=removed)


def address(cidr, dev, *, removed=False):
    return KernelEvent(EventKind.ADDRESS, f"address {cidr} on {dev}", ifname=dev, cidr=cidr,
                       family=6 if ":" in cidr else 4, removed=removed)


def route(dst, dev, *, gw=None, index=None):
    return KernelEvent(EventKind.ROUTE, f"route {dst} dev {dev}", ifname=dev, index=index,
                       dst=dst, gw=gw, family=6 if dst and ":" in dst else 4)


@pytest.mark.parametrize("event", [
    link("eno1", kind=None),  # its MTU and addresses are configured
    link("eno2.100", kind="vlan", removed=True),  # a managed VLAN deleted behind our back
    link("br-data", kind="openvswitch"),  # the bridge's own netdev
    link("enp3s0f0", kind=None),  # a PF whose VFs a template sets
    link("enp3s0f1", kind=None),  # an MTU the ledger still has to put back (cleanup)
    address("192.168.50.2/24", "eno1", removed=True),
    address("10.9.9.9/32", "eno1"),  # any address on a managed interface: the final-state rule
    route("10.60.0.0/16", "cali1a2b3c4d5e6", gw="10.244.1.5"),  # a managed destination, any dev
    route("10.70.0.0/16", "eno2"),  # a route the ledger still owns
    route("10.1.0.0/16", "eno1"),  # any route on a managed device (its connected routes too)
])
def test_managed_objects(interest, event):
    assert classify(event, interest) is MANAGED


@pytest.mark.parametrize("event", [
    link("eno2", kind=None),  # the managed VLAN's parent
    address("192.168.50.9/24", "eno3"),  # an address that makes the gateway 192.168.50.1 reachable
    route("192.168.50.0/24", "eno3"),  # the connected route that does the same
    route("10.1.0.0/16", "eno2"),  # a route on the VLAN's parent
    link("eth7", kind=None),  # a new device netdev while a template manages SR-IOV: maybe a VF
])
def test_depended_on_objects(interest, event):
    assert classify(event, interest) is DEPENDED_ON


def test_an_ovs_ports_interface_is_depended_on(host):
    observed = _observed(host)
    merged = merge([make_template("ovs", {"ovsConfig": [
        {"bridgeName": "br-data", "nodeInterface": "enp3s0f1"}]})], {}, observed)
    only_ovs = interest_of(merged.desired, observed, {})
    assert classify(link("enp3s0f1", kind=None), only_ovs) is DEPENDED_ON
    assert classify(link("br-data", kind="openvswitch"), only_ovs) is MANAGED
    assert classify(link("eth7", kind=None), only_ovs) is UNMANAGED  # no SR-IOV managed here


def test_a_linux_bridge_and_its_ports_are_managed(host):
    observed = _observed(host)
    merged = merge([make_template("lb", {"linuxBridgeConfig": [
        {"name": "br-vlans", "vlanFiltering": True,
         "ports": [{"name": "enp3s0f1", "pvid": 10}]}]})], {}, observed)
    only_bridge = interest_of(merged.desired, observed, {})  # before any ledger record
    assert classify(link("br-vlans", kind="bridge"), only_bridge) is MANAGED
    assert classify(link("enp3s0f1", kind=None), only_bridge) is MANAGED  # a VLAN change too
    assert classify(link("eth7", kind=None), only_bridge) is UNMANAGED


@pytest.mark.parametrize("event", [
    link("cali1a2b3c4d5e6"),
    link("cali1a2b3c4d5e6", removed=True),
    route("10.244.1.5/32", "cali1a2b3c4d5e6"),
    route("fe80::/64", "cali1a2b3c4d5e6"),  # its link-local route
    address("fe80::ecee:eeff:feee:eeee/64", "cali1a2b3c4d5e6"),  # holds fe80::1, but link-local
    link("veth9f8e7d6c"),
    route(None, "cali1a2b3c4d5e6"),  # a default route holds no gateway: gateways are on-link
    address("10.244.1.1/32", None),  # an address on a link already gone (name unknown)
])
def test_pod_churn_is_unmanaged(interest, event):
    assert classify(event, interest) is UNMANAGED


def test_an_unmanaged_looking_route_that_holds_a_managed_routes_nexthop(interest):
    """A pod-style /32 on a cali* veth, except that its destination is the gateway of the
    managed route 10.62.0.0/16 via 10.244.7.7: without it that route has no next hop."""
    nexthop = route("10.244.7.7/32", "cali7f7f7f7f7f7")
    neighbour = route("10.244.7.8/32", "cali7f7f7f7f7f7")
    assert classify(nexthop, interest) is DEPENDED_ON
    assert classify(neighbour, interest) is UNMANAGED
    assert classify(address("10.244.7.1/24", "cali7f7f7f7f7f7"), interest) is DEPENDED_ON
    assert classify(address("10.244.8.1/24", "cali7f7f7f7f7f7"), interest) is UNMANAGED


def test_a_renamed_or_vanished_managed_link_is_still_known_by_its_index(host, interest):
    eno1_index = host.links["eno1"].index
    assert classify(link("tmp-renamed", index=eno1_index, kind=None), interest) is MANAGED
    assert classify(route("10.3.0.0/16", None, index=eno1_index), interest) is MANAGED
    assert classify(link("tmp-other", index=9999), interest) is UNMANAGED


def test_before_a_pass_or_while_not_converged_everything_is_managed(host):
    observed = _observed(host)
    merged = merge([make_template("all", SPEC)], {}, observed)
    moving = interest_of(merged.desired, observed, {}, settled=False)
    for interest in (EVERYTHING, moving):
        assert classify(link("cali1a2b3c4d5e6"), interest) is MANAGED
    lost = KernelEvent(EventKind.LOST, "lost")
    assert classify(lost, interest_of(merged.desired, observed, {})) is MANAGED


def test_without_templates_every_kernel_event_is_unmanaged(host):
    observed = _observed(host)
    idle = interest_of(merge([], {}, observed).desired, observed, {})
    for event in (link("eno1", kind=None), route(None, "bond0", gw="145.40.65.94"),
                  address("145.40.65.95/31", "bond0")):
        assert classify(event, idle) is UNMANAGED


# ------------------------------------------------------------------------------ status changes

def _status(fake, interest, templates=(), status_filter=StatusFilter()):
    from plumber_agent.models.status import TemplateStatus
    observed = _observed(fake)
    return to_api(build_status(observed, [TemplateStatus(name=n, state=s) for n, s in templates],
                               exclusion=status_filter.exclusion(observed.links, interest)))


def test_managed_view_ignores_pod_churn_and_sees_managed_changes(interest):
    before = seed_host()
    churned = seed_host()
    churned.add_link("calia0a0a0a0a0a", kind="veth")
    churned.add_route(dst="10.244.9.9/32", dev="calia0a0a0a0a0a")
    view = managed_view(_status(before, interest), interest)
    assert _status(churned, interest) != _status(before, interest)
    assert managed_view(_status(churned, interest), interest) == view
    mtu = seed_host()
    mtu.links["eno1"].mtu = 9000
    assert managed_view(_status(mtu, interest), interest) != view
    parent = seed_host()
    parent.links["eno2"].oper_state = "down"  # depended on: the VLAN's parent
    assert managed_view(_status(parent, interest), interest) != view
    nexthop = seed_host()
    nexthop.add_route(dst="10.244.7.7/32", dev="calia0a0a0a0a0a")
    assert managed_view(_status(nexthop, interest), interest) != view
    result = _status(before, interest, templates=[("all", "Failed")])
    assert managed_view(result, interest) != view
    assert managed_view(_status(churned, EVERYTHING), EVERYTHING) != managed_view(
        _status(before, EVERYTHING), EVERYTHING)


# ------------------------------------------------------------------------------ the status filter

def test_status_filter_parses_globs_and_refuses_impossible_names():
    assert StatusFilter.parse("veth*, lxc*,,").patterns == ("veth*", "lxc*")
    assert StatusFilter.parse("").patterns == ()
    for bad in ("veth *", "a/b*", "x\x00"):
        with pytest.raises(ValueError, match="interface pattern"):
            StatusFilter.parse(bad)


def test_excluded_interfaces_and_their_routes_are_left_out_unless_a_template_needs_them(host):
    fake = seed_host()
    fake.add_link("veth0aaaa", kind="veth")
    fake.add_link("vethgw", kind="veth")  # a template routes through it
    fake.add_link("cali1a2b3c4d5e6", kind="veth")
    fake.add_route(dst="10.244.1.6/32", dev="veth0aaaa")
    fake.add_route(dst="10.80.0.0/16", dev="veth0aaaa")  # a managed destination
    fake.add_route(dst="10.244.1.5/32", dev="cali1a2b3c4d5e6")
    observed = _observed(fake)
    merged = merge([make_template("r", {"routes": {"ipv4": [{"dst": "10.81.0.0/16", "dev": "vethgw"},
                                                            {"dst": "10.80.0.0/16", "dev": "eno1"}]}})],
                   {}, observed)
    interest = interest_of(merged.desired, observed, {})
    status = _status(fake, interest, status_filter=StatusFilter.parse("veth*"))
    names = {entry["pfName"] for entry in status["interfaceStatus"]}
    assert "veth0aaaa" not in names
    assert {"vethgw", "cali1a2b3c4d5e6", "eno1"} <= names  # depended on; not matched; managed
    routes = {(r.get("dst"), r.get("dev")) for r in status["routes"]["ipv4"]}
    assert ("10.244.1.6/32", "veth0aaaa") not in routes
    assert ("10.80.0.0/16", "veth0aaaa") in routes  # a template manages that destination
    assert ("10.244.1.5/32", "cali1a2b3c4d5e6") in routes  # the seed's example lists cali* routes
    assert status["truncated"]["excludedInterfaces"] == ["veth*"]
    assert status["summary"]["interfaces"] == len(status["interfaceStatus"])
    unfiltered = _status(fake, interest)
    assert "veth0aaaa" in {e["pfName"] for e in unfiltered["interfaceStatus"]}
    assert "truncated" not in unfiltered


def test_exclusion_keeps_a_route_reaching_a_managed_gateway():
    fake = seed_host()
    fake.add_link("veth1", kind="veth")
    observed = _observed(fake)
    merged = merge([make_template("r", {"routes": {"ipv4": [{"dst": "10.90.0.0/16",
                                                             "gw": "10.244.3.3"}]}})], {}, observed)
    interest = interest_of(merged.desired, observed, {})
    exclusion = StatusFilter.parse("veth*").exclusion(observed.links, interest)
    assert exclusion.links == {"veth1"}
    assert exclusion.keeps_route(ObservedRoute(family=4, dst="10.244.3.3/32", dev="veth1"))
    assert not exclusion.keeps_route(ObservedRoute(family=4, dst="10.244.3.4/32", dev="veth1"))


def test_a_reference_waiting_for_its_nic_makes_device_netdev_events_count(host):
    """A pci:/mac:/altname: reference matching nothing: a device netdev appearing or changing
    (hot-plugged, renamed, given an altname) may be the one, so it starts a pass at once; a
    veth does not. Once every reference resolves, such events are unmanaged again."""
    observed = _observed(host)
    waiting = merge([make_template("w", {"interfaceConfig": [
        {"name": "altname:not-yet", "mtu": 9000}]})], {}, observed)
    assert waiting.desired.unresolved_references
    interest = interest_of(waiting.desired, observed, {})
    assert classify(link("eth7", kind=None), interest) is DEPENDED_ON
    assert classify(link("veth123", kind="veth"), interest) is UNMANAGED
    resolved = merge([make_template("w", {"interfaceConfig": [
        {"name": "pci:0000:01:00.0", "mtu": 9000}]})], {}, observed)
    assert not resolved.desired.unresolved_references
    assert classify(link("eth7", kind=None), interest_of(resolved.desired, observed, {})) \
        is UNMANAGED
