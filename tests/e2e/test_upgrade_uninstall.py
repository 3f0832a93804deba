"""The add-on's lifecycle on real agents (README "Upgrade and uninstall"): an upgrade (the agent
replaced by a new process on the same state dir) touches no host and writes nothing to the API
but the status refresh; the two uninstall paths, keep the host configuration (agents first, then
the CRDs: nothing undone) and remove it (every template emptied under the rollout limit, then
deleted, then the agents and CRDs go); and a CRD deleted while the agents run, which undoes
nothing (src/plumber_agent/crd_guard.py) until the CRD is back.

Each is checked on the hosts (snapshots, the SR-IOV emulator's write log, the executor's log
lines) and in the fake API server's request log. Its own 2-node cluster (no Open vSwitch:
nothing here needs it; short leases and a short CRD re-check so each scenario takes seconds).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, snapshot_diff, template
from tests.e2e.steps import take_baseline
from tests.e2e.rollout import (EXECUTOR_LOGGER, assert_rollout_under_limit, holds_for,
                               log_marks, log_records)
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

NODE_COUNT = 2
NAMESPACE = "plumber-system"
CRD_RECHECK_S = 1.0
AGENT_ARGS = ("--slot-lease-duration-s", "4", "--leader-lease-duration-s", "3",
              "--namespace", NAMESPACE, "--crd-recheck-s", str(CRD_RECHECK_S))
EVERY_NODE = {"kubernetes.io/os": "linux"}
LEADER_LEASE = "plumber-status-writer"
CUSTOM_RESOURCES = ("hostnetworktemplates", "hostnetworks", "addressclaims")
QUIET_S = 3.0  # how long nothing may happen after a replacement / a CRD deletion
HOLD_LINE = "vanished while the CRD"


@pytest.fixture(scope="module")
def cluster(request) -> Iterator:
    from tests.e2e.harness import module_cluster
    yield from module_cluster(
        request, count=NODE_COUNT, agent_args=AGENT_ARGS, what="lifecycle",
        why_local="the lifecycle scenarios need the in-repo fake API server (its request log, "
                  "CRD deletion): a LOCAL cluster of their own")


@pytest.fixture(scope="module")
def baseline(cluster) -> dict:
    return take_baseline(cluster)


@pytest.fixture(autouse=True)
def crds_back(steps, cluster):
    """Whatever a scenario deleted, the CRDs are installed again before its cleanup (set up
    after `steps`, so torn down before it; the cleanup then starts the agents: with no template
    they undo what is left, the reinstall case)."""
    yield
    for plural in CUSTOM_RESOURCES:
        cluster.server.set_crd_installed(plural, True)


def spec(steps, *, limit: int = NODE_COUNT) -> dict:
    """MTU, an address and a route on enp3s0f0, VFs on eno1 where SR-IOV is emulated."""
    out = {"nodeSelector": dict(EVERY_NODE), "rollout": {"maxUnavailable": limit},
           "interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000,
                                "ipv4": {"address": ["10.70.0.1/24"]}}],
           "routes": {"ipv4": [{"dst": "10.71.0.0/16", "gw": "10.70.0.254", "dev": "enp3s0f0"}]}}
    if steps.caps.sriov:
        out["sriovConfig"] = [{"pfName": "eno1", "numVfs": 4, "vfDriver": "i40evf"}]
    return out


def apply_everywhere(steps, name: str, **options) -> dict:
    obj = template(name, spec(steps, **options))
    steps.apply(obj)
    for node in steps.nodes:
        steps.wait_applied(obj, node)
    return obj


def snapshots(steps) -> dict:
    return {node.name: node.snapshot() for node in steps.nodes}


def assert_hosts_are(steps, want: dict, why: str) -> None:
    for node in steps.nodes:
        diff = snapshot_diff(want[node.name], node.snapshot())
        assert not diff, f"{node.name}: {why}, yet its host changed: {diff}"


def host_actions_since(steps, marks: dict) -> list[str]:
    """Every host action the executors logged after `marks`."""
    out = []
    for node in steps.nodes:
        for offset, record in log_records(node):
            if offset > marks.get(node.name, 0) \
                    and str(record.get("logger", "")).startswith(EXECUTOR_LOGGER) \
                    and str(record.get("msg", "")).startswith("apply  "):
                out.append(f"{node.name}: {record['msg']}")
    return out


def clear_sysfs_writes(steps) -> None:
    for node in steps.nodes:
        if node.sysfs is not None:
            node.sysfs.clear_writes()


def sysfs_writes(steps) -> dict:
    return {node.name: node.sysfs.writes() for node in steps.nodes
            if node.sysfs is not None and node.sysfs.writes()}


def assert_quiet(steps, marks: dict) -> None:
    """No host action logged and no sysfs write since `marks` (for holds_for)."""
    actions = host_actions_since(steps, marks)
    assert not actions, actions
    writes = sysfs_writes(steps)
    assert not writes, writes


def writes_since(cluster, mark: int) -> list[tuple[str, str]]:
    """(method, path) of every write request the fake API server logged after `mark`."""
    with cluster.server._lock:
        records = list(cluster.server.request_log[mark:])
    return [(r.method, r.path) for r in records if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def changes_since(cluster, revision: int) -> list[tuple[str, str, str, str]]:
    """(resource, event type, name, reason) of every change committed after `revision` (the
    fake server's change log: what those writes did; `reason` for Events)."""
    with cluster.server._lock:
        log = list(cluster.server._log)
    return [(resource, kind, obj["metadata"]["name"], str(obj.get("reason") or ""))
            for rv, resource, kind, obj in log if rv > revision]


def stop_all_agents(steps) -> None:
    """`kubectl delete daemonset`: every pod gets SIGTERM (the agent drains and exits)."""
    for node in steps.nodes:
        node.stop_agent()
        assert not node.agent_running()


def test_an_upgrade_replaces_the_agent_and_changes_nothing(steps):
    """A DaemonSet rollout's view of one node: SIGTERM, then a new agent process (a new image:
    the same code here) on the same state hostPath. Nothing on the host is undone or applied
    again, and the only API writes are the node's status refresh and the status writer's
    leader Lease (its heartbeat)."""
    name = "e2e-upgrade"
    apply_everywhere(steps, name)
    node = steps.nodes[0]
    before = snapshots(steps)
    node.stop_agent()
    clear_sysfs_writes(steps)
    marks = log_marks(steps.cluster)
    request_mark = len(steps.cluster.server.request_log)
    revision = int(steps.cluster.server.resource_version)

    node.start_agent()
    node.wait_agent_ready()
    # Its first pass is over once its HostNetwork says so at the new process's start.
    steps.wait_state(node.name, name, "Applied")
    holds_for(lambda: assert_quiet(steps, marks), QUIET_S,
              what="no host action after the replacement")

    assert_hosts_are(steps, before, "the agent was only replaced")
    assert host_actions_since(steps, marks) == []
    assert sysfs_writes(steps) == {}
    # What was written: at most the node's status refresh, and the status writer's leader
    # Lease (created again when the replaced agent, the writer, released it on SIGTERM; renewed).
    changes = changes_since(steps.cluster, revision)
    refresh = [c for c in changes if c[:3] == ("hostnetworks", "MODIFIED", node.name)]
    leader = [c for c in changes if c[0] == "leases" and c[2] == LEADER_LEASE]
    others = [c for c in changes if c not in refresh and c not in leader]
    assert others == [], f"an upgrade changed more than the status refresh: {others}"
    assert len(refresh) <= 1, refresh
    # The requests: the refresh and Lease requests only (a candidate's create of the leader
    # Lease that someone else holds is a 409 that changes nothing: no slot was ever written).
    writes = writes_since(steps.cluster, request_mark)
    lease_writes = [w for w in writes if "/leases" in w[1]]
    assert len(writes) == len(refresh) + len(lease_writes), writes


def test_uninstall_keeping_the_host_configuration(steps):
    """Agents first (the DaemonSet deleted), then the CRDs (every template, HostNetwork and
    AddressClaim with them): nothing is undone, on any node."""
    apply_everywhere(steps, "e2e-keep")
    applied = snapshots(steps)
    marks = log_marks(steps.cluster)
    stop_all_agents(steps)
    clear_sysfs_writes(steps)
    for plural in CUSTOM_RESOURCES:
        steps.cluster.server.delete_crd(plural)
    assert steps.cluster.server.list("hostnetworktemplates") == []
    assert_hosts_are(steps, applied, "the agents went first, then the CRDs")
    assert sysfs_writes(steps) == {} and host_actions_since(steps, marks) == []


def test_uninstall_removing_the_host_configuration_under_the_rollout_limit(steps):
    """Every template emptied (its nodeSelector and rollout kept): a new generation that rolls
    out under maxUnavailable like any edit, each node undoing what the template set; then the
    templates are deleted (nothing left to undo), then the agents and the CRDs go."""
    name = "e2e-remove"
    limit = 1
    obj = apply_everywhere(steps, name, limit=limit)
    marks = log_marks(steps.cluster)
    emptied = {"nodeSelector": obj["spec"]["nodeSelector"], "rollout": obj["spec"]["rollout"]}
    steps.patch(name, {"spec": {key: None for key in obj["spec"] if key not in emptied}})
    generation = steps.api.get_template(name)["metadata"]["generation"]
    assert generation == 2
    for node in steps.nodes:
        steps.wait_state(node.name, name, "Applied")
        steps.wait_baseline(node)
    assert_rollout_under_limit(steps.cluster, marks, name, generation, limit)

    marks = log_marks(steps.cluster)
    clear_sysfs_writes(steps)
    steps.delete(name)
    for node in steps.nodes:
        wait_for(lambda node=node: name not in steps.api.template_statuses(node.name),
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"{name} gone from {node.name}'s status")
    stop_all_agents(steps)
    for plural in CUSTOM_RESOURCES:
        steps.cluster.server.delete_crd(plural)
    for node in steps.nodes:
        steps.assert_at_baseline(node)
    assert host_actions_since(steps, marks) == [], "deleting an emptied template changed a host"


def test_a_crd_deleted_while_agents_run_undoes_nothing(steps):
    """`kubectl delete crd hostnetworktemplates...` with every agent running: the API server
    deletes every template first (each agent's watch sees DELETEs), then the resource 404s.
    Every agent keeps its host as it is, logs why, and acts again only once the CRD is back."""
    name = "e2e-crd-deleted"
    apply_everywhere(steps, name)
    applied = snapshots(steps)
    marks = log_marks(steps.cluster)
    clear_sysfs_writes(steps)
    server = steps.cluster.server

    server.begin_crd_deletion("hostnetworktemplates")
    for node in steps.nodes:
        wait_for(lambda node=node: HOLD_LINE in node.agent_log()[marks[node.name]:],
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"{node.name} holding")
    server.finish_crd_deletion("hostnetworktemplates")
    holds_for(lambda: assert_quiet(steps, marks), QUIET_S,
              what="no host action while the CRD is deleted")
    assert_hosts_are(steps, applied, "its templates went with their CRD")
    assert sysfs_writes(steps) == {} and host_actions_since(steps, marks) == []
    for node in steps.nodes:
        assert steps.template_entry(node.name, name) is not None, \
            f"{node.name} still reports what it keeps"

    # The CRD and the template are back: the hold ends and nothing changes either.
    server.set_crd_installed("hostnetworktemplates", True)
    steps.apply(template(name, spec(steps)))
    for node in steps.nodes:
        wait_for(lambda node=node: "is back" in node.agent_log()[marks[node.name]:],
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"{node.name} resuming")
        steps.wait_state(node.name, name, "Applied")
    assert_hosts_are(steps, applied, "the same template came back")
    assert host_actions_since(steps, marks) == []
