"""Linux bridges (spec.linuxBridgeConfig) on the fake host: validation, merge and Conflict,
planning and its wording, drift repair, cleanup and undo, the API-path guard.

The fake host's bridge behaves like the kernel's (tests/support/fakehost.py): a joining port gets
the default pvid 1 entry, a port has one pvid, a deleted bridge lets its ports go, and without
CONFIG_BRIDGE_VLAN_FILTERING vlan_filtering and VLAN entries are NotAvailable.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumber_agent.desired import merge
from plumber_agent.errors import InvalidSpec
from plumber_agent.models.lbridge_spec import compress, expand
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import network_spec_dict
from tests.support.fakehost import FakeHost, Node, make_template

API_IP = "10.0.0.100"


def bridge_spec(*ports, stp=None, filtering=True, name="br0", **extra) -> dict:
    bridge = {"name": name, "vlanFiltering": filtering, "ports": list(ports)}
    if stp is not None:
        bridge["stp"] = stp
    return {"linuxBridgeConfig": [bridge], **extra}


@pytest.fixture
def fake() -> FakeHost:
    host = FakeHost()
    host.add_link("eno1", ipv4=("10.0.0.5/24",))  # carries the API path
    host.add_route(gw="10.0.0.1", dev="eno1")
    host.add_link("eth1")
    host.add_link("eth2")
    return host


@pytest.fixture
def node(fake, tmp_path) -> Node:
    return Node(fake, tmp_path / "state", api_ip=API_IP)


def converge(node: Node, templates):
    rounds, final = node.reconcile(templates)
    assert final.actions == [] and final.refusals == [] and final.notes == [], final
    return rounds


# -- spec --------------------------------------------------------------------------------------

def test_spec_canonicalises_ranges_and_the_pvid_is_untagged_unless_tagged():
    spec = parse_template_spec(bridge_spec(
        {"name": "eth1", "pvid": 10},
        {"name": "eth2", "pvid": 30, "untagged": [20], "tagged": ["100-199", 5, "30", "200"]}))
    eth1, eth2 = spec.linux_bridge_config[0].ports
    assert eth1.vlans() == ["10 pvid untagged"]
    assert eth2.tagged == ["5", "30", "100-200"]
    assert eth2.vlans() == ["5", "20 untagged", "30 pvid", "100-200"]
    assert compress(expand(eth2.vlans())) == eth2.vlans()


@pytest.mark.parametrize("bridge, problem", [
    ({"name": "br0", "ports": [{"name": "eth1", "pvid": 10}]},
     "spec.linuxBridgeConfig[0].ports[0]: pvid, untagged and tagged need vlanFiltering: true"),
    ({"name": "br0", "vlanFiltering": True, "ports": [{"name": "eth1", "tagged": ["9-5"]}]},
     "spec.linuxBridgeConfig[0].ports[0].tagged[0]: '9-5': the range starts after it ends"),
    ({"name": "br0", "vlanFiltering": True,
      "ports": [{"name": "eth1", "tagged": ["1-10"], "untagged": [4]}]},
     "spec.linuxBridgeConfig[0].ports[0].tagged[0]: VLAN 4 is already listed at "
     "spec.linuxBridgeConfig[0].ports[0].untagged[0]"),
    ({"name": "br0", "vlanFiltering": True, "ports": [{"name": "eth1", "tagged": [4095]}]},
     "spec.linuxBridgeConfig[0].ports[0].tagged[0]: 4095: VLAN ids are 1..4094"),
    ({"name": "br0", "ports": [{"name": "br0"}]},
     "spec.linuxBridgeConfig[0].ports[0].name: a bridge cannot be its own port"),
    ({"name": "br0", "stp": "on"}, "spec.linuxBridgeConfig[0].stp: 'on' is not true or false"),
    ({"name": "br0", "ports": [{"name": "eth1;reboot"}]},
     "spec.linuxBridgeConfig[0].ports[0].name: "),
    ({"name": "br0", "ports": [{"name": "eth1", "vlan": 5}]},
     "spec.linuxBridgeConfig[0].ports[0].vlan: unknown field"),
])
def test_bad_bridges_are_refused_with_their_path(bridge, problem):
    with pytest.raises(InvalidSpec) as err:
        parse_template_spec({"linuxBridgeConfig": [bridge]})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_a_port_in_two_bridges_of_one_template_is_refused():
    with pytest.raises(InvalidSpec) as err:
        parse_template_spec({"linuxBridgeConfig": [
            {"name": "br0", "ports": [{"name": "eth1"}]},
            {"name": "br1", "ports": [{"name": "eth1"}]}]})
    assert err.value.problems == [
        "spec.linuxBridgeConfig[1].ports[0].name: 'eth1' is already a port at "
        "spec.linuxBridgeConfig[0].ports[0]"]
    with pytest.raises(InvalidSpec) as err:
        parse_template_spec({"linuxBridgeConfig": [
            {"name": "br0", "ports": [{"name": "eth1"}]},
            {"name": "br1", "ports": [{"name": "br0"}]}]})
    assert err.value.problems == [
        "spec.linuxBridgeConfig[1].ports[0].name: 'br0' is a Linux bridge of this template; a "
        "bridge cannot be a port of another bridge"]


def test_specs_without_bridges_keep_their_rollout_identity():
    assert "linuxBridgeConfig" not in network_spec_dict(parse_template_spec(
        {"interfaceConfig": [{"name": "eth1", "mtu": 9000}]}))
    assert network_spec_dict(parse_template_spec(bridge_spec({"name": "eth1"})))[
        "linuxBridgeConfig"][0]["ports"][0]["name"] == "eth1"


# -- merge -------------------------------------------------------------------------------------

def test_merge_conflict_per_bridge_and_per_port():
    old = make_template("old", bridge_spec({"name": "eth1", "pvid": 10}, {"name": "eth2"},
                                           stp=True), created="2024-01-01T00:00:00Z")
    new = make_template("new", bridge_spec({"name": "eth1", "pvid": 20}, {"name": "eth2"},
                                           stp=False), created="2024-02-01T00:00:00Z")
    result = merge([new, old], {}, ObservedHost())
    assert result.desired.linux_bridges["br0"].stp is True
    assert result.desired.linux_bridges["br0"].templates == ["old"]
    assert result.desired.linux_bridge_ports["eth1"].vlans == ["10 pvid untagged"]
    assert result.desired.linux_bridge_ports["eth2"].templates == ["old", "new"]  # agree
    assert result.results["new"].state == "Conflict"
    assert "linux bridge port eth1: conflicts with template 'old'" in result.results["new"].message
    assert "linux bridge br0: conflicts with template 'old'" in result.results["new"].message
    assert result.results["old"].state == "Applied"


# -- plan, apply, drift ------------------------------------------------------------------------

def test_plan_wording_and_one_pass_convergence(fake, node):
    tpl = make_template("t1", bridge_spec(
        {"name": "eth1", "pvid": 10}, {"name": "eth2", "tagged": ["100-199"]}, stp=True,
        interfaceConfig=[{"name": "br0", "mtu": 9000, "ipv4": {"address": ["192.168.5.1/24"]}}]))
    _, result = node.plan([tpl])
    assert [a.describe() for a in result.actions] == [
        "linux_bridge       ensure_linux_bridge br0 stp=True vlan_filtering=True  # template t1",
        "linux_bridge_port  set_linux_bridge_port eth1 bridge=br0  # template t1",
        "linux_bridge_port  set_linux_bridge_port eth2 bridge=br0  # template t1",
        "linux_bridge_vlans set_linux_bridge_vlans eth1 vlan_add=['10 pvid untagged'] "
        "vlans=['10 pvid untagged']  # template t1",
        "linux_bridge_vlans set_linux_bridge_vlans eth2 vlan_add=['100-199'] "
        "vlans=['100-199']  # template t1",
        "link_mtu           set_mtu br0 mtu=9000  # template t1",
        "link_up            set_up br0  # template t1",
        "address            add_address br0 address=192.168.5.1/24  # template t1"]
    rounds = converge(node, [tpl])
    assert len(rounds) == 1
    snap = fake.snapshot()
    assert snap["linux_bridges"] == {"br0": (True, True)}
    assert snap["bridge_ports"] == {"eth1": ("br0", ("1 untagged", "10 pvid untagged")),
                                    "eth2": ("br0", ("1 pvid untagged", "100-199"))}
    assert fake.links["br0"].ipv4 == ["192.168.5.1/24"] and fake.links["br0"].mtu == 9000


def test_drift_is_repaired(fake, node):
    tpl = make_template("t1", bridge_spec({"name": "eth1", "pvid": 10}, stp=True))
    converge(node, [tpl])
    fake.netlink.set_linux_bridge_vlans("eth1", delete=["10"])
    fake.netlink.ensure_linux_bridge("br0", stp=False)
    _, result = node.plan([tpl])
    assert [(a.verb, a.target, a.drift) for a in result.actions] == [
        ("ensure_linux_bridge", "br0", True), ("set_linux_bridge_vlans", "eth1", True)]
    converge(node, [tpl])
    fake.netlink.set_linux_bridge_port("eth1", None)
    converge(node, [tpl])
    assert fake.snapshot()["bridge_ports"]["eth1"] == ("br0", ("1 untagged", "10 pvid untagged"))


# -- cleanup and undo ---------------------------------------------------------------------------

def test_undo_deletes_only_what_it_created(fake, node):
    before = fake.snapshot()
    tpl = make_template("t1", bridge_spec({"name": "eth1", "pvid": 10}, {"name": "eth2"},
                                          interfaceConfig=[{"name": "br0", "ipv4": {
                                              "address": ["192.168.5.1/24"]}}]))
    converge(node, [tpl])
    _, result = node.plan([])
    assert [a.describe() for a in result.actions] == [
        "delete_address     forget addr:br0:192.168.5.1/24  # cleanup: br0 is gone",
        "restore_linux_bridge_vlans forget lbvlan:eth1  # cleanup: the VLAN entries of eth1 "
        "go with it leaving the bridge",
        "restore_linux_bridge_port forget lbport:eth1  # cleanup: eth1 leaves with the "
        "deletion of br0",
        "restore_linux_bridge_port forget lbport:eth2  # cleanup: eth2 leaves with the "
        "deletion of br0",
        "delete_link        delete_link br0  # cleanup (was t1)"]
    converge(node, [])
    assert fake.snapshot() == before and node.ledger.records() == {}


def test_an_existing_bridge_is_kept_its_settings_and_ports_restored(fake, node):
    fake.add_link("eth3")
    fake.add_linux_bridge("br0", stp=False, vlan_filtering=True, ports=("eth3",))
    fake.add_linux_bridge("br9", vlan_filtering=True, ports=("eth1",))  # eth1's old master
    fake.netlink.set_linux_bridge_vlans("eth3", add=["5"])
    before = fake.snapshot()
    tpl = make_template("t1", bridge_spec({"name": "eth1", "pvid": 10},
                                          {"name": "eth3", "pvid": 7, "tagged": [5, 8]},
                                          stp=True))
    converge(node, [tpl])
    assert fake.snapshot()["bridge_ports"]["eth3"] == (
        "br0", ("1 untagged", "5", "7 pvid untagged", "8"))
    converge(node, [])
    # br0 stays (not ours), stp back off; eth1 back in br9 with the kernel's entry; eth3 keeps
    # the kernel's VLAN 1 (pvid again) and its own VLAN 5, loses 7 and 8.
    assert fake.snapshot() == before
    assert node.ledger.records() == {}


def test_moving_a_port_between_templates_vlans_keeps_the_kernels_default_entry(fake, node):
    converge(node, [make_template("t1", bridge_spec({"name": "eth1", "pvid": 10}))])
    converge(node, [make_template("t1", bridge_spec({"name": "eth1", "tagged": [1, 20]}))])
    assert fake.snapshot()["bridge_ports"]["eth1"] == ("br0", ("1", "20"))
    converge(node, [make_template("t1", bridge_spec({"name": "eth1"}))])  # VLANs unmanaged
    # Ours (20) gone; VLAN 1, the kernel's, back as it found it (pvid untagged).
    assert fake.snapshot()["bridge_ports"]["eth1"] == ("br0", ("1 pvid untagged",))


def test_a_typo_in_a_port_does_not_undo(fake, node):
    converge(node, [make_template("t1", bridge_spec({"name": "eth1", "pvid": 10}))])
    applied = fake.snapshot()
    merged, result = node.plan([make_template("t1", bridge_spec({"name": "eht1", "pvid": 10}))])
    assert [n.message for n in result.notes][0] == (
        "linux bridge br0: port eht1 does not exist on this node (and no template creates it)")
    assert all(a.verb != "set_linux_bridge_port" for a in result.actions)
    node.reconcile([make_template("t1", bridge_spec({"name": "eht1", "pvid": 10}))])
    assert fake.snapshot() == applied


def test_ports_in_a_bond_or_a_name_that_is_not_a_bridge_are_left_alone(fake, node):
    fake.add_link("bond0", kind="bond")
    fake.links["eth2"].master = "bond0"
    fake.add_link("br1", kind="veth")
    merged, result = node.plan([make_template("t1", {"linuxBridgeConfig": [
        {"name": "br0", "ports": [{"name": "eth2"}]}, {"name": "br1", "ports": [{"name": "eth1"}]}]})])
    assert sorted(n.message for n in result.notes) == [
        "interface br1 already exists and is not a linux bridge (it is veth); it is left alone",
        "linux bridge br0: eth2 is already a member of bond0; it is left where it is"]
    assert [(a.verb, a.target) for a in result.actions] == [
        ("ensure_linux_bridge", "br0"), ("set_up", "br0")]


def test_a_kernel_without_vlan_filtering_fails_the_template_clearly(fake, node):
    fake.bridge_vlan_filtering = False
    tpl = make_template("t1", bridge_spec({"name": "eth1", "pvid": 10}))
    rounds, _ = node.reconcile([tpl])
    failures = rounds[0][1].template_failures()["t1"]
    assert any("CONFIG_BRIDGE_VLAN_FILTERING" in f for f in failures), failures
    assert "br0" not in fake.links


def test_a_vlan_created_by_the_plan_can_be_a_port(fake, node):
    tpl = make_template("t1", bridge_spec(
        {"name": "eth1.30"}, filtering=None,
        interfaceConfig=[{"name": "eth1", "vlan": [{"id": 30}]}]))
    converge(node, [tpl])
    assert fake.links["eth1.30"].master == "br0"


# -- the API-path guard -------------------------------------------------------------------------

def test_enslaving_the_api_uplink_is_refused_without_opt_in(fake, node):
    tpl = make_template("t1", bridge_spec({"name": "eno1"}, filtering=None))
    _, result = node.plan([tpl])
    assert [r.message for r in result.refusals] == [
        f"not adding eno1 to linux bridge br0: eno1 carries this node's path to the API "
        f"server {API_IP} (set allowApiServerDisruption to allow)"]
    assert all(a.target != "eno1" for a in result.actions)
    allowed = make_template("t1", {**bridge_spec({"name": "eno1"}, filtering=None),
                                   "allowApiServerDisruption": True})
    _, result = node.plan([allowed])
    (enslave,) = [a for a in result.actions if a.verb == "set_linux_bridge_port"]
    assert enslave.api_risk


# -- status -------------------------------------------------------------------------------------

def test_status_shows_the_bridge_its_ports_and_their_vlans(fake, node):
    from plumber_agent.models.status import from_api, to_api
    from plumber_agent.status_builder import build_status

    converge(node, [make_template("t1", bridge_spec({"name": "eth1", "pvid": 10},
                                                    {"name": "eth2", "tagged": ["100-199"]},
                                                    stp=True))])
    status = build_status(node.host.discover())
    api = to_api(status)
    assert from_api(api) == status
    by_name = {entry["pfName"]: entry for entry in api["interfaceStatus"]}
    assert by_name["br0"]["linuxBridge"] == {"stp": True, "vlanFiltering": True,
                                             "ports": ["eth1", "eth2"]}
    assert by_name["eth1"]["master"] == "br0"
    assert by_name["eth1"]["bridgeVlans"] == ["1 untagged", "10 pvid untagged"]
    assert by_name["eth2"]["bridgeVlans"] == ["1 pvid untagged", "100-199"]
    assert "bridgeVlans" not in by_name["eno1"] and "linuxBridge" not in by_name["eno1"]


def test_the_vlans_of_a_port_carrying_the_api_path_are_guarded_and_so_is_their_undo(tmp_path):
    fake = FakeHost()
    fake.add_link("eno1")
    fake.add_link("eth1")
    fake.add_linux_bridge("br0", vlan_filtering=True, ports=("eno1",), ipv4=("10.0.0.5/24",))
    fake.add_route(gw="10.0.0.1", dev="br0")  # the API server is reached over br0 and eno1
    node = Node(fake, tmp_path / "state", api_ip=API_IP)
    vlans = bridge_spec({"name": "eno1", "pvid": 10})
    _, result = node.plan([make_template("t1", vlans)])
    assert [r.message for r in result.refusals] == [
        f"not changing the VLANs of linux bridge port eno1: eno1 carries this node's path to the "
        f"API server {API_IP} (set allowApiServerDisruption to allow)"]
    assert [a.verb for a in result.actions] == []
    converge(node, [make_template("t1", {**vlans, "allowApiServerDisruption": True})])
    assert fake.snapshot()["bridge_ports"]["eno1"] == ("br0", ("1 untagged", "10 pvid untagged"))
    # Undo restores the port's prior entries: what the node ran with, let through and probed.
    _, result = node.plan([])
    (undo,) = [a for a in result.actions if a.verb == "set_linux_bridge_vlans"]
    assert undo.api_risk and undo.params == {"vlan_add": ["1 pvid untagged"],
                                             "vlan_delete": ["10"]}
    assert result.refusals == []


_VLAN_VALUES = st.one_of(st.integers(-2, 4100), st.sampled_from(
    ["1-4094", "4094-1", "10", " 20 - 30 ", "0-5", "5-", "-5", "a", "", "1-2-3", "４"]),
    st.none(), st.booleans(), st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["eth1", "eth2", "br0", "e;x"])},
                                      optional={"pvid": _VLAN_VALUES,
                                                "untagged": st.lists(_VLAN_VALUES, max_size=4),
                                                "tagged": st.lists(_VLAN_VALUES, max_size=4)}),
                max_size=3), st.sampled_from([True, False, None, "yes"]))
def test_any_port_list_is_refused_with_paths_or_canonical(ports, filtering):
    raw = {"linuxBridgeConfig": [{"name": "br0", "vlanFiltering": filtering, "ports": ports}]}
    try:
        spec = parse_template_spec(raw)
    except InvalidSpec as exc:
        assert exc.problems and all(p.startswith("spec.linuxBridgeConfig") for p in exc.problems)
        return
    for port in spec.linux_bridge_config[0].ports:
        entries = port.vlans()
        assert compress(expand(entries)) == entries
        assert all(1 <= vid <= 4094 for vid in expand(entries))
        assert sum(flags[0] for flags in expand(entries).values()) <= 1  # one pvid at most
