"""The fake API server's own semantics, over raw HTTP (http.client): if the fake lies, every
test built on it lies too."""
from __future__ import annotations

import http.client
import json
import re
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
        if not data:
            body = None
        elif resp.getheader("Content-Type", "").startswith("application/json"):
            body = json.loads(data)
        else:
            body = data.decode()
        return resp.status, body, dict(resp.getheaders())

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


def test_put_needs_current_resource_version(fake_api, api):
    # junk fields: this test is about preconditions, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
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


def test_status_isolation_both_ways(fake_api, api):
    # junk fields: this test is about /status isolation, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
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


def test_patch_content_types(fake_api, api):
    # junk fields: this test is about patch types, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
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
    assert names(api.call("GET", "/api/v1/nodes?fieldSelector=metadata.name!%3Dn2")[1]) == \
        ["n1", "n3"]


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
    # Like the API server's max-in-flight/APF filters: plain text, not a Status.
    assert status == 429 and headers["Retry-After"] == "3"
    assert body == "Too many requests, please try again later.\n"
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
    v1 = {"metadata": {"name": "e2"}, "eventTime": "2026-01-01T00:00:00.000000Z",
          "reportingController": "plumber.k8s.pf9.io/agent", "reportingInstance": "a-n1",
          "action": "Reconciling", "reason": "R", "note": "m", "type": "Normal",
          "regarding": {"kind": "HostNetwork", "name": "n1"}}
    assert api.call("POST", "/apis/events.k8s.io/v1/namespaces/kube-system/events", v1)[0] == 201
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


# ------------------------------------------------------------ discovery, Table output, kubectl
TABLE_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")
KUBECTL_TIMEOUT_S = 30.0


def _get(server, path, *, accept="application/json", token="test-token"):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def _resources(document):
    return {r["name"]: r for r in document["resources"]}


def test_discovery_serves_the_crds_names(fake_api):
    status, api = _get(fake_api, "/api")
    assert status == 200 and api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, core = _get(fake_api, "/api/v1")
    core = _resources(core)
    assert core["nodes"]["kind"] == "Node" and core["nodes"]["namespaced"] is False
    assert core["events"]["namespaced"] is True and "nodes/status" in core
    _, groups = _get(fake_api, "/apis")
    assert {g["name"]: g["preferredVersion"]["groupVersion"] for g in groups["groups"]} == {
        "events.k8s.io": "events.k8s.io/v1", "plumber.k8s.pf9.io": "plumber.k8s.pf9.io/v1"}
    _, group = _get(fake_api, "/apis/plumber.k8s.pf9.io")
    assert group["kind"] == "APIGroup" and group["versions"][0]["version"] == "v1"
    status, plumber = _get(fake_api, CR)
    assert status == 200 and plumber["groupVersion"] == "plumber.k8s.pf9.io/v1"
    plumber = _resources(plumber)
    assert set(plumber) == {"hostnetworks", "hostnetworks/status", "hostnetworktemplates",
                            "hostnetworktemplates/status", "addressclaims"}
    hnt, hn = plumber["hostnetworktemplates"], plumber["hostnetworks"]
    assert (hnt["shortNames"], hnt["singularName"], hnt["kind"]) == \
        (["hnt"], "hostnetworktemplate", "HostNetworkTemplate")
    assert (hn["shortNames"], hn["singularName"], hn["kind"]) == \
        (["hn"], "hostnetwork", "HostNetwork")
    assert hnt["namespaced"] is False and hn["categories"] == ["plumber"]
    assert {"get", "list", "watch", "patch"} <= set(hn["verbs"])


def test_discovery_follows_crd_installation_and_auth(fake_api):
    fake_api.set_crd_installed(TEMPLATES, False)
    assert set(_resources(_get(fake_api, CR)[1])) == {"hostnetworks", "hostnetworks/status",
                                                      "addressclaims"}
    fake_api.set_crd_installed("addressclaims", False)
    fake_api.set_crd_installed(HOSTNETWORKS, False)
    assert _get(fake_api, CR)[0] == 404
    assert "plumber.k8s.pf9.io" not in {g["name"] for g in _get(fake_api, "/apis")[1]["groups"]}
    assert _get(fake_api, "/apis/nothing.example.com/v1")[0] == 404
    assert _get(fake_api, "/healthz/nope")[0] == 404
    # Authentication comes first on every path, discovery and unknown ones included.
    assert _get(fake_api, "/api", token=None)[0] == 401
    assert _get(fake_api, "/no/such/path", token="wrong")[0] == 401


def _hostnetwork(name, **summary):
    counts = {"interfaces": 0, "vfs": 0, "bridges": 0, "applied": 0, "failed": 0,
              "conflict": 0, "invalid": 0, "pending": 0, **summary}
    return {"metadata": {"name": name}, "spec": {}, "status": {"summary": counts}}


def test_table_output_from_printer_columns(fake_api):
    fake_api.put_object(HOSTNETWORKS, _hostnetwork("node-a", interfaces=5, vfs=4, applied=2,
                                                   conflict=1, pending=3))
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "t1"}, "spec": {
        "nodeSelector": {"role": "x"}, "interfaceConfig": [{"name": "eno1"}, {"name": "eno2"}]},
        "status": {"observedGeneration": 1, "phase": "Halted", "maxUnavailable": 2,
                   "nodes": {"matching": 7, "applied": 3, "failed": 2, "waiting": 2}}})
    status, table = _get(fake_api, f"{CR}/hostnetworks", accept=TABLE_ACCEPT)
    assert status == 200 and (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [("Name", 0), ("Interfaces", 0), ("VFs", 0), ("Bridges", 1),
                       ("Applied", 0), ("Failed", 0), ("Conflict", 0), ("Invalid", 1),
                       ("Pending", 1), ("Age", 0)]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert table["columnDefinitions"][-1]["description"] == \
        "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp"
    [row] = table["rows"]
    assert row["cells"][:-1] == ["node-a", 5, 4, 0, 2, 0, 1, 0, 3]
    assert re.fullmatch(r"\d+s", row["cells"][-1])
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "node-a"
    assert table["metadata"]["resourceVersion"] == fake_api.resource_version
    # One object, the whole object on request; a string column over a map prints compact JSON.
    _, one = _get(fake_api, f"{CR}/hostnetworktemplates/t1?includeObject=Object",
                  accept=TABLE_ACCEPT)
    assert [(c["name"], c["type"], c["priority"]) for c in one["columnDefinitions"]] == [
        ("Name", "string", 0), ("Matching", "integer", 0), ("Applied", "integer", 0),
        ("Failed", "integer", 0), ("Status", "string", 0), ("Selector", "string", 1),
        ("Age", "date", 0)]
    cells = dict(zip((c["name"] for c in one["columnDefinitions"]), one["rows"][0]["cells"]))
    assert {k: v for k, v in cells.items() if k != "Age"} == {
        "Name": "t1", "Matching": 7, "Applied": 3, "Failed": 2, "Status": "Halted",
        "Selector": '{"role":"x"}'}
    assert re.fullmatch(r"\d+s", cells["Age"])
    assert one["rows"][0]["object"]["spec"]["interfaceConfig"][1]["name"] == "eno2"
    # Without the Table media type nothing changes.
    _, plain = _get(fake_api, f"{CR}/hostnetworks")
    assert plain["kind"] == "HostNetworkList" and plain["items"][0]["status"]["summary"]["vfs"] == 4


def test_node_table(fake_api):
    fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {
        "node-role.kubernetes.io/worker": ""}}, "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.1"}}})
    fake_api.put_object(NODES, {"metadata": {"name": "n2"}})
    _, table = _get(fake_api, "/api/v1/nodes", accept=TABLE_ACCEPT)
    assert [c["name"] for c in table["columnDefinitions"]] == \
        ["Name", "Status", "Roles", "Age", "Version"]
    assert [r["cells"][:3] + r["cells"][4:] for r in table["rows"]] == [
        ["n1", "Ready,SchedulingDisabled", "worker", "v1.32.1"],
        ["n2", "Unknown", "<none>", ""]]


def test_human_duration_and_jsonpath():
    from tests.fakeapi.printing import human_duration, jsonpath_values

    assert [human_duration(s) for s in (-5, -1, 0, 119, 120, 125, 600, 3 * 3600, 3 * 3600 + 60,
                                        30 * 3600, 50 * 3600, 9 * 86400, 800 * 86400)] == \
        ["<invalid>", "0s", "0s", "119s", "2m", "2m5s", "10m", "3h", "3h1m", "30h", "2d2h",
         "9d", "2y70d"]
    doc = {"a": [{"b": 1}, {"c": 2}, {"b": 3}], "m": {"k": "v"}}
    assert jsonpath_values(doc, ".a[*].b") == [1, 3]
    assert jsonpath_values(doc, "{.a[2].b}") == [3]
    assert jsonpath_values(doc, ".m.k") == ["v"] and jsonpath_values(doc, ".x.y") == []
    with pytest.raises(ValueError):
        jsonpath_values(doc, ".a[?(@.b)]")


def test_table_cells_follow_the_tableconvertor():
    """tableconvertor.ConvertToTable + cellForJSONValue: the first value found, typed per column;
    string cells as client-go jsonpath prints them (Go formatting)."""
    import datetime

    from tests.fakeapi.printing import _cell, age, jsonpath_values

    doc = {"a": [{"b": "x"}, {"c": 1}, {"b": "y"}], "m": {"z": 1, "a": "<&>"}, "n": None}
    assert _cell("string", jsonpath_values(doc, ".a[*].b")) == "x"  # never "x y"
    assert _cell("string", jsonpath_values(doc, ".m")) == '{"a":"\\u003c\\u0026\\u003e","z":1}'
    assert _cell("string", jsonpath_values(doc, ".a")) == '[{"b":"x"},{"c":1},{"b":"y"}]'
    assert _cell("string", jsonpath_values(doc, ".n")) == "<no value>"
    assert _cell("string", jsonpath_values(doc, ".missing")) is None
    assert [_cell("string", [v]) for v in (True, 7, 1e6, 2.5, 5.0)] == [
        "true", "7", "1e+06", "2.5", "5"]
    assert [_cell("integer", [v]) for v in (7, 7.9, -7.9, "7", True, None)] == [
        7, 7, -7, None, None, None]
    assert [_cell("number", [v]) for v in (7, 2.5, "2.5", False)] == [7.0, 2.5, None, None]
    assert [_cell("boolean", [v]) for v in (True, "true", 1)] == [True, None, None]
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    assert age("2026-01-01T11:00:00Z", now=now) == "60m"
    assert age("2026-01-01T13:59:30.5+02:00", now=now) == "29s"
    assert age("yesterday", now=now) == "<invalid>" and age(12, now=now) is None
    assert _cell("date", [5]) is None


@pytest.fixture
def tls_kubeconfig(fake_api, tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the fake API server cannot serve HTTPS")
    return fake_api.kubectl_kubeconfig(tmp_path / "kubectl.kubeconfig")


def test_tls_listener_shares_state_and_auth(fake_api, tls_kubeconfig):
    from plumber_agent.kube.client import KubeClient

    fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {"a": "b"}}})
    assert fake_api.start_tls_listener().startswith("https://127.0.0.1:")
    client = KubeClient.from_kubeconfig(tls_kubeconfig)  # verifies the self-signed CA
    try:
        assert client.get_node("n1")["metadata"]["labels"] == {"a": "b"}
    finally:
        client.close()
    assert fake_api.requests(path_contains="/api/v1/nodes/n1")[-1].status == 200


def kubectl(kubeconfig, tmp_path, *args):
    import shutil

    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed; the Table/discovery documents are checked over "
                    "raw HTTP by the tests above")
    proc = subprocess.run([binary, "--kubeconfig", str(kubeconfig), "--cache-dir",
                           str(tmp_path / "kubectl-cache"),
                           f"--request-timeout={int(KUBECTL_TIMEOUT_S)}s", *args],
                          capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S + 10,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _table_lines(out):
    """kubectl's text output as (headers, {first cell: {HEADER: cell}}) per table (tables are
    split on blank lines). Cells are cut at the headers' offsets, so empty cells stay empty."""
    tables = []
    for block in filter(None, out.strip("\n").split("\n\n")):
        lines = block.splitlines()
        starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
        headers = lines[0].split()
        bounds = list(zip(starts, starts[1:] + [None]))
        rows = {}
        for line in lines[1:]:
            cells = [line[a:b].strip() for a, b in bounds]
            rows[cells[0]] = dict(zip(headers, cells))
        tables.append((headers, rows))
    return tables


def _seed_for_kubectl(fake_api):
    fake_api.put_object(HOSTNETWORKS, _hostnetwork("node-a", interfaces=5, vfs=4, bridges=2,
                                                   applied=2, failed=1, invalid=7, pending=3))
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "t1"}, "spec": {
        "nodeSelector": {"role": "x"}, "interfaceConfig": [{"name": "eno1"}],
        "ovsConfig": [{"bridgeName": "br-x"}], "sriovConfig": [{"pciAddr": "0000:03:00.0"}]},
        "status": {"observedGeneration": 1, "phase": "Progressing", "maxUnavailable": 1,
                   "nodes": {"matching": 4, "applied": 3, "failed": 0}}})


def test_kubectl_get_hnt_hn(fake_api, tls_kubeconfig, tmp_path):
    _seed_for_kubectl(fake_api)
    out = kubectl(tls_kubeconfig, tmp_path, "get", "hnt,hn")
    (hnt_headers, hnt_rows), (hn_headers, hn_rows) = _table_lines(out)
    assert hnt_headers == ["NAME", "MATCHING", "APPLIED", "FAILED", "STATUS", "AGE"], out
    assert hn_headers == ["NAME", "INTERFACES", "VFS", "APPLIED", "FAILED", "CONFLICT", "AGE"], out
    template = hnt_rows["hostnetworktemplate.plumber.k8s.pf9.io/t1"]
    assert (template["MATCHING"], template["APPLIED"], template["FAILED"], template["STATUS"]) \
        == ("4", "3", "0", "Progressing"), out
    node = hn_rows["hostnetwork.plumber.k8s.pf9.io/node-a"]
    assert (node["INTERFACES"], node["VFS"], node["APPLIED"], node["FAILED"], node["CONFLICT"]) \
        == ("5", "4", "2", "1", "0"), out
    assert re.fullmatch(r"\d+s|\d+m(\d+s)?", node["AGE"]), out


def test_kubectl_get_wide_shows_priority_columns(fake_api, tls_kubeconfig, tmp_path):
    _seed_for_kubectl(fake_api)
    out = kubectl(tls_kubeconfig, tmp_path, "get", "hnt,hn", "-o", "wide")
    (hnt_headers, hnt_rows), (hn_headers, hn_rows) = _table_lines(out)
    assert hnt_headers == ["NAME", "MATCHING", "APPLIED", "FAILED", "STATUS", "SELECTOR", "AGE"], out
    assert hnt_rows["hostnetworktemplate.plumber.k8s.pf9.io/t1"]["SELECTOR"] == '{"role":"x"}'
    assert hn_headers == ["NAME", "INTERFACES", "VFS", "BRIDGES", "APPLIED", "FAILED",
                          "CONFLICT", "INVALID", "PENDING", "AGE"], out
    node = hn_rows["hostnetwork.plumber.k8s.pf9.io/node-a"]
    assert (node["BRIDGES"], node["INVALID"], node["PENDING"]) == ("2", "7", "3"), out
    # The category and a single object by short name resolve through discovery too.
    assert "hostnetwork.plumber.k8s.pf9.io/node-a" in kubectl(tls_kubeconfig, tmp_path, "get",
                                                              "plumber", "-o", "name")
    assert kubectl(tls_kubeconfig, tmp_path, "get", "hn", "node-a", "-o",
                   "jsonpath={.status.summary.vfs}") == "4"


def test_kubectl_get_nodes(fake_api, tls_kubeconfig, tmp_path):
    fake_api.put_object(NODES, {"metadata": {"name": "node-a"}, "status": {
        "conditions": [{"type": "Ready", "status": "False"}]}})
    [(headers, rows)] = _table_lines(kubectl(tls_kubeconfig, tmp_path, "get", "nodes"))
    assert headers == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert (rows["node-a"]["STATUS"], rows["node-a"]["ROLES"]) == ("NotReady", "<none>")


def test_kubectl_without_tls_gets_401_as_on_a_real_server(fake_api, kubeconfig, tmp_path):
    import shutil

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "--cache-dir",
                           str(tmp_path / "cache"), "get", "hn"], capture_output=True, text=True,
                          timeout=KUBECTL_TIMEOUT_S, check=False)
    # client-go sends the kubeconfig's token only over TLS: hence kubectl_kubeconfig().
    assert proc.returncode != 0 and "provide credentials" in proc.stderr
    assert {r.status for r in fake_api.requests(path_contains="/api")} == {401}
