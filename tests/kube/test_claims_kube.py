"""KubeClaims over the real KubeClient and the fake API server (docs/address-pools.md): the
create is the lock, a claim is owned by its Node (garbage-collected with it), a create whose
answer was lost is read back as one's own, and release deletes with a resourceVersion
precondition."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from kubernetes.client import ApiException

from plumber_agent import GROUP
from plumber_agent.pools.claims import (NODE_LABEL, POOL_LABEL, Claim, ClaimTaken, KubeClaims,
                                        claim_object)
from plumber_agent.models.pool import pool_id
from plumber_agent.pools.pool import claim_name
from tests.fakeapi.server import ADDRESSCLAIMS, NODES

POOL_ID = pool_id("uid-storage", "eno2", "ipv4", "192.168.50.0/24")


def put_node(fake_api, name: str) -> str:
    """A Node in the fake, as the kubelet registers it; its uid."""
    return fake_api.put_object(NODES, {"metadata": {"name": name}})["metadata"]["uid"]


def claim_for(node: str, node_uid: str, address: str = "192.168.50.10") -> Claim:
    return Claim(name=claim_name(address), address=address, prefix_length=24, node=node,
                 node_uid=node_uid, template="storage", interface="eno2",
                 pool="192.168.50.0/24", pool_id=POOL_ID)


@pytest.fixture
def claims_of(fake_api, kube):
    """KubeClaims whose store lists from the server (in place of the reflector)."""
    def make(store=None) -> KubeClaims:
        listing = store or (lambda: {o["metadata"]["name"]: o
                                     for o in fake_api.list(ADDRESSCLAIMS)})
        return KubeClaims(kube, listing)
    return make


def test_create_makes_the_object_with_labels_and_the_node_as_owner(fake_api, claims_of):
    uid = put_node(fake_api, "node-a")
    created = claims_of().create(claim_for("node-a", uid))
    stored = fake_api.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")
    assert stored is not None
    assert stored["kind"] == "AddressClaim" and stored["apiVersion"] == f"{GROUP}/v1"
    assert stored["metadata"]["labels"] == {POOL_LABEL: POOL_ID, NODE_LABEL: "node-a"}
    assert stored["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": uid}]
    assert stored["spec"] == {"address": "192.168.50.10", "prefixLength": 24, "node": "node-a",
                              "nodeUID": uid, "template": "storage", "interface": "eno2",
                              "pool": "192.168.50.0/24"}
    assert created == replace(claim_for("node-a", uid),
                              resource_version=stored["metadata"]["resourceVersion"])


def test_a_long_node_name_is_hashed_in_the_label(fake_api, claims_of):
    name = "n" * 70
    uid = put_node(fake_api, name)
    claims_of().create(claim_for(name, uid))
    label = fake_api.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")["metadata"]["labels"][NODE_LABEL]
    assert len(label) <= 63 and label != name


def test_second_create_of_the_address_by_another_node_is_claim_taken(fake_api, claims_of):
    uid_a, uid_b = put_node(fake_api, "node-a"), put_node(fake_api, "node-b")
    claims_of().create(claim_for("node-a", uid_a))
    with pytest.raises(ClaimTaken, match="192.168.50.10 is claimed by node-a"):
        claims_of().create(claim_for("node-b", uid_b))
    stored = fake_api.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")
    assert stored["spec"]["node"] == "node-a"  # the first holder keeps it
    assert stored["metadata"]["ownerReferences"][0]["uid"] == uid_a


def test_same_node_name_with_another_uid_is_claim_taken(fake_api, claims_of):
    """A re-created Node (same name, new uid) does not take the old Node's claim for its own."""
    old_uid = put_node(fake_api, "node-a")
    claims_of().create(claim_for("node-a", old_uid))
    with pytest.raises(ClaimTaken):
        claims_of().create(claim_for("node-a", "uid-of-the-new-node-a"))


def test_create_whose_answer_was_lost_returns_the_existing_own_claim(fake_api, kube, claims_of):
    """The first create reached the server but its answer did not come back (the API server
    restarted): the retry's 409 AlreadyExists is read back and it is this node's."""
    uid = put_node(fake_api, "node-a")
    first = kube.create_address_claim(claim_object(claim_for("node-a", uid)))
    claims = claims_of(store=dict)  # the watch has not shown it yet
    assert claims.list() == []
    got = claims.create(claim_for("node-a", uid))
    assert got.resource_version == first["metadata"]["resourceVersion"]
    assert (got.name, got.address, got.node, got.node_uid) == (
        "ipv4-192.168.50.10", "192.168.50.10", "node-a", uid)
    assert [c.name for c in claims.list()] == ["ipv4-192.168.50.10"]  # overlaid until seen
    assert len(fake_api.list(ADDRESSCLAIMS)) == 1
    # the server did see both creates: the second was refused, nothing was overwritten
    posts = fake_api.writes("addressclaims")
    assert [(r.method, r.status) for r in posts] == [("POST", 201), ("POST", 409)]


def test_list_overlays_own_writes_until_the_watch_shows_them(fake_api, claims_of):
    uid = put_node(fake_api, "node-a")
    seen: dict = {}
    claims = claims_of(store=lambda: seen)
    made = claims.create(claim_for("node-a", uid))
    assert claims.list() == [made]  # not in the store yet: the overlay shows it
    seen.update({o["metadata"]["name"]: o for o in fake_api.list(ADDRESSCLAIMS)})
    claims.forget_seen()
    assert claims.list() == [made]  # now from the store
    claims.delete(made)
    assert fake_api.get(ADDRESSCLAIMS, made.name) is None
    assert claims.list() == []  # the store still holds it; the deletion is overlaid


def test_delete_with_a_stale_resource_version_is_a_409(fake_api, claims_of):
    """rest/delete.go BeforeDelete: the resourceVersion precondition, errors.NewConflict with
    the kind as resource."""
    uid = put_node(fake_api, "node-a")
    claims = claims_of()
    made = claims.create(claim_for("node-a", uid))
    # the object changed after this node read it: its resourceVersion is stale
    changed = fake_api.get(ADDRESSCLAIMS, made.name)
    changed["metadata"]["labels"]["touched"] = "yes"
    current = fake_api.put_object(ADDRESSCLAIMS, changed)["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as info:
        claims.delete(made)
    assert info.value.status == 409
    body = json.loads(info.value.body)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        f'Operation cannot be fulfilled on AddressClaim.{GROUP} "ipv4-192.168.50.10": the '
        f"ResourceVersion in the precondition ({made.resource_version}) does not match the "
        f"ResourceVersion in record ({current}). The object might have been modified")
    assert fake_api.get(ADDRESSCLAIMS, made.name) is not None
    assert [c.name for c in claims.list()] == [made.name]  # still listed: not deleted
    fresh = [c for c in claims.list() if c.name == made.name][0]
    claims.delete(fresh)
    assert fake_api.get(ADDRESSCLAIMS, made.name) is None


def test_delete_of_a_claim_already_gone_is_quiet(fake_api, claims_of):
    uid = put_node(fake_api, "node-a")
    claims = claims_of()
    made = claims.create(claim_for("node-a", uid))
    fake_api.delete_object(ADDRESSCLAIMS, made.name)
    claims.delete(made)  # 404: nothing to do
    assert claims.list() == []


def test_deleting_the_node_collects_its_claims(fake_api, claims_of):
    uid_a, uid_b = put_node(fake_api, "node-a"), put_node(fake_api, "node-b")
    claims = claims_of()
    claims.create(claim_for("node-a", uid_a, "192.168.50.10"))
    claims.create(claim_for("node-a", uid_a, "192.168.50.11"))
    claims.create(claim_for("node-b", uid_b, "192.168.50.12"))
    assert fake_api.delete_object(NODES, "node-a")
    assert [o["metadata"]["name"] for o in fake_api.list(ADDRESSCLAIMS)] == [
        "ipv4-192.168.50.12"]
    # a new node-a (another uid) can now claim the freed address
    uid_new = put_node(fake_api, "node-a")
    again = claims_of().create(claim_for("node-a", uid_new, "192.168.50.10"))
    assert again.node_uid == uid_new != uid_a
