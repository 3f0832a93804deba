"""kube/drain.py against the fake API server over HTTP: the pods on one node as NodePods, every
Eviction answer as a typed outcome (the PDB named), and the cordon recorded so that only our own
is ever undone."""
from __future__ import annotations

import json
import threading

import pytest

from plumber_agent.apierrors import ApiReason, NamedApiError
from plumber_agent.kube import client as client_module
from plumber_agent.kube.drain import (
    CORDONED_BY_ANNOTATION, MIRROR_POD_ANNOTATION, NETWORK_STATUS_ANNOTATION, CordonRecord,
    CordonResult, DrainApi, EvictionResult, PodRef, extended_resources, parse_network_status,
    pod_from_object,
)
from tests.fakeapi.server import NODES, PDBS, PODS
from tests.helpers.wait import wait_for
from tests.kube.test_fakeapi_disruption import NS, budget, running_pod, seed

SRIOV = "intel.com/intel_sriov_netdevice"
NETWORK_STATUS = [
    {"name": "cbr0", "interface": "eth0", "ips": ["10.1.0.5"], "default": True},
    {"name": "app/sriov-net", "interface": "net1", "mac": "aa:bb:cc:00:00:01",
     "device-info": {"type": "pci", "version": "1.1.0",
                     "pci": {"pci-address": "0000:3b:02.1"}}}]


@pytest.fixture
def drain(kube):
    return DrainApi(kube)


@pytest.fixture
def node(fake_api):
    fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {"role": "w"}},
                                "spec": {"podCIDR": "10.1.0.0/24"}})
    return "n1"


def sriov_pod(name: str, **kwargs) -> dict:
    pod = running_pod(name, **kwargs)
    pod["metadata"]["annotations"] = {NETWORK_STATUS_ANNOTATION: json.dumps(NETWORK_STATUS)}
    pod["spec"]["containers"] = [
        {"name": "a", "resources": {"requests": {SRIOV: "1", "cpu": "1"},
                                    "limits": {SRIOV: "1", "cpu": "1"}}},
        {"name": "b", "resources": {"limits": {SRIOV: "1", "hugepages-1Gi": "2Gi"}}}]
    pod["spec"]["initContainers"] = [{"name": "i", "resources": {"limits": {SRIOV: "3"}}}]
    return pod


# -- pods ------------------------------------------------------------------------------------
def test_the_pods_of_one_node_with_what_the_analysis_reads(fake_api, drain, node):
    fake_api.put_object(PODS, sriov_pod("vf-user"))
    mirror = running_pod("etcd-n1")
    mirror["metadata"]["annotations"] = {MIRROR_POD_ANNOTATION: "abc"}
    fake_api.put_object(PODS, mirror)
    daemon = running_pod("agent-x")
    daemon["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                              "name": "agent", "uid": "ds", "controller": True}]
    fake_api.put_object(PODS, daemon)
    fake_api.put_object(PODS, running_pod("elsewhere", node="n2"))
    pods = {p.ref.name: p for p in drain.list_node_pods(node)}
    assert sorted(pods) == ["agent-x", "etcd-n1", "vf-user"]
    vf = pods["vf-user"]
    assert vf.ref.namespace == NS and vf.ref.uid == fake_api.get(PODS, "vf-user", NS)[
        "metadata"]["uid"]
    assert vf.resources == {SRIOV: 3}  # not cpu, not hugepages: no device plugin's
    assert vf.pci_addresses == ("0000:3b:02.1",)
    assert [(n.name, n.interface, n.default) for n in vf.networks] == [
        ("cbr0", "eth0", True), ("app/sriov-net", "net1", False)]
    assert (vf.ready, vf.phase, vf.mirror, vf.daemonset, vf.terminating) == (
        True, "Running", False, False, False)
    assert pods["etcd-n1"].mirror and pods["agent-x"].daemonset
    (request,) = fake_api.requests(method="GET", path_contains="/api/v1/pods")
    assert request.query["fieldSelector"] == "spec.nodeName=n1"
    assert "resourceVersion" not in request.query  # a consistent read, never the cache


def test_many_pods_are_read_in_pages(fake_api, drain, node, monkeypatch):
    monkeypatch.setattr(client_module, "LIST_PAGE_SIZE", 2)
    seed(fake_api, 5)
    assert [p.ref.name for p in drain.list_node_pods(node)] == [f"web-{i}" for i in range(5)]
    assert len(fake_api.requests(method="GET", path_contains="/api/v1/pods")) == 3


def test_a_refused_list_is_a_named_error(fake_api, drain, node):
    fake_api.deny("list", "pods")
    with pytest.raises(NamedApiError) as raised:
        drain.list_node_pods(node)
    assert raised.value.failure.reason == ApiReason.FORBIDDEN
    assert "list pods" in str(raised.value) and "ClusterRole plumber-agent" in str(raised.value)


def test_extended_resources_count_as_the_scheduler_does():
    """computePodResourceRequest: containers summed, an init container's if larger; cpu and
    memory are not device resources."""
    spec = sriov_pod("p")["spec"]
    assert extended_resources(spec)[SRIOV] == 3  # init 3 > 1 + 1
    spec["initContainers"] = []
    assert extended_resources(spec)[SRIOV] == 2
    assert set(extended_resources(spec)) == {SRIOV}


def test_a_malformed_network_status_is_reported_not_a_crash():
    for text, why in (("{", "is not JSON"), ('{"a": 1}', "is not a JSON list"),
                      ('[{"interface": "x"}]', "[0] is not an object with a name")):
        attachments, error = parse_network_status(text)
        assert attachments == () and why in error, text
    pod = pod_from_object({"metadata": {"name": "p", "namespace": "n",
                                        "annotations": {NETWORK_STATUS_ANNOTATION: "[1"}}})
    assert pod.networks == () and pod.network_status_error
    assert pod_from_object({}).ref == PodRef("", "", "")


# -- eviction ----------------------------------------------------------------------------------
def test_eviction_outcomes_name_the_budget(fake_api, drain, node):
    seed(fake_api, 3)
    fake_api.put_object(PDBS, budget(minAvailable=2) | {"metadata": {"name": "web",
                                                                     "namespace": NS}})
    pods = drain.list_node_pods(node)
    first = drain.evict(pods[0].ref)
    assert (first.result, first.evicted, first.status) == (EvictionResult.EVICTED, True, 201)
    blocked = drain.evict(pods[1].ref)
    assert (blocked.result, blocked.pdb, blocked.status, blocked.retriable) == (
        EvictionResult.BLOCKED_BY_PDB, "web", 429, True)
    assert blocked.message == "The disruption budget web needs 2 healthy pods and has 2 currently"
    assert [r.path for r in fake_api.requests(method="POST", path_contains="/eviction")] == [
        f"/api/v1/namespaces/{NS}/pods/web-{i}/eviction" for i in (0, 1)]
    assert drain.evict(pods[0].ref).result == EvictionResult.GONE  # 404: already gone


def test_the_uid_precondition_never_evicts_a_replacement(fake_api, drain, node):
    seed(fake_api, 1)
    (old,) = drain.list_node_pods(node)
    fake_api.delete_object(PODS, "web-0", NS)
    fake_api.put_object(PODS, running_pod("web-0"))
    outcome = drain.evict(old.ref)
    assert (outcome.result, outcome.status) == (EvictionResult.GONE, 409)
    assert fake_api.get(PODS, "web-0", NS) is not None  # the new pod stays


def test_throttled_forbidden_and_two_budgets_are_told_apart(fake_api, drain, node):
    seed(fake_api, 2)
    ref = drain.list_node_pods(node)[0].ref
    fake_api.fail_next(1, 429, retry_after=3, path_contains="/eviction")
    throttled = drain.evict(ref)
    assert (throttled.result, throttled.pdb, throttled.retry_after_s) == (
        EvictionResult.THROTTLED, "", 3.0)
    fake_api.deny("create", "pods/eviction", namespace=NS)
    forbidden = drain.evict(ref)
    assert forbidden.result == EvictionResult.FORBIDDEN and not forbidden.retriable
    assert "permission denied: create pods/eviction app/web-0" in forbidden.message
    fake_api.allow_all()
    for name in ("a", "b"):
        fake_api.put_object(PDBS, {**budget(name, minAvailable=1),
                                   "metadata": {"name": name, "namespace": NS}})
    failed = drain.evict(ref)
    assert (failed.result, failed.status) == (EvictionResult.FAILED, 500)
    assert "more than one PodDisruptionBudget" in failed.message
    assert fake_api.get(PODS, "web-0", NS) is not None


# -- cordon ------------------------------------------------------------------------------------
def record_of(fake_api, node: str):
    annotations = fake_api.get(NODES, node)["metadata"].get("annotations") or {}
    return annotations.get(CORDONED_BY_ANNOTATION)


def test_cordon_records_who_and_uncordon_undoes_only_that(fake_api, drain, node):
    done = drain.cordon(node, agent=node, template="vfs", at="2026-12-07T03:00:00Z")
    assert done.result == CordonResult.CORDONED and done.state.cordoned_by(node)
    stored = fake_api.get(NODES, node)
    assert stored["spec"] == {"podCIDR": "10.1.0.0/24", "unschedulable": True}
    assert CordonRecord.decode(record_of(fake_api, node)) == CordonRecord(
        agent=node, template="vfs", at="2026-12-07T03:00:00Z")
    (patch,) = fake_api.writes(path_contains="/api/v1/nodes/n1")
    assert patch.method == "PATCH" and patch.content_type == "application/merge-patch+json"
    # a restarted agent finds its own cordon
    again = drain.cordon(node, agent=node, template="vfs")
    assert again.result == CordonResult.ALREADY_CORDONED
    assert drain.node_cordon(node).record.template == "vfs"
    # another template's uncordon, another agent's: not theirs
    assert drain.uncordon(node, agent=node, template="other").result == CordonResult.NOT_OURS
    assert drain.uncordon(node, agent="n2").result == CordonResult.NOT_OURS
    assert drain.node_cordon(node).unschedulable
    undone = drain.uncordon(node, agent=node, template="vfs")
    assert undone.result == CordonResult.UNCORDONED
    stored = fake_api.get(NODES, node)
    assert stored["spec"] == {"podCIDR": "10.1.0.0/24"}
    assert CORDONED_BY_ANNOTATION not in (stored["metadata"].get("annotations") or {})
    assert stored["metadata"]["labels"] == {"role": "w"}
    assert drain.uncordon(node, agent=node).result == CordonResult.NOT_CORDONED


def test_a_cordon_someone_else_made_is_left_alone(fake_api, drain, node):
    person = fake_api.get(NODES, node)
    person["spec"]["unschedulable"] = True
    fake_api.put_object(NODES, person)
    assert drain.cordon(node, agent=node).result == CordonResult.CORDONED_BY_OTHERS
    assert record_of(fake_api, node) is None  # not recorded: never ours to undo
    assert drain.uncordon(node, agent=node).result == CordonResult.NOT_OURS
    assert fake_api.get(NODES, node)["spec"]["unschedulable"] is True
    assert fake_api.writes(path_contains="/nodes/") == []


def test_a_record_left_after_someone_uncordoned_is_cleared(fake_api, drain, node):
    drain.cordon(node, agent=node)
    person = fake_api.get(NODES, node)
    del person["spec"]["unschedulable"]  # kubectl uncordon by a person
    fake_api.put_object(NODES, person)
    assert drain.node_cordon(node).record is not None
    assert drain.uncordon(node, agent=node).result == CordonResult.RECORD_CLEARED
    assert record_of(fake_api, node) is None
    assert "unschedulable" not in fake_api.get(NODES, node)["spec"]


def test_a_person_cordoning_meanwhile_wins(fake_api, drain, node):
    """The patch carries the resourceVersion read: a cordon made between our read and our
    write makes it a 409; re-read, the cordon is someone else's and stays unrecorded."""
    stall = fake_api.stall_writes("PATCH", "/api/v1/nodes/n1")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(drain.cordon(node, agent=node)))
    worker.start()
    try:
        wait_for(lambda: stall.stalled == 1, timeout_s=30, what="the cordon patch waits")
        person = fake_api.get(NODES, node)
        person["spec"]["unschedulable"] = True
        fake_api.put_object(NODES, person)
    finally:
        stall.release()
        worker.join(timeout=30)
    assert [o.result for o in outcome] == [CordonResult.CORDONED_BY_OTHERS]
    assert record_of(fake_api, node) is None
    assert [r.status for r in fake_api.writes(path_contains="/nodes/")] == [409]


def test_a_missing_node_is_a_named_error(drain):
    with pytest.raises(NamedApiError) as raised:
        drain.cordon("ghost", agent="ghost")
    assert raised.value.failure.reason == ApiReason.NOT_FOUND


class _Answers:
    """Our own seam under DrainApi (KubeClient._call): a server that answers a Failure Status
    with a 2xx code, which client-go's transformResponse also reads as a failure."""

    transport = None

    def __init__(self, answer: dict) -> None:
        self.answer = answer

    def _call(self, *_args, **_kwargs):
        return self.answer


def test_a_failure_status_in_a_2xx_answer_is_a_failure():
    failed = DrainApi(_Answers({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "This pod has more than one PodDisruptionBudget",
                                "code": 500})).evict(PodRef(NS, "p", "u"))
    assert (failed.result, failed.status, failed.evicted) == (EvictionResult.FAILED, 500, False)
    ok = DrainApi(_Answers({"kind": "Status", "status": "Success", "code": 201})).evict(
        PodRef(NS, "p", "u"))
    assert (ok.result, ok.status) == (EvictionResult.EVICTED, 201)
