"""The node side of a rollout (fleet/gate.py): which version of a template a pass applies.

Real planner and merge over the fake host of tests/support/fakehost.py; the slots are an in-memory
`SlotClaims` whose admission is the real `rollout.decide` over a dict shared by the nodes of a
test (a claim can lose, like a 409). Why: a waiting node must keep (and repair) what it approved,
publish the plan it would apply, and take a slot only when a real change needs one.
"""
from __future__ import annotations

import dataclasses
import errno
import json
from typing import Optional

import pytest

from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
from plumber_agent.fleet.rollout import Admission, Slot, decide
from plumber_agent.models.status import TemplateState
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.spec import network_spec_dict
from plumber_agent.reconciler import Reconciler
from tests.support.fakehost import ListSource, Node, host_error, seed_host

UID = "uid-mtu"


class MemorySlots:
    """gate.SlotClaims over a dict of Slots (name -> Slot) that several nodes share."""

    def __init__(self, node: str, shared: dict[str, Slot], *, lose_claims: bool = False):
        self.node, self.shared, self.lose_claims = node, shared, lose_claims
        self.limits: list[int] = []
        self.claims = 0
        self.waiting: Optional[dict] = None
        self.nodes: Optional[int] = None  # the cluster's node count (None: not known)
        self.problem: Optional[str] = None  # claim_problem's answer
        self.fenced: Optional[str] = None  # fence's answer

    def admission(self, template, limit: int) -> Admission:
        self.limits.append(limit)
        return decide(node=self.node, template=template.name, template_uid=template.uid,
                      spec_hash=template_spec_hash(template), limit=limit,
                      slots=self.shared.values())

    drain_admission = admission  # decide() alone, as slots.py's

    def claim(self, template, admission: Admission) -> bool:
        if admission.mine is not None:
            return True
        self.claims += 1
        current = self.shared.get(admission.claim)
        if self.lose_claims or current != admission.claim_over:  # 409: someone else won
            return False
        self.shared[admission.claim] = Slot(
            name=admission.claim, holder=self.node, template=template.name,
            template_uid=template.uid, generation=template.generation,
            spec_hash=template_spec_hash(template), phase=TemplateState.APPLYING)
        return True

    def _mine(self, template) -> Optional[Slot]:
        return next((s for s in self.shared.values() if s.holder == self.node
                     and s.template_uid == template.uid
                     and s.spec_hash == template_spec_hash(template)), None)

    def release(self, template) -> None:
        slot = self._mine(template)
        if slot is not None:
            del self.shared[slot.name]

    def forget_absent(self, keep: set) -> None:
        self.kept = set(keep)  # nothing held locally: the shared Leases stay, as on a server

    def fail(self, template, message: str) -> None:
        slot = self._mine(template)
        if slot is not None:
            self.shared[slot.name] = dataclasses.replace(slot, phase=TemplateState.FAILED, message=message)

    def wait_hint_s(self, admission: Admission) -> Optional[float]:
        left = [s.duration_s - s.unchanged_for_s for s in admission.taken if s.phase == TemplateState.APPLYING]
        return min(left) if left else None

    def set_waiting(self, waiting: dict) -> None:
        self.waiting = dict(waiting)

    def cluster_nodes(self) -> Optional[int]:
        return self.nodes

    def claim_problem(self, template) -> Optional[str]:
        return self.problem

    def fence(self, template) -> Optional[str]:
        return self.fenced


def mtu_template(mtu: int, *, generation: int, max_unavailable=1, dry_run: bool = False,
                 uid: str = UID):
    return template_from_object({
        "metadata": {"name": "mtu", "generation": generation, "uid": uid,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno1", "mtu": mtu}],
                 "rollout": {"maxUnavailable": max_unavailable, "dryRun": dry_run}}})


V1 = mtu_template(9000, generation=1)
V2 = mtu_template(9100, generation=2)


class Setup:
    """A node whose host runs V1 (applied and approved), and a gate over shared slots."""

    def __init__(self, tmp_path, *, shared=None, name: str = "node-a", applied: bool = True,
                 lose_claims: bool = False):
        self.node = Node(seed_host(), tmp_path / name)
        if applied:
            rounds, final = self.node.reconcile([V1])
            assert not final.actions and self.node.fake.links["eno1"].mtu == 9000
        self.approved = ApprovedSpecs(str(tmp_path / f"{name}-rollout.json"))
        if applied:
            self.approved.approve(V1)
        self.shared = {} if shared is None else shared
        self.slots = MemorySlots(name, self.shared, lose_claims=lose_claims)
        self.gate = RolloutGate(approved=self.approved, slots=self.slots)

    def select(self, templates):
        observed = self.node.host.discover()
        return self.gate.select(templates, {}, observed, self.node.ledger.records(), None)

    def plan_lines(self, templates) -> list[str]:
        """What `plumber-agent plan` prints for these templates on this host."""
        return [action.describe() for action in self.node.plan(templates)[1].actions]


def other_holds_slot(shared: dict, template, *, phase=TemplateState.APPLYING, holder="node-z"):
    slots = MemorySlots(holder, shared)
    admission = slots.admission(template, 1)
    assert admission.admit and slots.claim(template, admission)
    if phase == TemplateState.FAILED:
        slots.fail(template, "set_mtu eno1: Numerical result out of range")


def effective_mtus(gate_pass) -> list[tuple[str, int, int]]:
    return [(t.name, t.generation, t.spec.interface_config[0].mtu) for t in gate_pass.effective]


# ----------------------------------------------------------------------------------------------


def test_an_approved_template_is_effective_as_is_and_drift_repair_is_not_gated(tmp_path):
    setup = Setup(tmp_path)
    setup.node.fake.links["eno1"].mtu = 1500  # drift: someone changed the host
    other_holds_slot(setup.shared, V1)  # and every slot of the rollout is taken
    result = setup.select([V1])
    assert result.effective == [V1] and result.verdicts == {}
    assert setup.slots.limits == [] and setup.slots.waiting == {}
    assert setup.plan_lines(result.effective) == [
        "sriov_mtu          set_mtu eno1 mtu=9000  # drift; template mtu"]  # the repair


def test_a_new_spec_with_a_free_slot_applies_and_finish_approves_and_releases(tmp_path):
    setup = Setup(tmp_path)
    result = setup.select([V2])
    verdict = result.verdicts["mtu"]
    assert verdict.applying and verdict.state is None
    assert verdict.planned == setup.plan_lines([V2]) == [
        "sriov_mtu          set_mtu eno1 mtu=9100  # template mtu"]
    assert effective_mtus(result) == [("mtu", 2, 9100)]
    assert [(s.holder, s.generation, s.spec_hash, s.phase) for s in setup.shared.values()] == [
        ("node-a", 2, template_spec_hash(V2), TemplateState.APPLYING)]
    setup.gate.finish(result, {}, unsettled=())
    assert setup.approved.matches(V2) and setup.approved.get("mtu")["generation"] == 2
    assert setup.shared == {}


def test_no_free_slot_waits_with_its_plan_and_keeps_the_approved_spec(tmp_path):
    setup = Setup(tmp_path)
    other_holds_slot(setup.shared, V2)
    result = setup.select([V2])
    verdict = result.verdicts["mtu"]
    assert verdict.state == "Waiting" and not verdict.applying
    assert verdict.message.startswith("waiting for a rollout slot: 1 of maxUnavailable 1 in use")
    assert "node-z applying" in verdict.message
    assert verdict.planned == ["sriov_mtu          set_mtu eno1 mtu=9100  # template mtu"]
    assert effective_mtus(result) == [("mtu", 1, 9000)]  # the OLD spec stays effective
    assert setup.slots.waiting == {"mtu": (V2, 1)}
    assert result.retry_after_s == 30.0  # when the applying holder's slot could expire
    setup.gate.finish(result, {}, unsettled=())
    assert setup.approved.matches(V1) and not setup.approved.matches(V2)
    assert [s.holder for s in setup.shared.values()] == ["node-z"]


def test_a_waiting_node_that_never_applied_keeps_nothing(tmp_path):
    setup = Setup(tmp_path, applied=False)
    other_holds_slot(setup.shared, V2)
    result = setup.select([V2])
    assert result.verdicts["mtu"].state == "Waiting"
    assert result.effective == []


def test_a_claim_lost_to_another_node_waits(tmp_path):
    setup = Setup(tmp_path, lose_claims=True)
    result = setup.select([V2])
    verdict = result.verdicts["mtu"]
    assert setup.slots.claims == 1
    assert verdict.state == "Waiting" and not verdict.applying
    assert verdict.message == "waiting for a rollout slot: another node took it first"
    assert effective_mtus(result) == [("mtu", 1, 9000)]


def test_a_claim_that_failed_otherwise_says_why_in_the_waiting_message(tmp_path):
    setup = Setup(tmp_path, lose_claims=True)
    setup.slots.problem = "cannot claim a rollout slot: namespace 'plumber-system' does not exist"
    verdict = setup.select([V2]).verdicts["mtu"]
    assert verdict.state == "Waiting" and verdict.message == setup.slots.problem
    other_holds_slot(setup.shared, V2)  # no free slot: the node waits for a holder, not an error
    verdict = setup.select([V2]).verdicts["mtu"]
    assert verdict.message.startswith("waiting for a rollout slot: 1 of maxUnavailable 1 in use")


def test_dry_run_previews_claims_nothing_and_keeps_the_old_spec(tmp_path):
    setup = Setup(tmp_path)
    preview = mtu_template(9100, generation=2, dry_run=True)
    result = setup.select([preview])
    verdict = result.verdicts["mtu"]
    assert verdict.state == "Previewed" and not verdict.applying
    assert verdict.planned == ["sriov_mtu          set_mtu eno1 mtu=9100  # template mtu"]
    assert verdict.message == "dry run: 1 planned action(s), nothing changed"
    assert setup.slots.limits == [] and setup.shared == {}
    assert effective_mtus(result) == [("mtu", 1, 9000)]
    setup.gate.finish(result, {}, unsettled=())
    assert setup.approved.get("mtu")["generation"] == 1 and not setup.approved.matches(preview)


def test_a_new_spec_with_an_empty_plan_is_approved_without_a_slot(tmp_path):
    setup = Setup(tmp_path, applied=False)
    other_holds_slot(setup.shared, mtu_template(1500, generation=1))  # no slot would be free
    already_there = mtu_template(1500, generation=1)  # the host's MTU is 1500 already
    result = setup.select([already_there])
    verdict = result.verdicts["mtu"]
    assert verdict.state is None and verdict.planned is None and not verdict.applying
    assert setup.slots.limits == []
    assert result.effective == [already_there]
    assert setup.approved.matches(already_there)


def test_a_failure_marks_the_slot_failed_and_approves_nothing(tmp_path):
    setup = Setup(tmp_path)
    result = setup.select([V2])
    setup.gate.finish(result, {"mtu": ["set_mtu eno1: Numerical result out of range"]},
                      unsettled=())
    [slot] = setup.shared.values()
    assert (slot.holder, slot.phase, slot.message) == (
        "node-a", TemplateState.FAILED, "set_mtu eno1: Numerical result out of range")
    assert setup.approved.matches(V1) and not setup.approved.matches(V2)
    again = setup.select([V2])  # the next pass retries under its own (failed) slot
    assert again.verdicts["mtu"].applying and setup.slots.claims == 1


def test_a_pass_cut_short_keeps_the_slot_and_approves_nothing(tmp_path):
    setup = Setup(tmp_path)
    result = setup.select([V2])
    setup.gate.finish(result, {}, unsettled={"mtu"})
    assert [(s.holder, s.phase) for s in setup.shared.values()] == [("node-a", TemplateState.APPLYING)]
    assert setup.approved.matches(V1)


def test_editing_only_spec_rollout_is_not_a_new_rollout(tmp_path):
    setup = Setup(tmp_path)
    other_holds_slot(setup.shared, mtu_template(9000, generation=2, max_unavailable=3))
    wider = mtu_template(9000, generation=2, max_unavailable=3)
    result = setup.select([wider])
    assert result.effective == [wider] and result.verdicts == {}
    assert setup.slots.limits == []
    assert setup.approved.get("mtu")["generation"] == 2


def test_an_integer_limit_is_asked_as_is(tmp_path):
    setup = Setup(tmp_path)
    setup.select([mtu_template(9100, generation=2, max_unavailable=4)])
    assert setup.slots.limits == [4]


def test_an_unresolved_percentage_limit_is_one(tmp_path):
    """Before this node could count the cluster's nodes: the most careful limit."""
    setup = Setup(tmp_path)
    setup.select([mtu_template(9100, generation=2, max_unavailable="25%")])
    assert setup.slots.limits == [1]


def test_a_percentage_limit_is_of_the_clusters_node_count(tmp_path):
    setup = Setup(tmp_path)
    setup.slots.nodes = 13
    setup.select([mtu_template(9100, generation=2, max_unavailable="25%")])
    assert setup.slots.limits == [3]


def forged(template_obj: dict, max_unavailable) -> dict:
    """The template with a status any agent could have written, claiming a huge limit."""
    return {**template_obj, "status": {"observedGeneration": template_obj["metadata"]["generation"],
                                       "maxUnavailable": max_unavailable,
                                       "nodes": {"matching": 10 ** 6}}}


@pytest.mark.parametrize("max_unavailable", [2, "25%"])
def test_a_forged_status_limit_changes_nothing(tmp_path, max_unavailable):
    """status.maxUnavailable (and nodes.matching) of 1e6: the limit is the spec's, the slots
    taken are the spec's limit, and a node beyond it waits."""
    obj = {"metadata": {"name": "mtu", "generation": 2, "uid": UID,
                        "creationTimestamp": "2024-01-01T00:00:00Z"},
           "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9100}],
                    "rollout": {"maxUnavailable": max_unavailable}}}
    honest, lying = template_from_object(obj), template_from_object(forged(obj, 10 ** 6))
    assert honest == lying  # nothing of that status reaches the node's view of the template
    shared: dict[str, Slot] = {}
    verdicts = []
    for name in ("node-a", "node-b", "node-c"):
        setup = Setup(tmp_path, shared=shared, name=name)
        setup.slots.nodes = 8  # "25%" of 8 nodes: 2, like the integer
        verdicts.append(setup.select([lying]).verdicts["mtu"])
        assert setup.slots.limits == [2]
    assert [v.applying for v in verdicts] == [True, True, False]
    assert verdicts[2].state == "Waiting"
    assert sorted(shared) == ["rollout-mtu-0", "rollout-mtu-1"]


def test_raising_the_limit_of_a_halted_rollout_admits_only_the_difference(tmp_path):
    """maxUnavailable 1 -> 2 on a rollout halted by one failed node (an edit of spec.rollout
    only, so not a new rollout): the failed node still counts, so one more node may go."""
    shared: dict[str, Slot] = {}
    other_holds_slot(shared, V2, phase=TemplateState.FAILED, holder="node-failed")
    wider = mtu_template(9100, generation=3, max_unavailable=2)
    first = Setup(tmp_path, shared=shared, name="node-b")
    second = Setup(tmp_path, shared=shared, name="node-c")
    assert first.select([wider]).verdicts["mtu"].applying
    waiting = second.select([wider]).verdicts["mtu"]
    assert waiting.state == "Waiting"
    assert waiting.message.startswith("waiting for a rollout slot: 2 of maxUnavailable 2 in use")
    assert sorted((s.holder, s.generation, s.phase) for s in shared.values()) == [
        ("node-b", 3, TemplateState.APPLYING), ("node-failed", 2, TemplateState.FAILED)]


def test_a_network_edit_of_a_halted_rollout_starts_a_new_one(tmp_path):
    """The failed node's slot belongs to the old network spec: the fixed spec is a new rollout
    and the slot is free for it."""
    shared: dict[str, Slot] = {}
    other_holds_slot(shared, V2, phase=TemplateState.FAILED, holder="node-failed")
    fixed = mtu_template(9200, generation=3)
    setup = Setup(tmp_path, shared=shared)
    assert setup.select([fixed]).verdicts["mtu"].applying
    assert sorted((s.holder, s.spec_hash, s.phase) for s in shared.values()) == [
        ("node-a", template_spec_hash(fixed), TemplateState.APPLYING)]


def test_invalid_or_not_selected_templates_pass_through_ungated(tmp_path):
    setup = Setup(tmp_path)
    elsewhere = template_from_object({
        "metadata": {"name": "elsewhere", "generation": 5, "uid": "uid-x"},
        "spec": {"nodeSelector": {"role": "edge"},
                 "interfaceConfig": [{"name": "eno2", "mtu": 9000}]}})
    broken = template_from_object({"metadata": {"name": "broken", "generation": 1},
                                   "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 1}]}})
    assert broken.spec is None
    result = setup.select([V1, elsewhere, broken])
    assert result.effective == [V1, elsewhere, broken]
    assert result.verdicts == {} and setup.slots.limits == []


def _selecting(selector: dict, *, generation: int):
    return template_from_object({
        "metadata": {"name": "mtu", "generation": generation, "uid": UID,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"nodeSelector": selector, "interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                 "rollout": {"maxUnavailable": 1}}})


def test_an_edit_that_stops_selecting_the_node_undoes_only_under_a_slot(tmp_path):
    """A nodeSelector typo must not undo the template on every node at once: the undo is the
    new generation's change, so it waits for a slot and keeps the approved spec meanwhile."""
    setup = Setup(tmp_path)
    typo = _selecting({"rol": "worker"}, generation=2)
    other_holds_slot(setup.shared, typo)
    waiting = setup.select([typo])
    assert waiting.verdicts["mtu"].state == "Waiting"
    assert waiting.verdicts["mtu"].planned == [
        "restore_mtu        set_mtu eno1 mtu=1500  # cleanup (was mtu)"]
    assert effective_mtus(waiting) == [("mtu", 1, 9000)]  # the approved spec stays
    assert setup.approved.get("mtu")["generation"] == 1
    setup.shared.clear()
    applying = setup.select([typo])
    assert applying.verdicts["mtu"].applying and applying.effective == [typo]
    setup.gate.finish(applying, {}, unsettled=())
    assert setup.approved.get("mtu")["generation"] == 2 and setup.shared == {}
    again = setup.select([typo])  # undone and approved: passes through from now on
    assert again.effective == [typo] and again.verdicts == {}


def test_a_relabelled_node_that_stops_matching_undoes_at_once(tmp_path):
    setup = Setup(tmp_path)
    worker = _selecting({"role": "worker"}, generation=2)
    setup.approved.approve(worker)
    other_holds_slot(setup.shared, worker)
    result = setup.select([worker])  # the node has no role=worker label (any more)
    assert result.effective == [worker] and result.verdicts == {}


# ----------------------------------------------------------------------------------------------
# ApprovedSpecs


def test_approved_specs_persist_across_instances(tmp_path):
    path = str(tmp_path / "rollout.json")
    first = ApprovedSpecs(path)
    first.approve(V1)
    on_disk = json.loads((tmp_path / "rollout.json").read_text())
    assert on_disk == {"mtu": {"uid": UID, "generation": 1, "network": network_spec_dict(V1.spec)}}
    second = ApprovedSpecs(path)  # the agent restarted
    assert second.matches(V1) and not second.matches(V2)
    kept = second.approved_version(V2)
    assert (kept.generation, kept.spec.interface_config[0].mtu) == (1, 9000)
    assert second.approved_version(mtu_template(9000, generation=1, uid="uid-recreated")) is None
    second.forget_except(set())
    assert ApprovedSpecs(path).get("mtu") is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupt_approved_file_is_ignored(tmp_path, content):
    path = tmp_path / "rollout.json"
    path.write_text(content)
    approved = ApprovedSpecs(str(path))
    assert approved.get("mtu") is None and not approved.matches(V1)
    approved.approve(V1)
    assert ApprovedSpecs(str(path)).matches(V1)


def test_an_approved_record_from_another_version_is_forgotten(tmp_path):
    path = tmp_path / "rollout.json"
    path.write_text(json.dumps({"mtu": {"uid": UID, "generation": 1,
                                        "network": {"interfaceConfig": "not a list"}}}))
    assert ApprovedSpecs(str(path)).approved_version(V2) is None


def test_an_invalid_edit_keeps_the_approved_spec_applied(tmp_path):
    """A typo in a template must not undo it on every node at once (ungated): the node keeps the
    spec it approved, reports Invalid with the problems, and repairs drift of the old spec."""
    setup = Setup(tmp_path)
    broken = template_from_object({
        "metadata": {"name": "mtu", "generation": 3, "uid": UID,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 10}]}})
    assert broken.problems
    gate = setup.select([broken])
    [kept] = gate.effective
    assert kept.spec.interface_config[0].mtu == 9000 and kept.generation == 1
    verdict = gate.verdicts["mtu"]
    assert verdict.state == "Invalid" and "spec.interfaceConfig[0].mtu" in verdict.message
    assert "generation 1 stays applied" in verdict.message
    assert not setup.shared and setup.approved.get("mtu")["generation"] == 1


def test_an_invalid_template_never_applied_here_passes_through(tmp_path):
    setup = Setup(tmp_path, applied=False)
    broken = template_from_object({"metadata": {"name": "new", "generation": 1, "uid": "u2"},
                                   "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 10}]}})
    gate = setup.select([broken])
    assert gate.effective == [broken] and not gate.verdicts


def test_one_hundred_percent_takes_no_slot_even_when_all_are_held(tmp_path):
    """"100%" is the original's every-node-at-once: no Lease traffic, nothing to wait for."""
    shared: dict = {}
    other_holds_slot(shared, mtu_template(9100, generation=2, max_unavailable="100%"),
                     phase=TemplateState.FAILED)
    setup = Setup(tmp_path, shared=shared)
    gate = setup.select([mtu_template(9100, generation=2, max_unavailable="100%")])
    verdict = gate.verdicts["mtu"]
    assert verdict.applying and verdict.state is None
    assert setup.slots.claims == 0 and setup.slots.limits == []


def test_another_templates_failure_does_not_hold_this_templates_slot(tmp_path):
    """A CI run caught a node keeping its slot of a converged template forever because another
    template failed on it every pass (the pass never "finished"): the rest of the fleet waited.
    Through the reconciler's own pass: the converged template is approved and its slot freed,
    the failing one keeps a Failed slot."""
    setup = Setup(tmp_path)
    vlan = template_from_object({
        "metadata": {"name": "vlan", "generation": 1, "uid": "uid-vlan",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno2", "vlan": [{"id": 100}]}],
                 "rollout": {"maxUnavailable": 1}}})
    setup.node.fake.fail("ensure_vlan", "eno2.100",
                         host_error(errno.EOPNOTSUPP, "Operation not supported"))
    reconciler = Reconciler(host=setup.node.host, source=ListSource([V2, vlan]),
                            publish=lambda status: None, rollout=setup.gate)
    outcome = reconciler.sync()
    assert list(outcome.failures) == ["vlan"]
    assert setup.node.fake.links["eno1"].mtu == 9100
    assert [(s.template, s.phase) for s in setup.shared.values()] == [("vlan", TemplateState.FAILED)]
    assert setup.approved.matches(V2) and setup.approved.get("vlan") is None
