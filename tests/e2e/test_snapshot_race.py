"""Issue 14: host-state snapshots must not race the agent.

A snapshot used to list OVS bridges (`list-br`) and then read each one's ports (`list-ports BR`);
when the agent deleted a bridge in between -- exactly the cleanup `wait_baseline` waits for --
`list-ports` failed and the RuntimeError escaped the wait. Here the race is made deterministic:
a real simulated node (namespace, veth NICs, userspace Open vSwitch, no agent) whose read seam
(`NodeHost.after_read`) deletes the bridge (or a link) right after a chosen read. The old
two-step read is kept below as a control, to prove the seam really lands between the reads.
"""
from __future__ import annotations

import contextlib
import types
from typing import Iterator

import pytest

from tests.e2e.cluster import HostCommandError, NodeHost
from tests.e2e.harness import LocalNode, local_skip_reason
from tests.e2e.steps import Steps
from tests.helpers.netns import ip
from tests.helpers.ovs import missing_ovs_reason

pytestmark = [pytest.mark.e2e, pytest.mark.privileged, pytest.mark.ovs]
BRIDGE = "ovs-br01"
PORT = "eno2"
BASELINE_TIMEOUT_S = 30.0


@pytest.fixture
def node(tmp_path) -> Iterator[LocalNode]:
    reason = local_skip_reason() or missing_ovs_reason()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        yield LocalNode(name="race-node", index=0, workdir=tmp_path / "n0",
                        kubeconfig=str(tmp_path / "no-kubeconfig"), stack=stack,
                        use_sysfs=False, use_ovs=True)


def add_bridge(node: LocalNode) -> None:
    node.ovs.vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")
    node.ovs.vsctl("add-port", BRIDGE, PORT)


def delete_after(node: NodeHost, *, read_prefix: str, action) -> list[str]:
    """Run `action` once, right after the first host read whose description starts with
    `read_prefix`; returns the list of reads seen (for the assertion messages)."""
    reads: list[str] = []

    def hook(what: str) -> None:
        reads.append(what)
        if what.startswith(read_prefix) and not hook.fired:
            hook.fired = True
            action()

    hook.fired = False
    node.after_read = hook
    return reads


def two_step_ovs_bridges(node: NodeHost) -> dict[str, set[str]]:
    """The read issue 14 reported (list-br, then list-ports per bridge), through the same seam."""
    out = node.ovs_vsctl("list-br")
    node._read_done("ovs-vsctl list-br")
    bridges = {}
    for bridge in out.split():
        bridges[bridge] = set((node.ovs_vsctl("list-ports", bridge) or "").split())
    return bridges


def test_control_the_seam_reproduces_the_two_step_race(node):
    add_bridge(node)
    delete_after(node, read_prefix="ovs-vsctl", action=lambda: node.ovs.vsctl("del-br", BRIDGE))
    with pytest.raises(RuntimeError, match=f"no bridge named {BRIDGE}"):
        two_step_ovs_bridges(node)


@pytest.mark.parametrize("read_prefix", ["ip -d addr", "ip -4 route", "ovs-vsctl"])
def test_bridge_deleted_between_snapshot_reads_is_a_change_not_an_error(node, read_prefix):
    baseline = node.snapshot()
    assert BRIDGE not in baseline["ovs"]
    add_bridge(node)
    assert node.ovs_bridges() == {BRIDGE: {PORT}}
    reads = delete_after(node, read_prefix=read_prefix,
                         action=lambda: node.ovs.vsctl("del-br", BRIDGE))

    racing = node.snapshot()  # the agent deletes the bridge while we read: no error

    assert reads and reads[0].startswith("ip -d addr"), reads
    # One transaction: the bridge with its port, or no bridge; never a half-read bridge.
    assert racing["ovs"] in ({BRIDGE: [PORT]}, {}), racing["ovs"]
    if read_prefix == "ovs-vsctl":  # deleted after the one OVS read: the read saw it whole
        assert racing["ovs"] == {BRIDGE: [PORT]}
    else:
        assert racing["ovs"] == {}
    # The wait from the CI failure (tests/e2e/test_vlan_fullkernel.py -> steps.wait_baseline)
    # now converges instead of raising.
    steps = Steps(types.SimpleNamespace(api=None, caps=None),
                  {"snapshots": {node.name: baseline}, "labels": {}})
    steps.wait_baseline(node, timeout_s=BASELINE_TIMEOUT_S)


def add_veth_with_address(node: LocalNode) -> None:
    ip(node.netns, "link", "add", "name", "racea", "type", "veth", "peer", "name", "raceb")
    ip(node.netns, "addr", "add", "10.99.0.1/24", "dev", "racea")


@pytest.mark.parametrize("accessor", ["addrs_of", "snapshot", "host_problems"])
def test_link_deleted_between_reads_is_a_change_not_an_error(node, accessor):
    """The old addrs_of read the link list, then `ip addr show dev racea`: the second read
    failed once the agent had deleted the link. The link goes right after the first read."""
    from tests.e2e.cluster import Capabilities
    from tests.e2e.expect import host_problems

    add_veth_with_address(node)
    assert node.addrs_of("racea") == {"10.99.0.1/24"}
    delete_after(node, read_prefix="ip", action=lambda: ip(node.netns, "link", "del", "racea"))
    spec = {"interfaceConfig": [{"name": "racea", "ipv4": {"address": ["10.99.0.1/24"]}}]}
    calls = {"addrs_of": lambda: node.addrs_of("racea"),
             "snapshot": node.snapshot,
             "host_problems": lambda: host_problems(node, spec, Capabilities(False, False, True))}
    calls[accessor]()  # no IpCommandError / HostCommandError
    node.after_read = None
    assert "racea" not in node.links()
    assert node.addrs_of("racea") == set()  # a link that is gone has no addresses
    assert host_problems(node, spec, Capabilities(False, False, True)) == ["racea: no such link"]


def test_a_broken_read_is_an_error_at_once_not_a_not_yet(node):
    """The other half of the contract: a real failure (OVS gone) fails the wait at once."""
    node.ovs.kill_ovsdb()
    steps = Steps(types.SimpleNamespace(api=None, caps=None),
                  {"snapshots": {node.name: {}}, "labels": {}})
    with pytest.raises((RuntimeError, HostCommandError)) as excinfo:
        steps.wait_baseline(node, timeout_s=BASELINE_TIMEOUT_S)
    assert not isinstance(excinfo.value, AssertionError)
    assert "ovs-vsctl" in str(excinfo.value)
