"""The fake API server's own semantics, over raw HTTP (http.client): if the fake lies, every
test built on it lies too."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.fakeapi import HOSTNETWORKS, NODES, TEMPLATES, json_patch, merge_patch

CR = "/apis/plumber.k8s.pf9.io/v1"
MERGE = "application/merge-patch+json"


class Http:
    def __init__(self, server, token="test-token"):
        parts = urlsplit(server.url)
        self.host, self.port, self.token = parts.hostname, parts.port, token

    def call(self, method, path, body=None, content_type="application/json"):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, (json.loads(data) if data else None), dict(resp.getheaders())

    def watch_lines(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        resp = conn.getresponse()
        lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
        conn.close()
        return resp.status, lines


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def test_auth_required(fake_api, api):
    assert Http(fake_api, token="nope").call("GET", f"{CR}/hostnetworks")[0] == 401
    assert Http(fake_api, token=None).call("GET", f"{CR}/hostnetworks")[0] == 401
    assert api.call("GET", f"{CR}/hostnetworks")[0] == 200
    fake_api.set_token("new")
    assert api.call("GET", f"{CR}/hostnetworks")[0] == 401


def test_create_sets_metadata_and_ignores_status(api):
    status, obj, _ = api.call("POST", f"{CR}/hostnetworks",
                              {"metadata": {"name": "n1"}, "spec": {}, "status": {"x": 1}})
    assert status == 201
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str) and "status" not in obj
    assert api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}})[0] == 409


def test_every_write_bumps_the_resource_version_and_noops_do_not(api):
    _, obj, _ = api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}, "spec": {}})
    rv1 = obj["metadata"]["resourceVersion"]
    _, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1/status", {"status": {"a": 1}}, MERGE)
    rv2 = obj["metadata"]["resourceVersion"]
    _, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1/status", {"status": {"a": 1}}, MERGE)
    assert rv1 != rv2 and obj["metadata"]["resourceVersion"] == rv2


def test_put_needs_current_resource_version(api):
    _, obj, _ = api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}, "spec": {}})
    stale = json.loads(json.dumps(obj))
    obj["spec"] = {"a": 1}
    status, updated, _ = api.call("PUT", f"{CR}/hostnetworks/n1", obj)
    assert status == 200 and updated["metadata"]["generation"] == 2
    stale["spec"] = {"b": 1}
    status, body, _ = api.call("PUT", f"{CR}/hostnetworks/n1", stale)
    assert status == 409 and body["reason"] == "Conflict"
    del stale["metadata"]["resourceVersion"]
    assert api.call("PUT", f"{CR}/hostnetworks/n1", stale)[0] == 422


def test_status_isolation_both_ways(api):
    api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1", "labels": {"a": "1"}},
                                            "spec": {"s": 1}})
    api.call("PATCH", f"{CR}/hostnetworks/n1/status", {"status": {"ok": True}}, MERGE)
    # Main-resource write: status untouched, labels and spec change, generation bumps.
    _, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1",
                         {"metadata": {"labels": {"a": "2"}}, "spec": {"s": 2},
                          "status": {"ok": False}}, MERGE)
    assert obj["status"] == {"ok": True} and obj["metadata"]["labels"] == {"a": "2"}
    assert obj["metadata"]["generation"] == 2
    # Label-only change: no generation bump.
    _, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1",
                         {"metadata": {"labels": {"a": "3"}}}, MERGE)
    assert obj["metadata"]["generation"] == 2
    # Status write: only status changes.
    _, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1/status",
                         {"metadata": {"labels": {"a": "9"}}, "spec": {"s": 9},
                          "status": {"ok": "yes"}}, MERGE)
    assert obj["metadata"]["labels"] == {"a": "3"} and obj["spec"] == {"s": 2}
    assert obj["status"] == {"ok": "yes"} and obj["metadata"]["generation"] == 2


def test_patch_content_types(api):
    api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}, "spec": {"l": [1, 2]}})
    assert api.call("PATCH", f"{CR}/hostnetworks/n1", {"spec": {}},
                    "application/strategic-merge-patch+json")[0] == 415
    assert api.call("PATCH", f"{CR}/hostnetworks/n1", {"spec": {}},
                    "application/apply-patch+yaml")[0] == 415
    status, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1",
                              [{"op": "replace", "path": "/spec/l/0", "value": 7}],
                              "application/json-patch+json")
    assert status == 200 and obj["spec"]["l"] == [7, 2]
    status, obj, _ = api.call("PATCH", f"{CR}/hostnetworks/n1",
                              {"metadata": {"resourceVersion": "1"}, "spec": {"z": 1}}, MERGE)
    assert status == 409  # a resourceVersion in a patch is a precondition
    api.call("POST", "/api/v1/nodes", {"metadata": {"name": "n1", "labels": {"a": "1"}}})
    status, obj, _ = api.call("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"b": "2"}}},
                              "application/strategic-merge-patch+json")
    assert status == 200 and obj["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_merge_patch_rfc7386():
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_patch(target, {"a": {"b": None, "c": [3]}, "e": {"f": 1}}) == \
        {"a": {"c": [3]}, "d": 1, "e": {"f": 1}}
    assert merge_patch(target, [1]) == [1]
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not mutated


def test_json_patch_rfc6902():
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                            {"op": "remove", "path": "/b/c"},
                            {"op": "test", "path": "/a/0", "value": 1}]) == \
        {"a": [1, 2, 3], "b": {}}


def test_delete_then_404(api):
    api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}})
    assert api.call("DELETE", f"{CR}/hostnetworks/n1")[0] == 200
    assert api.call("DELETE", f"{CR}/hostnetworks/n1")[0] == 404
    assert api.call("GET", f"{CR}/hostnetworks/n1")[0] == 404


def test_selectors(fake_api, api):
    for name, role in (("n1", "a"), ("n2", "b"), ("n3", "a")):
        fake_api.put_object(NODES, {"metadata": {"name": name, "labels": {"role": role}}})
    names = lambda body: [i["metadata"]["name"] for i in body["items"]]  # noqa: E731
    assert names(api.call("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn2")[1]) == ["n2"]
    assert names(api.call("GET", "/api/v1/nodes?labelSelector=role%3Da")[1]) == ["n1", "n3"]
    assert names(api.call("GET", "/api/v1/nodes?labelSelector=role!%3Da")[1]) == ["n2"]
    assert api.call("GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue")[0] == 400


def test_watch_replays_from_a_version_and_honours_timeout(fake_api, api):
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    rv = fake_api.resource_version
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "b"}})
    fake_api.put_object(HOSTNETWORKS, {"metadata": {"name": "other-kind"}})
    fake_api.delete_object(TEMPLATES, "a")
    status, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1"
                                    f"&resourceVersion={rv}")
    assert status == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == \
        [("ADDED", "b"), ("DELETED", "a")]


def test_watch_without_version_starts_with_added_and_sends_bookmarks(fake_api, api):
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    _, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1"
                               "&allowWatchBookmarks=true")
    assert lines[0]["type"] == "ADDED"
    bookmarks = [e for e in lines if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[-1]["object"]["metadata"]["resourceVersion"] == \
        fake_api.resource_version
    _, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&timeoutSeconds=1")
    assert all(e["type"] != "BOOKMARK" for e in lines)


def test_compaction_gives_410(fake_api, api):
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "a"}})
    old = fake_api.resource_version
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "b"}})
    fake_api.compact()
    _, lines = api.watch_lines(f"{CR}/hostnetworktemplates?watch=true&resourceVersion={old}")
    assert lines == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": lines[0]["object"]["message"], "reason": "Expired", "code": 410}}]
    status, body, _ = api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={old}"
                                      "&resourceVersionMatch=Exact")
    assert status == 410 and body["code"] == 410
    assert api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={old}")[0] == 200
    fake_api.list_too_old_410 = True
    assert api.call("GET", f"{CR}/hostnetworktemplates?resourceVersion={old}")[0] == 410


def test_faults_fail_next_and_crd_missing(fake_api, api):
    fake_api.fail_next(2, 429, retry_after=3, method="GET")
    status, body, headers = api.call("GET", "/api/v1/nodes")
    assert status == 429 and headers["Retry-After"] == "3" and body["code"] == 429
    assert api.call("GET", "/api/v1/nodes")[0] == 429
    assert api.call("GET", "/api/v1/nodes")[0] == 200
    fake_api.set_crd_installed(TEMPLATES, False)
    assert api.call("GET", f"{CR}/hostnetworktemplates")[0] == 404
    assert api.call("GET", f"{CR}/hostnetworks")[0] == 200


def test_request_log_counts_writes(fake_api, api):
    api.call("POST", f"{CR}/hostnetworks", {"metadata": {"name": "n1"}})
    api.call("GET", f"{CR}/hostnetworks/n1")
    api.call("PATCH", f"{CR}/hostnetworks/n1/status", {"status": {"a": 1}}, MERGE)
    assert [r.method for r in fake_api.writes()] == ["POST", "PATCH"]
    assert len(fake_api.requests()) == 3
    assert fake_api.requests(method="GET")[0].path == f"{CR}/hostnetworks/n1"


def test_events_are_namespaced(api):
    body = {"metadata": {"name": "e1"}, "reason": "R", "message": "m",
            "involvedObject": {"kind": "HostNetwork", "name": "n1"}}
    assert api.call("POST", "/api/v1/namespaces/default/events", body)[0] == 201
    assert api.call("POST", "/apis/events.k8s.io/v1/namespaces/kube-system/events", body)[0] == 201
    _, listed, _ = api.call("GET", "/api/v1/namespaces/default/events")
    assert [e["metadata"]["namespace"] for e in listed["items"]] == ["default"]
    _, everything, _ = api.call("GET", "/api/v1/events")
    assert len(everything["items"]) == 2


def test_standalone_entry_point(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakeapi", "--kubeconfig",
                             str(kubeconfig), "--node", "node-a"],
                            stdout=subprocess.PIPE, text=True, cwd=str(_repo_root()))
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        from plumber_agent.kube.client import KubeClient

        client = KubeClient.from_kubeconfig(str(kubeconfig))
        assert client.get_node("node-a")["metadata"]["labels"] == \
            {"kubernetes.io/hostname": "node-a"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def _repo_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2]
