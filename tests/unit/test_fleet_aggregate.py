"""A template's status from live objects (fleet/aggregate.py), over tables of fleets.

Why: the status writer recomputes everything from the Nodes, HostNetworks and slot Leases each
time (docs/rollout.md), so the same objects must give the same status, a new writer must find
nothing to write, and the phase, conditions and events must follow the documented rules.
"""
from __future__ import annotations

from typing import Optional

import pytest

from plumber_agent.fleet.aggregate import aggregate, node_results, status_patch
from plumber_agent.fleet.rollout import TAKEOVER_MARGIN_S, Slot, slot_name
from plumber_agent.models.status import TemplateState
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.fleet.results import RESULTS_ANNOTATION, compact_hostnetwork, encode_summary
from plumber_agent.models.parse import template_from_object

T0 = "2026-11-28T21:00:00Z"
T1 = "2026-11-28T21:05:00Z"
T2 = "2026-11-28T21:10:00Z"
UID = "uid-mtu"
NETWORK = {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}


def template(*, generation: int = 3, max_unavailable=2, dry_run: bool = False,
             selector: Optional[dict] = None, network: Optional[dict] = None):
    rollout = {"maxUnavailable": max_unavailable, "dryRun": dry_run}
    spec = {**(network or NETWORK), "rollout": rollout}
    if selector is not None:
        spec["nodeSelector"] = selector
    return template_from_object({"metadata": {"name": "mtu", "generation": generation,
                                              "uid": UID, "creationTimestamp": T0},
                                 "spec": spec})


# The rollout a slot belongs to: the hash of the template's network spec, as the agent writes it
# on its slot Leases (spec.rollout is not part of it).
SPEC_HASH = template_spec_hash(template())
OLD_SPEC_HASH = template_spec_hash(template(network={"interfaceConfig": [{"name": "eno1",
                                                                          "mtu": 1500}]}))


def node(name: str, **labels) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def hostnetwork(state: str, *, generation: int = 3, message: str = "", planned: int = 0,
                name: str = "mtu") -> dict:
    entry = {"name": name, "state": state, "observedGeneration": generation}
    if message:
        entry["message"] = message
    if planned:
        entry["plannedActionCount"] = planned
    # The writer's view of the HostNetwork: the summary annotation its agent writes, parsed.
    summary = encode_summary([{"name": "other", "state": "Failed", "observedGeneration": 3},
                              entry])
    return compact_hostnetwork({"metadata": {"name": "n", "annotations": {
        RESULTS_ANNOTATION: summary}}, "status": {"templates": []}})


def slot(holder: str, index: int, *, phase: str = TemplateState.APPLYING, generation: int = 3,
         uid: str = UID, spec: str = SPEC_HASH, unchanged_for_s: float = 0.0) -> Slot:
    return Slot(name=slot_name("mtu", index), holder=holder, template="mtu", template_uid=uid,
                generation=generation, spec_hash=spec, phase=phase, duration_s=30.0,
                unchanged_for_s=unchanged_for_s)


def fleet(states: dict[str, Optional[str]], **kw):
    """Nodes n0..; a None state is a node without an entry."""
    nodes = [node(name) for name in states]
    hns = {name: hostnetwork(state, **kw) for name, state in states.items() if state}
    return nodes, hns


def counts(status: dict) -> dict:
    return {k: v for k, v in status["nodes"].items() if v}


def conditions(status: dict) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


# ----------------------------------------------------------------------------------------------
# Counting


def test_counts_per_state():
    nodes, hns = fleet({"a": "Applied", "b": "Applied", "c": "Failed", "d": "Conflict",
                        "e": "Invalid", "f": "Waiting", "g": None, "h": "Waiting",
                        "i": "Previewed", "j": "Applied"})
    hns["k"] = hostnetwork("Applied", generation=2)  # an older generation: Unknown
    nodes.append(node("k"))
    slots = [slot("h", 0)]  # a live Applying slot: h applies now, whatever it last reported
    status = aggregate(template(), nodes=nodes, hostnetworks=hns, slots=slots, previous=None,
                       now=T1).status
    assert status["nodes"] == {"matching": 11, "applied": 3, "failed": 1, "conflict": 1,
                               "invalid": 1, "waiting": 1, "applying": 1, "previewed": 1,
                               "wouldChange": 0, "unknown": 2}
    assert status["observedGeneration"] == 3


@pytest.mark.parametrize("entry_state, slot_phase, expected", [
    (None, TemplateState.APPLYING, "Applying"),  # no entry yet, but it holds a live slot
    ("Waiting", TemplateState.APPLYING, "Applying"),
    ("Applied", TemplateState.APPLYING, "Applied"),  # applied, slot not yet released
    ("Failed", TemplateState.APPLYING, "Failed"),
    ("Failed", TemplateState.FAILED, "Failed"),
    (None, TemplateState.FAILED, "Unknown"),  # a Failed slot is not applying
])
def test_state_from_entry_and_slot(entry_state, slot_phase, expected):
    nodes, hns = fleet({"a": entry_state})
    results = node_results(template(), nodes, hns, [slot("a", 0, phase=slot_phase)])
    assert [(r.node, r.state) for r in results] == [("a", expected)]
    assert results[0].slot == slot_name("mtu", 0)


def test_only_the_network_spec_makes_the_spec_hash():
    """What the slots of these tests rely on: spec.rollout and the generation leave the hash."""
    assert template_spec_hash(template(generation=9, max_unavailable=5, dry_run=True)) == SPEC_HASH
    assert len({SPEC_HASH, OLD_SPEC_HASH, ""}) == 3


def test_a_stale_or_foreign_slot_makes_no_node_applying():
    nodes, hns = fleet({"a": "Waiting", "b": "Waiting", "c": "Waiting", "d": "Waiting"})
    slots = [slot("a", 0, unchanged_for_s=30.0 + TAKEOVER_MARGIN_S),  # expired
             slot("b", 1, generation=2, spec=OLD_SPEC_HASH),  # an older rollout
             slot("c", 2, uid="uid-of-a-deleted-mtu"),
             slot("d", 3, spec="")]  # a Lease without the spec hash: of no rollout
    results = node_results(template(), nodes, hns, slots)
    assert [(r.state, r.slot) for r in results] == [("Waiting", "")] * 4


def test_a_slot_of_an_older_generation_with_the_same_network_spec_is_live():
    """The template's spec.rollout was edited (generation 2 -> 3) while b applied: same rollout."""
    nodes, hns = fleet({"b": "Waiting"})
    results = node_results(template(), nodes, hns, [slot("b", 1, generation=2)])
    assert [(r.state, r.slot) for r in results] == [("Applying", slot_name("mtu", 1))]


def test_a_not_selected_entry_at_this_generation_is_unknown():
    """The node's labels (as the writer sees them) match, the node has not caught up yet."""
    nodes, hns = fleet({"a": "NotSelected"})
    assert node_results(template(), nodes, hns, [])[0].state == "Unknown"


def test_matching_follows_node_labels_against_the_node_selector():
    nodes = [node("a", role="edge"), node("b", role="core"), node("c"),
             node("d", role="edge", zone="x")]
    hns = {n: hostnetwork("Applied") for n in "abcd"}
    status = aggregate(template(selector={"role": "edge"}), nodes=nodes, hostnetworks=hns,
                       slots=[], previous=None, now=T1).status
    assert status["nodes"]["matching"] == 2 and status["nodes"]["applied"] == 2
    everyone = aggregate(template(selector={}), nodes=nodes, hostnetworks=hns, slots=[],
                         previous=None, now=T1).status
    assert everyone["nodes"]["matching"] == 4


@pytest.mark.parametrize("value, matching, expected", [
    (3, 10, 3), (1, 1, 1), (5, 2, 5),
    ("25%", 10, 2), ("25%", 3, 1), ("25%", 0, 1), ("100%", 7, 7), ("1%", 99, 1),
    ("50%", 9, 4),
])
def test_max_unavailable_resolution(value, matching, expected):
    nodes, hns = fleet({f"n{i}": "Applied" for i in range(matching)})
    status = aggregate(template(max_unavailable=value), nodes=nodes, hostnetworks=hns, slots=[],
                       previous=None, now=T1).status
    assert status["maxUnavailable"] == expected


# ----------------------------------------------------------------------------------------------
# Phase and conditions


def _status(states, *, slots=(), previous=None, now=T1, **template_kw):
    nodes, hns = fleet(states)
    return aggregate(template(**template_kw), nodes=nodes, hostnetworks=hns, slots=list(slots),
                     previous=previous, now=now)


def test_dry_run():
    states = {"a": "Previewed", "b": "Previewed", "c": None}
    nodes, hns = fleet(states)
    hns["a"] = hostnetwork("Previewed", planned=3)
    hns["b"] = hostnetwork("Previewed")  # nothing would change there
    status = aggregate(template(dry_run=True), nodes=nodes, hostnetworks=hns, slots=[],
                       previous=None, now=T1).status
    assert status["phase"] == "DryRun"
    assert counts(status) == {"matching": 3, "previewed": 2, "wouldChange": 1, "unknown": 1}
    assert conditions(status) == {"Available": ("False", "DryRun"),
                                  "Progressing": ("False", "DryRun"),
                                  "Degraded": ("False", "NoFailures")}
    assert status["conditions"][0]["message"] == "dry run: 1 of 3 nodes would change"


def test_halted_when_nodes_wait_and_every_slot_is_failed():
    states = {"a": "Failed", "b": "Failed", "c": "Waiting", "d": "Waiting"}
    result = _status(states, slots=[slot("a", 0, phase=TemplateState.FAILED), slot("b", 1, phase=TemplateState.FAILED)],
                     previous={"phase": "Progressing"})
    status = result.status
    assert status["phase"] == "Halted"
    assert conditions(status) == {"Available": ("False", "RolloutHalted"),
                                  "Progressing": ("False", "RolloutHalted"),
                                  "Degraded": ("True", "RolloutHalted")}
    degraded = status["conditions"][2]["message"]
    assert degraded.startswith("the rollout stopped: 2 node(s) failed and maxUnavailable is 2")
    assert result.events == [("RolloutHalted", "Warning", degraded)]


def test_one_failed_slot_of_two_is_not_halted():
    states = {"a": "Failed", "c": "Waiting", "d": "Applying"}
    status = _status(states, slots=[slot("a", 0, phase=TemplateState.FAILED), slot("d", 1)]).status
    assert status["phase"] == "Progressing"
    assert conditions(status) == {"Available": ("False", "NotAllNodesApplied"),
                                  "Progressing": ("True", "RollingOut"),
                                  "Degraded": ("True", "NodesFailed")}


def test_failed_slots_of_an_older_network_spec_do_not_halt():
    states = {"a": None, "b": None, "c": "Waiting"}
    status = _status(states, slots=[slot("a", 0, phase=TemplateState.FAILED, generation=2, spec=OLD_SPEC_HASH),
                                    slot("b", 1, phase=TemplateState.FAILED, generation=2,
                                         spec=OLD_SPEC_HASH)]).status
    assert status["phase"] == "Progressing"


def test_failed_slots_still_count_after_an_edit_of_spec_rollout_only():
    """Generation 2 halted with two failed nodes; generation 3 only raised maxUnavailable to 3
    (same network spec): the two still count, the rollout moves by one and is not halted; at
    maxUnavailable 2 it would still be."""
    states = {"a": None, "b": None, "c": "Waiting"}
    failed = [slot("a", 0, phase=TemplateState.FAILED, generation=2), slot("b", 1, phase=TemplateState.FAILED, generation=2)]
    halted = _status(states, slots=failed, max_unavailable=2).status
    assert halted["phase"] == "Halted"
    assert halted["conditions"][2]["message"].startswith(
        "the rollout stopped: 2 node(s) failed and maxUnavailable is 2")
    raised = _status(states, slots=failed, max_unavailable=3).status
    assert raised["phase"] == "Progressing" and raised["maxUnavailable"] == 3


def test_percentage_limit_of_a_small_fleet_halts_after_one_failure():
    """25% of 3 nodes is 1 (never less than 1): one failed slot halts the rest."""
    states = {"a": "Failed", "b": "Waiting", "c": "Waiting"}
    status = _status(states, slots=[slot("a", 0, phase=TemplateState.FAILED)], max_unavailable="25%").status
    assert status["maxUnavailable"] == 1 and status["phase"] == "Halted"


@pytest.mark.parametrize("states, phase, conds", [
    ({"a": "Applied", "b": None}, "Progressing",
     {"Available": ("False", "NotAllNodesApplied"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("False", "NoFailures")}),
    ({"a": "Applied", "b": "Conflict"}, "Degraded",
     {"Available": ("False", "NotAllNodesApplied"), "Progressing": ("False", "RolloutFinished"),
      "Degraded": ("True", "NodesInConflict")}),
    ({"a": "Invalid", "b": "Invalid"}, "Degraded",
     {"Available": ("False", "NotAllNodesApplied"), "Progressing": ("False", "RolloutFinished"),
      "Degraded": ("True", "TemplateInvalid")}),
    ({"a": "Applied", "b": "Applied"}, "Available",
     {"Available": ("True", "AllNodesApplied"), "Progressing": ("False", "RolloutFinished"),
      "Degraded": ("False", "NoFailures")}),
    ({}, "Available",
     {"Available": ("True", "NoMatchingNodes"), "Progressing": ("False", "RolloutFinished"),
      "Degraded": ("False", "NoFailures")}),
])
def test_phase_and_conditions(states, phase, conds):
    status = _status(states).status
    assert status["phase"] == phase
    assert conditions(status) == conds
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T1
               for c in status["conditions"])


def test_condition_time_carries_over_unless_its_status_changed():
    first = _status({"a": "Applied", "b": None}, now=T0).status
    second = _status({"a": "Applied", "b": "Failed"}, previous=first, now=T1).status
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    # Available stayed False (reason and message changed: the time does not);
    # Progressing True -> False and Degraded False -> True moved.
    assert times == {"Available": T0, "Progressing": T1, "Degraded": T1}
    third = _status({"a": "Applied", "b": "Applied"}, previous=second, now=T2).status
    assert {c["type"]: c["lastTransitionTime"] for c in third["conditions"]} == {
        "Available": T2, "Progressing": T1, "Degraded": T2}


def test_failing_nodes_bounded_to_ten_sorted_by_name():
    states = {f"node-{i:02d}": "Failed" for i in range(14, -1, -1)}
    states["node-99"] = "Applied"
    nodes, hns = fleet(states, message="set_mtu eno1: Numerical result out of range")
    status = aggregate(template(), nodes=nodes, hostnetworks=hns, slots=[], previous=None,
                       now=T1).status
    assert [f["node"] for f in status["failingNodes"]] == [f"node-{i:02d}" for i in range(10)]
    assert status["failingNodes"][0] == {"node": "node-00", "state": "Failed",
                                         "message": "set_mtu eno1: Numerical result out of range"}
    assert status["nodes"]["failed"] == 15


# ----------------------------------------------------------------------------------------------
# Events: on phase transitions only


@pytest.mark.parametrize("before, states, slots, event", [
    ("Progressing", {"a": "Applied"}, [], ("RolloutComplete", "Normal",
                                           "generation 3: 1 of 1 nodes applied")),
    ("Progressing", {"a": "Failed"}, [], ("RolloutDegraded", "Warning", None)),
    ("Halted", {"a": "Failed", "b": "Applied"}, [], ("RolloutDegraded", "Warning", None)),
    ("Degraded", {"a": "Applied"}, [], ("RolloutComplete", "Normal",
                                        "generation 3: 1 of 1 nodes applied")),
    ("Available", {"a": "Applied"}, [], None),
    ("Degraded", {"a": "Failed"}, [], None),
    ("Available", {"a": "Applied", "b": None}, [], None),  # -> Progressing: no event
    ("Halted", {"a": "Failed", "b": "Failed", "c": "Waiting"},
     [slot("a", 0, phase=TemplateState.FAILED), slot("b", 1, phase=TemplateState.FAILED)], None),
])
def test_events_on_phase_transitions_only(before, states, slots, event):
    result = _status(states, slots=slots, previous={"phase": before})
    if event is None:
        assert result.events == []
    else:
        reason, kind, message = event
        assert [(r, k) for r, k, _ in result.events] == [(reason, kind)]
        expected = message or result.status["conditions"][2]["message"]
        assert result.events[0][2] == expected


# ----------------------------------------------------------------------------------------------
# Writing: patch and restart


def test_status_patch():
    old = {"phase": "Degraded", "failingNodes": [{"node": "a", "state": "Failed"}],
           "maxUnavailable": 2}
    assert status_patch(old, dict(old)) is None
    new = {"phase": "Available", "maxUnavailable": 2}
    assert status_patch(old, new) == {"phase": "Available", "maxUnavailable": 2,
                                      "failingNodes": None}
    assert status_patch(None, new) == new


def test_recovery_drops_failing_nodes_with_a_null():
    degraded = _status({"a": "Failed"}, now=T0).status
    fixed = _status({"a": "Applied"}, previous=degraded, now=T1).status
    patch = status_patch(degraded, fixed)
    assert patch["failingNodes"] is None and patch["phase"] == "Available"


@pytest.mark.parametrize("states, slots", [
    ({"a": "Applied", "b": "Waiting", "c": None}, [slot("b", 0)]),
    ({"a": "Failed", "b": "Failed", "c": "Waiting"},
     [slot("a", 0, phase=TemplateState.FAILED), slot("b", 1, phase=TemplateState.FAILED)]),
    ({"a": "Applied", "b": "Applied"}, []),
    ({"a": "Conflict"}, []),
])
def test_a_new_writer_recomputes_the_same_status_and_writes_nothing(states, slots):
    """The old writer wrote `first`; a successor (a restart, a new leader) reads it back as the
    object's status and recomputes from the same objects later: identical, no event, no write."""
    first = _status(states, slots=slots, previous={"phase": "Progressing"}, now=T0)
    again = _status(states, slots=slots, previous=first.status, now=T2)
    assert again.status == first.status
    assert again.events == []
    assert status_patch(first.status, again.status) is None
