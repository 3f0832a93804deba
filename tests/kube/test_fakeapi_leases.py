"""coordination.k8s.io/v1 Leases, DeleteOptions preconditions and garbage collection in the
fake API server, held to upstream's code (the rollout slots of docs/rollout.md rely on all
three). Each test names the upstream function it follows; tests/fakeapi/README.md maps them.
Raw HTTP, as the agent's lease code sends it, so the exact Status bodies are compared."""
from __future__ import annotations

import pytest

from tests.fakeapi import HOSTNETWORKS, NODES
from tests.kube.test_fakeapi import Http
from tests.kube.test_fakeapi_upstream import LOCK_MSG, failure

COORD = "coordination.k8s.io"
LEASES_NS = f"/apis/{COORD}/v1/namespaces/plumber-system/leases"
LEASES_ALL = f"/apis/{COORD}/v1/leases"
CR = "/apis/plumber.k8s.pf9.io/v1"
SLOT_LABEL = "plumber.k8s.pf9.io/lease"
MICRO = "2026-11-28T21:00:00.123456Z"  # MicroTime: "2006-01-02T15:04:05.000000Z07:00"


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def lease(name="rollout-t-0", *, labels=None, owners=None, **spec):
    meta = {"name": name, "labels": labels if labels is not None else {SLOT_LABEL: "rollout-slot"}}
    if owners:
        meta["ownerReferences"] = owners
    body = {"holderIdentity": "node-1", "leaseDurationSeconds": 30, "acquireTime": MICRO,
            "renewTime": MICRO, "leaseTransitions": 0}
    return {"apiVersion": f"{COORD}/v1", "kind": "Lease", "metadata": meta, "spec": body | spec}


def owner_ref(obj):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}


def node(api, name):
    status, obj, _ = api.call("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    assert status == 201
    return obj


def delete_options(**preconditions):
    return {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions}


def test_lease_create_get_list_and_label_selector(api):
    """leaseStrategy: namespaced, no generation; MicroTimes stored as sent; list (namespaced
    and across namespaces) filtered by labelSelector as the agent lists its slots."""
    status, created, _ = api.call("POST", LEASES_NS, lease())
    assert status == 201
    meta = created["metadata"]
    assert (created["kind"], created["apiVersion"]) == ("Lease", f"{COORD}/v1")
    assert meta["namespace"] == "plumber-system" and meta["uid"] and "generation" not in meta
    assert created["spec"]["acquireTime"] == MICRO and created["spec"]["renewTime"] == MICRO
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[1] == created
    assert api.call("POST", LEASES_NS, lease("plumber-status-writer",
                                             labels={SLOT_LABEL: "leader"}))[0] == 201
    assert api.call("POST", f"/apis/{COORD}/v1/namespaces/other/leases", lease())[0] == 201

    selector = f"?labelSelector={SLOT_LABEL}%3Drollout-slot"
    status, listed, _ = api.call("GET", LEASES_NS + selector)
    assert status == 200 and listed["kind"] == "LeaseList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["rollout-t-0"]
    everywhere = api.call("GET", LEASES_ALL + selector)[1]["items"]
    assert sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere) == [
        ("other", "rollout-t-0"), ("plumber-system", "rollout-t-0")]
    assert len(api.call("GET", LEASES_NS)[1]["items"]) == 2


def test_lease_watch_sends_added_modified_deleted(api):
    """The watch of the agent's slot informer: labelSelector, replay from a resourceVersion."""
    start = api.call("GET", LEASES_NS)[1]["metadata"]["resourceVersion"]
    created = api.call("POST", LEASES_NS, lease())[1]
    api.call("POST", LEASES_NS, lease("unlabelled", labels={}))
    renewed = {**created, "spec": created["spec"] | {"renewTime": "2026-11-28T21:00:10.000000Z"}}
    assert api.call("PUT", f"{LEASES_NS}/rollout-t-0", renewed)[0] == 200
    assert api.call("DELETE", f"{LEASES_NS}/rollout-t-0")[0] == 200
    for path in (LEASES_NS, LEASES_ALL):
        status, lines = api.watch_lines(
            f"{path}?watch=true&resourceVersion={start}&timeoutSeconds=1"
            f"&labelSelector={SLOT_LABEL}%3Drollout-slot")
        assert status == 200
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
            ("ADDED", "rollout-t-0"), ("MODIFIED", "rollout-t-0"), ("DELETED", "rollout-t-0")]
        assert lines[1]["object"]["spec"]["renewTime"] == "2026-11-28T21:00:10.000000Z"


def test_lease_already_exists_and_stale_put(api):
    """errors.NewAlreadyExists (InterpretCreateError) and store.go Update's NewConflict with
    OptimisticLockErrorMsg: how two nodes racing for one slot learn they lost."""
    stale = api.call("POST", LEASES_NS, lease())[1]
    details = {"name": "rollout-t-0", "group": COORD, "kind": "leases"}
    assert api.call("POST", LEASES_NS, lease())[:2] == (409, failure(
        409, "AlreadyExists", f'leases.{COORD} "rollout-t-0" already exists', details))
    taken = {**stale, "spec": stale["spec"] | {"holderIdentity": "node-2"}}
    assert api.call("PUT", f"{LEASES_NS}/rollout-t-0", taken)[0] == 200
    mine = {**stale, "spec": stale["spec"] | {"holderIdentity": "node-3"}}
    assert api.call("PUT", f"{LEASES_NS}/rollout-t-0", mine)[:2] == (409, failure(
        409, "Conflict", f'Operation cannot be fulfilled on leases.{COORD} "rollout-t-0": '
        f"{LOCK_MSG}", details))
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[1]["spec"]["holderIdentity"] == "node-2"


def test_lease_put_needs_a_resource_version_and_may_create(api):
    """leaseStrategy.AllowUnconditionalUpdate is false (store.go Update: 422 without a
    resourceVersion, the resource named as the kind) and AllowCreateOnUpdate is true."""
    current = api.call("POST", LEASES_NS, lease())[1]
    unconditional = {**current, "metadata": {k: v for k, v in current["metadata"].items()
                                             if k != "resourceVersion"}}
    assert api.call("PUT", f"{LEASES_NS}/rollout-t-0", unconditional)[:2] == (422, failure(
        422, "Invalid", f'leases.{COORD} "rollout-t-0" is invalid: metadata.resourceVersion: '
        "Invalid value: 0x0: must be specified for an update",
        {"name": "rollout-t-0", "group": COORD, "kind": "leases", "causes": [{
            "reason": "FieldValueInvalid", "field": "metadata.resourceVersion",
            "message": "Invalid value: 0x0: must be specified for an update"}]}))
    status, created, _ = api.call("PUT", f"{LEASES_NS}/new-slot", lease("new-slot"))
    assert status == 201 and created["metadata"]["uid"]


@pytest.mark.parametrize("spec, field, message", [
    ({"leaseDurationSeconds": 0}, "spec.leaseDurationSeconds",
     "Invalid value: 0: must be greater than 0"),
    ({"leaseDurationSeconds": -5}, "spec.leaseDurationSeconds",
     "Invalid value: -5: must be greater than 0"),
    ({"leaseTransitions": -1}, "spec.leaseTransitions",
     "Invalid value: -1: must be greater than or equal to 0"),
])
def test_lease_spec_validation(api, spec, field, message):
    """ValidateLeaseSpec (pkg/apis/coordination/validation/validation.go) on create and on
    update (ValidateLeaseUpdate); NewInvalid names the kind, Lease.coordination.k8s.io."""
    expected = failure(422, "Invalid", f'Lease.{COORD} "rollout-t-0" is invalid: {field}: '
                       f"{message}", {"name": "rollout-t-0", "group": COORD, "kind": "Lease",
                                      "causes": [{"reason": "FieldValueInvalid",
                                                  "message": message, "field": field}]})
    assert api.call("POST", LEASES_NS, lease(**spec))[:2] == (422, expected)
    current = api.call("POST", LEASES_NS, lease())[1]
    bad = {**current, "spec": current["spec"] | spec}
    assert api.call("PUT", f"{LEASES_NS}/rollout-t-0", bad)[:2] == (422, expected)
    assert api.call("PATCH", f"{LEASES_NS}/rollout-t-0", {"spec": spec},
                    "application/strategic-merge-patch+json")[:2] == (422, expected)
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[1] == current


def test_lease_name_and_preferred_holder_validation(api):
    """ValidateLease: ObjectMeta (NameIsDNSSubdomain) first, then the spec; preferredHolder
    needs a strategy (field.Forbidden)."""
    status, body, _ = api.call("POST", LEASES_NS, lease("Bad_Name", preferredHolder="node-1"))
    assert status == 422
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [
        ("metadata.name", "FieldValueInvalid"), ("spec.preferredHolder", "FieldValueForbidden")]
    assert body["details"]["causes"][1]["message"] == \
        "Forbidden: may only be specified if `strategy` is defined"


def test_delete_preconditions(api):
    """rest/delete.go BeforeDelete: a uid or resourceVersion precondition that does not hold
    is NewConflict of GroupResource{gvk.Group, gvk.Kind}; one that holds deletes."""
    first = api.call("POST", LEASES_NS, lease())[1]
    path, uid, rv = f"{LEASES_NS}/rollout-t-0", first["metadata"]["uid"], \
        first["metadata"]["resourceVersion"]
    details = {"name": "rollout-t-0", "group": COORD, "kind": "Lease"}
    head = f'Operation cannot be fulfilled on Lease.{COORD} "rollout-t-0": '
    assert api.call("DELETE", path, delete_options(uid="other-uid"))[:2] == (409, failure(
        409, "Conflict", head + f"the UID in the precondition (other-uid) does not match the "
        f"UID in record ({uid}). The object might have been deleted and then recreated",
        details))
    assert api.call("DELETE", path, delete_options(resourceVersion="1"))[:2] == (409, failure(
        409, "Conflict", head + f"the ResourceVersion in the precondition (1) does not match "
        f"the ResourceVersion in record ({rv}). The object might have been modified", details))
    assert api.call("GET", path)[0] == 200

    status, body, _ = api.call("DELETE", path, delete_options(uid=uid, resourceVersion=rv))
    assert (status, body["status"], body["details"]["uid"]) == (200, "Success", uid)
    assert api.call("GET", path)[0] == 404

    # Every resource: a Node's mismatch names the core-group kind alone.
    node_uid = node(api, "node-1")["metadata"]["uid"]
    assert api.call("DELETE", "/api/v1/nodes/node-1", delete_options(uid="x"))[:2] == (
        409, failure(409, "Conflict", 'Operation cannot be fulfilled on Node "node-1": the UID '
                     f"in the precondition (x) does not match the UID in record ({node_uid}). "
                     "The object might have been deleted and then recreated",
                     {"name": "node-1", "kind": "Node"}))


def test_delete_options_validation(api):
    """meta/v1/validation ValidateDeleteOptions: propagationPolicy from the query (no body) or
    the body; an unknown one is 422 DeleteOptions.meta.k8s.io."""
    api.call("POST", LEASES_NS, lease())
    message = ('Unsupported value: "Sometimes": supported values: "Foreground", "Background", '
               '"Orphan", "nil"')
    assert api.call("DELETE", f"{LEASES_NS}/rollout-t-0?propagationPolicy=Sometimes")[:2] == (
        422, failure(422, "Invalid", 'DeleteOptions.meta.k8s.io "" is invalid: '
                     f"propagationPolicy: {message}", {
                         "group": "meta.k8s.io", "kind": "DeleteOptions", "causes": [{
                             "reason": "FieldValueNotSupported", "message": message,
                             "field": "propagationPolicy"}]}))
    assert api.call("DELETE", f"{LEASES_NS}/rollout-t-0?propagationPolicy=Background")[0] == 200


def test_deleting_a_node_collects_its_lease_and_hostnetwork(api, fake_api):
    """garbagecollector attemptToDeleteItem: a namespaced Lease and a cluster-scoped
    HostNetwork owned by a Node go when the Node goes (at once here); other nodes' stay."""
    gone, kept = node(api, "node-1"), node(api, "node-2")
    assert api.call("POST", LEASES_NS, lease(owners=[owner_ref(gone)]))[0] == 201
    assert api.call("POST", LEASES_NS, lease("rollout-t-1", owners=[owner_ref(kept)]))[0] == 201
    assert api.call("POST", f"{CR}/hostnetworks", {
        "metadata": {"name": "node-1", "ownerReferences": [owner_ref(gone)]}, "spec": {}})[0] == 201
    start = fake_api.resource_version
    assert api.call("DELETE", "/api/v1/nodes/node-1")[0] == 200
    assert fake_api.get(HOSTNETWORKS, "node-1") is None
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[0] == 404
    assert api.call("GET", f"{LEASES_NS}/rollout-t-1")[0] == 200
    lines = api.watch_lines(f"{LEASES_NS}?watch=true&resourceVersion={start}&timeoutSeconds=1")[1]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
        ("DELETED", "rollout-t-0")]


def test_two_owners_keep_a_dependent_until_both_are_gone(api, fake_api):
    """attemptToDeleteItem: with a live owner left the dependent stays, and the reference to
    the absent owner is removed; the last owner's deletion collects it; collection recurses."""
    one, two = node(api, "node-1"), node(api, "node-2")
    slot = api.call("POST", LEASES_NS, lease(owners=[owner_ref(one), owner_ref(two)]))[1]
    api.call("POST", LEASES_NS, lease("grandchild", owners=[owner_ref(slot)]))
    api.call("DELETE", "/api/v1/nodes/node-1")
    status, survivor, _ = api.call("GET", f"{LEASES_NS}/rollout-t-0")
    assert status == 200 and survivor["metadata"]["ownerReferences"] == [owner_ref(two)]
    api.call("DELETE", "/api/v1/nodes/node-2")
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[0] == 404
    assert api.call("GET", f"{LEASES_NS}/grandchild")[0] == 404
    assert fake_api.list(NODES) == []


def test_dangling_owner_and_the_limits_of_collection(api):
    """graph_builder.go virtual nodes: a dependent created with an absent owner (or a stale
    uid) is collected; a cluster-scoped dependent of a namespaced owner, an owner kind the
    server does not serve, and propagationPolicy=Orphan leave dependents alone."""
    ghost = {"apiVersion": "v1", "kind": "Node", "name": "node-9", "uid": "no-such-uid"}
    assert api.call("POST", LEASES_NS, lease(owners=[ghost]))[0] == 201
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[0] == 404
    node(api, "node-9")  # same name, another uid: still absent for the GC
    assert api.call("POST", LEASES_NS, lease(owners=[ghost]))[0] == 201
    assert api.call("GET", f"{LEASES_NS}/rollout-t-0")[0] == 404

    owner_lease = api.call("POST", LEASES_NS, lease("owner"))[1]
    pod = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "pod-uid"}
    api.call("POST", f"{CR}/hostnetworks", {
        "metadata": {"name": "n1", "ownerReferences": [owner_ref(owner_lease)]}, "spec": {}})
    api.call("POST", LEASES_NS, lease("pod-owned", owners=[pod]))
    assert api.call("DELETE", f"{LEASES_NS}/owner")[0] == 200
    assert api.call("GET", f"{CR}/hostnetworks/n1")[0] == 200
    assert api.call("GET", f"{LEASES_NS}/pod-owned")[0] == 200

    kept = node(api, "node-1")
    api.call("POST", LEASES_NS, lease("orphaned", owners=[owner_ref(kept)]))
    assert api.call("DELETE", "/api/v1/nodes/node-1?propagationPolicy=Orphan")[0] == 200
    status, orphan, _ = api.call("GET", f"{LEASES_NS}/orphaned")
    assert status == 200 and "ownerReferences" not in orphan["metadata"]
