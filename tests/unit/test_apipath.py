"""The API-path guard's pure half (planner/apipath.py): the model of `ip route get` after a
planned change, the uplink it protects, and what the guard refuses, lets through or marks for
the probe. The kernel half (the same cases on real netlink) is tests/faults/test_api_path.py."""
from __future__ import annotations

import pytest

from plumber_agent.desired import merge
from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.observed import (ObservedBridge, ObservedHost, ObservedLink,
                                           ObservedOvsInterface, ObservedOvsPort, ObservedPf,
                                           ObservedRoute, ObservedVf)
from plumber_agent.models.plan import ApiServerPath
from plumber_agent.planner import plan
from plumber_agent.planner.apipath import NO_ROUTE, Hop, PathModel, uplink_of
from tests.support.fakehost import make_template

API = "10.250.0.10"
KERNEL_PATH = ApiServerPath(API, dev="eno1", src="10.202.0.2", gw="10.202.0.1", table=254)


def link(name, *cidrs, index=1, **kw) -> ObservedLink:
    return ObservedLink(ifname=name, index=index, mtu=1500, admin_up=True, oper_state="up",
                        ipv4=sorted(c for c in cidrs if ":" not in c),
                        ipv6=sorted(c for c in cidrs if ":" in c), **kw)


def connected(dev, net, src) -> ObservedRoute:
    return ObservedRoute(4, dst=net, dev=dev, src=src, metric=0, proto="kernel", scope=253)


def node(**extra_links) -> ObservedHost:
    """eno1 carries the default route to the API server; eth1 is a second NIC."""
    links = {"eno1": link("eno1", "10.202.0.2/24", index=2),
             "eth1": link("eth1", "10.204.0.2/24", index=3)}
    links.update(extra_links)
    routes = [ObservedRoute(4, dst=None, gw="10.202.0.1", dev="eno1", metric=0, proto="boot"),
              connected("eno1", "10.202.0.0/24", "10.202.0.2"),
              connected("eth1", "10.204.0.0/24", "10.204.0.2")]
    return ObservedHost(links=links, routes=routes, bridges={})


def action(verb, target, **params) -> Action:
    return Action(phase=Phase.ROUTE, verb=verb, target=target, params=params, templates=["t"])


# -- the model --------------------------------------------------------------------------------

def test_the_model_agrees_with_the_kernel_before_any_change():
    assert PathModel.of(node()).lookup(API) == Hop("eno1", "10.202.0.1", "10.202.0.2")


@pytest.mark.parametrize("change,after", [
    # longest prefix wins, whatever the metric
    (action(Verb.ADD_ROUTE, "10.250.0.0/24", family=4, dst="10.250.0.0/24", gw="10.204.0.254",
            metric=500), Hop("eth1", "10.204.0.254", "10.204.0.2")),
    # the gateway's device is found when no dev is given
    (action(Verb.ADD_ROUTE, "10.250.0.10/32", family=4, dst="10.250.0.10/32",
            gw="10.204.0.254"), Hop("eth1", "10.204.0.254", "10.204.0.2")),
    # a second default route with a higher metric changes nothing; a lower one wins
    (action(Verb.ADD_ROUTE, "default", family=4, gw="10.204.0.254", metric=100), None),
    # a route elsewhere changes nothing
    (action(Verb.ADD_ROUTE, "10.99.0.0/16", family=4, dst="10.99.0.0/16", gw="10.204.0.254"),
     None),
    # an address equal to the endpoint makes it local; a /30 covering it routes it there
    (action(Verb.ADD_ADDRESS, "eth1", address="10.250.0.10/32"), Hop("eth1", local=True)),
    (action(Verb.ADD_ADDRESS, "eth1", address="10.250.0.9/30"),
     Hop("eth1", None, "10.250.0.9")),
    (action(Verb.ADD_ADDRESS, "eth1", address="10.77.0.1/24"), None),
    # the last IPv4 address of the uplink takes its routes, the default route with them
    (action(Verb.DELETE_ADDRESS, "eno1", address="10.202.0.2/24"), NO_ROUTE),
    # enslaving the uplink to OVS takes its traffic
    (action(Verb.ENSURE_PORT, "eno1", bridge="br0", interfaces=["eno1"]), NO_ROUTE),
    (action(Verb.DELETE_ROUTE, "default", family=4, metric=0), NO_ROUTE),
])
def test_the_path_after_one_change(change, after):
    model = PathModel.of(node())
    before = model.lookup(API)
    assert model.apply(change, node()).lookup(API) == (before if after is None else after)
    assert model.lookup(API) == before  # apply works on a copy


def test_a_lower_metric_default_route_wins():
    model = PathModel.of(node())
    after = model.apply(action(Verb.ADD_ROUTE, "default", family=4, gw="10.204.0.254",
                               metric=0), node())
    assert after.lookup(API) == Hop("eth1", "10.204.0.254", "10.204.0.2")


def test_removing_a_second_address_keeps_the_path_but_the_source_is_checked():
    observed = node(eno1=link("eno1", "10.202.0.2/24", "10.202.0.3/24", index=2))
    model = PathModel.of(observed)
    assert model.lookup(API).src == "10.202.0.2"
    after = model.apply(action(Verb.DELETE_ADDRESS, "eno1", address="10.202.0.2/24"), observed)
    assert after.lookup(API) == Hop("eno1", "10.202.0.1", "10.202.0.3")  # the source moved


def test_setting_up_a_link_brings_its_connected_routes():
    down = link("eth1.5", "10.250.0.9/30", index=9, kind="vlan", parent="eth1")
    down.admin_up = False
    observed = node(**{"eth1.5": down})
    after = PathModel.of(observed).apply(action(Verb.SET_UP, "eth1.5"), observed)
    assert after.lookup(API).dev == "eth1.5"


# -- the uplink -------------------------------------------------------------------------------

def test_the_uplink_includes_vlan_parents_bridge_members_ovs_ports_and_pfs():
    observed = node(**{
        "eno1.100": link("eno1.100", index=5, kind="vlan", parent="eno1"),
        "br0": link("br0", index=6, kind="bridge"),
        "eth7": link("eth7", index=7, master="br0"),
        "eth8": link("eth8", index=8)})
    observed.bridges = {"br-ex": ObservedBridge("br-ex", ports=[
        ObservedOvsPort("eth8", [ObservedOvsInterface("eth8")])])}
    observed.pfs = {"0000:01:00.0": ObservedPf("0000:01:00.0", ifname="eno1", total_vfs=8,
                                               num_vfs=1, vfs=[ObservedVf(0, "0000:02:00.0",
                                                                          ifname="eno1v0")])}
    assert uplink_of([ApiServerPath(API, dev="eno1.100")], observed).devices == {"eno1.100",
                                                                                 "eno1"}
    assert uplink_of([ApiServerPath(API, dev="br0")], observed).devices == {"br0", "eth7"}
    assert uplink_of([ApiServerPath(API, dev="br-ex")], observed).devices == {"br-ex", "eth8"}
    vf = uplink_of([ApiServerPath(API, dev="eno1v0")], observed)
    assert vf.pcis == {"0000:01:00.0", "0000:02:00.0"}
    local = uplink_of([ApiServerPath("10.204.0.2", dev="lo", local=True, table=255)], observed)
    assert local.devices == {"eth1"}  # the node's own address: the device holding it


# -- the guard over a plan --------------------------------------------------------------------

def planned(observed, spec, *, paths=(KERNEL_PATH,), records=None, undo_allowed=frozenset()):
    merged = merge([make_template("t", spec)] if spec is not None else [], {}, observed)
    return plan(merged.desired, observed, records or {}, api_server=list(paths),
                undo_allowed=undo_allowed)


def test_a_vlan_parents_mtu_is_refused_when_the_vlan_carries_the_path():
    observed = node(**{"eno1.100": link("eno1.100", "10.202.1.2/24", index=5, kind="vlan",
                                        parent="eno1")})
    path = ApiServerPath(API, dev="eno1.100", src="10.202.1.2", gw="10.202.1.1", table=254)
    observed.routes[0] = ObservedRoute(4, gw="10.202.1.1", dev="eno1.100", metric=0)
    result = planned(observed, {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}, paths=[path])
    assert result.actions == []
    assert "not changing the MTU of eno1 to 9000: eno1 carries" in result.refusals[0].message


def test_a_change_that_only_touches_the_uplink_is_applied_and_marked_for_the_probe():
    result = planned(node(), {"interfaceConfig": [
        {"name": "eno1", "ipv4": {"address": ["10.202.0.2/24", "10.202.0.9/24"]}},
        {"name": "eth1", "mtu": 9000}]})
    assert result.refusals == []
    risky = {(a.verb, a.target): a.api_risk for a in result.actions}
    assert risky == {(Verb.ADD_ADDRESS, "eno1"): True, (Verb.SET_MTU, "eth1"): False}


def test_with_the_opt_in_a_change_on_the_path_is_kept_and_marked():
    result = planned(node(), {"allowApiServerDisruption": True,
                              "interfaceConfig": [{"name": "eno1", "mtu": 9000}]})
    assert [(a.verb, a.api_risk) for a in result.actions] == [(Verb.SET_MTU, True)]


def test_where_the_model_cannot_tell_every_covering_change_is_refused():
    """The kernel answered from table 100 (a policy rule): the main-table model cannot say
    whether a route covering the endpoint matters, so it counts as altering the path."""
    path = ApiServerPath(API, dev="eno1", src="10.202.0.2", gw="10.202.0.1", table=100)
    result = planned(node(), {"routes": {"ipv4": [
        {"dst": "10.250.0.0/16", "gw": "10.204.0.254", "metric": 900},
        {"dst": "10.99.0.0/16", "gw": "10.204.0.254"}]}}, paths=[path])
    assert [a.target for a in result.actions] == ["10.99.0.0/16"]
    assert "not changing the route to 10.250.0.0/16" in result.refusals[0].message


def test_the_undo_of_a_route_on_the_path_waits_for_an_opt_in_or_a_rollback():
    observed = node()
    observed.routes.append(ObservedRoute(4, dst="10.250.0.0/24", gw="10.204.0.254", dev="eth1",
                                         metric=0, proto="static"))
    hijacked = ApiServerPath(API, dev="eth1", src="10.204.0.2", gw="10.204.0.254", table=254)
    records = {"route:4:10.250.0.0/24:0": {"prior": None, "created": True, "templates": ["t"],
                                           "value": {"dev": "eth1", "dst": "10.250.0.0/24",
                                                     "family": 4, "gw": "10.204.0.254",
                                                     "metric": 0}}}
    refused = planned(observed, None, paths=[hijacked], records=records)
    assert refused.actions == [] and "the undo is left as it is" in refused.refusals[0].message
    rolled_back = planned(observed, None, paths=[hijacked], records=records,
                          undo_allowed=frozenset({"t"}))
    assert [(a.verb, a.ledger_op, a.api_risk) for a in rolled_back.actions] == [
        (Verb.DELETE_ROUTE, LedgerOp.RELEASE, True)]


def test_the_undo_of_a_device_change_is_applied_and_probed():
    records = {"mtu:eno1": {"prior": 1500, "created": False, "templates": ["gone"],
                            "value": {"mtu": 9000}}}
    observed = node()
    observed.links["eno1"].mtu = 9000
    result = planned(observed, None, records=records)
    assert [(a.verb, a.params, a.api_risk) for a in result.actions] == [
        (Verb.SET_MTU, {"mtu": 1500}, True)]


def test_sriov_on_the_pf_under_the_path_is_refused():
    observed = node()
    observed.pfs = {"0000:01:00.0": ObservedPf("0000:01:00.0", ifname="eno1", total_vfs=8)}
    observed.links["eno1"].pci_addr = "0000:01:00.0"
    result = planned(observed, {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}]})
    assert result.actions == []
    assert "not changing numVfs of PF 0000:01:00.0 to 2: eno1 carries" in \
        result.refusals[0].message


def test_no_endpoint_no_guard():
    result = planned(node(), {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}, paths=[])
    assert [(a.verb, a.api_risk) for a in result.actions] == [(Verb.SET_MTU, False)]


def test_the_undo_deleting_a_vlan_the_path_runs_over_is_refused():
    """A template made eno1.100; the API path moved onto it since. Deleting the template must
    not delete the VLAN under the node's feet (unless the template is being rolled back)."""
    observed = node(**{"eno1.100": link("eno1.100", "10.202.1.2/24", index=5, kind="vlan",
                                        parent="eno1")})
    path = ApiServerPath(API, dev="eno1.100", src="10.202.1.2", gw="10.202.1.1", table=254)
    observed.routes[0] = ObservedRoute(4, gw="10.202.1.1", dev="eno1.100", metric=0)
    records = {"vlan:eno1.100": {"prior": None, "created": True, "templates": ["vlan"],
                                 "value": {"parent": "eno1", "vlan_id": 100}}}
    refused = planned(observed, None, paths=[path], records=records)
    assert refused.actions == []
    assert refused.refusals[0].message.startswith(
        "not deleting eno1.100: eno1.100 carries this node's path to the API server")
    assert refused.refusals[0].templates == ["vlan"]
    rolled_back = planned(observed, None, paths=[path], records=records,
                          undo_allowed=frozenset({"vlan"}))
    assert [(a.verb, a.api_risk) for a in rolled_back.actions] == [(Verb.DELETE_LINK, True)]


def test_the_source_address_the_kernel_named_is_kept_even_where_the_model_sees_no_route():
    """Found by the planner fuzz: a host whose route table the agent read empty (the kernel's
    connected route was not listed) and a kernel answer naming 10.0.0.1 as the source. The
    model sees no route before or after removing the address, yet the kernel named it: the
    source is kept on the kernel's word, and a path with no device counts as uncertain."""
    observed = ObservedHost(links={"eth1": link("eth1", "10.0.0.1/24", index=3)}, routes=[],
                            bridges={})
    spec = {"interfaceConfig": [{"name": "eth1", "ipv4": {"address": []}}]}
    for path in (ApiServerPath("10.0.0.100", dev=None, src="10.0.0.1"),
                 ApiServerPath("10.0.0.100", dev="eth1", src="10.0.0.1")):
        result = planned(observed, spec, paths=[path])
        assert result.actions == [], path
        assert "not removing 10.0.0.1/24 from eth1: this node reaches the API server " \
               "10.0.0.100 from it" in result.refusals[0].message
