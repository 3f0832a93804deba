"""The agent run from its image the way the DaemonSet runs it, on one simulated node: seed
examples applied and deleted, checked on the host and in the HostNetwork status.

What this catches that tests/e2e cannot: a hostPath mounted where the agent does not look, a tool
missing from the image (ovs-vsctl), an entrypoint that does not take the manifest's args, an
in-cluster configuration that does not work. Each check below goes through one of those: SR-IOV
and MTU through the /sys mount and netlink, the OVS bridge through ovs-vsctl and the
/var/run/openvswitch mount, the ledger through the /var/lib/plumber-agent mount, the API through
the service account files and KUBERNETES_SERVICE_HOST/PORT.
"""
from __future__ import annotations

import copy
from typing import Iterator

import pytest

from plumber_agent.host.ledger import JOURNAL_FILE, read_records
from tests.e2e.cluster import load_examples, template
from tests.e2e.steps import Steps, take_baseline
from tests.image.launcher import ImageCluster, ImageNode

pytestmark = [pytest.mark.image, pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"
EXAMPLE = "01-hostconfig-kernel-eno2.yaml"  # SR-IOV, MTU, VLANs and an OVS bridge on eno2


@pytest.fixture
def steps(image_cluster: ImageCluster) -> Iterator[Steps]:
    helper = Steps(image_cluster, take_baseline(image_cluster))
    yield helper
    helper.cleanup()


def _node(steps: Steps) -> ImageNode:
    (node,) = steps.nodes
    assert isinstance(node, ImageNode)
    return node


def _ledger_keys(node: ImageNode) -> list[str]:
    path = node.state_dir / JOURNAL_FILE
    assert path.is_file(), f"no ledger at {path}: the state hostPath is not where the agent writes"
    return sorted(read_records(node.state_dir))


def test_a_seed_example_applies_and_is_undone(steps):
    node = _node(steps)
    (obj,) = [copy.deepcopy(o) for name, o in load_examples() if name == EXAMPLE]
    selector = obj["spec"]["nodeSelector"]
    steps.label(node.name, {k: v for k, v in selector.items() if k != HOSTNAME})

    steps.apply(obj)
    entry = steps.wait_applied(obj, node)  # status entry and the host (numVfs, MTU, ...)
    assert node.num_vfs("0000:01:00.1") == 4, "eno2's sriov_numvfs through the /sys mount"
    assert node.mtu("eno2") == 9000
    status = steps.api.hostnetwork(node.name)["status"]
    (eno2,) = [i for i in status["interfaceStatus"] if i.get("pfName") == "eno2"]
    assert eno2["mtu"] == 9000 and eno2["sriovStatus"]["numVfs"] == 4, eno2
    print(f"\n{EXAMPLE} on {node.name}: {entry['state']}: {(entry.get('message') or '')[:160]}")
    assert _ledger_keys(node), "the agent recorded nothing in its ledger"

    steps.cleanup()  # delete, restore labels, wait for the status and the host to be as before
    steps.created.clear()
    assert node.num_vfs("0000:01:00.1") == 8 and node.mtu("eno2") != 9000


def test_an_ovs_bridge_goes_through_the_images_ovs_vsctl(steps):
    node = _node(steps)
    if not steps.caps.ovs:
        pytest.skip(steps.caps.why_not["ovs"])
    obj = template("image-ovs", {"ovsConfig": [{
        "bridgeName": "img-br0", "nodeInterface": "enp3s0f1",
        "params": {"datapathType": steps.caps.ovs_datapath}}]},
        node_selector={HOSTNAME: steps.cluster.hostname_label(node.name)})
    steps.apply(obj)
    steps.wait_applied(obj, node)
    assert node.ovs_bridges().get("img-br0") == {"enp3s0f1"}
    status = steps.api.hostnetwork(node.name)["status"]
    assert not status.get("ovsError"), status.get("ovsError")
    assert "img-br0" in [b["name"] for b in status.get("ovsStatus") or []], status.get("ovsStatus")
    steps.cleanup()
    steps.created.clear()
    assert "img-br0" not in node.ovs_bridges()
