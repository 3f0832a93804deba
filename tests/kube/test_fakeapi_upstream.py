"""The fake API server held to Kubernetes' own code: every answer here is the one a real API
server gives (code, Status reason, message, details), as read from upstream's source. Each test
names the upstream function it follows; tests/fakeapi/README.md maps them. Requests go through
the `kubernetes` client (KubeClient) where the agent uses it, so the tests see what it sees."""
from __future__ import annotations

import json
import re
import threading

import pytest
from kubernetes import client as k8s

from plumber_agent.cluster import KubeStatusSink
from tests.fakeapi import HOSTNETWORKS, NODES, TEMPLATES
from tests.fakeapi.server import ApiError, json_patch
from tests.helpers.wait import wait_for
from tests.kube.test_fakeapi import Http

GROUP = "plumber.k8s.pf9.io"
CR = f"/apis/{GROUP}/v1"
HN = f"hostnetworks.{GROUP}"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
LOCK_MSG = ("the object has been modified; please apply your changes to the latest version and "
            "try again")
GENERIC_422 = "the server rejected our request due to an error in our request"
DNS1123_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def failure(code, reason, message, details=None):
    """A failed metav1.Status as upstream serializes it (omitempty fields left out)."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "code": code}
    if reason:
        status["reason"] = reason
    if details is not None:
        status["details"] = details
    return status


def refused(call, *args, **kwargs):
    """(HTTP status, decoded body, headers) of a call the server refuses."""
    with pytest.raises(k8s.ApiException) as info:
        call(*args, **kwargs)
    exc = info.value
    body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
    headers = dict(exc.headers or {})
    if headers.get("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return exc.status, body, headers


def hostnetwork(name="n1", **spec):
    return {"apiVersion": f"{GROUP}/v1", "kind": "HostNetwork", "metadata": {"name": name},
            "spec": spec}


def patch_cr(kube, name, body, content_type, *, status=False):
    method = kube.custom.patch_cluster_custom_object_status if status else \
        kube.custom.patch_cluster_custom_object
    return kube._call(method, GROUP, "v1", HOSTNETWORKS, name, body, write=True,
                      _content_type=content_type)


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


# ---------------------------------------------------------------- errors.go constructors
def test_not_found_on_every_verb(kube):
    """errors.NewNotFound(qualifiedResource, name), details.kind is the *resource*."""
    expected = failure(404, "NotFound", f'{HN} "n1" not found',
                       {"name": "n1", "group": GROUP, "kind": "hostnetworks"})
    assert kube.get_hostnetwork("n1") is None  # the agent's reading of it
    for call, args in ((kube.custom.get_cluster_custom_object, ()),
                       (kube.custom.delete_cluster_custom_object, ()),
                       (kube.custom.replace_cluster_custom_object,
                        ({**hostnetwork(), "metadata": {"name": "n1",
                                                        "resourceVersion": "1"}},))):
        assert refused(kube._call, call, GROUP, "v1", HOSTNETWORKS, "n1", *args)[:2] == \
            (404, expected)
    assert refused(patch_cr, kube, "n1", {"spec": {}}, MERGE)[:2] == (404, expected)
    assert refused(patch_cr, kube, "n1", {"status": {}}, MERGE, status=True)[:2] == \
        (404, expected)


def test_already_exists(kube):
    """errors.NewAlreadyExists, via etcd3 store.Create -> InterpretCreateError."""
    kube.create_hostnetwork(hostnetwork())
    assert refused(kube.create_hostnetwork, hostnetwork())[:2] == (409, failure(
        409, "AlreadyExists", f'{HN} "n1" already exists',
        {"name": "n1", "group": GROUP, "kind": "hostnetworks"}))


def test_conflict_on_stale_put_and_stale_patch_precondition(fake_api, kube):
    """store.go Update: a resourceVersion that is not the current one is NewConflict with
    OptimisticLockErrorMsg, for PUT and for a merge patch that carries one."""
    # junk fields: this test is about conflicts, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    stale = kube.create_hostnetwork(hostnetwork())
    kube.replace_hostnetwork("n1", {**stale, "spec": {"a": 1}})
    expected = failure(409, "Conflict", f'Operation cannot be fulfilled on {HN} "n1": {LOCK_MSG}',
                       {"name": "n1", "group": GROUP, "kind": "hostnetworks"})
    assert refused(kube.replace_hostnetwork, "n1", {**stale, "spec": {"b": 1}})[:2] == \
        (409, expected)
    rv = stale["metadata"]["resourceVersion"]
    assert refused(patch_cr, kube, "n1", {"metadata": {"resourceVersion": rv}, "spec": {}},
                   MERGE)[:2] == (409, expected)
    assert refused(patch_cr, kube, "n1", {"metadata": {"resourceVersion": rv}, "status": {}},
                   MERGE, status=True)[:2] == (409, expected)


def test_put_without_resource_version_custom_resource_422_node_unconditional(kube, api):
    """customResourceStrategy.AllowUnconditionalUpdate is false: store.go answers NewInvalid
    with the resource as kind (#18526) and the uint64 printed as 0x0 (field.Error.ErrorBody);
    nodes allow an unconditional update."""
    kube.create_hostnetwork(hostnetwork())
    assert refused(kube.replace_hostnetwork, "n1", hostnetwork(a=1))[:2] == (422, failure(
        422, "Invalid", f'{HN} "n1" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update", {"name": "n1", "group": GROUP, "kind": "hostnetworks",
                                            "causes": [{
                                                "reason": "FieldValueInvalid",
                                                "message": "Invalid value: 0x0: must be "
                                                           "specified for an update",
                                                "field": "metadata.resourceVersion"}]}))
    assert api.call("POST", "/api/v1/nodes", {"metadata": {"name": "node-a"}})[0] == 201
    status, node, _ = api.call("PUT", "/api/v1/nodes/node-a", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"x": "1"}}})
    assert status == 200 and node["metadata"]["labels"] == {"x": "1"}


def test_name_mismatch_is_bad_request(kube):
    """handlers/rest.go checkName, for PUT (before the store) and for a patch that renames."""
    obj = kube.create_hostnetwork(hostnetwork())
    message = "the name of the object (other) does not match the name on the URL (n1)"
    renamed = {**obj, "metadata": {**obj["metadata"], "name": "other"}}
    assert refused(kube.replace_hostnetwork, "n1", renamed)[:2] == \
        (400, failure(400, "BadRequest", message))
    assert refused(patch_cr, kube, "n1", {"metadata": {"name": "other"}}, MERGE)[:2] == \
        (400, failure(400, "BadRequest", message))


def test_server_owned_metadata(fake_api, kube):
    """rest.BeforeUpdate: generation and creationTimestamp are silently the server's; a
    different uid is NewInvalid (ValidateObjectMetaUpdate: field is immutable), named by Kind."""
    # junk fields: this test is about metadata, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    obj = kube.create_hostnetwork(hostnetwork())
    meta = obj["metadata"]
    assert meta["generation"] == 1 and "status" not in obj
    forged = {**obj, "metadata": {**meta, "generation": 9, "creationTimestamp":
                                  "2000-01-01T00:00:00Z"}, "spec": {"a": 1}}
    updated = kube.replace_hostnetwork("n1", forged)
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    other_uid = {**updated, "metadata": {**updated["metadata"], "uid": "other"}}
    assert refused(kube.replace_hostnetwork, "n1", other_uid)[:2] == (422, failure(
        422, "Invalid", f'HostNetwork.{GROUP} "n1" is invalid: metadata.uid: Invalid value: '
        '"other": field is immutable', {"name": "n1", "group": GROUP, "kind": "HostNetwork",
                                        "causes": [{"reason": "FieldValueInvalid",
                                                    "message": 'Invalid value: "other": field '
                                                               "is immutable",
                                                    "field": "metadata.uid"}]}))


def test_create_validation(kube, fake_api):
    """rest.BeforeCreate: generateName, then ValidateObjectMetaAccessor(NameIsDNSSubdomain);
    etcd3 store.Create refuses a resourceVersion with a plain error (500, no reason)."""
    nameless = hostnetwork()
    nameless["metadata"] = {}
    assert refused(kube.create_hostnetwork, nameless)[:2] == (422, failure(
        422, "Invalid", f'HostNetwork.{GROUP} "" is invalid: metadata.name: Required value: '
        "name or generateName is required", {"group": GROUP, "kind": "HostNetwork", "causes": [{
            "reason": "FieldValueRequired", "message": "Required value: name or generateName is "
            "required", "field": "metadata.name"}]}))
    assert refused(kube.create_hostnetwork, hostnetwork("Node_A"))[:2] == (422, failure(
        422, "Invalid", f'HostNetwork.{GROUP} "Node_A" is invalid: metadata.name: Invalid value: '
        f'"Node_A": {DNS1123_MSG}', {"name": "Node_A", "group": GROUP, "kind": "HostNetwork",
                                      "causes": [{"reason": "FieldValueInvalid",
                                                  "message": f'Invalid value: "Node_A": '
                                                             f"{DNS1123_MSG}",
                                                  "field": "metadata.name"}]}))
    with_rv = hostnetwork()
    with_rv["metadata"]["resourceVersion"] = "5"
    assert refused(kube.create_hostnetwork, with_rv)[:2] == (500, failure(
        500, "", "resourceVersion should not be set on objects to be created"))
    generated = hostnetwork()
    generated["metadata"] = {"generateName": "node-"}
    name = kube.create_hostnetwork(generated)["metadata"]["name"]
    assert re.fullmatch(r"node-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
    assert fake_api.list(HOSTNETWORKS)[0]["metadata"]["name"] == name


def test_delete_answers_a_success_status(kube):
    """store.go finalizeDelete without ReturnDeletedObject (the CRD store sets none)."""
    uid = kube.create_hostnetwork(hostnetwork())["metadata"]["uid"]
    assert kube._call(kube.custom.delete_cluster_custom_object, GROUP, "v1", HOSTNETWORKS,
                      "n1", write=True) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "n1", "group": GROUP, "kind": "hostnetworks", "uid": uid}}


def test_status_subresource_refuses_create_and_delete(api):
    """customresource_handler.go serveStatus: NewMethodNotSupported for other verbs."""
    api.call("POST", f"{CR}/hostnetworks", hostnetwork())
    for method, verb in (("POST", "create"), ("DELETE", "delete")):
        status, body, _ = api.call(method, f"{CR}/hostnetworks/n1/status", hostnetwork())
        assert (status, body) == (405, failure(
            405, "MethodNotAllowed", f'{verb} is not supported on resources of kind "{HN}"',
            {"group": GROUP, "kind": "hostnetworks"}))


def test_unauthorized_and_unknown_paths(fake_api, api):
    """filters/authentication.go Unauthorized -> NewUnauthorized("Unauthorized");
    notfoundhandler: a path nothing serves (or a CRD not installed) is a bare NotFound."""
    status, body, _ = Http(fake_api, token="wrong").call("GET", f"{CR}/hostnetworks")
    assert (status, body) == (401, failure(401, "Unauthorized", "Unauthorized"))
    fake_api.set_crd_installed(TEMPLATES, False)
    for path in (f"{CR}/hostnetworktemplates", "/apis/nothing.example.com/v1/things"):
        status, body, _ = api.call("GET", path)
        assert (status, body) == (404, failure(404, "NotFound",
                                               "the server could not find the requested "
                                               "resource"))


def test_injected_faults_look_like_the_real_ones(fake_api, kube):
    """429 from the max-in-flight/APF filters is Go's http.Error (text, Retry-After); 500,
    503 and 504 are NewInternalError, NewServiceUnavailable and NewTimeoutError."""
    fake_api.fail_next(1, 429)
    status, body, headers = refused(kube.get_node, "n1")
    assert (status, body) == (429, "Too many requests, please try again later.\n")
    assert headers["Retry-After"] == "1" and headers["Content-Type"].startswith("text/plain")
    for code, expected in (
            (500, failure(500, "InternalError", "Internal error occurred: injected failure",
                          {"causes": [{"message": "injected failure"}]})),
            (503, failure(503, "ServiceUnavailable", "injected failure")),
            (504, failure(504, "Timeout", "Timeout: injected failure", {}))):
        fake_api.fail_next(1, code)
        assert refused(kube.get_node, "n1")[:2] == (code, expected)


# ---------------------------------------------------------------- patch content types
def test_patch_content_types(kube, api):
    """handlers/patch.go: a Content-Type outside the resource's patch types is
    NewUnsupportedMediaTypeError, checked before the object is even read. Custom resources
    accept JSON, merge and apply patches (customresource_handler.go); server-side apply is
    not implemented here and refused as a server with the ServerSideApply gate off does."""
    cr_types = f"{JSON_PATCH}, {MERGE}, {APPLY}"
    message = "the body of the request was in an unknown format - accepted media types include: "
    assert refused(patch_cr, kube, "missing", {"spec": {}}, SMP)[:2] == (
        415, failure(415, "UnsupportedMediaType", message + cr_types))
    kube.create_hostnetwork(hostnetwork())
    assert refused(patch_cr, kube, "n1", {"spec": {}}, SMP)[:2] == (
        415, failure(415, "UnsupportedMediaType", message + cr_types))
    assert refused(patch_cr, kube, "n1", {"spec": {}}, APPLY)[:2] == (
        415, failure(415, "UnsupportedMediaType", f"{message}{JSON_PATCH}, {MERGE}"))
    api.call("POST", "/api/v1/nodes", {"metadata": {"name": "node-a", "labels": {"a": "1"}}})
    status, node, _ = api.call("PATCH", "/api/v1/nodes/node-a",
                               {"metadata": {"labels": {"b": "2"}}}, SMP)
    assert status == 200 and node["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert api.call("PATCH", "/api/v1/nodes/node-a", {}, APPLY)[1] == failure(
        415, "UnsupportedMediaType", f"{message}{JSON_PATCH}, {MERGE}, {SMP}")
    status, body, _ = api.call("PATCH", f"{CR}/hostnetworks/n1", None, MERGE)
    assert (status, body) == (400, failure(400, "BadRequest", "Invalid JSON Patch"))


def test_failed_json_patch_is_a_generic_422(fake_api, kube, api):
    """handlers/patch.go applyJSPatch: any error from json-patch v4 Apply (a failed `test`, a
    missing path, an index out of range) is NewGenericServerResponse(422, ...): reason
    Invalid, the generic message, empty details -- the library's text never reaches the
    client. What the agent's resourceVersion guard gets when someone else wrote first."""
    # junk fields: this test is about JSON patch errors, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    obj = kube.create_hostnetwork(hostnetwork(l=[1, 2]))
    expected = (422, failure(422, "Invalid", GENERIC_422, {}))
    stale_guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                   {"op": "add", "path": "/status", "value": {"x": 1}}]
    assert refused(kube.json_patch_hostnetwork_status, "n1", stale_guard)[:2] == expected
    for ops in ([{"op": "replace", "path": "/spec/l/5", "value": 0}],
                [{"op": "add", "path": "/spec/l/3", "value": 0}],
                [{"op": "remove", "path": "/spec/missing"}],
                [{"op": "add", "path": "/spec/x/y", "value": 0}],
                [{"op": "frobnicate", "path": "/spec"}]):
        assert refused(patch_cr, kube, "n1", ops, JSON_PATCH)[:2] == expected, ops
    good_guard = [{"op": "test", "path": "/metadata/resourceVersion",
                   "value": obj["metadata"]["resourceVersion"]},
                  {"op": "add", "path": "/status", "value": {"x": 1}}]
    assert kube.json_patch_hostnetwork_status("n1", good_guard)["status"] == {"x": 1}
    # (raw HTTP: the kubernetes client turns a non-list JSON patch into another patch type)
    assert api.call("PATCH", f"{CR}/hostnetworks/n1", {"op": "add"}, JSON_PATCH)[:2] == (
        400, failure(400, "BadRequest",
                     "json: cannot unmarshal object into Go value of type jsonpatch.Patch"))


def test_json_patch_follows_json_patch_v4():
    """gopkg.in/evanphx/json-patch.v4 (what patch.go imports), quirks included."""
    doc = {"a": [1, 2, 3], "m": {"k": "v"}}
    assert json_patch(doc, [{"op": "replace", "path": "/m/new", "value": 1}])["m"] == \
        {"k": "v", "new": 1}  # v4 replaces a missing object member by adding it
    assert json_patch(doc, [{"op": "remove", "path": "/a/-1"}])["a"] == [1, 2]
    assert json_patch(doc, [{"op": "add", "path": "/a/01", "value": 9}])["a"] == [1, 9, 2, 3]
    assert json_patch(doc, [{"op": "test", "path": "/m/absent", "value": None}]) == doc
    assert json_patch(doc, [{"op": "move", "from": "/m/k", "path": "/a/0"}]) == \
        {"a": ["v", 1, 2, 3], "m": {}}
    assert json_patch(doc, [{"op": "copy", "from": "/a", "path": "/m/c"}])["m"]["c"] == [1, 2, 3]
    for ops, detail in (
            ([{"op": "test", "path": "/a/0", "value": True}],
             "testing value /a/0 failed: test failed"),
            ([{"op": "test", "path": "/a/0", "value": 1.0}],
             "testing value /a/0 failed: test failed"),
            ([{"op": "remove", "path": "/a/3"}],
             "error in remove for path: '/a/3': Unable to access invalid index: 3: "
             "invalid index referenced")):
        with pytest.raises(ApiError) as info:
            json_patch(doc, ops)
        assert (info.value.code, info.value.message, info.value.detail) == \
            (422, GENERIC_422, detail)
    with pytest.raises(ApiError) as info:  # patch.go maxJSONPatchOperations
        json_patch(doc, [{"op": "test", "path": "/m/k", "value": "v"}] * 10001)
    assert (info.value.code, info.value.reason, info.value.message) == (
        413, "RequestEntityTooLarge", "Request entity too large: The allowed maximum operations "
        "in a JSON patch is 10000, got 10001")
    assert doc == {"a": [1, 2, 3], "m": {"k": "v"}}  # never mutated


def test_status_sink_falls_back_after_a_refused_guard(fake_api, kube):
    """The agent's KubeStatusSink: a guard refused with the real 422 falls back to a merge
    patch (cluster.py KubeStatusSink.write accepts 409 and 422)."""
    # junk fields: this test is about the guard fallback, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    fake_api.put_object(NODES, {"metadata": {"name": "n1"}})
    sink = KubeStatusSink(kube, "n1")
    sink.ensure()
    sink.write({"items": [1]})
    fake_api.put_object(HOSTNETWORKS, {**fake_api.get(HOSTNETWORKS, "n1"),
                                       "status": {"items": [7]}})  # someone else wrote
    sink.write({"items": [2]})
    patches = fake_api.requests(method="PATCH")
    assert [(r.content_type, r.status) for r in patches[-2:]] == [(JSON_PATCH, 422), (MERGE, 200)]
    assert fake_api.get(HOSTNETWORKS, "n1")["status"] == {"items": [2]}


# ---------------------------------------------------------------- resourceVersion, generation
def test_generation_and_no_op_writes(kube, fake_api):
    """customResourceStrategy: generation starts at 1 and bumps on any change outside
    metadata, never on metadata or status; etcd3 GuaranteedUpdate does not write an unchanged
    object (same resourceVersion, no watch event)."""
    # junk fields: this test is about generation, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    obj = kube.create_hostnetwork(hostnetwork(a=1))
    rv = obj["metadata"]["resourceVersion"]
    same = kube.replace_hostnetwork("n1", obj)
    assert same["metadata"]["resourceVersion"] == rv and fake_api.resource_version == rv
    assert patch_cr(kube, "n1", {"spec": {"a": 1}}, MERGE)["metadata"]["resourceVersion"] == rv
    labelled = patch_cr(kube, "n1", {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert labelled["metadata"]["generation"] == 1 and labelled["metadata"]["resourceVersion"] != rv
    with_status = kube.patch_hostnetwork_status("n1", {"status": {"ok": True}})
    assert with_status["metadata"]["generation"] == 1
    assert patch_cr(kube, "n1", {"spec": {"a": 2}}, MERGE)["metadata"]["generation"] == 2
    assert patch_cr(kube, "n1", {"extra": 1}, MERGE)["metadata"]["generation"] == 3


def test_status_isolation(fake_api, kube):
    """statusStrategy.PrepareForUpdate keeps the old object but status (labels, annotations,
    spec ignored; no status in the body removes it); customResourceStrategy.PrepareForUpdate
    keeps the old status on main-resource writes."""
    # junk fields: this test is about /status isolation, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    obj = kube.create_hostnetwork({**hostnetwork(a=1), "status": {"ignored": True}})
    assert "status" not in obj
    obj = kube.patch_hostnetwork_status("n1", {"metadata": {"labels": {"x": "y"},
                                                            "annotations": {"n": "o"}},
                                               "spec": {"a": 9}, "status": {"ok": True}})
    assert obj["spec"] == {"a": 1} and obj["status"] == {"ok": True}
    assert "labels" not in obj["metadata"] and "annotations" not in obj["metadata"]
    obj = patch_cr(kube, "n1", {"spec": {"a": 2}, "status": {"ok": False}}, MERGE)
    assert obj["status"] == {"ok": True} and obj["spec"] == {"a": 2}
    without_status = {k: v for k, v in obj.items() if k != "status"}
    cleared = kube._call(kube.custom.replace_cluster_custom_object_status, GROUP, "v1",
                         HOSTNETWORKS, "n1", without_status, write=True)
    assert "status" not in cleared and cleared["spec"] == {"a": 2}


# ---------------------------------------------------------------- lists and watches
def test_list_resource_version_errors(fake_api, api):
    """etcd3 interpretListError: an Exact list below compaction is NewResourceExpired (410
    Expired); the cacher's NewTooLargeResourceVersionError for a version not reached yet."""
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    old = fake_api.resource_version
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "b"}})
    fake_api.compact()
    status, body, _ = api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={old}"
                                      "&resourceVersionMatch=Exact")
    assert (status, body) == (410, failure(410, "Expired",
                                           "The resourceVersion for the provided list is too "
                                           "old."))
    assert api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={old}")[0] == 200
    current = int(fake_api.resource_version)
    status, body, _ = api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={current + 5}")
    assert (status, body) == (504, failure(
        504, "Timeout", f"Timeout: Too large resource version: {current + 5}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge",
                     "message": "Too large resource version"}], "retryAfterSeconds": 1}))


def test_watch_too_old_is_an_error_event(fake_api, api):
    """cacher Watch -> watchCache.getAllEventsSinceLocked: below the window the watch answers
    200 with one ERROR event, NewResourceExpired("too old resource version: X (Y)"); a watch
    compacted under it gets etcd3's "provided watch is too old"."""
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    old = fake_api.resource_version
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "b"}})
    floor = fake_api.compact()
    status, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&resourceVersion={old}")
    assert (status, lines) == (200, [{"type": "ERROR", "object": failure(
        410, "Expired", f"too old resource version: {old} ({floor})")}])
    # The compaction point itself is still watchable (nothing after it was lost).
    status, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1"
                                    f"&resourceVersion={floor}")
    assert status == 200 and all(e["type"] != "ERROR" for e in lines)


def test_expired_open_watch(fake_api, api):
    """etcd3 interpretWatchError: an open watch whose history is compacted away ends with an
    ERROR event, NewResourceExpired("The resourceVersion for the provided watch is too old.")."""
    result = {}
    watcher = threading.Thread(target=lambda: result.update(lines=api.watch_lines(
        f"{CR}/hostnetworks?watch=true&resourceVersion={fake_api.resource_version}")[1]))
    watcher.start()
    wait_for(lambda: fake_api.open_streams(HOSTNETWORKS), timeout_s=10, what="a watch")
    fake_api.expire_streams()
    watcher.join(10)
    assert result["lines"] == [{"type": "ERROR", "object": failure(
        410, "Expired", "The resourceVersion for the provided watch is too old.")}]


def test_bookmarks_only_on_request_and_only_a_resource_version(fake_api, api):
    """cacher: BOOKMARK events only with allowWatchBookmarks=true; the object is an empty one
    of the kind with only metadata.resourceVersion (no initial-events-end annotation outside
    sendInitialEvents)."""
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    _, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1"
                               "&allowWatchBookmarks=true")
    bookmarks = [e["object"] for e in lines if e["type"] == "BOOKMARK"]
    assert bookmarks and all(b == {"kind": "HostNetworkTemplate", "apiVersion": f"{GROUP}/v1",
                                   "metadata": {"resourceVersion": fake_api.resource_version}}
                             for b in bookmarks)
    _, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1")
    assert [e["type"] for e in lines] == ["ADDED"]


def test_list_options_validation(api):
    """handlers/get.go ListResource -> ValidateListOptions, answered as NewInvalid of
    ListOptions.meta.k8s.io. No WatchList here: sendInitialEvents is refused as by a server
    without it (so no k8s.io/initial-events-end bookmark is ever sent)."""
    def listoptions_invalid(*causes):
        texts = [f"{field}: {message}" for field, _, message in causes]
        summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        return failure(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {summary}', {
            "group": "meta.k8s.io", "kind": "ListOptions", "causes": [
                {"reason": reason, "message": message, "field": field}
                for field, reason, message in causes]})

    forbidden_watch = ("sendInitialEvents", "FieldValueForbidden",
                       "Forbidden: sendInitialEvents is forbidden for watch")
    status, body, _ = api.call("GET", f"{CR}/hostnetworks?watch=true&sendInitialEvents=true"
                                      "&allowWatchBookmarks=true")
    assert (status, body) == (422, listoptions_invalid(forbidden_watch))
    status, body, _ = api.call("GET", f"{CR}/hostnetworks?watch=true&sendInitialEvents=true"
                                      "&resourceVersionMatch=NotOlderThan")
    assert (status, body) == (422, listoptions_invalid(
        ("resourceVersionMatch", "FieldValueForbidden",
         "Forbidden: resourceVersionMatch is forbidden for watch"), forbidden_watch))
    status, body, _ = api.call("GET", f"{CR}/hostnetworks?resourceVersionMatch=Exact")
    assert (status, body) == (422, listoptions_invalid(
        ("resourceVersionMatch", "FieldValueForbidden", "Forbidden: resourceVersionMatch is "
                                                        "forbidden unless resourceVersion is "
                                                        "provided")))
    status, body, _ = api.call("GET", f"{CR}/hostnetworks?resourceVersion=0"
                                      "&resourceVersionMatch=Sometime")
    assert (status, body) == (422, listoptions_invalid(
        ("resourceVersionMatch", "FieldValueNotSupported",
         'Unsupported value: "Sometime": supported values: "Exact", "NotOlderThan", ""')))


def test_field_selectors_per_type(fake_api, api):
    """handlers/get.go ListResource converts each label with the type's ConvertFieldLabel and
    answers a refused one with NewBadRequest: custom resources take only metadata.name and
    metadata.namespace (runtime.DefaultMetaV1FieldSelectorConversion); nodes take
    spec.unschedulable too (core/v1 conversion.go), with their own wording."""
    fake_api.put_object(NODES, {"metadata": {"name": "a"}, "spec": {"unschedulable": True}})
    fake_api.put_object(NODES, {"metadata": {"name": "b"}})
    status, body, _ = api.call("GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse")
    assert status == 200 and [n["metadata"]["name"] for n in body["items"]] == ["b"]
    status, body, _ = api.call("GET", "/api/v1/nodes?fieldSelector=spec.podCIDR%3Dx")
    assert (status, body) == (400, failure(400, "BadRequest",
                                           "field label not supported: spec.podCIDR"))
    status, body, _ = api.call("GET", f"{CR}/hostnetworks?fieldSelector=spec.x%3Dy")
    assert (status, body) == (400, failure(
        400, "BadRequest", '"spec.x" is not a known field selector: only "metadata.name", '
                           '"metadata.namespace"'))
