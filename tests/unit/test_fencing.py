"""Fencing (docs/rollout.md "Fencing"): a slot holder starts a host action only while its slot
was confirmed by a write sent less than the renew deadline ago; the executor asks before every
action; a fenced template keeps its slot for the retry; the status writer writes only while its
Lease is confirmed. Real LeaseSlots, gate, executor and reconciler over the fake host; the
Lease API is an in-memory one at our client seam (tests/support/fleetsim.py LeaseApi) that can
take time on the FakeClock, like a slow API server.

Why: a lease is not a lock without fencing. A holder whose renewals are late went on with its
host actions after a waiter took its slot over, and more nodes than maxUnavailable changed at
once.
"""
from __future__ import annotations

import threading

from plumber_agent.clock import FakeClock
from plumber_agent.fleet import rollout
from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
from plumber_agent.fleet.leader import LeaderElector
from plumber_agent.fleet.rollout import TAKEOVER_MARGIN_S, decide, template_spec_hash
from plumber_agent.fleet.slots import RENEW_DEADLINE_FRACTION, LeaseSlots
from plumber_agent.fleet.writer import StatusWriter
from plumber_agent.host.executor import FENCED, SKIPPED
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from tests.support.fakehost import Node, make_template, seed_host
from tests.support.fleetsim import LeaseApi, template_object

NAMESPACE = "plumber-system"
DURATION_S = 3.0
DEADLINE_S = DURATION_S * RENEW_DEADLINE_FRACTION
TEMPLATE = template_from_object(template_object(1))


class SlowLeaseApi(LeaseApi):
    """Every write takes `latency_s` on the clock before the server applies and answers it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock, self.latency_s = clock, 0.0

    def create_lease(self, namespace, body):
        self.clock.advance(self.latency_s)
        return super().create_lease(namespace, body)

    def replace_lease(self, namespace, name, body):
        self.clock.advance(self.latency_s)
        return super().replace_lease(namespace, name, body)


def holder(api, clock, node: str = "node-a") -> LeaseSlots:
    return LeaseSlots(client=api, namespace=NAMESPACE, node=node, node_uid=lambda: "",
                      store=lambda: dict(api.leases), read_slots=list, clock=clock,
                      wake=lambda _s: None, duration_s=DURATION_S)


def claim(slots: LeaseSlots, template=TEMPLATE) -> None:
    answer = decide(node=slots.node, template=template.name, template_uid=template.uid,
                    spec_hash=template_spec_hash(template), limit=1, slots=[])
    assert slots.claim(template, answer)


def test_the_deadline_is_measured_from_when_the_write_was_sent():
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    slots = holder(api, clock)
    api.latency_s = DEADLINE_S - 0.5  # the answer comes late
    claim(slots)
    assert slots.fence(TEMPLATE) is None  # 0.5 s of the deadline left, counted from the send
    clock.advance(0.5)
    why = slots.fence(TEMPLATE)
    assert why is not None and "past the renew deadline of 2 s" in why
    assert "slot duration 3 s" in why and rollout.slot_name("mtu", 0) in why


def test_a_renewal_confirms_again_and_a_lost_slot_stays_fenced():
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    slots = holder(api, clock)
    claim(slots)
    clock.advance(DEADLINE_S)
    assert slots.fence(TEMPLATE) is not None
    slots.renew()  # the API answers again
    assert slots.fence(TEMPLATE) is None
    # Another node takes the Lease over (a write we did not make): our renewal gets a 409.
    name = rollout.slot_name("mtu", 0)
    taken = api.leases[name]
    api.replace_lease(NAMESPACE, name, {**taken, "spec": {**taken["spec"],
                                                          "holderIdentity": "node-b"}})
    clock.advance(DURATION_S)
    slots.renew()
    assert "no longer holds a rollout slot for mtu" in slots.fence(TEMPLATE)


def test_a_failed_slot_is_never_fenced_it_cannot_be_taken_over():
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    slots = holder(api, clock)
    claim(slots)
    slots.fail(TEMPLATE, "set_mtu eno1: refused")
    clock.advance(100 * DURATION_S)
    assert slots.fence(TEMPLATE) is None


def test_a_slot_adopted_after_a_restart_is_fenced_until_renewed():
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    claim(holder(api, clock))  # the agent before its restart
    restarted = holder(api, clock)
    answer = decide(node="node-a", template="mtu", template_uid=TEMPLATE.uid,
                    spec_hash=template_spec_hash(TEMPLATE), limit=1,
                    slots=[rollout.slot_from_lease(o, unchanged_for_s=0.0)
                           for o in api.leases.values()])
    assert answer.mine is not None and restarted.claim(TEMPLATE, answer)
    assert "not confirmed by the API server since this agent started" in restarted.fence(TEMPLATE)
    restarted.renew()  # adopted slots are renewed at once
    assert restarted.fence(TEMPLATE) is None


def test_the_holders_last_start_comes_before_the_earliest_takeover():
    """The gap between the fence and a waiter's takeover: at least duration/3 + the margin."""
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    slots = holder(api, clock)
    api.latency_s = 0.4
    claim(slots)
    seen_at = clock.monotonic()  # a waiter sees the write no earlier than its answer
    last_start = None
    while clock.monotonic() - seen_at < DURATION_S + TAKEOVER_MARGIN_S:
        if slots.fence(TEMPLATE) is None:
            last_start = clock.monotonic()
        clock.advance(0.05)
    assert last_start is not None
    assert seen_at + DURATION_S + TAKEOVER_MARGIN_S - last_start >= DURATION_S / 3 + TAKEOVER_MARGIN_S


# -- the executor's seam and the reconciler ------------------------------------------------------
def test_the_executor_stops_between_actions_when_the_slot_is_not_confirmed(tmp_path):
    node = Node(seed_host(), tmp_path / "state")
    template = make_template("t", {"interfaceConfig": [{"name": "eno1", "mtu": 9000,
                                                         "vlan": [{"id": 10}, {"id": 11}]}]})
    _, result = node.plan([template])
    asked = []

    def may_start(action):
        asked.append(action.describe())
        return None if len(asked) == 1 else "rollout slot rollout-t-0 last confirmed 2.1 s ago"
    report = node.host.execute(result, may_start=may_start)
    first, *rest = report.results
    assert first.ok and len(rest) == len(result.actions) - 1
    assert rest[0].status == SKIPPED and rest[0].error_type == FENCED
    assert rest[0].error == "not started: rollout slot rollout-t-0 last confirmed 2.1 s ago"
    assert len(node.fake.calls) == 1  # only the first action touched the host
    assert all(not r.ok for r in rest)


LOST_REASON = "waiting for a rollout slot: 1 of maxUnavailable 1 in use (node-b applying)"


class FencedSlots:
    """gate.SlotClaims: one free slot, claims succeed, `fence` answers as told."""

    def __init__(self) -> None:
        self.fenced_after = None  # fence() answers None this many times, then a reason
        self.asked = 0
        self.released = self.failed = 0
        self.lost = False  # another node took the slot over: this one waits

    def admission(self, template, limit):
        if self.lost:
            return rollout.Admission(admit=False, limit=limit, reason=LOST_REASON)
        return decide(node="node-a", template=template.name, template_uid=template.uid,
                      spec_hash=template_spec_hash(template), limit=limit, slots=[])

    drain_admission = admission  # decide() alone, as slots.py's

    def claim(self, template, admission):
        return True

    def release(self, template):
        self.released += 1

    def forget_absent(self, keep):
        self.kept = set(keep)

    def fail(self, template, message):
        self.failed += 1

    def wait_hint_s(self, admission):
        return None

    def set_waiting(self, waiting):
        pass

    def cluster_nodes(self):
        return None

    def claim_problem(self, template):
        return None

    def fence(self, template):
        self.asked += 1
        if self.fenced_after is not None and self.asked > self.fenced_after:
            return "rollout slot rollout-mtu-0 last confirmed 2.5 s ago, past the renew deadline"
        return None


def test_a_fenced_template_reports_why_and_keeps_its_slot_for_the_retry(tmp_path):
    from plumber_agent.reconciler import Reconciler
    from tests.support.fakehost import ListSource

    node = Node(seed_host(), tmp_path / "state")
    template = template_from_object({
        "metadata": {"name": "mtu", "generation": 1, "uid": "uid-mtu",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000, "vlan": [{"id": 10}]}],
                 "rollout": {"maxUnavailable": 1}}})
    slots = FencedSlots()
    slots.fenced_after = 1
    gate = RolloutGate(approved=ApprovedSpecs(str(tmp_path / "rollout.json")), slots=slots)
    published = []
    reconciler = Reconciler(host=node.host, source=ListSource([template]),
                            publish=published.append, rollout=gate)
    outcome = reconciler.sync()
    entry = next(t for t in outcome.status["templates"] if t["name"] == "mtu")
    assert entry["state"] == "Failed"
    assert "not started: rollout slot rollout-mtu-0 last confirmed 2.5 s ago" in entry["message"]
    assert slots.failed == 0 and slots.released == 0  # the slot is kept as is, not Failed
    assert not gate.approved.matches(template)
    # Confirmed again: the retry goes on from where it stopped and releases the slot.
    slots.fenced_after = None
    outcome = reconciler.sync()
    entry = next(t for t in outcome.status["templates"] if t["name"] == "mtu")
    assert entry["state"] == "Applied" and slots.released == 1
    assert gate.approved.matches(template)


def test_a_fenced_holder_that_lost_its_slot_keeps_what_it_changed_while_it_waits(tmp_path):
    """A holder fenced part-way (its MTU set, its VLAN not started) whose slot another node
    then took over waits for a slot again; it must not put its MTU back meanwhile: that is a host
    change of the template without a slot while the other nodes hold them all (the e2e test
    under a stalled API server saw it), and the same spec comes back with its next slot."""
    from plumber_agent.reconciler import Reconciler
    from tests.support.fakehost import ListSource

    node = Node(seed_host(), tmp_path / "state")
    spec = {"interfaceConfig": [{"name": "eno1", "mtu": 9000, "vlan": [{"id": 10}]}],
            "rollout": {"maxUnavailable": 1}}
    template = template_from_object({
        "metadata": {"name": "mtu", "generation": 1, "uid": "uid-mtu",
                     "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": spec})
    slots = FencedSlots()
    slots.fenced_after = 1
    gate = RolloutGate(approved=ApprovedSpecs(str(tmp_path / "rollout.json")), slots=slots)
    source = ListSource([template])
    reconciler = Reconciler(host=node.host, source=source, publish=lambda _s: None, rollout=gate)
    entry = next(t for t in reconciler.sync().status["templates"] if t["name"] == "mtu")
    assert entry["state"] == "Failed" and "not started" in entry["message"]
    made = len(node.fake.calls)
    owned = {key for key, rec in node.host.ledger.records().items()
             if "mtu" in (rec.get("templates") or [])}
    assert made == 1 and owned, (node.fake.calls, owned)  # the MTU, no more

    slots.lost = True
    for _ in range(2):  # and stays so, pass after pass
        entry = next(t for t in reconciler.sync().status["templates"] if t["name"] == "mtu")
        assert entry["state"] == "Waiting", entry
        assert entry["message"].startswith(LOST_REASON), entry
        assert "generation 1 before its slot stopped being confirmed is kept" in entry["message"]
        assert len(node.fake.calls) == made, f"changed the host without a slot: {node.fake.calls}"
        assert owned <= set(node.host.ledger.records())

    slots.lost, slots.fenced_after = False, None  # its turn again: it finishes the same spec
    entry = next(t for t in reconciler.sync().status["templates"] if t["name"] == "mtu")
    assert entry["state"] == "Applied" and slots.released == 1
    assert [c[0] for c in node.fake.calls[made:]] == ["ensure_vlan", "set_up"]  # MTU kept

    # A newer spec while it waits: the half of an apply that is not approved is undone, as
    # before (README "Not gated": undoing what a failed apply half did when a newer spec
    # arrives), so the kept half is only ever the current spec's.
    slots.fenced_after, slots.asked = 1, 0
    edited = template_from_object({
        "metadata": {"name": "mtu", "generation": 2, "uid": "uid-mtu",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {**spec, "interfaceConfig": [{"name": "eno1", "mtu": 9000,
                                              "vlan": [{"id": 10}, {"id": 11}, {"id": 12}]}]}})
    source.items = [edited]
    reconciler.sync()  # the VLAN 11 made, 12 fenced
    assert gate._stopped.get("mtu") == (edited.uid, template_spec_hash(edited), 2)
    third = template_from_object({
        "metadata": {"name": "mtu", "generation": 3, "uid": "uid-mtu",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {**spec, "interfaceConfig": [{"name": "eno1", "mtu": 8000,
                                              "vlan": [{"id": 10}]}]}})
    source.items = [third]
    slots.lost = True
    before = len(node.fake.calls)
    entry = next(t for t in reconciler.sync().status["templates"] if t["name"] == "mtu")
    assert entry["state"] == "Waiting" and "is kept" not in entry["message"], entry
    assert "mtu" not in gate._stopped
    assert [c[0] for c in node.fake.calls[before:]] == ["delete_link"], node.fake.calls[before:]


# -- the status writer's Lease ---------------------------------------------------------------
def test_the_leader_is_confirmed_only_within_its_renew_deadline():
    clock = FakeClock()
    api = SlowLeaseApi(clock)
    elector = LeaderElector(client=api, namespace=NAMESPACE, identity="node-a", clock=clock,
                            lead=lambda stop: None, read=lambda: None, duration_s=DURATION_S)
    assert not elector.confirmed()
    api.latency_s = 0.5
    assert elector.try_acquire_or_renew()
    assert elector.confirmed()
    clock.advance(DEADLINE_S - 0.5 - 0.01)
    assert elector.confirmed()
    clock.advance(0.01)
    assert not elector.confirmed()  # counted from the send, the answer's 0.5 s included


def test_an_unconfirmed_writer_writes_no_template_status():
    class Client:
        patches = 0

        def patch_template_status(self, name, body):
            Client.patches += 1

    confirmed = threading.Event()
    obj = {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
           **template_object(1)}
    writer = StatusWriter(client=Client(), namespace=NAMESPACE, identity="node-a",
                          clock=FakeClock(), templates=lambda: {"mtu": obj}, slots=list,
                          make_reflector=None, confirmed=confirmed.is_set)
    writer.sync([{"metadata": {"name": "n1"}}], {})
    assert Client.patches == 0
    confirmed.set()
    writer.sync([{"metadata": {"name": "n1"}}], {})
    assert Client.patches == 1


def test_the_writer_deletes_a_slot_of_an_unknown_template_only_after_asking_the_server():
    """Its own view (a template cache that lags) is not enough: a live rollout's slot, Failed
    above all, must survive a stalled template watch."""
    class Client:
        def __init__(self, template):
            self.template, self.deleted = template, []

        def get_template(self, name):
            return self.template

        def delete_lease(self, namespace, name, *, resource_version=None):
            self.deleted.append(name)

    slot = rollout.Slot(name="rollout-new-0", holder="node-a", template="new",
                        template_uid="uid-new", generation=1, phase=TemplateState.FAILED,
                        spec_hash="x", duration_s=DURATION_S,
                        unchanged_for_s=10 * DURATION_S)
    for template, deleted in (({"metadata": {"name": "new", "uid": "uid-new"}}, []),
                              (None, ["rollout-new-0"]),
                              ({"metadata": {"name": "new", "uid": "uid-recreated"}},
                               ["rollout-new-0"])):
        client = Client(template)
        writer = StatusWriter(client=client, namespace=NAMESPACE, identity="node-a",
                              clock=FakeClock(), templates=dict, slots=list, make_reflector=None)
        writer._collect_stale_slots([], [slot])
        assert client.deleted == deleted, template


def test_two_agents_with_one_node_name_are_reported(caplog):
    """Two processes as "node-a" (one Lease holder to the API): the second's write makes the
    first's renewal lose to a Lease that still names node-a: an error says what is wrong."""
    import logging

    clock = FakeClock()
    api = SlowLeaseApi(clock)
    first, twin = holder(api, clock), holder(api, clock)
    claim(first)
    name = rollout.slot_name("mtu", 0)
    answer = decide(node="node-a", template="mtu", template_uid=TEMPLATE.uid,
                    spec_hash=template_spec_hash(TEMPLATE), limit=1,
                    slots=[rollout.slot_from_lease(api.leases[name], unchanged_for_s=0.0)])
    assert twin.claim(TEMPLATE, answer)  # adopts it as "ours from before a restart"
    twin.renew()  # the twin writes it
    clock.advance(DURATION_S / 2)
    with caplog.at_level(logging.ERROR):
        first.renew()  # 409: it changed, and still names node-a
    assert any("two agent processes share one --node-name" in r.getMessage()
               for r in caplog.records)
