"""The rollout slot decision (fleet/rollout.py) over scripted sequences of a small fleet.

Why a simulator: the limit is only worth anything if it holds over a whole rollout, across
races, deaths, deletions and edits, with nothing that counts (kubernetes-nmstate's counter got
stuck after an interrupted apply). The simulator keeps Lease-like objects the way the API
server does (resourceVersion, 409 on a create of an existing name or a PUT at a stale version,
garbage collection of a deleted Node's Leases), one fake monotonic clock, and nodes that read
through the real `slots.slot_reader` and decide with the real `rollout.decide`.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Optional

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.fleet import rollout
from plumber_agent.fleet.rollout import (TAKEOVER_MARGIN_S, Admission,
                                         decide, slot_from_lease, slot_name, slot_taken)
from plumber_agent.models.status import TemplateState
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.fleet.slots import slot_reader
from plumber_agent.models.parse import template_from_object

DURATION_S = 30
APPLY_STEPS = 3  # seconds a successful apply takes in the simulation


class Conflict(Exception):
    """409 AlreadyExists / Conflict, as the API server answers a losing writer."""

    status = 409


class NotFound(Exception):
    status = 404


class LeaseApi:
    """Leases of one namespace as the API server keeps them: every write bumps resourceVersion;
    create of an existing name and a PUT or DELETE at a stale resourceVersion are 409."""

    def __init__(self) -> None:
        self.leases: dict[str, dict] = {}
        self._rv = 0
        self.conflicts = 0

    def store(self) -> dict:
        return {name: copy.deepcopy(obj) for name, obj in self.leases.items()}

    def _stamp(self, obj: dict) -> dict:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.leases[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def create(self, obj: dict) -> dict:
        if obj["metadata"]["name"] in self.leases:
            self.conflicts += 1
            raise Conflict("leases.coordination.k8s.io already exists")
        return self._stamp(obj)

    def replace(self, obj: dict) -> dict:
        current = self.leases.get(obj["metadata"]["name"])
        if current is None:
            raise NotFound("not found")
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict("the object has been modified; please apply your changes to the "
                           "latest version and try again")
        return self._stamp(obj)

    def delete(self, name: str, resource_version: str) -> None:
        current = self.leases.get(name)
        if current is None:
            raise NotFound("not found")
        if current["metadata"]["resourceVersion"] != resource_version:
            self.conflicts += 1
            raise Conflict("precondition failed")
        del self.leases[name]

    def garbage_collect_node(self, node: str) -> None:
        """The Node is gone: the garbage collector deletes what it owns."""
        for name, obj in list(self.leases.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "Node" and o["name"] == node for o in owners):
                del self.leases[name]


@dataclass
class Rollout:
    """The template as the nodes see it. Its rollout identity is (uid, spec hash): `mtu` is its
    network spec; `generation` and `limit` are not part of it."""

    template: str = "mtu"
    uid: str = "uid-mtu"
    generation: int = 1
    limit: int = 2
    mtu: int = 9000

    @property
    def spec_hash(self) -> str:
        """The hash the agent computes (`slots.template_spec_hash`) of this network spec."""
        return template_spec_hash(template_from_object({
            "metadata": {"name": self.template, "uid": self.uid, "generation": self.generation},
            "spec": {"interfaceConfig": [{"name": "eno1", "mtu": self.mtu}],
                     "rollout": {"maxUnavailable": self.limit}}}))


def lease_body(name: str, holder: str, ro: Rollout, *, phase: str = TemplateState.APPLYING,
               message: str = "", over: Optional[dict] = None) -> dict:
    notes = {rollout.TEMPLATE_ANNOTATION: ro.template,
             rollout.TEMPLATE_UID_ANNOTATION: ro.uid,
             rollout.GENERATION_ANNOTATION: str(ro.generation),
             rollout.SPEC_HASH_ANNOTATION: ro.spec_hash,
             rollout.PHASE_ANNOTATION: phase}
    if message:
        notes[rollout.MESSAGE_ANNOTATION] = message
    meta = {"name": name, "annotations": notes,
            "labels": {rollout.LEASE_ROLE_LABEL: rollout.SLOT_ROLE},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": holder,
                                 "uid": "uid-" + holder}]}
    if over is not None:
        meta["resourceVersion"] = over["metadata"]["resourceVersion"]
    return {"metadata": meta, "spec": {"holderIdentity": holder,
                                       "leaseDurationSeconds": DURATION_S}}


@dataclass
class SimNode:
    """One agent: reads slots through its own reader (its own clock's view of each Lease)."""

    name: str
    api: LeaseApi
    clock: FakeClock
    behaviour: str = "ok"  # what its apply does: ok | fail | die
    state: str = "pending"  # pending | applying | applied | failed | dead
    held: Optional[dict] = None  # its Lease as it last wrote it
    written_at: float = 0.0
    started_at: float = 0.0
    applied_generation: int = 0
    admission: Optional[Admission] = None
    read: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.read = slot_reader(self.api.store, self.clock)

    def decide(self, ro: Rollout) -> Admission:
        self.admission = decide(node=self.name, template=ro.template, template_uid=ro.uid,
                                spec_hash=ro.spec_hash, limit=ro.limit, slots=self.read())
        return self.admission

    def claim(self, ro: Rollout) -> bool:
        """Create the free slot, or PUT the stale Lease at the version read; False on a 409."""
        admission = self.admission
        assert admission is not None and admission.admit
        if admission.mine is not None:
            self.held = self.api.store()[admission.mine.name]
        else:
            over = None
            if admission.claim_over is not None:
                over = {"metadata": {"resourceVersion": admission.claim_over.resource_version}}
            body = lease_body(admission.claim, self.name, ro, over=over)
            try:
                self.held = (self.api.create(body) if over is None else self.api.replace(body))
            except Conflict:
                return False
        self.written_at = self.clock.monotonic()
        self.started_at = self.clock.monotonic()
        self.state = "applying"
        return True

    def _write(self, ro: Rollout, **kw) -> None:
        self.held = self.api.replace(lease_body(self.held["metadata"]["name"], self.name, ro,
                                                over=self.held, **kw))
        self.written_at = self.clock.monotonic()

    def renew(self, ro: Rollout) -> None:
        if self.clock.monotonic() - self.written_at >= DURATION_S / 3:
            self._write(ro)

    def finish_ok(self, ro: Rollout) -> None:
        meta = self.held["metadata"]
        self.api.delete(meta["name"], meta["resourceVersion"])
        self.held, self.state, self.applied_generation = None, "applied", ro.generation

    def finish_failed(self, ro: Rollout, message: str = "set_mtu eno1: Numerical result out of "
                                                         "range") -> None:
        self._write(ro, phase=TemplateState.FAILED, message=message)
        self.state = "failed"

    def die(self) -> None:
        self.state = "dead"


class Fleet:
    """A template rolling out over nodes, one simulated second per step."""

    def __init__(self, count: int, *, limit: int = 2, behaviour: str = "ok") -> None:
        self.api = LeaseApi()
        self.clock = FakeClock()
        self.ro = Rollout(limit=limit)
        self.nodes = {f"node-{i:02d}": SimNode(f"node-{i:02d}", self.api, self.clock, behaviour)
                      for i in range(count)}
        self.max_applying = 0
        self.die_next = 0  # the next N nodes admitted are killed mid-apply

    def applying(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.state == "applying"]

    def step(self) -> None:
        self.clock.advance(1)
        for node in self.applying():
            node.renew(self.ro)
            if self.clock.monotonic() - node.started_at >= APPLY_STEPS:
                {"ok": node.finish_ok, "fail": node.finish_failed}[node.behaviour](self.ro)
        pending = [n for n in self.nodes.values() if n.state == "pending"]
        admitted = [n for n in pending if n.decide(self.ro).admit]  # everyone reads, then
        for node in admitted:  # everyone writes: concurrent nodes racing for the same slots
            if node.claim(self.ro) and self.die_next:
                self.die_next -= 1
                node.behaviour = "die"
                node.die()  # killed mid-apply, never restarted: it never renews or releases
        live = [n for n in self.nodes.values() if n.state == "applying"]
        self.max_applying = max(self.max_applying, len(live))
        assert len(live) <= self.ro.limit, [n.name for n in live]

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def run_until_done(self, *, max_steps: int = 2000) -> int:
        for steps in range(1, max_steps + 1):
            self.step()
            if not any(n.state in ("pending", "applying") for n in self.nodes.values()):
                return steps
        raise AssertionError(f"not done after {max_steps} steps: "
                             f"{ {n.name: n.state for n in self.nodes.values()} }")

    def edit_template(self) -> None:
        """A network edit (a new spec hash, generation+1): a new rollout every node applies."""
        self.ro.mtu += 1
        self.ro.generation += 1
        for node in self.nodes.values():
            if node.state in ("applied", "failed", "pending"):
                node.state = "pending"
                node.held = None

    def edit_rollout_only(self, *, limit: int) -> None:
        """An edit of spec.rollout alone (generation+1, same spec hash): the same rollout, so
        nobody's state changes; applying nodes go on under their slots, failed ones keep theirs."""
        self.ro.generation += 1
        self.ro.limit = limit

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in self.nodes.values():
            out[node.state] = out.get(node.state, 0) + 1
        return out


# ----------------------------------------------------------------------------------------------
# A whole rollout


def test_limit_2_over_10_nodes_never_admits_more_than_2_and_finishes():
    fleet = Fleet(10, limit=2)
    fleet.run_until_done()
    assert fleet.states() == {"applied": 10}
    assert fleet.max_applying == 2  # the limit is used, and never exceeded (asserted each step)
    assert fleet.api.leases == {}  # every success released its slot


def test_all_fail_halts_at_the_limit_until_the_template_is_edited():
    fleet = Fleet(10, limit=2, behaviour="fail")
    fleet.run(500)  # long past any lease duration: a Failed slot never expires
    assert fleet.states() == {"failed": 2, "pending": 8}
    phases = sorted(o["metadata"]["annotations"][rollout.PHASE_ANNOTATION]
                    for o in fleet.api.leases.values())
    assert phases == [TemplateState.FAILED, TemplateState.FAILED]
    waiting = next(n for n in fleet.nodes.values() if n.state == "pending")
    admission = waiting.decide(fleet.ro)
    assert not admission.admit and admission.halted
    assert admission.reason.startswith("waiting for a rollout slot: 2 of maxUnavailable 2 in use")
    assert "failed: set_mtu eno1: Numerical result out of range" in admission.reason

    for node in fleet.nodes.values():  # the fix: a new generation that works
        node.behaviour = "ok"
    fleet.edit_template()
    fleet.run_until_done()
    assert fleet.states() == {"applied": 10}
    assert {n.applied_generation for n in fleet.nodes.values()} == {2}
    # The old spec's Failed Leases were free for the new spec: its first nodes took them over
    # (a PUT at the version read, same names) and released them after success.
    assert fleet.ro.spec_hash != Rollout().spec_hash
    assert fleet.api.leases == {}


def test_raising_the_limit_of_a_halted_rollout_lets_exactly_one_more_node_go():
    """maxUnavailable 1 -> 2 is an edit of spec.rollout only (generation+1, same network spec):
    the failed node's slot still counts, so one more node goes, fails, and the rollout halts
    again at 2. Were the generation the identity, the old Failed slot would be free and the
    edit would restart the rollout over the whole fleet."""
    fleet = Fleet(10, limit=1, behaviour="fail")
    fleet.run(100)
    assert fleet.states() == {"failed": 1, "pending": 9}
    fleet.edit_rollout_only(limit=2)
    waiting = [n for n in fleet.nodes.values() if n.state == "pending"]
    admitted = [n.name for n in waiting if n.decide(fleet.ro).admit]
    assert len(admitted) == 9  # all may try for the one free slot: exactly one claim wins
    assert {n.admission.claim for n in waiting} == {slot_name("mtu", 1)}
    fleet.run(500)
    assert fleet.states() == {"failed": 2, "pending": 8}
    assert fleet.max_applying == 1
    notes = sorted((o["metadata"]["name"], o["metadata"]["annotations"][rollout.PHASE_ANNOTATION],
                    o["metadata"]["annotations"][rollout.GENERATION_ANNOTATION])
                   for o in fleet.api.leases.values())
    assert notes == [(slot_name("mtu", 0), TemplateState.FAILED, "1"), (slot_name("mtu", 1), TemplateState.FAILED, "2")]
    admission = waiting[-1].decide(fleet.ro)
    assert not admission.admit and admission.halted
    assert admission.reason.startswith("waiting for a rollout slot: 2 of maxUnavailable 2 in use")


def test_a_rollout_only_edit_keeps_applying_holders_in_their_slots():
    """dryRun or maxUnavailable edited while two nodes apply: they hold their slots (the same
    rollout), so nobody else gets in beyond the new limit."""
    fleet = Fleet(10, limit=2)
    fleet.step()
    holders = sorted(n.name for n in fleet.applying())
    assert len(holders) == 2
    fleet.edit_rollout_only(limit=3)
    for name in holders:
        mine = fleet.nodes[name].decide(fleet.ro)
        assert mine.admit and mine.mine is not None and mine.claim is None
    newcomers = [n for n in fleet.nodes.values() if n.state == "pending"]
    for node in newcomers:
        admission = node.decide(fleet.ro)
        assert admission.admit and sorted(s.holder for s in admission.taken) == holders
        assert admission.claim == slot_name("mtu", 2)
    fleet.run_until_done()
    assert fleet.states() == {"applied": 10}
    assert fleet.max_applying == 3


def test_agents_killed_mid_apply_do_not_stick_the_rollout():
    """kubernetes-nmstate's stuck counter: an apply interrupted for good left the count of
    unavailable nodes incremented forever. Here both slots' holders die mid-apply and never come
    back; their slots expire and the other eight finish."""
    fleet = Fleet(10, limit=2)
    fleet.die_next = 2
    fleet.run_until_done()
    assert fleet.states() == {"applied": 8, "dead": 2}
    stale = [o for o in fleet.api.leases.values()
             if o["metadata"]["annotations"][rollout.PHASE_ANNOTATION] == TemplateState.APPLYING]
    assert len(stale) <= 2  # the dead nodes' Leases, taken over or left stale


# ----------------------------------------------------------------------------------------------
# How one slot ends


def _pair(limit: int = 1):
    api, clock, ro = LeaseApi(), FakeClock(), Rollout(limit=limit)
    return api, clock, ro, SimNode("node-a", api, clock), SimNode("node-b", api, clock)


def test_an_applying_holder_that_dies_frees_its_slot_after_its_duration_and_margin_not_before():
    api, clock, ro, holder, other = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    assert not other.decide(ro).admit  # other first sees the Lease now
    clock.advance(10)
    holder.renew(ro)  # a renewal resets the quiet time
    assert not other.decide(ro).admit
    holder.die()
    clock.advance(DURATION_S + TAKEOVER_MARGIN_S - 0.5)
    assert not other.decide(ro).admit  # the duration (30 s) has passed, not the margin yet
    clock.advance(0.5)
    admission = other.decide(ro)
    assert admission.admit and admission.claim == slot_name("mtu", 0)
    assert admission.claim_over is not None and admission.claim_over.holder == "node-a"
    assert other.claim(ro)
    assert api.leases[slot_name("mtu", 0)]["spec"]["holderIdentity"] == "node-b"


def test_a_failed_holder_never_expires():
    api, clock, ro, holder, other = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    holder.finish_failed(ro)
    holder.die()  # failed and stopped renewing
    assert not other.decide(ro).admit
    clock.advance(100 * DURATION_S)
    admission = other.decide(ro)
    assert not admission.admit and admission.halted
    assert admission.taken[0].holder == "node-a" and admission.taken[0].phase == TemplateState.FAILED


def test_a_reader_that_starts_late_waits_a_full_duration_on_its_own_clock():
    """client-go's rule: quiet time is measured from when THIS reader saw the version, never
    from a timestamp another node wrote."""
    api, clock, ro, holder, _ = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    holder.die()
    clock.advance(10 * DURATION_S)
    newcomer = SimNode("node-c", api, clock)  # e.g. an agent restarted just now
    assert not newcomer.decide(ro).admit
    clock.advance(DURATION_S)
    assert not newcomer.decide(ro).admit  # the full duration, and the takeover margin too
    clock.advance(TAKEOVER_MARGIN_S)
    assert newcomer.decide(ro).admit


def test_deleting_a_node_that_holds_a_failed_slot_frees_it():
    api, clock, ro, holder, other = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    holder.finish_failed(ro)
    assert not other.decide(ro).admit
    api.garbage_collect_node("node-a")
    assert other.decide(ro).admit and other.claim(ro)


def test_a_network_edit_frees_the_old_specs_slots_and_a_rollout_edit_does_not():
    api, clock, ro, holder, other = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    holder.finish_failed(ro)
    assert not other.decide(ro).admit
    ro.generation = 2  # spec.rollout edited (say, dryRun toggled): the same network spec
    blocked = other.decide(ro)
    assert not blocked.admit and blocked.halted
    assert [(s.holder, s.generation) for s in blocked.taken] == [("node-a", 1)]
    ro.generation, ro.mtu = 3, 9100  # the network spec edited: a new rollout
    assert other.decide(ro).admit
    recreated = Rollout(uid="uid-mtu-2", limit=1)  # deleted and created again: a new uid
    assert SimNode("node-c", api, clock).decide(recreated).admit


def test_a_node_above_a_lowered_limit_keeps_its_slot_and_still_counts():
    """A percentage limit shrinks when nodes stop matching (same generation): the holder of slot
    2 goes on; a newcomer waits because that slot still counts."""
    api, clock, ro, holder, other = _pair(limit=3)
    api.create(lease_body(slot_name("mtu", 2), "node-a", ro))
    ro.limit = 1
    mine = holder.decide(ro)
    assert mine.admit and mine.mine is not None and mine.mine.name == slot_name("mtu", 2)
    assert mine.claim is None
    theirs = other.decide(ro)
    assert not theirs.admit and [s.holder for s in theirs.taken] == ["node-a"]


@pytest.mark.parametrize("phase", [TemplateState.APPLYING, TemplateState.FAILED])
def test_a_node_holding_several_slots_counts_once(phase):
    """One agent squatting every slot of a rollout (maxUnavailable 2), Failed so that nobody may
    take them over: it holds one node's place, the other goes to one more node under the next
    name, and a third node waits (2 nodes apply at most). The writer's offers agree."""
    api, clock, ro, squatter, other = _pair(limit=2)
    for index in (0, 1):
        api.create(lease_body(slot_name("mtu", index), "node-sq", ro, phase=phase))
    admission = other.decide(ro)
    assert admission.admit and admission.claim == slot_name("mtu", 2), admission
    assert [s.holder for s in admission.taken] == ["node-sq"]
    assert other.claim(ro)
    third = SimNode("node-c", api, clock).decide(ro)
    assert not third.admit and sorted(s.holder for s in third.taken) == ["node-b", "node-sq"]
    assert third.reason.startswith("waiting for a rollout slot: 2 of maxUnavailable 2 in use")


def test_the_writer_offers_the_place_a_squatter_does_not_count_for():
    template = template_from_object({
        "metadata": {"name": "mtu", "generation": 1, "uid": "uid-mtu"},
        "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                 "rollout": {"maxUnavailable": 2}}})
    identity = template_spec_hash(template)
    slots = [rollout.Slot(name=slot_name("mtu", i), holder="node-sq", template="mtu",
                          template_uid="uid-mtu", generation=1, phase=TemplateState.FAILED,
                          spec_hash=identity) for i in (0, 1)]
    assert rollout.free_indexes("mtu", slots, 2) == [2]
    assert rollout.free_indexes("mtu", slots[:1], 2) == [1]
    assert [s.name for s in rollout.counted_slots(slots)] == [slot_name("mtu", 0)]


def test_decide_admits_a_node_for_its_own_slot_even_failed():
    """The holder is never free for itself: its own Failed slot lets it retry."""
    api, clock, ro, holder, _ = _pair()
    assert holder.decide(ro).admit and holder.claim(ro)
    holder.finish_failed(ro)
    clock.advance(10 * DURATION_S)
    admission = holder.decide(ro)
    assert admission.admit and admission.mine.phase == TemplateState.FAILED and admission.claim is None


# ----------------------------------------------------------------------------------------------
# Races: exactly one wins


def test_two_nodes_racing_to_create_the_same_free_slot():
    api, clock, ro, a, b = _pair()
    assert a.decide(ro).admit and b.decide(ro).admit  # both read before either wrote
    assert a.admission.claim == b.admission.claim == slot_name("mtu", 0)
    assert a.admission.claim_over is None
    assert [a.claim(ro), b.claim(ro)] == [True, False]
    assert api.conflicts == 1
    assert api.leases[slot_name("mtu", 0)]["spec"]["holderIdentity"] == "node-a"
    assert b.state == "pending" and not b.decide(ro).admit


def test_two_nodes_racing_to_take_over_the_same_stale_slot():
    api, clock, ro, a, b = _pair()
    dead = SimNode("node-dead", api, clock)
    assert dead.decide(ro).admit and dead.claim(ro)
    dead.die()
    a.decide(ro), b.decide(ro)  # both start watching the dead node's Lease
    clock.advance(DURATION_S + TAKEOVER_MARGIN_S)
    assert a.decide(ro).admit and b.decide(ro).admit
    assert a.admission.claim_over.holder == b.admission.claim_over.holder == "node-dead"
    assert [b.claim(ro), a.claim(ro)] == [True, False]  # a's PUT carries a stale version: 409
    assert api.conflicts == 1
    assert api.leases[slot_name("mtu", 0)]["spec"]["holderIdentity"] == "node-b"


# ----------------------------------------------------------------------------------------------
# Names and parsing

# IsDNS1123Subdomain (k8s.io/apimachinery/pkg/util/validation/validation.go): a Lease name is
# checked with NameIsDNSSubdomain (ValidateLease, pkg/apis/coordination/validation/validation.go).
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def test_slot_name_short_template_is_plain():
    assert slot_name("mtu", 0) == "rollout-mtu-0"
    assert slot_name("mtu", 12) == "rollout-mtu-12"


@pytest.mark.parametrize("template", [
    "a" * 253,
    "a" * 240 + "." + "b" * 12,  # the cut falls right after a dot
    "x" * 243,  # exactly fits with a one-digit index, not with two
])
def test_slot_name_of_a_long_template_is_bounded_valid_stable_and_distinct(template):
    names = [slot_name(template, i) for i in range(120)]
    assert all(len(name) <= 253 for name in names), max(len(n) for n in names)
    assert all(DNS1123_SUBDOMAIN.fullmatch(name) for name in names), names
    assert len(set(names)) == len(names)
    assert names == [slot_name(template, i) for i in range(120)]  # stable


def test_slot_names_of_two_long_templates_with_one_prefix_differ():
    first, second = "a" * 252 + "b", "a" * 252 + "c"
    assert slot_name(first, 0) != slot_name(second, 0)


def _lease(**changes) -> dict:
    obj = lease_body("rollout-mtu-0", "node-a", Rollout())
    obj["metadata"]["resourceVersion"] = "7"
    for path, value in changes.items():
        where, key = path.split("__")
        key = rollout.ANNOTATION_PREFIX + key if where == "notes" else key
        target = {"meta": obj["metadata"], "notes": obj["metadata"]["annotations"],
                  "spec": obj["spec"]}[where]
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return obj


def test_slot_from_lease_reads_a_well_formed_slot():
    slot = slot_from_lease(_lease(), unchanged_for_s=4.0)
    assert (slot.name, slot.holder, slot.template, slot.template_uid, slot.generation,
            slot.spec_hash, slot.phase, slot.resource_version, slot.duration_s,
            slot.unchanged_for_s) == (
        "rollout-mtu-0", "node-a", "mtu", "uid-mtu", 1, Rollout().spec_hash, TemplateState.APPLYING, "7",
        30.0, 4.0)
    assert slot_taken(slot, template_uid="uid-mtu", spec_hash=Rollout().spec_hash)
    assert slot_from_lease(_lease(notes__phase=None), unchanged_for_s=0).phase == TemplateState.APPLYING
    assert slot_from_lease(_lease(**{"notes__spec-hash": None}), unchanged_for_s=0).spec_hash == ""


@pytest.mark.parametrize("changes, taken", [
    ({}, True),
    ({"notes__generation": "9"}, True),  # another generation of the same network spec
    ({"notes__phase": TemplateState.FAILED, "notes__generation": "9"}, True),
    ({"notes__spec-hash": "0123456789abcdef"}, False),  # another network spec
    ({"notes__spec-hash": None}, False),  # a Lease without the hash counts for no rollout
    ({"notes__template-uid": "uid-of-a-deleted-mtu"}, False),
], ids=lambda v: ",".join(f"{k}={w!r}" for k, w in v.items()) if isinstance(v, dict) else str(v))
def test_slot_taken_is_decided_by_template_uid_and_spec_hash(changes, taken):
    slot = slot_from_lease(_lease(**changes), unchanged_for_s=0)
    assert slot_taken(slot, template_uid="uid-mtu", spec_hash=Rollout().spec_hash) is taken


@pytest.mark.parametrize("changes", [
    {"spec__holderIdentity": None},
    {"spec__holderIdentity": ""},
    {"notes__generation": "two"},
    {"notes__generation": None},
    {"notes__generation": ""},
    {"spec__leaseDurationSeconds": 0},
    {"spec__leaseDurationSeconds": None},
    {"spec__leaseDurationSeconds": -5},
    {"spec__leaseDurationSeconds": "soon"},
    {"meta__name": None},
], ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()))
def test_slot_from_lease_rejects_malformed_leases(changes):
    assert slot_from_lease(_lease(**changes), unchanged_for_s=0) is None


def test_slot_from_lease_rejects_a_lease_without_metadata_or_spec():
    assert slot_from_lease({}, unchanged_for_s=0) is None
    assert slot_from_lease({"metadata": None, "spec": None}, unchanged_for_s=0) is None
