"""Faults a real node meets: someone changes the host behind the agent's back (drift must be put
back and reported with a DriftRepaired Event), and the agent is SIGKILLed in the middle of an
apply (after a restart it converges, with nothing created twice)."""
from __future__ import annotations

import collections

import pytest

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, DRIFT_TIMEOUT_S, template
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"


def _on(steps, node) -> dict:
    return {HOSTNAME: steps.cluster.hostname_label(node.name)}


def _drift_events(steps, node, what: str = "") -> int:
    """DriftRepaired reports for `node` whose note names `what`."""
    return steps.api.occurrences(reason="DriftRepaired", involved_name=node.name, note_has=what)


def test_drift_removed_address_is_restored_and_reported(steps):
    node = steps.nodes[0]
    obj = template("e2e-drift-address", {"interfaceConfig": [{
        "name": "enp3s0f0", "ipv4": {"address": ["10.70.0.1/24", "10.70.1.1/24"]}}]},
        node_selector=_on(steps, node))
    steps.apply(obj)
    steps.wait_applied(obj, node)
    events_before = _drift_events(steps, node, "10.70.1.1/24")

    node.run(["ip", "addr", "del", "10.70.1.1/24", "dev", "enp3s0f0"])  # behind the agent's back
    assert "10.70.1.1/24" not in node.addrs_of("enp3s0f0")

    wait_for(lambda: node.addrs_of("enp3s0f0") == {"10.70.0.1/24", "10.70.1.1/24"},
             timeout_s=DRIFT_TIMEOUT_S, what="the removed address back on enp3s0f0")
    wait_for(lambda: _drift_events(steps, node, "10.70.1.1/24") > events_before,
             timeout_s=DRIFT_TIMEOUT_S, what=f"a DriftRepaired event for {node.name} naming the address")
    steps.wait_state(node.name, "e2e-drift-address", "Applied")


def test_drift_removed_vlan_is_restored(steps):
    if not steps.caps.vlan:
        pytest.skip(steps.caps.why_not.get("vlan", "no 802.1Q") + "; VLAN drift runs where 8021q exists "
                    "(kind, and tests/e2e/test_vlan_fullkernel.py in the VM)")
    node = steps.nodes[0]
    obj = template("e2e-drift-vlan", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 200}]}]},
                   node_selector=_on(steps, node))
    steps.apply(obj)
    steps.wait_applied(obj, node)
    events_before = _drift_events(steps, node, "eno1.200")
    node.run(["ip", "link", "del", "eno1.200"])
    wait_for(lambda: node.vlans().get("eno1.200") == ("eno1", 200), timeout_s=DRIFT_TIMEOUT_S,
             what="eno1.200 re-created")
    wait_for(lambda: _drift_events(steps, node, "eno1.200") > events_before,
             timeout_s=DRIFT_TIMEOUT_S, what=f"a DriftRepaired event for {node.name} naming eno1.200")


def _duplicates(items) -> list:
    return [item for item, count in collections.Counter(items).items() if count > 1]


def test_agent_killed_mid_apply_converges_without_duplicates(steps):
    node = steps.nodes[0]
    spec = {"interfaceConfig": [{"name": "enp3s0f1", "mtu": 9000,
                                 "ipv4": {"address": ["10.80.0.1/24"]},
                                 "ipv6": {"address": ["fd80::1/64"]}}]}
    if steps.caps.sriov:
        spec["sriovConfig"] = [{"pfName": "eno1", "numVfs": 16, "vfDriver": "vfio-pci"}]
    if steps.caps.ovs:
        spec["ovsConfig"] = [{"bridgeName": "e2e-br1", "nodeInterface": "enp3s0f0",
                              "params": {"datapathType": steps.caps.ovs_datapath}}]
    obj = template("e2e-killed-mid-apply", spec, node_selector=_on(steps, node))

    # Where the target allows it, park new VFs so the agent is provably in the middle of the
    # apply (it has written sriov_numvfs and waits for the VFs) when it is killed.
    paused = steps.caps.sriov and getattr(node, "pause_sriov", lambda _: False)(True)
    writes_before = len(node.sysfs_writes("sriov_numvfs")) if paused else 0
    try:
        steps.apply(obj)
        if paused:
            wait_for(lambda: len(node.sysfs_writes("sriov_numvfs")) > writes_before,
                     timeout_s=CONVERGE_TIMEOUT_S, what="the agent writing sriov_numvfs")
        else:
            wait_for(lambda: node.mtu("enp3s0f1") == 9000 or node.addrs_of("enp3s0f1"),
                     timeout_s=CONVERGE_TIMEOUT_S, what="the apply to start")
        node.kill_agent()
    finally:
        if paused:
            node.pause_sriov(False)
    node.ensure_agent_running()
    steps.wait_applied(obj, node)

    # Nothing twice: addresses, OVS bridges/ports, VFs, status entries.
    raw = [f"{a['local']}/{a['prefixlen']}" for link in node.ip_json("addr", "show", "dev", "enp3s0f1")
           for a in link.get("addr_info") or []]
    assert not _duplicates(raw), raw
    if steps.caps.ovs:
        bridges = (node.ovs_vsctl("list-br") or "").split()
        assert bridges.count("e2e-br1") == 1, bridges
        ports = (node.ovs_vsctl("list-ports", "e2e-br1") or "").split()
        assert ports == ["enp3s0f0"], ports
    if steps.caps.sriov:
        pci = node.pf("eno1").pci_addr
        assert node.num_vfs(pci) == 16
        assert node.vf_drivers(pci) == ["vfio-pci"] * 16
    status = steps.api.hostnetwork(node.name)["status"]
    names = [i["pfName"] for i in status.get("interfaceStatus") or []]
    assert not _duplicates(names), names
    assert not _duplicates([t["name"] for t in status.get("templates") or []])
