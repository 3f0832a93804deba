"""KubeClient with the real `kubernetes` client against the fake API server: plain dicts
(docs/pitfalls.md 10), rotating tokens (11), /status merge patches and 409s (13), timeouts (3)."""
from __future__ import annotations

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from plumber_agent.kube.client import KubeClient, TokenFile
from tests.fakeapi import EVENTS, HOSTNETWORKS, NODES, TEMPLATES

NODE_WITH_UNKNOWN_FIELDS = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "n1", "labels": {"role": "a"}, "futureMetaField": {"x": 1}},
    "spec": {"someFutureSpecField": True},
    "status": {"conditions": [{"type": "Ready", "status": "True", "brandNewField": 7}],
               "nodeInfo": {"futureInfo": "x"}},
}


def test_node_with_unknown_fields_is_read_as_a_plain_dict(fake_api, kube):
    fake_api.put_object(NODES, NODE_WITH_UNKNOWN_FIELDS)
    node = kube.get_node("n1")
    assert isinstance(node, dict)
    assert node["spec"] == {"someFutureSpecField": True}
    assert node["status"]["conditions"][0]["brandNewField"] == 7
    items, rv = kube.list_node("n1")
    assert [i["metadata"]["name"] for i in items] == ["n1"] and rv == fake_api.resource_version
    assert items[0]["metadata"]["futureMetaField"] == {"x": 1}


def test_list_node_uses_a_field_selector(fake_api, kube):
    for name in ("n1", "n2"):
        fake_api.put_object(NODES, {"metadata": {"name": name}})
    items, _ = kube.list_node("n2")
    assert [i["metadata"]["name"] for i in items] == ["n2"]
    assert fake_api.requests(path_contains="/nodes")[-1].query["fieldSelector"] == \
        "metadata.name=n2"


def test_count_nodes_sends_one_list_with_limit_one(fake_api, kube):
    """A percentage limit's bound on an agent (docs/rollout.md): the count of the cluster's
    Nodes from one list with limit=1. This fake does not page (it answers every item, without
    remainingItemCount): the count is right then too; a real server sends one item and the
    remaining count."""
    for name in ("n1", "n2", "n3"):
        fake_api.put_object(NODES, {"metadata": {"name": name}})
    assert kube.count_nodes() == 3
    request = fake_api.requests(path_contains="/nodes")[-1]
    assert request.query == {"limit": "1"} and request.method == "GET"


def test_templates_list_with_unknown_fields(fake_api, kube):
    # junk fields: this test is about the client keeping unknown fields, not the schema
    fake_api.skip_schema_validation(TEMPLATES, "t")
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "t"}, "spec": {"whatever": [1]},
                                    "status": {"userSet": True}})
    items, rv = kube.list_templates()
    assert items[0]["spec"] == {"whatever": [1]}
    assert rv == fake_api.resource_version


def test_hostnetwork_lifecycle_counts_requests_and_writes(fake_api, kube):
    assert kube.get_hostnetwork("n1") is None
    created = kube.create_hostnetwork({"metadata": {"name": "n1"}, "spec": {},
                                       "status": {"ignored": True}})
    assert created["kind"] == "HostNetwork" and "status" not in created
    patched = kube.patch_hostnetwork_status("n1", {"status": {"interfaceStatus": [
        {"pfName": "eth0"}, {"pfName": "eth1"}]}})
    assert len(patched["status"]["interfaceStatus"]) == 2
    # docs/pitfalls.md 13: a merge patch replaces lists wholesale.
    patched = kube.patch_hostnetwork_status("n1", {"status": {"interfaceStatus": [
        {"pfName": "eth1"}]}})
    assert patched["status"]["interfaceStatus"] == [{"pfName": "eth1"}]
    assert kube.get_hostnetwork("n1")["status"] == patched["status"]
    status_patches = fake_api.requests(method="PATCH", path_contains="/hostnetworks/n1/status")
    assert len(status_patches) == 2
    assert kube.requests == 5 and kube.writes == 3
    assert len(fake_api.writes()) == 3
    assert kube.delete_hostnetwork("n1") is True
    assert kube.delete_hostnetwork("n1") is False


def test_create_conflict_and_stale_put_give_409(fake_api, kube):
    # junk fields: this test is about conflicts, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    kube.create_hostnetwork({"metadata": {"name": "n1"}, "spec": {}})
    with pytest.raises(ApiException) as exc:
        kube.create_hostnetwork({"metadata": {"name": "n1"}, "spec": {}})
    assert exc.value.status == 409
    current = kube.get_hostnetwork("n1")
    stale = dict(current, spec={"x": 1})
    kube.replace_hostnetwork("n1", dict(current, spec={"y": 2}))
    with pytest.raises(ApiException) as exc:
        kube.replace_hostnetwork("n1", stale)
    assert exc.value.status == 409
    # Retry after a re-read succeeds (docs/pitfalls.md 13).
    fresh = kube.get_hostnetwork("n1")
    assert kube.replace_hostnetwork("n1", dict(fresh, spec={"x": 1}))["spec"] == {"x": 1}


def test_status_patch_cannot_change_labels_or_spec(fake_api, kube):
    # junk fields: this test is about /status isolation, not the schema
    fake_api.skip_schema_validation(HOSTNETWORKS, "n1")
    kube.create_hostnetwork({"metadata": {"name": "n1", "labels": {"a": "1"}}, "spec": {}})
    result = kube.patch_hostnetwork_status("n1", {"metadata": {"labels": {"a": "2"}},
                                                  "spec": {"x": 1}, "status": {"ok": True}})
    assert result["metadata"]["labels"] == {"a": "1"}
    assert result["spec"] == {}
    assert result["status"] == {"ok": True}
    assert result["metadata"]["generation"] == 1


def test_create_event(fake_api, kube):
    """An events.k8s.io/v1 Event (the recorder builds the body: tests/kube/test_events_v1.py)."""
    hn = kube.create_hostnetwork({"metadata": {"name": "n1"}, "spec": {}})
    event = kube.create_event("default", {
        "metadata": {"name": "n1.1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "x.io/agent",
        "reportingInstance": "x.io/agent-n1", "action": "Reconcile", "reason": "Applied",
        "note": "all good", "type": "Normal",
        "regarding": {"kind": "HostNetwork", "name": "n1", "uid": hn["metadata"]["uid"]}})
    stored = fake_api.list(EVENTS)
    assert len(stored) == 1 and stored[0]["metadata"]["name"] == event["metadata"]["name"]
    assert event["apiVersion"] == "events.k8s.io/v1" and event["note"] == "all good"
    assert stored[0]["involvedObject"]["uid"] == hn["metadata"]["uid"]
    assert fake_api.requests(method="POST")[-1].path == \
        "/apis/events.k8s.io/v1/namespaces/default/events"


def test_a_silent_watch_hits_the_client_read_timeout(fake_api, kube):
    """docs/pitfalls.md 3: the server-side timeout is 60 s, but the client gives up reading a silent
    stream after its own read timeout."""
    fake_api.stall_streams(True)
    stream = kube.watch_templates(fake_api.resource_version, 60, 0.2)
    with pytest.raises((urllib3.exceptions.ReadTimeoutError,
                        urllib3.exceptions.ProtocolError)):
        list(stream)
    assert stream.closed


def test_watch_stream_yields_none_for_garbage_and_closes(fake_api, kube):
    fake_api.put_object(TEMPLATES, {"metadata": {"name": "t"}, "spec": {}})
    stream = kube.watch_templates(None, 5, 10.0)
    events = iter(stream)
    assert next(events)["type"] == "ADDED"
    fake_api.inject_garbage(["", "junk"])
    assert next(events) is None and next(events) is None
    stream.close()
    assert stream.closed


def test_token_rotation_rereads_the_token_file(fake_api, tmp_path):
    """docs/pitfalls.md 11: the server switches to a new token; the client follows the file."""
    path = tmp_path / "token"
    path.write_text(fake_api.token + "\n")
    client = KubeClient.from_token_file(fake_api.url, str(path))
    assert client.list_templates()[0] == []
    fake_api.set_token("rotated-1")
    with pytest.raises(ApiException) as exc:
        client.list_templates()
    assert exc.value.status == 401
    path.write_text("rotated-1\n")
    assert client.list_templates()[0] == []
    assert client.token_file.reads == 2
    client.close()


def test_in_cluster_config_reads_service_account_files(fake_api, tmp_path):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca.write_text("not really a CA")
    client = KubeClient.in_cluster(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                            "KUBERNETES_SERVICE_PORT": "443"},
                                   token_path=str(token), ca_path=str(ca))
    cfg = client.configuration
    assert cfg.host == "https://10.0.0.1:443"
    assert cfg.ssl_ca_cert == str(ca)
    assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer t"
    token.write_text("t2")
    assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer t2"


def test_token_file_keeps_last_token_if_file_vanishes(tmp_path):
    path = tmp_path / "token"
    path.write_text("a")
    tf = TokenFile(str(path))
    assert tf.token() == "a"
    path.unlink()
    assert tf.token() == "a"


def test_from_environment_prefers_kubeconfig(fake_api, kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = KubeClient.from_environment()
    assert client.list_templates() == ([], fake_api.resource_version)


def test_wrong_token_is_401(fake_api, tmp_path):
    path = tmp_path / "token"
    path.write_text("wrong")
    client = KubeClient.from_token_file(fake_api.url, str(path))
    with pytest.raises(ApiException) as exc:
        client.get_node("n1")
    assert exc.value.status == 401
    assert fake_api.requests()[-1].status == 401
