"""The rollout limit holds while one holder's renewals are stalled in the API server, proved
over the fake API server (`stall_writes`: one node's Lease PUTs wait inside the server longer
than a slot lasts, as in a real server's priority-and-fairness queue or a slow etcd) with the
real LeaseSlots, LeaderElector and KubeClient. Time for the agents' decisions is a FakeClock
stepped by the test (the HTTP is real and untimed), so no assertion depends on wall time.

Why: a lease is not a lock without fencing. In the run issue 25 describes, a holder whose
renewal was late went on changing its host after another node took its slot over, and three
nodes applied a template limited to two.
"""
from __future__ import annotations

import threading

from plumber_agent.clock import FakeClock
from plumber_agent.fleet import rollout
from plumber_agent.fleet.leader import LEADER_LEASE, LeaderElector
from plumber_agent.fleet.rollout import SLOT_SELECTOR, TAKEOVER_MARGIN_S, decide
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.models.parse import template_from_object
from tests.helpers.wait import wait_for
from tests.support.fleetsim import template_object

NAMESPACE = "plumber-system"
DURATION_S = 4.0  # what the e2e rollout tests run the agents with
STEP_S = 0.1
STALL_SEEN_TIMEOUT_S = 30.0  # bounded wait for the stalled request to reach the server
LIMIT = 1
TEMPLATE = template_from_object(template_object(LIMIT))


def client_for(kubeconfig):
    from plumber_agent.kube.client import KubeClient
    return KubeClient.from_kubeconfig(kubeconfig)


class NodeAgent:
    """One node's slot code over its own client, reading the Leases from the server."""

    def __init__(self, name: str, kubeconfig, clock: FakeClock) -> None:
        self.name, self.client = name, client_for(kubeconfig)

        def store():
            items, _ = self.client.list_leases(NAMESPACE, SLOT_SELECTOR)
            return {item["metadata"]["name"]: item for item in items}
        self.read = slot_reader(store, clock)
        self.slots = LeaseSlots(client=self.client, namespace=NAMESPACE, node=name,
                                node_uid=lambda: "", store=store, read_slots=self.read,
                                clock=clock, wake=lambda _s: None, duration_s=DURATION_S)
        self.holds = False

    def try_claim(self) -> bool:
        """What a pass does: decide over the Leases as this node sees them, claim if free."""
        answer = decide(node=self.name, template=TEMPLATE.name, template_uid=TEMPLATE.uid,
                        spec_hash=template_spec_hash(TEMPLATE), limit=LIMIT,
                        slots=self.slots._slots())
        self.holds = answer.admit and self.slots.claim(TEMPLATE, answer)
        return self.holds

    def may_start(self) -> bool:
        """Would the executor start this node's next host action now?"""
        return self.holds and self.slots.fence(TEMPLATE) is None

    def close(self) -> None:
        self.client.close()


def test_a_holder_whose_renewals_stall_stops_before_another_node_takes_over(fake_api, kubeconfig):
    clock = FakeClock()
    a, b = NodeAgent("node-a", kubeconfig, clock), NodeAgent("node-b", kubeconfig, clock)
    try:
        assert a.try_claim() and a.may_start()
        assert not b.try_claim()  # b first sees a's Lease now: its clock for it starts
        stall = fake_api.stall_writes("PUT", "/leases/", holder="node-a")
        clock.advance(DURATION_S / 3)  # a's renewal is due
        renewer = threading.Thread(target=a.slots.renew, daemon=True)
        renewer.start()  # and sits in the server
        wait_for(lambda: stall.stalled == 1, timeout_s=STALL_SEEN_TIMEOUT_S,
                 what="node-a's renewal held by the server")
        fenced_at = took_at = None
        while clock.monotonic() < 1000.0 + 3 * DURATION_S:
            starts = {agent.name for agent in (a, b) if agent.may_start()}
            assert len(starts) <= LIMIT, f"{starts} may start host actions at once (limit 1)"
            if fenced_at is None and "node-a" not in starts:
                fenced_at = clock.monotonic()
            if took_at is None and not b.holds and b.try_claim():
                took_at = clock.monotonic()
            clock.advance(STEP_S)
        assert fenced_at is not None and took_at is not None
        # The holder stopped first, by at least a third of the duration and the margin.
        assert took_at - fenced_at >= DURATION_S / 3 + TAKEOVER_MARGIN_S - STEP_S
        why = a.slots.fence(TEMPLATE)
        assert "past the renew deadline" in why
        lease = fake_api.get("leases", rollout.slot_name("mtu", 0), NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "node-b"
        # The stall ends: a's held renewal is written now, at a stale version: 409. a knows it
        # lost the slot and waits; b finishes and releases; a claims again: the rollout goes on.
        stall.release()
        renewer.join(timeout=STALL_SEEN_TIMEOUT_S)
        assert not renewer.is_alive()
        assert "no longer holds a rollout slot" in a.slots.fence(TEMPLATE)
        assert not a.try_claim()
        b.slots.release(TEMPLATE)
        assert a.try_claim() and a.may_start()
    finally:
        a.close()
        b.close()


class Candidate:
    def __init__(self, name: str, kubeconfig, clock: FakeClock) -> None:
        self.client = client_for(kubeconfig)

        def read():
            items, _ = self.client.list_leases(NAMESPACE, "plumber.k8s.pf9.io/lease=leader")
            return next((i for i in items if i["metadata"]["name"] == LEADER_LEASE), None)
        self.elector = LeaderElector(client=self.client, namespace=NAMESPACE, identity=name,
                                     clock=clock, lead=lambda stop: None, read=read,
                                     duration_s=DURATION_S)


def test_a_status_writer_whose_renewals_stall_stops_writing_before_another_takes_over(
        fake_api, kubeconfig):
    clock = FakeClock()
    a, b = Candidate("node-a", kubeconfig, clock), Candidate("node-b", kubeconfig, clock)
    try:
        assert a.elector.try_acquire_or_renew() and a.elector.confirmed()
        assert not b.elector.try_acquire_or_renew()  # b sees a's Lease now
        stall = fake_api.stall_writes("PUT", f"/leases/{LEADER_LEASE}", holder="node-a")
        clock.advance(DURATION_S / 3)
        renewer = threading.Thread(target=a.elector.try_acquire_or_renew, daemon=True)
        renewer.start()
        wait_for(lambda: stall.stalled == 1, timeout_s=STALL_SEEN_TIMEOUT_S,
                 what="node-a's leader renewal held by the server")
        b_leads = False
        while clock.monotonic() < 1000.0 + 3 * DURATION_S:
            # a writes template status only while confirmed (writer.py asks before each write)
            assert not (a.elector.confirmed() and b_leads), "two status writers at once"
            b_leads = b_leads or b.elector.try_acquire_or_renew()
            clock.advance(STEP_S)
        assert b_leads and not a.elector.confirmed()
        stall.release()
        renewer.join(timeout=STALL_SEEN_TIMEOUT_S)
        assert fake_api.get("leases", LEADER_LEASE, NAMESPACE)["spec"]["holderIdentity"] \
            == "node-b"
        assert not a.elector.try_acquire_or_renew()  # a's stale write lost (409): it follows
    finally:
        a.client.close()
        b.client.close()
