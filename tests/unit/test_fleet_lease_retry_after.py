"""Lease writes after a 429/5xx with Retry-After (fleet/leader.py, fleet/slots.py): no further
write until the server's time is over, on the injected clock; other refusals (409: someone else
won) change nothing."""
from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from plumber_agent.clock import FakeClock
from plumber_agent.fleet.leader import LeaderElector
from plumber_agent.fleet.rollout import Admission
from plumber_agent.fleet.slots import LeaseSlots
from plumber_agent.models.parse import template_from_object


def _error(code: int, retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=code, reason="x")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}
    return exc


class LeaseClient:
    """create_lease/replace_lease answer with the next scripted error, else succeed."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = 0

    def _write(self, namespace, body):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        meta = dict(body["metadata"], resourceVersion=str(self.calls))
        return {**body, "metadata": meta}

    def create_lease(self, namespace, body):
        return self._write(namespace, body)

    def replace_lease(self, namespace, name, body):
        return self._write(namespace, body)


def elector(client, clock) -> LeaderElector:
    return LeaderElector(client=client, namespace="ns", identity="n1", clock=clock,
                         lead=lambda stop: None, read=lambda: None, duration_s=15.0)


def test_the_leader_election_waits_out_a_retry_after():
    clock = FakeClock()
    client = LeaseClient([_error(429, "5")])
    e = elector(client, clock)
    assert not e.try_acquire_or_renew() and client.calls == 1
    clock.advance(4.9)
    assert not e.try_acquire_or_renew() and client.calls == 1  # held: nothing sent
    clock.advance(0.1)
    assert e.try_acquire_or_renew() and client.calls == 2


def test_a_conflict_is_not_a_pause():
    clock = FakeClock()
    client = LeaseClient([_error(409)])
    e = elector(client, clock)
    assert not e.try_acquire_or_renew()
    assert e.try_acquire_or_renew() and client.calls == 2


TEMPLATE = template_from_object({"metadata": {"name": "mtu", "uid": "u1", "generation": 1},
                                 "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}})


def slots(client, clock, wakes) -> LeaseSlots:
    return LeaseSlots(client=client, namespace="ns", node="n1", node_uid=lambda: "uid-n1",
                      store=dict, read_slots=list, clock=clock, wake=wakes.append,
                      duration_s=30)


def test_a_slot_claim_refused_with_retry_after_wakes_the_node_when_it_is_over():
    clock = FakeClock()
    client, wakes = LeaseClient([_error(503, "8")]), []
    s = slots(client, clock, wakes)
    admission = Admission(admit=True, limit=1, claim="slot-mtu-0")
    assert not s.claim(TEMPLATE, admission) and wakes == [8.0]
    clock.advance(3)
    assert not s.claim(TEMPLATE, admission) and client.calls == 1  # nothing sent while held
    assert wakes == [8.0, 5.0]
    clock.advance(5)
    assert s.claim(TEMPLATE, admission) and client.calls == 2


def test_a_renewal_refused_with_retry_after_is_not_repeated_before_it():
    clock = FakeClock()
    client, wakes = LeaseClient([]), []
    s = slots(client, clock, wakes)
    assert s.claim(TEMPLATE, Admission(admit=True, limit=1, claim="slot-mtu-0"))
    client.errors = [_error(429, "20")]
    clock.advance(10)  # a third of the duration: due
    s.renew()
    assert client.calls == 2
    clock.advance(10)
    s.renew()
    assert client.calls == 2  # still inside the server's 20 s
    clock.advance(10)
    s.renew()
    assert client.calls == 3
