"""Pods, PodDisruptionBudgets and the eviction subresource in the fake API server, held to
upstream (raw HTTP, so the exact codes and bodies show): pkg/registry/core/pod/strategy.go
(create, graceful deletion), pkg/controller/disruption/disruption.go (a budget's status) and
pkg/registry/core/pod/storage/eviction.go (EvictionREST.Create). tests/fakeapi/README.md,
"Pods, PodDisruptionBudgets and eviction", maps each to its upstream function."""
from __future__ import annotations

import pytest

from tests.fakeapi.disruption import EVICTION_VIOLATES_MSG, MULTIPLE_PDBS_MSG
from tests.fakeapi.server import PDBS, PODS
from tests.kube.test_fakeapi import Http

NS = "app"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"
PDBS_PATH = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"
WEB = {"app": "web"}


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def running_pod(name: str, *, node: str = "n1", labels: dict = WEB, ready: bool = True,
                phase: str = "Running", grace_s: int = 30, owner_uid: str = "") -> dict:
    """A pod as the kubelet reports it (seeded as an administrator: the status is kept)."""
    meta: dict = {"name": name, "namespace": NS, "labels": dict(labels)}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "name": "web-rs", "uid": owner_uid, "controller": True}]
    return {"metadata": meta,
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace_s,
                     "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def seed(fake_api, count: int = 3, **kwargs) -> None:
    for index in range(count):
        fake_api.put_object(PODS, running_pod(f"web-{index}", **kwargs))


def budget(name: str = "web", **spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name}, "spec": {"selector": {"matchLabels": WEB}, **spec}}


def status_of(fake_api, name: str = "web") -> dict:
    return fake_api.get(PDBS, name, NS)["status"]


def eviction(name: str, **delete_options) -> dict:
    body: dict = {"apiVersion": "policy/v1", "kind": "Eviction",
                  "metadata": {"name": name, "namespace": NS}}
    if delete_options:
        body["deleteOptions"] = delete_options
    return body


def evict(api, name: str, **delete_options):
    return api.call("POST", f"{PODS_PATH}/{name}/eviction", eviction(name, **delete_options))


# -- pods ------------------------------------------------------------------------------------
def test_pod_create_resets_the_status_and_defaults_the_grace_period(api):
    """podStrategy.PrepareForCreate, SetDefaults_PodSpec."""
    body = running_pod("p")
    del body["spec"]["terminationGracePeriodSeconds"]
    status, created, _ = api.call("POST", PODS_PATH, body)
    assert status == 201, created
    assert created["status"] == {"phase": "Pending"}
    assert created["spec"]["terminationGracePeriodSeconds"] == 30
    assert created["metadata"]["namespace"] == NS and created["kind"] == "Pod"


def test_pods_are_listed_by_node_label_and_page(fake_api, api):
    """fieldSelector spec.nodeName (AddFieldLabelConversionsForPod), across namespaces, paged;
    an unknown field label is 400."""
    seed(fake_api, 3)
    fake_api.put_object(PODS, running_pod("elsewhere", node="n2"))
    status, body, _ = api.call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2")
    assert status == 200 and [p["metadata"]["name"] for p in body["items"]] == ["web-0", "web-1"]
    token = body["metadata"]["continue"]
    status, body, _ = api.call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2"
                                      f"&continue={token}")
    assert [p["metadata"]["name"] for p in body["items"]] == ["web-2"]
    assert "continue" not in body["metadata"]
    status, body, _ = api.call("GET", f"{PODS_PATH}?labelSelector=app%3Dweb"
                                      "&fieldSelector=spec.hostNetwork%3Dfalse")
    assert status == 200 and len(body["items"]) == 4
    status, body, _ = api.call("GET", "/api/v1/pods?fieldSelector=spec.nodename%3Dn1")
    assert (status, body["message"]) == (400, "field label not supported: spec.nodename")


def test_deleting_a_running_pod_is_graceful(fake_api, api):
    """rest.BeforeDelete + podStrategy.CheckGracefulDelete: the pod stays with a
    deletionTimestamp until the kubelet's final delete; the answer is the pod (200)."""
    fake_api.kubelet_stops_pods_at_once = False
    seed(fake_api, 1, grace_s=45)
    status, answer, _ = api.call("DELETE", f"{PODS_PATH}/web-0")
    assert status == 200 and answer["kind"] == "Pod"
    meta = fake_api.get(PODS, "web-0", NS)["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 45 and meta["deletionTimestamp"]
    # a second delete with a longer period changes nothing; a shorter one shortens it
    status, _, _ = api.call("DELETE", f"{PODS_PATH}/web-0", {"gracePeriodSeconds": 60})
    assert fake_api.get(PODS, "web-0", NS)["metadata"]["deletionGracePeriodSeconds"] == 45
    api.call("DELETE", f"{PODS_PATH}/web-0", {"gracePeriodSeconds": 5})
    assert fake_api.get(PODS, "web-0", NS)["metadata"]["deletionGracePeriodSeconds"] == 5
    assert fake_api.finish_pod_terminations() == 1
    assert fake_api.get(PODS, "web-0", NS) is None


def test_unbound_terminal_and_zero_grace_pods_go_at_once(fake_api, api):
    fake_api.kubelet_stops_pods_at_once = False
    fake_api.put_object(PODS, running_pod("unbound", node=""))
    fake_api.put_object(PODS, running_pod("done", phase="Succeeded"))
    fake_api.put_object(PODS, running_pod("now"))
    api.call("DELETE", f"{PODS_PATH}/unbound")
    api.call("DELETE", f"{PODS_PATH}/done")
    api.call("DELETE", f"{PODS_PATH}/now", {"gracePeriodSeconds": 0})
    assert fake_api.list(PODS) == []


def test_the_kubelet_at_once_shows_terminating_then_deleted(fake_api, api):
    seed(fake_api, 1)
    start = fake_api.resource_version
    api.call("DELETE", f"{PODS_PATH}/web-0")
    status, lines = api.watch_lines(f"{PODS_PATH}?watch=true&resourceVersion={start}"
                                    "&timeoutSeconds=1")
    assert [(e["type"], bool(e["object"]["metadata"].get("deletionTimestamp")))
            for e in lines] == [("MODIFIED", True), ("DELETED", True)]


# -- the disruption controller ---------------------------------------------------------------
def test_budget_status_is_the_controllers(fake_api, api):
    """updatePdbStatus: minAvailable as a number counts the matching pods; Ready ones are
    healthy; disruptionsAllowed = currentHealthy - desiredHealthy; the condition follows."""
    seed(fake_api, 3)
    fake_api.put_object(PODS, running_pod("unready", ready=False))
    fake_api.put_object(PODS, running_pod("other", labels={"app": "db"}))
    status, created, _ = api.call("POST", PDBS_PATH, budget(minAvailable=2))
    assert status == 201 and created["status"] == {
        "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
    got = status_of(fake_api)
    condition = got.pop("conditions")
    assert got == {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 3,
                   "desiredHealthy": 2, "expectedPods": 4}
    assert [(c["type"], c["status"], c["reason"]) for c in condition] == [
        ("DisruptionAllowed", "True", "SufficientPods")]
    # a pod turning unready takes the disruption away at once
    fake_api.put_object(PODS, running_pod("web-2", ready=False))
    got = status_of(fake_api)
    assert (got["currentHealthy"], got["disruptionsAllowed"]) == (2, 0)
    assert got["conditions"][0]["reason"] == "InsufficientPods"


def test_percentages_and_max_unavailable_need_the_controllers_scale(fake_api, api):
    """getExpectedScale: without the scale of the pods' controller the sync fails safe
    (disruptionsAllowed 0, SyncFailed); with it, maxUnavailable is taken from the scale."""
    seed(fake_api, 3, owner_uid="rs-uid")
    api.call("POST", PDBS_PATH, budget(maxUnavailable=1))
    got = status_of(fake_api)
    assert got["disruptionsAllowed"] == 0
    assert [(c["reason"], c["message"]) for c in got["conditions"]] == [
        ("SyncFailed", 'found no controllers for pod "web-0"')]
    fake_api.set_controller_scale("rs-uid", 4)
    got = status_of(fake_api)
    assert (got["expectedPods"], got["desiredHealthy"], got["currentHealthy"],
            got["disruptionsAllowed"]) == (4, 3, 3, 0)
    fake_api.set_controller_scale("rs-uid", 3)
    api.call("PATCH", f"{PDBS_PATH}/web", {"spec": {"maxUnavailable": None,
                                                    "minAvailable": "50%"}},
             content_type="application/merge-patch+json")
    got = status_of(fake_api)
    assert (got["observedGeneration"], got["desiredHealthy"], got["disruptionsAllowed"]) == (
        2, 2, 1)  # ceil(50% of 3)


# -- eviction ----------------------------------------------------------------------------------
def test_eviction_takes_a_disruption_then_refuses_with_429(fake_api, api):
    """checkAndDecrement: disruptionsAllowed down, the pod in disruptedPods, the pod deleted;
    at 0 the exact 429 with the budget named in its DisruptionBudget cause."""
    seed(fake_api, 3)
    api.call("POST", PDBS_PATH, budget(minAvailable=2))
    status, body, _ = evict(api, "web-0")
    assert (status, body) == (201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "code": 201})
    assert fake_api.get(PODS, "web-0", NS) is None
    assert status_of(fake_api)["disruptionsAllowed"] == 0
    status, body, headers = evict(api, "web-1")
    assert status == 429
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": EVICTION_VIOLATES_MSG, "reason": "TooManyRequests",
                    "details": {"causes": [{
                        "reason": "DisruptionBudget",
                        "message": "The disruption budget web needs 2 healthy pods and has 2 "
                                   "currently"}]},
                    "code": 429}
    assert "Retry-After" not in headers
    assert fake_api.get(PODS, "web-1", NS) is not None


def test_an_evicted_pod_not_yet_gone_still_holds_its_disruption(fake_api, api):
    """buildDisruptedPodMap: while the evicted pod is neither gone nor terminating it is not
    counted healthy (disruptedPods), so a second eviction cannot slip through."""
    fake_api.kubelet_stops_pods_at_once = False
    seed(fake_api, 4)
    api.call("POST", PDBS_PATH, budget(minAvailable=2))
    assert status_of(fake_api)["disruptionsAllowed"] == 2
    assert evict(api, "web-0", dryRun=["All"])[0] == 201  # a dry run changes nothing
    assert status_of(fake_api)["disruptionsAllowed"] == 2 and fake_api.get(PODS, "web-0", NS)
    assert evict(api, "web-0")[0] == 201
    got = status_of(fake_api)
    assert (got["currentHealthy"], got["disruptionsAllowed"]) == (3, 1)
    assert "disruptedPods" not in got  # terminating now: dropped from the map
    assert evict(api, "web-1")[0] == 201
    assert evict(api, "web-2")[0] == 429
    fake_api.finish_pod_terminations()
    assert status_of(fake_api)["currentHealthy"] == 2


def test_pods_without_a_budget_terminal_or_pending_ones_evict_freely(fake_api, api):
    """canIgnorePDB, and a pod no budget selects (empty selectors select none here)."""
    seed(fake_api, 2)
    fake_api.put_object(PODS, running_pod("finished", phase="Succeeded"))
    fake_api.put_object(PODS, running_pod("starting", phase="Pending", ready=False))
    fake_api.put_object(PODS, running_pod("loner", labels={"app": "solo"}))
    api.call("POST", PDBS_PATH, budget(minAvailable=2))
    api.call("POST", PDBS_PATH, {**budget("all", minAvailable=9), "spec": {
        "minAvailable": 9, "selector": {}}})
    for name in ("finished", "starting", "loner"):
        assert evict(api, name)[0] == 201, name
        assert fake_api.get(PODS, name, NS) is None
    assert evict(api, "web-0")[0] == 429


def test_two_budgets_are_a_500_and_a_missing_pod_404(fake_api, api):
    seed(fake_api, 3)
    api.call("POST", PDBS_PATH, budget(minAvailable=1))
    api.call("POST", PDBS_PATH, budget("web-too", minAvailable=1))
    status, body, _ = evict(api, "web-0")
    assert (status, body) == (500, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "message": MULTIPLE_PDBS_MSG,
                                    "code": 500})
    assert fake_api.get(PODS, "web-0", NS) is not None
    status, body, _ = evict(api, "nope")
    assert (status, body["message"], body["details"]) == (
        404, 'pods "nope" not found', {"name": "nope", "kind": "pods"})


def test_an_unready_pod_under_a_satisfied_budget_evicts_without_taking_a_disruption(fake_api,
                                                                                     api):
    seed(fake_api, 3)
    fake_api.put_object(PODS, running_pod("sick", ready=False))
    api.call("POST", PDBS_PATH, budget(minAvailable=3))
    assert status_of(fake_api)["disruptionsAllowed"] == 0
    assert evict(api, "sick")[0] == 201
    assert evict(api, "web-0")[0] == 429


def test_eviction_preconditions_and_bad_bodies(fake_api, api):
    """store.Delete's uid precondition (409 naming Pod), EvictionREST.Create's checks (400),
    and only POST on the subresource (405)."""
    seed(fake_api, 1)
    status, body, _ = evict(api, "web-0", preconditions={"uid": "not-this-one"})
    assert status == 409 and body["message"].startswith(
        'Operation cannot be fulfilled on Pod "web-0": the UID in the precondition '
        "(not-this-one) does not match the UID in record")
    status, body, _ = api.call("POST", f"{PODS_PATH}/web-0/eviction", eviction("other"))
    assert (status, body["message"]) == (
        400, "name in URL does not match name in Eviction object")
    status, body, _ = api.call("POST", f"{PODS_PATH}/web-0/eviction",
                               {**eviction("web-0"), "kind": "Pod"})
    assert status == 400
    status, _, _ = api.call("GET", f"{PODS_PATH}/web-0/eviction")
    assert status == 405
    assert fake_api.get(PODS, "web-0", NS) is not None


def test_a_budget_not_yet_observed_is_still_being_processed(fake_api, api):
    """checkAndDecrement: observedGeneration behind the generation is a 429 with a 10 s
    Retry-After (createTooManyRequestsError)."""
    seed(fake_api, 3)
    api.call("POST", PDBS_PATH, budget(minAvailable=1))
    stale = fake_api.get(PDBS, "web", NS)
    stale["metadata"]["generation"] = 5  # as if the controller had not seen the edit yet
    with fake_api._lock:
        fake_api.disruption.syncing = True  # the controller is behind
        try:
            fake_api._objects[PDBS][(NS, "web")] = stale
        finally:
            fake_api.disruption.syncing = False
    status, body, headers = evict(api, "web-0")
    assert status == 429 and headers["Retry-After"] == "10"
    assert body["details"] == {"causes": [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget web is still being processed by the server."}],
        "retryAfterSeconds": 10}


def test_eviction_is_authorized_as_create_on_pods_eviction(fake_api, api):
    """The authorization filter sees create pods/eviction (requestinfo.go)."""
    seed(fake_api, 1)
    fake_api.deny("create", "pods/eviction", namespace=NS)
    status, body, _ = evict(api, "web-0")
    assert status == 403 and 'cannot create resource "pods/eviction"' in body["message"]


# -- cordon: a Node patch of spec.unschedulable ------------------------------------------------
@pytest.mark.parametrize("content_type", ["application/merge-patch+json",
                                          "application/strategic-merge-patch+json"])
def test_a_node_is_cordoned_and_uncordoned_by_patch(fake_api, api, content_type):
    """What `kubectl cordon` / `uncordon` send (a strategic merge patch; null removes the
    field, Go's omitempty false), and a merge patch with a stale resourceVersion is 409."""
    fake_api.put_object("nodes", {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}})
    rv = fake_api.get("nodes", "n1")["metadata"]["resourceVersion"]
    status, node, _ = api.call("PATCH", "/api/v1/nodes/n1", {"spec": {"unschedulable": True}},
                               content_type=content_type)
    assert status == 200 and node["spec"] == {"podCIDR": "10.0.0.0/24", "unschedulable": True}
    status, body, _ = api.call("PATCH", "/api/v1/nodes/n1", {
        "metadata": {"resourceVersion": rv}, "spec": {"unschedulable": None}},
        content_type=content_type)
    assert status == 409 and body["reason"] == "Conflict"
    status, node, _ = api.call("PATCH", "/api/v1/nodes/n1", {"spec": {"unschedulable": None}},
                               content_type=content_type)
    assert status == 200 and node["spec"] == {"podCIDR": "10.0.0.0/24"}
    status, body, _ = api.call("GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse")
    assert [n["metadata"]["name"] for n in body["items"]] == ["n1"]


# -- label selectors (tests/fakeapi/selectors.py) ----------------------------------------------
def test_label_selectors_as_label_selector_as_selector_reads_them():
    from tests.fakeapi.selectors import InvalidSelector, selector_empty, selector_matches
    labels = {"app": "web", "tier": "1"}
    assert selector_matches({}, labels) and selector_empty({})
    assert not selector_matches(None, labels) and not selector_empty(None)
    assert selector_matches({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["1", "2"]},
        {"key": "gone", "operator": "DoesNotExist"},
        {"key": "app", "operator": "NotIn", "values": ["db"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                                labels)
    for bad in ({"key": "a", "operator": "Near"}, {"key": "a", "operator": "In"},
                {"key": "a", "operator": "Exists", "values": ["x"]}):
        with pytest.raises(InvalidSelector):
            selector_matches({"matchExpressions": [bad]}, labels)


def test_a_budget_with_an_invalid_selector_fails_safe(fake_api, api):
    seed(fake_api, 2)
    api.call("POST", PDBS_PATH, {**budget(minAvailable=1), "spec": {
        "minAvailable": 1, "selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}})
    got = status_of(fake_api)
    assert got["disruptionsAllowed"] == 0
    assert got["conditions"][0]["reason"] == "SyncFailed"
    assert evict(api, "web-0")[0] == 201  # an invalid selector matches no pod at eviction
