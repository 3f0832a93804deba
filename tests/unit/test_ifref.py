"""Interface references (pci:, mac:, altname:): validation, resolution against the observed host,
the merge's per-template results and status, and -- through the real reconciler, executor and
ledger on the fake host -- a NIC renamed between passes, a NIC that vanished, two NICs swapping
names."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumber_agent.desired import merge
from plumber_agent.desired.ifref import REFERENCE_FIELDS, LinkIndex, Resolver
from plumber_agent.errors import InvalidSpec
from plumber_agent.kinds.base import CSV, LIST, ONE
from plumber_agent.models.ifref import canonical_ifref, check_ifref
from plumber_agent.models.observed import ObservedHost, ObservedLink
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.status import TemplateState
from tests.support.fakehost import FakeHost, Node, make_template

PCI_A, PCI_B = "0000:3b:00.0", "0000:3b:00.1"
MAC_A = "b4:96:91:70:19:38"


def host(**extra) -> ObservedHost:
    links = {
        "enp59s0f0": ObservedLink("enp59s0f0", 2, mac=MAC_A, perm_mac=MAC_A, pci_addr=PCI_A,
                                  altnames=["uplink0"]),
        "enp59s0f1": ObservedLink("enp59s0f1", 3, mac="02:00:00:00:00:09",
                                  perm_mac="b4:96:91:70:19:39", pci_addr=PCI_B),
        "veth0": ObservedLink("veth0", 4, mac="52:54:00:aa:bb:cc"),  # no perm MAC, no PCI
    }
    links.update(extra)
    return ObservedHost(links=links, bridges={})


# ---- the spec side: strict validation, canonical text --------------------------------------

@pytest.mark.parametrize("value", [
    "eth1", "pci:0000:3b:00.0", "pci:0000:3B:00.7", "mac:B4:96:91:70:19:38",
    "altname:enp59s0f0np0", "altname:" + "a" * 127])
def test_good_references(value):
    assert check_ifref(value) is None


@pytest.mark.parametrize("value, problem", [
    ("pci:3b:00.0", "'3b:00.0' is not a PCI address of the form 0000:3b:00.0"),
    ("pci:0000:3b:00.8", "is not a PCI address"),
    ("pci:0000:3b:00.0/../..", "is not a PCI address"),
    ("mac:b4:96:91:70:19", "is not a MAC address of the form 52:54:00:12:34:56"),
    ("mac:b4-96-91-70-19-38", "is not a MAC address"),
    ("mac:01:00:5e:00:00:01", "is a multicast address, never a NIC's permanent MAC"),
    ("mac:00:00:00:00:00:00", "the all-zero address is no NIC's permanent MAC"),
    ("altname:", "is not a valid alternative name"),
    ("altname:" + "a" * 128, "longer than 127 characters"),
    ("altname:a/b", "is not a valid alternative name"),
    ("altname:-x", "is not a valid alternative name"),
    ("eth0:1", "is neither an interface name (no ':' allowed) nor a reference"),
    ("PCI:0000:3b:00.0", "is neither an interface name"),
    ("name:eth0", "is neither an interface name"),
    (7, "7 is not a string"),
])
def test_bad_references_say_why(value, problem):
    assert problem in (check_ifref(value) or "")


def test_canonical_text_lowers_hex_only():
    assert canonical_ifref("pci:0000:3B:00.0") == "pci:0000:3b:00.0"
    assert canonical_ifref("mac:B4:96:91:70:19:38") == "mac:b4:96:91:70:19:38"
    assert canonical_ifref("altname:UpLink") == "altname:UpLink"
    assert canonical_ifref("Eth1") == "Eth1"


def problems(spec: dict) -> list[str]:
    with pytest.raises(InvalidSpec) as exc:
        parse_template_spec(spec)
    return exc.value.problems


def test_every_interface_field_accepts_a_reference_in_canonical_form():
    spec = parse_template_spec({
        "sriovConfig": [{"pfName": "mac:B4:96:91:70:19:38", "numVfs": 2}],
        "interfaceConfig": [{"name": "pci:0000:3B:00.0", "mtu": 9000,
                             "vlan": [{"id": 10, "name": "data10"}]}],
        "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "altname:uplink0, eth2"}],
        "routes": {"ipv4": [{"dst": "10.9.0.0/16", "dev": "pci:0000:3B:00.1"}]}})
    assert spec.sriov_config[0].pf_name == "mac:b4:96:91:70:19:38"
    assert spec.interface_config[0].name == "pci:0000:3b:00.0"
    assert spec.ovs_config[0].node_interface == "altname:uplink0,eth2"
    assert spec.routes.ipv4[0].dev == "pci:0000:3b:00.1"


def test_bad_references_are_refused_with_their_paths():
    assert problems({
        "sriovConfig": [{"pfName": "mac:zz:96:91:70:19:38", "numVfs": 2}],
        "interfaceConfig": [{"name": "pci:0000:3b:00", "mtu": 9000}],
        "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "eth1,altname:a b"}],
        "routes": {"ipv6": [{"dst": "2001:db8::/64", "dev": "mac:01:00:00:00:00:00"}]}}) == [
        "spec.sriovConfig[0].pfName: 'mac:zz:96:91:70:19:38': 'zz:96:91:70:19:38' is not a MAC "
        "address of the form 52:54:00:12:34:56",
        "spec.interfaceConfig[0].name: 'pci:0000:3b:00': '0000:3b:00' is not a PCI address of "
        "the form 0000:3b:00.0",
        "spec.ovsConfig[0].nodeInterface: 'altname:a b': 'a b' is not a valid alternative name "
        "(ASCII letters, digits, '_', '.', '-'; not starting with '-' or '.')",
        "spec.routes.ipv6[0].dev: 'mac:01:00:00:00:00:00': 01:00:00:00:00:00 is a multicast "
        "address, never a NIC's permanent MAC"]


def test_a_vlan_on_a_referenced_parent_needs_its_own_name():
    """<parent>.<id> made from whatever the kernel calls the NIC today would change with it."""
    assert problems({"interfaceConfig": [{"name": "pci:0000:3b:00.0", "vlan": [{"id": 10}]}]}) == [
        "spec.interfaceConfig[0].vlan[0].name: is required when the parent is named by "
        "reference: a name made from the kernel's name would change when it renames the NIC"]


def test_a_pool_on_a_referenced_interface_is_refused_for_now():
    assert problems({"interfaceConfig": [{"name": "altname:uplink0",
                                          "ipv4": {"pool": {"cidr": "10.1.0.0/24"}}}]}) == [
        "spec.interfaceConfig[0].ipv4.pool: is not supported on an interface named by "
        "reference yet: name it by its kernel name"]


def test_the_same_nic_twice_by_the_same_reference_is_refused():
    assert problems({"interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 9000},
                                         {"name": "pci:0000:3B:00.0", "mtu": 1500}]}) == [
        "spec.interfaceConfig[1].name: 'pci:0000:3b:00.0' is already configured at "
        "spec.interfaceConfig[0]"]


# ---- resolution ------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, name", [
    ("pci:0000:3b:00.0", "enp59s0f0"), ("mac:b4:96:91:70:19:38", "enp59s0f0"),
    ("altname:uplink0", "enp59s0f0"), ("pci:0000:3b:00.1", "enp59s0f1"),
    ("mac:b4:96:91:70:19:39", "enp59s0f1"), ("eth7", "eth7")])
def test_a_reference_resolves_to_the_one_interface_it_matches(ref, name):
    assert LinkIndex(host()).resolve(ref).name == name


def test_a_reference_matching_nothing_is_a_problem_not_a_guess():
    found = LinkIndex(host()).resolve("pci:0000:af:00.0")
    assert (found.name, found.problem) == (None, "pci:0000:af:00.0 matches no interface on "
                                                 "this node")


def test_the_current_mac_is_not_the_permanent_one():
    """veth0's MAC is only its current one (a veth has no permanent MAC); enp59s0f1's current
    MAC was changed (a bond member's is): neither matches, and the message says why."""
    index = LinkIndex(host())
    assert index.resolve("mac:52:54:00:aa:bb:cc").problem == (
        "mac:52:54:00:aa:bb:cc matches no interface on this node (veth0 has it as its current "
        "MAC, but a reference names the permanent MAC: none reported by its driver)")
    assert index.resolve("mac:02:00:00:00:00:09").problem.endswith(
        "(enp59s0f1 has it as its current MAC, but a reference names the permanent MAC: "
        "b4:96:91:70:19:39)")


def test_two_interfaces_on_one_pci_function_are_ambiguous():
    rep = ObservedLink("eth0rep", 9, pci_addr=PCI_A)  # a switchdev representor
    found = LinkIndex(host(eth0rep=rep)).resolve("pci:0000:3b:00.0")
    assert found.name is None
    assert found.problem == ("pci:0000:3b:00.0 matches 2 interfaces on this node (enp59s0f0, "
                             "eth0rep); name one of them by altname: or kernel name")


def test_a_spec_without_references_is_returned_as_is():
    spec = parse_template_spec({"interfaceConfig": [{"name": "eth1", "mtu": 9000}],
                                "routes": {"ipv4": [{"dst": "10.0.0.0/8", "dev": "eth1"}]}})
    found = Resolver(host()).resolve_spec(spec)
    assert found.spec is spec and found.references == {} and found.problems == []


def test_resolve_spec_replaces_every_reference_and_leaves_out_failing_entries():
    spec = parse_template_spec({
        "interfaceConfig": [{"name": "altname:uplink0", "mtu": 9000},
                            {"name": "altname:nosuch", "mtu": 1400},
                            {"name": "eth1", "mtu": 1500}],
        "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "pci:0000:3b:00.1,veth0"},
                      {"bridgeName": "br1", "nodeInterface": "veth0,mac:b4:96:91:70:19:99"}],
        "routes": {"ipv4": [{"dst": "10.9.0.0/16", "dev": "pci:0000:3b:00.0"}]}})
    found = Resolver(host()).resolve_spec(spec)
    assert [i.name for i in found.spec.interface_config] == ["enp59s0f0", "eth1"]
    assert [(o.bridge_name, o.node_interface) for o in found.spec.ovs_config] == [
        ("br0", "enp59s0f1,veth0")]
    assert found.spec.routes.ipv4[0].dev == "enp59s0f0"
    assert found.references == {"altname:uplink0": "enp59s0f0", "pci:0000:3b:00.1": "enp59s0f1",
                                "pci:0000:3b:00.0": "enp59s0f0"}
    assert found.problems == [
        "spec.interfaceConfig[1].name: altname:nosuch matches no interface on this node",
        "spec.ovsConfig[1].nodeInterface: mac:b4:96:91:70:19:99 matches no interface on this "
        "node"]
    # The template's own spec is untouched: what is hashed for rollouts stays the reference.
    assert spec.interface_config[0].name == "altname:uplink0"


# ---- the merge: every kind sees kernel names; the status says which ---------------------------

def test_merge_gives_every_kind_the_resolved_name_and_reports_it():
    tpl = make_template("t", {
        "sriovConfig": [{"pfName": "altname:uplink0", "numVfs": 0}],
        "interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 9000,
                             "vlan": [{"id": 10, "name": "data10"}]}],
        "routes": {"ipv4": [{"dst": "10.9.0.0/16", "dev": "mac:b4:96:91:70:19:39"}]}})
    observed = host()
    from plumber_agent.models.observed import ObservedPf
    observed.pfs = {PCI_A: ObservedPf(PCI_A, ifname="enp59s0f0", total_vfs=8)}
    merged = merge([tpl], {}, observed)
    assert set(merged.desired.links) == {"enp59s0f0"}
    assert merged.desired.vlans["data10"].parent == "enp59s0f0"
    assert merged.desired.routes[(4, "10.9.0.0/16", 0)].dev == "enp59s0f1"
    assert set(merged.desired.pfs) == {PCI_A}
    status = merged.results["t"].to_status()
    assert status.state == TemplateState.APPLIED
    assert [(r.reference, r.name) for r in status.interface_references] == [
        ("altname:uplink0", "enp59s0f0"), ("mac:b4:96:91:70:19:39", "enp59s0f1"),
        ("pci:0000:3b:00.0", "enp59s0f0")]


def test_an_unresolved_reference_fails_only_its_template_and_only_its_entry():
    bad = make_template("bad", {"interfaceConfig": [{"name": "pci:0000:af:00.0", "mtu": 9000},
                                                    {"name": "eth1", "mtu": 1400}]})
    good = make_template("good", {"interfaceConfig": [{"name": "altname:uplink0", "mtu": 1500}]},
                         created="2024-02-01T00:00:00Z")
    merged = merge([bad, good], {}, host())
    assert merged.results["bad"].state == TemplateState.FAILED
    assert merged.results["bad"].message == (
        "spec.interfaceConfig[0].name: pci:0000:af:00.0 matches no interface on this node: its "
        "entry is not applied")
    assert merged.results["good"].state == TemplateState.APPLIED
    assert merged.desired.failing == {"bad"}
    assert {n: link.mtu.value for n, link in merged.desired.links.items()} == {
        "eth1": 1400, "enp59s0f0": 1500}


def test_two_templates_naming_one_nic_differently_meet_on_its_kernel_name():
    """By name in one template, by PCI address in another: one field, the conflict rule."""
    old = make_template("old", {"interfaceConfig": [{"name": "enp59s0f0", "mtu": 9000}]})
    new = make_template("new", {"interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 1500}]},
                        created="2024-02-01T00:00:00Z")
    merged = merge([old, new], {}, host())
    assert merged.desired.links["enp59s0f0"].mtu.value == 9000
    assert merged.results["new"].state == TemplateState.CONFLICT
    assert "MTU of interface enp59s0f0: conflicts with template 'old'" in \
        merged.results["new"].message


# ---- the whole loop on the fake host: rename, vanish, swap ------------------------------------

def nic_host() -> FakeHost:
    fake = FakeHost()
    fake.add_pf(PCI_A, "eth0", total_vfs=0)
    fake.add_pf(PCI_B, "eth1", total_vfs=0)
    fake.add_link("eth0", mtu=1500)
    fake.add_link("eth1", mtu=1500)
    return fake


def rename(fake: FakeHost, old: str, new: str) -> None:
    """What the kernel does on `ip link set OLD name NEW` (or a boot naming it otherwise): the
    device, its settings and addresses stay; only the name changes."""
    link = fake.links.pop(old)
    link.ifname = new
    fake.links[new] = link
    for pf in fake.pfs.values():
        if pf.ifname == old:
            pf.ifname = new
    for route in fake.routes:
        if route.dev == old:
            route.dev = new
    for child in fake.links.values():  # a VLAN keeps its parent (IFLA_LINK is an index)
        if child.parent == old:
            child.parent = new
    if old in fake.bond_original_mtu:  # a bond member: the bonding driver keeps it
        fake.bond_original_mtu[new] = fake.bond_original_mtu.pop(old)


def converge(node: Node, templates) -> None:
    rounds, final = node.reconcile(templates)
    for _result, report in rounds:
        assert report.ok, [(r.action.describe(), r.error) for r in report.failed()]
    assert final.actions == []


BY_PCI = {"interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 9000,
                               "ipv4": {"address": ["192.0.2.10/24"]}}],
          "routes": {"ipv4": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1",
                               "dev": "pci:0000:3b:00.0"}]}}


@pytest.fixture
def nic_node(tmp_path):
    return Node(nic_host(), tmp_path / "state")


def test_configuration_and_ledger_follow_a_rename_between_passes(nic_node):
    fake = nic_node.fake
    tpl = make_template("t", BY_PCI)
    converge(nic_node, [tpl])
    assert fake.links["eth0"].mtu == 9000 and "192.0.2.10/24" in fake.links["eth0"].ipv4
    assert nic_node.ledger.get("mtu:eth0")["link"] == {"pciAddress": PCI_A}
    rename(fake, "eth0", "enp59s0f0")
    edited = make_template("t", {**BY_PCI, "interfaceConfig": [
        {**BY_PCI["interfaceConfig"][0], "mtu": 9100}]}, generation=2)
    merged, result = nic_node.plan([edited])
    assert merged.results["t"].state == TemplateState.APPLIED
    assert merged.results["t"].interface_references == {"pci:0000:3b:00.0": "enp59s0f0"}
    # The records move to the new name first; the new MTU goes to the NIC under its new name
    # with the ORIGINAL prior; nothing is undone, nothing touches eth1.
    assert [(a.verb, a.target, a.params.get("to")) for a in result.actions] == [
        ("move_record", "addr:eth0:192.0.2.10/24", "addr:enp59s0f0:192.0.2.10/24"),
        ("move_record", "mtu:eth0", "mtu:enp59s0f0"),
        ("set_mtu", "enp59s0f0", None)]
    assert result.actions[1].describe().endswith(
        "# ledger: eth0 is now enp59s0f0 (pciAddress 0000:3b:00.0)")
    assert result.actions[2].ledger_prior == 1500
    converge(nic_node, [edited])
    assert fake.links["enp59s0f0"].mtu == 9100
    assert "192.0.2.10/24" in fake.links["enp59s0f0"].ipv4
    assert fake.links["eth1"].mtu == 1500
    records = nic_node.ledger.records()
    assert not [key for key in records if "eth0" in key]
    assert records["mtu:enp59s0f0"]["prior"] == 1500
    # Deleting the template undoes it all on the NIC under its new name.
    converge(nic_node, [])
    assert fake.links["enp59s0f0"].mtu == 1500
    assert "192.0.2.10/24" not in fake.links["enp59s0f0"].ipv4
    assert nic_node.ledger.records() == {}


def test_two_nics_swapping_names_keep_their_records(nic_node):
    """After a firmware update eth0 and eth1 trade names: the record of the NIC that WAS eth0
    goes with it; nothing of it is restored on the other NIC, which now bears the name."""
    fake = nic_node.fake
    converge(nic_node, [make_template("t", BY_PCI)])
    rename(fake, "eth0", "tmp")
    rename(fake, "eth1", "eth0")
    rename(fake, "tmp", "eth1")
    fake.links["eth0"].mtu = 1400  # the other NIC has a value of its own
    _, result = nic_node.plan([])
    assert sorted((a.verb, a.target) for a in result.actions) == [
        ("delete_address", "eth1"), ("delete_route", "198.51.100.0/24"),
        ("move_record", "addr:eth0:192.0.2.10/24"), ("move_record", "mtu:eth0"),
        ("set_mtu", "eth1")]
    converge(nic_node, [])
    assert fake.links["eth1"].mtu == 1500 and fake.links["eth0"].mtu == 1400


def test_a_record_whose_nic_is_gone_while_another_has_its_name_is_forgotten(nic_node):
    fake = nic_node.fake
    converge(nic_node, [make_template("t", BY_PCI)])
    fake._remove_link("eth0")
    fake.pfs.pop(PCI_A)
    rename(fake, "eth1", "eth0")
    fake.links["eth0"].mtu = 1400
    _, result = nic_node.plan([])
    assert sorted((a.verb, a.target) for a in result.actions
                  if not a.target.startswith("route:")) == [
        ("forget", "addr:eth0:192.0.2.10/24"), ("forget", "mtu:eth0")]
    assert "eth0 is now another device; the one this record is about (pciAddress " \
           "0000:3b:00.0) is gone" in result.actions[0].reason
    converge(nic_node, [])
    assert fake.links["eth0"].mtu == 1400


def test_a_record_without_an_identity_is_planned_as_before(nic_node):
    """Records written before identities (or of a device without one): a rename forgets them
    (nothing is undone on whatever has the name now), as it always did."""
    fake = nic_node.fake
    converge(nic_node, [make_template("t", BY_PCI)])
    for key, rec in nic_node.ledger.records().items():
        nic_node.ledger.release(key)
        nic_node.ledger.claim(key, prior=rec["prior"], created=rec["created"],
                              templates=rec["templates"], value=rec["value"])
    assert not any("link" in rec for rec in nic_node.ledger.records().values())
    rename(fake, "eth0", "enp59s0f0")
    _, result = nic_node.plan([])
    assert ("forget", "mtu:eth0") in [(a.verb, a.target) for a in result.actions]
    assert "move_record" not in [a.verb for a in result.actions]


def test_a_nic_that_vanished_undoes_nothing(nic_node):
    fake = nic_node.fake
    tpl = make_template("t", BY_PCI)
    converge(nic_node, [tpl])
    records = set(nic_node.ledger.records())
    rename(fake, "eth0", "eth9")
    fake.pfs[PCI_A].pci_addr = "0000:af:00.0"  # the NIC moved slots: the reference is stale
    fake.pfs["0000:af:00.0"] = fake.pfs.pop(PCI_A)
    merged, result = nic_node.plan([tpl])
    assert merged.results["t"].state == TemplateState.FAILED
    assert "spec.interfaceConfig[0].name: pci:0000:3b:00.0 matches no interface on this node" \
        in merged.results["t"].message
    assert result.actions == []
    assert any(issue.message.startswith("nothing it applied before is undone while it fails")
               for issue in result.notes)
    assert set(nic_node.ledger.records()) == records


def test_a_device_known_by_its_altname_only_is_followed_and_not_forgotten_without_it(nic_node):
    """A device without PCI address or permanent MAC (a veth) is known by its altnames: the
    record follows the altname; removing the altname is no proof of another device (kept)."""
    fake = nic_node.fake
    fake.add_link("veth3", mtu=1500).altnames = ["uplink0"]
    converge(nic_node, [make_template("t", {"interfaceConfig": [
        {"name": "altname:uplink0", "mtu": 1400}]})])
    assert nic_node.ledger.get("mtu:veth3")["link"] == {"altnames": ["uplink0"]}
    rename(fake, "veth3", "nic7")
    _, result = nic_node.plan([])
    assert [(a.verb, a.target, a.params.get("to")) for a in result.actions] == [
        ("move_record", "mtu:veth3", "mtu:nic7"), ("set_mtu", "nic7", None)]
    converge(nic_node, [make_template("t", {"interfaceConfig": [
        {"name": "altname:uplink0", "mtu": 1400}]})])
    assert "mtu:nic7" in nic_node.ledger.records()
    fake.links["nic7"].altnames = []  # the reference matches nothing now
    _, result = nic_node.plan([])  # the template deleted: the undo still finds its record
    assert [(a.verb, a.target, a.params.get("mtu")) for a in result.actions] == [
        ("set_mtu", "nic7", 1500)]


@pytest.mark.parametrize("link", [{"altnames": [{"x": 1}]}, {"pciAddress": 7}, {"z": None},
                                  "eth0", {"altnames": "uplink0"}])
def test_a_hand_edited_identity_never_stops_a_plan(nic_node, link):
    nic_node.ledger.claim("mtu:eth0", prior=1500, created=False, templates=["t"],
                          value={"mtu": 9000}, link=link if isinstance(link, dict) else None)
    if not isinstance(link, dict):
        nic_node.ledger.claim("mtu:eth1", prior=1500, created=False, templates=["t"])
    nic_node.fake.links["eth0"].mtu = 9000
    rename(nic_node.fake, "eth0", "eth5")
    _, result = nic_node.plan([])
    assert "mtu:eth0" in [a.target for a in result.actions if a.verb in ("forget",
                                                                          "move_record")]


def test_the_status_shows_what_each_interface_can_be_referenced_by():
    from plumber_agent.models.status import to_api
    from plumber_agent.status_builder import build_status

    observed = host()
    observed.links["enp59s0f0"].altnames = [f"alt{i}" for i in range(10)]
    interfaces = {i["pfName"]: i for i in to_api(build_status(observed))["interfaceStatus"]}
    assert interfaces["enp59s0f0"]["permMac"] == MAC_A
    assert interfaces["enp59s0f0"]["altNames"] == [f"alt{i}" for i in range(8)]  # bounded
    assert interfaces["enp59s0f0"]["pciAddr"] == PCI_A
    assert "permMac" not in interfaces["veth0"] and "altNames" not in interfaces["veth0"]


def test_an_ovs_port_follows_its_renamed_nic(nic_node):
    fake = nic_node.fake
    tpl = make_template("t", {"ovsConfig": [{"bridgeName": "br0",
                                             "nodeInterface": "pci:0000:3b:00.0"}]})
    converge(nic_node, [tpl])
    assert [p.name for p in fake.bridges["br0"].ports] == ["eth0"]
    rename(fake, "eth0", "enp59s0f0")
    _, result = nic_node.plan([tpl])
    assert sorted((a.verb, a.target) for a in result.actions) == [
        ("delete_port", "eth0"), ("ensure_port", "enp59s0f0")]
    converge(nic_node, [tpl])
    assert [p.name for p in fake.bridges["br0"].ports] == ["enp59s0f0"]


# ---- every kind's fields: declared in the registry, nothing else --------------------------------

@dataclasses.dataclass
class _BondLike:
    """What a new kind's spec entry looks like to the resolver."""

    name: str
    members: list[str] = dataclasses.field(default_factory=list)
    primary: Optional[str] = None


@dataclasses.dataclass
class _SpecLike:
    bonds: list[_BondLike] = dataclasses.field(default_factory=list)


def test_a_kinds_declared_fields_are_resolved_and_undeclared_ones_are_not():
    spec = _SpecLike(bonds=[
        _BondLike("bond0", members=["pci:0000:3b:00.0", "mac:b4:96:91:70:19:39"],
                  primary="altname:uplink0"),
        _BondLike("bond1", members=["veth0", "pci:0000:af:00.0"])])
    found = Resolver(host(), {"bonds[].members": LIST, "bonds[].primary": ONE}).resolve_spec(spec)
    assert found.spec.bonds == [_BondLike("bond0", members=["enp59s0f0", "enp59s0f1"],
                                          primary="enp59s0f0")]
    assert found.problems == [
        "spec.bonds[1].members[1]: pci:0000:af:00.0 matches no interface on this node"]
    # Not declared: left as written (the registry is the one list, kinds/ interface_refs).
    assert Resolver(host(), {"bonds[].members": LIST}).resolve_spec(spec).spec.bonds[0].primary \
        == "altname:uplink0"


def test_the_registry_declares_every_field_naming_an_interface():
    assert REFERENCE_FIELDS == {
        "sriovConfig[].pfName": ONE, "interfaceConfig[].name": ONE,
        "bondConfig[].members": LIST, "bondConfig[].options.primary": ONE,
        "routes.ipv4[].dev": ONE, "routes.ipv6[].dev": ONE, "ovsConfig[].nodeInterface": CSV,
        "linuxBridgeConfig[].ports[].name": ONE}


BOND_BY_REF = {"name": "bond0", "mode": "active-backup",
               "members": ["pci:0000:3B:00.0", "mac:B4:96:91:70:19:39"],
               "options": {"primary": "pci:0000:3B:00.0"}}


def test_bond_members_primary_and_bridge_ports_take_references():
    spec = parse_template_spec({
        "bondConfig": [BOND_BY_REF],
        "linuxBridgeConfig": [{"name": "br1", "ports": [{"name": "altname:uplink0"},
                                                        {"name": "bond0"}]}]})
    assert spec.bond_config[0].members == ["pci:0000:3b:00.0", "mac:b4:96:91:70:19:39"]
    assert spec.bond_config[0].options.primary == "pci:0000:3b:00.0"
    assert [p.name for p in spec.linux_bridge_config[0].ports] == ["altname:uplink0", "bond0"]
    assert problems({"bondConfig": [{**BOND_BY_REF, "members": ["pci:0000:3b:00", "eth1"],
                                     "options": {}}],
                     "linuxBridgeConfig": [{"name": "br1", "ports": [{"name": "mac:01:00:5e:00:00:01"}]}]}) == [
        "spec.bondConfig[0].members[0]: 'pci:0000:3b:00': '0000:3b:00' is not a PCI address of "
        "the form 0000:3b:00.0",
        "spec.linuxBridgeConfig[0].ports[0].name: 'mac:01:00:5e:00:00:01': 01:00:5e:00:00:01 "
        "is a multicast address, never a NIC's permanent MAC"]
    # primary is one of the members as written there, in canonical form.
    assert problems({"bondConfig": [{**BOND_BY_REF, "options": {"primary": "enp59s0f0"}}]}) == [
        "spec.bondConfig[0].options.primary: 'enp59s0f0' is not one of the bond's members"]


def test_merge_resolves_bond_members_and_bridge_ports():
    tpl = make_template("t", {
        "bondConfig": [BOND_BY_REF],
        "linuxBridgeConfig": [{"name": "br1", "ports": [{"name": "bond0"}]},
                              {"name": "br2", "ports": [{"name": "altname:veth-uplink"}]}]})
    merged = merge([tpl], {}, host(veth1=ObservedLink("veth1", 5, altnames=["veth-uplink"])))
    assert merged.results["t"].state == TemplateState.APPLIED, merged.results["t"].message
    bond = merged.desired.bonds["bond0"]
    assert bond.members == ["enp59s0f0", "enp59s0f1"]
    assert bond.options["primary"] == "enp59s0f0"
    assert sorted(merged.desired.linux_bridge_ports) == ["bond0", "veth1"]
    assert merged.results["t"].interface_references == {
        "altname:veth-uplink": "veth1", "mac:b4:96:91:70:19:39": "enp59s0f1",
        "pci:0000:3b:00.0": "enp59s0f0"}


def test_a_bond_member_matching_nothing_fails_its_template_and_leaves_its_bond_out():
    tpl = make_template("t", {"bondConfig": [{**BOND_BY_REF,
                                              "members": ["pci:0000:3b:00.0", "pci:0000:af:00.0"]}],
                              "interfaceConfig": [{"name": "veth0", "mtu": 1400}]})
    merged = merge([tpl], {}, host())
    assert merged.results["t"].state == TemplateState.FAILED
    assert "spec.bondConfig[0].members[1]: pci:0000:af:00.0 matches no interface on this " \
        "node: its entry is not applied" in merged.results["t"].message
    assert merged.desired.bonds == {}
    assert merged.desired.links["veth0"].mtu.value == 1400  # the other entries apply
    assert merged.desired.unresolved_references


def test_a_bond_over_nics_named_by_pci_follows_a_member_renamed(tmp_path):
    """Members and primary by pci:: the bond is made of the NICs whatever their names; a
    member renamed between passes keeps its record (its prior state), the kernel's primary
    (kept by name) is set to the new name, and deleting the template releases the member
    under its new name."""
    fake = FakeHost()
    fake.add_link("eth0", ipv4=("10.0.0.5/24",))
    fake.add_route(dst=None, gw="10.0.0.1", dev="eth0")
    fake.add_pf(PCI_A, "eth1", total_vfs=0)
    fake.add_pf(PCI_B, "eth2", total_vfs=0, up=False)
    node = Node(fake, tmp_path / "state", api_ip="10.0.0.100")
    tpl = make_template("t", {"bondConfig": [{
        "name": "bond0", "mode": "active-backup", "members": [f"pci:{PCI_A}", f"pci:{PCI_B}"],
        "options": {"primary": f"pci:{PCI_A}"}}]})
    converge(node, [tpl])
    assert fake.links["eth1"].master == "bond0" and fake.links["eth2"].master == "bond0"
    assert node.ledger.get("bondmember:eth1")["link"] == {"pciAddress": PCI_A}
    rename(fake, "eth1", "enp59s0f0")
    merged, result = node.plan([tpl])
    assert merged.results["t"].interface_references == {f"pci:{PCI_A}": "enp59s0f0",
                                                        f"pci:{PCI_B}": "eth2"}
    moves = [(a.target, a.params["to"]) for a in result.actions if a.verb == "move_record"]
    assert moves == [("bondmember:eth1", "bondmember:enp59s0f0")]
    assert not [a for a in result.actions if a.verb in ("release_member", "enslave")]
    converge(node, [tpl])
    assert fake.links["enp59s0f0"].master == "bond0"
    assert "bondmember:eth1" not in node.ledger.records()
    converge(node, [])
    assert fake.links["enp59s0f0"].master is None and fake.links["eth2"].master is None
    assert "bond0" not in fake.links
    assert fake.links["enp59s0f0"].admin_up and not fake.links["eth2"].admin_up
    assert node.ledger.records() == {}


def test_a_vlan_on_a_renamed_parent_is_kept_and_still_undone(nic_node):
    fake = nic_node.fake
    tpl = make_template("t", {"interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 9000,
                                                   "vlan": [{"id": 100, "name": "data100"}]}]})
    converge(nic_node, [tpl])
    assert fake.links["data100"].parent == "eth0"
    rename(fake, "eth0", "enp59s0f0")
    _, result = nic_node.plan([tpl])
    assert [(a.verb, a.target) for a in result.actions] == [("move_record", "mtu:eth0")]
    converge(nic_node, [tpl])
    assert fake.links["data100"].parent == "enp59s0f0"
    converge(nic_node, [])
    assert "data100" not in fake.links and fake.links["enp59s0f0"].mtu == 1500


def test_two_managed_nics_swapping_names_swap_their_records(nic_node):
    """Both NICs managed: after the swap each key is the other's; each record goes with its
    NIC whatever order the moves run in, so each NIC gets its own prior back."""
    fake = nic_node.fake
    fake.links["eth1"].mtu = 1400  # the second NIC's own value before the template
    tpl = make_template("t", {"interfaceConfig": [{"name": "pci:0000:3b:00.0", "mtu": 9000},
                                                  {"name": "pci:0000:3b:00.1", "mtu": 9100}]})
    converge(nic_node, [tpl])
    rename(fake, "eth0", "tmp")
    rename(fake, "eth1", "eth0")
    rename(fake, "tmp", "eth1")
    _, result = nic_node.plan([tpl])
    assert [(a.verb, a.target, a.params["to"], a.params["drop"]) for a in result.actions] == [
        ("move_record", "mtu:eth0", "mtu:eth1", False),
        ("move_record", "mtu:eth1", "mtu:eth0", False)]
    assert result.actions[0].describe().startswith("ledger_follow      move_record mtu:eth0 "
                                                   "to=mtu:eth1  # ledger: eth0 is now eth1")
    converge(nic_node, [tpl])
    records = nic_node.ledger.records()
    assert (records["mtu:eth1"]["prior"], records["mtu:eth0"]["prior"]) == (1500, 1400)
    converge(nic_node, [])
    assert (fake.links["eth1"].mtu, fake.links["eth0"].mtu) == (1500, 1400)


NAMES = ("eth0", "eth1", "eth2", "eth3")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_an_undo_after_any_renaming_restores_each_nics_own_prior(data):
    """Property: NICs claimed under some names, then renamed in any way (swaps, cycles, to new
    names, some gone): with the templates deleted, every restore lands on the NIC the record
    is about, with that NIC's prior, and nothing is restored on another NIC."""
    count = data.draw(st.integers(1, 4))
    before = data.draw(st.permutations(NAMES))[:count]
    after = data.draw(st.lists(st.sampled_from(NAMES + ("nic7", "nic8")), min_size=count,
                               max_size=count, unique=True))
    gone = data.draw(st.sets(st.integers(0, count - 1)))
    priors = {i: 1400 + i for i in range(count)}
    records = {f"mtu:{before[i]}": {"prior": priors[i], "created": False, "templates": ["t"],
                                    "value": {"mtu": 9000}, "link": {"pciAddress": _pci(i)}}
               for i in range(count)}
    links = {}
    for i in range(count):
        if i not in gone:
            links[after[i]] = ObservedLink(after[i], 10 + i, mtu=9000, pci_addr=_pci(i))
    # A stranger (no identity) may have taken a freed name.
    for name in NAMES:
        if name not in links and data.draw(st.booleans()):
            links[name] = ObservedLink(name, 50, mtu=1234)
    from plumber_agent.desired import DesiredState
    from plumber_agent.planner import plan
    result = plan(DesiredState(), ObservedHost(links=links, bridges={}), records)
    restored = {a.target: a.params["mtu"] for a in result.actions if a.verb == "set_mtu"}
    for name, mtu in restored.items():
        assert links[name].pci_addr is not None, (name, "a stranger was touched")
        index = int(links[name].pci_addr[-1])
        assert mtu == priors[index], (name, mtu)
    assert set(restored) == {after[i] for i in range(count) if i not in gone}


def _pci(i: int) -> str:
    return f"0000:3b:00.{i}"


def test_a_bond_member_written_two_ways_is_caught_once_resolved():
    """pci: in members and the kernel name in interfaceConfig are one NIC: what parse_bonds
    refuses by name fails the template on the node where they meet, and the entry at fault is
    left out (the bond and the other entries still apply)."""
    tpl = make_template("t", {
        "bondConfig": [{"name": "bond0", "mode": "802.3ad", "members": [f"pci:{PCI_A}"]}],
        "interfaceConfig": [{"name": "enp59s0f0", "mtu": 9000}, {"name": "veth0", "mtu": 1400}],
        "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "enp59s0f0"}]})
    merged = merge([tpl], {}, host())
    result = merged.results["t"]
    assert result.state == TemplateState.FAILED
    message = " ".join(result.message.split())
    assert "spec.interfaceConfig[0]: enp59s0f0 is a member of bond bond0: its MTU follows the " \
        "bond's and its traffic is the bond's; configure bond0 instead (as its references " \
        "resolve on this node): its entry is not applied" in message
    assert "spec.ovsConfig[0].nodeInterface: enp59s0f0 is a member of bond bond0" in message
    assert sorted(merged.desired.links) == ["veth0"]
    assert merged.desired.bridges == {}
    assert merged.desired.bonds["bond0"].members == ["enp59s0f0"]
    # Two references to one NIC in one bond: the bond is left out.
    twice = make_template("t", {"bondConfig": [{"name": "bond0", "mode": "802.3ad",
                                                "members": [f"pci:{PCI_A}", "altname:uplink0"]}]})
    merged = merge([twice], {}, host())
    assert "spec.bondConfig[0].members: 'enp59s0f0' is named twice" in merged.results["t"].message
    assert merged.desired.bonds == {}
