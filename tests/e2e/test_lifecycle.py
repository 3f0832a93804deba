"""Template lifecycle across real agents: two templates in conflict (the older wins, both are
reported), a template edited (VLAN list shrinks, numVfs changes, addresses change), and a
template deleted (the host returns exactly to the snapshot taken before)."""
from __future__ import annotations

import pytest

from tests.e2e.cluster import template

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"


def _on(steps, node) -> dict:
    return {HOSTNAME: steps.cluster.hostname_label(node.name)}


def test_conflict_older_template_wins_and_both_are_reported(steps):
    node = steps.nodes[0]
    older_spec = {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}
    newer_spec = {"interfaceConfig": [{"name": "eno1", "mtu": 1600},
                                      {"name": "enp3s0f0", "mtu": 9000}]}  # this part does not conflict
    if steps.caps.sriov:
        older_spec["sriovConfig"] = [{"pfName": "enp3s0f1", "numVfs": 8, "vfDriver": "ixgbevf"}]
        newer_spec["sriovConfig"] = [{"pfName": "enp3s0f1", "numVfs": 16, "vfDriver": "ixgbevf"}]
    # Names sort opposite to age, so the test proves "oldest wins", not "first name wins".
    older = template("zz-e2e-older", older_spec, node_selector=_on(steps, node))
    newer = template("aa-e2e-newer", newer_spec, node_selector=_on(steps, node))
    created = steps.apply(older)
    steps.wait_next_second(created)
    steps.apply(newer)

    steps.wait_state(node.name, "zz-e2e-older", "Applied")
    entry = steps.wait_state(node.name, "aa-e2e-newer", "Conflict", contains=["zz-e2e-older"])
    assert any(f in entry["message"].lower() for f in ("mtu", "numvfs")), \
        f"the conflict message should name the field: {entry}"
    assert node.mtu("eno1") == 9000
    assert node.mtu("enp3s0f0") == 9000, "the loser's non-conflicting part must still apply"
    if steps.caps.sriov:
        assert node.num_vfs(node.pf("enp3s0f1").pci_addr) == 8

    # The winner goes away: the other template now owns the fields and is Applied.
    steps.delete("zz-e2e-older")
    steps.wait_state(node.name, "aa-e2e-newer", "Applied")
    steps.wait_applied(newer, node)
    assert node.mtu("eno1") == 1600


def test_template_edit_shrinks_vlans_changes_numvfs_and_addresses(steps):
    node = steps.nodes[0]
    base_spec = {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000,
                                      "ipv4": {"address": ["10.50.0.1/24", "10.50.1.1/24"]},
                                      "ipv6": {"address": ["fd50::1/64"]}}]}
    if steps.caps.sriov:
        base_spec["sriovConfig"] = [{"pfName": "eno1", "numVfs": 4, "vfDriver": "i40evf"}]
    settings = template("e2e-edit-settings", base_spec, node_selector=_on(steps, node))
    vlans = template("e2e-edit-vlans", {"interfaceConfig": [
        {"name": "eno1", "vlan": [{"id": 100}, {"id": 101}, {"id": 102}]}]},
        node_selector=_on(steps, node))
    steps.apply(settings)
    steps.apply(vlans)
    steps.wait_applied(settings, node)
    steps.wait_applied(vlans, node)

    # Edit: fewer VFs, a different address list (IPv6 emptied), fewer VLANs.
    edited = {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000,
                                   "ipv4": {"address": ["10.50.2.1/24"]},
                                   "ipv6": {"address": []}}]}
    if steps.caps.sriov:
        edited["sriovConfig"] = [{"pfName": "eno1", "numVfs": 2, "vfDriver": "i40evf"}]
    steps.patch("e2e-edit-settings", {"spec": edited})
    steps.patch("e2e-edit-vlans", {"spec": {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 100}]}]}})
    settings["spec"].update(edited)
    vlans["spec"]["interfaceConfig"] = [{"name": "eno1", "vlan": [{"id": 100}]}]

    entry = steps.wait_applied(settings, node)
    assert entry["observedGeneration"] == 2
    assert node.addrs_of("enp3s0f0") == {"10.50.2.1/24"}
    if steps.caps.sriov:
        assert node.num_vfs(node.pf("eno1").pci_addr) == 2
    steps.wait_applied(vlans, node)
    if steps.caps.vlan:
        assert set(node.vlans()) == {"eno1.100"}, node.vlans()
    else:
        assert node.vlans() == {}


def test_template_delete_returns_host_to_snapshot(steps):
    node = steps.nodes[0]
    before = node.snapshot()
    spec = {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000,
                                 "ipv4": {"address": ["10.60.0.1/24"]}}],
            "routes": {"ipv4": [{"dst": "10.61.0.0/16", "gw": "10.60.0.254", "dev": "enp3s0f0"}]}}
    if steps.caps.sriov:
        # eno2 starts with 8 VFs (as on the seed's node): the agent must put back 8, not 0.
        spec["sriovConfig"] = [{"pfName": "eno2", "numVfs": 2, "vfDriver": "vfio-pci"}]
    if steps.caps.ovs:
        spec["ovsConfig"] = [{"bridgeName": "e2e-br0", "nodeInterface": "enp3s0f1",
                              "params": {"datapathType": steps.caps.ovs_datapath}}]
    obj = template("e2e-delete-me", spec, node_selector=_on(steps, node))
    steps.apply(obj)
    steps.wait_applied(obj, node)
    assert node.snapshot() != before

    steps.delete("e2e-delete-me")
    steps.wait_baseline(node)
    assert node.snapshot() == before
    if steps.caps.sriov and before["num_vfs"].get("eno2"):
        assert node.num_vfs(node.pf("eno2").pci_addr) == before["num_vfs"]["eno2"]
