"""The optional ValidatingAdmissionPolicies (manifests/admission/) evaluated with a real CEL
implementation, over the requests the agent's own code sends.

RBAC cannot say "only your own object"; these policies are what stops one node's agent token
from writing another node's HostNetwork, rollout slot or address claim. A typo in their CEL would
only show on a live cluster, so here the agent's real writers (fleet/slots.py LeaseSlots,
fleet/leader.py LeaderElector, pools/claims.py KubeClaims, cluster.py KubeStatusSink) run against
`PolicyApi`, a client that turns each write into the admission request the API server would
build and answers as the API server would when a policy denies it (tests/security/vap.py).

For each policy: the agent writing for its own node is allowed; for another node it is denied
with the exact message; a user that is not the agent is not matched; a token without the
node-name extra (clusters before 1.30, or the ServiceAccountTokenPodNodeInfo gate off) is
denied, not an error. `test_a_broken_expression_is_caught` breaks each expression in turn and
shows that some check of its policy fails.
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
from plumber_agent.cluster import KubeStatusSink
from plumber_agent.fleet.leader import LEADER_LEASE, LeaderElector
from plumber_agent.fleet.results import RESULTS_ANNOTATION
from plumber_agent.fleet.rollout import slot_name
from plumber_agent.fleet.slots import LeaseSlots, slot_reader
from plumber_agent.models.spec import template_from_object
from plumber_agent.pools.claims import Claim, KubeClaims, claim_from_object, claim_object
from plumber_agent.reporter import merge_patch as make_merge_patch
from tests.fakeapi.server import json_patch, merge_patch
from tests.security import vap

ADMISSION_DIR = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "admission"
POLICY_FILES = sorted(ADMISSION_DIR.glob("*.yaml"))
DOCUMENTS = [d for d in vap.load_documents(POLICY_FILES) if d.get("kind") in (
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]

NAMESPACE = "plumber-system"  # manifests/kustomization.yaml
AGENT = f"system:serviceaccount:{NAMESPACE}:plumber-agent"  # the DaemonSet's serviceAccountName
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
GROUP, VERSION = "plumber.k8s.pf9.io", "v1"

LEASES = "plumber-agent-own-leases"
CLAIMS = "plumber-agent-own-address-claims"
HOSTNETWORKS = "plumber-agent-own-hostnetwork"
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
                              vap.namespace_object(namespace) if namespace else None)
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

    @staticmethod
    def _options(kind: str, **fields) -> dict:
        return {"kind": kind, "apiVersion": "meta.k8s.io/v1", **fields}

    def put(self, resource: str, obj: dict, *, namespace: str = "") -> dict:
        """Seed an object (written by someone else, before the test)."""
        api_version = "coordination.k8s.io/v1" if resource == "leases" else f"{GROUP}/{VERSION}"
        kind = {"leases": "Lease", "addressclaims": "AddressClaim",
                "hostnetworks": "HostNetwork"}[resource]
        stored = self._stored(obj, api_version=api_version, kind=kind, namespace=namespace)
        self.objects[(resource, namespace, stored["metadata"]["name"])] = stored
        return stored

    # -- Nodes
    def get_node(self, name: str) -> dict:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
                                                                 "uid": f"uid-{name}"}}

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


POLICIES = vap.load_from(DOCUMENTS)


# -- the agent's writers --------------------------------------------------------------------
TEMPLATE = template_from_object({
    "metadata": {"name": "mtu", "generation": 1, "uid": "uid-mtu",
                 "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
             "rollout": {"maxUnavailable": 1}}})
SLOT = slot_name("mtu", 0)


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
    published = sink.ensure()
    first = {"interfaceStatus": [{"pfName": "eno1", "mtu": 1500}]}
    sink.write(first, make_merge_patch(published or {}, first))
    second = {"interfaceStatus": [{"pfName": "eno1", "mtu": 9000}]}
    sink.write(second, make_merge_patch(first, second))
    return sink


def only_denial(api: PolicyApi) -> vap.Denial:
    assert len(api.denials) == 1, api.denials
    return api.denials[0]


# -- the checks, one per (policy, case); each takes the policies so that a broken copy can be
# run through the same checks ------------------------------------------------------------
def leases_own_node(policies) -> None:
    """A slot claimed, marked failed, taken over when stale; the leader Lease: all allowed."""
    api, clock = PolicyApi(policies, agent_user("node-a")), FakeClock()
    assert claim_slot(api, "node-a", clock)
    slots = lease_slots(api, "node-a", clock)
    slots.claim(TEMPLATE, slots.admission(TEMPLATE, 1))  # adopts its own slot
    slots.fail(TEMPLATE, "set_mtu eno1: Numerical result out of range")  # PUT
    assert elect(api, "node-a")
    assert not api.denials, api.denials
    ops = [(a.operation, a.name) for a in api.admitted]
    assert ops == [("CREATE", SLOT), ("UPDATE", SLOT), ("CREATE", LEADER_LEASE)], ops

    # node-z's slot went stale (node-z died): node-a takes it over with a PUT.
    api, slots, admission = stale_slot_of_node_z(policies, token_node="node-a",
                                                 acting_as="node-a")
    assert admission.claim_over is not None, admission
    assert slots.claim(TEMPLATE, admission) and not api.denials, api.denials
    assert api.admitted[-1].operation == "UPDATE"
    assert api.admitted[-1].old_obj["spec"]["holderIdentity"] == "node-z"


def leases_other_node(policies) -> None:
    """An agent whose token is bound to node-a but that acts as node-b: refused."""
    api = PolicyApi(policies, agent_user("node-a"))
    assert not claim_slot(api, "node-b")
    denial = only_denial(api)
    assert (denial.code, denial.reason) == (403, "Forbidden")
    assert denial.message == (
        f'leases.coordination.k8s.io "{SLOT}" is forbidden: ' + denial_text(
            LEASES, "the plumber agent may hold a Lease only for its own node, not node-b"))
    assert not elect(api, "node-b")
    assert api.denials[-1].policy_message == denial_text(
        LEASES, "the plumber agent may hold a Lease only for its own node, not node-b")
    assert api.leases() == {}


def leases_takeover_for_other_node(policies) -> None:
    """Taking over node-z's stale slot in node-b's name (a PUT): refused too."""
    api, slots, admission = stale_slot_of_node_z(policies, token_node="node-a",
                                                 acting_as="node-b")
    assert admission.claim_over is not None, admission
    assert not slots.claim(TEMPLATE, admission)
    assert only_denial(api).policy_message == denial_text(
        LEASES, "the plumber agent may hold a Lease only for its own node, not node-b")
    assert api.leases()[SLOT]["spec"]["holderIdentity"] == "node-z"


def leases_not_the_agent(policies) -> None:
    """Other users are not the policy's business (matchConditions false: not evaluated)."""
    for user in (ADMIN, OTHER_WORKLOAD):
        api = PolicyApi(policies, user)
        assert claim_slot(api, "node-b") and elect(api, "node-b"), api.denials
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
    """A Lease with no holderIdentity is refused with "(nobody)", not an evaluation error."""
    api = PolicyApi(policies, agent_user("node-a"))
    with pytest.raises(ApiException) as raised:
        api.create_lease(NAMESPACE, {"metadata": {"name": "free"},
                                     "spec": {"leaseDurationSeconds": 30}})
    assert raised.value.status == 403
    assert only_denial(api).policy_message == denial_text(
        LEASES, "the plumber agent may hold a Lease only for its own node, not (nobody)")


def leases_delete_not_restricted(policies) -> None:
    """The elected status writer deletes other nodes' stale slots (fleet/writer.py): DELETE is
    outside the policy's operations."""
    api = PolicyApi(policies, agent_user("node-z"))
    assert claim_slot(api, "node-z")
    api.user = agent_user("node-a")
    stale = api.leases()[SLOT]
    assert api.delete_lease(NAMESPACE, SLOT, resource_version=stale["metadata"]["resourceVersion"])
    assert not api.denials


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
    """Creating node-b's HostNetwork, or writing its status: refused."""
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
        sink.write({"interfaceStatus": []}, {"interfaceStatus": []})
    # node-b's object published before summaries existed: the sink's annotation patch.
    api.put("hostnetworks", {"metadata": {"name": "node-b"}, "spec": {},
                             "status": {"templates": [{"name": "mtu", "state": "Applied"}]}})
    with pytest.raises(ApiException):
        KubeStatusSink(api, "node-b").ensure()
    assert [d.policy_message for d in api.denials] == [denial_text(HOSTNETWORKS, message)] * 3
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
            sink.write({"interfaceStatus": []}, {"interfaceStatus": []})
        assert [(d.code, d.decision.evaluation, d.policy_message) for d in api.denials] == [
            (403, "deny", denial_text(HOSTNETWORKS, NO_NODE))] * 2


CHECKS = {
    LEASES: [leases_own_node, leases_other_node, leases_takeover_for_other_node,
             leases_not_the_agent, leases_without_node_claim, leases_without_holder,
             leases_delete_not_restricted],
    CLAIMS: [claims_own_node, claims_other_node, claims_not_the_agent,
             claims_without_node_claim],
    HOSTNETWORKS: [hostnetworks_own_node, hostnetworks_other_node, hostnetworks_not_the_agent,
                   hostnetworks_without_node_claim],
}


@pytest.mark.parametrize("check", [c for checks in CHECKS.values() for c in checks],
                         ids=lambda c: c.__name__)
def test_policy(check) -> None:
    check(POLICIES)


def test_every_policy_is_loaded_and_bound_for_deny() -> None:
    """Three policies, each with a Deny binding (a Warn/Audit-only binding would deny nothing),
    and every file kustomization.yaml lists is one this module reads."""
    assert sorted(p.name for p, _ in POLICIES) == sorted(CHECKS)
    for policy, bindings in POLICIES:
        assert [b.validation_actions for b in bindings] == [("Deny",)], policy.name
        assert policy.failure_policy == "Fail", policy.name
    listed = yaml.safe_load((ADMISSION_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in POLICY_FILES if p.name != "kustomization.yaml")


# -- each expression broken in turn must fail some check of its policy ---------------------
def policy_spec(documents: list, name: str) -> dict:
    return next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicy"
                and d["metadata"]["name"] == name)["spec"]


def _mutants():
    """(id, policy, edit of the policy's spec): the ways an expression can silently go wrong."""
    def setting(section: str, value: str, field: str = "expression"):
        def edit(spec: dict) -> None:
            spec[section][0][field] = value
        return edit

    guard, key_guard = ("has(request.userInfo.extra) && ",
                        "'authentication.kubernetes.io/node-name' in request.userInfo.extra &&")
    for policy in CHECKS:
        validation = policy_spec(DOCUMENTS, policy)["validations"][0]["expression"]
        assert guard in validation and key_guard in validation, policy
        yield from (
            (f"{policy}-match-true", policy, setting("matchConditions", "true")),
            (f"{policy}-match-false", policy, setting("matchConditions", "false")),
            (f"{policy}-match-other-sa", policy, setting(
                "matchConditions",
                "request.userInfo.username == 'system:serviceaccount:default:plumber-agent'")),
            (f"{policy}-validation-true", policy, setting("validations", "true")),
            (f"{policy}-validation-false", policy, setting("validations", "false")),
            (f"{policy}-no-extra-guard", policy, setting(
                "validations", validation.replace(guard, ""))),
            (f"{policy}-no-key-guard", policy, setting(
                "validations", validation.replace(key_guard, ""))),
            (f"{policy}-pod-name-extra", policy, setting("validations", validation.replace(
                "['authentication.kubernetes.io/node-name']",
                "['authentication.kubernetes.io/pod-name']"))),
            (f"{policy}-equals-not-in", policy, setting("validations", validation.replace(
                " in request.userInfo.extra[", " == request.userInfo.extra["))),
            (f"{policy}-message-constant", policy, setting(
                "validations", "'denied'", "messageExpression")),
            (f"{policy}-message-removed", policy, setting(
                "validations", "", "messageExpression")))
    lease = policy_spec(DOCUMENTS, LEASES)["validations"][0]["expression"]
    yield "leases-no-holder-guard", LEASES, setting(
        "validations", lease.replace("has(object.spec.holderIdentity) &&", ""))
    yield "leases-message-no-holder-guard", LEASES, setting(
        "validations", "'the plumber agent may hold a Lease only for its own node, not ' + "
        "object.spec.holderIdentity", "messageExpression")
    yield "leases-old-object", LEASES, setting(
        "validations", lease.replace("object.spec", "oldObject.spec"))
    yield "claims-variable-object", CLAIMS, setting("variables", "object")
    yield "claims-variable-old-object", CLAIMS, setting("variables", "oldObject")
    yield "claims-variable-inverted", CLAIMS, setting(
        "variables", "request.operation == 'CREATE' ? oldObject : object")
    yield "claims-operation-lowercase", CLAIMS, setting(
        "variables", "request.operation == 'delete' ? oldObject : object")
    yield "hostnetworks-request-namespace", HOSTNETWORKS, setting(
        "validations", policy_spec(DOCUMENTS, HOSTNETWORKS)["validations"][0]["expression"]
        .replace("object.metadata.name", "request.namespace"))


MUTANTS = list(_mutants())


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_expression_is_caught(mutant) -> None:
    """Some check of the policy fails once the expression is broken: the checks above do look
    at what each expression decides, and the messages they pin are the manifests'."""
    _, policy, edit = mutant
    documents = copy.deepcopy(DOCUMENTS)
    edit(policy_spec(documents, policy))
    broken = vap.load_from(documents)
    caught = []
    for check in CHECKS[policy]:
        try:
            check(broken)
        except (AssertionError, ApiException, pytest.fail.Exception) as exc:
            caught.append((check.__name__, type(exc).__name__))
    assert caught, f"no check of {policy} notices {mutant[0]}"
