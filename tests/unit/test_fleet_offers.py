"""Rollout slots without a herd (docs/rollout.md "Who tries a free slot"): the status writer's
offers (aggregate.offers), the node's choice (rollout.choose), and whole rollouts over many
simulated agents running the real slot code (tests/support/fleetsim.py): claim attempts per node,
a writer that is dead or never was, a holder killed, a node deleted.

Why: when one slot frees, 1,000 waiting nodes must not all try it (about 281,000 claim attempts
for one rollout before offers); and whatever the offers say, the Lease stays the lock.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from plumber_agent.fleet import rollout
from plumber_agent.fleet.aggregate import NodeResult, aggregate, offer_times, offers
from plumber_agent.fleet.rollout import (FALLBACK_AFTER_S, FALLBACK_SPREAD_S,
                                         OFFER_TIMEOUT_S, Slot, choose, decide, rollout_rank,
                                         slot_name, template_spec_hash)
from plumber_agent.models.fleet import offered_slots
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from tests.support.fleetsim import Fleet, template_object

TEMPLATE = template_from_object(template_object(3))
IDENTITY = template_spec_hash(TEMPLATE)


def slot(index: int, holder: str, phase: str = TemplateState.APPLYING) -> Slot:
    return Slot(name=slot_name("mtu", index), holder=holder, template="mtu",
                template_uid=TEMPLATE.uid, generation=1, phase=phase, spec_hash=IDENTITY)


def waiting(*names: str) -> list[NodeResult]:
    return [NodeResult(node=n, state="Waiting") for n in names]


# -- the writer's offers --------------------------------------------------------------------
def test_one_offer_per_free_slot_in_rank_order():
    results = waiting(*(f"n{i}" for i in range(10))) + [NodeResult(node="a", state="Applied")]
    got = offers(TEMPLATE, results, [slot(1, "holder")], 3)
    rid = f"{TEMPLATE.uid}/{IDENTITY}"
    order = sorted((f"n{i}" for i in range(10)), key=lambda n: rollout_rank(rid, n))
    assert got == [{"node": order[0], "slot": 0}, {"node": order[1], "slot": 2}]


def test_waiting_nodes_first_then_unreported_ones_and_never_a_holder():
    results = [NodeResult(node="u", state="Unknown"), NodeResult(node="w", state="Waiting"),
               NodeResult(node="holder", state="Unknown"),
               NodeResult(node="f", state="Failed")]
    got = offers(TEMPLATE, results, [slot(0, "holder")], 3)
    assert got == [{"node": "w", "slot": 1}, {"node": "u", "slot": 2}]


def test_no_offer_when_halted_or_without_a_limit_or_in_a_dry_run():
    failed = [slot(i, f"bad{i}", TemplateState.FAILED) for i in range(3)]
    assert offers(TEMPLATE, waiting("n1"), failed, 3) == []
    for rollout_spec in ({"maxUnavailable": "100%"}, {"maxUnavailable": 3, "dryRun": True}):
        obj = template_object(3)
        obj["spec"]["rollout"] = rollout_spec
        assert offers(template_from_object(obj), waiting("n1"), [], 3) == []


def test_an_offer_not_taken_in_time_goes_to_the_next_node():
    rid = f"{TEMPLATE.uid}/{IDENTITY}"
    first, second = sorted(["n1", "n2"], key=lambda n: rollout_rank(rid, n))
    assert offers(TEMPLATE, waiting("n1", "n2"), [], 1) == [{"node": first, "slot": 0}]
    late = offers(TEMPLATE, waiting("n1", "n2"), [], 1, offered_for_s={first: OFFER_TIMEOUT_S})
    assert late == [{"node": second, "slot": 0}]


def test_a_node_whose_slot_expired_is_offered_last():
    """A holder killed mid-apply still reports Waiting (its last report): offered first, it
    would keep a free slot from every live node for OFFER_TIMEOUT_S (the e2e killed-holders
    rollout ran at half speed so)."""
    rid = f"{TEMPLATE.uid}/{IDENTITY}"
    first, second, third = sorted(["n1", "n2", "n3"], key=lambda n: rollout_rank(rid, n))
    dead = replace(slot(0, first), unchanged_for_s=30.0 + rollout.TAKEOVER_MARGIN_S)
    assert offers(TEMPLATE, waiting("n1", "n2", "n3"), [dead], 2) == [
        {"node": second, "slot": 0}, {"node": third, "slot": 1}]
    # Only its own rollout's expired slot counts against it; a live one makes it a holder.
    other = replace(dead, spec_hash="another-spec")
    assert offers(TEMPLATE, waiting("n1", "n2", "n3"), [other], 1) == [{"node": first, "slot": 0}]
    assert offers(TEMPLATE, waiting("n1", "n2", "n3"), [slot(0, first)], 2) == [
        {"node": second, "slot": 1}]
    # Once another node took its Lease over, it is back in its place.
    assert offers(TEMPLATE, waiting("n1", "n2", "n3"), [slot(0, second)], 2) == [
        {"node": first, "slot": 1}]


def test_the_status_carries_the_offers_and_the_limit_of_the_spec():
    obj = template_object("50%")
    template = template_from_object(obj)
    nodes = [{"metadata": {"name": f"n{i}"}} for i in range(4)]
    result = aggregate(template, nodes=nodes, hostnetworks={}, slots=[], previous=None,
                       now="2026-01-01T00:00:00Z")
    assert result.status["maxUnavailable"] == 2
    assert len(result.status["rollout"]["offered"]) == 2 == len(result.offered)


@pytest.mark.parametrize("forged", [10 ** 6, 1, "x"])
def test_a_forged_status_does_not_change_the_writers_limit(forged):
    nodes = [{"metadata": {"name": f"n{i}"}} for i in range(4)]
    obj = {**template_object("50%"), "status": {"observedGeneration": 1,
                                                "maxUnavailable": forged,
                                                "nodes": {"matching": 10 ** 6}}}
    result = aggregate(template_from_object(obj), nodes=nodes, hostnetworks={}, slots=[],
                       previous=obj["status"], now="2026-01-01T00:00:00Z")
    assert result.status["maxUnavailable"] == 2
    assert len(result.offered) == 2


def test_a_squatter_holds_one_place_in_the_offers_and_cannot_halt_alone():
    """One node holding all 3 slots (Failed, so nobody may take them over): the writer offers
    the 2 places it does not count for, under the next names, and the rollout is not halted
    (one failed node, not 3)."""
    squat = [slot(i, "squatter", TemplateState.FAILED) for i in range(3)]
    got = offers(TEMPLATE, waiting("n1", "n2", "n3"), squat, 3)
    assert sorted(o["slot"] for o in got) == [3, 4]
    nodes = [{"metadata": {"name": n}} for n in ("n1", "n2", "n3", "squatter")]
    result = aggregate(TEMPLATE, nodes=nodes, hostnetworks={}, slots=squat, previous=None,
                       now="2026-01-01T00:00:00Z")
    assert result.status["phase"] != "Halted" and len(result.offered) == 2


# -- reading the offers -----------------------------------------------------------------------
def test_offers_are_read_only_for_the_current_generation_and_bad_entries_are_dropped():
    obj = {**template_object(3), "status": {"observedGeneration": 1, "rollout": {"offered": [
        {"node": "a", "slot": 2}, {"node": "b", "slot": -1}, {"node": "c", "slot": True},
        {"node": 7, "slot": 1}, "junk", {"node": "a", "slot": 0}]}}}
    assert offered_slots(obj) == {"a": 2}
    obj["metadata"]["generation"] = 2
    assert offered_slots(obj) == {}
    assert offered_slots({"metadata": {}, "status": {"rollout": []}}) == {}


# -- the node's choice --------------------------------------------------------------------------
def admission(node: str, held: list[Slot], limit: int = 3):
    return decide(node=node, template="mtu", template_uid=TEMPLATE.uid, spec_hash=IDENTITY,
                  limit=limit, slots=held)


def test_an_offered_node_tries_exactly_its_slot():
    got = choose(admission("n1", [slot(0, "x")]), template="mtu", offered=2, free_for_s={},
                 rank=0.9)
    assert got.admit and got.claim == slot_name("mtu", 2)


def test_an_offer_of_a_taken_slot_or_beyond_the_limit_costs_nothing():
    """A stale or forged offer: the node does not try (the Lease would refuse it anyway)."""
    for offered in (0, 3, 10 ** 6):
        got = choose(admission("n1", [slot(0, "x")]), template="mtu", offered=offered,
                     free_for_s={}, rank=0.0)
        assert not got.admit and got.claim is None, offered


def test_a_node_not_offered_waits_for_the_writer_then_takes_its_ranked_turn():
    base = admission("n1", [])
    early = choose(base, template="mtu", offered=None,
                   free_for_s={n: FALLBACK_AFTER_S - 1 for n in base.free}, rank=0.5)
    assert not early.admit
    assert early.retry_after_s == pytest.approx(1 + 0.5 * FALLBACK_SPREAD_S)
    before_turn = choose(base, template="mtu", offered=None,
                         free_for_s={base.free[0]: FALLBACK_AFTER_S + 1}, rank=0.5)
    assert not before_turn.admit
    turn = choose(base, template="mtu", offered=None,
                  free_for_s={base.free[0]: FALLBACK_AFTER_S + 0.5 * FALLBACK_SPREAD_S}, rank=0.5)
    assert turn.admit and turn.claim in base.free


def test_a_holder_is_admitted_and_a_full_rollout_waits_whatever_the_offer():
    mine = choose(admission("x", [slot(0, "x")]), template="mtu", offered=None, free_for_s={},
                  rank=0.9)
    assert mine.admit and mine.mine is not None
    full = [slot(i, f"h{i}") for i in range(3)]
    assert not choose(admission("n1", full), template="mtu", offered=1,
                      free_for_s={}, rank=0.0).admit


def test_the_rank_is_stable_and_spread():
    ranks = [rollout_rank("uid/abc", f"node-{i}") for i in range(1000)]
    assert ranks == [rollout_rank("uid/abc", f"node-{i}") for i in range(1000)]
    assert all(0 <= r < 1 for r in ranks)
    assert sum(r < 0.5 for r in ranks) in range(450, 551)
    assert rollout_rank("uid/other", "node-1") != ranks[1]


# -- whole rollouts over simulated agents (real slot code, FakeClock) -------------------------
MAX_ATTEMPTS = 3


def check(result, *, limit: int):
    assert result.completed, result.events
    assert result.most_at_once <= limit
    assert result.max_attempts <= MAX_ATTEMPTS, sorted(result.attempts.items(),
                                                       key=lambda kv: -kv[1])[:5]


def test_offers_take_one_attempt_per_node():
    result = Fleet(60, limit=5).run()
    check(result, limit=5)
    assert set(result.attempts.values()) == {1}


def test_before_offers_the_same_rollout_was_a_herd():
    """The baseline the offers replace: more attempts than nodes (the Lease kept the limit)."""
    result = Fleet(60, limit=5, herd=True).run()
    assert result.completed and result.most_at_once <= 5
    assert result.max_attempts > MAX_ATTEMPTS


def test_without_any_writer_the_rollout_still_moves_by_rank():
    check(Fleet(40, limit=4, writer=False).run(), limit=4)


def test_a_writer_that_dies_and_one_that_takes_over():
    fleet = Fleet(40, limit=4)
    check(fleet.run(at={3: fleet.stop_writer, 40: fleet.start_writer}), limit=4)
    fleet = Fleet(40, limit=4)
    check(fleet.run(at={3: fleet.stop_writer}), limit=4)


def applying(fleet: Fleet):
    return next((a.name for a in fleet.agents.values()
                 if a.state == "Applying" and not a.dead), None)


def test_a_holder_killed_mid_apply_its_slot_expires_and_is_offered_on():
    fleet = Fleet(30, limit=3)
    victim = {}

    def kill():
        name = applying(fleet)
        if name is None:
            return False
        victim["name"] = name
        fleet.kill(name)
    result = fleet.run(at={2: kill})
    check(result, limit=3)
    assert result.applied == 29 and victim["name"] in result.attempts


def test_holders_killed_at_once_are_never_offered_a_slot_ahead_of_a_live_node():
    """The killed holders still report Waiting. Were they offered their slots again, each would
    keep one from the live nodes for OFFER_TIMEOUT_S more, first while their expired Leases are
    there, then again once those are taken over and gone (simulated time, FakeClock)."""
    fleet = Fleet(10, limit=2, apply_s=3.0)
    duration = next(iter(fleet.agents.values())).slots.duration_s
    start = fleet.clock.monotonic()
    victims: set[str] = set()
    killed_at = taken_over_at = None
    ahead = []
    while fleet.clock.monotonic() - start < 600:
        holders = {lease["spec"]["holderIdentity"] for lease in fleet.api.leases.values()}
        if not victims and len(holders) == 2:
            victims, killed_at = holders, fleet.clock.monotonic()
            for name in victims:
                fleet.kill(name)
        elif victims:
            if taken_over_at is None and len(holders) == 2 and not holders & victims:
                taken_over_at = fleet.clock.monotonic()
            live_waiting = {a.name for a in fleet.agents.values()
                            if a.state == TemplateState.WAITING and not a.dead}
            # (An offer made before they claimed may stay listed while they hold the slot.)
            if set(fleet.offered) & victims - holders and live_waiting - set(fleet.offered):
                ahead.append((round(fleet.clock.monotonic() - killed_at, 1), dict(fleet.offered)))
            if not live_waiting and not any(a.state == TemplateState.APPLYING and not a.dead
                                            for a in fleet.agents.values()):
                break
        fleet.step()
    assert taken_over_at is not None, fleet.events
    assert taken_over_at - killed_at < duration + OFFER_TIMEOUT_S, (taken_over_at - killed_at)
    assert not ahead, f"dead holders offered a slot while live nodes waited: {ahead[:3]}"
    assert all(a.state == TemplateState.APPLIED for a in fleet.agents.values() if not a.dead)


def test_a_node_whose_slot_expired_stays_at_the_back_once_its_lease_is_gone():
    now = 1000.0
    # Its expired Lease is seen: it counts as timed out from then on ...
    kept = offer_times({}, offered=set(), waiting={"dead", "live"}, expired={"dead"}, now=now)
    assert kept == {"dead": now - OFFER_TIMEOUT_S}
    # ... also after another node took the Lease over (no longer expired) ...
    later = offer_times(kept, offered={"live"}, waiting={"dead", "live"}, expired=set(),
                        now=now + 60)
    assert later == {"dead": now - OFFER_TIMEOUT_S, "live": now + 60}
    got = offers(TEMPLATE, waiting("dead", "live"), [], 1,
                 offered_for_s={n: now + 60 - t for n, t in later.items() if n == "dead"})
    assert got == [{"node": "live", "slot": 0}]
    # ... until it claims a slot (it is alive): it starts afresh.
    assert offer_times(later, offered={"live"}, waiting={"live"}, expired=set(),
                       now=now + 70) == {"live": now + 60}


def test_an_offered_node_that_is_dead_does_not_hold_the_rollout_up():
    fleet = Fleet(30, limit=3)
    check(fleet.run(at={0.05: lambda: bool(fleet.offered)
                        and fleet.kill(next(iter(fleet.offered)))}), limit=3)


def test_a_node_deleted_while_holding_a_slot():
    fleet = Fleet(30, limit=3)
    result = fleet.run(at={2: lambda: applying(fleet) is not None
                           and fleet.delete_node(applying(fleet))})
    check(result, limit=3)
    assert result.applied == 29


def test_a_forged_offer_list_never_exceeds_the_limit():
    """Every waiting node offered a slot, most beyond the limit: the limit still holds."""
    fleet = Fleet(30, limit=3)
    fleet.stop_writer()

    def forge():
        fleet.offered = {name: i for i, name in enumerate(fleet.agents)}
    result = fleet.run(at={0: forge})
    assert result.completed and result.most_at_once <= 3
    assert fleet.api.written == {rollout.slot_name("mtu", i) for i in range(3)}


def test_only_a_change_of_its_own_offer_wakes_a_node():
    """cluster.py template_changed: the writer's status writes reach every agent's template
    watch; a node runs a pass only when a slot is offered to it anew (or the spec changed): an
    offer withdrawn (the node applied, or its offer timed out) wakes nobody."""
    from plumber_agent.cluster import template_changed

    def with_offers(offered: list[dict], generation: int = 1) -> dict:
        obj = template_object(3, generation=generation)
        return {**obj, "status": {"observedGeneration": generation,
                                  "rollout": {"offered": offered}}}
    old = with_offers([{"node": "a", "slot": 0}])
    others = with_offers([{"node": "a", "slot": 0}, {"node": "b", "slot": 1}])
    assert not template_changed("MODIFIED", old, others, node="a")
    assert template_changed("MODIFIED", old, others, node="b")
    assert not template_changed("MODIFIED", others, with_offers([]), node="b")
    assert template_changed("MODIFIED", others, with_offers([{"node": "b", "slot": 2}]), node="b")
    assert template_changed("MODIFIED", old, with_offers([{"node": "a", "slot": 0}], 2),
                            node="c")


def test_the_cluster_count_is_read_rarely_and_a_failure_means_the_careful_limit():
    """A percentage's bound on an agent (gate.limit_of): one count, cached; a failed count is
    None (the gate then uses 1) and is not retried at once."""
    from plumber_agent.clock import FakeClock
    from plumber_agent.fleet.slots import (CLUSTER_COUNT_RETRY_S, CLUSTER_COUNT_TTL_S,
                                           LeaseSlots)
    answers = [RuntimeError("API down"), 40, 41]
    calls = []

    def count() -> int:
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    clock = FakeClock()
    slots = LeaseSlots(client=None, namespace="ns", node="n1", node_uid=str, store=dict,
                       read_slots=list, clock=clock, wake=lambda _s: None, count_nodes=count)
    assert slots.cluster_nodes() is None and slots.cluster_nodes() is None
    assert len(calls) == 1
    clock.advance(CLUSTER_COUNT_RETRY_S)
    assert slots.cluster_nodes() == 40 == slots.cluster_nodes()
    assert len(calls) == 2
    clock.advance(CLUSTER_COUNT_TTL_S)
    assert slots.cluster_nodes() == 41


def test_nodes_an_edit_stopped_selecting_are_offered_slots_but_not_counted():
    """A nodeSelector typo: the nodes that applied the template wait for slots to undo it
    (fleet/gate.py); the writer offers them slots under the limit, and matching stays 0."""
    obj = template_object(2, generation=2)
    obj["spec"]["nodeSelector"] = {"kubernetes.io/oss": "linux"}
    template = template_from_object(obj)
    nodes = [{"metadata": {"name": f"n{i}", "labels": {"kubernetes.io/os": "linux"}}}
             for i in range(4)]
    entry = {"observedGeneration": 2, "state": "Waiting"}
    hostnetworks = {f"n{i}": {"results": {"mtu": dict(entry)}} for i in range(3)}
    hostnetworks["n3"] = {"results": {"mtu": {"observedGeneration": 1, "state": "Waiting"}}}
    result = aggregate(template, nodes=nodes, hostnetworks=hostnetworks, slots=[],
                       previous=None, now="2026-01-01T00:00:00Z")
    assert result.status["nodes"]["matching"] == 0
    offered = result.status["rollout"]["offered"]
    assert len(offered) == 2 and {o["node"] for o in offered} < {"n0", "n1", "n2"}, offered
