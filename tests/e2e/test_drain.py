"""Drain before disruptive changes (issue 23, README "Draining before disruptive changes")
across six simulated nodes with pods that use VFs and a PodDisruptionBudget.

Every node's eno2 starts with 8 VFs (the harness's PF table); a template setting numVfs 4
destroys them all, and with them the network of the pod on each node whose Multus
network-status names VF 0000:02:0a.1. The pods and the budget are objects of the in-repo fake
API server (Pods, PDB status, the Eviction subresource: tests/fakeapi/README.md), which leaves
out the ReplicaSet controller and the scheduler: `Replicas` plays both, re-creating an evicted
pod, Ready, on another schedulable node.

What is measured comes from the API server's own history (every committed change in order of
resourceVersion), not from sampling: how many nodes were cordoned at one time, and how many
pods of the budget were alive after each change.
"""
from __future__ import annotations

import json
import threading
from typing import Iterator

import pytest

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, template
from tests.e2e.steps import take_baseline
from tests.e2e.rollout import (assert_rollout_under_limit, generation_of, log_marks, states_at,
                               template_status)
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

NODE_COUNT = 6
NAMESPACE = "plumber-system"
AGENT_ARGS = ("--slot-lease-duration-s", "4", "--leader-lease-duration-s", "3",
              "--namespace", NAMESPACE)
EVERY_NODE = {"kubernetes.io/os": "linux"}
APPS = "apps"
APP_LABELS = {"app": "web"}
PDB_NAME = "web-pdb"
RS_UID = "5d0c8c3e-0000-4000-8000-00000000a11c"  # the ReplicaSet the pods name as controller
RESOURCE = "intel.com/sriov_eno2"
POD_VF = "0000:02:0a.1"  # eno2's VF 1 (the harness's PF table): there before and after
PF = "0000:01:00.1"
CORDONED_BY = "plumber.k8s.pf9.io/cordoned-by"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
DRAIN_S = 60  # long enough for a loaded machine; a drain that can finish finishes well before


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(request) -> Iterator:
    from tests.e2e.harness import module_cluster
    for instance in module_cluster(request, count=NODE_COUNT, agent_args=AGENT_ARGS,
                                   what="drain"):
        if instance.server is None or not instance.caps.sriov:
            pytest.skip("the drain scenarios need the in-repo fake API server (pods, budgets, "
                        "eviction) and the SR-IOV sysfs emulator: "
                        + (instance.caps.why_not.get("sriov") or "$KUBECONFIG names another "
                           "server"))
        yield instance


@pytest.fixture(scope="module")
def baseline(cluster) -> dict:
    return take_baseline(cluster)


class Replicas:
    """The ReplicaSet controller and the scheduler for one pod per node: an evicted pod is
    re-created at once, Ready, on a schedulable node other than the one it left (a real
    ReplicaSet creates a new pod; the scheduler skips cordoned nodes)."""

    def __init__(self, cluster) -> None:
        self.server = cluster.server
        self.nodes = [n.name for n in cluster.nodes]
        self.created = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="replicas")

    def pod(self, node: str) -> dict:
        self.created += 1
        name = f"web-{self.created}"
        status = [{"name": "cluster-default", "interface": "eth0", "default": True},
                  {"name": f"{APPS}/sriov-eno2", "interface": "net1",
                   "device-info": {"type": "pci", "version": "1.1.0",
                                   "pci": {"pci-address": POD_VF}}}]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": APPS, "labels": dict(APP_LABELS),
                             "annotations": {NETWORK_STATUS: json.dumps(status)},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": "web", "uid": RS_UID,
                                                  "controller": True}]},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                                         "resources": {"requests": {RESOURCE: "1"},
                                                       "limits": {RESOURCE: "1"}}}]},
                "status": {"phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    def start(self) -> "Replicas":
        for node in self.nodes:
            self.server.put_object("pods", self.pod(node))
        self._thread.start()
        return self

    def _schedulable(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.server.list("nodes")
                if not (n.get("spec") or {}).get("unschedulable")]

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pods = [p for p in self.server.list("pods") if p["metadata"]["namespace"] == APPS]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            for _ in range(NODE_COUNT - len(live)):
                origin = {p["spec"]["nodeName"] for p in pods}
                targets = [n for n in self._schedulable() if n not in origin] or self._schedulable()
                if targets:
                    self.server.put_object("pods", self.pod(targets[0]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for pod in self.server.list("pods"):
            self.server.delete_object("pods", pod["metadata"]["name"], APPS)


@pytest.fixture
def replicas(cluster) -> Iterator[Replicas]:
    """Six web pods (one per node, each on VF 1 of eno2), re-created when evicted; removed
    (with the budget) before the test's template is deleted, so its cleanup drains nothing."""
    instance = Replicas(cluster).start()
    try:
        yield instance
    finally:
        instance.stop()
        cluster.server.delete_object("poddisruptionbudgets", PDB_NAME, APPS)


def budget(cluster, min_available: int) -> None:
    cluster.server.put_object("poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": PDB_NAME, "namespace": APPS},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": dict(APP_LABELS)}}})


def numvfs_template(name: str, *, drain: str = "pods", timeout_s: int = DRAIN_S) -> dict:
    return template(name, {"sriovConfig": [{"pfName": "eno2", "numVfs": 4}],
                           "rollout": {"maxUnavailable": 1, "drain": drain,
                                       "drainTimeoutSeconds": timeout_s}},
                    node_selector=EVERY_NODE)


# ----------------------------------------------------------------------------------- history
def history(cluster) -> list[tuple[int, str, str, dict]]:
    """Every change the fake API server committed, in resourceVersion order (its watch cache;
    read under its lock, as its watch handler does)."""
    server = cluster.server
    with server._lock:
        return list(server._log)


def most_cordoned(cluster, since_rv: int) -> tuple[int, list[str]]:
    """The most nodes unschedulable at one time after `since_rv`, and every node cordoned."""
    state: dict[str, bool] = {}
    most, ever = 0, set()
    for rv, resource, _, obj in history(cluster):
        if resource != "nodes":
            continue
        state[obj["metadata"]["name"]] = bool((obj.get("spec") or {}).get("unschedulable"))
        if rv > since_rv:
            cordoned = {n for n, on in state.items() if on}
            ever |= cordoned
            most = max(most, len(cordoned))
    return most, sorted(ever)


def fewest_alive(cluster, since_rv: int) -> int:
    """The fewest budgeted pods alive (not terminating) after any change after `since_rv`."""
    alive: dict[str, bool] = {}
    fewest = None
    for rv, resource, event, obj in history(cluster):
        if resource != "pods" or obj["metadata"].get("namespace") != APPS:
            continue
        alive[obj["metadata"]["name"]] = event != "DELETED" and not obj["metadata"].get(
            "deletionTimestamp")
        if rv > since_rv and len(alive) >= NODE_COUNT:
            count = sum(alive.values())
            fewest = count if fewest is None else min(fewest, count)
    assert fewest is not None, "no pod change seen"
    return fewest


def current_rv(cluster) -> int:
    return history(cluster)[-1][0]


def evictions(cluster, since_rv: int) -> list[str]:
    """Budgeted pods deleted after `since_rv`: only an accepted eviction deletes one before the
    test's teardown (grace period 0: gone at once, no terminating state in between)."""
    return [obj["metadata"]["name"] for rv, resource, event, obj in history(cluster)
            if rv > since_rv and resource == "pods" and event == "DELETED"
            and obj["metadata"].get("namespace") == APPS]


def cordons(cluster) -> dict[str, tuple[bool, str]]:
    """Each node's (unschedulable, cordoned-by annotation) now."""
    return {n["metadata"]["name"]: (bool((n.get("spec") or {}).get("unschedulable")),
                                    (n["metadata"].get("annotations") or {}).get(CORDONED_BY, ""))
            for n in cluster.server.list("nodes")}


def assert_none_cordoned(cluster) -> None:
    left = {node: state for node, state in cordons(cluster).items() if state != (False, "")}
    assert not left, f"nodes left cordoned (or with the agent's cordon record): {left}"


def wait_applied_everywhere(steps, name: str) -> None:
    generation = generation_of(steps, name)

    def all_applied():
        by_state = states_at(steps, name, generation)
        if by_state.get("Applied", []) != [n.name for n in steps.nodes]:
            raise AssertionError(f"want every node Applied: {by_state}")
        return True
    wait_for(all_applied, timeout_s=CONVERGE_TIMEOUT_S * 2, what=f"{name} applied everywhere")


def num_vfs(steps) -> dict[str, int]:
    return {node.name: node.num_vfs(PF) for node in steps.nodes}


# =================================================================================== scenarios
def test_a_numvfs_change_drains_one_node_at_a_time_and_never_breaks_the_budget(steps, replicas):
    budget(steps.cluster, NODE_COUNT - 1)  # one pod of six may be away at a time
    since = current_rv(steps.cluster)
    marks = log_marks(steps.cluster)
    name = "e2e-drain-pods"
    steps.apply(numvfs_template(name))
    wait_applied_everywhere(steps, name)
    assert num_vfs(steps) == {node.name: 4 for node in steps.nodes}
    assert_rollout_under_limit(steps.cluster, marks, name, generation_of(steps, name), 1)
    most, ever = most_cordoned(steps.cluster, since)
    assert most == 1 and len(ever) == NODE_COUNT, (most, ever)
    assert fewest_alive(steps.cluster, since) >= NODE_COUNT - 1
    assert len(evictions(steps.cluster, since)) >= NODE_COUNT  # each node's pod had to go
    assert_none_cordoned(steps.cluster)


def test_a_budget_that_cannot_be_satisfied_stops_the_rollout_on_its_first_node(steps, replicas):
    budget(steps.cluster, NODE_COUNT)  # no pod may go
    since = current_rv(steps.cluster)
    name = "e2e-drain-blocked"
    steps.apply(numvfs_template(name, timeout_s=3))
    generation = generation_of(steps, name)

    def halted():
        by_state = states_at(steps, name, generation)
        if len(by_state.get("Failed", [])) != 1 or len(by_state.get("Waiting", [])) != NODE_COUNT - 1:
            raise AssertionError(f"want 1 Failed and {NODE_COUNT - 1} Waiting: {by_state}")
        status = template_status(steps, name)
        if status.get("phase") != "Halted" or status.get("observedGeneration") != generation:
            raise AssertionError(f"template status {status}")
        return by_state["Failed"][0], status
    first, status = wait_for(halted, timeout_s=CONVERGE_TIMEOUT_S, what=f"{name} halted")
    message = steps.template_entry(first, name)["message"]
    assert f"drain of node {first} timed out after 3 s, the disruptive change was not made" \
        in message, message
    assert f"PodDisruptionBudget {APPS}/{PDB_NAME}" in message and "pod apps/web-" in message
    [failing] = status["failingNodes"]
    assert failing["node"] == first and PDB_NAME in failing["message"]
    degraded = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded and degraded[0]["status"] == "True", status["conditions"]
    assert_none_cordoned(steps.cluster)  # the failed node was uncordoned before it reported
    most, ever = most_cordoned(steps.cluster, since)
    assert ever == [first] and most == 1
    assert evictions(steps.cluster, since) == []
    assert num_vfs(steps) == {node.name: 8 for node in steps.nodes}  # nothing changed anywhere


def test_an_agent_killed_mid_drain_leaves_no_node_cordoned_after_it_restarts(steps, replicas):
    budget(steps.cluster, NODE_COUNT)  # the drain blocks: the agent is killed inside it
    name = "e2e-drain-killed"
    steps.apply(numvfs_template(name, timeout_s=600))

    def draining():
        found = [node for node, (on, by) in cordons(steps.cluster).items() if on and by]
        assert found, "no node cordoned by the agent yet"
        return found[0]
    victim = steps.cluster.node(wait_for(draining, timeout_s=CONVERGE_TIMEOUT_S,
                                         what="a node cordoned for the drain"))
    victim.kill_agent()
    assert cordons(steps.cluster)[victim.name][0], "the node must still be cordoned (mid-drain)"
    # The restarted agent will not drain again (so no later drain's uncordon can hide a lost
    # record): only what it persisted before the cordon brings the node back.
    steps.patch(name, {"spec": {"rollout": {"drain": "none"}}})
    victim.start_agent()
    victim.wait_agent_ready()
    wait_applied_everywhere(steps, name)
    assert_none_cordoned(steps.cluster)
    assert "interrupted by a restart" in victim.agent_log()
    assert num_vfs(steps) == {node.name: 4 for node in steps.nodes}


def test_drain_none_keeps_todays_behaviour(steps, replicas):
    budget(steps.cluster, NODE_COUNT)  # a drain could not evict anything
    since = current_rv(steps.cluster)
    requests_before = len(steps.cluster.server.request_log)
    name = "e2e-drain-none"
    steps.apply(numvfs_template(name, drain="none"))
    wait_applied_everywhere(steps, name)
    assert num_vfs(steps) == {node.name: 4 for node in steps.nodes}
    asked = [(r.method, r.path) for r in steps.cluster.server.request_log[requests_before:]
             if r.path.endswith("/eviction") or (r.method == "PATCH" and r.path.startswith(
                 "/api/v1/nodes/"))]
    assert asked == [], asked
    assert most_cordoned(steps.cluster, since) == (0, [])
    assert evictions(steps.cluster, since) == []
    assert replicas.created == NODE_COUNT  # every pod stayed
