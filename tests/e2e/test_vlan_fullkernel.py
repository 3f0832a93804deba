"""VLAN scenarios that need 802.1Q: run where the kernel has 8021q -- kind nodes, or the full-kernel
qemu VM, where tests/fullkernel/test_vlan_kernel.py::test_fullkernel_tier runs every test marked
`fullkernel` (this one included) in one pytest inside the VM. On this CI kernel they skip here
and run in the VM instead; the other scenarios assert the "Failed: no 802.1Q" outcome meanwhile.

Few tests on purpose: every step costs seconds under TCG, so the VLAN lifecycle (created as
written in the seed's VLAN example, list shrinks, drift repaired, template deleted) is one story,
and the OVS and combined examples (same template name) are another.
"""
from __future__ import annotations

import copy

import pytest

from tests.e2e.cluster import DRIFT_TIMEOUT_S, load_examples
from tests.helpers.wait import wait_for


def _kernel_has_vlan() -> bool:
    try:
        from tests.fullkernel.vm import kernel_has
    except Exception:
        return False
    return kernel_has("vlan")


pytestmark = [
    pytest.mark.e2e, pytest.mark.privileged, pytest.mark.fullkernel,
    pytest.mark.skipif(not _kernel_has_vlan(),
                       reason="this kernel has no 802.1Q (8021q); test_fullkernel_tier runs this "
                              "scenario inside the full-kernel VM"),
]

SRIOV_CAPABLE = "feature.node.kubernetes.io/network-sriov.capable"


def _vlan_example() -> dict:
    for filename, obj in load_examples():
        if filename.startswith("06-"):
            return copy.deepcopy(obj)
    raise LookupError("06-vlan-interfaces.yaml")


def test_vlan_lifecycle_as_written(steps):
    assert steps.caps.vlan, "the harness must detect 802.1Q on a kernel that has it"
    node = steps.nodes[0]
    obj = _vlan_example()
    steps.label(node.name, {SRIOV_CAPABLE: "true"})
    steps.apply(obj)
    steps.wait_applied(obj, node)
    assert node.vlans() == {"eno2.1000": ("eno2", 1000), "eno2.1001": ("eno2", 1001),
                            "eno2.1002": ("eno2", 1002), "eno1.999": ("eno1", 999)}
    hn = steps.api.hostnetwork(node.name)["status"]
    reported = {i["pfName"]: i for i in hn["interfaceStatus"]}
    assert reported["eno2.1000"].get("vlanId") == 1000 and reported["eno2.1000"].get("parent") == "eno2"

    # The list shrinks: eno2.1001/1002 go, the rest stays.
    steps.patch(obj["metadata"]["name"], {"spec": {"interfaceConfig": [
        {"name": "eno2", "vlan": [{"id": 1000}]}, {"name": "eno1", "vlan": [{"id": 999}]}]}})
    obj["spec"]["interfaceConfig"] = [{"name": "eno2", "vlan": [{"id": 1000}]},
                                      {"name": "eno1", "vlan": [{"id": 999}]}]
    steps.wait_applied(obj, node)
    wait_for(lambda: set(node.vlans()) == {"eno2.1000", "eno1.999"}, timeout_s=DRIFT_TIMEOUT_S,
             what="VLANs 1001/1002 removed")

    # Drift: a managed VLAN deleted behind the agent's back comes back, with an Event.
    before = steps.api.occurrences(reason="DriftRepaired", involved_name=node.name, note_has="eno2.1000")
    node.run(["ip", "link", "del", "eno2.1000"])
    wait_for(lambda: node.vlans().get("eno2.1000") == ("eno2", 1000), timeout_s=DRIFT_TIMEOUT_S,
             what="eno2.1000 re-created")
    wait_for(lambda: steps.api.occurrences(reason="DriftRepaired", involved_name=node.name,
                                           note_has="eno2.1000") > before,
             timeout_s=DRIFT_TIMEOUT_S, what="a DriftRepaired event naming eno2.1000")

    # Deleted: the VLANs it created are gone, the host is as before.
    steps.delete(obj["metadata"]["name"])
    steps.wait_baseline(node)
    assert node.vlans() == {}


def test_ovs_then_combined_example_as_written(steps):
    """The seed's OVS example (07: VLANs and an OVS bridge on eno2.1000, on the kernel datapath
    here), then its combined example (01: the same template name plus SR-IOV and MTU 9000)
    applied over it as an update, each reaching the state this target allows with the host
    matching, then deleted back to baseline. One story instead of one per example: every
    apply-delete cycle costs about a minute under TCG, and 01 holds everything 07 does, so the
    one deletion checks the cleanup of both."""
    node = steps.nodes[0]
    steps.label(node.name, {SRIOV_CAPABLE: "true", "foo": "bar"})
    for prefix in ("07-", "01-"):
        obj = next(copy.deepcopy(o) for f, o in load_examples() if f.startswith(prefix))
        steps.apply(obj)
        steps.wait_applied(obj, node)
        assert node.vlans()["eno2.1000"] == ("eno2", 1000), prefix
        if steps.caps.ovs_system_datapath:
            bridges = node.ovs_bridges()
            assert "ovs-br01" in bridges, (prefix, bridges)
    steps.delete(obj["metadata"]["name"])
    steps.wait_baseline(node)
    assert node.vlans() == {}
