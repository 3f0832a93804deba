"""What an agent reads of the AddressClaims (docs/address-pools.md, "What an agent reads"), over
the real KubeClient, reflectors and the fake API server: each pool's claims by the pool label
and its own by the node label, never every claim; and a pool allocation sends no HostNetwork
request at all, however many other nodes publish one (issue 19, part 3).

The cluster glue (ClusterWiring) runs here for real: its template watch decides which pools'
claims are watched."""
from __future__ import annotations

import threading

import pytest

from plumber_agent import GROUP, VERSION
from plumber_agent.clock import RealClock
from plumber_agent.cluster import ClusterWiring
from plumber_agent.models.parse import template_from_object
from plumber_agent.ops import Metrics
from plumber_agent.pools.claims import (NODE_LABEL, POOL_LABEL, Claim, claim_object,
                                        node_selector, pool_selector)
from plumber_agent.models.pool import pool_id
from plumber_agent.pools.pool import claim_name
from plumber_agent.pools.resolve import PoolResolver
from tests.fakeapi.server import ADDRESSCLAIMS, HOSTNETWORKS, NODES, TEMPLATES
from tests.helpers.wait import wait_for

NODE = "node-a"
CIDR, OTHER_CIDR = "192.168.50.0/24", "192.168.60.0/24"
WAIT_S = 30.0


def put_node(fake_api, name: str) -> str:
    return fake_api.put_object(NODES, {"metadata": {"name": name, "labels": {"pool": "yes"}}}
                               )["metadata"]["uid"]


def put_template(fake_api, name: str, cidr: str, **pool) -> dict:
    return fake_api.put_object(TEMPLATES, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetworkTemplate",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"pool": "yes"},
                 "interfaceConfig": [{"name": "eno2", "ipv4": {"pool": {"cidr": cidr, **pool}}}]}})


def template_pool(obj: dict, cidr: str) -> str:
    return pool_id(obj["metadata"]["uid"], "eno2", "ipv4", cidr)


def put_claim(fake_api, address: str, *, node: str, pool: str, labelled: bool = True) -> dict:
    """A claim owned by `node` (its Node made when missing: the garbage collector deletes a
    claim whose owner does not exist)."""
    node_uid = ((fake_api.get(NODES, node) or {}).get("metadata") or {}).get("uid") \
        or put_node(fake_api, node)
    obj = claim_object(Claim(name=claim_name(address), address=address, prefix_length=24,
                             node=node, node_uid=node_uid, template="t", interface="eno2",
                             pool=CIDR, pool_id=pool))
    if not labelled:
        obj["metadata"].pop("labels")
    return fake_api.put_object(ADDRESSCLAIMS, {"apiVersion": f"{GROUP}/{VERSION}",
                                               "kind": "AddressClaim", **obj})


def big_hostnetwork(name: str, address: str) -> dict:
    """Another node's HostNetwork reporting `address` on an interface, padded with veths."""
    veths = [{"pfName": f"cali{n:08x}", "mtu": 1500} for n in range(50)]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetwork",
            "metadata": {"name": name},
            "status": {"interfaceStatus": [{"pfName": "eno2", "ipv4": {"address": [f"{address}/24"]}},
                                           *veths]}}


@pytest.fixture
def wiring(fake_api, tmp_path):
    """ClusterWiring of NODE against the fake, its watches running; stopped after the test."""
    put_node(fake_api, NODE)
    kube = ClusterWiring(node_name=NODE, kubeconfig=str(fake_api.kubeconfig(tmp_path / "kc")),
                         clock=RealClock(), metrics=Metrics(), on_change=lambda: None)
    stop = threading.Event()
    threads = []

    def spawn(name, target):
        if name in ("informer", "node-informer", "claim-informer"):
            thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
            thread.start()
            threads.append(thread)
    kube.start(spawn)
    try:
        yield kube
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        kube.client.close()


def claim_requests(fake_api, *, watch: bool) -> list:
    return [r for r in fake_api.requests(method="GET", path_contains="/addressclaims", watch=watch)
            if not r.path.rstrip("/").split("/")[-1].startswith("ipv")]


def test_the_claims_read_are_each_pool_and_the_nodes_own_never_all(fake_api, wiring):
    """Claims of the templates' pools and of this node are read, by label; another pool's (no
    template has it) and unlabelled ones are not; every list and watch of claims carries a
    selector."""
    template = put_template(fake_api, "storage", CIDR)
    mine = template_pool(template, CIDR)
    wait_for(lambda: wiring.claim_watch.pool_synced(mine), timeout_s=WAIT_S,
             what="the pool's watch")
    put_claim(fake_api, "192.168.50.20", node="node-b", pool=mine)
    put_claim(fake_api, "192.168.70.1", node="node-b", pool="feedfeedfeedfeed")
    put_claim(fake_api, "192.168.50.30", node="node-c", pool=mine,
              labelled=False)
    # This node's claim of a pool that is gone: read through the node label, to be released.
    put_claim(fake_api, "10.0.0.5", node=NODE, pool="0ld0ld0ld0ld0ld0")
    wait_for(lambda: {"ipv4-192.168.50.20", "ipv4-10.0.0.5"} <= set(wiring.claim_watch.store()),
             timeout_s=WAIT_S, what="this node's and the pool's claims read",
             on_timeout=lambda: str(sorted(wiring.claim_watch.store())))
    assert wiring.pool_ids() == {mine}
    assert set(wiring.claim_watch.store()) == {"ipv4-192.168.50.20", "ipv4-10.0.0.5"}
    assert {c.address for c in wiring.claims.list()} == {"192.168.50.20", "10.0.0.5"}
    for watch in (False, True):
        selectors = {r.query.get("labelSelector") for r in claim_requests(fake_api, watch=watch)}
        assert selectors == {pool_selector(mine), node_selector(NODE)}, selectors
    assert pool_selector(mine) == f"{POOL_LABEL}={mine}"
    assert node_selector(NODE) == f"{NODE_LABEL}={NODE}"


def test_a_new_pool_is_watched_and_a_gone_one_is_dropped(fake_api, wiring):
    """A second template's pool gets its watch (its claims appear); deleting the first
    template drops its pool's watch (its other nodes' claims vanish) while this node's own
    claim of it stays read until released."""
    first = put_template(fake_api, "storage", CIDR)
    first_pool = template_pool(first, CIDR)
    put_claim(fake_api, "192.168.50.20", node="node-b", pool=first_pool)
    put_claim(fake_api, "192.168.50.21", node=NODE, pool=first_pool)
    wait_for(lambda: set(wiring.claim_watch.store()) == {"ipv4-192.168.50.20",
                                                         "ipv4-192.168.50.21"},
             timeout_s=WAIT_S, what="the first pool's claims read")
    second = put_template(fake_api, "backup", OTHER_CIDR)
    second_pool = template_pool(second, OTHER_CIDR)
    put_claim(fake_api, "192.168.60.7", node="node-b", pool=second_pool)
    wait_for(lambda: "ipv4-192.168.60.7" in wiring.claim_watch.store()
             and wiring.claim_watch.pool_synced(second_pool),
             timeout_s=WAIT_S, what="the second pool's watch")
    fake_api.delete_object(TEMPLATES, "storage")
    wait_for(lambda: set(wiring.claim_watch.store()) == {"ipv4-192.168.50.21",
                                                         "ipv4-192.168.60.7"},
             timeout_s=WAIT_S, what="the first pool's watch dropped",
             on_timeout=lambda: str(sorted(wiring.claim_watch.store())))
    assert not wiring.claim_watch.pool_synced(first_pool)
    assert wiring.claim_watch.has_synced()  # what is left to read is read


def test_no_claim_is_read_until_a_template_uses_a_pool(fake_api, wiring):
    fake_api.put_object(TEMPLATES, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetworkTemplate",
        "metadata": {"name": "plain"},
        "spec": {"interfaceConfig": [{"name": "eno2", "mtu": 1400}]}})
    wait_for(lambda: wiring.templates.has_synced() and wiring.templates.store(),
             timeout_s=WAIT_S, what="templates listed")
    assert wiring.claim_watch.has_synced()  # nothing to read: a pass is not held up
    assert claim_requests(fake_api, watch=False) == []
    assert claim_requests(fake_api, watch=True) == []


def test_a_pool_allocation_sends_no_hostnetwork_request(fake_api, wiring):
    """200 other nodes publish a HostNetwork (one of them reports the pool's first address):
    the allocation's requests are its claim create only. The address that node reports is kept
    out by the pool's `exclude`, the spec's way of saying 'in use elsewhere'."""
    reported = "192.168.50.10"
    for n in range(200):
        fake_api.put_object(HOSTNETWORKS, big_hostnetwork(f"other-{n}",
                                                          reported if n == 0 else "10.9.9.9"))
    obj = put_template(fake_api, "storage", CIDR, rangeStart=reported,
                       rangeEnd="192.168.50.11", exclude=[reported])
    pool = template_pool(obj, CIDR)
    wait_for(lambda: wiring.claim_watch.pool_synced(pool), timeout_s=WAIT_S,
             what="the pool's claims listed")
    template = template_from_object(obj)
    resolver = PoolResolver(claims=wiring.claims, node=NODE, node_uid=wiring.node_uid,
                            ready=wiring.claim_watch.pool_synced)
    before = len(fake_api.requests())
    result = resolver.resolve([template], {"pool": "yes"}, claim=True)
    during = [r for r in fake_api.requests()[before:] if not r.watch]
    assert [c.address for c in result.held] == ["192.168.50.11"], result.failures
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in during] == [("POST", "addressclaims")]
    assert not [r for r in fake_api.requests() if "/hostnetworks" in r.path]
