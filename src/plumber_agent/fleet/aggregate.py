"""A template's status from the live per-node results: pure, recomputed from scratch each time.

Inputs are what the status writer's watches hold: the template, the Nodes (who matches), every
HostNetwork's result summary (what each node reports for the template, fleet/results.py) and
the slot Leases (who is applying,
who failed holding a slot). There is no stored counter to get stuck: after a writer dies, its
successor computes the same status from the same objects (docs/rollout.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.fleet import rollout
from plumber_agent.fleet.rollout import Slot
from plumber_agent.models.fleet import resolve_max_unavailable, selects
from plumber_agent.models.spec import Template
from plumber_agent.models.status import TemplateState
from plumber_agent.pools.pool import pool_uses

MAX_FAILING_NODES = 10
FAILING = (TemplateState.FAILED, TemplateState.CONFLICT, TemplateState.INVALID)
UNKNOWN = "Unknown"

PHASE_AVAILABLE = "Available"
PHASE_PROGRESSING = "Progressing"
PHASE_DEGRADED = "Degraded"
PHASE_HALTED = "Halted"
PHASE_DRY_RUN = "DryRun"

# Event (reason, type) when the template enters a phase.
PHASE_EVENTS = {PHASE_HALTED: ("RolloutHalted", "Warning"),
                PHASE_DEGRADED: ("RolloutDegraded", "Warning"),
                PHASE_AVAILABLE: ("RolloutComplete", "Normal")}


@dataclass
class NodeResult:
    node: str
    state: str  # a TemplateState, or UNKNOWN
    message: str = ""
    planned: int = 0  # plannedActionCount of a Previewed/Waiting entry
    slot: str = ""


@dataclass
class Aggregate:
    status: dict
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, type, message)
    nodes: list[NodeResult] = field(default_factory=list)
    offered: list[dict] = field(default_factory=list)  # status.rollout.offered
    expired: set[str] = field(default_factory=set)  # expired_holders (the writer's offer_times)


OFFERABLE = (TemplateState.WAITING, UNKNOWN)


def expired_holders(template: Template, slots: list[Slot]) -> set[str]:
    """The nodes whose `Applying` slot of this rollout expired: they stopped renewing it (the
    agent died mid-apply or lost the API server) while their own last report still says
    Waiting, so only their Lease tells the writer they are gone."""
    identity = rollout.template_spec_hash(template)
    live = {s.holder for s in rollout.taken_slots(template, slots)}
    return {s.holder for s in slots
            if s.template_uid == template.uid and s.spec_hash == identity
            and s.phase == TemplateState.APPLYING and s.holder not in live}


def offers(template: Template, results: list[NodeResult], slots: list[Slot], limit: int, *,
           offered_for_s: Optional[dict[str, float]] = None,
           expired: Optional[set[str]] = None) -> list[dict]:
    """`status.rollout.offered`: which waiting nodes may try which free slot next, one node per
    free slot (`rollout.free_indexes`: below `limit`, a holder counted once) (docs/rollout.md).
    The order is the rollout's rank (a hash of the rollout and the node name, stable across
    writers); Waiting nodes before ones not reported yet. At the back: a node offered for
    OFFER_TIMEOUT_S without claiming (`offered_for_s`: since when it is offered, by the
    writer's clock; `offer_times` keeps it so), so a dead agent does not hold a slot up, and a
    node whose slot expired (`expired`: `expired_holders`, computed here unless the caller has
    it), which is most likely dead too: offered first, every such node would keep a free slot
    from the live nodes for OFFER_TIMEOUT_S."""
    spec = template.spec
    if spec is None or spec.rollout.dry_run or spec.rollout.max_unavailable == "100%":
        return []
    live = rollout.taken_slots(template, slots)
    holders = {s.holder for s in live}
    free = rollout.free_indexes(template.name, live, limit)
    if not free:
        return []
    if expired is None:
        expired = expired_holders(template, slots)
    rollout_id = f"{template.uid}/{rollout.template_spec_hash(template)}"
    ages = offered_for_s or {}
    candidates = sorted(
        (r for r in results if r.state in OFFERABLE and r.node not in holders),
        key=lambda r: (r.node in expired or ages.get(r.node, 0.0) >= rollout.OFFER_TIMEOUT_S,
                       r.state != TemplateState.WAITING, rollout.rollout_rank(rollout_id, r.node),
                       r.node))
    return [{"node": r.node, "slot": index} for r, index in zip(candidates, free)]


def offer_times(previous: dict[str, float], *, offered: set[str], waiting: set[str],
                expired: set[str], now: float) -> dict[str, float]:
    """Since when each node counts as offered (the writer's monotonic clock), for the next
    `offers`: kept while it stays offered; kept for a node that timed out while it still
    waits (else it would come back to the front at once); and a node whose slot expired counts
    as timed out from then on, so it stays at the back once another node took its Lease over
    and the Lease is gone. A node that claims a slot (no longer waiting) starts afresh."""
    kept = {}
    for node in waiting:
        since = previous.get(node)
        if node in expired and (since is None or now - since < rollout.OFFER_TIMEOUT_S):
            since = now - rollout.OFFER_TIMEOUT_S
        if node in offered:
            kept[node] = now if since is None else since
        elif since is not None and now - since >= rollout.OFFER_TIMEOUT_S:
            kept[node] = since
    return kept


def node_labels(node: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in
            (((node.get("metadata") or {}).get("labels")) or {}).items()}


def template_entry(hostnetwork: Optional[dict], name: str) -> Optional[dict]:
    """The node's result for template `name` from its HostNetwork as the writer keeps it
    (fleet/results.py compact_hostnetwork: the parsed template-results annotation)."""
    entry = ((hostnetwork or {}).get("results") or {}).get(name)
    return entry if isinstance(entry, dict) else None


def node_results(template: Template, nodes: list[dict], hostnetworks: dict[str, dict],
                 slots: list[Slot]) -> list[NodeResult]:
    """One result per node the template selects, from its HostNetwork and the slot Leases."""
    selector = template.spec.node_selector if template.spec else None
    live = {s.holder: s for s in rollout.taken_slots(template, slots)}
    results = []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name") or "")
        if selector is not None and not selects(selector, node_labels(node)):
            continue
        entry = template_entry(hostnetworks.get(name), template.name)
        slot = live.get(name)
        result = NodeResult(node=name, state=UNKNOWN, slot=slot.name if slot else "")
        if entry is not None and entry.get("observedGeneration") == template.generation \
                and entry.get("state") != TemplateState.NOT_SELECTED:
            result.state = str(entry.get("state"))
            result.message = str(entry.get("message") or "")
            result.planned = int(entry.get("plannedActionCount") or 0)
        if slot is not None and slot.phase == TemplateState.APPLYING and result.state not in FAILING \
                and result.state != TemplateState.APPLIED:
            result.state = TemplateState.APPLYING
        results.append(result)
    return sorted(results, key=lambda r: r.node)


def leaving_results(template: Template, nodes: list[dict],
                    hostnetworks: dict[str, dict]) -> list[NodeResult]:
    """Nodes the template no longer selects that wait for a slot to undo it (an edit that
    stopped selecting them, fleet/gate.py): offered slots like the selected ones, never counted
    as matching."""
    selector = template.spec.node_selector if template.spec else None
    if selector is None:
        return []
    out = []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name") or "")
        if selects(selector, node_labels(node)):
            continue
        entry = template_entry(hostnetworks.get(name), template.name)
        if entry is not None and entry.get("observedGeneration") == template.generation \
                and entry.get("state") == TemplateState.WAITING:
            out.append(NodeResult(node=name, state=TemplateState.WAITING))
    return sorted(out, key=lambda r: r.node)


def _condition(previous: dict, type_: str, status: bool, reason: str, message: str,
               generation: int, now: str) -> dict:
    old = previous.get(type_) or {}
    value = "True" if status else "False"
    return {"type": type_, "status": value, "reason": reason, "message": message[:1024],
            "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == value
            and old.get("lastTransitionTime") else now,
            "observedGeneration": generation}


def aggregate(template: Template, *, nodes: list[dict], hostnetworks: dict[str, dict],
              slots: list[Slot], previous: Optional[dict], now: str,
              claimed: Optional[dict[str, int]] = None,
              offered_for_s: Optional[dict[str, float]] = None) -> Aggregate:
    """The whole `status` of `template` (see docs/rollout.md) and the Events its change calls
    for. `previous` is the status the object has now (condition times carry over); `claimed`
    counts the AddressClaims per pool id (docs/address-pools.md); `offered_for_s` is how long
    each node has been offered a slot (`offers`). The limit is resolved from the spec and the
    matching nodes only: never read back from a status."""
    previous = previous or {}
    results = node_results(template, nodes, hostnetworks, slots)
    count = {state: 0 for state in ("Applied", "Failed", "Conflict", "Invalid", "Waiting",
                                    "Applying", "Previewed", UNKNOWN)}
    for result in results:
        count[result.state if result.state in count else UNKNOWN] += 1
    matching = len(results)
    spec = template.spec
    dry_run = bool(spec and spec.rollout.dry_run)
    limit = resolve_max_unavailable(spec.rollout.max_unavailable if spec else 1, matching)
    failed_slots = len({s.holder for s in rollout.taken_slots(template, slots)
                        if s.phase == TemplateState.FAILED})  # failed nodes: one place each
    failing = [r for r in results if r.state in FAILING]
    pending = count["Waiting"] + count["Applying"] + count[UNKNOWN]
    halted = not dry_run and count["Waiting"] > 0 and failed_slots >= limit
    # No node can claim at all: nobody applies while free slots exist, and the waiting nodes
    # that tried say their claim failed (a missing namespace, RBAC, ...: slots.py names it).
    cannot_claim = [] if dry_run or halted or count["Applying"] else [
        r for r in results if r.state == TemplateState.WAITING
        and r.message.startswith(rollout.CLAIM_ERROR_PREFIX)]
    if dry_run:
        phase = PHASE_DRY_RUN
    elif halted:
        phase = PHASE_HALTED
    elif pending:
        phase = PHASE_PROGRESSING
    elif failing:
        phase = PHASE_DEGRADED
    else:
        phase = PHASE_AVAILABLE

    gen = template.generation
    old_conditions = {c.get("type"): c for c in previous.get("conditions") or []
                      if isinstance(c, dict)}
    applied_msg = f"{count['Applied']} of {matching} nodes applied"
    if dry_run:
        would = sum(1 for r in results if r.state == TemplateState.PREVIEWED and r.planned)
        available = _condition(old_conditions, "Available", False, "DryRun",
                               f"dry run: {would} of {matching} nodes would change", gen, now)
    elif count["Applied"] == matching:
        available = _condition(old_conditions, "Available", True,
                               "AllNodesApplied" if matching else "NoMatchingNodes",
                               applied_msg, gen, now)
    else:
        available = _condition(old_conditions, "Available", False,
                               "RolloutHalted" if halted else "NotAllNodesApplied",
                               applied_msg, gen, now)
    progress_msg = (f"{count['Applied']} applied, {count['Applying']} applying, "
                    f"{count['Waiting']} waiting, {count[UNKNOWN]} not reported, of {matching}")
    if dry_run:
        progressing = _condition(old_conditions, "Progressing", False, "DryRun",
                                 progress_msg, gen, now)
    elif halted:
        progressing = _condition(old_conditions, "Progressing", False, "RolloutHalted",
                                 progress_msg, gen, now)
    else:
        progressing = _condition(old_conditions, "Progressing", bool(pending),
                                 "RollingOut" if pending else "RolloutFinished",
                                 progress_msg, gen, now)
    details = "; ".join(f"{r.node}: {r.state}" + (f": {r.message}" if r.message else "")
                        for r in failing[:3])
    if halted:
        degraded = _condition(old_conditions, "Degraded", True, "RolloutHalted",
                              f"the rollout stopped: {failed_slots} node(s) failed and "
                              f"maxUnavailable is {limit}; fix the template to go on. {details}",
                              gen, now)
    elif cannot_claim:
        degraded = _condition(old_conditions, "Degraded", True, "SlotClaimsFailing",
                              f"no node can claim a rollout slot: {len(cannot_claim)} waiting "
                              f"node(s) report it; {cannot_claim[0].node}: "
                              f"{cannot_claim[0].message}", gen, now)
    elif failing:
        reason = {TemplateState.FAILED: "NodesFailed", TemplateState.CONFLICT: "NodesInConflict",
                  TemplateState.INVALID: "TemplateInvalid"}[failing[0].state]
        degraded = _condition(old_conditions, "Degraded", True, reason,
                              f"{len(failing)} node(s) not applied: {details}", gen, now)
    else:
        degraded = _condition(old_conditions, "Degraded", False, "NoFailures",
                              "no node failed", gen, now)

    status = {
        "observedGeneration": gen,
        "phase": phase,
        "maxUnavailable": limit,
        "nodes": {"matching": matching, "applied": count["Applied"], "failed": count["Failed"],
                  "conflict": count["Conflict"], "invalid": count["Invalid"],
                  "waiting": count["Waiting"], "applying": count["Applying"],
                  "previewed": count["Previewed"],
                  "wouldChange": sum(1 for r in results
                                     if r.state == TemplateState.PREVIEWED and r.planned),
                  "unknown": count[UNKNOWN]},
        "conditions": [available, progressing, degraded],
    }
    leaving = leaving_results(template, nodes, hostnetworks)
    offer_limit = resolve_max_unavailable(spec.rollout.max_unavailable if spec else 1,
                                          matching + len(leaving)) if leaving else limit
    expired = expired_holders(template, slots)
    offered = offers(template, results + leaving, slots, offer_limit,
                     offered_for_s=offered_for_s, expired=expired)
    status["rollout"] = {"offered": offered}
    uses = pool_uses(template)
    if uses:
        status["pools"] = [{"interface": use.interface, "family": use.pool.family,
                            "cidr": use.pool.cidr, "size": use.pool.size,
                            "allocated": (claimed or {}).get(use.pool_id, 0)} for use in uses]
    if failing:
        status["failingNodes"] = [{"node": r.node, "state": r.state,
                                   **({"message": r.message[:1024]} if r.message else {})}
                                  for r in failing[:MAX_FAILING_NODES]]
    events = []
    if phase != previous.get("phase") and phase in PHASE_EVENTS \
            and not (phase == PHASE_AVAILABLE and not previous):
        reason, kind = PHASE_EVENTS[phase]
        message = {PHASE_HALTED: degraded["message"], PHASE_DEGRADED: degraded["message"],
                   PHASE_AVAILABLE: f"generation {gen}: {applied_msg}"}[phase]
        events.append((reason, kind, message))
    return Aggregate(status=status, events=events, nodes=results, offered=offered,
                     expired=expired)


def status_patch(old: Optional[dict], new: dict) -> Optional[dict]:
    """The merge patch taking `old` to `new` (None when equal): whole values, and null for a
    key `new` dropped (RFC 7386)."""
    old = old or {}
    if old == new:
        return None
    patch = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
