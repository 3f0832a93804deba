"""nodeSelector semantics across nodes: a subset by the seed's labels, one node by hostname, and a
node gaining then losing a label (configured, then cleaned up to exactly what it was)."""
from __future__ import annotations

import copy

import pytest

from tests.e2e.cluster import load_examples, template

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

SRIOV_CAPABLE = "feature.node.kubernetes.io/network-sriov.capable"
HOSTNAME = "kubernetes.io/hostname"


def _example(name: str) -> dict:
    for _, obj in load_examples():
        if obj["metadata"]["name"] == name and obj["spec"].get("nodeSelector", {}).get("foo"):
            return copy.deepcopy(obj)
    raise LookupError(name)


def _need_nodes(steps, count: int) -> None:
    if len(steps.nodes) < count:
        pytest.skip(f"needs {count} nodes, the cluster has {len(steps.nodes)} (E2E_NODES)")


def test_seed_labels_select_a_subset(steps):
    """The seed's comprehensive template (sriov-capable=true AND foo=bar) configures only the
    node carrying both labels; a node with one of them, and unlabelled nodes, stay untouched.
    A second template needing only sriov-capable=true selects both labelled nodes."""
    _need_nodes(steps, 3)
    both, only_sriov, rest = steps.nodes[0], steps.nodes[1], steps.nodes[2:]
    steps.label(both.name, {SRIOV_CAPABLE: "true", "foo": "bar"})
    steps.label(only_sriov.name, {SRIOV_CAPABLE: "true"})

    comprehensive = _example("hostconfig-kernel-eno2")
    mtu_only = template("e2e-sriov-capable-mtu", {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000}]},
                        node_selector={SRIOV_CAPABLE: "true"})
    steps.apply(comprehensive)
    steps.apply(mtu_only)

    steps.wait_applied(comprehensive, both)
    for node in (both, only_sriov):
        steps.wait_applied(mtu_only, node)
    steps.wait_not_selected(only_sriov.name, "hostconfig-kernel-eno2")
    assert only_sriov.mtu("eno2") == steps.baseline["snapshots"][only_sriov.name]["links"]["eno2"]["mtu"]
    for node in rest:
        steps.wait_not_selected(node.name, "hostconfig-kernel-eno2")
        steps.wait_not_selected(node.name, "e2e-sriov-capable-mtu")
        steps.assert_at_baseline(node)


def test_hostname_targets_one_node_for_addresses(steps):
    """Addresses only make sense per node (seed): a kubernetes.io/hostname selector puts them on
    exactly that node, as the interface's complete address list."""
    _need_nodes(steps, 2)
    target = steps.nodes[1]
    hostname = steps.cluster.hostname_label(target.name)
    obj = template("e2e-addresses-one-node", {"interfaceConfig": [{
        "name": "enp3s0f1", "mtu": 9000,
        "ipv4": {"address": ["192.168.195.7/24", "192.168.196.8/24"]},
        "ipv6": {"address": ["fc00:1::3/112"]}}]}, node_selector={HOSTNAME: hostname})
    steps.apply(obj)
    steps.wait_applied(obj, target)
    assert target.addrs_of("enp3s0f1") == {"192.168.195.7/24", "192.168.196.8/24", "fc00:1::3/112"}
    for node in steps.nodes:
        if node is not target:
            steps.wait_not_selected(node.name, "e2e-addresses-one-node")
            steps.assert_at_baseline(node)


def test_node_gains_then_loses_label(steps):
    """docs/pitfalls.md 35: a node that gains a label is configured; when it loses it, everything the
    template did is undone (MTU restored, addresses removed, VFs back to what they were)."""
    _need_nodes(steps, 2)
    node, other = steps.nodes[1], steps.nodes[0]
    spec = {"interfaceConfig": [{"name": "eno1", "mtu": 9000,
                                 "ipv4": {"address": ["10.40.0.1/24"]}}]}
    if steps.caps.sriov:
        spec["sriovConfig"] = [{"pfName": "enp3s0f0", "numVfs": 2, "vfDriver": "ixgbevf"}]
    obj = template("e2e-edge-role", spec, node_selector={"e2e.plumber.k8s.pf9.io/role": "edge"})
    steps.apply(obj)
    for n in steps.nodes:
        steps.wait_not_selected(n.name, "e2e-edge-role")
        steps.assert_at_baseline(n)

    steps.label(node.name, {"e2e.plumber.k8s.pf9.io/role": "edge"})
    steps.wait_applied(obj, node)
    steps.assert_at_baseline(other)

    steps.label(node.name, {"e2e.plumber.k8s.pf9.io/role": None})
    steps.wait_not_selected(node.name, "e2e-edge-role")
    steps.wait_baseline(node)
