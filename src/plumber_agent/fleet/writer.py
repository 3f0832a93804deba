"""The status writer: while this agent leads (fleet/leader.py), keep every template's status
equal to `aggregate` of the live objects, and nothing more.

Writes grow with changes, not with nodes x changes: changes are coalesced for COALESCE_S, a
template's status is written only when it differs from what the object has, and a quiet fleet
costs no write at all. A periodic recount (RECOUNT_S) notices what has no event: an applying
node's slot that expired (every RECOUNT_S while a node applies, else every IDLE_RECOUNT_S). The
writer also deletes slot Leases that can never count again (their
template is gone or was edited since). A failed status write is retried after a backoff with
full jitter, and never before a 429's or 5xx's Retry-After (plumber_agent/retry.py); after such
an answer the pass writes no further template until then.

What it reads of the fleet (issue 19): Nodes and HostNetworks as metadata only
(PartialObjectMetadata), and of those only a Node's labels and a HostNetwork's template-results
annotation are kept (fleet/results.py). Its memory and traffic then follow the node count, not
the size of HostNetworks or Nodes, and only a change of labels or of a result wakes it.
`full_objects` brings back the whole-object watches (the baseline of bench B9).
"""
from __future__ import annotations

import datetime
import logging
import threading
from functools import partial
from typing import Callable, Optional

from plumber_agent.apierrors import (TEMPLATES_RESOURCE, Target, api_error_metric, classify,
                                     describe)
from plumber_agent.clock import Clock
from plumber_agent.fleet.aggregate import OFFERABLE, aggregate, offer_times, status_patch
from plumber_agent.fleet.results import compact_hostnetwork, compact_node
from plumber_agent.fleet.rollout import Slot
from plumber_agent.fleet import rollout
from plumber_agent.heap import give_back_free_memory
from plumber_agent.kube.recorder import WARNING, EventBroadcaster, EventRecorder
from plumber_agent.kube.reflector import MODIFIED, labels_changed, object_name
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.spec import Template
from plumber_agent.models.status import TemplateState
from plumber_agent.retry import Backoff, retry_delay_s, server_wait_s

log = logging.getLogger(__name__)

COALESCE_S = 1.0
RECOUNT_S = 5.0
IDLE_RECOUNT_S = 60.0
FIRST_LIST_POLL_S = 0.1
EVENT_CONTROLLER = "plumber.k8s.pf9.io/status-writer"  # reportingController (cluster.py)
EVENT_ACTION = "Rollout"
STATUS_OPERATION = "template_status_write"  # plumber_api_errors_total's operation label
# Status write retries: the next change or recount would retry after COALESCE_S anyway; a
# failing (or shedding) API server gets 1 s doubling to 30 s instead, with full jitter.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
RETRY_FACTOR = 2.0


def results_changed(event_type: str, old: Optional[dict], new: Optional[dict]) -> bool:
    """Report a MODIFIED HostNetwork only when its result summary changed: a status change
    elsewhere (pods coming and going) bumps only its resourceVersion here."""
    if event_type != MODIFIED or old is None or new is None:
        return True
    return old.get("results") != new.get("results")


def rfc3339(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    def __init__(self, *, client, namespace: str, identity: str, clock: Clock,
                 templates: Callable[[], dict], slots: Callable[[], list[Slot]],
                 make_reflector: Callable[..., object],
                 synced: Callable[[], bool] = lambda: True,
                 claims: Callable[[], list] = list, full_objects: bool = False,
                 confirmed: Callable[[], bool] = lambda: True,
                 events: Optional[EventRecorder] = None, metrics=None) -> None:
        """`events`: the recorder of the template Events (default: one of its own over
        `client`, with no series maintenance); `metrics`: an ops.Metrics counting failed
        template status writes by class."""
        self._metrics = metrics
        self.client, self.namespace, self.identity, self.clock = client, namespace, identity, clock
        self._templates, self._slots = templates, slots
        self._make_reflector = make_reflector
        self._synced = synced  # the agent's template and Lease watches have listed once
        self._claims = claims  # AddressClaims (pools.claims.Claim), for each pool's use
        self._full_objects = full_objects
        # Fencing: the leader Lease was renewed within its renew deadline (leader.confirmed).
        self._confirmed = confirmed
        self._events = events or EventBroadcaster(client, clock).new_recorder(
            EVENT_CONTROLLER, identity)
        self._dirty = threading.Event()
        self.writes = 0
        # (rollout id, node) -> monotonic time the node was first offered a slot (offer timeouts)
        self._offered_since: dict[tuple[str, str], float] = {}
        self._backoff = Backoff(initial_s=RETRY_INITIAL_S, max_s=RETRY_MAX_S,
                                factor=RETRY_FACTOR)
        self.hold_s = 0.0  # wait this long before the next pass (after a failed write)

    def changed(self, *_args) -> None:
        """Any watched object changed (reflector callback; also the agent's template and slot
        watches while leading)."""
        self._dirty.set()

    def _reflectors(self) -> tuple:
        """The Node and HostNetwork watches: metadata only, stored compact, waking the writer
        only for what it reads (see the module doc); or whole objects (`full_objects`)."""
        client = self.client
        if self._full_objects:
            return (self._make_reflector("all-nodes", client.list_nodes, client.watch_nodes,
                                         self.changed),
                    self._make_reflector("hostnetworks", client.list_hostnetworks,
                                         client.watch_hostnetworks, self.changed))
        nodes = self._make_reflector(
            "all-nodes", partial(client.list_nodes, metadata_only=True, transform=compact_node),
            partial(client.watch_nodes, metadata_only=True), self.changed,
            transform=compact_node, report_if=labels_changed)
        hostnetworks = self._make_reflector(
            "hostnetworks", partial(client.list_hostnetworks, metadata_only=True,
                                    transform=compact_hostnetwork),
            partial(client.watch_hostnetworks, metadata_only=True), self.changed,
            transform=compact_hostnetwork, report_if=results_changed)
        return nodes, hostnetworks

    def lead(self, stop: threading.Event) -> None:
        nodes, hostnetworks = self._reflectors()
        threads = [threading.Thread(target=r.run, args=(stop,), name=f"writer-{r.name}",
                                    daemon=True) for r in (nodes, hostnetworks)]
        threads[0].start()
        trimmed = False
        try:
            # One big first list at a time: two decoded at once, at 5,000 nodes, leave twice
            # the transient memory scattered through the heap for good (bench B9).
            while not nodes.has_synced() and not stop.wait(FIRST_LIST_POLL_S):
                pass
            threads[1].start()
            self._dirty.set()
            while not stop.is_set():
                self._dirty.wait(self._recount_after_s())
                if stop.is_set():
                    break
                if self.hold_s > 0:  # a write failed: back off, or wait the Retry-After
                    hold_s, self.hold_s = self.hold_s, 0.0
                    if self.clock.wait(stop, hold_s):
                        break
                if self._dirty.is_set():
                    self.clock.wait(stop, COALESCE_S)  # let a burst of node reports land
                self._dirty.clear()
                if not (nodes.has_synced() and hostnetworks.has_synced() and self._synced()):
                    continue  # a half-known fleet would publish wrong counts (and clean up)
                self.sync(*self._fleet(nodes, hostnetworks))
                if not trimmed:
                    give_back_free_memory()  # what decoding the first lists left
                    trimmed = True
        finally:
            stop.set()
            for thread in threads:
                if thread.ident is not None:  # started
                    thread.join(timeout=10)

    def _fleet(self, nodes, hostnetworks) -> tuple[list[dict], dict[str, dict]]:
        """The stores in the form aggregate reads (compacted here for `full_objects`)."""
        node_list = list(nodes.store().values())
        hns = list(hostnetworks.store().values())
        if self._full_objects:
            node_list = [compact_node(o) for o in node_list]
            hns = [compact_hostnetwork(o) for o in hns]
        return node_list, {object_name(o): o for o in hns}

    def _recount_after_s(self) -> float:
        """Only an applying node's slot can change the counts without an event (it expires):
        recount soon while one exists, else rarely (every change has its event)."""
        applying = any(slot.phase == TemplateState.APPLYING for slot in self._slots())
        return RECOUNT_S if applying or self._offered_since else IDLE_RECOUNT_S

    def sync(self, nodes: list[dict], hostnetworks: dict[str, dict]) -> None:
        """Recompute every template's status; write the ones that changed."""
        slots = self._slots()
        now = rfc3339(self.clock.time())
        claimed: dict[str, int] = {}
        for claim in self._claims():
            claimed[claim.pool_id] = claimed.get(claim.pool_id, 0) + 1
        parsed = [(obj, template_from_object(obj)) for obj in self._templates().values()]
        offered_since: dict[tuple[str, str], float] = {}
        failed = None
        for obj, template in parsed:
            previous = obj.get("status") or None
            rollout_id = f"{template.uid}/{rollout.template_spec_hash(template)}"
            ages = {node: self.clock.monotonic() - since
                    for (rid, node), since in self._offered_since.items() if rid == rollout_id}
            result = aggregate(template, nodes=nodes, hostnetworks=hostnetworks, slots=slots,
                               previous=previous, now=now, claimed=claimed, offered_for_s=ages)
            offered_since.update(self._offer_times(rollout_id, result))
            patch = status_patch(previous, result.status)
            if patch is None:
                continue
            if not self._confirmed():  # another agent may be the writer by now
                log.warning("not writing template status: the status-writer Lease is not "
                            "confirmed within its renew deadline")
                self._dirty.set()
                return
            try:
                self.client.patch_template_status(template.name, {"status": patch})
                self.writes += 1
            except Exception as exc:  # noqa: BLE001 - retried after hold_s
                failure = classify(exc)
                log.warning("cannot write the status of template %s: %s", template.name,
                            describe(failure, verb="patch", target=Target(
                                TEMPLATES_RESOURCE + "/status", name=template.name)))
                if self._metrics is not None:
                    self._metrics.inc(api_error_metric(STATUS_OPERATION, failure.reason))
                self._dirty.set()
                failed = exc
                if server_wait_s(exc) is not None:
                    break  # the server asked for a pause: no more writes until it is over
                continue
            for reason, kind, message in result.events:
                self._event(obj, reason, kind, message)
        self._offered_since = offered_since
        if failed is None:
            self._backoff.reset()
        else:
            self.hold_s = retry_delay_s(self._backoff.next(), failed)
            if server_wait_s(failed) is not None:
                return  # the slot clean-up waits too
        if self._confirmed():
            self._collect_stale_slots([template for _, template in parsed], slots)

    def _offer_times(self, rollout_id: str, result) -> dict[tuple[str, str], float]:
        """`aggregate.offer_times` of one rollout, keyed by (rollout id, node)."""
        previous = {node: since for (rid, node), since in self._offered_since.items()
                    if rid == rollout_id}
        kept = offer_times(previous, offered={entry["node"] for entry in result.offered},
                           waiting={r.node for r in result.nodes if r.state in OFFERABLE},
                           expired=result.expired, now=self.clock.monotonic())
        return {(rollout_id, node): since for node, since in kept.items()}

    def _event(self, obj: dict, reason: str, kind: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        self._events.eventf(
            regarding={"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                       "name": meta.get("name"), "uid": meta.get("uid")},
            reason=reason, action=EVENT_ACTION, note=message, warning=kind == WARNING)

    def _template_exists(self, slot: Slot) -> bool:
        """Is the slot's template there on the server, with its uid? Asked (one GET) before
        deleting a slot of a uid this writer's cache does not know: a cache that lags (a
        stalled template watch) must not delete a live rollout's slots, a Failed one above all
        (that would lift a halt). An error: assume it exists (deleting can wait)."""
        try:
            obj = self.client.get_template(slot.template) if slot.template else None
        except Exception as exc:  # noqa: BLE001 - the next recount asks again
            log.warning("not deleting rollout slot %s yet: %s", slot.name, describe(
                classify(exc), verb="get", target=Target(TEMPLATES_RESOURCE, name=slot.template)))
            return True
        return obj is not None and (obj.get("metadata") or {}).get("uid") == slot.template_uid

    def _collect_stale_slots(self, templates: list[Template], slots: list[Slot]) -> None:
        """Delete slots of deleted templates and of network specs edited away. A slot of a uid we
        do not know yet may be our cache lagging behind a new template: only after it has been
        quiet for twice its duration."""
        current = {template.uid: (template.generation, rollout.template_spec_hash(template))
                   for template in templates}
        for slot in slots:
            known = current.get(slot.template_uid)
            if known is None:  # twice the duration: a holder renews every third of it
                stale = slot.unchanged_for_s >= 2 * slot.duration_s \
                    and not self._template_exists(slot)
            else:  # a spec we know was replaced (not one newer than our cache)
                stale = slot.spec_hash != known[1] and slot.generation < known[0]
            if not stale:
                continue
            try:
                self.client.delete_lease(self.namespace, slot.name,
                                         resource_version=slot.resource_version)
                log.info("deleted stale rollout slot %s (template %s generation %s)",
                         slot.name, slot.template, slot.generation)
            except Exception as exc:  # noqa: BLE001 - 409: it moved on, fine
                log.info("stale rollout slot %s not deleted: %s", slot.name, exc)
