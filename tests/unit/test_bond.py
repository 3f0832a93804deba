"""Linux bonds: spec validation, merge and Conflict, plan wording, apply/converge, drift,
cleanup and undo, ownership, the API-path guard and the status, on the fake host
(tests/support/fakehost.py + fakebond.py, a fake at our driver seam that behaves like the bonding
driver). The netlink driver itself runs on a real kernel in tests/fullkernel/test_bond_kernel.py
(this kernel has no bonding module)."""
import errno

import pytest

from plumber_agent.desired import merge
from plumber_agent.errors import HostError, InvalidSpec
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import network_spec_dict
from plumber_agent.models.status import to_api
from plumber_agent.status_builder import build_status
from tests.support.fakehost import FakeHost, Node, make_template

BOND = {"name": "bond0", "mode": "active-backup", "members": ["eth1", "eth2"],
        "options": {"miimon": 100, "primary": "eth1"}}
ON_TOP = {"name": "bond0", "mtu": 9000, "ipv4": {"address": ["192.0.2.10/24"]},
          "vlan": [{"id": 100}]}


def bond_host() -> FakeHost:
    h = FakeHost()
    h.add_link("eth0", ipv4=("10.0.0.5/24",))
    h.add_route(dst=None, gw="10.0.0.1", dev="eth0")
    h.add_link("eth1")
    h.add_link("eth2", up=False)
    h.add_link("eth3")
    return h


@pytest.fixture
def node(tmp_path):
    return Node(bond_host(), tmp_path / "state", api_ip="10.0.0.100")


def short(actions) -> list[str]:
    return [a.summary().split(None, 1)[1] for a in actions]


def run(node, templates):
    rounds, final = node.reconcile(templates)
    for result, report in rounds:
        assert report.ok, [(r.action.describe(), r.error) for r in report.failed()]
    return [short(result.actions) for result, _ in rounds], final


def tpl(name="t", bonds=(BOND,), interfaces=(ON_TOP,), created="2024-01-01T00:00:00Z", **extra):
    return make_template(name, {"bondConfig": list(bonds), "interfaceConfig": list(interfaces),
                                **extra}, created=created)


# ---- spec -------------------------------------------------------------------------------------

def test_a_bond_spec_parses_with_its_options():
    spec = parse_template_spec({"bondConfig": [
        BOND, {"name": "bond1", "mode": "802.3ad", "members": ["eth3"],
               "options": {"lacpRate": "fast", "xmitHashPolicy": "layer3+4"}}]})
    assert [b.settings() for b in spec.bond_config] == [
        {"mode": "active-backup", "miimon": 100, "primary": "eth1"},
        {"mode": "802.3ad", "lacp_rate": "fast", "xmit_hash_policy": "layer3+4"}]
    assert network_spec_dict(spec)["bondConfig"][1]["options"]["xmitHashPolicy"] == "layer3+4"


def test_a_spec_without_bonds_hashes_as_before():
    """No bondConfig key: upgrading the agent starts no rollout."""
    assert "bondConfig" not in network_spec_dict(parse_template_spec(
        {"interfaceConfig": [{"name": "eth1", "mtu": 9000}]}))


@pytest.mark.parametrize("bond, problem", [
    ({"mode": "active-backup", "members": ["eth1"]}, "spec.bondConfig[0].name: is required"),
    ({"name": "bond0", "members": ["eth1"]}, "spec.bondConfig[0].mode: is required"),
    ({"name": "bond0", "mode": "lacp", "members": ["eth1"]}, "spec.bondConfig[0].mode: 'lacp' is not"),
    ({"name": "bond0", "mode": "802.3ad"}, "spec.bondConfig[0].members: a bond needs at least one"),
    ({"name": "bond0", "mode": "802.3ad", "members": []}, "spec.bondConfig[0].members: a bond needs"),
    ({"name": "bond0", "mode": "802.3ad", "members": ["eth1", "eth1"]}, "members[1]: 'eth1' is listed twice"),
    ({"name": "bond0", "mode": "802.3ad", "members": ["bond0"]}, "members[0]: a bond cannot be its own"),
    ({"name": "bond0", "mode": "802.3ad", "members": ["../x"]}, "spec.bondConfig[0].members[0]:"),
    ({"name": "bond0", "mode": "802.3ad", "members": ["eth1;reboot"]}, "spec.bondConfig[0].members[0]:"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"],
      "options": {"lacpRate": "fast"}}, "options.lacpRate: applies to mode 802.3ad only"),
    ({"name": "bond0", "mode": "802.3ad", "members": ["eth1"],
      "options": {"primary": "eth1"}}, "options.primary: applies to mode"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"],
      "options": {"primary": "eth2"}}, "options.primary: 'eth2' is not one of the bond's members"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"],
      "options": {"miimon": -1}}, "options.miimon:"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"],
      "options": {"miimon": "100"}}, "options.miimon:"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"],
      "options": {"arpInterval": 100}}, "options.arpInterval: unknown field"),
    ({"name": "bond0", "mode": "active-backup", "members": ["eth1"], "slaves": ["eth2"]},
     "spec.bondConfig[0].slaves: unknown field"),
])
def test_bad_bonds_are_refused_with_a_path(bond, problem):
    with pytest.raises(InvalidSpec) as exc:
        parse_template_spec({"bondConfig": [bond]})
    assert any(problem in p for p in exc.value.problems), exc.value.problems


def test_a_member_of_two_bonds_and_a_member_with_its_own_mtu_are_refused():
    with pytest.raises(InvalidSpec) as exc:
        parse_template_spec({
            "bondConfig": [BOND, {"name": "bond1", "mode": "balance-rr", "members": ["eth2"]}],
            "interfaceConfig": [{"name": "eth1", "mtu": 9000}],
            "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "eth1"}]})
    problems = exc.value.problems
    assert "spec.bondConfig[1]: 'eth2' is already named at spec.bondConfig[0].members (a bond or a member belongs to one bond)" in problems
    assert any(p.startswith("spec.interfaceConfig[0]: eth1 is a member of bond bond0: its MTU "
                            "follows the bond's") for p in problems), problems
    assert any(p.startswith("spec.ovsConfig[0].nodeInterface: eth1 is a member of bond bond0")
               for p in problems), problems


# ---- merge ------------------------------------------------------------------------------------

def test_two_templates_disagreeing_on_a_bond_older_wins():
    old = tpl("old", interfaces=())
    new = tpl("new", bonds=[dict(BOND, mode="balance-rr", options={})], interfaces=(),
              created="2024-02-01T00:00:00Z")
    result = merge([new, old], {}, ObservedHost())
    assert result.desired.bonds["bond0"].mode == "active-backup"
    assert result.results["new"].state == "Conflict"
    assert "bond bond0: conflicts with template 'old'" in result.results["new"].message
    assert result.results["old"].state == "Applied"


def test_a_member_named_by_two_templates_bonds_stays_with_the_older():
    old = tpl("old", interfaces=())
    new = tpl("new", bonds=[{"name": "bond1", "mode": "balance-rr", "members": ["eth2", "eth3"]}],
              interfaces=(), created="2024-02-01T00:00:00Z")
    result = merge([new, old], {}, ObservedHost())
    assert result.desired.bonds["bond1"].members == ["eth3"]
    assert result.desired.bonds["bond0"].members == ["eth1", "eth2"]
    assert result.results["new"].state == "Conflict"
    assert "member eth2 of a bond: conflicts with template 'old'" in result.results["new"].message


def test_templates_agreeing_on_a_bond_share_it():
    result = merge([tpl("a", interfaces=()), tpl("b", interfaces=())], {}, ObservedHost())
    assert result.desired.bonds["bond0"].templates == ["a", "b"]
    assert {r.state for r in result.results.values()} == {"Applied"}


# ---- apply, converge, status ------------------------------------------------------------------

def test_a_bond_with_mtu_address_and_vlan_applies_in_order_then_converges(node):
    rounds, final = run(node, [tpl()])
    assert rounds[0] == [
        "ensure_bond bond0 miimon=100 mode=active-backup primary=eth1",
        "enslave eth1 bond=bond0",
        "enslave eth2 bond=bond0",
        "ensure_vlan bond0.100 parent=bond0 vlan_id=100",
        "set_mtu bond0 mtu=9000",
        "set_up bond0",
        "set_up bond0.100",
        "add_address bond0 address=192.0.2.10/24",
    ]
    assert final.actions == [] and final.notes == [] and final.refusals == []
    links = node.fake.links
    assert (links["eth1"].master, links["eth2"].master) == ("bond0", "bond0")
    # The kernel's rule: a member's MTU follows its bond's.
    assert links["eth1"].mtu == links["eth2"].mtu == links["bond0"].mtu == 9000
    assert links["bond0"].bond.active_member == "eth1"
    status = build_status(node.host.discover())
    by_name = {i.pf_name: i for i in status.interface_status}
    bond = by_name["bond0"].bond
    assert (bond.mode, bond.active_member) == ("active-backup", "eth1")
    assert [(m.name, m.state, m.mii_status) for m in bond.members] == [
        ("eth1", "active", "up"), ("eth2", "backup", "up")]
    assert by_name["eth2"].master == "bond0"
    api = to_api(status)
    assert {"mode": "active-backup", "activeMember": "eth1", "members": [
        {"name": "eth1", "state": "active", "miiStatus": "up"},
        {"name": "eth2", "state": "backup", "miiStatus": "up"}]} in [
            i.get("bond") for i in api["interfaceStatus"]]


def test_plan_wording_names_the_bond_and_what_enslaving_costs(node):
    node.fake.netlink.add_address("eth1", "198.51.100.7/24")
    _, result = node.plan([tpl()])
    lines = [a.describe() for a in result.actions]
    assert "link_create        ensure_bond bond0 miimon=100 mode=active-backup primary=eth1  # template t" in lines
    enslave = next(line for line in lines if "enslave eth1" in line)
    assert enslave == ("link_create        enslave eth1 bond=bond0  # template t; eth1 goes down "
                       "and comes back as a member of bond0: its own addresses "
                       "(198.51.100.7/24) and the routes through it stop carrying traffic")


def test_deleting_the_template_releases_members_as_they_were_and_deletes_the_bond(node):
    initial = node.fake.snapshot()
    run(node, [tpl()])
    _, result = node.plan([])
    assert short(result.actions) == [
        "forget addr:bond0:192.0.2.10/24",  # it goes with the bond
        "forget mtu:bond0",
        "release_member eth1 bond=bond0 up=True",
        "release_member eth2 bond=bond0 up=False",
        "delete_link bond0.100",
        "delete_link bond0",
    ]
    assert all(a.reason == "cleanup (was t)" for a in result.actions if a.verb != "forget")
    run(node, [])
    # eth1 up again, eth2 down as it was, both with their own MTU (the kernel puts it back).
    assert node.fake.snapshot() == initial
    assert node.ledger.records() == {}


def test_dropping_a_member_releases_only_that_member(node):
    run(node, [tpl()])
    _, result = node.plan([tpl(bonds=[dict(BOND, members=["eth1"])])])
    assert short(result.actions) == ["release_member eth2 bond=bond0 up=False"]
    run(node, [tpl(bonds=[dict(BOND, members=["eth1"])])])
    assert node.fake.links["eth2"].master is None and node.fake.links["eth2"].mtu == 1500


def test_a_typoed_member_undoes_nothing(node):
    run(node, [tpl()])
    _, result = node.plan([tpl(bonds=[dict(BOND, members=["eth1", "eth9"])])])
    assert result.actions == []
    problems = result.problems_by_template()["t"]
    assert "bond bond0: member eth9 does not exist on this node" in problems
    assert any(p.startswith("nothing it applied before is undone while it fails here")
               for p in problems), problems
    assert node.fake.links["eth2"].master == "bond0"


def test_a_missing_primary_member_is_a_note_and_no_setting_churn(node):
    bond = dict(BOND, members=["eth1", "eth9"], options={"primary": "eth9"})
    run(node, [tpl(bonds=[bond], interfaces=())])
    _, result = node.plan([tpl(bonds=[bond], interfaces=())])
    assert result.actions == []  # the kernel shows no primary until eth9 is a member
    assert "bond bond0: member eth9 does not exist on this node" in \
        result.problems_by_template()["t"]
    node.fake.add_link("eth9", up=False)  # it appears (a VF, a hot-plugged NIC)
    rounds, final = run(node, [tpl(bonds=[bond], interfaces=())])
    # enslaved first, then made primary (the kernel reports a primary only once it is a member)
    assert rounds == [["enslave eth9 bond=bond0"],
                      ["ensure_bond bond0 mode=active-backup primary=eth9"]]
    assert final.actions == [] and node.fake.links["bond0"].bond.active_member == "eth9"


def test_a_bond_not_created_by_us_is_left_alone(node):
    node.fake.netlink.ensure_bond("bond0", {"mode": "balance-rr"})
    before = node.fake.snapshot()
    _, result = node.plan([tpl(interfaces=())])
    assert result.actions == []
    assert result.problems_by_template()["t"] == [
        "interface bond0 already exists and was not created by HostPlumber as a bond; it is "
        "left alone"]
    run_rounds, _ = node.reconcile([tpl(interfaces=())])
    assert node.fake.snapshot() == before
    _, result = node.plan([])
    assert result.actions == []  # nothing recorded, nothing undone


def test_a_member_enslaved_elsewhere_is_left_alone(node):
    node.fake.netlink.ensure_bond("other", {"mode": "balance-rr"})
    node.fake.netlink.enslave("eth2", "other")
    _, result = node.plan([tpl(interfaces=())])
    assert "enslave eth2 bond=bond0" not in short(result.actions)
    assert "bond bond0: member eth2 is enslaved to other, not by HostPlumber; it is left alone" \
        in result.problems_by_template()["t"]


def test_another_template_giving_a_member_an_mtu_is_a_note(node):
    other = make_template("u", {"interfaceConfig": [{"name": "eth2", "mtu": 4000}]},
                          created="2024-03-01T00:00:00Z")
    _, result = node.plan([tpl(interfaces=()), other])
    assert "enslave eth2 bond=bond0" not in short(result.actions)
    assert any(p.startswith("bond bond0: member eth2 has an MTU of its own in a template")
               for p in result.problems_by_template()["t"])


def test_a_released_member_is_enslaved_again_as_drift(node):
    run(node, [tpl(interfaces=())])
    node.fake.netlink.release_member("eth2", up=False)
    _, result = node.plan([tpl(interfaces=())])
    assert short(result.actions) == ["enslave eth2 bond=bond0"]
    assert result.actions[0].reason == "drift; template t"
    run(node, [tpl(interfaces=())])
    assert node.fake.links["eth2"].master == "bond0"
    # The first prior is kept: the undo still puts eth2 back down.
    assert node.ledger.get("bondmember:eth2")["prior"] == {"up": False}


def test_a_mode_change_recreates_our_bond_and_enslaves_its_members_again(node):
    run(node, [tpl(interfaces=())])
    lacp = {"name": "bond0", "mode": "802.3ad", "members": ["eth1", "eth2"],
            "options": {"lacpRate": "fast"}}
    rounds, final = run(node, [tpl(bonds=[lacp], interfaces=())])
    assert rounds[0] == ["delete_link bond0", "ensure_bond bond0 lacp_rate=fast mode=802.3ad",
                         "enslave eth1 bond=bond0", "enslave eth2 bond=bond0", "set_up bond0"]
    assert final.actions == []
    assert node.fake.links["bond0"].bond.mode == "802.3ad"
    run(node, [])
    assert node.fake.links["eth1"].admin_up is True and node.fake.links["eth2"].admin_up is False
    assert "bond0" not in node.fake.links


def test_an_option_change_is_set_in_place(node):
    run(node, [tpl(interfaces=())])
    _, result = node.plan([tpl(bonds=[dict(BOND, options={"miimon": 250})], interfaces=())])
    assert short(result.actions) == ["ensure_bond bond0 miimon=250 mode=active-backup"]


def test_an_option_changed_by_hand_is_put_back_as_drift(node):
    run(node, [tpl(interfaces=())])
    node.fake.netlink.ensure_bond("bond0", {"mode": "active-backup", "miimon": 500})
    _, result = node.plan([tpl(interfaces=())])
    assert short(result.actions) == ["ensure_bond bond0 miimon=100 mode=active-backup "
                                     "primary=eth1"]
    assert result.actions[0].reason == "drift; template t"
    run(node, [tpl(interfaces=())])
    assert node.fake.links["bond0"].bond.miimon == 100


def test_an_enslave_that_failed_half_way_puts_the_member_back_up_on_undo(node):
    node.fake.fail("enslave", "eth1", HostError("the kernel said EBUSY"))
    node.reconcile([tpl(interfaces=())])  # the driver took eth1 down, then failed: pending
    node.fake.netlink.set_down("eth1")
    assert node.ledger.get("bondmember:eth1")["prior"] == {"up": True}
    _, result = node.plan([])
    assert "release_member eth1 bond=bond0 up=True" in short(result.actions)
    run(node, [])
    assert node.fake.links["eth1"].admin_up and node.fake.links["eth1"].master is None


def test_the_bonding_module_missing_fails_the_template_and_leaves_nothing(node):
    node.fake.bonding_available = False
    rounds, _ = node.reconcile([tpl(interfaces=())])
    report = rounds[0][1]
    failed = {r.action.verb: r.error for r in report.failed()}
    assert failed["ensure_bond"] == "cannot create bond bond0: no bonding module"
    assert failed["enslave"].startswith("skipped: depends on link:bond0")
    assert node.ledger.records() == {}  # the create certainly did not happen: no intent kept


# ---- the API-path guard -----------------------------------------------------------------------

def test_enslaving_the_nic_carrying_the_api_path_is_refused_without_the_opt_in(node):
    bond = {"name": "bond0", "mode": "active-backup", "members": ["eth0", "eth3"]}
    _, result = node.plan([tpl(bonds=[bond], interfaces=())])
    assert "enslave eth0 bond=bond0" not in short(result.actions)
    assert [r.message for r in result.refusals] == [
        "not enslaving eth0 to bond bond0: eth0 carries this node's path to the API server "
        "10.0.0.100 (set allowApiServerDisruption to allow)"]
    _, result = node.plan([tpl(bonds=[bond], interfaces=(), allowApiServerDisruption=True)])
    enslave = next(a for a in result.actions if a.target == "eth0")
    assert enslave.api_risk and result.refusals == []


def test_releasing_a_member_the_api_path_runs_over_is_refused(node):
    bond = {"name": "bond0", "mode": "active-backup", "members": ["eth0"]}
    run(node, [tpl(bonds=[bond], interfaces=(), allowApiServerDisruption=True)])
    # the node now reaches the API server over bond0 (its address and route moved by hand)
    node.fake.netlink.add_address("bond0", "10.0.0.5/24")
    node.fake.add_route(dst=None, gw="10.0.0.1", dev="bond0")
    _, result = node.plan([])
    assert not any(a.verb in ("release_member", "delete_link") for a in result.actions)
    assert any(r.message.startswith("not releasing eth0 from bond bond0: eth0 carries this "
                                    "node's path to the API server") for r in result.refusals)


def test_a_new_member_of_the_bond_carrying_the_api_path_is_let_through_and_probed(node):
    bond = {"name": "bond0", "mode": "active-backup", "members": ["eth0"]}
    run(node, [tpl(bonds=[bond], interfaces=(), allowApiServerDisruption=True)])
    node.fake.netlink.add_address("bond0", "10.0.0.5/24")
    node.fake.add_route(dst=None, gw="10.0.0.1", dev="bond0")
    _, result = node.plan([tpl(bonds=[dict(bond, members=["eth0", "eth3"])], interfaces=())])
    (enslave,) = result.actions
    assert (enslave.verb, enslave.target, enslave.api_risk) == ("enslave", "eth3", True)
    assert result.refusals == []


# ---- the fake behaves like the kernel ---------------------------------------------------------

def test_the_kernel_refuses_to_enslave_an_up_link():
    h = bond_host()
    h.netlink.ensure_bond("bond0", {"mode": "active-backup"})
    with pytest.raises(HostError) as exc:
        h.netlink.kernel_enslave("eth1", "bond0")
    assert exc.value.errno == errno.EPERM
    h.netlink.kernel_enslave("eth2", "bond0")  # down: fine, and the kernel opens it
    assert h.links["eth2"].admin_up and h.links["eth2"].master == "bond0"


# ---- a VLAN-filtering Linux bridge over the bond ----------------------------------------------

BRIDGE_OVER_BOND = {"name": "br0", "stp": False, "vlanFiltering": True,
                    "ports": [{"name": "bond0", "tagged": [100, "200-210"]},
                              {"name": "eth3", "pvid": 100}]}


def test_a_vlan_filtering_bridge_over_the_bond_applies_and_is_undone(node):
    initial = node.fake.snapshot()
    t = tpl(interfaces=(), linuxBridgeConfig=[BRIDGE_OVER_BOND])
    rounds, final = run(node, [t])
    # the bond and its members first, then the bridge, then the bond as its port
    assert rounds[0] == [
        "ensure_bond bond0 miimon=100 mode=active-backup primary=eth1",
        "enslave eth1 bond=bond0", "enslave eth2 bond=bond0",
        "ensure_linux_bridge br0 stp=False vlan_filtering=True",
        "set_linux_bridge_port bond0 bridge=br0", "set_linux_bridge_port eth3 bridge=br0",
        "set_linux_bridge_vlans bond0 vlan_add=['100', '200-210'] vlans=['100', '200-210']",
        "set_linux_bridge_vlans eth3 vlan_add=['100 pvid untagged'] vlans=['100 pvid untagged']",
        "set_up bond0", "set_up br0"]
    assert final.actions == [] and final.notes == []
    links = node.fake.links
    assert links["bond0"].master == "br0" and links["eth1"].master == "bond0"
    status = {i.pf_name: i for i in build_status(node.host.discover()).interface_status}
    assert status["bond0"].master == "br0" and status["bond0"].bond.mode == "active-backup"
    # the kernel's default pvid 1 entry stays beside ours (it was not ours to remove)
    assert status["bond0"].bridge_vlans == ["1 pvid untagged", "100", "200-210"]
    run(node, [])
    assert node.fake.snapshot() == initial
    assert node.ledger.records() == {}


def test_a_bond_member_named_as_a_bridge_port_is_not_enslaved(node):
    bridge = {"name": "br0", "ports": [{"name": "eth2"}]}
    other = make_template("u", {"linuxBridgeConfig": [bridge]}, created="2024-03-01T00:00:00Z")
    _, result = node.plan([tpl(interfaces=()), other])
    assert "enslave eth2 bond=bond0" not in short(result.actions)
    assert any(p.startswith("bond bond0: member eth2 is a Linux bridge port in a template")
               for p in result.problems_by_template()["t"])


# ---- VFs as members, interest -----------------------------------------------------------------

def test_vfs_created_by_the_same_template_are_enslaved_once_they_exist(tmp_path):
    fake = bond_host()
    fake.add_pf("0000:01:00.0", "eno1", total_vfs=8)
    node = Node(fake, tmp_path / "state", api_ip="10.0.0.100")
    t = make_template("t", {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}],
                            "bondConfig": [{"name": "bond0", "mode": "active-backup",
                                            "members": ["eno1v0", "eno1v1"]}]})
    rounds, final = run(node, [t])
    # the VFs' netdevs appear with the numVfs write: no note for them, enslaved on the re-plan
    assert rounds == [["set_num_vfs 0000:01:00.0 num_vfs=2",
                       "ensure_bond bond0 mode=active-backup", "set_up bond0"],
                      ["enslave eno1v0 bond=bond0", "enslave eno1v1 bond=bond0"]]
    assert final.actions == [] and final.notes == []
    assert fake.links["eno1v1"].master == "bond0"


def test_a_bond_and_its_members_are_managed_interfaces(node):
    from plumber_agent.interest import MANAGED, interest_of
    merged, _ = node.plan([tpl(interfaces=())])
    interest = interest_of(merged.desired, node.host.discover(), {})
    assert {name: interest.links.get(name) for name in ("bond0", "eth1", "eth2")} == {
        "bond0": MANAGED, "eth1": MANAGED, "eth2": MANAGED}
