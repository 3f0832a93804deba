"""Rollout slots on coordination.k8s.io Leases: claim, release, mark failed, renew.

Every write is optimistic: a claim is a create (409 AlreadyExists: another node won) or a PUT
of the stale Lease at the resourceVersion read (409 Conflict: another node won); a release is
a DELETE with a resourceVersion precondition. A Lease is owned by the holder's Node, so the
garbage collector frees the slots of a deleted node. The reads come from a reflector (a watch
on the slot Leases) and the decision itself is `rollout.decide`.
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Callable, Optional

from plumber_agent.apierrors import ApiReason, Target, api_error_metric, classify, describe
from plumber_agent.clock import Clock, micro_time  # noqa: F401 - micro_time: tests read it here
from plumber_agent.fleet import rollout
from plumber_agent.fleet.rollout import Admission, Slot
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.kube.reflector import error_status, object_name
from plumber_agent.models.spec import Template
from plumber_agent.models.status import TemplateState
from plumber_agent.models.text import truncate
from plumber_agent.retry import RetryAfterGate

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 30
WAKE_MARGIN_S = 0.2
CLUSTER_COUNT_TTL_S = 300.0  # a percentage's bound: the cluster's node count, re-read this often
MAX_RANKS = 256  # rollouts whose rank this node remembers (a new jitter after that is harmless)
CLUSTER_COUNT_RETRY_S = 30.0  # after a failed count (meanwhile the limit is 1, the careful value)
# A node whose claims keep failing logs each kind of failure (per template) at most this often:
# a node stuck on a missing namespace retries every pass and must not flood the log.
CLAIM_WARNING_EVERY_S = 60.0
# Fencing (docs/rollout.md "Fencing"): a holder starts a host action only while its slot was
# confirmed, by a successful write SENT less than this fraction of the duration ago. client-go's
# leader election (tools/leaderelection/leaderelection.go: NewLeaderElector refuses
# renewDeadline >= leaseDuration; LeaderElector.renew gives up after RenewDeadline) uses 10 s of
# 15 s; the same 2/3 here. The other third (plus rollout.TAKEOVER_MARGIN_S) is what separates
# the holder's last start from the earliest takeover: it absorbs a host action started just
# before the deadline and clock rate differences (NTP slews a clock by at most 0.05 %).
RENEW_DEADLINE_FRACTION = 2 / 3
RENEW_AFTER_FRACTION = 1 / 3  # renew a slot whose last write is this old (3 tries per deadline)
LEASE_POLICY_FILE = "manifests/admission/lease_policy.yaml"
STALE_SLOT_POLICY_FILE = "manifests/admission/stale_slot_policy.yaml"


LEASES_RESOURCE = "leases.coordination.k8s.io"
SLOT_OPERATION = "rollout_slot"  # plumber_api_errors_total's operation label


def lease_write_problem(exc: BaseException, *, verb: str, namespace: str,
                        name: str) -> Optional[str]:
    """What a failed Lease write (`verb`: create, update, delete) means and how to fix it, for
    a person (apierrors.describe, plus the Lease admission policy for a 403); None for 409
    (another node won: no error) and for a 404 of an update or delete (the Lease was deleted
    meanwhile: by the status writer's clean-up or the garbage collector). Why: a claim error
    used to read "another node took it first" whatever it was (a missing namespace, RBAC),
    forever."""
    failure = classify(exc)
    if failure.reason == ApiReason.CONFLICT or (
            failure.reason in (ApiReason.NOT_FOUND, ApiReason.NAMESPACE_NOT_FOUND)
            and verb != "create"):
        return None
    problem = describe(failure, verb=verb, target=Target(
        LEASES_RESOURCE, name=name, namespace=namespace, namespaced_role=True))
    if failure.reason == ApiReason.FORBIDDEN:
        problem += (f"; the admission policy {LEASE_POLICY_FILE} lets an agent write only "
                    f"Leases whose holderIdentity is its own node and whose Node owns it, and the "
                    f"policy {STALE_SLOT_POLICY_FILE} lets it take over or delete a Failed slot "
                    f"held for others only once its template was deleted or edited")
    return problem


class LeaseSlots:
    """`gate.SlotClaims` over Leases in `namespace` (see module doc)."""

    def __init__(self, *, client, namespace: str, node: str, node_uid: Callable[[], str],
                 store: Callable[[], dict], read_slots: Callable[[], list[Slot]], clock: Clock,
                 wake: Callable[[float], None],
                 duration_s: float = DEFAULT_DURATION_S,
                 count_nodes: Optional[Callable[[], int]] = None,
                 rng: Optional[random.Random] = None, metrics=None) -> None:
        """`metrics`: an ops.Metrics counting failed slot writes by class
        (plumber_api_errors_total{operation="rollout_slot"})."""
        self.client, self.namespace, self.node = client, namespace, node
        self._metrics = metrics
        self._node_uid, self._store, self._clock, self._wake = node_uid, store, clock, wake
        self._read_slots = read_slots
        self.duration_s = duration_s
        self._lock = threading.Lock()  # the fields below
        self._writing = threading.RLock()  # one Lease write at a time (renewer vs reconciler)
        self._held: dict[str, dict] = {}  # template uid -> the Lease as last written by us
        # template uid -> monotonic time of that write: when the API server last confirmed our
        # hold. Fencing (a holder stops acting when this is older than a renew deadline) reads it.
        self._written_at: dict[str, float] = {}
        # template uid: a slot adopted from the cache after a restart, not confirmed by a write
        # of this process yet (fenced until the renewer's first write succeeds)
        self._unconfirmed: set[str] = set()
        self._gone: set[tuple[str, str]] = set()  # (name, resourceVersion) we deleted
        self._templates: dict[str, Template] = {}  # template uid -> the generation we hold for
        self._waiting: dict[str, tuple[Template, int]] = {}
        # -- who tries when (rollout.choose): no herd when a slot frees --
        self._count_nodes = count_nodes
        self._rng = rng or random.Random()
        self._ranks: dict[str, float] = {}  # rollout id -> this node's rank, jitter included
        self._free_since: dict[tuple[str, str], float] = {}  # (rollout id, slot) -> monotonic
        # rollout id -> (the offers seen when this node fell back, when): no writer hands slots
        # out while the offers stay so
        self._silent: dict[str, tuple[dict[str, int], float]] = {}
        self._nodes_count: Optional[tuple[int, float]] = None  # (count, read at)
        self._count_failed_at = float("-inf")
        self.attempts = 0  # claim writes sent (creates and takeovers): bench B7 counts them
        # A 429/5xx's Retry-After: no slot write until it is over (plumber_agent/retry.py).
        self._server_hold = RetryAfterGate()
        # template uid -> why the last claim failed (not a 409): the per-node Waiting message
        self._problems: dict[str, str] = {}
        self._warned: dict[tuple[str, str], float] = {}  # (what, kind) -> last warning (monotonic)

    # -- reading --------------------------------------------------------------------------
    def _slots(self) -> list[Slot]:
        """The watched slots, overlaid with our own writes (the watch may lag behind them)."""
        now = self._clock.monotonic()
        with self._lock:
            own = {lease["metadata"]["name"]: rollout.slot_from_lease(
                lease, unchanged_for_s=now - self._written_at.get(uid, now))
                for uid, lease in self._held.items()}
            gone = set(self._gone)
        slots = [s for s in self._read_slots()
                 if s.name not in own and (s.name, s.resource_version) not in gone]
        return slots + [s for s in own.values() if s is not None]

    def admission(self, template: Template, limit: int) -> Admission:
        """`rollout.decide`, narrowed by `rollout.choose`: try only an offered slot, or after
        this node's ranked turn once no writer hands a free slot out."""
        identity = template_spec_hash(template)
        answer = rollout.decide(node=self.node, template=template.name,
                                template_uid=template.uid, spec_hash=identity,
                                limit=limit, slots=self._slots())
        rollout_id = f"{template.uid}/{identity}"
        now = self._clock.monotonic()
        with self._lock:
            rank = self._ranks.get(rollout_id)
            if rank is None:
                rank = rollout.rollout_rank(rollout_id, self.node) \
                    + self._rng.random() * rollout.FALLBACK_JITTER
                if len(self._ranks) >= MAX_RANKS:  # rollouts long over
                    self._ranks.clear()
                self._ranks[rollout_id] = rank
            free = set(answer.free)
            for key in [k for k in self._free_since if k[0] == rollout_id and k[1] not in free]:
                del self._free_since[key]
            since = {name: self._free_since.setdefault((rollout_id, name), now) for name in free}
            silent = self._silent.get(rollout_id)
            if silent is not None and silent[0] != template.offered:
                del self._silent[rollout_id]  # the writer wrote offers again: it is back
                silent = None
            if silent is None and since and now - min(since.values()) >= rollout.FALLBACK_AFTER_S:
                if len(self._silent) >= MAX_RANKS:
                    self._silent.clear()
                silent = self._silent[rollout_id] = (dict(template.offered), now)
            # Fallen back: a slot freed since then has waited for the writer long enough already.
            free_for = {name: now - at + (rollout.FALLBACK_AFTER_S
                                          if silent is not None and at >= silent[1] else 0.0)
                        for name, at in since.items()}
        return rollout.choose(answer, template=template.name,
                              offered=template.offered.get(self.node), free_for_s=free_for,
                              rank=rank)

    def drain_admission(self, template: Template, limit: int) -> Admission:
        """`rollout.decide` alone: a drain outside a rollout (gate.py `drain_slot`) tries a
        free slot at once rather than waiting for an offer or its ranked turn."""
        return rollout.decide(node=self.node, template=template.name, template_uid=template.uid,
                              spec_hash=template_spec_hash(template), limit=limit,
                              slots=self._slots())

    def _lost(self, template: Template) -> None:
        """A claim lost: others are trying too, so this node's wait starts over (its ranked
        turn comes again from now, not at once: a loser must not try every free slot in turn)."""
        rollout_id = f"{template.uid}/{template_spec_hash(template)}"
        now = self._clock.monotonic()
        with self._lock:
            for key in self._free_since:
                if key[0] == rollout_id:
                    self._free_since[key] = now

    def cluster_nodes(self) -> Optional[int]:
        """How many Nodes the cluster has (bounds a percentage limit; gate.limit_of), read at
        most every CLUSTER_COUNT_TTL_S; None when unknown."""
        now = self._clock.monotonic()
        with self._lock:
            known = self._nodes_count
        if known is not None and now - known[1] < CLUSTER_COUNT_TTL_S:
            return known[0]
        if self._count_nodes is None or now - self._count_failed_at < CLUSTER_COUNT_RETRY_S:
            return known[0] if known else None
        try:
            count = int(self._count_nodes())
        except Exception as exc:  # noqa: BLE001 - the careful limit until the next try
            log.warning("cannot count the cluster's nodes (a percentage limit stays %s): %s",
                        known[0] if known else 1, exc)
            self._count_failed_at = now
            return known[0] if known else None
        with self._lock:
            self._nodes_count = (count, now)
        return count

    def wait_hint_s(self, admission: Admission) -> Optional[float]:
        """When the first slot held by an applying node would expire (a failed one does not),
        or this node's fallback turn comes, whichever is first."""
        left = [s.duration_s + rollout.TAKEOVER_MARGIN_S - s.unchanged_for_s
                for s in admission.taken
                if s.phase == TemplateState.APPLYING]
        if admission.retry_after_s is not None:
            left.append(admission.retry_after_s)
        return max(0.0, min(left)) + WAKE_MARGIN_S if left else None

    # -- writing --------------------------------------------------------------------------
    def _body(self, template: Template, *, phase: str, message: str = "",
              over: Optional[dict] = None, name: Optional[str] = None) -> dict:
        now = micro_time(self._clock.time())
        old_spec = (over or {}).get("spec") or {}
        same_holder = old_spec.get("holderIdentity") == self.node
        transitions = int(old_spec.get("leaseTransitions") or 0) + (0 if same_holder or not over else 1)
        notes = {rollout.TEMPLATE_ANNOTATION: template.name,
                 rollout.TEMPLATE_UID_ANNOTATION: template.uid,
                 rollout.GENERATION_ANNOTATION: str(template.generation),
                 rollout.SPEC_HASH_ANNOTATION: template_spec_hash(template),
                 rollout.PHASE_ANNOTATION: phase}
        if message:
            notes[rollout.MESSAGE_ANNOTATION] = truncate(message, rollout.MAX_MESSAGE)
        meta = {"name": name or over["metadata"]["name"], "namespace": self.namespace,
                "labels": {rollout.LEASE_ROLE_LABEL: rollout.SLOT_ROLE,
                           rollout.MANAGED_BY_LABEL: rollout.MANAGED_BY},
                "annotations": notes}
        uid = self._node_uid()
        if uid:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.node,
                                        "uid": uid}]
        if over is not None:
            meta["resourceVersion"] = over["metadata"]["resourceVersion"]
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": int(self.duration_s),
                "acquireTime": old_spec.get("acquireTime") if same_holder else now,
                "renewTime": now, "leaseTransitions": transitions}
        if not spec["acquireTime"]:
            spec["acquireTime"] = now
        return {"metadata": meta, "spec": spec}

    @property
    def renew_deadline_s(self) -> float:
        return self.duration_s * RENEW_DEADLINE_FRACTION

    def _remember(self, template: Template, lease: dict, *, sent_at: Optional[float]) -> None:
        """Keep our Lease as written. `sent_at`: the monotonic time the write was SENT, not
        answered: the server may have applied it at any instant in between, and every other
        node's clock for it starts after that, so this is the safe end to measure from. None:
        adopted from the cache (not confirmed by us)."""
        with self._lock:
            # A Lease holds one template's slot: the same name written for another uid (a
            # template re-created under its name took it over) leaves no slot of that uid.
            name = lease["metadata"]["name"]
            for uid in [uid for uid, held in self._held.items()
                        if uid != template.uid and held["metadata"]["name"] == name]:
                self._forget_locked(uid)
            self._held[template.uid] = lease
            self._templates[template.uid] = template
            if sent_at is None:
                self._written_at.setdefault(template.uid, self._clock.monotonic())
                self._unconfirmed.add(template.uid)
            else:
                self._written_at[template.uid] = sent_at
                self._unconfirmed.discard(template.uid)

    def fence(self, template: Template) -> Optional[str]:
        """None while this node may start a host action of `template` under its slot: the slot
        is Failed (a Failed slot never expires, so no one can take it over), or its last
        successful write was sent less than the renew deadline ago. Else why not, for the
        per-node message: the executor asks before every action (gate.may_start)."""
        now = self._clock.monotonic()
        with self._lock:
            lease = self._held.get(template.uid)
            at = self._written_at.get(template.uid)
            unconfirmed = template.uid in self._unconfirmed
        if lease is None:
            return (f"this node no longer holds a rollout slot for {template.name} (another "
                    f"node took it over or it was deleted); it waits for a slot again")
        name = lease["metadata"]["name"]
        if (lease["metadata"].get("annotations") or {}).get(
                rollout.PHASE_ANNOTATION) == TemplateState.FAILED:
            return None
        if unconfirmed:
            return (f"rollout slot {name} not confirmed by the API server since this agent "
                    f"started; retrying once it is")
        age = now - at if at is not None else float("inf")
        if age >= self.renew_deadline_s:
            return (f"rollout slot {name} last confirmed {age:.1f} s ago, past the renew "
                    f"deadline of {self.renew_deadline_s:g} s (slot duration {self.duration_s:g} "
                    f"s): the API server did not confirm this node's renewals in time, so "
                    f"another node may take the slot over; retrying once it is confirmed")
        return None

    def claim(self, template: Template, admission: Admission) -> bool:
        if admission.mine is not None:
            with self._lock:
                known = self._held.get(template.uid)
            if known is None:  # ours from before a restart: adopt it from the cache
                for obj in self._store().values():
                    if object_name(obj) == admission.mine.name:
                        self._remember(template, obj, sent_at=None)
            return True
        over = None
        if admission.claim_over is not None:
            over = next((o for o in self._store().values()
                         if object_name(o) == admission.claim), None)
            with self._lock:
                mine = next((lease for lease in self._held.values()
                             if lease["metadata"]["name"] == admission.claim), None)
            over = mine or over
        held_s = self._server_hold.remaining_s(self._clock.monotonic())
        if held_s > 0:
            self._wake(held_s)  # try again once the server's pause is over
            return False
        with self._writing:
            self.attempts += 1
            sent_at = self._clock.monotonic()
            try:
                if over is None:
                    lease = self.client.create_lease(self.namespace, self._body(
                        template, phase=TemplateState.APPLYING, name=admission.claim))
                else:
                    lease = self.client.replace_lease(self.namespace, admission.claim, self._body(
                        template, phase=TemplateState.APPLYING, over=over))
            except Exception as exc:  # noqa: BLE001 - 409: someone else won; else named
                problem = lease_write_problem(exc, verb="create" if over is None else "update",
                                              namespace=self.namespace, name=admission.claim)
                with self._lock:
                    if problem is None:
                        self._problems.pop(template.uid, None)
                    else:
                        self._problems[template.uid] = rollout.CLAIM_ERROR_PREFIX + problem
                if problem is not None:
                    self._warn("claim " + template.name, exc, "cannot claim rollout slot %s of %s: %s",
                               admission.claim, template.name, problem)
                self._lost(template)
                after_s = self._server_hold.note(exc, self._clock.monotonic())
                if after_s is not None:
                    self._wake(after_s)
                return False
            with self._lock:
                self._problems.pop(template.uid, None)
            self._remember(template, lease, sent_at=sent_at)
        return True

    def _warn_if_twin(self, name: str) -> None:
        """A write of ours lost to a Lease that still names this node as holder: another agent
        process runs with the same --node-name (a second DaemonSet, a test harness reusing node
        names). The limit cannot hold then (a slot of this node is "mine" to both): say so."""
        current = next((o for o in self._store().values() if object_name(o) == name), None)
        if current is not None and (current.get("spec") or {}).get("holderIdentity") == self.node:
            log.error("rollout slot %s was written by another agent that also runs as node %s: "
                      "two agent processes share one --node-name, and the rollout limit cannot "
                      "hold; run one agent per node", name, self.node)

    def claim_problem(self, template: Template) -> Optional[str]:
        """Why this node's last claim for `template` failed, when not to another node (a 409):
        the per-node message says what is wrong and how to fix it. None: no such failure."""
        with self._lock:
            return self._problems.get(template.uid)

    def _warn(self, what: str, exc: BaseException, fmt: str, *args) -> None:
        """Count the failure (metrics); log.warning, at most once per CLAIM_WARNING_EVERY_S per
        (what, kind of failure)."""
        if self._metrics is not None:
            self._metrics.inc(api_error_metric(SLOT_OPERATION, classify(exc).reason))
        key = (what, str(error_status(exc) or type(exc).__name__))
        now = self._clock.monotonic()
        with self._lock:
            last = self._warned.get(key)
            if last is not None and now - last < CLAIM_WARNING_EVERY_S:
                return
            if len(self._warned) >= MAX_RANKS:
                self._warned.clear()
            self._warned[key] = now
        log.warning(fmt, *args)

    def _forget_locked(self, uid: str) -> None:
        self._held.pop(uid, None)
        self._written_at.pop(uid, None)
        self._unconfirmed.discard(uid)
        self._templates.pop(uid, None)
        self._problems.pop(uid, None)

    def forget_absent(self, keep: set[str]) -> None:
        """Forget this node's slots of template uids not in `keep` (the templates there are and
        the deleted ones whose undo still drains under their slots). Their Leases stay as they
        are on the server: a Failed one counts for no other uid, and the status writer
        collects it. What this node remembered of them is a copy that goes stale: the slot
        names are the template name's, so a template re-created under it takes them over, and
        a copy kept would hide that (this node's view of the slot) or, used to take the slot
        over again, be refused with a 409 until the writer collected the Lease."""
        with self._lock:
            for uid in [uid for uid in {*self._held, *self._problems} if uid not in keep]:
                self._forget_locked(uid)

    def release(self, template: Template) -> None:
        with self._writing:
            with self._lock:
                lease = self._held.get(template.uid)
                self._forget_locked(template.uid)
            if lease is None:
                return
            meta = lease["metadata"]
            try:
                self.client.delete_lease(self.namespace, meta["name"],
                                         resource_version=meta.get("resourceVersion"))
            except Exception as exc:  # noqa: BLE001 - the slot expires by itself
                duration = float((lease.get("spec") or {}).get("leaseDurationSeconds")
                                 or self.duration_s)
                problem = lease_write_problem(exc, verb="delete", namespace=self.namespace,
                                              name=meta["name"])
                if error_status(exc) == 409:  # not ours any more: the server has a newer one
                    log.warning("cannot release rollout slot %s: it changed since this node's "
                                "last write (another node took it over): %s", meta["name"], exc)
                elif problem is not None:
                    self._warn("release " + template.name, exc, "cannot release rollout slot %s (other nodes "
                               "take it %g s after this node's last write): %s", meta["name"],
                               duration, problem)
            with self._lock:
                self._gone.add((meta["name"], str(meta.get("resourceVersion") or "")))

    def fail(self, template: Template, message: str) -> None:
        with self._writing:
            with self._lock:
                lease = self._held.get(template.uid)
            if lease is None:
                return
            notes = lease["metadata"].get("annotations") or {}
            if (notes.get(rollout.PHASE_ANNOTATION) == TemplateState.FAILED
                    and notes.get(rollout.MESSAGE_ANNOTATION) == truncate(message, rollout.MAX_MESSAGE)):
                return  # the same failure again: nothing to write
            self._put(template, lease, phase=TemplateState.FAILED, message=message)

    def renew(self) -> None:
        """Renew the Applying slots written more than RENEW_AFTER_FRACTION of the duration ago
        (and adopted ones at once). Called by the renewer thread (`run_renewer`): one host
        action can outlast a slot (VFs that take long to appear), and a live holder must never
        lose its slot to another node; a renewal that fails leaves the slot held but fenced
        (`fence`) until one succeeds."""
        with self._writing:
            now = self._clock.monotonic()
            with self._lock:
                due = [(uid, lease) for uid, lease in self._held.items()
                       if (lease["metadata"].get("annotations") or {}).get(
                           rollout.PHASE_ANNOTATION) == TemplateState.APPLYING
                       and (uid in self._unconfirmed or now - self._written_at.get(uid, now)
                            >= self.duration_s * RENEW_AFTER_FRACTION)]
            for uid, lease in due:
                self._put(self._templates[uid], lease, phase=TemplateState.APPLYING)

    def run_renewer(self, stop: threading.Event) -> None:
        while not self._clock.wait(stop, self.duration_s / 6):
            self.renew()

    def _put(self, template: Template, lease: dict, *, phase: str, message: str = "") -> None:
        if self._server_hold.remaining_s(self._clock.monotonic()) > 0:
            return  # the renewer (RENEW_AFTER_FRACTION) tries again after the pause
        sent_at = self._clock.monotonic()
        try:
            written = self.client.replace_lease(self.namespace, lease["metadata"]["name"],
                                                self._body(template, phase=phase,
                                                           message=message, over=lease))
        except Exception as exc:  # noqa: BLE001 - lost the slot (expired and taken) or API down
            self._server_hold.note(exc, self._clock.monotonic())
            name = lease["metadata"]["name"]
            problem = lease_write_problem(exc, verb="update", namespace=self.namespace, name=name)
            if problem is None:  # 409/404: another node took it over, or it was deleted
                log.warning("lost rollout slot %s of %s: %s", name, template.name, exc)
                self._warn_if_twin(name)
                with self._lock:
                    self._held.pop(template.uid, None)
            else:
                self._warn("update " + template.name, exc, "cannot update rollout slot %s of %s: %s",
                           name, template.name, problem)
            return
        self._remember(template, written, sent_at=sent_at)

    # -- waking a waiting node ------------------------------------------------------------
    def set_waiting(self, waiting: dict[str, tuple[Template, int]]) -> None:
        with self._lock:
            self._waiting = dict(waiting)

    def on_lease_event(self, event_type, key, old, new) -> None:
        """A slot Lease changed: if this node may now try a slot of a rollout it waits for (it
        was offered it, or its fallback turn came), run a pass at once; if its fallback turn is
        ahead, run one then. Otherwise nothing: 1,000 waiting nodes must not all reconcile,
        let alone claim, per event."""
        with self._lock:
            waiting = list(self._waiting.values())
        for template, limit in waiting:
            answer = self.admission(template, limit)
            if answer.admit:
                self._wake(0.0)
                return
            if answer.retry_after_s is not None:
                self._wake(answer.retry_after_s + WAKE_MARGIN_S)  # the queue keeps the earliest


def slot_reader(store: Callable[[], dict], clock: Clock) -> Callable[[], list[Slot]]:
    """Slots from a Lease store, with each Lease's quiet time on this reader's clock."""
    first_seen: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def read() -> list[Slot]:
        now = clock.monotonic()
        slots = []
        with lock:
            live = set()
            for obj in store().values():
                key = (object_name(obj), str((obj.get("metadata") or {}).get("resourceVersion")))
                live.add(key)
                slot = rollout.slot_from_lease(
                    obj, unchanged_for_s=now - first_seen.setdefault(key, now))
                if slot is not None:
                    slots.append(slot)
            for key in set(first_seen) - live:
                del first_seen[key]
        return slots
    return read

