"""Deleting a CRD in the fake API server, as apiextensions-apiserver does it: the crdFinalizer
(pkg/controller/finalizer/crd_finalizer.go CRDFinalizer.sync, deleteInstances) marks the CRD
Terminating and deletes every instance (a DELETED watch event each), a create meanwhile is 405
(pkg/apiserver/customresource_handler.go ServeHTTP), then the CRD is gone: its GET and every path
under it 404, and open watches end. Raw HTTP, so the exact Status bodies are compared."""
from __future__ import annotations

import threading

import pytest

from tests.fakeapi import TEMPLATES
from tests.kube.test_fakeapi import Http
from tests.kube.test_fakeapi_upstream import failure

CR = "/apis/plumber.k8s.pf9.io/v1"
CRD_NAME = "hostnetworktemplates.plumber.k8s.pf9.io"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
WATCH_TIMEOUT_S = 30


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def template(name):
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": name}, "spec": {"interfaceConfig": [{"name": "eno1"}]}}


def test_the_crd_is_served_and_terminating_deletes_every_instance(fake_api, api):
    for name in ("t1", "t2"):
        assert api.call("POST", f"{CR}/hostnetworktemplates", template(name))[0] == 201
    status, crd, _ = api.call("GET", CRD_PATH)
    assert status == 200
    assert (crd["kind"], crd["metadata"]["name"]) == ("CustomResourceDefinition", CRD_NAME)
    assert "deletionTimestamp" not in crd["metadata"] and crd["metadata"]["uid"]
    start = api.call("GET", f"{CR}/hostnetworktemplates")[1]["metadata"]["resourceVersion"]

    assert fake_api.begin_crd_deletion(TEMPLATES) == 2
    status, crd, _ = api.call("GET", CRD_PATH)
    assert status == 200 and crd["metadata"]["deletionTimestamp"]
    assert crd["metadata"]["finalizers"] == ["customresourcecleanup.apiextensions.k8s.io"]
    assert {"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress"} in crd["status"]["conditions"]
    # Every instance is deleted (DeleteCollection): one DELETED event each; a list is empty.
    status, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&resourceVersion="
                                    f"{start}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
        ("DELETED", "t1"), ("DELETED", "t2")]
    assert api.call("GET", f"{CR}/hostnetworktemplates")[1]["items"] == []
    # customresource_handler.go: a create while terminating.
    assert api.call("POST", f"{CR}/hostnetworktemplates", template("t3"))[:2] == (405, failure(
        405, "MethodNotAllowed", "create not allowed while custom resource definition is "
        "terminating", {"group": "plumber.k8s.pf9.io", "kind": "hostnetworktemplates"}))


def test_a_deleted_crd_answers_404_everywhere_and_ends_open_watches(fake_api, api):
    assert api.call("POST", f"{CR}/hostnetworktemplates", template("t1"))[0] == 201
    ended = threading.Event()
    seen: list = []

    def watch():
        seen.extend(api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&resourceVersion=0"
                                    f"&timeoutSeconds={WATCH_TIMEOUT_S}")[1])
        ended.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    from tests.helpers.wait import wait_for
    wait_for(lambda: fake_api.open_streams(TEMPLATES) == 1, timeout_s=10, what="the watch open")
    assert fake_api.delete_crd(TEMPLATES) == 1
    assert ended.wait(WATCH_TIMEOUT_S / 2), "the watch did not end with its CRD"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
        ("ADDED", "t1"), ("DELETED", "t1")]
    assert api.call("GET", f"{CR}/hostnetworktemplates")[:2] == (404, failure(
        404, "NotFound", "the server could not find the requested resource"))
    assert api.call("GET", CRD_PATH)[:2] == (404, failure(
        404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io "{CRD_NAME}" not found',
        {"name": CRD_NAME, "group": "apiextensions.k8s.io", "kind": "customresourcedefinitions"}))
    # Reinstalled: served again, empty, not terminating.
    fake_api.set_crd_installed(TEMPLATES, True)
    assert api.call("GET", f"{CR}/hostnetworktemplates")[1]["items"] == []
    assert "deletionTimestamp" not in api.call("GET", CRD_PATH)[1]["metadata"]
