"""The ValidatingAdmissionPolicies (manifests/admission/) evaluated with a real CEL
implementation, over the requests the agent's own code sends.

RBAC cannot say "only your own object"; these policies are what stops one node's agent token
from writing another node's HostNetwork, rollout slot, address claim or Events, squatting
Leases, taking a Failed slot or deleting a live one, and writing template status while another
agent is the elected writer. A typo in their CEL would only show on a live cluster, so here the
agent's real writers (fleet/slots.py LeaseSlots, fleet/leader.py LeaderElector, fleet/writer.py
StatusWriter, pools/claims.py KubeClaims, cluster.py KubeStatusSink and KubeEvents) run against
`PolicyApi`, a client that turns each write into the admission request the API server would
build (params included: the leader Lease, the templates) and answers as the API server would
when a policy denies it (tests/security/vap.py).

The policies are read as `kubectl kustomize manifests/admission/` renders them (the files its
kustomization lists): a policy left out of it is a policy the cluster does not have, and its
checks fail (`test_a_removed_policy_is_caught`). For each policy: the agent writing for its own
node is allowed; for another node it is denied with the exact message; a user that is not the
agent is not matched; a token without the node-name extra (clusters before 1.30, or the
ServiceAccountTokenPodNodeInfo gate off) is denied, not an error.
`test_a_broken_expression_is_caught` breaks each expression in turn and shows that some check
of its policy fails.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import pathlib
from typing import Callable, Optional

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from plumber_agent.clock import FakeClock
from plumber_agent.cluster import AGENT_CONTROLLER, KubeEvents, KubeStatusSink
from plumber_agent.fleet import rollout
from plumber_agent.fleet.leader import LEADER_LEASE, LeaderElector
from plumber_agent.fleet.results import RESULTS_ANNOTATION
from plumber_agent.fleet.rollout import slot_name
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.fleet.writer import StatusWriter
from plumber_agent.kube.drain import CORDONED_BY_ANNOTATION, CordonResult, DrainApi
from plumber_agent.apierrors import NamedApiError
from plumber_agent.kube.client import KubeClient
from plumber_agent.kube.recorder import DEFAULT_NAMESPACE as EVENT_NAMESPACE
from plumber_agent.kube.recorder import EventBroadcaster
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from plumber_agent.pools.claims import Claim, KubeClaims, claim_from_object, claim_object
from tests.fakeapi.server import json_patch, merge_patch
from tests.manifests.test_deploy import _kustomize as kustomize
from tests.security import vap

ADMISSION_DIR = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "admission"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def kustomized_documents() -> list[dict]:
    """What `kubectl kustomize manifests/admission/` renders: the files its kustomization lists,
    in order (test_kustomize_renders_exactly_these checks it against kubectl's own output)."""
    listed = yaml.safe_load((ADMISSION_DIR / "kustomization.yaml").read_text())["resources"]
    return [d for d in vap.load_documents(ADMISSION_DIR / name for name in listed)
            if d.get("kind") in POLICY_KINDS]


DOCUMENTS = kustomized_documents()

NAMESPACE = "plumber-system"  # manifests/kustomization.yaml
AGENT = f"system:serviceaccount:{NAMESPACE}:plumber-agent"  # the DaemonSet's serviceAccountName
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
GROUP, VERSION = "plumber.k8s.pf9.io", "v1"

LEASES = "plumber-agent-own-leases"
STALE_SLOTS = "plumber-agent-stale-slots"
CLAIMS = "plumber-agent-own-address-claims"
HOSTNETWORKS = "plumber-agent-own-hostnetwork"
TEMPLATE_STATUS = "plumber-agent-template-status-by-leader"
EVENTS = "plumber-agent-own-events"
NODE_CORDON = "plumber-agent-own-node-cordon"
# Every policy's message when the token names no node (clusters before 1.30): it says why,
# instead of naming an object as if it were another node's.
NO_NODE = ("the plumber agent's token names no node (user extra "
           "authentication.kubernetes.io/node-name, Kubernetes 1.30+), so its own node is unknown")


def denial_text(policy: str, message: str) -> str:
    """What the API server answers for a denying validation (dispatcher.go Dispatch): the
    bindings are named after their policies."""
    return (f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "
            f"{message}")


# -- who sends the request ----------------------------------------------------------------
def agent_user(node: Optional[str], *, extras: bool = True) -> vap.UserInfo:
    """The agent's pod-bound projected token as the API server authenticates it (1.30+:
    node-name and node-uid with the pod's; `node=None` is a token without the node claim)."""
    extra = {}
    if extras:
        extra = {"authentication.kubernetes.io/credential-id": ["JTI=3f1c2a9e-token"],
                 "authentication.kubernetes.io/pod-name": ["plumber-agent-x7k2p"],
                 "authentication.kubernetes.io/pod-uid": ["pod-uid-1"]}
        if node is not None:
            extra[NODE_NAME_EXTRA] = [node]
            extra["authentication.kubernetes.io/node-uid"] = [f"uid-{node}"]
    return vap.UserInfo(AGENT, "sa-uid-plumber-agent",
                        ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                         "system:authenticated"), extra)


ADMIN = vap.UserInfo("kubernetes-admin", groups=("kubeadm:cluster-admins",
                                                 "system:authenticated"))
GARBAGE_COLLECTOR = vap.UserInfo("system:serviceaccount:kube-system:generic-garbage-collector",
                                 "sa-uid-gc", ("system:serviceaccounts",
                                               "system:serviceaccounts:kube-system",
                                               "system:authenticated"))
# Another workload's pod-bound token on node-a: same extras as the agent, another name.
OTHER_WORKLOAD = vap.UserInfo("system:serviceaccount:kube-system:lease-tool", "sa-uid-tool",
                              ("system:serviceaccounts", "system:authenticated"),
                              {NODE_NAME_EXTRA: ["node-a"]})


# -- the API server, as far as admission goes ---------------------------------------------
class PolicyApi:
    """The KubeClient methods the agent's writers call, over an in-memory store. Every write
    becomes admission.Attributes (operation, resource, subresource, name, namespace, object,
    oldObject, options) and goes through the policies; a denial is raised as the
    ApiException the kubernetes client raises for the API server's Status."""

    def __init__(self, policies, user: vap.UserInfo) -> None:
        self.policies, self.user = policies, user
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.admitted: list[vap.Attributes] = []
        self.denials: list[vap.Denial] = []
        self._versions = itertools.count(100)

    # -- the admission step
    def _admit(self, operation: str, resource: str, kind: str, name: str, *, namespace="",
               group=GROUP, version=VERSION, subresource="", obj=None, old=None,
               options=None) -> None:
        attr = vap.Attributes(operation=operation, group=group, version=version,
                              resource=resource, kind=kind, name=name, user=self.user,
                              namespace=namespace, subresource=subresource,
                              obj=copy.deepcopy(obj), old_obj=copy.deepcopy(old),
                              options=options)
        denial = vap.dispatch(self.policies, attr,
                              vap.namespace_object(namespace) if namespace else None,
                              params=self.params_of)
        if denial is not None:
            self.denials.append(denial)
            exc = ApiException(status=denial.code, reason=denial.reason)
            exc.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": denial.message, "reason": denial.reason,
                                   "code": denial.code})
            raise exc
        self.admitted.append(attr)

    def _stored(self, body: dict, *, api_version: str, kind: str, namespace: str = "") -> dict:
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._versions))
        return obj

    def params_of(self, kind: dict) -> Optional[tuple[bool, list[dict]]]:
        """The API server's param informers: every Lease (namespaced), every template."""
        resource = {("coordination.k8s.io/v1", "Lease"): "leases",
                    (f"{GROUP}/{VERSION}", "HostNetworkTemplate"): "hostnetworktemplates"}.get(
            (kind.get("apiVersion"), kind.get("kind")))
        if resource is None:
            return None
        return resource == "leases", [copy.deepcopy(obj) for (res, _, _), obj
                                      in self.objects.items() if res == resource]

    @staticmethod
    def _options(kind: str, **fields) -> dict:
        return {"kind": kind, "apiVersion": "meta.k8s.io/v1", **fields}

    def put(self, resource: str, obj: dict, *, namespace: str = "") -> dict:
        """Seed an object (written by someone else, before the test)."""
        api_version = "coordination.k8s.io/v1" if resource == "leases" else f"{GROUP}/{VERSION}"
        kind = {"leases": "Lease", "addressclaims": "AddressClaim", "hostnetworks": "HostNetwork",
                "hostnetworktemplates": "HostNetworkTemplate"}[resource]
        stored = self._stored(obj, api_version=api_version, kind=kind, namespace=namespace)
        self.objects[(resource, namespace, stored["metadata"]["name"])] = stored
        return stored

    # -- Nodes
    def get_node(self, name: str) -> dict:
        stored = self.objects.get(("nodes", "", name))
        if stored is not None:
            return copy.deepcopy(stored)
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
                                                                 "uid": f"uid-{name}"}}

    def put_node(self, name: str, *, unschedulable: bool = False,
                 annotations: Optional[dict] = None) -> dict:
        """Seed a Node as the kubelet registers it (cordoned by someone, when asked)."""
        obj = self._stored({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                                         "annotations": dict(annotations or {
                                             "node.alpha.kubernetes.io/ttl": "0"})},
                            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"],
                                     "providerID": f"kind://{name}"}},
                           api_version="v1", kind="Node")
        if unschedulable:
            obj["spec"]["unschedulable"] = True
        self.objects[("nodes", "", name)] = obj
        return obj

    def patch_node(self, name: str, patch: dict) -> dict:
        """A merge patch of a Node: an UPDATE of nodes (nodeStrategy.PrepareForUpdate keeps
        the status), its resourceVersion a precondition."""
        old = self.objects.get(("nodes", "", name))
        if old is None:
            raise ApiException(status=404, reason="NotFound")
        sent = (patch.get("metadata") or {}).get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        obj = merge_patch(copy.deepcopy(old), patch)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self._admit("UPDATE", "nodes", "Node", name, group="", version="v1", obj=obj, old=old,
                    options=self._options("UpdateOptions"))
        self.objects[("nodes", "", name)] = obj
        return copy.deepcopy(obj)

    # -- Leases (create, update: PUT; delete)
    def leases(self) -> dict:
        return {name: obj for (res, ns, name), obj in self.objects.items()
                if res == "leases" and ns == NAMESPACE}

    def create_lease(self, namespace: str, body: dict) -> dict:
        obj = self._stored(body, api_version="coordination.k8s.io/v1", kind="Lease",
                           namespace=namespace)
        name = obj["metadata"]["name"]
        if ("leases", namespace, name) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self._admit("CREATE", "leases", "Lease", name, namespace=namespace,
                    group="coordination.k8s.io", obj=obj, options=self._options("CreateOptions"))
        self.objects[("leases", namespace, name)] = obj
        return copy.deepcopy(obj)

    def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        old = self.objects.get(("leases", namespace, name))
        if old is None:
            raise ApiException(status=404, reason="NotFound")
        if body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        obj = self._stored({**body, "metadata": {**body["metadata"],
                                                 "uid": old["metadata"]["uid"]}},
                           api_version="coordination.k8s.io/v1", kind="Lease",
                           namespace=namespace)
        self._admit("UPDATE", "leases", "Lease", name, namespace=namespace,
                    group="coordination.k8s.io", obj=obj, old=old,
                    options=self._options("UpdateOptions"))
        self.objects[("leases", namespace, name)] = obj
        return copy.deepcopy(obj)

    def delete_lease(self, namespace: str, name: str, *,
                     resource_version: Optional[str] = None) -> bool:
        old = self.objects.get(("leases", namespace, name))
        if old is None:
            return False
        self._admit("DELETE", "leases", "Lease", name, namespace=namespace,
                    group="coordination.k8s.io", old=old, options=self._options(
                        "DeleteOptions", preconditions={"resourceVersion": resource_version}))
        del self.objects[("leases", namespace, name)]
        return True

    # -- AddressClaims (create, delete)
    def claims(self) -> dict:
        return {name: obj for (res, _, name), obj in self.objects.items()
                if res == "addressclaims"}

    def create_address_claim(self, body: dict) -> dict:
        obj = self._stored(body, api_version=f"{GROUP}/{VERSION}", kind="AddressClaim")
        name = obj["metadata"]["name"]
        if ("addressclaims", "", name) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self._admit("CREATE", "addressclaims", "AddressClaim", name, obj=obj,
                    options=self._options("CreateOptions"))
        self.objects[("addressclaims", "", name)] = obj
        return copy.deepcopy(obj)

    def get_address_claim(self, name: str) -> Optional[dict]:
        return copy.deepcopy(self.objects.get(("addressclaims", "", name)))

    def delete_address_claim(self, name: str, *, resource_version: Optional[str] = None) -> bool:
        old = self.objects.get(("addressclaims", "", name))
        if old is None:
            return False
        self._admit("DELETE", "addressclaims", "AddressClaim", name, old=old,
                    options=self._options("DeleteOptions",
                                          preconditions={"resourceVersion": resource_version}))
        del self.objects[("addressclaims", "", name)]
        return True

    # -- HostNetworks (create; status: merge patch or JSON patch, an UPDATE of hostnetworks/status)
    def get_hostnetwork(self, name: str) -> Optional[dict]:
        return copy.deepcopy(self.objects.get(("hostnetworks", "", name)))

    def create_hostnetwork(self, body: dict) -> dict:
        obj = self._stored(body, api_version=f"{GROUP}/{VERSION}", kind="HostNetwork")
        name = obj["metadata"]["name"]
        self._admit("CREATE", "hostnetworks", "HostNetwork", name, obj=obj,
                    options=self._options("CreateOptions"))
        self.objects[("hostnetworks", "", name)] = obj
        return copy.deepcopy(obj)

    def _patch_status(self, name: str, apply: Callable[[dict], dict]) -> dict:
        old = self.objects.get(("hostnetworks", "", name))
        if old is None:
            raise ApiException(status=404, reason="NotFound")
        patched = apply(copy.deepcopy(old))
        obj = {**copy.deepcopy(old), "status": patched.get("status")}  # the status subresource
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        # handlers/patch.go: a PATCH is admitted as an UPDATE, with UpdateOptions
        self._admit("UPDATE", "hostnetworks", "HostNetwork", name, subresource="status",
                    obj=obj, old=old, options=self._options("UpdateOptions"))
        self.objects[("hostnetworks", "", name)] = obj
        return copy.deepcopy(obj)

    def patch_hostnetwork_status(self, name: str, patch: dict) -> dict:
        return self._patch_status(name, lambda old: merge_patch(old, patch))

    def patch_hostnetwork(self, name: str, patch: dict) -> dict:
        """A merge patch of the main resource (the template-results annotation): an UPDATE of
        hostnetworks that keeps the status (customresource/strategy.go PrepareForUpdate)."""
        old = self.objects.get(("hostnetworks", "", name))
        if old is None:
            raise ApiException(status=404, reason="NotFound")
        obj = {**merge_patch(copy.deepcopy(old), patch), "status": copy.deepcopy(old.get("status"))}
        if obj["status"] is None:
            del obj["status"]
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self._admit("UPDATE", "hostnetworks", "HostNetwork", name, obj=obj, old=old,
                    options=self._options("UpdateOptions"))
        self.objects[("hostnetworks", "", name)] = obj
        return copy.deepcopy(obj)

    def json_patch_hostnetwork_status(self, name: str, operations: list) -> dict:
        return self._patch_status(name, lambda old: json_patch(old, operations))

    # -- templates (the status writer: read one, merge-patch the status subresource)
    def get_template(self, name: str) -> Optional[dict]:
        return copy.deepcopy(self.objects.get(("hostnetworktemplates", "", name)))

    def patch_template_status(self, name: str, patch: dict) -> dict:
        old = self.objects.get(("hostnetworktemplates", "", name))
        if old is None:
            raise ApiException(status=404, reason="NotFound")
        obj = {**copy.deepcopy(old), "status": merge_patch(copy.deepcopy(old), patch).get("status")}
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self._admit("UPDATE", "hostnetworktemplates", "HostNetworkTemplate", name,
                    subresource="status", obj=obj, old=old, options=self._options("UpdateOptions"))
        self.objects[("hostnetworktemplates", "", name)] = obj
        return copy.deepcopy(obj)

    # -- Events (core v1 or events.k8s.io/v1: whichever the body is)
    def events(self) -> list[dict]:
        return [obj for (res, _, _), obj in self.objects.items() if res == "events"]

    def create_event(self, namespace: str, body: dict) -> dict:
        """kube/client.py KubeClient.create_event's own body (run on a stand-in that captures
        the request instead of sending it), admitted as the API server would."""
        sent: list = []
        KubeClient.create_event(_CapturingClient(sent), namespace, body)
        ((namespace, body),) = sent
        return self.post_event(namespace, body)

    def post_event(self, namespace: str, body: dict) -> dict:
        group = body["apiVersion"].rpartition("/")[0]
        meta = {**body["metadata"], "name": body["metadata"].get("name") or
                body["metadata"].get("generateName", "event.") + f"{len(self.events()):05d}"}
        obj = self._stored({**body, "metadata": meta}, api_version=body["apiVersion"],
                           kind="Event", namespace=namespace)
        self._admit("CREATE", "events", "Event", meta["name"], namespace=namespace, group=group,
                    obj=obj, options=self._options("CreateOptions"))
        self.objects[("events", namespace, meta["name"])] = obj
        return copy.deepcopy(obj)


class _CapturingClient:
    """Stands in for KubeClient's transport: `_call(api_method, *args)` records the Event body
    (a dict of kind Event) and its namespace; every API object it is asked for is a stub."""

    def __init__(self, sent: list) -> None:
        self._sent = sent

    def _call(self, _method, *args, **_kwargs):
        body = next(a for a in args if isinstance(a, dict) and a.get("kind") == "Event")
        namespace = next((a for a in args if isinstance(a, str)),
                         body["metadata"].get("namespace"))
        self._sent.append((namespace, body))
        return body

    def __getattr__(self, name: str):
        return _Stub()


class _Stub:
    def __getattr__(self, name: str) -> str:
        return name


class _NodeClient:
    """Stands in for the KubeClient under kube/drain.py's DrainApi: its Node requests (read,
    merge-patch) go to PolicyApi, admitted as the API server would."""

    transport = None

    def __init__(self, api: "PolicyApi") -> None:
        self._api = api
        self.core = _Stub()

    def _call(self, method, *args, **_kwargs):
        name = method if isinstance(method, str) else method.__name__
        if name == "read_node":
            return self._api.get_node(args[0])
        if name == "patch_node":
            return self._api.patch_node(args[0], args[1])
        raise AssertionError(f"the cordon does not call {name}")


def drain_of(api: "PolicyApi") -> DrainApi:
    return DrainApi(_NodeClient(api))


POLICIES = vap.load_from(DOCUMENTS)


# -- the agent's writers --------------------------------------------------------------------
TEMPLATE_OBJECT = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetworkTemplate",
    "metadata": {"name": "mtu", "generation": 1, "uid": "uid-mtu",
                 "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
             "rollout": {"maxUnavailable": 1}}}
TEMPLATE = template_from_object(TEMPLATE_OBJECT)
SLOT = slot_name("mtu", 0)


def edited_template(mtu: int = 9100) -> dict:
    """TEMPLATE_OBJECT after an edit of its network spec: generation 2, a new rollout."""
    obj = copy.deepcopy(TEMPLATE_OBJECT)
    obj["metadata"]["generation"] = 2
    obj["spec"]["interfaceConfig"][0]["mtu"] = mtu
    return obj


def put_template(api: "PolicyApi", obj: Optional[dict] = None) -> dict:
    """The template as the API server stores it (a param of the stale-slot policy)."""
    return api.put("hostnetworktemplates", copy.deepcopy(obj or TEMPLATE_OBJECT))


def offered_to(node: str):
    """TEMPLATE with the status writer's offer of slot 0 to `node` (a waiting node claims only
    the slot it is offered, docs/rollout.md)."""
    return dataclasses.replace(TEMPLATE, offered={node: 0})


def lease_slots(api: PolicyApi, node: str, clock: FakeClock) -> LeaseSlots:
    """fleet/slots.py as cluster.py wires it (slots read from the Lease store)."""
    return LeaseSlots(client=api, namespace=NAMESPACE, node=node, node_uid=lambda: f"uid-{node}",
                      store=api.leases, read_slots=slot_reader(api.leases, clock), clock=clock,
                      wake=lambda _s: None)


def claim_slot(api: PolicyApi, node: str, clock: Optional[FakeClock] = None) -> bool:
    clock = clock or FakeClock()
    slots = lease_slots(api, node, clock)
    admission = slots.admission(offered_to(node), 1)
    assert admission.admit, admission
    return slots.claim(TEMPLATE, admission)


def stale_slot_of_node_z(policies, *, token_node: str, acting_as: str):
    """node-z claimed SLOT and died; a slot reader that has watched it unchanged for longer
    than its duration (30 s) sees it free. Returns the API (now used with `token_node`'s
    token), the slots of `acting_as` and its admission to take the slot over with a PUT."""
    api, clock = PolicyApi(policies, agent_user("node-z")), FakeClock()
    put_template(api)
    assert claim_slot(api, "node-z", clock)
    api.user = agent_user(token_node)
    slots = lease_slots(api, acting_as, clock)
    slots.admission(offered_to(acting_as), 1)
    clock.advance(31)
    return api, slots, slots.admission(offered_to(acting_as), 1)


def elect(api: PolicyApi, node: str) -> bool:
    elector = LeaderElector(client=api, namespace=NAMESPACE, identity=node, clock=FakeClock(),
                            lead=lambda _stop: None,
                            read=lambda: api.leases().get(LEADER_LEASE))
    return elector.try_acquire_or_renew()


def address_claim(node: str, address: str = "10.20.0.7") -> Claim:
    return Claim(name=address.replace(".", "-"), address=address, prefix_length=24, node=node,
                 node_uid=f"uid-{node}", template="storage", interface="eno1.200",
                 pool="10.20.0.0/24", pool_id="pool-storage")


def seeded_claim(api: PolicyApi, node: str) -> Claim:
    """A claim `node` holds (created earlier, by that node's agent)."""
    return claim_from_object(api.put("addressclaims", claim_object(address_claim(node))))


def publish_status(api: PolicyApi, node: str) -> KubeStatusSink:
    """cluster.py KubeStatusSink as the reporter drives it: ensure (get, else create), then the
    first status (a merge patch) and a changed one (a JSON patch guarded by resourceVersion)."""
    sink = KubeStatusSink(api, node)
    sink.ensure()
    sink.write({"interfaceStatus": [{"pfName": "eno1", "mtu": 1500}]})
    sink.write({"interfaceStatus": [{"pfName": "eno1", "mtu": 9000}]})
    return sink


def only_denial(api: PolicyApi) -> vap.Denial:
    assert len(api.denials) == 1, api.denials
    return api.denials[0]


# -- the checks, one per (policy, case); each takes the policies so that a broken copy can be
# run through the same checks ------------------------------------------------------------
HOLD_OWN = "the plumber agent may hold a Lease only for its own node, not "
SHAPE = ("the plumber agent may write only its rollout slots (label "
         "plumber.k8s.pf9.io/lease=rollout-slot, named rollout-<template>-<i>) and the status "
         "writer Lease plumber-status-writer (label plumber.k8s.pf9.io/lease=leader), not ")
OWNED = ("the plumber agent's rollout slots must be owned by its own Node (an ownerReference "
         "with the name and uid of the node its token is bound to), so that deleting the Node "
         "frees them")
LEADER_DELETE = "the plumber agent may delete the status writer Lease only while it holds it, not while "


def still_counts(slot: str, holder: str, generation: int = 1) -> str:
    return (f"another node's rollout slot counts until its template is deleted or edited: "
            f"{slot} holds {holder} in generation {generation} of template mtu, still the "
            f"current one, so the plumber agent may neither delete it nor take it over")


def failed_slot_of(api: PolicyApi, node: str) -> dict:
    """`node` (its own token) claimed SLOT and its apply failed: the slot is Failed."""
    user, api.user = api.user, agent_user(node)
    clock = FakeClock()
    assert claim_slot(api, node, clock)
    lease_slots(api, node, clock)  # a fresh process would adopt it; the one that claimed fails it
    slots = lease_slots(api, node, clock)
    slots.claim(TEMPLATE, slots.admission(TEMPLATE, 1))
    slots.fail(TEMPLATE, "set_mtu eno1: Numerical result out of range")
    api.user = user
    lease = api.leases()[SLOT]
    assert lease["metadata"]["annotations"][rollout.PHASE_ANNOTATION] == TemplateState.FAILED
    return lease


def take_over(api: PolicyApi, node: str, template=TEMPLATE) -> bool:
    """`node`'s LeaseSlots claiming SLOT over whatever holds it (a PUT, as after `decide`)."""
    slots = lease_slots(api, node, FakeClock())
    over = rollout.slot_from_lease(api.leases()[SLOT], unchanged_for_s=0.0)
    return slots.claim(template, rollout.Admission(admit=True, limit=1, claim=SLOT,
                                                   claim_over=over))


def collect_stale_slots(api: PolicyApi, node: str, *, quiet_s: float = 0.0) -> None:
    """fleet/writer.py's clean-up, as `node` runs it while elected, over the stored templates
    and a slot reader that has seen every slot unchanged for `quiet_s`."""
    clock = FakeClock()
    read = slot_reader(api.leases, clock)
    read()
    clock.advance(quiet_s)
    templates = [template_from_object(o) for (res, _, _), o in api.objects.items()
                 if res == "hostnetworktemplates"]
    writer = StatusWriter(client=api, namespace=NAMESPACE, identity=node, clock=clock,
                          templates=dict, slots=read, make_reflector=lambda *a, **k: None)
    writer._collect_stale_slots(templates, read())


def status_writer(api: PolicyApi, node: str) -> StatusWriter:
    """fleet/writer.py as `node` runs it while elected, over the stored templates."""
    templates = {name: obj for (res, _, name), obj in api.objects.items()
                 if res == "hostnetworktemplates"}
    return StatusWriter(client=api, namespace=NAMESPACE, identity=node, clock=FakeClock(),
                        templates=lambda: templates, slots=list,
                        make_reflector=lambda *a, **k: None)


def leases_own_node(policies) -> None:
    """A slot claimed, marked failed, released; the leader Lease taken and released; a stale
    slot of a dead node taken over: all allowed."""
    api, clock = PolicyApi(policies, agent_user("node-a")), FakeClock()
    put_template(api)
    assert claim_slot(api, "node-a", clock)
    slots = lease_slots(api, "node-a", clock)
    slots.claim(TEMPLATE, slots.admission(TEMPLATE, 1))  # adopts its own slot
    slots.fail(TEMPLATE, "set_mtu eno1: Numerical result out of range")  # PUT
    assert elect(api, "node-a")
    slots.release(TEMPLATE)
    leader = api.leases()[LEADER_LEASE]
    assert api.delete_lease(NAMESPACE, LEADER_LEASE,
                            resource_version=leader["metadata"]["resourceVersion"])
    assert not api.denials, api.denials
    ops = [(a.operation, a.name) for a in api.admitted if a.resource == "leases"]
    assert ops == [("CREATE", SLOT), ("UPDATE", SLOT), ("CREATE", LEADER_LEASE),
                   ("DELETE", SLOT), ("DELETE", LEADER_LEASE)], ops

    # node-z's slot went stale (node-z died): node-a takes it over with a PUT.
    api, slots, admission = stale_slot_of_node_z(policies, token_node="node-a",
                                                 acting_as="node-a")
    assert admission.claim_over is not None, admission
    assert slots.claim(TEMPLATE, admission) and not api.denials, api.denials
    assert api.admitted[-1].operation == "UPDATE"
    assert api.admitted[-1].old_obj["spec"]["holderIdentity"] == "node-z"
    assert api.leases()[SLOT]["spec"]["leaseTransitions"] == 1


def leases_other_node(policies) -> None:
    """An agent whose token is bound to node-a but that acts as node-b: refused."""
    api = PolicyApi(policies, agent_user("node-a"))
    assert not claim_slot(api, "node-b")
    denial = only_denial(api)
    assert (denial.code, denial.reason) == (403, "Forbidden")
    assert denial.message == (
        f'leases.coordination.k8s.io "{SLOT}" is forbidden: '
        + denial_text(LEASES, HOLD_OWN + "node-b"))
    assert not elect(api, "node-b")
    assert api.denials[-1].policy_message == denial_text(LEASES, HOLD_OWN + "node-b")
    assert api.leases() == {}


def leases_takeover_for_other_node(policies) -> None:
    """Taking over node-z's stale slot in node-b's name (a PUT): refused too."""
    api, slots, admission = stale_slot_of_node_z(policies, token_node="node-a",
                                                 acting_as="node-b")
    assert admission.claim_over is not None, admission
    assert not slots.claim(TEMPLATE, admission)
    assert only_denial(api).policy_message == denial_text(LEASES, HOLD_OWN + "node-b")
    assert api.leases()[SLOT]["spec"]["holderIdentity"] == "node-z"


def leases_not_the_agent(policies) -> None:
    """Other users are not the policy's business (matchConditions false: not evaluated), nor
    is a live slot deleted by an admin."""
    for user in (ADMIN, OTHER_WORKLOAD):
        api = PolicyApi(policies, user)
        put_template(api)
        assert claim_slot(api, "node-b") and elect(api, "node-b"), api.denials
        api.put("leases", {"metadata": {"name": "squat"}, "spec": {}}, namespace=NAMESPACE)
        assert api.delete_lease(NAMESPACE, SLOT) and api.delete_lease(NAMESPACE, "squat")
        assert not api.denials


def leases_without_node_claim(policies) -> None:
    """A token without the node-name extra is refused (no extras at all, or others only)."""
    for user in (agent_user(None, extras=False), agent_user(None)):
        api = PolicyApi(policies, user)
        assert not claim_slot(api, "node-a")
        denial = only_denial(api)
        assert (denial.code, denial.decision.evaluation) == (403, "deny"), denial
        assert denial.policy_message == denial_text(LEASES, NO_NODE)


def leases_without_holder(policies) -> None:
    """A slot with no holderIdentity is refused with "(nobody)", not an evaluation error."""
    api = PolicyApi(policies, agent_user("node-a"))
    with pytest.raises(ApiException) as raised:
        api.create_lease(NAMESPACE, {"metadata": {
            "name": "rollout-mtu-0", "labels": {rollout.LEASE_ROLE_LABEL: rollout.SLOT_ROLE}},
            "spec": {"leaseDurationSeconds": 30}})
    assert raised.value.status == 403
    assert only_denial(api).policy_message == denial_text(LEASES, HOLD_OWN + "(nobody)")


def leases_squatting(policies) -> None:
    """Leases that are not the agent's slots or leader Lease, and slots not owned by the
    agent's Node (deleting a squatter's Node would not free them): refused."""
    api = PolicyApi(policies, agent_user("node-a"))
    mine = {"holderIdentity": "node-a", "leaseDurationSeconds": 30}
    owner = [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-node-a"}]
    slot_label = {rollout.LEASE_ROLE_LABEL: rollout.SLOT_ROLE}
    cases = [
        ({"name": "squat"}, SHAPE + "squat"),
        ({"name": "rollout-mtu-0", "labels": {rollout.LEASE_ROLE_LABEL: "leader"}},
         SHAPE + "rollout-mtu-0"),
        ({"name": "kube-scheduler", "labels": slot_label, "ownerReferences": owner},
         SHAPE + "kube-scheduler"),
        ({"name": "rollout-mtu-0", "labels": slot_label}, OWNED),
        ({"name": "rollout-mtu-0", "labels": slot_label, "ownerReferences": [
            {**owner[0], "name": "node-b", "uid": "uid-node-b"}]}, OWNED),
        ({"name": "rollout-mtu-0", "labels": slot_label, "ownerReferences": [
            {**owner[0], "uid": "uid-of-a-deleted-node-a"}]}, OWNED),
    ]
    for meta, message in cases:
        with pytest.raises(ApiException):
            api.create_lease(NAMESPACE, {"metadata": meta, "spec": mine})
        assert api.denials[-1].policy_message == denial_text(LEASES, message), meta
    assert len(api.denials) == len(cases) and api.leases() == {}


def leases_squatted_slot_is_harmless(policies) -> None:
    """A slot squatted for a template that does not exist (any uid but the live template's),
    even marked Failed: it counts for no rollout, so a node offered it takes it over (a PUT)
    and any agent may delete one (the stale-slot policy finds no template of that uid)."""
    for index, node in ((0, "node-b"), (1, None)):
        api = PolicyApi(policies, agent_user("node-a"))
        put_template(api)
        ghost = dataclasses.replace(TEMPLATE, uid="uid-ghost")
        squatter = lease_slots(api, "node-a", FakeClock())
        assert squatter.claim(ghost, rollout.Admission(admit=True, limit=1, claim=SLOT))
        squatter.fail(ghost, "never")
        assert not api.denials, api.denials
        api.user = agent_user("node-b")
        if node is not None:
            slots = lease_slots(api, node, FakeClock())
            admission = slots.admission(offered_to(node), 1)
            assert admission.claim == SLOT and admission.claim_over is not None, admission
            assert slots.claim(TEMPLATE, admission), api.denials
            assert api.leases()[SLOT]["spec"]["holderIdentity"] == "node-b"
        else:
            assert api.delete_lease(NAMESPACE, SLOT), api.denials
        assert not api.denials, api.denials


def leases_squatter_holds_one_place(policies) -> None:
    """What no policy can refuse (it sees one Lease, not the others): node-a holding both slots
    of a rollout of maxUnavailable 2, Failed so that nobody may take them over. It counts as one
    node (rollout.counted_slots): node-b claims the next name, node-c waits."""
    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api)
    for index in (0, 1):
        squatter = lease_slots(api, "node-a", FakeClock())
        assert squatter.claim(TEMPLATE, rollout.Admission(admit=True, limit=2,
                                                          claim=slot_name("mtu", index)))
        squatter.fail(TEMPLATE, "squatting")
    api.user = agent_user("node-b")
    slots = lease_slots(api, "node-b", FakeClock())
    admission = slots.admission(dataclasses.replace(TEMPLATE, offered={"node-b": 2}), 2)
    assert admission.claim == slot_name("mtu", 2) and slots.claim(TEMPLATE, admission)
    api.user = agent_user("node-c")
    assert not lease_slots(api, "node-c", FakeClock()).admission(TEMPLATE, 2).admit
    assert not api.denials, api.denials


def leases_failed_slot_is_not_taken_over(policies) -> None:
    """node-z's apply failed: its Failed slot halts the rollout until it succeeds or the
    template changes. node-a taking it over (a PUT in its own name) is refused; once the
    template's spec is edited (generation 2), a waiter of the new rollout takes it over."""
    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api)
    failed_slot_of(api, "node-z")
    assert not take_over(api, "node-a")
    assert only_denial(api).policy_message == denial_text(STALE_SLOTS,
                                                          still_counts(SLOT, "node-z"))
    assert api.leases()[SLOT]["spec"]["holderIdentity"] == "node-z"
    put_template(api, edited_template())
    v2 = template_from_object(edited_template())
    slots = lease_slots(api, "node-a", FakeClock())
    admission = slots.admission(dataclasses.replace(v2, offered={"node-a": 0}), 1)
    assert admission.claim == SLOT and admission.claim_over is not None, admission
    assert slots.claim(v2, admission) and len(api.denials) == 1, api.denials
    assert api.leases()[SLOT]["spec"]["holderIdentity"] == "node-a"


def leases_stale_slots_are_deleted(policies) -> None:
    """fleet/writer.py's clean-up of other nodes' slots: of a deleted template (quiet for twice
    its duration, and not on the server) and of a spec edited away: allowed."""
    api = PolicyApi(policies, agent_user("node-a"))
    failed_slot_of(api, "node-z")  # the template was deleted since
    collect_stale_slots(api, "node-a", quiet_s=61)
    assert not api.denials and api.leases() == {}, api.denials

    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api)
    failed_slot_of(api, "node-z")
    put_template(api, edited_template())
    collect_stale_slots(api, "node-a")
    assert not api.denials and api.leases() == {}, api.denials
    assert [a.operation for a in api.admitted if a.resource == "leases"][-1] == "DELETE"


def leases_live_slots_are_not_deleted(policies) -> None:
    """A delete of another node's slot of the current rollout (Applying or Failed): refused;
    it would let one more node apply, or lift a halt."""
    api = PolicyApi(policies, agent_user("node-z"))
    put_template(api)
    assert claim_slot(api, "node-z")
    api.user = agent_user("node-a")
    with pytest.raises(ApiException):
        api.delete_lease(NAMESPACE, SLOT)
    failed_slot_of(api, "node-z")
    with pytest.raises(ApiException):
        api.delete_lease(NAMESPACE, SLOT)
    assert [d.policy_message for d in api.denials] == [
        denial_text(STALE_SLOTS, still_counts(SLOT, "node-z"))] * 2
    assert SLOT in api.leases()


def leases_leader_lease(policies) -> None:
    """node-a is the status writer. node-b may not delete its Lease; a takeover (a PUT) is
    allowed, CEL having no clock to tell that node-a stopped renewing, but only counted (one
    more leaseTransition); a renewal must not count one."""
    api = PolicyApi(policies, agent_user("node-a"))
    assert elect(api, "node-a")
    api.user = agent_user("node-b")
    with pytest.raises(ApiException):
        api.delete_lease(NAMESPACE, LEADER_LEASE)
    assert only_denial(api).policy_message == denial_text(LEASES, LEADER_DELETE + "node-a does")
    held = api.leases()[LEADER_LEASE]
    hidden = copy.deepcopy(held)
    hidden["spec"]["holderIdentity"] = "node-b"
    with pytest.raises(ApiException):
        api.replace_lease(NAMESPACE, LEADER_LEASE, hidden)
    assert api.denials[-1].policy_message == denial_text(
        LEASES, "leaseTransitions counts every change of holder: node-a to node-b must add one "
                "to it")
    counted = copy.deepcopy(hidden)
    counted["spec"]["leaseTransitions"] = held["spec"]["leaseTransitions"] + 1
    api.replace_lease(NAMESPACE, LEADER_LEASE, counted)
    renewal = copy.deepcopy(api.leases()[LEADER_LEASE])
    renewal["spec"]["leaseTransitions"] = 0
    with pytest.raises(ApiException):
        api.replace_lease(NAMESPACE, LEADER_LEASE, renewal)
    assert api.denials[-1].policy_message == denial_text(
        LEASES, "leaseTransitions counts every change of holder: node-b to node-b must keep it")
    assert len(api.denials) == 3


def stale_slots_not_the_agent(policies) -> None:
    """People and the garbage collector delete whatever slot they like."""
    for user in (ADMIN, GARBAGE_COLLECTOR):
        api = PolicyApi(policies, agent_user("node-z"))
        put_template(api)
        assert claim_slot(api, "node-z")
        api.user = user
        assert api.delete_lease(NAMESPACE, SLOT) and not api.denials, api.denials


def claims_own_node(policies) -> None:
    """pools/claims.py KubeClaims: create a claim for node-a, then release it: allowed."""
    api = PolicyApi(policies, agent_user("node-a"))
    claims = KubeClaims(api, api.claims)
    created = claims.create(address_claim("node-a"))
    claims.delete(created)
    assert not api.denials and api.claims() == {}
    assert [(a.operation, a.obj is None, a.old_obj is None) for a in api.admitted] == [
        ("CREATE", False, True), ("DELETE", True, False)]


def claims_other_node(policies) -> None:
    """Claiming an address in node-b's name, or freeing node-b's address: refused."""
    api = PolicyApi(policies, agent_user("node-a"))
    claims = KubeClaims(api, api.claims)
    with pytest.raises(ApiException) as raised:
        claims.create(address_claim("node-b"))
    message = "the plumber agent may claim and release addresses only for its own node, not node-b"
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["message"] == (
        'addressclaims.plumber.k8s.pf9.io "10-20-0-7" is forbidden: '
        + denial_text(CLAIMS, message))
    theirs = seeded_claim(api, "node-b")
    with pytest.raises(ApiException):
        claims.delete(theirs)
    assert [d.policy_message for d in api.denials] == [denial_text(CLAIMS, message)] * 2
    assert list(api.claims()) == [theirs.name]


def claims_not_the_agent(policies) -> None:
    """An admin claiming for node-b, the garbage collector freeing a deleted node's claims."""
    api = PolicyApi(policies, ADMIN)
    KubeClaims(api, api.claims).create(address_claim("node-b"))
    api.user = GARBAGE_COLLECTOR
    assert api.delete_address_claim("10-20-0-7")
    assert not api.denials and len(api.admitted) == 2


def claims_without_node_claim(policies) -> None:
    for user in (agent_user(None, extras=False), agent_user(None)):
        api = PolicyApi(policies, user)
        claims = KubeClaims(api, api.claims)
        with pytest.raises(ApiException):
            claims.create(address_claim("node-a"))
        mine = seeded_claim(api, "node-a")
        with pytest.raises(ApiException):
            claims.delete(mine)
        assert [(d.code, d.decision.evaluation, d.policy_message) for d in api.denials] == [
            (403, "deny", denial_text(CLAIMS, NO_NODE))] * 2


def hostnetworks_own_node(policies) -> None:
    """cluster.py KubeStatusSink: create, merge-patch and JSON-patch the status, patch the
    template-results annotation (once: the summary did not change after): allowed."""
    api = PolicyApi(policies, agent_user("node-a"))
    publish_status(api, "node-a")
    assert not api.denials
    assert [(a.operation, a.subresource) for a in api.admitted] == [
        ("CREATE", ""), ("UPDATE", "status"), ("UPDATE", ""), ("UPDATE", "status")]
    stored = api.get_hostnetwork("node-a")
    assert stored["status"]["interfaceStatus"][0]["mtu"] == 9000
    assert stored["metadata"]["annotations"] == {RESULTS_ANNOTATION: "[]"}


def hostnetworks_other_node(policies) -> None:
    """Creating node-b's HostNetwork, or writing its status or its template results (which
    feed the status writer's counts and pool exclusion): refused."""
    message = "the plumber agent may write only the HostNetwork of its own node, not node-b"
    api = PolicyApi(policies, agent_user("node-a"))
    with pytest.raises(ApiException) as raised:
        KubeStatusSink(api, "node-b").ensure()
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["message"] == (
        'hostnetworks.plumber.k8s.pf9.io "node-b" is forbidden: '
        + denial_text(HOSTNETWORKS, message))
    api.put("hostnetworks", {"metadata": {"name": "node-b"}, "spec": {}})
    sink = KubeStatusSink(api, "node-b")
    sink.ensure()
    with pytest.raises(ApiException):
        sink.write({"interfaceStatus": []})
    # node-b's object published before summaries existed: the sink's annotation patch.
    api.put("hostnetworks", {"metadata": {"name": "node-b"}, "spec": {},
                             "status": {"templates": [{"name": "mtu", "state": "Applied"}]}})
    with pytest.raises(ApiException):
        KubeStatusSink(api, "node-b").ensure()
    forged = {"metadata": {"annotations": {RESULTS_ANNOTATION: '[{"template": "mtu"}]'}}}
    with pytest.raises(ApiException):
        api.patch_hostnetwork("node-b", forged)
    assert [d.policy_message for d in api.denials] == [denial_text(HOSTNETWORKS, message)] * 4
    assert "annotations" not in api.get_hostnetwork("node-b")["metadata"]


def hostnetworks_not_the_agent(policies) -> None:
    api = PolicyApi(policies, ADMIN)
    publish_status(api, "node-b")
    assert not api.denials and len(api.admitted) == 4


def hostnetworks_without_node_claim(policies) -> None:
    for user in (agent_user(None, extras=False), agent_user(None)):
        api = PolicyApi(policies, user)
        with pytest.raises(ApiException):
            KubeStatusSink(api, "node-a").ensure()
        api.put("hostnetworks", {"metadata": {"name": "node-a"}, "spec": {}})
        sink = KubeStatusSink(api, "node-a")
        sink.ensure()
        with pytest.raises(ApiException):
            sink.write({"interfaceStatus": []})
        assert [(d.code, d.decision.evaluation, d.policy_message) for d in api.denials] == [
            (403, "deny", denial_text(HOSTNETWORKS, NO_NODE))] * 2


def not_the_writer(holder: str, node: str) -> str:
    return (f"only the elected status writer writes template status: Lease "
            f"plumber-status-writer is held by {holder}, not by {node}")


def template_status_by_the_leader(policies) -> None:
    """fleet/writer.py StatusWriter.sync as the elected node-a runs it: the template's status
    and its Event, allowed; after node-b took the Lease over, node-b's are."""
    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api, {**TEMPLATE_OBJECT, "status": {"observedGeneration": 1,
                                                     "phase": "Progressing"}})
    assert elect(api, "node-a")
    status_writer(api, "node-a").sync([], {})  # no node matches: Available, RolloutComplete
    assert not api.denials, api.denials
    assert [(a.resource, a.operation, a.subresource) for a in api.admitted[1:]] == [
        ("hostnetworktemplates", "UPDATE", "status"), ("events", "CREATE", "")]
    assert api.get_template("mtu")["status"]["phase"] == "Available"
    assert [e["reason"] for e in api.events()] == ["RolloutComplete"]
    api.user = agent_user("node-b")
    lease = copy.deepcopy(api.leases()[LEADER_LEASE])
    lease["spec"].update(holderIdentity="node-b", leaseTransitions=1)
    api.replace_lease(NAMESPACE, LEADER_LEASE, lease)
    api.patch_template_status("mtu", {"status": {"phase": "Progressing"}})
    assert not api.denials, api.denials


def template_status_not_the_leader(policies) -> None:
    """node-b writing template status while node-a is the writer, or while nobody is: refused
    (the API server finds no param: a configuration error, so 422)."""
    api = PolicyApi(policies, agent_user("node-b"))
    put_template(api)
    with pytest.raises(ApiException) as raised:
        api.patch_template_status("mtu", {"status": {"phase": "Available"}})
    assert raised.value.status == 422
    assert only_denial(api).policy_message == denial_text(
        TEMPLATE_STATUS, "failed to configure binding: no params found for policy binding "
                         "with `Deny` parameterNotFoundAction")
    api.user = agent_user("node-a")
    assert elect(api, "node-a")
    api.user = agent_user("node-b")
    status_writer(api, "node-b").sync([], {})  # the writer logs the refusal and retries later
    assert api.denials[-1].policy_message == denial_text(TEMPLATE_STATUS,
                                                         not_the_writer("node-a", "node-b"))
    assert api.denials[-1].code == 403 and len(api.denials) == 2
    assert "status" not in api.get_template("mtu")


def template_status_not_the_agent(policies) -> None:
    """A person writing a template's status while an agent leads: not matched."""
    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api)
    assert elect(api, "node-a")
    api.user = ADMIN
    api.patch_template_status("mtu", {"status": {"phase": "Available"}})
    assert not api.denials, api.denials


def template_status_without_node_claim(policies) -> None:
    api = PolicyApi(policies, agent_user("node-a"))
    put_template(api)
    assert elect(api, "node-a")
    for user in (agent_user(None, extras=False), agent_user(None)):
        api.user = user
        with pytest.raises(ApiException):
            api.patch_template_status("mtu", {"status": {"phase": "Available"}})
        assert (api.denials[-1].code, api.denials[-1].decision.evaluation,
                api.denials[-1].policy_message) == (403, "deny",
                                                    denial_text(TEMPLATE_STATUS, NO_NODE))


def events_v1(node: str, *, about: str, namespace: str = EVENT_NAMESPACE) -> dict:
    """An events.k8s.io/v1 Event as an agent would record it about HostNetwork `about`."""
    return {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"generateName": f"{about}.", "namespace": namespace},
            "eventTime": "2026-12-06T23:00:00.000000Z", "reportingController":
                AGENT_CONTROLLER, "reportingInstance": f"{AGENT_CONTROLLER}-{node}",
            "action": "Reconcile",
            "reason": "Applied", "note": "mtu applied", "type": "Normal",
            "regarding": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetwork",
                          "name": about, "uid": f"uid-hn-{about}"}}


def events_own_node(policies) -> None:
    """cluster.py KubeEvents (on its HostNetwork and the template) and an events.k8s.io/v1
    Event of the same: allowed."""
    api = PolicyApi(policies, agent_user("node-a"))
    agent_events(api, "node-a").emit(reason="Applied", message="mtu applied", template="mtu")
    api.post_event(EVENT_NAMESPACE, events_v1("node-a", about="node-a"))
    assert not api.denials, api.denials
    assert sorted((a.group, a.obj.get("involvedObject", a.obj.get("regarding"))["kind"])
                  for a in api.admitted) == [("events.k8s.io", "HostNetwork"),
                                             ("events.k8s.io", "HostNetwork"),
                                             ("events.k8s.io", "HostNetworkTemplate")]


def agent_events(api, node: str) -> KubeEvents:
    """cluster.py's KubeEvents over the agent's own recorder (kube/recorder.py)."""
    recorder = EventBroadcaster(api, FakeClock()).new_recorder(AGENT_CONTROLLER, node)
    return KubeEvents(recorder, node)


def events_other_node(policies) -> None:
    """An Event about node-b's HostNetwork, reported as node-b, about a Node, or in another
    namespace: refused, in both Event APIs."""
    api = PolicyApi(policies, agent_user("node-a"))
    about = ("the plumber agent records Events only about templates and its own node's "
             "HostNetwork, not ")
    on_node = events_v1("node-a", about="node-b")
    on_node["regarding"]["kind"] = "Node"
    cases = [
        (EVENT_NAMESPACE, events_v1("node-a", about="node-b"), about + "HostNetwork node-b"),
        (EVENT_NAMESPACE, on_node, about + "Node node-b"),
        (EVENT_NAMESPACE, events_v1("node-b", about="node-a"),
         "the plumber agent records Events reported by its own node only (reportingInstance), "
         f"not {AGENT_CONTROLLER}-node-b"),
        ("kube-system", events_v1("node-a", about="node-a", namespace="kube-system"),
         "the plumber agent records Events only in namespace default, not kube-system"),
    ]
    for namespace, body, message in cases:
        with pytest.raises(ApiException):
            api.create_event(namespace, {k: v for k, v in body.items()
                                         if k not in ("apiVersion", "kind")})
        assert api.denials[-1].policy_message == denial_text(EVENTS, message), body
    with pytest.raises(ApiException):
        api.post_event(EVENT_NAMESPACE, events_v1("node-a", about="node-b"))
    assert api.denials[-1].policy_message == denial_text(EVENTS, about + "HostNetwork node-b")
    assert len(api.denials) == len(cases) + 1 and api.events() == []


def events_not_the_agent(policies) -> None:
    api = PolicyApi(policies, ADMIN)
    api.post_event("kube-system", events_v1("node-b", about="node-b", namespace="kube-system"))
    assert not api.denials and len(api.events()) == 1


def events_without_node_claim(policies) -> None:
    for user in (agent_user(None, extras=False), agent_user(None)):
        api = PolicyApi(policies, user)
        agent_events(api, "node-a").emit(reason="Applied", message="mtu applied")
        assert [(d.code, d.decision.evaluation, d.policy_message) for d in api.denials] == [
            (403, "deny", denial_text(EVENTS, NO_NODE))]


def cordon_denial(node: str, message: str) -> str:
    return f'nodes "{node}" is forbidden: ' + denial_text(NODE_CORDON, message)


def _cordon(api: PolicyApi, node: str, *, agent: str = "node-a"):
    return drain_of(api).cordon(node, agent=agent, template="mtu", at="2026-12-07T03:00:00Z")


def _uncordon(api: PolicyApi, node: str, *, agent: str = "node-a"):
    return drain_of(api).uncordon(node, agent=agent, template="mtu")


def node_cordon_own_node(policies) -> None:
    """kube/drain.py DrainApi: cordon its own Node with the record, uncordon it: allowed, and
    nothing but spec.unschedulable and the record changed."""
    api = PolicyApi(policies, agent_user("node-a"))
    before = api.put_node("node-a")
    try:
        assert _cordon(api, "node-a").result == CordonResult.CORDONED
        assert _uncordon(api, "node-a").result == CordonResult.UNCORDONED
        # a record left after someone uncordoned: removing it alone is allowed too
        api.put_node("node-a", annotations={
            **before["metadata"]["annotations"],
            CORDONED_BY_ANNOTATION: '{"agent":"node-a","by":"plumber-agent","template":"mtu"}'})
        assert _uncordon(api, "node-a").result == CordonResult.RECORD_CLEARED
    except NamedApiError as exc:
        raise AssertionError(str(exc)) from exc
    assert not api.denials, api.denials
    assert [(a.operation, a.resource, a.subresource) for a in api.admitted] == [
        ("UPDATE", "nodes", "")] * 3
    after = api.get_node("node-a")
    assert (after["spec"], after["metadata"]["annotations"], after["metadata"]["labels"]) == (
        before["spec"], before["metadata"]["annotations"], before["metadata"]["labels"])


def node_cordon_other_node(policies) -> None:
    """Cordoning or uncordoning node-b from node-a's token: refused, with the node named."""
    message = "the plumber agent may patch only its own Node, not node-b"
    api = PolicyApi(policies, agent_user("node-a"))
    api.put_node("node-b")
    with pytest.raises(NamedApiError) as raised:
        _cordon(api, "node-b")
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["message"] == cordon_denial("node-b", message)
    api.put_node("node-b", unschedulable=True, annotations={
        CORDONED_BY_ANNOTATION: '{"agent":"node-a","by":"plumber-agent","template":"mtu"}'})
    with pytest.raises(NamedApiError):
        _uncordon(api, "node-b")
    assert [d.policy_message for d in api.denials] == [denial_text(NODE_CORDON, message)] * 2
    assert api.get_node("node-b")["spec"]["unschedulable"] is True


def node_cordon_other_fields(policies) -> None:
    """Its own Node, but a label, a taint, another annotation, a cordon without the record, or
    the uncordon of a cordon someone else made: each refused with its own message."""
    api = PolicyApi(policies, agent_user("node-a"))
    stored = api.put_node("node-a")
    rv = stored["metadata"]["resourceVersion"]
    record = {CORDONED_BY_ANNOTATION: '{"agent":"node-a","by":"plumber-agent"}'}
    cases = [
        ({"metadata": {"labels": {"role": "gpu"}}},
         "the plumber agent may not change the labels, finalizers or owner references of its "
         "Node"),
        ({"metadata": {"finalizers": ["example.com/keep"]}},
         "the plumber agent may not change the labels, finalizers or owner references of its "
         "Node"),
        ({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}},
         "the plumber agent may change no field of its Node's spec but unschedulable"),
        ({"spec": {"podCIDR": "10.0.0.0/8"}},
         "the plumber agent may change no field of its Node's spec but unschedulable"),
        ({"spec": {"unschedulable": True, "providerID": None}, "metadata": {
            "annotations": record}},
         "the plumber agent may change no field of its Node's spec but unschedulable"),
        ({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": None}}},
         "the plumber agent may change no annotation of its Node but "
         "plumber.k8s.pf9.io/cordoned-by"),
        ({"metadata": {"annotations": {"example.com/x": "1", **record}},
          "spec": {"unschedulable": True}},
         "the plumber agent may change no annotation of its Node but "
         "plumber.k8s.pf9.io/cordoned-by"),
        ({"spec": {"unschedulable": True}},
         "the plumber agent may cordon its Node only recording it in the annotation "
         "plumber.k8s.pf9.io/cordoned-by"),
    ]
    for patch, message in cases:
        with pytest.raises(ApiException):
            api.patch_node("node-a", {**patch, "metadata": {**patch.get("metadata", {}),
                                                             "resourceVersion": rv}})
        assert api.denials[-1].policy_message == denial_text(NODE_CORDON, message), patch
    # cordoned by a person: kube/drain.py leaves it (no request); a forced uncordon is refused
    api.put_node("node-a", unschedulable=True)
    assert _uncordon(api, "node-a").result == CordonResult.NOT_OURS
    with pytest.raises(ApiException):
        api.patch_node("node-a", {"spec": {"unschedulable": None}})
    assert api.denials[-1].policy_message == denial_text(
        NODE_CORDON, "the plumber agent may uncordon its Node only where it cordoned it "
                     "(annotation plumber.k8s.pf9.io/cordoned-by): a cordon someone else made "
                     "stays")
    assert len(api.denials) == len(cases) + 1 and not api.admitted
    assert api.get_node("node-a")["spec"]["unschedulable"] is True


def node_cordon_not_the_agent(policies) -> None:
    api = PolicyApi(policies, ADMIN)
    api.put_node("node-b")
    api.patch_node("node-b", {"spec": {"unschedulable": True, "taints": []},
                              "metadata": {"labels": {"role": "x"}}})
    assert not api.denials and len(api.admitted) == 1


def node_cordon_without_node_claim(policies) -> None:
    for user in (agent_user(None, extras=False), agent_user(None)):
        api = PolicyApi(policies, user)
        api.put_node("node-a")
        with pytest.raises(NamedApiError):
            _cordon(api, "node-a")
        assert [(d.code, d.decision.evaluation, d.policy_message) for d in api.denials] == [
            (403, "deny", denial_text(NODE_CORDON, NO_NODE))]


CHECKS = {
    LEASES: [leases_own_node, leases_other_node, leases_takeover_for_other_node,
             leases_not_the_agent, leases_without_node_claim, leases_without_holder,
             leases_squatting, leases_squatted_slot_is_harmless, leases_squatter_holds_one_place,
             leases_leader_lease],
    STALE_SLOTS: [leases_own_node, leases_failed_slot_is_not_taken_over,
                  leases_stale_slots_are_deleted, leases_live_slots_are_not_deleted,
                  leases_squatted_slot_is_harmless, stale_slots_not_the_agent],
    CLAIMS: [claims_own_node, claims_other_node, claims_not_the_agent,
             claims_without_node_claim],
    HOSTNETWORKS: [hostnetworks_own_node, hostnetworks_other_node, hostnetworks_not_the_agent,
                   hostnetworks_without_node_claim],
    TEMPLATE_STATUS: [template_status_by_the_leader, template_status_not_the_leader,
                      template_status_not_the_agent, template_status_without_node_claim],
    EVENTS: [events_own_node, events_other_node, events_not_the_agent,
             events_without_node_claim],
    NODE_CORDON: [node_cordon_own_node, node_cordon_other_node, node_cordon_other_fields,
                  node_cordon_not_the_agent, node_cordon_without_node_claim],
}
ALL_CHECKS = list(dict.fromkeys(c for checks in CHECKS.values() for c in checks))


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_policy(check) -> None:
    check(POLICIES)


def test_every_policy_is_loaded_and_bound_for_deny() -> None:
    """Seven policies, each with one Deny binding (a Warn/Audit-only binding would deny
    nothing), and every file on disk is one the kustomization lists."""
    assert sorted(p.name for p, _ in POLICIES) == sorted(CHECKS)
    for policy, bindings in POLICIES:
        assert [b.validation_actions for b in bindings] == [("Deny",)], policy.name
        assert policy.failure_policy == "Fail", policy.name
    listed = yaml.safe_load((ADMISSION_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in ADMISSION_DIR.glob("*.yaml")
                                    if p.name != "kustomization.yaml")


def test_kustomize_renders_exactly_these() -> None:
    """The documents checked here are what `kubectl kustomize manifests/admission/` renders."""
    rendered = kustomize(ADMISSION_DIR)

    def key(doc):
        return doc["kind"], doc["metadata"]["name"]
    assert sorted(rendered, key=key) == sorted(DOCUMENTS, key=key)


def test_the_event_policy_names_the_agents_event_namespace() -> None:
    """The namespace the policy allows is the one kube/recorder.py records cluster-scoped
    objects' Events in (the agent's and the status writer's)."""
    variables = {v["name"]: v["expression"] for v in policy_spec(DOCUMENTS, EVENTS)["variables"]}
    assert variables["namespace"] == f"'{EVENT_NAMESPACE}'"


def without(documents: list, policy: str) -> list:
    return [d for d in documents if policy not in (d["metadata"]["name"],
                                                   (d.get("spec") or {}).get("policyName"))]


@pytest.mark.parametrize("policy", sorted(CHECKS))
def test_a_removed_policy_is_caught(policy) -> None:
    """A cluster without this policy (left out of the kustomization) admits some request a
    check of the policy expects refused."""
    broken = vap.load_from(without(DOCUMENTS, policy))
    assert caught_by(policy, broken), f"no check of {policy} notices it is gone"


def caught_by(policy: str, policies) -> list:
    caught = []
    for check in CHECKS[policy]:
        try:
            check(policies)
        except (AssertionError, ApiException, NamedApiError, pytest.fail.Exception) as exc:
            caught.append((check.__name__, type(exc).__name__))
    return caught


# -- each expression broken in turn must fail some check of its policy ---------------------
def policy_spec(documents: list, name: str) -> dict:
    return next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicy"
                and d["metadata"]["name"] == name)["spec"]


def _mutants():
    """(id, policy, edit of the policy's spec): the ways an expression can silently go wrong."""
    def setting(section: str, value: str, field: str = "expression", index: int = 0):
        def edit(spec: dict) -> None:
            spec[section][index][field] = value
        return edit

    def variable(name: str, value: str):
        def edit(spec: dict) -> None:
            next(v for v in spec["variables"] if v["name"] == name)["expression"] = value
        return edit

    guard = "has(request.userInfo.extra) &&"
    for policy in CHECKS:
        spec = policy_spec(DOCUMENTS, policy)
        yield from (
            (f"{policy}-match-true", policy, setting("matchConditions", "true")),
            (f"{policy}-match-false", policy, setting("matchConditions", "false")),
            (f"{policy}-match-other-sa", policy, setting(
                "matchConditions",
                "request.userInfo.username == 'system:serviceaccount:default:plumber-agent'")))
        for index, validation in enumerate(spec["validations"]):
            yield from (
                (f"{policy}-validation-{index}-true", policy,
                 setting("validations", "true", index=index)),
                (f"{policy}-validation-{index}-false", policy,
                 setting("validations", "false", index=index)))
            field = "messageExpression" if "messageExpression" in validation else "message"
            yield (f"{policy}-validation-{index}-message-constant", policy,
                   setting("validations", "'denied'" if field == "messageExpression"
                           else "denied", field, index))
        names = {v["name"]: v["expression"] for v in spec.get("variables") or ()}
        if "nodeNames" in names:
            expression = names["nodeNames"]
            assert guard in expression, policy
            yield from (
                (f"{policy}-no-extra-guard", policy,
                 variable("nodeNames", expression.replace(guard, ""))),
                (f"{policy}-pod-name-extra", policy, variable("nodeNames", expression.replace(
                    "authentication.kubernetes.io/node-name",
                    "authentication.kubernetes.io/pod-name"))),
                (f"{policy}-node-names-empty", policy, variable("nodeNames", "[]")))
    yield "leases-holder-old-object", LEASES, variable(
        "holder", "request.operation != 'CREATE' && has(oldObject.spec.holderIdentity) ? "
                  "oldObject.spec.holderIdentity : ''")
    yield "leases-variable-object", LEASES, variable("lease", "object")
    yield "leases-node-uid-not-checked", LEASES, setting(
        "validations", policy_spec(DOCUMENTS, LEASES)["validations"][3]["expression"].replace(
            " && r.uid in variables.nodeUIDs", ""), index=3)
    for index in range(len(policy_spec(DOCUMENTS, STALE_SLOTS)["matchConditions"])):
        yield (f"stale-slots-match-{index}-true", STALE_SLOTS,
               setting("matchConditions", "true", index=index))
    yield "stale-slots-generation-not-compared", STALE_SLOTS, setting(
        "validations", "params.metadata.uid != variables.templateUID")
    yield "stale-slots-generation-le", STALE_SLOTS, setting(
        "validations", "params.metadata.uid != variables.templateUID || "
                       "variables.generation <= params.metadata.generation")
    yield "claims-variable-object", CLAIMS, variable("claim", "object")
    yield "claims-variable-old-object", CLAIMS, variable("claim", "oldObject")
    yield "claims-variable-inverted", CLAIMS, variable(
        "claim", "request.operation == 'CREATE' ? oldObject : object")
    yield "claims-operation-lowercase", CLAIMS, variable(
        "claim", "request.operation == 'delete' ? oldObject : object")
    yield "hostnetworks-request-namespace", HOSTNETWORKS, setting(
        "validations", "request.namespace in variables.nodeNames", index=1)
    yield "events-about-involved-object-only", EVENTS, variable(
        "about", "has(object.involvedObject) ? object.involvedObject : {}")
    yield "events-any-kind", EVENTS, setting(
        "validations", "!has(variables.about.name) || variables.about.kind != 'HostNetwork' || "
                       "variables.about.name in variables.nodeNames", index=3)


MUTANTS = list(_mutants())


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_expression_is_caught(mutant) -> None:
    """Some check of the policy fails once the expression is broken: the checks above do look
    at what each expression decides, and the messages they pin are the manifests'."""
    _, policy, edit = mutant
    documents = copy.deepcopy(DOCUMENTS)
    edit(policy_spec(documents, policy))
    assert caught_by(policy, vap.load_from(documents)), f"no check of {policy} notices {mutant[0]}"
