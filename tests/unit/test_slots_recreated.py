"""A template deleted and created again under its name (kubectl delete -f, fix, apply -f):
its rollout slots have the same names (`rollout-<name>-<i>`), so the new template takes over
the Leases the old one left (a Failed slot stays until the node succeeds, the template changes
or the status writer collects it: twice the slot duration).

What went wrong (the e2e example test: three templates in a row named hostconfig-kernel-eno2,
each Failed on the node): the node kept its own copy of every slot it had written, one per
template uid, and took the slot over with the first copy of that name, a stale one. The API
server refused it (409) on every try, and the node waited until the writer deleted the Lease
60 s later. Real LeaseSlots over tests/support/fleetsim.py's LeaseApi (optimistic concurrency
as the API server's).
"""
from __future__ import annotations

from plumber_agent.clock import FakeClock
from plumber_agent.fleet.rollout import slot_name
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from tests.support.fleetsim import LeaseApi

NAMESPACE = "plumber-system"
NAME = "hostconfig"
SLOT = slot_name(NAME, 0)
TEMPLATE_UID = "plumber.k8s.pf9.io/template-uid"
PHASE = "plumber.k8s.pf9.io/phase"


def template(uid: str):
    return template_from_object({
        "metadata": {"name": NAME, "generation": 1, "uid": uid,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                 "rollout": {"maxUnavailable": 1}}})


def node_slots(api: LeaseApi, clock: FakeClock, node: str) -> LeaseSlots:
    """A node's slots; its watch shows the server's Leases as they are."""
    return LeaseSlots(client=api, namespace=NAMESPACE, node=node, node_uid=lambda: "",
                      store=lambda: dict(api.leases),
                      read_slots=slot_reader(lambda: dict(api.leases), clock), clock=clock,
                      wake=lambda _s: None, duration_s=30)


def claim_and_fail(slots: LeaseSlots, uid: str) -> None:
    new = template(uid)
    answer = slots.drain_admission(new, 1)  # rollout.decide over this node's view
    assert answer.admit and answer.claim == SLOT, answer.reason
    assert slots.claim(new, answer), slots.claim_problem(new)
    slots.fail(new, "cannot create VLAN")


def test_a_template_created_again_twice_takes_its_failed_slot_over_each_time():
    api, clock = LeaseApi(), FakeClock()
    slots = node_slots(api, clock, "node-a")
    for uid in ("uid-1", "uid-2", "uid-3"):
        claim_and_fail(slots, uid)
        notes = api.leases[SLOT]["metadata"]["annotations"]
        assert (notes[TEMPLATE_UID], notes[PHASE]) == (uid, TemplateState.FAILED)
    assert slots.fence(template("uid-1")) is not None  # no slot of a uid taken over is kept


def test_a_node_forgets_its_slot_of_a_deleted_template_and_sees_another_take_it_over():
    api, clock = LeaseApi(), FakeClock()
    first, other = node_slots(api, clock, "node-a"), node_slots(api, clock, "node-b")
    claim_and_fail(first, "uid-1")
    first.forget_absent({"uid-2"})  # uid-1 deleted, uid-2 created under the same name
    claim_and_fail(other, "uid-2")
    answer = first.drain_admission(template("uid-2"), 1)
    assert not answer.admit, answer.reason
    assert [(s.holder, s.template_uid) for s in answer.taken] == [("node-b", "uid-2")]
    assert first.fence(template("uid-1")) is not None


def test_what_the_node_keeps_is_not_forgotten():
    api, clock = LeaseApi(), FakeClock()
    slots = node_slots(api, clock, "node-a")
    claim_and_fail(slots, "uid-1")
    slots.forget_absent({"uid-1"})
    assert slots.fence(template("uid-1")) is None  # still held (Failed: never fenced)
    assert slots.drain_admission(template("uid-1"), 1).mine is not None
