"""The drain's door to the Kubernetes API (issue 23): the pods on this node, their eviction
through the Eviction API, and the node's cordon with who made it. The only module of the agent
that speaks Pods, Evictions and Node patches; the drain controller decides, this module asks.

Why each piece is shaped as it is:
- Pods are listed with `fieldSelector=spec.nodeName=<node>` (the kubelet's own view), as a
  consistent, paged read (client.py `_list`): a drain decided on a stale cache could miss a
  pod scheduled a moment ago. Each pod comes back as a `NodePod`: what the disruption analysis
  reads (the network-status annotation parsed, the device-plugin resources summed, the owner,
  mirror and DaemonSet flags), never the raw object.
- Eviction, never DELETE: the API server checks the PodDisruptionBudget and refuses with 429
  while the budget allows no disruption (pkg/registry/core/pod/storage/eviction.go). Every
  answer is a typed `EvictionOutcome` (evicted, blocked by a named PDB, gone, forbidden, ...)
  instead of an exception, so the controller's one `match` covers them all. The pod's uid is
  sent as a precondition: a StatefulSet pod re-created under the same name (maybe on another
  node) is never evicted by a retry meant for its predecessor.
- Cordon is a merge patch of `spec.unschedulable` with the node's resourceVersion as a
  precondition (a person cordoning between our read and our write makes it a 409, re-read),
  and it records who cordoned in the annotation `plumber.k8s.pf9.io/cordoned-by`: an uncordon
  happens only under our own record, so a cordon someone else made is never undone, and a
  restarted agent finds the cordon it left (the sriov-network-operator's nodes left cordoned).
  The ValidatingAdmissionPolicy manifests/admission/node_cordon_policy.yaml holds the agent to
  this on the server: its own node, only these two fields, uncordon only under its record.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping, Optional

from plumber_agent import GROUP
from plumber_agent.apierrors import ApiFailure, ApiReason, Target, classify, describe, named
from plumber_agent.kube.client import LIST_TIMEOUT_S, MERGE_PATCH, KubeClient, RawCalls

# Annotations read from pods (the Multus network-status, the kubelet's mirror pods) and the
# one written on the Node.
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
CORDONED_BY_ANNOTATION = f"{GROUP}/cordoned-by"
CORDON_RECORDER = "plumber-agent"  # the record's `by`: which program cordoned

EVICTION_API_VERSION = "policy/v1"
# policyv1.DisruptionBudgetCause: the StatusCause type of a 429 the budget caused (a
# StatusCause's Type is `reason` in JSON).
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
# eviction.go checkAndDecrement / createTooManyRequestsError word the cause as
# "The disruption budget <name> needs ..." / "... is still being processed by the server.".
_BUDGET_NAME = re.compile(r"^The disruption budget (?P<name>\S+) ")
# Extended resources (a device plugin's, e.g. intel.com/intel_sriov_netdevice) are named with
# a domain; the kubernetes.io ones (requests.*, hugepages) are the node's own, not devices.
KUBERNETES_DOMAIN = "kubernetes.io/"
# A node patch that loses to a concurrent writer (409) is re-read and retried this many times:
# a person and the node's own controllers rarely write the same node within a second.
CORDON_CONFLICT_RETRIES = 3
# plumber_api_errors_total's operation label of every request made here.
DRAIN_OPERATION = "drain"
PODS_RESOURCE = "pods"
EVICTION_RESOURCE = "pods/eviction"
NODES_RESOURCE = "nodes"


class DrainCalls(RawCalls):
    """The core/v1 requests of the drain, with the generated CoreV1Api's names and
    arguments: list every namespace's pods (on one node), create an Eviction, patch a Node.
    Whether an evicted pod is gone is read from the next list (no `get pods` grant)."""

    def list_pod_for_all_namespaces(self, **kwargs):
        options = self._split(kwargs)
        return self._send("GET", "/api/v1/pods", {}, kwargs, **options)

    def create_namespaced_pod_eviction(self, name: str, namespace: str, body: dict, **options):
        return self._send("POST", "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
                          {"namespace": namespace, "name": name}, {}, body, **options)

    def patch_node(self, name: str, body: dict, **options):
        return self._send("PATCH", "/api/v1/nodes/{name}", {"name": name}, {}, body, **options)


# -- pods -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodRef:
    """One pod incarnation: namespace, name and uid (a re-created pod is another one)."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class OwnerRef:
    kind: str
    name: str
    uid: str
    controller: bool


@dataclass(frozen=True)
class NetworkAttachment:
    """One entry of the pod's `k8s.v1.cni.cncf.io/network-status` annotation (the Network
    Plumbing Working Group's NetworkStatus): `pci_address` is device-info.pci.pci-address, set
    by SR-IOV CNI for a VF."""

    name: str
    interface: str = ""
    ips: tuple[str, ...] = ()
    mac: str = ""
    default: bool = False
    device_type: str = ""
    pci_address: str = ""


@dataclass(frozen=True)
class NodePod:
    """What the drain needs to know about one pod on the node."""

    ref: PodRef
    node: str
    phase: str
    ready: bool
    terminating: bool                    # metadata.deletionTimestamp set
    mirror: bool                         # a static pod's mirror (kubernetes.io/config.mirror)
    host_network: bool
    owners: tuple[OwnerRef, ...]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # Extended resources (device plugins) the pod holds: name -> count, as the scheduler
    # counts them (containers summed, an init container's if larger).
    resources: Mapping[str, int]
    networks: tuple[NetworkAttachment, ...]
    network_status_error: str = ""       # the annotation was there but unreadable: why

    @property
    def controller(self) -> Optional[OwnerRef]:
        return next((owner for owner in self.owners if owner.controller), None)

    @property
    def daemonset(self) -> bool:
        """Owned by a DaemonSet: evicting it is pointless (it comes back on the same node,
        kubectl drain refuses it without --ignore-daemonsets)."""
        owner = self.controller
        return owner is not None and owner.kind == "DaemonSet"

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def pci_addresses(self) -> tuple[str, ...]:
        return tuple(n.pci_address for n in self.networks if n.pci_address)


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def parse_network_status(text: str) -> tuple[tuple[NetworkAttachment, ...], str]:
    """The attachments of a network-status annotation, and what was wrong with it ('' when
    nothing): a malformed annotation reads as no attachments plus the reason, never a crash."""
    try:
        entries = json.loads(text)
    except ValueError as exc:
        return (), f"{NETWORK_STATUS_ANNOTATION} is not JSON: {exc}"
    if not isinstance(entries, list):
        return (), f"{NETWORK_STATUS_ANNOTATION} is not a JSON list"
    attachments = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            return tuple(attachments), (f"{NETWORK_STATUS_ANNOTATION}[{index}] is not an "
                                        "object with a name")
        device = _as_dict(entry.get("device-info"))
        pci = _as_dict(device.get("pci"))
        attachments.append(NetworkAttachment(
            name=entry["name"], interface=str(entry.get("interface") or ""),
            ips=tuple(str(ip) for ip in _as_list(entry.get("ips"))),
            mac=str(entry.get("mac") or ""), default=entry.get("default") is True,
            device_type=str(device.get("type") or ""),
            pci_address=str(pci.get("pci-address") or "")))
    return tuple(attachments), ""


def _go_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(quantity: Any) -> int:
    """An extended resource's quantity (a whole number by API validation); 0 if unreadable."""
    try:
        return int(str(quantity))
    except ValueError:
        return 0


def extended_resources(spec: dict) -> dict[str, int]:
    """The pod's extended resources, as the scheduler's computePodResourceRequest counts them:
    each container's (its limit, else its request: extended resources must have both equal),
    summed over the containers, and an init container's when it is larger."""
    def of(container: Any) -> dict[str, int]:
        resources = _as_dict(_as_dict(container).get("resources"))
        wanted = {**_as_dict(resources.get("requests")), **_as_dict(resources.get("limits"))}
        return {name: _count(value) for name, value in wanted.items()
                if "/" in name and not name.startswith(KUBERNETES_DOMAIN)}

    total: dict[str, int] = {}
    for container in _as_list(spec.get("containers")):
        for name, count in of(container).items():
            total[name] = total.get(name, 0) + count
    for container in _as_list(spec.get("initContainers")):
        for name, count in of(container).items():
            total[name] = max(total.get(name, 0), count)
    return {name: count for name, count in total.items() if count > 0}


def pod_from_object(obj: dict) -> NodePod:
    """A pod as the API server sent it, as a NodePod (missing fields read as absent)."""
    meta, spec, status = (_as_dict(obj.get(key)) for key in ("metadata", "spec", "status"))
    annotations = {str(k): str(v) for k, v in _as_dict(meta.get("annotations")).items()}
    networks, network_error = (), ""
    if NETWORK_STATUS_ANNOTATION in annotations:
        networks, network_error = parse_network_status(annotations[NETWORK_STATUS_ANNOTATION])
    owners = tuple(OwnerRef(kind=str(ref.get("kind") or ""), name=str(ref.get("name") or ""),
                            uid=str(ref.get("uid") or ""), controller=ref.get("controller") is True)
                   for ref in map(_as_dict, _as_list(meta.get("ownerReferences"))))
    ready = any(_as_dict(c).get("type") == "Ready" and _as_dict(c).get("status") == "True"
                for c in _as_list(status.get("conditions")))
    return NodePod(
        ref=PodRef(str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                   str(meta.get("uid") or "")),
        node=str(spec.get("nodeName") or ""), phase=str(status.get("phase") or ""),
        ready=ready, terminating=bool(meta.get("deletionTimestamp")),
        mirror=MIRROR_POD_ANNOTATION in annotations,
        host_network=spec.get("hostNetwork") is True, owners=owners,
        labels={str(k): str(v) for k, v in _as_dict(meta.get("labels")).items()},
        annotations=annotations, resources=extended_resources(spec), networks=networks,
        network_status_error=network_error)


# -- eviction ---------------------------------------------------------------------------------
class EvictionResult(StrEnum):
    EVICTED = "Evicted"            # accepted: the pod is being deleted (gracefully)
    BLOCKED_BY_PDB = "BlockedByPDB"  # 429 with a DisruptionBudget cause: try again later
    GONE = "Gone"                  # 404: the pod (this incarnation) no longer exists
    THROTTLED = "Throttled"        # 429 without a budget: API priority and fairness
    FORBIDDEN = "Forbidden"        # 403: RBAC, an admission policy, or a broken budget
    FAILED = "Failed"              # anything else: more than one PDB (500), 5xx, no answer


@dataclass(frozen=True)
class EvictionOutcome:
    result: EvictionResult
    pod: PodRef
    pdb: str = ""                  # the budget that refused (in the pod's namespace)
    message: str = ""              # the server's words (the budget's cause when there is one)
    retry_after_s: Optional[float] = None  # what the server suggested (Retry-After)
    status: Optional[int] = None   # the HTTP status (None: no answer)

    @property
    def evicted(self) -> bool:
        """The pod is on its way out (or already was): the drain may wait for it to go."""
        return self.result in (EvictionResult.EVICTED, EvictionResult.GONE)

    @property
    def retriable(self) -> bool:
        """Worth asking again later (the budget may allow it then; the server may recover)."""
        return self.result in (EvictionResult.BLOCKED_BY_PDB, EvictionResult.THROTTLED,
                               EvictionResult.FAILED)


def eviction_body(ref: PodRef, *, grace_period_s: Optional[int] = None,
                  dry_run: bool = False) -> dict:
    """The policy/v1 Eviction of one pod incarnation (uid precondition when known)."""
    options: dict = {}
    if ref.uid:
        options["preconditions"] = {"uid": ref.uid}
    if grace_period_s is not None:
        options["gracePeriodSeconds"] = int(grace_period_s)
    if dry_run:
        options["dryRun"] = ["All"]
    body: dict = {"apiVersion": EVICTION_API_VERSION, "kind": "Eviction",
                  "metadata": {"name": ref.name, "namespace": ref.namespace}}
    if options:
        body["deleteOptions"] = options
    return body


def _status_body(exc: BaseException) -> dict:
    raw = getattr(exc, "body", None)
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    try:
        body = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after_s(exc: BaseException, details: dict) -> Optional[float]:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    for candidate in (value, details.get("retryAfterSeconds")):
        try:
            if candidate is not None and float(candidate) > 0:
                return float(candidate)
        except (TypeError, ValueError):
            continue
    return None


def eviction_outcome(ref: PodRef, exc: BaseException) -> EvictionOutcome:
    """What a refused Eviction means (see EvictionResult)."""
    failure: ApiFailure = classify(exc)
    body = _status_body(exc)
    details = _as_dict(body.get("details"))
    budget = next((c for c in map(_as_dict, _as_list(details.get("causes")))
                   if c.get("reason") == DISRUPTION_BUDGET_CAUSE), None)
    retry_after = _retry_after_s(exc, details)
    if failure.status == 429 and budget is not None:
        message = str(budget.get("message") or failure.said)
        match = _BUDGET_NAME.match(message)
        return EvictionOutcome(EvictionResult.BLOCKED_BY_PDB, ref,
                               pdb=match.group("name") if match else "", message=message,
                               retry_after_s=retry_after, status=429)
    result = {ApiReason.NOT_FOUND: EvictionResult.GONE,
              ApiReason.NAMESPACE_NOT_FOUND: EvictionResult.GONE,  # its namespace went too
              ApiReason.THROTTLED: EvictionResult.THROTTLED,
              ApiReason.FORBIDDEN: EvictionResult.FORBIDDEN}.get(failure.reason,
                                                               EvictionResult.FAILED)
    message = failure.said
    if result in (EvictionResult.FORBIDDEN, EvictionResult.FAILED):
        message = describe(failure, verb="create", target=Target(
            EVICTION_RESOURCE, name=ref.name, namespace=ref.namespace))
    if failure.status == 409 and ref.uid:
        # The uid precondition failed: the pod of that name is another incarnation now, so
        # the one meant is gone (store.go Delete: Preconditions.Check).
        result = EvictionResult.GONE
    return EvictionOutcome(result, ref, pdb="", message=message, retry_after_s=retry_after,
                           status=failure.status)


# -- cordon -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CordonRecord:
    """Who cordoned the node (the annotation's JSON): the agent of node `agent`, for
    `template`, at `at` (RFC 3339)."""

    agent: str
    template: str = ""
    at: str = ""
    by: str = CORDON_RECORDER

    def encode(self) -> str:
        return json.dumps({"by": self.by, "agent": self.agent, "template": self.template,
                           "at": self.at}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Optional["CordonRecord"]:
        """The record, or None when the annotation is not one of ours (a person's value)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("by") != CORDON_RECORDER or \
                not isinstance(data.get("agent"), str) or not data["agent"]:
            return None
        return cls(agent=data["agent"], template=str(data.get("template") or ""),
                   at=str(data.get("at") or ""))


@dataclass(frozen=True)
class CordonState:
    """The node as far as cordoning goes."""

    node: str
    unschedulable: bool
    record: Optional[CordonRecord]     # our annotation, when there is one
    resource_version: str = ""
    annotation: str = ""               # the raw annotation ('' when absent)

    def cordoned_by(self, agent: str) -> bool:
        """Cordoned, and the cordon is the one `agent` recorded."""
        return self.unschedulable and self.record is not None and self.record.agent == agent


class CordonResult(StrEnum):
    CORDONED = "Cordoned"                  # cordoned now, and recorded
    ALREADY_CORDONED = "AlreadyCordoned"   # already cordoned under our record (a restart)
    CORDONED_BY_OTHERS = "CordonedByOthers"  # unschedulable without our record: left alone
    UNCORDONED = "Uncordoned"              # our cordon undone, the record removed
    RECORD_CLEARED = "RecordCleared"       # someone uncordoned already: our stale record removed
    NOT_CORDONED = "NotCordoned"           # uncordon with nothing of ours to undo
    NOT_OURS = "NotOurs"                   # cordoned, by someone else: never undone by us


@dataclass(frozen=True)
class CordonOutcome:
    result: CordonResult
    state: CordonState                     # the node after the request


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cordon_state(node: dict) -> CordonState:
    """A Node object's cordon state."""
    meta, spec = _as_dict(node.get("metadata")), _as_dict(node.get("spec"))
    annotation = _as_dict(meta.get("annotations")).get(CORDONED_BY_ANNOTATION)
    annotation = annotation if isinstance(annotation, str) else ""
    return CordonState(node=str(meta.get("name") or ""),
                       unschedulable=spec.get("unschedulable") is True,
                       record=CordonRecord.decode(annotation) if annotation else None,
                       resource_version=str(meta.get("resourceVersion") or ""),
                       annotation=annotation)


def cordon_patch(state: CordonState, record: CordonRecord) -> dict:
    """The merge patch that cordons the node under `record`, at the state's resourceVersion."""
    return {"metadata": {"resourceVersion": state.resource_version,
                         "annotations": {CORDONED_BY_ANNOTATION: record.encode()}},
            "spec": {"unschedulable": True}}


def uncordon_patch(state: CordonState) -> dict:
    """The merge patch that undoes our cordon (spec.unschedulable removed: false, as kubectl
    uncordon's strategic patch leaves it) and our record, at the state's resourceVersion. Only
    the record when the node is schedulable already (someone uncordoned it)."""
    patch: dict = {"metadata": {"resourceVersion": state.resource_version,
                                "annotations": {CORDONED_BY_ANNOTATION: None}}}
    if state.unschedulable:
        patch["spec"] = {"unschedulable": None}
    return patch


# -- the API ----------------------------------------------------------------------------------
class DrainApi:
    """The drain's requests over one KubeClient (its rate limit, timeouts and counters)."""

    def __init__(self, client: KubeClient):
        self.client = client
        self.calls = DrainCalls(client.transport)

    # -- pods
    def list_node_pods(self, node: str, *, timeout_s: float = LIST_TIMEOUT_S) -> list[NodePod]:
        """Every pod bound to `node`, any namespace (a consistent, paged read)."""
        try:
            items, _ = self.client._list(self.calls.list_pod_for_all_namespaces,
                                         field_selector=f"spec.nodeName={node}",
                                         timeout_s=timeout_s)
        except Exception as exc:
            raise named(exc, operation=DRAIN_OPERATION, verb="list",
                        target=Target(PODS_RESOURCE)) from exc
        return [pod_from_object(item) for item in items]

    def evict(self, ref: PodRef, *, grace_period_s: Optional[int] = None,
              dry_run: bool = False) -> EvictionOutcome:
        """Ask the API server to evict the pod (its PodDisruptionBudget decides). Never
        raises for an answer of the server: every one is an EvictionOutcome."""
        body = eviction_body(ref, grace_period_s=grace_period_s, dry_run=dry_run)
        try:
            answer = self.client._call(self.calls.create_namespaced_pod_eviction, ref.name,
                                       ref.namespace, body, write=True)
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome (see above)
            return eviction_outcome(ref, exc)
        answer = _as_dict(answer)
        if answer.get("kind") == "Status" and answer.get("status") == "Failure":
            # A Status of failure in a 2xx answer is a failure (client-go transformResponse).
            return EvictionOutcome(EvictionResult.FAILED, ref,
                                   message=str(answer.get("message") or ""),
                                   status=_go_int(answer.get("code")))
        return EvictionOutcome(EvictionResult.EVICTED, ref, message="Success",
                               status=_go_int(answer.get("code")) or 201)

    # -- the node's cordon
    def node_cordon(self, node: str) -> CordonState:
        """The node's cordon state now (a read of the Node)."""
        try:
            return cordon_state(self.client._call(self.client.core.read_node, node) or {})
        except Exception as exc:
            raise named(exc, operation=DRAIN_OPERATION, verb="get",
                        target=Target(NODES_RESOURCE, name=node)) from exc

    def _patch_node(self, node: str, patch: dict) -> CordonState:
        try:
            return cordon_state(self.client._call(self.calls.patch_node, node, patch,
                                                  write=True, _content_type=MERGE_PATCH) or {})
        except Exception as exc:
            raise named(exc, operation=DRAIN_OPERATION, verb="patch",
                        target=Target(NODES_RESOURCE, name=node)) from exc

    def cordon(self, node: str, *, agent: str, template: str = "",
               at: Optional[str] = None) -> CordonOutcome:
        """Cordon `node` and record that `agent` did (for `template`). A node already
        unschedulable without our record is left as it is and not recorded: its cordon is
        someone else's, and must outlive our drain."""
        record = CordonRecord(agent=agent, template=template, at=at or now_rfc3339())
        for attempt in range(CORDON_CONFLICT_RETRIES + 1):
            state = self.node_cordon(node)
            if state.unschedulable:
                if state.record is not None and state.record.agent == agent:
                    return CordonOutcome(CordonResult.ALREADY_CORDONED, state)
                return CordonOutcome(CordonResult.CORDONED_BY_OTHERS, state)
            try:
                return CordonOutcome(CordonResult.CORDONED,
                                     self._patch_node(node, cordon_patch(state, record)))
            except Exception as exc:
                if getattr(exc, "status", None) != 409 or attempt == CORDON_CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def uncordon(self, node: str, *, agent: str,
                 template: Optional[str] = None) -> CordonOutcome:
        """Undo the cordon `agent` recorded (only for `template`, when given). A cordon
        without our record is never undone."""
        for attempt in range(CORDON_CONFLICT_RETRIES + 1):
            state = self.node_cordon(node)
            record = state.record
            ours = record is not None and record.agent == agent and (
                template is None or record.template == template)
            if not ours:
                return CordonOutcome(CordonResult.NOT_OURS if state.unschedulable
                                     else CordonResult.NOT_CORDONED, state)
            try:
                after = self._patch_node(node, uncordon_patch(state))
            except Exception as exc:
                if getattr(exc, "status", None) != 409 or attempt == CORDON_CONFLICT_RETRIES:
                    raise
                continue
            return CordonOutcome(CordonResult.UNCORDONED if state.unschedulable
                                 else CordonResult.RECORD_CLEARED, after)
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["CORDONED_BY_ANNOTATION", "CordonOutcome", "CordonRecord", "CordonResult",
           "CordonState", "DrainApi", "EvictionOutcome", "EvictionResult",
           "MIRROR_POD_ANNOTATION", "NETWORK_STATUS_ANNOTATION", "NetworkAttachment",
           "NodePod", "OwnerRef", "PodRef", "cordon_patch", "cordon_state", "eviction_body",
           "eviction_outcome", "extended_resources", "parse_network_status", "pod_from_object",
           "uncordon_patch"]
