"""The fake API server serves AddressClaims (manifests/crds/addressclaims.yaml) like the other
custom resources: the create is the lock (a second create of one address is upstream's 409
AlreadyExists), the CRD schema holds every write, discovery and `kubectl get` tables come from
the CRD, there is no /status, and a deleted Node's claims go with it (owner reference)."""
from __future__ import annotations

import pytest

from tests.fakeapi.printing import to_table
from tests.fakeapi.server import ADDRESSCLAIMS, NODES
from tests.kube.test_fakeapi import Http
from tests.kube.test_fakeapi_upstream import CR, GROUP

NODE_UID = "6c1f2a9e-0d3b-4c55-9b1e-1f6f0c2d3e4f"


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def claim(name="ipv4-192.168.50.10", node="node-a", node_uid=NODE_UID, **spec) -> dict:
    body = {"address": "192.168.50.10", "prefixLength": 24, "node": node, "nodeUID": node_uid,
            "template": "storage", "interface": "eno2", "pool": "192.168.50.0/24"}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/v1", "kind": "AddressClaim", "metadata": {"name": name},
            "spec": body}


def test_second_create_of_an_address_is_already_exists(api, fake_api):
    """errors.NewAlreadyExists from the etcd3 store's Create: the lock two nodes race for."""
    status, created, _ = api.call("POST", f"{CR}/addressclaims", claim())
    assert status == 201
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    status, body, _ = api.call("POST", f"{CR}/addressclaims", claim(node="node-b",
                                                                     node_uid="other-uid"))
    assert status == 409
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'addressclaims.{GROUP} "ipv4-192.168.50.10" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "ipv4-192.168.50.10", "group": GROUP, "kind": "addressclaims"},
        "code": 409}
    # the first holder keeps it
    assert fake_api.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")["spec"]["node"] == "node-a"


def test_claim_writes_are_held_to_the_crd_schema(api, fake_api):
    bad = claim(prefixLength=129)
    del bad["spec"]["nodeUID"]
    status, body, _ = api.call("POST", f"{CR}/addressclaims", bad)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [
        ("spec.prefixLength", "FieldValueInvalid"), ("spec.nodeUID", "FieldValueRequired")]
    assert fake_api.list(ADDRESSCLAIMS) == []


def test_claims_have_no_status_subresource(api):
    assert api.call("POST", f"{CR}/addressclaims", claim())[0] == 201
    status, _, _ = api.call("GET", f"{CR}/addressclaims/ipv4-192.168.50.10/status")
    assert status == 404
    status, body, _ = api.call("GET", f"/apis/{GROUP}/v1")
    assert status == 200
    entries = {r["name"]: r for r in body["resources"]}
    assert "addressclaims/status" not in entries
    assert entries["addressclaims"]["shortNames"] == ["addrclaim"]
    assert entries["addressclaims"]["namespaced"] is False
    assert entries["addressclaims"]["kind"] == "AddressClaim"


def test_claim_delete_with_a_stale_resource_version_is_refused(api):
    """Release deletes with a resourceVersion precondition (docs/address-pools.md)."""
    _, created, _ = api.call("POST", f"{CR}/addressclaims", claim())
    stale = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {
        "resourceVersion": str(int(created["metadata"]["resourceVersion"]) - 1)}}
    assert api.call("DELETE", f"{CR}/addressclaims/ipv4-192.168.50.10", stale)[0] == 409
    fresh = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {
        "resourceVersion": created["metadata"]["resourceVersion"]}}
    assert api.call("DELETE", f"{CR}/addressclaims/ipv4-192.168.50.10", fresh)[0] == 200


def test_claims_of_a_deleted_node_are_collected(api, fake_api):
    status, node, _ = api.call("POST", "/api/v1/nodes", {"metadata": {"name": "node-a"}})
    assert status == 201
    owned = claim(node_uid=node["metadata"]["uid"])
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                             "name": "node-a", "uid": node["metadata"]["uid"]}]
    assert api.call("POST", f"{CR}/addressclaims", owned)[0] == 201
    assert api.call("POST", f"{CR}/addressclaims", claim(name="ipv4-192.168.50.11",
                                                         address="192.168.50.11"))[0] == 201
    assert api.call("DELETE", "/api/v1/nodes/node-a")[0] == 200
    assert fake_api.get(NODES, "node-a") is None
    assert [c["metadata"]["name"] for c in fake_api.list(ADDRESSCLAIMS)] == ["ipv4-192.168.50.11"]


def test_claim_table_has_the_crd_columns(api, fake_api):
    api.call("POST", f"{CR}/addressclaims", claim())
    table = to_table(ADDRESSCLAIMS, {"items": fake_api.list(ADDRESSCLAIMS)})
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Address", "Node", "Template", "Interface", "Pool", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:6] == ["ipv4-192.168.50.10", "192.168.50.10", "node-a", "storage",
                                "eno2", "192.168.50.0/24"]
