"""Kernel collateral (models/collateral.py) on the in-memory host: what `plan` says the kernel
will drop or replace, and that the ledger record of what it dropped survives a restart -- also
one a crash left pending between the change and its confirmation.

The real-kernel behaviour behind the fake's rules is tested in tests/host/test_collateral.py
(and in the full-kernel VM tier)."""
from __future__ import annotations

import pytest

from plumber_agent.host.ledger import read_records
from tests.support.fakehost import CrashAt, FakeHost, Node, SimulatedCrash, make_template

REPLACE = make_template("replace", {"interfaceConfig": [
    {"name": "eno1", "ipv4": {"address": ["10.0.0.6/24"]}}]})
OWNER = "addr:eno1:10.0.0.5/24"


def host() -> FakeHost:
    h = FakeHost()
    h.add_link("eno1", ipv4=("10.0.0.5/24",), ipv6=("2001:db8::5/64",))
    h.add_link("eno2", ipv4=("192.168.7.2/24",))
    h.add_route(dst=None, gw="10.0.0.1", dev="eno1")
    h.add_route(dst="10.1.0.0/16", gw="10.0.0.254", dev="eno1")
    h.add_route(dst="172.16.0.0/16", dev="eno2", src="10.0.0.5", proto="static")
    h.add_route(family=6, dst="2001:db8:9::/48", gw="2001:db8::1", dev="eno1", metric=1024)
    return h


def lines(node, templates) -> list[str]:
    _, result = node.plan(templates)
    return [a.describe() for a in result.actions]


def line_of(found: list[str], part: str) -> str:
    (line,) = [text for text in found if part in text]
    return line


@pytest.fixture
def node(tmp_path):
    return Node(host(), tmp_path / "state")


def test_plan_names_the_routes_the_kernel_drops_with_an_address(node):
    delete = line_of(lines(node, [REPLACE]), "delete_address eno1")
    assert delete.endswith(
        "# template replace; drops the default route via 10.0.0.1 dev eno1 (the kernel removes "
        "it with 10.0.0.5/24); drops route 10.1.0.0/16 via 10.0.0.254 dev eno1 (the kernel "
        "removes it with 10.0.0.5/24); drops route 172.16.0.0/16 dev eno2 src 10.0.0.5 (the "
        "kernel removes it with 10.0.0.5/24)"), delete


def test_plan_does_not_name_routes_another_address_keeps(node):
    """With 10.0.0.7/24 left on eno1 the kernel keeps the routes through it: only the route
    whose preferred source goes is named (and the secondary that may go with its primary)."""
    keep = make_template("keep", {"interfaceConfig": [
        {"name": "eno1", "ipv4": {"address": ["10.0.0.7/24"]}}]})
    node.fake._add_address(node.fake.links["eno1"], "10.0.0.7/24")
    delete = line_of(lines(node, [keep]), "delete_address eno1")
    assert "default route" not in delete and "10.1.0.0/16" not in delete
    assert "drops route 172.16.0.0/16 dev eno2 src 10.0.0.5" in delete
    assert "may drop address 10.0.0.7/24 of eno1" in delete


def test_plan_names_a_replaced_default_route_and_ipv6_lost_below_mtu_1280(node):
    t = make_template("t", {
        "interfaceConfig": [{"name": "eno1", "mtu": 1200}],
        "routes": {"ipv4": [{"gw": "10.0.0.2"}]}})
    found = lines(node, [t])
    assert line_of(found, "add_route default").endswith(
        "# template t; replaces the default route via 10.0.0.1 dev eno1")
    mtu = line_of(found, "set_mtu eno1")
    assert ("drops address 2001:db8::5/64 of eno1 (the kernel disables IPv6 on eno1 below MTU "
            "1280)") in mtu
    assert "drops route 2001:db8:9::/48 via 2001:db8::1 dev eno1 (the kernel disables" in mtu


def test_plan_names_the_vfs_a_numvfs_change_destroys(tmp_path):
    h = FakeHost()
    h.add_pf("0000:01:00.0", "eno1", num_vfs=2)
    node = Node(h, tmp_path / "state")
    t = make_template("t", {"sriovConfig": [{"pfName": "eno1", "numVfs": 4}]})
    assert "destroys the 2 VF(s) of 0000:01:00.0 with their drivers and settings" in line_of(
        lines(node, [t]), "set_num_vfs")


def test_undo_restores_the_dropped_routes_and_the_record_is_gone(node):
    initial = node.fake.snapshot()
    node.reconcile([REPLACE])
    assert not [r for r in node.fake.routes if r.dst in (None, "10.1.0.0/16")]
    rec = node.ledger.get(f"collateral:{OWNER}")
    assert {r["dst"] for r in rec["value"]["routes"]} == {None, "10.1.0.0/16", "172.16.0.0/16"}
    restore = line_of(lines(node, []), "restore_collateral")
    assert ("restores the default route via 10.0.0.1 dev eno1 (the kernel removed it with "
            "10.0.0.5/24)") in restore
    node.reconcile([])
    assert node.fake.snapshot() == initial
    assert node.ledger.records() == {}


def test_undo_waits_for_the_owner_undo(node):
    """While the address is still removed (its undo refused or not planned yet), the routes
    are not put back: they could not be (their gateway is unreachable) and must come after."""
    node.reconcile([REPLACE])
    records = node.ledger.records()
    _, result = node.plan([])
    verbs = [a.verb for a in result.actions]
    assert verbs.index("add_address") < verbs.index("restore_collateral")
    # The same plan with the owner's record still wanted gives no restore at all.
    assert not [a for a in node.plan([REPLACE])[1].actions if a.verb == "restore_collateral"]
    assert records[f"collateral:{OWNER}"]["value"]


def test_the_collateral_record_survives_a_restart(node):
    node.reconcile([REPLACE])
    on_disk = read_records(str(node.state_dir))
    assert on_disk[f"collateral:{OWNER}"] == node.ledger.get(f"collateral:{OWNER}")
    restarted = node.restart()
    initial_routes = {(r.dst, r.gw) for r in host().routes}
    restarted.reconcile([])
    assert {(r.dst, r.gw) for r in restarted.fake.routes} >= initial_routes
    assert restarted.ledger.records() == {}


def test_a_crash_right_after_the_address_went_leaves_a_pending_record_undo_restores(tmp_path):
    """SIGKILL between the kernel dropping the routes and the confirmation: the record written
    ahead (the routes at risk) is on disk, pending; undo restores those that are missing."""
    fake = host()
    initial = fake.snapshot()
    counter = CrashAt(0, after=True)
    Node(host(), tmp_path / "ref", crash=counter).reconcile([REPLACE])
    calls = [i for i in range(1, counter.count + 1)]
    crashed = None
    for n in calls:
        probe = CrashAt(n, after=True)
        node = Node(host(), tmp_path / f"probe{n}", crash=probe)
        with pytest.raises(SimulatedCrash):
            node.reconcile([REPLACE])
        if probe.fired[0] == "delete_address":
            crashed = node
            break
    assert crashed is not None
    restarted = crashed.restart()
    rec = restarted.ledger.get(f"collateral:{OWNER}")
    assert rec["pending"] and rec.get("value") is None
    assert {r["dst"] for r in rec["prior"]["routes"]} >= {None, "10.1.0.0/16"}
    restarted.reconcile([])
    assert restarted.fake.snapshot() == initial
    assert restarted.ledger.records() == {}
    assert fake.snapshot() == initial


# ---- VF settings destroyed by a numVfs change ----------------------------------------------------

PF = "0000:01:00.0"
MORE_VFS = make_template("more", {"sriovConfig": [{"pfName": "eno1", "numVfs": 4}]})
CONFIGURED = {"mac": "02:00:00:00:00:10", "vlan": 10, "qos": 0, "spoofchk": False, "trust": True,
              "link_state": 2, "min_tx_rate": 0, "max_tx_rate": 100}


def sriov_node(tmp_path) -> Node:
    h = FakeHost()
    h.add_pf(PF, "eno1", num_vfs=2)
    h.pfs[PF].vf_settings[0] = dict(CONFIGURED)  # `ip link set eno1 vf 0 mac ... vlan 10 ...`
    return Node(h, tmp_path / "state")


def test_plan_names_the_vf_settings_a_numvfs_change_drops(tmp_path):
    line = line_of(lines(sriov_node(tmp_path), [MORE_VFS]), "set_num_vfs")
    assert ("drops the settings of VF 0 of eno1 (mac 02:00:00:00:00:10, vlan 10, spoofchk off, "
            "trust on, state disable, max_tx_rate 100)") in line
    assert "VF 1 of eno1" not in line  # bare: nothing to lose


def test_undo_of_a_numvfs_change_puts_the_vf_settings_back(tmp_path):
    node = sriov_node(tmp_path)
    initial = node.fake.snapshot()
    node.reconcile([MORE_VFS])
    assert node.fake.pfs[PF].num_vfs == 4 and node.fake.pfs[PF].vf_settings[0]["vlan"] == 0
    rec = read_records(str(node.state_dir))[f"collateral:numvfs:{PF}"]
    assert [(vf["id"], vf["mac"]) for vf in rec["value"]["vfs"]] == [(0, CONFIGURED["mac"])]
    restore = line_of(lines(node, []), "restore_collateral")
    assert "restores the settings of VF 0 of eno1 (mac 02:00:00:00:00:10" in restore
    node.restart().reconcile([])
    assert node.fake.snapshot() == initial
    assert read_records(str(node.state_dir)) == {}


def test_undo_leaves_a_vf_someone_configured_meanwhile(tmp_path):
    """numVfs put back by hand and VF 0 given another MAC: undo has no numVfs to restore and
    leaves VF 0's settings as that person made them."""
    node = sriov_node(tmp_path)
    node.reconcile([MORE_VFS])
    fake = node.fake
    fake._destroy_vfs(fake.pfs[PF])
    fake._create_vfs(fake.pfs[PF], 2)
    fake.pfs[PF].vf_settings[0]["mac"] = "02:00:00:00:00:99"
    node.reconcile([])
    assert fake.pfs[PF].vf_settings[0]["mac"] == "02:00:00:00:00:99"
    assert fake.pfs[PF].vf_settings[0]["vlan"] == 0
    assert node.ledger.records() == {}


def test_the_template_status_preview_names_the_side_effects(tmp_path, node):
    """A dry-run rollout publishes the plan it would apply: the kernel's collateral is in it."""
    from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
    from plumber_agent.models.parse import template_from_object

    preview = template_from_object({
        "metadata": {"name": "replace", "generation": 1, "uid": "u1",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.0.0.6/24"]}}],
                 "rollout": {"maxUnavailable": 1, "dryRun": True}}})
    gate = RolloutGate(approved=ApprovedSpecs(str(tmp_path / "rollout.json")), slots=None)
    result = gate.select([preview], {}, node.host.discover(), node.ledger.records(), None)
    verdict = result.verdicts["replace"]
    assert verdict.state == "Previewed"
    assert any("drops the default route via 10.0.0.1 dev eno1 (the kernel removes it with "
               "10.0.0.5/24)" in line for line in verdict.planned), verdict.planned


def test_a_route_of_ours_the_kernel_dropped_is_not_brought_back_by_undo(node):
    """Our own route through eno1 goes with the address like any other; the template re-adds
    it, and undo deletes it (its own record), never restores it as collateral."""
    initial = node.fake.snapshot()
    route = {"dst": "10.50.0.0/16", "gw": "10.0.0.254"}
    v1 = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {
        "address": ["10.0.0.5/24"]}}], "routes": {"ipv4": [route]}}, generation=1)
    v2 = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {
        "address": ["10.0.0.6/24"]}}], "routes": {"ipv4": [route]}}, generation=2)
    node.reconcile([v1])
    node.reconcile([v2])
    assert [r.gw for r in node.fake.routes if r.dst == "10.50.0.0/16"] == ["10.0.0.254"]
    rec = node.ledger.get(f"collateral:{OWNER}")
    assert "10.50.0.0/16" not in {r["dst"] for r in rec["value"]["routes"]}
    node.reconcile([])
    assert node.fake.snapshot() == initial


def test_a_wanted_route_the_kernel_dropped_and_the_agent_re_added_comes_back_as_found(node):
    """The pre-existing default route is also what the template wants: the address change drops
    it, the next round adds it again (now recorded as ours); undo deletes ours and puts the one
    found back (its protocol 'boot' included)."""
    initial = node.fake.snapshot()
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "ipv4": {
        "address": ["10.0.0.6/24"]}}], "routes": {"ipv4": [{"gw": "10.0.0.1"}]}})
    node.reconcile([t])
    (default,) = [r for r in node.fake.routes if r.dst is None]
    assert (default.gw, default.proto) == ("10.0.0.1", "static")
    node.reconcile([])
    assert node.fake.snapshot() == initial
