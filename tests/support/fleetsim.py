"""A rollout over many simulated agents, in one process and on a FakeClock: the real slot code
(fleet/slots.py LeaseSlots, rollout.decide/choose, slot_reader) and the real offers of the
status writer (aggregate.node_results' NodeResult list into aggregate.offers), over an
in-memory Lease API with the API server's optimistic rules (create: 409 AlreadyExists; PUT or
DELETE at a stale resourceVersion: 409 Conflict).

Why: counting claim attempts per node for a rollout to 1,000 nodes (bench B7) and checking the
failure cases (dead writer, killed holder, deleted node) needs 1,000 agents, far more than real
agent processes on one machine. What is simulated, and how:
- time moves in steps of STEP_S; a step is also the watch latency (each agent sees the Leases
  and the template's offers as they were at the start of the step, so agents of one step race);
- an agent runs a pass (the gate's `admission` then `claim`) when the real code would: a Lease
  event for which `LeaseSlots.on_lease_event` wakes it, a change of its own offer (cluster.py
  `template_changed`), or the retry time the pass itself asked for (`wait_hint_s`);
- the host work is a wait of `apply_s`, then the agent releases its slot (the real `release`);
- the writer's view of each node is what its HostNetwork would say (Waiting until it applied,
  Applied; Applying only from its live slot, as aggregate.node_results has it), recomputed
  COALESCE_S after a change like fleet/writer.py.
`herd=True` runs the algorithm before offers (every waiting node tries a free slot whenever a
Lease event shows one: `rollout.decide` alone) as the baseline.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.clock import FakeClock
from plumber_agent.fleet import rollout
from plumber_agent.fleet.aggregate import NodeResult, expired_holders, offer_times, offers
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.fleet.writer import COALESCE_S
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState

NAMESPACE = "plumber-system"
STEP_S = 0.1


class ApiError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class LeaseApi:
    """The Lease verbs LeaseSlots calls, with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.leases: dict[str, dict] = {}
        self._rv = itertools.count(1)
        self.changed = False  # a write since the last step (the watch delivers an event)
        self.written: set[str] = set()  # every Lease name ever written

    def _store(self, body: dict) -> dict:
        obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(next(self._rv))}}
        self.leases[obj["metadata"]["name"]] = obj
        self.written.add(obj["metadata"]["name"])
        self.changed = True
        return obj

    def create_lease(self, namespace: str, body: dict) -> dict:
        if body["metadata"]["name"] in self.leases:
            raise ApiError(409)
        return self._store(body)

    def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        current = self.leases.get(name)
        if current is None:
            raise ApiError(404)
        if current["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise ApiError(409)
        return self._store(body)

    def delete_lease(self, namespace: str, name: str, *, resource_version=None) -> None:
        current = self.leases.get(name)
        if current is None:
            raise ApiError(404)
        if resource_version and current["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409)
        del self.leases[name]
        self.changed = True


class HerdSlots(LeaseSlots):
    """The admission before offers: `rollout.decide` alone (any waiting node tries a free
    slot as soon as it sees one)."""

    admission = LeaseSlots.drain_admission  # the same question a drain outside a rollout asks


@dataclass
class Agent:
    name: str
    slots: LeaseSlots
    state: str = TemplateState.WAITING  # Waiting, Applying, Applied
    due: Optional[float] = None  # when its next pass runs (None: when something wakes it)
    done_at: Optional[float] = None  # the host work ends (Applying)
    dead: bool = False  # killed: no passes, no renewals, no release
    last_offer: Optional[int] = None


@dataclass
class Result:
    completed: bool
    duration_s: float
    attempts: dict[str, int]
    most_at_once: int
    applied: int
    writer_syncs: int = 0
    offer_changes: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def max_attempts(self) -> int:
        return max(self.attempts.values(), default=0)

    @property
    def mean_attempts(self) -> float:
        return sum(self.attempts.values()) / len(self.attempts) if self.attempts else 0.0


def template_object(limit, *, generation: int = 1) -> dict:
    return {"metadata": {"name": "mtu", "generation": generation, "uid": "uid-mtu",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                     "rollout": {"maxUnavailable": limit}}}


class Fleet:
    def __init__(self, nodes: int, *, limit: int, apply_s: float = 2.0, herd: bool = False,
                 writer: bool = True, seed: int = 1) -> None:
        self.clock = FakeClock()
        self.api = LeaseApi()
        self.view: dict[str, dict] = {}  # the Leases as the agents' watch shows them
        self.limit, self.apply_s, self.herd = limit, apply_s, herd
        self.writer_alive = writer
        self.template_obj = template_object(limit)
        self.offered: dict[str, int] = {}  # status.rollout.offered as the agents see it
        self.writer_due: Optional[float] = self.clock.monotonic() if writer else None
        self.writer_reader = slot_reader(lambda: self.view, self.clock)
        self.writer_offered_since: dict[str, float] = {}
        self.writer_syncs = self.offer_changes = 0
        rng = random.Random(seed)
        kind = HerdSlots if herd else LeaseSlots
        self.agents: dict[str, Agent] = {}
        for i in range(nodes):
            name = f"node-{i:04d}"
            agent = Agent(name=name, slots=None, due=self.clock.monotonic())  # type: ignore
            agent.slots = kind(client=self.api, namespace=NAMESPACE, node=name,
                               node_uid=lambda n=name: f"uid-{n}", store=lambda: self.view,
                               read_slots=slot_reader(lambda: self.view, self.clock),
                               clock=self.clock, wake=lambda delay_s, a=agent: self._wake(a, delay_s),
                               rng=random.Random(rng.random()))
            self.agents[name] = agent
        self.events: list[str] = []

    # -- the agent's pass and wakes ---------------------------------------------------------
    def template(self):
        obj = {**self.template_obj, "status": {
            "observedGeneration": self.template_obj["metadata"]["generation"],
            "rollout": {"offered": [{"node": n, "slot": i} for n, i in self.offered.items()]}}}
        return template_from_object(obj)

    def _wake(self, agent: Agent, delay_s: float) -> None:
        due = self.clock.monotonic() + max(delay_s, 0.0)
        if agent.due is None or due < agent.due:
            agent.due = due

    def _pass(self, agent: Agent, template) -> None:
        """gate.RolloutGate._admitted for one template with host work to do."""
        admission = agent.slots.admission(template, self.limit)
        if admission.admit and agent.slots.claim(template, admission):
            agent.state = TemplateState.APPLYING
            agent.done_at = self.clock.monotonic() + self.apply_s
            agent.slots.set_waiting({})
            return
        agent.slots.set_waiting({template.name: (template, self.limit)})
        hint = agent.slots.wait_hint_s(admission)
        if hint is not None:
            self._wake(agent, hint)

    # -- the status writer -------------------------------------------------------------------
    def _write_offers(self, template) -> None:
        now = self.clock.monotonic()
        # What each HostNetwork says: an agent never reports Applying (aggregate.node_results
        # derives it from the live slot), so one killed mid-apply still says Waiting.
        results = [NodeResult(node=a.name, state=TemplateState.APPLIED
                              if a.state == TemplateState.APPLIED else TemplateState.WAITING)
                   for a in self.agents.values()]
        ages = {n: now - since for n, since in self.writer_offered_since.items()}
        slots = self.writer_reader()
        expired = expired_holders(template, slots)
        entries = offers(template, results, slots, self.limit, offered_for_s=ages,
                         expired=expired)
        new = {e["node"]: e["slot"] for e in entries}
        self.writer_offered_since = offer_times(
            self.writer_offered_since, offered=set(new),
            waiting={r.node for r in results if r.state == TemplateState.WAITING},
            expired=expired, now=now)
        self.writer_syncs += 1
        if new != self.offered:
            self.offer_changes += 1
            self.offered = new

    # -- failures ------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.agents[name].dead = True
        self.events.append(f"{self.clock.monotonic():.1f} killed {name}")

    def delete_node(self, name: str) -> None:
        """The Node is deleted: the garbage collector deletes its Leases, it reports nothing."""
        agent = self.agents.pop(name)
        agent.dead = True
        for lease_name, lease in list(self.api.leases.items()):
            if lease["spec"]["holderIdentity"] == name:
                self.api.delete_lease(NAMESPACE, lease_name)
        self.events.append(f"{self.clock.monotonic():.1f} deleted {name}")

    def stop_writer(self) -> None:
        self.writer_alive, self.writer_due = False, None

    def start_writer(self) -> None:
        """A new leader: it knows no offer times, and starts with a fresh count."""
        self.writer_alive, self.writer_offered_since = True, {}
        self.writer_due = self.clock.monotonic()

    # -- the loop ------------------------------------------------------------------------------
    def step(self) -> None:
        now = self.clock.monotonic()
        lease_event = self.api.changed
        self.api.changed = False
        self.view = {k: dict(v) for k, v in self.api.leases.items()}  # the watch delivers
        template = self.template()
        live = [a for a in self.agents.values() if not a.dead]
        for agent in live:
            if agent.state == TemplateState.APPLYING and agent.done_at is not None \
                    and now >= agent.done_at:
                agent.slots.release(template)
                agent.state, agent.done_at = TemplateState.APPLIED, None
        for agent in live:  # cluster.py: the template event reaches this node's pass
            offer = template.offered.get(agent.name)
            if offer != agent.last_offer:
                agent.last_offer = offer
                if agent.state == TemplateState.WAITING:
                    self._wake(agent, 0.0)
        if lease_event:  # slots.py on_lease_event, on every agent's watch
            for agent in live:
                if agent.state == TemplateState.WAITING:
                    agent.slots.on_lease_event("MODIFIED", "", None, None)
        for agent in live:
            if agent.state == TemplateState.WAITING and agent.due is not None \
                    and now >= agent.due:
                agent.due = None
                self._pass(agent, template)
        if self.writer_alive:
            if lease_event or self.api.changed:
                self.writer_due = min(self.writer_due or float("inf"), now + COALESCE_S)
            if self.writer_due is not None and now >= self.writer_due:
                self.writer_due = now + COALESCE_S * 5  # fleet/writer.py RECOUNT_S
                self._write_offers(template)
        self.clock.advance(STEP_S)

    def holding(self) -> int:
        return sum(1 for lease in self.api.leases.values()
                   if lease["metadata"]["annotations"].get(rollout.PHASE_ANNOTATION)
                   == TemplateState.APPLYING)

    def run(self, *, timeout_s: float = 3600.0, at: Optional[dict] = None) -> Result:
        """Step until every live node applied; `at`: {time since start: action()}, an action
        that returns False is tried again the next step."""
        start = self.clock.monotonic()
        actions = sorted((at or {}).items())
        most = 0
        while self.clock.monotonic() - start < timeout_s:
            while actions and self.clock.monotonic() - start >= actions[0][0]:
                if actions[0][1]() is False:
                    break
                actions.pop(0)
            self.step()
            most = max(most, sum(1 for a in self.agents.values()
                                 if a.state == TemplateState.APPLYING and not a.dead))
            if all(a.state == TemplateState.APPLIED for a in self.agents.values() if not a.dead) \
                    and not actions:
                break
        live = [a for a in self.agents.values() if not a.dead]
        return Result(completed=all(a.state == TemplateState.APPLIED for a in live),
                      duration_s=self.clock.monotonic() - start,
                      attempts={a.name: a.slots.attempts for a in self.agents.values()},
                      most_at_once=most,
                      applied=sum(1 for a in live if a.state == TemplateState.APPLIED),
                      writer_syncs=self.writer_syncs, offer_changes=self.offer_changes,
                      events=self.events)
