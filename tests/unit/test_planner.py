"""The planner: exact ordered action lists for the seed README's examples on a realistic host,
convergence, cleanup, ownership, the final-state address rule and its API-server guard, drift.

Round trips run plan -> execute on tests/support/fakehost.py (a fake at our driver seam, with real
Host facade, Executor and on-disk Ledger) -> discover -> plan, as the reconciler does.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumber_agent.desired import merge
from plumber_agent.models.actions import Phase
from plumber_agent.models.observed import ObservedBridge, ObservedHost, ObservedLink, ObservedRoute
from plumber_agent.planner import ApiServerPath, plan
from tests.support.fakehost import API_SERVER_IP, FakeHost, Node, make_template, seed_host

SRIOV_LABELS = {"feature.node.kubernetes.io/network-sriov.capable": "true", "foo": "bar",
                "kubernetes.io/hostname": "10.128.237.204"}


def short(actions) -> list[str]:
    """os-net-config style: the ordered host actions, one line each (no reasons)."""
    out = []
    for a in actions:
        params = " ".join(f"{k}={v}" for k, v in sorted(a.params.items()) if k not in ("pf", "pf_ifname"))
        out.append(f"{a.verb} {a.target}" + (f" {params}" if params else ""))
    return out


@pytest.fixture
def node(tmp_path):
    return Node(seed_host(), tmp_path / "state", labels=SRIOV_LABELS, api_ip=API_SERVER_IP)


def run(node, templates):
    rounds, final = node.reconcile(templates)
    for result, report in rounds:
        assert report.ok, [(r.action.describe(), r.error) for r in report.failed()]
    return [short(result.actions) for result, _ in rounds], final


# ---- the seed README's examples ----------------------------------------------------------

COMPREHENSIVE = make_template("hostconfig-kernel-eno2", {
    "nodeSelector": {"feature.node.kubernetes.io/network-sriov.capable": "true", "foo": "bar"},
    "sriovConfig": [{"pfName": "eno2", "numVfs": 4, "vfDriver": "i40evf"}],
    "interfaceConfig": [{"name": "eno2", "mtu": 9000,
                         "vlan": [{"id": 1000}, {"id": 1001}, {"id": 1002}]}],
    "ovsConfig": [{"bridgeName": "ovs-br01", "nodeInterface": "eno2.1000"}]})


def test_seed_comprehensive_example_exact_rounds_then_empty(node):
    rounds, final = run(node, [COMPREHENSIVE])
    assert rounds == [
        ["set_num_vfs 0000:01:00.1 num_vfs=4",
         "set_mtu eno2 mtu=9000",
         "ensure_vlan eno2.1000 parent=eno2 vlan_id=1000",
         "ensure_vlan eno2.1001 parent=eno2 vlan_id=1001",
         "ensure_vlan eno2.1002 parent=eno2 vlan_id=1002",
         "set_up eno2.1000", "set_up eno2.1001", "set_up eno2.1002",
         "ensure_bridge ovs-br01",
         "ensure_port eno2.1000 bridge=ovs-br01 interfaces=['eno2.1000']"],
        # VFs exist only after the numVfs write: their drivers are bound on the re-plan.
        ["bind_vf_driver 0000:02:0a.0 driver=i40evf",
         "bind_vf_driver 0000:02:0a.1 driver=i40evf",
         "bind_vf_driver 0000:02:0a.2 driver=i40evf",
         "bind_vf_driver 0000:02:0a.3 driver=i40evf"],
    ]
    assert final.actions == [] and final.refusals == [] and final.notes == []
    # VLANs inherit the parent's new MTU because eno2 (a PF netdev) changes first.
    assert node.fake.links["eno2.1000"].mtu == 9000


def test_seed_comprehensive_phases_are_in_order(node):
    _, result = node.plan([COMPREHENSIVE])
    phases = [a.phase for a in result.actions]
    assert phases == sorted(phases)
    assert phases[0] == Phase.SRIOV_NUMVFS and phases[-1] == Phase.OVS_PORT
    assert all(a.templates == ["hostconfig-kernel-eno2"] for a in result.actions)


def test_seed_comprehensive_cleanup_undoes_exactly(node):
    initial = node.fake.snapshot()
    run(node, [COMPREHENSIVE])
    _, result = node.plan([])
    assert short(result.actions) == [
        "delete_port eno2.1000 bridge=ovs-br01",
        "delete_bridge ovs-br01",
        "set_mtu eno2 mtu=1500",
        "delete_link eno2.1000", "delete_link eno2.1001", "delete_link eno2.1002",
        # the VFs vanish with numVfs 0: nothing to rebind, just forget the records
        "forget vfdriver:0000:02:0a.0", "forget vfdriver:0000:02:0a.1",
        "forget vfdriver:0000:02:0a.2", "forget vfdriver:0000:02:0a.3",
        "set_num_vfs 0000:01:00.1 destroys_vfs=True num_vfs=0",
    ]
    assert all(a.ledger_op == "release" for a in result.actions)
    assert [a.phase for a in result.actions] == sorted(a.phase for a in result.actions)
    rounds, final = run(node, [])
    assert final.actions == []
    assert node.fake.snapshot() == initial
    assert node.ledger.records() == {}


def test_seed_two_sriov_templates_by_pf_name(node):
    f1 = make_template("sriovconfig-enp3s0f1", {"sriovConfig": [
        {"pfName": "enp3s0f1", "numVfs": 8, "vfDriver": "ixgbevf"}]})
    f0 = make_template("sriovconfig-enp3s0f0", {"sriovConfig": [
        {"pfName": "enp3s0f0", "numVfs": 4, "vfDriver": "vfio-pci"}]})
    rounds, final = run(node, [f1, f0])
    assert rounds == [
        ["set_num_vfs 0000:03:00.0 num_vfs=4", "set_num_vfs 0000:03:00.1 num_vfs=8"],
        # enp3s0f1's VFs come up with ixgbevf already: only enp3s0f0's are rebound
        [f"bind_vf_driver 0000:04:10.{i} driver=vfio-pci" for i in range(4)],
    ]
    assert final.actions == []
    assert node.fake.pfs["0000:03:00.1"].vf_drivers == {i: "ixgbevf" for i in range(8)}


def test_seed_vendor_device_selects_all_matching_pfs(node):
    t = make_template("HostNetworkTemplate-1528-dev".lower(), {"sriovConfig": [
        {"vendorId": "8086", "deviceId": "1528", "numVfs": 32, "vfDriver": "vfio-pci"}]})
    rounds, final = run(node, [t])
    assert rounds[0] == ["set_num_vfs 0000:03:00.0 num_vfs=32",
                         "set_num_vfs 0000:03:00.1 num_vfs=32",
                         "set_num_vfs 0000:05:00.0 num_vfs=32"]  # the PF without a netdev too
    assert len(rounds[1]) == 96
    assert rounds[1][:2] == ["bind_vf_driver 0000:04:10.0 driver=vfio-pci",
                             "bind_vf_driver 0000:04:10.1 driver=vfio-pci"]
    assert rounds[1][-1] == "bind_vf_driver 0000:04:23.7 driver=vfio-pci"
    assert final.actions == []


def test_seed_pci_address_example(node):
    t = make_template("hostnetworktemplate-sample", {"sriovConfig": [
        {"pciAddr": "0000:03:00.0", "numVfs": 32, "vfDriver": "vfio-pci"},
        {"pciAddr": "0000:03:00.1", "numVfs": 32, "vfDriver": "vfio-pci"}]})
    rounds, final = run(node, [t])
    assert rounds[0] == ["set_num_vfs 0000:03:00.0 num_vfs=32",
                         "set_num_vfs 0000:03:00.1 num_vfs=32"]
    assert len(rounds[1]) == 64 and final.actions == []
    assert sum(pf.num_vfs for pf in node.fake.pfs.values()) == 64


IP_TEMPLATE = make_template("hostconfig-kernel-enp3", {
    "nodeSelector": {"kubernetes.io/hostname": "10.128.237.204"},
    "interfaceConfig": [{"name": "enp3s0f1", "mtu": 9000,
                         "ipv4": {"address": ["192.168.195.7/24", "192.168.196.8/24"]},
                         "ipv6": {"address": ["fc00:1::3/112"]}}]})


def test_seed_ip_address_example_is_the_final_state(node):
    link = node.fake.links["enp3s0f1"]
    node.fake._add_address(link, "192.168.195.7/24")  # already there: kept, not re-added
    node.fake._add_address(link, "10.9.9.9/24")  # not listed: removed
    rounds, final = run(node, [IP_TEMPLATE])
    assert rounds == [[
        "set_mtu enp3s0f1 mtu=9000",
        "delete_address enp3s0f1 address=10.9.9.9/24",  # deletions first (see the planner)
        "add_address enp3s0f1 address=192.168.196.8/24",
        "add_address enp3s0f1 address=fc00:1::3/112",
    ]]
    assert final.actions == []
    assert link.ipv4 == ["192.168.195.7/24", "192.168.196.8/24"]
    assert any(a.startswith("fe80::") for a in link.ipv6), "link-local must stay"


def test_seed_ip_address_cleanup_gives_back_what_was_removed(node):
    link = node.fake.links["enp3s0f1"]
    node.fake._add_address(link, "192.168.195.7/24")
    node.fake._add_address(link, "10.9.9.9/24")
    initial = node.fake.snapshot()
    run(node, [IP_TEMPLATE])
    _, result = node.plan([])
    assert short(result.actions) == [
        "delete_address enp3s0f1 address=192.168.196.8/24",
        "add_address enp3s0f1 address=10.9.9.9/24",  # given back after ours are gone
        "delete_address enp3s0f1 address=fc00:1::3/112",
        "set_mtu enp3s0f1 mtu=1500",
    ]  # 192.168.195.7/24 was there before: it stays
    run(node, [])
    assert node.fake.snapshot() == initial


def test_seed_vlan_only_example(node):
    t = make_template("hostconfig-kernel-eno2", {
        "nodeSelector": {"feature.node.kubernetes.io/network-sriov.capable": "true"},
        "interfaceConfig": [{"name": "eno2", "vlan": [{"id": 1000}, {"id": 1001}, {"id": 1002}]},
                            {"name": "eno1", "vlan": [{"id": 999}]}]})
    rounds, final = run(node, [t])
    assert rounds == [[
        "ensure_vlan eno1.999 parent=eno1 vlan_id=999",
        "ensure_vlan eno2.1000 parent=eno2 vlan_id=1000",
        "ensure_vlan eno2.1001 parent=eno2 vlan_id=1001",
        "ensure_vlan eno2.1002 parent=eno2 vlan_id=1002",
        "set_up eno1.999", "set_up eno2.1000", "set_up eno2.1001", "set_up eno2.1002",
    ]]
    assert final.actions == []


def test_seed_ovs_example(node):
    t = make_template("hostconfig-kernel-eno2", {
        "interfaceConfig": [{"name": "eno2", "vlan": [{"id": 1000}, {"id": 1001}, {"id": 1002}]}],
        "ovsConfig": [{"bridgeName": "ovs-br01", "nodeInterface": "eno2.1000"}]})
    rounds, final = run(node, [t])
    assert rounds[0][-2:] == ["ensure_bridge ovs-br01",
                              "ensure_port eno2.1000 bridge=ovs-br01 interfaces=['eno2.1000']"]
    assert final.actions == []
    assert [p.name for p in node.fake.bridges["ovs-br01"].ports] == ["eno2.1000"]


# ---- convergence and canonical comparison ---------------------------------------------------

def test_converged_host_gives_an_empty_plan_with_non_canonical_observation():
    tpl = make_template("t", {"interfaceConfig": [{"name": "eth1", "mtu": 9000, "ipv6": {
        "address": ["fc00:1::3/112"]}}], "routes": {"ipv6": [{"dst": "fd00::/64",
                                                               "gw": "fc00:1::1"}]}})
    observed = ObservedHost(
        links={"eth1": ObservedLink("eth1", 2, mtu=9000, mac="52:54:00:AA:BB:CC",
                                    ipv6=["FC00:1:0:0::3/112", "fe80::1/64"])},
        routes=[ObservedRoute(6, dst="fd00::/64", gw="fc00:1::1", dev="eth1", metric=1024)],
        bridges={})
    merged = merge([tpl], {}, observed)
    assert plan(merged.desired, observed, {}).actions == []


def test_empty_desired_and_empty_ledger_touch_nothing():
    h = seed_host()
    h.add_link("eno1.999", kind="vlan", parent="eno1", vlan_id=999)
    h.ovs.ensure_bridge("br-ex", "netdev")
    links, routes = h.netlink.discover()
    observed = ObservedHost(links=links, routes=routes, pfs=h.sysfs.discover_pfs(),
                            bridges=h.ovs.discover())
    assert plan(merge([], {}, observed).desired, observed, {}).actions == []


# ---- ownership ----------------------------------------------------------------------------

def test_pre_existing_objects_are_used_but_never_deleted(node):
    node.fake.add_link("eno1.999", kind="vlan", parent="eno1", vlan_id=999)
    node.fake.ovs.ensure_bridge("br-ex", "netdev")
    node.fake.add_link("eth9")
    node.fake.ovs.ensure_port("br-ex", "eth9", ["eth9"])
    initial = node.fake.snapshot()
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 999}]}],
                            "ovsConfig": [{"bridgeName": "br-ex", "nodeInterface": "eth9"}]})
    rounds, final = run(node, [t])
    assert rounds == [] and final.actions == []  # all there already: nothing claimed
    assert node.ledger.records() == {}
    rounds, final = run(node, [])
    assert rounds == [] and node.fake.snapshot() == initial


def test_claims_keep_the_first_prior_and_cleanup_restores_it(node):
    t1 = make_template("t", {"sriovConfig": [{"pfName": "eno1", "numVfs": 4}]}, generation=1)
    t2 = make_template("t", {"sriovConfig": [{"pfName": "eno1", "numVfs": 8}]}, generation=2)
    run(node, [t1])
    _, result = node.plan([t2])
    (action,) = result.actions
    assert short([action]) == ["set_num_vfs 0000:01:00.0 destroys_vfs=True num_vfs=8"]
    assert action.ledger_prior == 0 and action.reason == "template t"  # a spec change, no drift
    run(node, [t2])
    assert node.ledger.get("numvfs:0000:01:00.0")["prior"] == 0
    _, result = node.plan([])
    assert short(result.actions) == ["set_num_vfs 0000:01:00.0 destroys_vfs=True num_vfs=0"]


def test_dropping_one_entry_undoes_only_that_entry(node):
    both = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}, {"id": 11}]}]})
    one = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}]})
    run(node, [both])
    _, result = node.plan([one])
    assert short(result.actions) == ["delete_link eno1.11"]
    assert result.actions[0].reason == "cleanup (was t)"


@pytest.mark.parametrize("typo", [
    {"interfaceConfig": [{"name": "eno9", "mtu": 9000}]},
    {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}],
     "sriovConfig": [{"pfName": "eno9", "numVfs": 2}]},
    {"interfaceConfig": [{"name": "eno1"}], "routes": {"ipv4": [
        {"dst": "10.20.0.0/16", "gw": "10.1.0.1", "dev": "eno9"}]}}])
def test_a_template_that_fails_here_holds_what_it_applied(node, typo):
    """A typo'd name looks like moving the configuration: nothing of the old is undone while
    the new fails; deleting the template still undoes it all."""
    applied = make_template("t", {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}],
                                  "interfaceConfig": [{"name": "eno1", "mtu": 9000,
                                                       "vlan": [{"id": 10}]}]})
    run(node, [applied])
    _, result = node.plan([make_template("t", typo)])
    assert result.actions == []
    problems = result.problems_by_template()["t"]
    assert any(p.startswith("nothing it applied before is undone while it fails here (")
               for p in problems), problems
    _, result = node.plan([])
    assert sorted(short(result.actions)) == [
        "delete_link eno1.10", "set_mtu eno1 mtu=1500",
        "set_num_vfs 0000:01:00.0 destroys_vfs=True num_vfs=0"]


@pytest.mark.parametrize("promote_secondaries", [False, True])
def test_replacing_a_primary_address_in_the_same_subnet_converges_and_restores(
        node, promote_secondaries):
    # Seen on a real kernel: deleting a primary IPv4 address deletes its secondaries, so adding
    # the new address first and deleting the old primary after loses the new one (and on
    # cleanup, the address given back). Deletions run first.
    node.fake.promote_secondaries = promote_secondaries
    node.fake._add_address(node.fake.links["eno1"], "10.1.0.50/24")
    initial = node.fake.snapshot()
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.1.0.1/24"]}}]})
    rounds, final = run(node, [t])
    assert rounds == [["delete_address eno1 address=10.1.0.50/24",
                       "add_address eno1 address=10.1.0.1/24"]]
    assert final.actions == []
    rounds, final = run(node, [])
    assert rounds == [["delete_address eno1 address=10.1.0.1/24",
                       "add_address eno1 address=10.1.0.50/24"]]
    assert node.fake.snapshot() == initial


def test_a_removed_address_is_claimed_and_released_when_listed_again(node):
    link = node.fake.links["eno1"]
    node.fake._add_address(link, "10.9.9.9/24")
    t1 = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.1.1.1/24"]}}]})
    t2 = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {
        "address": ["10.1.1.1/24", "10.9.9.9/24"]}}]})
    run(node, [t1])
    assert node.ledger.get("addr:eno1:10.9.9.9/24")["created"] is False
    _, result = node.plan([t2])
    assert short(result.actions) == ["add_address eno1 address=10.9.9.9/24"]
    assert result.actions[0].ledger_op == "release"  # pre-existing again, not ours
    run(node, [t2])
    _, result = node.plan([])
    assert short(result.actions) == ["delete_address eno1 address=10.1.1.1/24"]


def test_route_add_replace_and_cleanup(node):
    node.fake.links["eno1"].ipv4.clear()
    node.fake._add_address(node.fake.links["eno1"], "10.1.1.1/24")
    node.fake.add_route(dst="10.50.0.0/16", gw="10.1.1.254", dev="eno1")  # pre-existing
    initial = node.fake.snapshot()
    t = make_template("t", {"routes": {"ipv4": [
        {"dst": "10.50.0.0/16", "gw": "10.1.1.253"},
        {"dst": "10.60.0.0/16", "gw": "10.1.1.254", "dev": "eno1", "metric": 10}]}})
    rounds, final = run(node, [t])
    assert rounds == [[
        "add_route 10.50.0.0/16 dst=10.50.0.0/16 family=4 gw=10.1.1.253 metric=0",
        "add_route 10.60.0.0/16 dev=eno1 dst=10.60.0.0/16 family=4 gw=10.1.1.254 metric=10",
    ]]
    assert final.actions == []
    _, result = node.plan([])
    assert short(result.actions) == [
        "add_route 10.50.0.0/16 dev=eno1 dst=10.50.0.0/16 family=4 gw=10.1.1.254 metric=0",
        "delete_route 10.60.0.0/16 dev=eno1 dst=10.60.0.0/16 family=4 gw=10.1.1.254 metric=10",
    ]
    run(node, [])

    def without_proto(snapshot):  # a restored route is ours now ('static'), as with `ip route`
        return dict(snapshot, routes=[r[:-1] for r in snapshot["routes"]])
    assert without_proto(node.fake.snapshot()) == without_proto(initial)


# ---- final-state addresses and the API server guard ------------------------------------------

def test_api_server_address_is_never_removed_unasked(node):
    t = make_template("t", {"interfaceConfig": [{"name": "bond0", "ipv4": {"address": ["10.7.7.7/24"]},
                                                 "ipv6": {"address": ["2604:1380:45d1:2600::3/127"]}}]})
    _, result = node.plan([t])
    assert short(result.actions) == ["add_address bond0 address=10.7.7.7/24"]
    (refusal,) = result.refusals
    assert refusal.templates == ["t"]
    assert "not removing 145.40.65.95/31 from bond0" in refusal.message
    assert "API server 10.20.0.1" in refusal.message
    assert result.problems_by_template() == {"t": [refusal.message]}


def test_api_server_address_removal_allowed_when_the_template_says_so(node):
    t = make_template("t", {"allowApiServerDisruption": True, "interfaceConfig": [
        {"name": "bond0", "ipv4": {"address": ["10.7.7.7/24"]}}]})
    _, result = node.plan([t])
    assert short(result.actions) == ["delete_address bond0 address=145.40.65.95/31",
                                     "add_address bond0 address=10.7.7.7/24"]
    assert result.refusals == []


def test_route_change_that_moves_the_api_server_path_is_refused(node):
    node.fake._add_address(node.fake.links["eno1"], "10.1.1.1/24")
    t = make_template("t", {"routes": {"ipv4": [
        {"gw": "10.1.1.254"},  # a new default route: would reroute the API server
        {"dst": "10.30.0.0/16", "gw": "10.1.1.254"}]}})  # does not cover 10.20.0.1: fine
    _, result = node.plan([t])
    assert short(result.actions) == ["add_route 10.30.0.0/16 dst=10.30.0.0/16 family=4 "
                                     "gw=10.1.1.254 metric=0"]
    assert "not changing the route to default" in result.refusals[0].message
    more_specific = make_template("t", {"routes": {"ipv4": [
        {"dst": "10.20.0.0/16", "gw": "10.1.1.254"}]}})
    _, result = node.plan([more_specific])
    assert result.actions == [] and len(result.refusals) == 1
    allowed = make_template("t", {"allowApiServerDisruption": True,
                                  "routes": {"ipv4": [{"gw": "10.1.1.254"}]}})
    _, result = node.plan([allowed])
    assert short(result.actions) == ["add_route default family=4 gw=10.1.1.254 metric=0"]


# ---- drift -----------------------------------------------------------------------------------

def test_drift_is_re_planned_and_says_so(node):
    run(node, [COMPREHENSIVE])
    node.fake.netlink.delete_link("eno2.1001")  # behind our back
    node.fake.links["eno2"].mtu = 1500  # lowers its VLANs too in a real kernel; keep simple
    _, result = node.plan([COMPREHENSIVE])
    assert short(result.actions) == ["set_mtu eno2 mtu=9000",
                                     "ensure_vlan eno2.1001 parent=eno2 vlan_id=1001",
                                     "set_up eno2.1001"]
    assert result.actions[0].reason.startswith("drift; template hostconfig-kernel-eno2")
    assert result.actions[1].reason.startswith("drift")
    run(node, [COMPREHENSIVE])
    assert node.plan([COMPREHENSIVE])[1].actions == []


def test_address_removed_behind_our_back_is_drift(node):
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.1.1.1/24"]}}]})
    run(node, [t])
    node.fake.netlink.delete_address("eno1", "10.1.1.1/24")
    node.fake.netlink.add_address("eno1", "10.66.0.1/24")  # someone adds one: final state says no
    _, result = node.plan([t])
    assert short(result.actions) == ["delete_address eno1 address=10.66.0.1/24",
                                     "add_address eno1 address=10.1.1.1/24"]
    assert result.actions[1].reason.startswith("drift")


# ---- what cannot be done -------------------------------------------------------------------------

def test_missing_parents_give_notes_not_actions(node):
    t = make_template("t", {"interfaceConfig": [{"name": "eth9", "mtu": 9000, "vlan": [{"id": 5}]}],
                            "ovsConfig": [{"bridgeName": "br1", "nodeInterface": "eth7"}],
                            "routes": {"ipv4": [{"dst": "10.0.0.0/8", "dev": "eth8"}]}})
    _, result = node.plan([t])
    assert short(result.actions) == ["ensure_bridge br1"]
    messages = sorted(n.message for n in result.notes)
    assert messages == [
        "OVS bridge br1: nodeInterface eth7 does not exist on this node (and no template creates it)",
        "VLAN eth9.5: parent interface eth9 does not exist on this node",
        "interface eth9 does not exist on this node",
        "route to 10.0.0.0/8: dev eth8 does not exist on this node",
    ]
    assert all(n.templates == ["t"] for n in result.notes)


def test_vlan_mtu_above_parent_is_refused(node):
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 5}]},
                                                {"name": "eno1.5", "mtu": 9000}]})
    _, result = node.plan([t])
    assert short(result.actions) == ["ensure_vlan eno1.5 parent=eno1 vlan_id=5", "set_up eno1.5"]
    assert result.refusals[0].message == ("MTU 9000 of VLAN eno1.5 is above the MTU 1500 of its "
                                          "parent eno1; refused")
    raised = make_template("t", {"interfaceConfig": [{"name": "eno1", "mtu": 9000, "vlan": [{"id": 5}]},
                                                     {"name": "eno1.5", "mtu": 9000}]})
    rounds, final = run(node, [raised])
    # eno1 is a PF netdev: its MTU changes first (SR-IOV phase), so the new VLAN starts at
    # 9000 and needs no MTU action of its own.
    assert rounds == [["set_mtu eno1 mtu=9000", "ensure_vlan eno1.5 parent=eno1 vlan_id=5",
                       "set_up eno1.5"]]
    assert final.actions == [] and final.refusals == []


def test_vlan_on_non_pf_parent_gets_mtu_after_the_parent(node):
    node.fake.add_link("eth5")
    t = make_template("t", {"interfaceConfig": [{"name": "eth5", "mtu": 9000, "vlan": [{"id": 5}]},
                                                {"name": "eth5.5", "mtu": 9000}]})
    rounds, final = run(node, [t])
    assert rounds == [["ensure_vlan eth5.5 parent=eth5 vlan_id=5",
                       "set_mtu eth5 mtu=9000", "set_mtu eth5.5 mtu=9000", "set_up eth5.5"]]
    assert final.actions == []


def test_numvfs_above_total_is_a_note(node):
    t = make_template("t", {"sriovConfig": [{"pfName": "enp3s0f0", "numVfs": 64}]})
    _, result = node.plan([t])
    assert result.actions == []
    assert result.notes[0].message == "numVfs 64 of PF 0000:03:00.0 is above its sriov_totalvfs 63"


def test_ovs_unavailable_is_a_note_and_keeps_records(node):
    t = make_template("t", {"ovsConfig": [{"bridgeName": "br1"}]})
    run(node, [t])
    node.fake.ovs_available = False
    _, result = node.plan([t])
    assert result.actions == [] and "Open vSwitch is not available" in result.notes[0].message
    _, result = node.plan([])  # template gone while OVS is down: nothing to do yet
    assert result.actions == [] and "bridge:br1" in node.ledger.records()
    node.fake.ovs_available = True
    assert short(node.plan([])[1].actions) == ["delete_bridge br1"]


def test_conflicting_templates_plan_the_winner(node):
    a = make_template("a", {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}]},
                      created="2024-01-01T00:00:00Z")
    b = make_template("b", {"sriovConfig": [{"pfName": "eno1", "numVfs": 6}]},
                      created="2023-01-01T00:00:00Z")
    merged, result = node.plan([a, b])
    assert short(result.actions) == ["set_num_vfs 0000:01:00.0 num_vfs=6"]
    assert merged.results["a"].state == "Conflict"


def test_plan_is_pure_and_deterministic(node):
    observed = node.host.discover()
    merged = merge([COMPREHENSIVE], SRIOV_LABELS, observed)
    before = repr(observed)
    one = plan(merged.desired, observed, {}, api_server=ApiServerPath(API_SERVER_IP, "bond0",
                                                                      "145.40.65.95"))
    two = plan(merged.desired, observed, {}, api_server=ApiServerPath(API_SERVER_IP, "bond0",
                                                                      "145.40.65.95"))
    assert one == two and repr(observed) == before


# ---- property: plan -> execute -> re-plan is empty; release-all restores the host ------------

IFACES = ["eth1", "eth2"]
POOL4 = ["10.1.0.1/24", "10.1.0.2/24", "10.2.0.1/24"]
POOL6 = ["fc00::1/64", "fc00::2/64"]


def property_host() -> FakeHost:
    h = FakeHost()
    h.add_pf("0000:01:00.0", "eth1", total_vfs=4, num_vfs=1)
    h.add_link("eth2", ipv4=("10.2.0.9/24",))  # pre-existing, may be removed by the final state
    h.add_link("eth2.7", kind="vlan", parent="eth2", vlan_id=7)  # pre-existing VLAN
    h.add_link("eth0", ipv4=("192.0.2.10/24",))
    h.add_route(gw="192.0.2.1", dev="eth0")
    return h


@st.composite
def template_specs(draw):
    interfaces = []
    for name in draw(st.lists(st.sampled_from(IFACES), unique=True, max_size=2)):
        iface = {"name": name}
        if draw(st.booleans()):
            iface["mtu"] = draw(st.sampled_from([1500, 4000, 9000]))
        vlans = draw(st.lists(st.sampled_from([7, 8, 9]), unique=True, max_size=2))
        if vlans:
            iface["vlan"] = [{"id": vid} for vid in vlans]
        if draw(st.booleans()):
            iface["ipv4"] = {"address": draw(st.lists(st.sampled_from(POOL4), unique=True, max_size=2))}
        if draw(st.booleans()):
            iface["ipv6"] = {"address": draw(st.lists(st.sampled_from(POOL6), unique=True, max_size=2))}
        interfaces.append(iface)
    spec = {"interfaceConfig": interfaces}
    if draw(st.booleans()):
        entry = {"pfName": "eth1", "numVfs": draw(st.integers(0, 4))}
        if draw(st.booleans()):
            entry["vfDriver"] = draw(st.sampled_from(["vfio-pci", "iavf"]))
        if draw(st.booleans()):
            entry["mtu"] = draw(st.sampled_from([1500, 9000]))
        spec["sriovConfig"] = [entry]
    if draw(st.booleans()):
        spec["ovsConfig"] = [{"bridgeName": "br-p",
                              "nodeInterface": draw(st.sampled_from(["eth2", "eth2.8", "eth1.9"]))}]
    if draw(st.booleans()):
        spec["routes"] = {"ipv4": [{"dst": "10.99.0.0/16",
                                    "gw": draw(st.sampled_from(["192.0.2.254", "192.0.2.253"]))}]}
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(template_specs(), min_size=1, max_size=2),
       edited=st.lists(template_specs(), max_size=2))
def test_property_converges_and_release_all_restores(tmp_path_factory, specs, edited):
    fake = property_host()
    initial = fake.snapshot()
    node = Node(fake, tmp_path_factory.mktemp("state"), api_ip="192.0.2.1")
    templates = [make_template(f"t{i}", spec, created=f"2024-01-0{i + 1}T00:00:00Z")
                 for i, spec in enumerate(specs)]
    assert all(t.spec is not None for t in templates), [t.problems for t in templates]
    rounds, final = node.reconcile(templates)
    assert final.actions == [], short(final.actions)
    assert all(report.ok for _, report in rounds)
    # The templates are edited (entries dropped/added/changed, a template deleted): converge.
    edited_templates = [make_template(f"t{i}", spec, created=f"2024-01-0{i + 1}T00:00:00Z",
                                      generation=2) for i, spec in enumerate(edited)]
    rounds, final = node.reconcile(edited_templates)
    assert final.actions == [], short(final.actions)
    assert all(report.ok for _, report in rounds)
    rounds, final = node.reconcile([])
    assert all(report.ok for _, report in rounds)
    assert final.actions == [], short(final.actions)
    assert node.ledger.records() == {}
    assert fake.snapshot() == initial


def test_bounded_work_for_thousands_of_objects():
    """4,094 VLANs and 4,096 routes (the spec's limits) plan in one pass, and a host that has
    them all plans nothing. Counts are asserted, never time."""
    h = FakeHost()
    h.add_link("eth1", mtu=9000, ipv4=("10.0.0.1/16",))
    h.add_link("eth0", ipv4=("192.0.2.10/24",))
    h.add_route(gw="192.0.2.1", dev="eth0")
    ids = range(1, 4095)
    spec = {"interfaceConfig": [{"name": "eth1", "vlan": [{"id": i, "name": f"v{i}"} for i in ids]}],
            "routes": {"ipv4": [{"dst": f"10.{100 + i // 256}.{i % 256}.0/24", "gw": "10.0.0.254"}
                                for i in range(4096)]}}
    t = make_template("big", spec)
    assert t.spec is not None, t.problems[:3]
    links, routes = h.netlink.discover()
    observed = ObservedHost(links=links, routes=routes, bridges={})
    merged = merge([t], {}, observed)
    api = ApiServerPath("192.0.2.1", "eth0", "192.0.2.10", None)
    result = plan(merged.desired, observed, {}, api_server=api)
    assert len(result.actions) == 2 * 4094 + 4096 and result.refusals == []
    for a in result.actions:
        if a.verb == "ensure_vlan":
            h.netlink.ensure_vlan(a.target, a.params["parent"], a.params["vlan_id"])
        elif a.verb == "add_route":
            h.netlink.add_route(ObservedRoute(4, dst=a.params["dst"], gw=a.params["gw"]))
    links, routes = h.netlink.discover()
    observed = ObservedHost(links=links, routes=routes, bridges={})
    assert plan(merged.desired, observed, {}, api_server=api).actions == []


# ---- pending (write-ahead) records: safe whether or not the change happened ------------------

def pending(prior, created, value):
    return {"prior": prior, "created": created, "templates": ["gone"], "since": "x",
            "value": value, "pending": True}


def cleanup_of(fake, records, state_dir):
    observed = Node(fake, state_dir).host.discover()
    return short(plan(merge([], {}, observed).desired, observed, records).actions)


@pytest.mark.parametrize("case", [
    # (description, host setup, records, expected cleanup)
    ("vlan created, present and ours",
     lambda h: h.add_link("eno1.10", kind="vlan", parent="eno1", vlan_id=10),
     {"vlan:eno1.10": pending(None, True, {"parent": "eno1", "vlan_id": 10})},
     ["delete_link eno1.10"]),
    ("vlan never created", lambda h: None,
     {"vlan:eno1.10": pending(None, True, {"parent": "eno1", "vlan_id": 10})},
     ["forget vlan:eno1.10"]),
    ("vlan name taken by another VLAN id",
     lambda h: h.add_link("eno1.10", kind="vlan", parent="eno1", vlan_id=99),
     {"vlan:eno1.10": pending(None, True, {"parent": "eno1", "vlan_id": 10})},
     ["forget vlan:eno1.10"]),
    ("address added", lambda h: h._add_address(h.links["eno1"], "10.1.1.1/24"),
     {"addr:eno1:10.1.1.1/24": pending(None, True, {"address": "10.1.1.1/24"})},
     ["delete_address eno1 address=10.1.1.1/24"]),
    ("address never added", lambda h: None,
     {"addr:eno1:10.1.1.1/24": pending(None, True, {"address": "10.1.1.1/24"})},
     ["forget addr:eno1:10.1.1.1/24"]),
    ("pre-existing address deleted", lambda h: None,
     {"addr:eno1:10.9.9.9/24": pending("10.9.9.9/24", False, {"address": "10.9.9.9/24"})},
     ["add_address eno1 address=10.9.9.9/24"]),
    ("pre-existing address never deleted",
     lambda h: h._add_address(h.links["eno1"], "10.9.9.9/24"),
     {"addr:eno1:10.9.9.9/24": pending("10.9.9.9/24", False, {"address": "10.9.9.9/24"})},
     ["forget addr:eno1:10.9.9.9/24"]),
    ("route added", lambda h: h.add_route(dst="10.7.0.0/16", gw="145.40.65.94", dev="bond0"),
     {"route:4:10.7.0.0/16:0": pending(None, True, {"family": 4, "dst": "10.7.0.0/16",
                                                    "gw": "145.40.65.94", "metric": 0})},
     ["delete_route 10.7.0.0/16 dev=bond0 dst=10.7.0.0/16 family=4 gw=145.40.65.94 metric=0"]),
    ("someone else's route", lambda h: h.add_route(dst="10.7.0.0/16", dev="eno2"),
     {"route:4:10.7.0.0/16:0": pending(None, True, {"family": 4, "dst": "10.7.0.0/16",
                                                    "gw": "145.40.65.94", "metric": 0})},
     ["forget route:4:10.7.0.0/16:0"]),
    ("mtu never changed", lambda h: None,
     {"mtu:eno1": pending(1500, False, {"mtu": 9000})}, ["forget mtu:eno1"]),
    ("mtu changed", lambda h: setattr(h.links["eno1"], "mtu", 9000),
     {"mtu:eno1": pending(1500, False, {"mtu": 9000})}, ["set_mtu eno1 mtu=1500"]),
    ("numvfs never changed", lambda h: None,
     {"numvfs:0000:01:00.0": pending(0, False, {"num_vfs": 2})}, ["forget numvfs:0000:01:00.0"]),
    ("bridge someone else made",
     lambda h: h.bridges.update(br9=ObservedBridge(name="br9", datapath_type="")),
     {"bridge:br9": pending(None, True, {})}, ["forget bridge:br9"]),
    ("bridge we made",
     lambda h: h.ovs.ensure_bridge("br9", None),
     {"bridge:br9": pending(None, True, {})}, ["delete_bridge br9"]),
], ids=lambda case: case[0])
def test_pending_records_are_safe_either_way(case, tmp_path):
    _, setup, records, expected = case
    fake = seed_host()
    setup(fake)
    assert cleanup_of(fake, records, tmp_path / "state") == expected


def test_a_pending_vlan_record_does_not_make_a_foreign_link_drift(node):
    node.fake.add_link("eno1.10", kind="vlan", parent="eno1", vlan_id=99)
    records = {"vlan:eno1.10": pending(None, True, {"parent": "eno1", "vlan_id": 10})}
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}]})
    observed = node.host.discover()
    result = plan(merge([t], {}, observed).desired, observed, records)
    assert result.actions == []
    assert "was not created by HostPlumber" in result.notes[0].message
