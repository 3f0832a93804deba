"""May this node apply a new generation of a template now? The pure decision over slot Leases.

A rollout slot is a Lease named `rollout-<template>-<i>`, i < maxUnavailable (docs/rollout.md).
Nothing here is a counter that could get stuck (kubernetes-nmstate's unavailable-node counter did
after an interrupted apply): whether a slot is taken is decided from the live Leases every time,
and every way a slot can end is one of the rules in `slot_taken`:
- the template's network spec was edited, or the template recreated (the spec hash or the uid
  differ): the slot is free. Not the generation: an edit of `spec.rollout` alone (raising the
  limit, a dry run) is not a new rollout, so failed nodes keep counting;
- the holder is applying and its Lease has not changed for its duration, as seen on the reader's
  own monotonic clock (client-go's leader election rule, so clocks of nodes never compare): the
  holder died mid-apply, the slot is free;
- the holder failed: the slot stays taken (the node counts against the limit until it succeeds
  or the template changes); a deleted node's slots are deleted by the garbage collector (the
  Lease is owned by the Node).
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from plumber_agent.models.spec import Template, network_spec_dict
from plumber_agent.models.status import TemplateState

ANNOTATION_PREFIX = "plumber.k8s.pf9.io/"
TEMPLATE_ANNOTATION = ANNOTATION_PREFIX + "template"
TEMPLATE_UID_ANNOTATION = ANNOTATION_PREFIX + "template-uid"
GENERATION_ANNOTATION = ANNOTATION_PREFIX + "generation"
SPEC_HASH_ANNOTATION = ANNOTATION_PREFIX + "spec-hash"
PHASE_ANNOTATION = ANNOTATION_PREFIX + "phase"
MESSAGE_ANNOTATION = ANNOTATION_PREFIX + "message"
LEASE_ROLE_LABEL = ANNOTATION_PREFIX + "lease"
SLOT_ROLE = "rollout-slot"
SLOT_SELECTOR = f"{LEASE_ROLE_LABEL}={SLOT_ROLE}"
AGENT_LEASES_SELECTOR = LEASE_ROLE_LABEL  # slots and the status writer's leader Lease
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "plumber-agent"

# A waiter takes an Applying slot over only after its full duration plus this since the last
# change it saw (its own monotonic clock). The holder stops starting host actions at 2/3 of the
# duration after it SENT its last confirmed write (slots.RENEW_DEADLINE_FRACTION), and a waiter
# sees that write only after it was sent, so the gap is at least duration/3 + this margin. The
# margin covers what the fraction cannot scale with: the time between the holder's fence check
# and the host change it guards (a starved thread on a loaded node) and the granularity of leaseDurationSeconds (whole seconds).
TAKEOVER_MARGIN_S = 1.0

# Every per-node message about a slot claim that failed (not lost: a 409) starts so; the status
# writer reads it to tell "no node can claim at all" (aggregate: Degraded SlotClaimsFailing).
CLAIM_ERROR_PREFIX = "cannot claim a rollout slot: "
MAX_MESSAGE = 1024
MAX_NAME = 253  # a Lease name is a DNS subdomain


def spec_hash(network_spec: dict) -> str:
    """The identity of a rollout: a hash of the template's network spec (`network_spec_dict`)."""
    text = json.dumps(network_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def template_spec_hash(template: Template) -> str:
    """The rollout identity of a template as it is now ("" for an invalid one)."""
    return spec_hash(network_spec_dict(template.spec)) if template.spec else ""


def slot_name(template: str, index: int) -> str:
    """`rollout-<template>-<i>`; a template name too long for that is cut and hashed."""
    name = f"rollout-{template}-{index}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(template.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(f"rollout--{digest}-{index}")
    return f"rollout-{template[:keep].rstrip('.-')}-{digest}-{index}"


@dataclass(frozen=True)
class Slot:
    """One slot Lease, as read (see `slot_from_lease`)."""

    name: str
    holder: str
    template: str
    template_uid: str
    generation: int  # for people and the status writer's clean-up; not the rollout's identity
    phase: str
    message: str = ""
    spec_hash: str = ""
    resource_version: str = ""
    duration_s: float = 30.0
    unchanged_for_s: float = 0.0  # since this reader first saw the Lease at resource_version


def slot_from_lease(obj: dict, *, unchanged_for_s: float) -> Optional[Slot]:
    """A Slot from a Lease object (a plain dict); None when it is not a well-formed slot."""
    meta = obj.get("metadata") or {}
    notes = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    try:
        generation = int(notes.get(GENERATION_ANNOTATION, ""))
        duration = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        return None
    if not meta.get("name") or not spec.get("holderIdentity") or duration <= 0:
        return None
    return Slot(name=str(meta["name"]), holder=str(spec["holderIdentity"]),
                template=str(notes.get(TEMPLATE_ANNOTATION, "")),
                template_uid=str(notes.get(TEMPLATE_UID_ANNOTATION, "")),
                generation=generation, phase=str(notes.get(PHASE_ANNOTATION, TemplateState.APPLYING)),
                message=str(notes.get(MESSAGE_ANNOTATION, "")),
                spec_hash=str(notes.get(SPEC_HASH_ANNOTATION, "")),
                resource_version=str(meta.get("resourceVersion") or ""),
                duration_s=duration, unchanged_for_s=unchanged_for_s)


def slot_taken(slot: Slot, *, template_uid: str, spec_hash: str) -> bool:
    """Does this Lease hold a slot of this rollout (template uid and network spec)?"""
    if slot.template_uid != template_uid or slot.spec_hash != spec_hash:
        return False  # another rollout (or a deleted template of the same name)
    if slot.phase == TemplateState.FAILED:
        return True  # until the node succeeds, the template changes, or the node is deleted
    # An applying holder that went quiet for its duration and the margin: expired.
    return slot.unchanged_for_s < slot.duration_s + TAKEOVER_MARGIN_S


def taken_slots(template: Template, slots: Iterable[Slot]) -> list[Slot]:
    """The slots held for this template's current rollout."""
    identity = template_spec_hash(template)
    return [s for s in slots if slot_taken(s, template_uid=template.uid, spec_hash=identity)]


def counted_slots(live: Iterable[Slot]) -> list[Slot]:
    """The live slots of one rollout that count against its limit: one per holder, its first by
    name. A node needs one slot; more in one name are a squatter's (or a create retried after
    its answer was lost), and counting them would let one agent hold every place of a rollout:
    an admission policy sees one Lease and cannot count the others (docs/rollout.md
    "Admission")."""
    first: dict[str, Slot] = {}
    for slot in sorted(live, key=lambda s: s.name):
        first.setdefault(slot.holder, slot)
    return list(first.values())


def free_indexes(template: str, live: list[Slot], limit: int) -> list[int]:
    """The slot indexes a node may claim: the limit's, plus one for every slot a holder has
    beyond its first (those names stay taken: a Failed one cannot be taken over), minus every
    name held."""
    held = {s.name for s in live}
    spare = len(live) - len(counted_slots(live))
    return [i for i in range(limit + spare) if slot_name(template, i) not in held]


@dataclass
class Admission:
    """The answer for one node and one rollout."""

    admit: bool
    limit: int
    mine: Optional[Slot] = None  # the slot this node already holds (admit)
    claim: Optional[str] = None  # a free slot to claim (admit, when `mine` is None)
    claim_over: Optional[Slot] = None  # the stale Lease under that name (None: create it)
    taken: list[Slot] = field(default_factory=list)  # slots held by other nodes
    reason: str = ""
    free: list[str] = field(default_factory=list)  # free slot names below the limit
    stale: dict[str, Slot] = field(default_factory=dict)  # the Leases under free names
    retry_after_s: Optional[float] = None  # look again then (an offer or a fallback turn is due)

    @property
    def halted(self) -> bool:
        """Every slot is held by a node whose apply failed: nothing moves until one is fixed."""
        return not self.admit and not self.free and bool(self.taken) \
            and all(s.phase == TemplateState.FAILED for s in self.taken)


def waiting_message(taken: list[Slot], limit: int) -> str:
    parts = []
    for slot in sorted(taken, key=lambda s: s.holder)[:5]:
        if slot.phase == TemplateState.FAILED:
            parts.append(f"{slot.holder} failed" + (f": {slot.message}" if slot.message else ""))
        else:
            parts.append(f"{slot.holder} applying")
    more = f", and {len(taken) - 5} more" if len(taken) > 5 else ""
    return (f"waiting for a rollout slot: {len(taken)} of maxUnavailable {limit} in use "
            f"({'; '.join(parts)}{more})")


def decide(*, node: str, template: str, template_uid: str, spec_hash: str, limit: int,
           slots: Iterable[Slot]) -> Admission:
    """May `node` apply `template`'s network spec `spec_hash` now, with at most `limit` nodes
    at once?

    The node's own slot (any index, also one above a lowered limit) admits it. Otherwise, while
    fewer than `limit` other nodes hold a slot (each counted once: `counted_slots`), a free
    index is offered to claim (`free_indexes`); which one is spread by the node's name so that
    nodes woken by the same release mostly try different slots."""
    limit = max(1, int(limit))
    by_name = {slot.name: slot for slot in slots}
    live = [s for s in by_name.values()
            if slot_taken(s, template_uid=template_uid, spec_hash=spec_hash)]
    for slot in live:
        if slot.holder == node:
            return Admission(admit=True, limit=limit, mine=slot, reason="holds " + slot.name)
    others = [s for s in live if s.holder != node]
    taken = counted_slots(others)
    free = [slot_name(template, i) for i in free_indexes(template, others, limit)]
    if len(taken) >= limit or not free:
        return Admission(admit=False, limit=limit, taken=taken,
                         reason=waiting_message(taken, limit))
    claim = free[zlib.crc32(node.encode()) % len(free)]
    return Admission(admit=True, limit=limit, claim=claim, claim_over=by_name.get(claim),
                     taken=taken, reason="claims " + claim, free=free,
                     stale={name: by_name[name] for name in free if name in by_name})


# -- who may try a free slot: the writer's offers, else ranked waiting (docs/rollout.md) --------

OFFER_TIMEOUT_S = 10.0  # the writer passes an unclaimed offer on to the next node after this
# A waiting node that sees a slot free this long without being offered it stops waiting for the
# writer: longer than a leader failover (15 s lease + 1 s coalescing) and than the writer's own
# offer timeout plus its coalescing, so a live writer always hands the slot out first.
FALLBACK_AFTER_S = 30.0
FALLBACK_SPREAD_S = 30.0  # the fallback turns of the waiting nodes spread over this
FALLBACK_JITTER = 0.05  # of the spread: two nodes of the same rank do not try in lockstep


def rollout_rank(rollout_id: str, node: str) -> float:
    """A node's place in a rollout's order, in [0, 1): a hash of the rollout and the node
    name, so every reader (the writer, every agent) computes the same order without talking,
    and a node is not first in every rollout."""
    digest = hashlib.sha256(f"{rollout_id}/{node}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def choose(admission: Admission, *, template: str, offered: Optional[int],
           free_for_s: dict[str, float], rank: float) -> Admission:
    """Narrow `decide`'s answer to at most one attempt at the right time (pure).

    - Offered slot i (by the status writer): try exactly slot i, if `decide` found it free
      under this node's own limit; a stale or forged offer of a taken slot costs nothing, one
      above the limit is ignored (the Lease create stays the lock: offers never widen the limit).
    - Not offered (or offered a slot that is not free): wait, unless some free slot has stayed
      free FALLBACK_AFTER_S on this node's
      clock (no writer hands slots out); then this node's turn comes `rank` of the
      FALLBACK_SPREAD_S later, and it tries one free slot.
    `free_for_s`: how long each free slot name has been seen free by this node (a node that
    already fell back counts FALLBACK_AFTER_S more for a slot freed since: slots.py)."""
    if admission.mine is not None or not admission.admit:
        return admission
    if offered is not None:
        name = slot_name(template, offered)
        if name in admission.free:  # free: a place below the limit (decide)
            return replace(admission, claim=name, claim_over=admission.stale.get(name),
                           reason=f"claims {name} (offered)")
    # Not offered, or offered a slot that is not free (a stale list): the fallback's rule.
    oldest = max((free_for_s.get(name, 0.0) for name in admission.free), default=0.0)
    turn = FALLBACK_AFTER_S + rank * FALLBACK_SPREAD_S
    if oldest >= turn:
        return replace(admission, reason=admission.reason + " (no offer: ranked fallback)")
    why = (f"offered slot {offered} is not free" if offered is not None
           else "waiting for the status writer to offer a slot")
    return replace(admission, admit=False, claim=None, claim_over=None,
                   reason=f"{waiting_message(admission.taken, admission.limit)}; {why}",
                   retry_after_s=max(0.0, turn - oldest))
