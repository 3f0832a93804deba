"""Cluster mode's glue between the kube layer and the agent: the two reflectors, the template
source over their stores, the HostNetwork status sink and the event recorder.

Kept out of kube/ so the kube layer stays a thin, generic client; kept out of agent.py so the
thread wiring there reads in one screen.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

from plumber_agent import GROUP, VERSION
from plumber_agent.apiprobe import (KUBERNETES_SLICE_NAME, KUBERNETES_SLICE_NAMESPACE,
                                    endpoints_from_slices)
from plumber_agent.fleet.leader import LEADER_LEASE, LeaderElector
from plumber_agent.fleet.results import RESULTS_ANNOTATION, encode_summary, summary_of
from plumber_agent.fleet.rollout import AGENT_LEASES_SELECTOR
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.fleet.writer import EVENT_CONTROLLER as STATUS_WRITER_CONTROLLER, StatusWriter
from plumber_agent.crd_guard import DEFAULT_RECHECK_S, CrdDeletionGuard
from plumber_agent.apierrors import (HOSTNETWORKS_RESOURCE, TEMPLATES_RESOURCE, NamedApiError,
                                     Target, api_error_metric, classify, named)
from plumber_agent.kube.client import TEMPLATES_PLURAL, KubeClient
from plumber_agent.kube.recorder import MAX_QUEUED_EVENTS, EventBroadcaster, EventRecorder
from plumber_agent.models.fleet import offered_slots
from plumber_agent.models.status import NodeCondition
from plumber_agent.kube.flowcontrol import DEFAULT_BURST, DEFAULT_QPS, TokenBucket
from plumber_agent.kube.reflector import (INACTIVITY_TIMEOUT_S, MODIFIED, Reflector,
                                          ReflectorSettings, error_status, labels_changed,
                                          node_key_of, object_name, template_key)
from plumber_agent.ops import Metrics
from plumber_agent.models.parse import template_from_object
from plumber_agent.pools.claims import ClaimWatch, KubeClaims
from plumber_agent.pools.pool import pool_uses
from plumber_agent.reporter import json_patch_ops, merge_patch
from plumber_agent.sources import StoreSource

log = logging.getLogger(__name__)


JSON_PATCH_MAX_OPS = 512
"""Above this many element-wise edits a merge patch (whole lists) is sent instead."""
AGENT_CONTROLLER = "plumber.k8s.pf9.io/agent"  # the Events' reportingController

RECONCILE_ACTION = "Reconcile"  # the Events' action (what the agent was doing)
STATUS_WRITE_OPERATION = "status_write"  # plumber_api_errors_total's operation label
TEMPLATE_WATCH_OPERATION = "template_watch"


class KubeStatusSink:
    """Creates this node's HostNetwork once (owned by the Node) and patches its status.

    A status change is sent as a JSON patch of just the changed elements, guarded by a `test`
    of the resourceVersion this sink last wrote or read: the element-wise paths are only right
    for that exact version. If the object changed meanwhile (the test fails) or nothing is
    known yet, a merge patch from the status last published is sent instead. Both are computed
    here, only the one sent: the reporter hands over whole statuses. Why: the seed's status is lists,
    which a merge patch must resend whole; for 1,000 interfaces that is ~300 KB to encode,
    send and apply for one changed MTU (bench B2).

    The per-template result summary (fleet/results.py) goes in an annotation on the main
    resource, patched only when the summary changes (never for a status change elsewhere):
    the status writer reads that instead of the whole HostNetwork.
    """

    def __init__(self, client: KubeClient, node_name: str) -> None:
        self.client, self.node_name = client, node_name
        self._version: Optional[str] = None  # resourceVersion that `_status` belongs to
        self._status: Optional[dict] = None  # the status as published at that version
        self.uid = ""  # of the HostNetwork, for Events about it
        self._summary: Optional[str] = None  # the template-results annotation as published
        self._doing = ("get", HOSTNETWORKS_RESOURCE)  # the request under way (name_error)

    def _remember(self, obj: Optional[dict], status: Optional[dict]) -> None:
        meta = (obj or {}).get("metadata") or {}
        self._version = meta.get("resourceVersion")
        self._status = status
        self.uid = meta.get("uid") or self.uid

    def _body(self) -> dict:
        try:
            node = self.client.get_node(self.node_name) or {}
        except Exception as exc:  # no owner reference then; the object is still useful
            log.warning("cannot read Node %s for the owner reference: %s", self.node_name, exc)
            node = {}
        meta = node.get("metadata") or {}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetwork",
                "metadata": {"name": self.node_name}, "spec": {}}
        if meta.get("uid"):
            body["metadata"]["ownerReferences"] = [{
                "apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": meta["uid"]}]
        return body

    def name_error(self, exc: BaseException) -> NamedApiError:
        """What a failed ensure/write was (apierrors): the request this sink was making, for
        the reporter's log line and plumber_api_errors_total. The original exception is what
        ensure/write raise (callers and the retry policy read it)."""
        verb, resource = self._doing
        return named(exc, operation=STATUS_WRITE_OPERATION, verb=verb,
                     target=Target(resource, name=self.node_name))

    def ensure(self) -> Optional[dict]:
        self._doing = ("get", HOSTNETWORKS_RESOURCE)
        obj = self.client.get_hostnetwork(self.node_name)
        if obj is None:
            self._doing = ("create", HOSTNETWORKS_RESOURCE)
            obj = self.client.create_hostnetwork(self._body())
        published = (obj or {}).get("status")
        self._remember(obj, published)
        self._summary = summary_of(obj)
        if published is not None:
            self._write_summary(published)  # an object published before the summary existed
        return published

    def _write_summary(self, status: dict) -> None:
        """Patch the template-results annotation when it differs from what was published."""
        summary = encode_summary(status.get("templates"))
        if summary == self._summary:
            return
        self._doing = ("patch", HOSTNETWORKS_RESOURCE)
        obj = self.client.patch_hostnetwork(
            self.node_name, {"metadata": {"annotations": {RESULTS_ANNOTATION: summary}}})
        self._summary = summary
        # The patch moved the resourceVersion the status guard tests: take the new one while
        # the status it answered is still the one remembered (else the next write merges).
        if self._version is not None and (obj or {}).get("status") == self._status:
            self._remember(obj, self._status)
        else:
            self._version = None

    def write(self, status: dict) -> None:
        self._doing = ("patch", HOSTNETWORKS_RESOURCE + "/status")
        self._write_status(status)
        self._write_summary(status)

    def _write_status(self, status: dict) -> None:
        operations = None
        if self._version is not None and self._status is not None:
            operations = json_patch_ops(self._status, status, "/status")
            if len(operations) > JSON_PATCH_MAX_OPS:
                operations = None
        version, self._version = self._version, None  # unknown until this write answers
        if operations is not None:
            guard = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
            try:
                obj = self.client.json_patch_hostnetwork_status(
                    self.node_name, [guard, *operations])
                self._remember(obj, status)
                return
            except Exception as exc:  # noqa: BLE001 - only a refused patch falls back
                if error_status(exc) not in (409, 422):
                    raise
                log.info("status JSON patch refused (%s); sending a merge patch",
                         error_status(exc))
        obj = self.client.patch_hostnetwork_status(
            self.node_name, {"status": merge_patch(self._status or {}, status)})
        self._remember(obj, status)


class KubeEvents:
    """Events on the HostNetwork (and the template concerned), on transitions only, recorded
    as events.k8s.io/v1 Events (kube/recorder.py: repeats become a series)."""

    def __init__(self, recorder: EventRecorder, node_name: str,
                 template_uid: Callable[[str], str] = lambda name: "",
                 hostnetwork_uid: Callable[[], str] = lambda: "") -> None:
        self.recorder, self.node_name = recorder, node_name
        # `kubectl describe` finds an object's Events by its uid.
        self.template_uid, self.hostnetwork_uid = template_uid, hostnetwork_uid

    def emit(self, *, reason: str, message: str, warning: bool = False,
             template: Optional[str] = None, action: str = RECONCILE_ACTION) -> None:
        targets = [("HostNetwork", self.node_name)]
        if template:
            targets.append(("HostNetworkTemplate", template))
        for kind, name in targets:
            uid = self.template_uid(name) if kind == "HostNetworkTemplate" \
                else self.hostnetwork_uid()
            self.recorder.eventf(
                regarding={"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "name": name,
                           "uid": uid},
                reason=reason, action=action, note=f"{self.node_name}: {message}",
                warning=warning)


@dataclass(frozen=True)
class FleetSettings:
    """Where the rollout Leases live and how long they last (docs/rollout.md)."""

    namespace: str = "plumber-system"
    slot_duration_s: float = 30.0
    leader_duration_s: float = 15.0
    # How the status writer watches Nodes and HostNetworks (fleet/writer.py): metadata only,
    # or whole objects (LEADER_WATCH_FULL: the pre-issue-19 cost; bench B9's baseline).
    leader_watch: str = "metadata"
    # While the template CRD is deleted or terminating, read it again this often (crd_guard.py).
    crd_recheck_s: float = DEFAULT_RECHECK_S


LEADER_WATCH_FULL = "full"


def template_changed(event_type: str, old: Optional[dict], new: Optional[dict], *,
                     node: str = "") -> bool:
    """A template event a node must act on: not the status writer's writes, except a change of
    the slot it offers `node` (status.rollout.offered; the others' offers are not this node's
    business: 1,000 waiting nodes must not all run a pass per hand-over). An offer withdrawn
    needs no pass: the node holds the slot by then, or waits as before (its fallback timer is
    the slots' own)."""
    if event_type != MODIFIED or old is None or new is None:
        return True
    offer = offered_slots(new).get(node)
    return (((old.get("metadata") or {}).get("generation"))
            != ((new.get("metadata") or {}).get("generation"))
            or (offer is not None and offered_slots(old).get(node) != offer))


def template_uses_pools(obj: dict) -> bool:
    for iface in ((obj.get("spec") or {}).get("interfaceConfig") or []):
        if isinstance(iface, dict) and any(isinstance(iface.get(family), dict)
                                           and iface[family].get("pool") is not None
                                           for family in ("ipv4", "ipv6")):
            return True
    return False


class ClusterWiring:
    def __init__(self, *, node_name: str, kubeconfig: Optional[str], clock, metrics: Metrics,
                 on_change: Callable[[], None],
                 watch_inactivity_timeout_s: float = INACTIVITY_TIMEOUT_S,
                 fleet: FleetSettings = FleetSettings(),
                 wake: Optional[Callable[[float], None]] = None,
                 api_qps: float = DEFAULT_QPS, api_burst: int = DEFAULT_BURST,
                 watch_api_endpoints: bool = False) -> None:
        """`watch_api_endpoints`: in a pod, list+watch the `kubernetes` EndpointSlice, the
        addresses behind the Service the client dials (the API-path guard keeps their paths)."""
        self.client = KubeClient.from_environment(kubeconfig)
        if api_qps > 0:  # 0: no client-side limit (--kube-api-qps 0)
            self.client.rate_limiter = TokenBucket(qps=api_qps, burst=api_burst, clock=clock)
        self.node_name = node_name
        self._metrics, self._on_change = metrics, on_change
        self.api_url = self.client.configuration.host
        self._clock = clock
        self._inactivity_s = watch_inactivity_timeout_s
        settings = ReflectorSettings(inactivity_timeout_s=watch_inactivity_timeout_s)
        metrics.add_collector(lambda m: m.set("plumber_api_requests_total", self.client.requests))
        metrics.add_collector(self._throttle_metrics)

        def on_template(event_type, key, old, new):
            if template_changed(event_type, old, new, node=node_name):
                on_change()
                self.claim_watch.pools_changed()
            self.writer.changed()

        def on_node(event_type, key, old, new):
            on_change()

        def templates_failed(_delay_s: float, exc: BaseException) -> None:
            metrics.inc(api_error_metric(TEMPLATE_WATCH_OPERATION, classify(exc).reason))

        self.templates = Reflector("templates", self.client.list_templates,
                                   self.client.watch_templates, on_template, clock,
                                   settings=settings, on_backoff=templates_failed,
                                   target=Target(TEMPLATES_RESOURCE))
        # Only label changes of our own Node matter (heartbeats every 10 s must not reconcile).
        self.node = Reflector("node", partial(self.client.list_node, node_name),
                              partial(self.client.watch_node, node_name), on_node, clock,
                              settings=settings, key_fn=node_key_of, report_if=labels_changed)
        metrics.add_collector(lambda m: m.set(
            "plumber_watch_restarts_total", self.templates.watch_restarts + self.node.watch_restarts))
        # Synced also means: the claims of every pool, and this node's own, are listed
        # (ClaimWatch.has_synced says why).
        # A CRD deletion deletes every template: not an undo of the fleet (crd_guard.py).
        template_crd = f"{TEMPLATES_PLURAL}.{GROUP}"
        self.crd_guard = CrdDeletionGuard(read_crd=partial(self.client.get_crd, template_crd),
                                          monotonic=clock.monotonic, crd_name=template_crd,
                                          recheck_s=fleet.crd_recheck_s)
        self.source = StoreSource(
            templates_store=self.templates.store, node_store=self.node.store,
            synced=lambda: self.templates.has_synced() and self.node.has_synced()
            and self.claim_watch.has_synced(), guard=self.crd_guard.view)
        self.sink = KubeStatusSink(self.client, node_name)
        # Events leave the reconciler thread through the broadcaster's queue (event-sender).
        self.broadcaster = EventBroadcaster(self.client, clock, queue_max=MAX_QUEUED_EVENTS,
                                            metrics=metrics)
        self.events = KubeEvents(self.broadcaster.new_recorder(AGENT_CONTROLLER, node_name),
                                 node_name, template_uid=self._template_uid,
                                 hostnetwork_uid=lambda: self.sink.uid)
        self._wire_fleet(fleet, settings, wake or (lambda delay_s: on_change()))
        self._wire_pools(settings, on_change)
        self.api_slices: Optional[Reflector] = None
        if watch_api_endpoints:
            ns, name = KUBERNETES_SLICE_NAMESPACE, KUBERNETES_SLICE_NAME
            self.api_slices = Reflector(
                "api-endpoints", partial(self.client.list_endpoint_slices, ns, name),
                partial(self.client.watch_endpoint_slices, ns, name),
                lambda event_type, key, old, new: None,  # read at the next pass
                clock, settings=settings, key_fn=object_name)

    def api_endpoints(self) -> list:
        """The addresses of the `kubernetes` EndpointSlice as last seen ([] before the first
        list, or when not watched)."""
        if self.api_slices is None:
            return []
        return endpoints_from_slices(self.api_slices.store().values())

    def _wire_fleet(self, fleet: FleetSettings, settings: ReflectorSettings,
                    wake: Callable[[float], None]) -> None:
        """Rollout slots (every agent) and the leader-elected template status writer."""
        client, ns, clock = self.client, fleet.namespace, self._clock

        def on_lease(event_type, key, old, new):
            if key == LEADER_LEASE:
                return  # the status writer's renewals: the elector reads them from the store
            self.slots.on_lease_event(event_type, key, old, new)
            self.writer.changed()

        # One watch for the agent's Leases: the rollout slots and the leader Lease.
        self.leases = Reflector("leases", partial(client.list_leases, ns, AGENT_LEASES_SELECTOR),
                                partial(client.watch_leases, ns, AGENT_LEASES_SELECTOR),
                                on_lease, clock, settings=settings, key_fn=object_name)
        read_slots = slot_reader(self.leases.store, clock)
        self.slots = LeaseSlots(client=client, namespace=ns, node=self.node_name,
                                node_uid=self.node_uid, store=self.leases.store,
                                read_slots=read_slots, clock=clock, wake=wake,
                                duration_s=fleet.slot_duration_s,
                                count_nodes=client.count_nodes, metrics=self._metrics)

        def make_reflector(name, list_fn, watch_fn, on_change, **options):
            """`options`: the Reflector's transform and report_if (the writer's compact,
            metadata-only stores)."""
            return Reflector(name, list_fn, watch_fn, on_change, clock, settings=settings,
                             key_fn=object_name, **options)

        self.writer = StatusWriter(client=client, namespace=ns, identity=self.node_name,
                                   clock=clock, templates=self.templates.store, slots=read_slots,
                                   make_reflector=make_reflector,
                                   synced=lambda: self.templates.has_synced()
                                   and self.leases.has_synced()
                                   and self.claim_watch.has_synced(),
                                   claims=lambda: self.claims.list(),
                                   full_objects=fleet.leader_watch == LEADER_WATCH_FULL,
                                   confirmed=lambda: self.elector.confirmed(),
                                   events=self.broadcaster.new_recorder(
                                       STATUS_WRITER_CONTROLLER, self.node_name),
                                   metrics=self._metrics)
        self.elector = LeaderElector(client=client, namespace=ns, identity=self.node_name,
                                     clock=clock, lead=self.writer.lead,
                                     read=lambda: self.leases.get(LEADER_LEASE),
                                     duration_s=fleet.leader_duration_s, metrics=self._metrics,
                                     events=self.events, on_problem=self._on_change)

    def _wire_pools(self, settings: ReflectorSettings, on_change: Callable[[], None]) -> None:
        """The AddressClaims every agent reads to choose and keep its pool addresses: each
        pool's and its own, by label (pools.claims.ClaimWatch), never every claim nor any
        HostNetwork."""
        def on_claim(event_type, key, old, new):
            self.writer.changed()
            if event_type == "DELETED":
                on_change()  # an address may have come free for a node whose pool was exhausted

        def make_reflector(name: str, selector: str) -> Reflector:
            return Reflector(name, partial(self.client.list_address_claims, selector),
                             partial(self.client.watch_address_claims, selector), on_claim,
                             self._clock, settings=settings, key_fn=object_name)

        self._pool_id_cache: dict[tuple, frozenset[str]] = {}
        self.claim_watch = ClaimWatch(node=self.node_name, pool_ids=self.pool_ids,
                                      make_reflector=make_reflector)
        self.claims = KubeClaims(self.client, self.claim_watch.store)

    def pool_ids(self) -> set[str]:
        """The pools of every template (whichever nodes it selects): their claims are read.
        Parsed once per template uid and generation (the pool id depends on nothing else)."""
        ids: set[str] = set()
        cache: dict[tuple, frozenset[str]] = {}
        for obj in self.templates.store().values():
            if not template_uses_pools(obj):
                continue
            meta = obj.get("metadata") or {}
            key = (meta.get("uid"), meta.get("generation"))
            found = self._pool_id_cache.get(key)
            if found is None:
                template = template_from_object(obj)
                try:
                    found = frozenset(use.pool_id for use in pool_uses(template))
                except ValueError:  # refused with its path by the spec check; no pool to read
                    found = frozenset()
            cache[key] = found
            ids |= found
        self._pool_id_cache = cache
        return ids

    def _throttle_metrics(self, m: Metrics) -> None:
        limiter = self.client.rate_limiter
        if limiter is not None:
            m.set("plumber_api_throttled_requests_total", limiter.throttled)
            m.set("plumber_api_throttled_seconds_total", round(limiter.waited_s, 3))

    def _template_uid(self, name: str) -> str:
        obj = self.templates.get(template_key(name)) or {}
        return str((obj.get("metadata") or {}).get("uid") or "")

    def conditions(self) -> list[NodeCondition]:
        """This node's HostNetwork conditions (README "Errors, named")."""
        problem = self.elector.problem()
        return [NodeCondition(**problem.condition())] if problem is not None else []

    def node_uid(self) -> str:
        for obj in self.node.store().values():
            return str((obj.get("metadata") or {}).get("uid") or "")
        return ""

    def reported_template_states(self) -> dict[str, str]:
        """name -> state as this node's HostNetwork reports them now (what the agent process
        before this one published); empty when it cannot be read (Events are then sent as for
        a first start)."""
        try:
            obj = self.client.get_hostnetwork(self.node_name) or {}
        except Exception as exc:  # noqa: BLE001 - a missing read only costs Events
            log.warning("cannot read HostNetwork %s for the states reported before: %s",
                        self.node_name, exc)
            return {}
        entries = (obj.get("status") or {}).get("templates") or []
        return {str(e["name"]): str(e["state"]) for e in entries
                if isinstance(e, dict) and e.get("name") and e.get("state")}

    def api_reachable(self) -> bool:
        """One cheap, bounded GET: does the API server answer right now?"""
        try:
            self.client.get_node(self.node_name)
            return True
        except Exception:
            return False

    def ready(self) -> bool:
        """Synced, and both watches heard from recently (events or bookmarks)."""
        now = self._clock.monotonic()
        return all(r.has_synced() and now - r.last_activity() < self._inactivity_s
                   for r in (self.templates, self.node))

    def start(self, spawn: Callable[[str, Callable[[threading.Event], None]], None]) -> None:
        spawn("informer", self.templates.run)
        spawn("node-informer", self.node.run)
        spawn("lease-informer", self.leases.run)
        spawn("slot-renewer", self.slots.run_renewer)
        spawn("claim-informer", self.claim_watch.run)
        spawn("leader", self.elector.run)
        if self.api_slices is not None:
            spawn("api-endpoints-informer", self.api_slices.run)
        spawn("event-series", self.broadcaster.run)
        spawn("event-sender", self.broadcaster.send)
