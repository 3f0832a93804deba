"""The drain (fleet/drain.py) against a node API at our own seam (NodeDrainApi): who is evicted,
the budget that blocks it, the timeout, the cordon's owner, recovery after a kill, and the
DrainGate's decision to leave a template's change out when its drain failed."""
from __future__ import annotations

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.fleet.drain import (DRAIN_FILE, DRAIN_RETRY_MAX_S, DrainGate, Drainer,
                                       DrainSpec, Evicted, PassPods)
from plumber_agent.models.actions import Action, Phase, Verb
from plumber_agent.models.pods import pod_use
from plumber_agent.planner.disruption import annotate
from tests.unit.test_disruption import ENO2, ENO2_VFS, host, pod

PDB_MESSAGE = ("Cannot evict pod as it would violate the pod's disruption budget. "
               "(PodDisruptionBudget apps/web-pdb: needs 2 healthy pods, has 2)")


class NodeApi:
    """One node's pods, a set of pods a budget protects, the Node's cordon and its owner."""

    def __init__(self, pods: list[dict], *, protected=(), unschedulable: bool = False):
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.protected = set(protected)
        self.unschedulable = unschedulable
        self.cordoned_by_us = False
        self.calls: list[str] = []

    def node_pods(self):
        self.calls.append("list")
        return [pod_use(p) for p in self.pods.values()]

    def evict(self, pod):
        namespace, name = pod.namespace, pod.name
        self.calls.append(f"evict {namespace}/{name}")
        if name not in self.pods:
            return Evicted.GONE, "not found"
        if name in self.protected:
            return Evicted.BLOCKED, PDB_MESSAGE
        del self.pods[name]  # the kubelet is quick here: gone at once
        return Evicted.EVICTED, ""

    def cordon(self):
        self.calls.append("cordon")
        if self.unschedulable:
            return False
        self.unschedulable = self.cordoned_by_us = True
        return True

    def uncordon(self):
        self.calls.append("uncordon")
        if self.cordoned_by_us:
            self.unschedulable = self.cordoned_by_us = False
            return True
        return False


def node_pods():
    return [pod("web-1", ENO2_VFS[0]), pod("web-2", ENO2_VFS[1]), pod("other"),
            pod("ds", ENO2_VFS[2], owner="DaemonSet"),
            pod("static", ENO2_VFS[2], annotations={"kubernetes.io/config.mirror": "x"}),
            pod("plumber-agent-abc", ENO2_VFS[2], namespace="plumber-system")]


def drainer(api, tmp_path, clock=None):
    return Drainer(api=api, state_path=str(tmp_path / DRAIN_FILE), node="n1",
                   own_pod="plumber-system/plumber-agent-abc",
                   clock=clock or FakeClock(auto_advance=True))


def test_pods_policy_evicts_only_the_hit_pods_never_daemonset_mirror_or_itself(tmp_path):
    api = NodeApi(node_pods())
    d = drainer(api, tmp_path)
    result = d.drain(policy="pods", hit=["apps/web-1", "apps/ds", "apps/static",
                                         "plumber-system/plumber-agent-abc"],
                     timeout_s=90, why="test")
    assert result.ok and result.evicted == ["apps/web-1"]
    assert sorted(api.pods) == ["ds", "other", "plumber-agent-abc", "static", "web-2"]
    assert api.unschedulable and d.cordoned
    d.release()
    assert not api.unschedulable and not (tmp_path / DRAIN_FILE).read_text().strip("{}")


def test_node_policy_evicts_everything_evictable(tmp_path):
    api = NodeApi(node_pods())
    result = drainer(api, tmp_path).drain(policy="node", hit=[], timeout_s=90, why="test")
    assert result.ok and sorted(result.evicted) == ["apps/other", "apps/web-1", "apps/web-2"]
    assert sorted(api.pods) == ["ds", "plumber-agent-abc", "static"]


def test_a_budget_that_never_allows_it_times_out_naming_pod_and_budget(tmp_path):
    api = NodeApi(node_pods(), protected={"web-2"})
    clock = FakeClock(auto_advance=True)
    d = drainer(api, tmp_path, clock)
    beats = []
    d.beat = lambda: beats.append(clock.monotonic())  # the liveness heartbeat goes on
    started = clock.monotonic()
    result = d.drain(policy="pods", hit=["apps/web-1", "apps/web-2"], timeout_s=5, why="test")
    assert not result.ok
    assert clock.monotonic() - started >= 5
    assert "drain of node n1 timed out after 5 s, the disruptive change was not made" in result.message
    assert "pod apps/web-2: " + PDB_MESSAGE in result.message
    assert "web-2" in api.pods and "web-1" not in api.pods  # evicted what the budget allowed
    assert len(beats) >= 5 and beats[-1] - beats[0] >= 4
    d.release()
    assert not api.unschedulable


def test_a_cordon_the_agent_did_not_make_is_never_undone(tmp_path):
    api = NodeApi(node_pods(), unschedulable=True)
    d = drainer(api, tmp_path)
    assert d.drain(policy="pods", hit=["apps/web-1"], timeout_s=9, why="test").ok
    assert not d.cordoned
    d.release()
    assert api.unschedulable and "uncordon" not in api.calls


def test_a_restart_mid_drain_uncordons(tmp_path):
    """The agent dies with its cordon on (state written before the cordon): the next process
    finds drain.json and uncordons before anything else."""
    api = NodeApi(node_pods(), protected={"web-1"})
    first = drainer(api, tmp_path)
    first.drain(policy="pods", hit=["apps/web-1"], timeout_s=1, why="test")
    assert api.unschedulable  # killed here: release() never ran
    second = drainer(api, tmp_path)
    assert second.cordoned
    second.recover()
    assert not api.unschedulable and not second.cordoned
    third = drainer(api, tmp_path)
    third.recover()
    assert api.calls.count("uncordon") == 1  # nothing left to recover


def test_the_cordon_intent_is_on_disk_before_the_cordon_request(tmp_path):
    api = NodeApi(node_pods())
    seen = []
    original = api.cordon

    def cordon():
        seen.append((tmp_path / DRAIN_FILE).read_text())
        return original()
    api.cordon = cordon
    drainer(api, tmp_path).drain(policy="pods", hit=[], timeout_s=1, why="test")
    assert '"cordon": "pending"' in seen[0]


def numvfs_action(gate=None, template="t"):
    """As pipeline.py hands it over: marked disruptive, naming the pods of the gate's pass
    (`gate.pods.get`, the read the drain decides on); without a gate, the pods not read."""
    [action] = annotate([Action(Phase.SRIOV_NUMVFS, Verb.SET_NUM_VFS, ENO2, {"num_vfs": 8},
                                templates=[template])], host(),
                        gate.pods.get() if gate is not None else None)
    return action


def other_action(template="u"):
    return Action(Phase.LINK_MTU, Verb.SET_MTU, "eno3", {"mtu": 9000}, templates=[template])


def gate(api, tmp_path, clock):
    return DrainGate(drainer=drainer(api, tmp_path, clock), pods=PassPods(api), clock=clock)


def test_the_gate_drains_before_a_disruptive_round_and_uncordons_at_the_end(tmp_path):
    api = NodeApi(node_pods())
    clock = FakeClock(auto_advance=True)
    g = gate(api, tmp_path, clock)
    g.start_pass()
    failures: dict = {}
    actions = g.before_round([numvfs_action(g), other_action()], {"t": DrainSpec("pods", 90)},
                             failures, cleanup_entry="(cleanup)")
    assert len(actions) == 2 and not failures
    # Hit (the analysis names them all), but only web-1 and web-2 are evicted.
    assert actions[0].disruption.pods == ("apps/ds", "apps/static", "apps/web-1", "apps/web-2",
                                          "plumber-system/plumber-agent-abc")
    assert sorted(api.pods) == ["ds", "other", "plumber-agent-abc", "static"]
    assert "web-1" not in api.pods and "web-2" not in api.pods and api.unschedulable
    g.end_pass()
    assert not api.unschedulable


def test_a_failed_drain_leaves_that_templates_change_out_and_holds_off(tmp_path):
    api = NodeApi(node_pods(), protected={"web-2"})
    clock = FakeClock(auto_advance=True)
    g = gate(api, tmp_path, clock)
    g.start_pass()
    failures: dict = {}
    actions = g.before_round([numvfs_action(g), other_action()], {"t": DrainSpec("pods", 3)},
                             failures, cleanup_entry="(cleanup)")
    assert [a.templates for a in actions] == [["u"]]
    assert "PodDisruptionBudget apps/web-pdb" in failures["t"][0]
    g.end_pass()
    assert not api.unschedulable
    assert g.retry_after_s is not None
    # The next pass within the hold-off: no cordon, the same failure, the change still out.
    cordons = api.calls.count("cordon")
    g.start_pass()
    failures = {}
    actions = g.before_round([numvfs_action(g)], {"t": DrainSpec("pods", 3)}, failures,
                             cleanup_entry="(cleanup)")
    assert actions == [] and api.calls.count("cordon") == cordons
    assert failures["t"][0].endswith(
        "(tried again after 60 s, then after twice as long each time, up to 600 s)")
    # Each failed try doubles the wait, up to the cap; a success starts over.
    waits = []
    for _ in range(6):
        clock.advance(DRAIN_RETRY_MAX_S)
        g.start_pass()
        g.before_round([numvfs_action(g)], {"t": DrainSpec("pods", 3)}, {},
                       cleanup_entry="(cleanup)")
        waits.append(g.retry_after_s)
        g.end_pass()
    assert waits == [120, 240, 480, 600, 600, 600]
    api.protected = set()
    clock.advance(DRAIN_RETRY_MAX_S)
    g.start_pass()
    assert g.before_round([numvfs_action(g)], {"t": DrainSpec("pods", 3)}, {},
                          cleanup_entry="(cleanup)") != []
    g.end_pass()
    assert "t" not in g._held


def test_policy_none_and_a_change_that_hits_no_pod_drain_nothing(tmp_path):
    api = NodeApi([pod("other")])
    clock = FakeClock(auto_advance=True)
    g = gate(api, tmp_path, clock)
    g.start_pass()
    failures: dict = {}
    assert len(g.before_round([numvfs_action(g)], {"t": DrainSpec("pods", 3)}, failures,
                              cleanup_entry="(cleanup)")) == 1
    api.pods = {p["metadata"]["name"]: p for p in node_pods()}
    g.start_pass()
    assert len(g.before_round([numvfs_action(g)], {"t": DrainSpec("none", 3)}, failures,
                              cleanup_entry="(cleanup)")) == 1
    assert "cordon" not in api.calls and not failures and len(api.pods) == 6


def test_without_an_api_the_change_is_made_as_before(tmp_path):
    g = DrainGate(drainer=None, pods=PassPods(None))
    g.start_pass()
    actions = [numvfs_action()]
    assert g.before_round(actions, {}, {}, cleanup_entry="(cleanup)") == actions


def test_no_drain_begins_on_a_slot_the_fence_would_not_start_on(tmp_path):
    api = NodeApi(node_pods())
    clock = FakeClock(auto_advance=True)
    g = gate(api, tmp_path, clock)
    g.start_pass()
    failures: dict = {}
    actions = g.before_round([numvfs_action(g)], {"t": DrainSpec("pods", 3)}, failures,
                             cleanup_entry="(cleanup)",
                             may_start=lambda action: "slot not confirmed")
    assert len(actions) == 1 and not failures  # the executor reports it fenced
    assert "cordon" not in api.calls and len(api.pods) == 6


def test_the_drain_keys_are_accepted_where_the_registry_says_rollout_keys_live():
    """models/parse.py takes spec.rollout's keys from the registry (kinds/__init__.py): the
    drain keys must be among them, or a template asking for a drain is refused as unknown."""
    from plumber_agent.kinds import spec_keys
    from plumber_agent.models.drain_spec import DRAIN_KEYS
    assert DRAIN_KEYS <= spec_keys("rollout")



def test_a_failed_pod_list_is_one_list_per_pass_for_the_plan_and_the_drain(tmp_path):
    """pipeline.py and before_round read the pods through one PassPods: a LIST that failed for
    the plan is not tried again within the pass; the drain fails on that same read."""
    class DownApi(NodeApi):
        def node_pods(self):
            self.calls.append("list")
            raise ConnectionError("API server down")
    api = DownApi([])
    g = gate(api, tmp_path, FakeClock(auto_advance=True))
    g.start_pass()
    with pytest.raises(ConnectionError):
        g.pods.get()  # the pipeline's read for the round's plan
    failures: dict = {}
    assert g.before_round([numvfs_action()], {"t": DrainSpec("pods", 3)}, failures,
                          cleanup_entry="(cleanup)") == []
    assert failures["t"] == ["cannot list the pods of node n1: API server down"]
    assert api.calls.count("list") == 1 and "cordon" not in api.calls
    g.end_pass()
    g.start_pass()  # a new pass lists again
    with pytest.raises(ConnectionError):
        g.pods.get()
    assert api.calls.count("list") == 2
