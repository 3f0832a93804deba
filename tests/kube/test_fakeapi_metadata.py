"""Metadata-only lists and watches (`Accept: ...;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`)
as the real API server serves them (tests/fakeapi/metadata.py names the upstream functions).

Why: the status writer lists and watches every Node and HostNetwork this way (issue 19); a fake
that answered with whole objects, or in another shape, would hide a leader that cannot parse
what a real server sends, or one that still receives 35 KB per HostNetwork.
"""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from plumber_agent.kube.client import ACCEPT_METADATA_LIST, ACCEPT_METADATA_WATCH
from tests.fakeapi import HOSTNETWORKS, NODES, TEMPLATES

CR = "/apis/plumber.k8s.pf9.io/v1"
PATHS = {"nodes": "/api/v1/nodes", "hostnetworks": f"{CR}/hostnetworks",
         "hostnetworktemplates": f"{CR}/hostnetworktemplates",
         "addressclaims": f"{CR}/addressclaims",
         "leases": "/apis/coordination.k8s.io/v1/namespaces/ns1/leases",
         "events": "/api/v1/namespaces/ns1/events"}


def request(server, path: str, accept: str, *, method: str = "GET", body=None,
            content_type: str = "application/json"):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Authorization": "Bearer test-token", "Accept": accept,
               "Content-Type": content_type}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type", ""), data


def get_json(server, path: str, accept: str):
    status, _, data = request(server, path, accept)
    return status, json.loads(data)


def watch_events(server, path: str, accept: str) -> list[dict]:
    """The events of a watch that ends by itself (timeoutSeconds=1)."""
    sep = "&" if "?" in path else "?"
    status, content_type, data = request(server, f"{path}{sep}watch=true&timeoutSeconds=1"
                                         "&allowWatchBookmarks=true", accept)
    assert status == 200 and content_type.startswith("application/json")
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def big_hostnetwork(name: str) -> dict:
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
            "metadata": {"name": name, "labels": {"role": "edge"},
                         "annotations": {"plumber.k8s.pf9.io/template-results": "[]"}},
            "spec": {},
            "status": {"interfaceStatus": [{"pfName": f"veth{i}", "mtu": 1500}
                                           for i in range(200)]}}


def seed(server) -> None:
    for plural, name in ((HOSTNETWORKS, "n1"), (TEMPLATES, "t1"), ("addressclaims", "c1")):
        server.skip_schema_validation(plural, name)  # only the shape of the answer matters
    server.put_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {"images": [{"names": [f"registry/image-{i}:v1"], "sizeBytes": 1000 + i}
                              for i in range(50)]}})
    server.put_object(HOSTNETWORKS, big_hostnetwork("n1"))
    server.put_object(TEMPLATES, {"apiVersion": "plumber.k8s.pf9.io/v1",
                                  "kind": "HostNetworkTemplate", "metadata": {"name": "t1"},
                                  "spec": {}})
    server.put_object("addressclaims", {"apiVersion": "plumber.k8s.pf9.io/v1",
                                        "kind": "AddressClaim", "metadata": {"name": "c1"},
                                        "spec": {}})
    server.put_object("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "metadata": {"name": "l1", "namespace": "ns1"}, "spec": {}})
    server.put_object("events", {"apiVersion": "v1", "kind": "Event",
                                 "metadata": {"name": "e1", "namespace": "ns1"},
                                 "reason": "Test", "message": "m"})


@pytest.mark.parametrize("plural", sorted(PATHS))
def test_every_resource_lists_as_partial_object_metadata(fake_api, plural):
    seed(fake_api)
    status, full = get_json(fake_api, PATHS[plural], "application/json")
    assert status == 200 and len(full["items"]) == 1
    status, body = get_json(fake_api, PATHS[plural], ACCEPT_METADATA_LIST)
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["apiVersion"] == "meta.k8s.io/v1"
    assert body["metadata"] == {"resourceVersion": full["metadata"]["resourceVersion"]}
    [item] = body["items"]
    # meta.AsPartialObjectMetadata: the whole ObjectMeta, nothing else.
    assert item == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": full["items"][0]["metadata"]}


@pytest.mark.parametrize("plural", sorted(PATHS))
def test_every_resource_watches_as_partial_object_metadata(fake_api, plural):
    seed(fake_api)
    events = watch_events(fake_api, PATHS[plural], ACCEPT_METADATA_WATCH)
    added = [e for e in events if e["type"] == "ADDED"]
    assert len(added) == 1
    assert added[0]["object"]["kind"] == "PartialObjectMetadata"
    assert added[0]["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert set(added[0]["object"]) == {"kind", "apiVersion", "metadata"}
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert bookmarks[0]["object"]["kind"] == "PartialObjectMetadata"
    assert set(bookmarks[0]["object"]["metadata"]) == {"resourceVersion"}


def test_a_status_change_reaches_a_metadata_watch_as_metadata(fake_api, kube):
    """What the status writer receives when another node's status changes: a MODIFIED event of
    the metadata (new resourceVersion), without the status."""
    seed(fake_api)
    items, rv = kube.list_hostnetworks(metadata_only=True)
    assert [i["metadata"]["name"] for i in items] == ["n1"] and "status" not in items[0]
    kube.patch_hostnetwork_status("n1", {"status": {"interfaceStatus": [{"pfName": "eth9"}]}})
    stream = kube.watch_hostnetworks(rv, 1, 10.0, metadata_only=True)
    events = [e for e in stream if e and e.get("type") == "MODIFIED"]
    assert len(events) == 1
    obj = events[0]["object"]
    assert obj["kind"] == "PartialObjectMetadata" and "status" not in obj
    assert obj["metadata"]["resourceVersion"] == fake_api.get(HOSTNETWORKS, "n1")[
        "metadata"]["resourceVersion"]
    assert len(json.dumps(events[0])) < 1024


def test_metadata_only_node_list_leaves_out_images(fake_api, kube):
    seed(fake_api)
    [full], _ = kube.list_nodes()
    [meta], _ = kube.list_nodes(metadata_only=True)
    assert len(full["status"]["images"]) == 50
    assert meta == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": full["metadata"]}


def test_a_metadata_list_is_transformed_item_by_item(fake_api, kube):
    """KubeClient's `transform` of a metadata list: each item as the status writer keeps it,
    the list's own fields and nested objects (labels, annotations) untouched."""
    seed(fake_api)
    seen = []

    def keep_labels(item):
        seen.append(item["kind"])
        return {"metadata": {"name": item["metadata"]["name"],
                             "labels": item["metadata"].get("labels")}}
    [node], rv = kube.list_nodes(metadata_only=True, transform=keep_labels)
    assert node == {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}
    [hostnetwork], _ = kube.list_hostnetworks(metadata_only=True, transform=keep_labels)
    assert hostnetwork["metadata"]["labels"] == {"role": "edge"}
    assert seen == ["PartialObjectMetadata"] * 2 and rv == fake_api.resource_version


def test_the_wrong_partial_kind_is_not_acceptable(fake_api):
    """response.go asPartialObjectMetadata / asPartialObjectMetadataList: 406 NotAcceptable."""
    seed(fake_api)
    status, body = get_json(fake_api, PATHS["hostnetworks"], ACCEPT_METADATA_WATCH)
    assert status == 406
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "you requested PartialObjectMetadata, but the requested object "
                               "is a list (*unstructured.UnstructuredList)",
                    "reason": "NotAcceptable", "code": 406}
    status, body = get_json(fake_api, "/api/v1/nodes/n1", ACCEPT_METADATA_LIST)
    assert status == 406 and body["reason"] == "NotAcceptable"
    assert body["message"] == ("you requested PartialObjectMetadataList, but the requested "
                               "object is not a list (*core.Node)")
    status, body = get_json(fake_api, "/api/v1/nodes/n1", ACCEPT_METADATA_WATCH)
    assert status == 200 and body["kind"] == "PartialObjectMetadata"
    assert body["metadata"]["name"] == "n1"


def test_an_unsupported_conversion_falls_back_to_the_whole_object(fake_api):
    """negotiate.go NegotiateMediaTypeOptions: a clause whose `as` is not allowed is skipped and,
    nothing else acceptable, the server's first media type is used (not a 406)."""
    seed(fake_api)
    for accept in ("application/json;as=Foo;g=meta.k8s.io;v=v1",
                   "application/json;as=PartialObjectMetadataList;g=example.com;v=v1",
                   "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v2"):
        status, body = get_json(fake_api, PATHS["hostnetworks"], accept)
        assert status == 200 and body["kind"] == "HostNetworkList", accept
        assert "status" in body["items"][0]
    # The first acceptable clause wins: a later plain clause does not undo the conversion...
    status, body = get_json(fake_api, PATHS["hostnetworks"],
                            f"{ACCEPT_METADATA_LIST},application/json")
    assert body["kind"] == "PartialObjectMetadataList"
    # ...and an earlier plain one means the whole object.
    status, body = get_json(fake_api, PATHS["hostnetworks"],
                            f"application/json,{ACCEPT_METADATA_LIST}")
    assert body["kind"] == "HostNetworkList"
    status, body = get_json(fake_api, PATHS["hostnetworks"],
                            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;"
                            "v=v1beta1")
    assert body["apiVersion"] == "meta.k8s.io/v1beta1"
    assert body["items"][0]["apiVersion"] == "meta.k8s.io/v1beta1"


def test_watch_errors_go_out_unconverted(fake_api):
    """doTransformObject passes a Status through: a 410 on a metadata watch is the usual one."""
    seed(fake_api)
    fake_api.compact()
    events = watch_events(fake_api, f"{PATHS['hostnetworks']}?resourceVersion=1",
                          ACCEPT_METADATA_WATCH)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["kind"] == "Status" and events[0]["object"]["code"] == 410


def test_a_watch_asking_for_the_list_kind_gets_whole_objects(fake_api):
    """watchEmbeddedEncoder.doEncode: the conversion fails for each event, which upstream logs
    and sends unconverted."""
    seed(fake_api)
    events = watch_events(fake_api, PATHS["hostnetworks"], ACCEPT_METADATA_LIST)
    added = [e for e in events if e["type"] == "ADDED"]
    assert added[0]["object"]["kind"] == "HostNetwork" and "status" in added[0]["object"]
