"""Per-node addresses from a pool (docs/address-pools.md) across twenty real agents: every node
gets its own address from the range, checked ON THE HOSTS and against what the HostNetworks, the
AddressClaim objects, `kubectl get addressclaims` and the template's status say; addresses stay
put across agent restarts and unrelated edits; an exhausted pool fails exactly the nodes left
without an address; a deleted Node's address goes to a node that was waiting for one; and twenty
agents racing for one pool never share an address.

Why on the hosts: a duplicate address is a fact of the hosts' interfaces, whatever the claims
say; the claims are the lock, the hosts are what must never collide.

One 20-node cluster is shared by the module (no Open vSwitch); the first ten nodes carry the
label TEN_LABEL, which most tests select; the race selects all twenty. Rollout limits apply to
pool templates too, so every template here rolls out to every node at once (maxUnavailable
100%): what is tested is the allocation. Each test returns every node to its baseline.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
import urllib.request
from typing import Iterator

import pytest

from plumber_agent.cluster import AGENT_CONTROLLER

from tests.e2e.cluster import API_TIMEOUT_S, CONVERGE_TIMEOUT_S, template
from tests.e2e.steps import take_baseline
from tests.e2e.rollout import holds_for
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

NODE_COUNT = 20
TEN = 10
TEN_LABEL = {"e2e.plumber.k8s.pf9.io/pools": "ten"}
EVERY_NODE = {"kubernetes.io/os": "linux"}  # the harness gives every simulated node this label
NAMESPACE = "plumber-system"
AGENT_ARGS = ("--slot-lease-duration-s", "4", "--leader-lease-duration-s", "3",
              "--namespace", NAMESPACE)
ALL_AT_ONCE = {"maxUnavailable": "100%"}
NIC = "eno1"
CIDR = "198.18.100.0/24"
PREFIX = 24
CLAIM_GROUP, CLAIM_VERSION, CLAIMS = "plumber.k8s.pf9.io", "v1", "addressclaims"
KUBECTL = "/usr/bin/kubectl"
KUBECTL_TIMEOUT_S = 30.0
RACE_ROUNDS = 3
# What "keeps its address" is watched over after a pool filled up (other nodes retry meanwhile).
KEEP_WATCH_S = 6.0


def pool_spec(first: str, last: str, **extra) -> dict:
    return {"interfaceConfig": [{"name": NIC, "ipv4": {"pool": {
        "cidr": CIDR, "rangeStart": f"198.18.100.{first}", "rangeEnd": f"198.18.100.{last}"}}}],
        "rollout": dict(ALL_AT_ONCE), **extra}


def in_range(address: str, first: int, last: int) -> bool:
    ip = ipaddress.ip_address(address)
    return (ipaddress.ip_address(f"198.18.100.{first}") <= ip
            <= ipaddress.ip_address(f"198.18.100.{last}"))


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(request) -> Iterator:
    """Twenty simulated nodes (no Open vSwitch), the first ten labelled TEN_LABEL."""
    from tests.e2e.harness import module_cluster
    started = time.monotonic()
    try:
        for instance in module_cluster(request, count=NODE_COUNT, agent_args=AGENT_ARGS,
                                       what="pools"):
            print(f"\ne2e pools: {NODE_COUNT} nodes up in {time.monotonic() - started:.1f} s")
            for node in instance.nodes[:TEN]:
                instance.api.label_node(node.name, dict(TEN_LABEL))
            yield instance
    finally:
        print(f"\ne2e pools: module wall time {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def baseline(cluster) -> dict:
    return take_baseline(cluster)


def ten(steps) -> list:
    return steps.nodes[:TEN]


# ----------------------------------------------------------------------------------- reads
def claim_objects(api) -> list[dict]:
    return api.custom.list_cluster_custom_object(
        CLAIM_GROUP, CLAIM_VERSION, CLAIMS, _request_timeout=API_TIMEOUT_S).get("items") or []


def claims_by_node(api) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for obj in claim_objects(api):
        out.setdefault(obj["spec"]["node"], []).append(obj)
    return out


def pool_addresses_on(node) -> list[str]:
    """The node's addresses on NIC inside CIDR, 'addr/prefix', read from the host."""
    net = ipaddress.ip_network(CIDR)
    return sorted(a for a in node.addrs_of(NIC) if ipaddress.ip_interface(a).ip in net)


def status_claims(api, node: str) -> list[dict]:
    return ((api.hostnetwork(node) or {}).get("status") or {}).get("addressClaims") or []


def node_uid(api, node: str) -> str:
    return (api.get_node(node) or {})["metadata"]["uid"]


def pool_status(steps, name: str) -> list[dict]:
    return ((steps.api.get_template(name) or {}).get("status") or {}).get("pools") or []


def assert_holds_one(steps, node, name: str, first: int, last: int) -> str:
    """The node holds exactly one address of the pool, the same in all four places: its host's
    NIC, its HostNetwork's status.addressClaims, its AddressClaim object (this Node's uid, owned
    by the Node) and nothing else of the pool on the host. Returns the address."""
    api = steps.api
    on_host = pool_addresses_on(node)
    assert len(on_host) == 1, f"{node.name}: want one pool address on {NIC}, host has {on_host}"
    address = str(ipaddress.ip_interface(on_host[0]).ip)
    assert on_host[0] == f"{address}/{PREFIX}" and in_range(address, first, last), on_host
    mine = claims_by_node(api).get(node.name, [])
    assert [c["spec"]["address"] for c in mine] == [address], \
        f"{node.name}: host has {address}, its AddressClaims say {[c['spec'] for c in mine]}"
    claim = mine[0]
    uid = node_uid(api, node.name)
    assert claim["metadata"]["name"] == f"ipv4-{address}", claim["metadata"]
    assert claim["spec"]["nodeUID"] == uid and claim["spec"]["interface"] == NIC, claim["spec"]
    assert claim["spec"]["template"] == name and claim["spec"]["pool"] == CIDR, claim["spec"]
    assert [(o["kind"], o["name"], o["uid"]) for o in claim["metadata"].get("ownerReferences") or []
            ] == [("Node", node.name, uid)], claim["metadata"]
    reported = status_claims(api, node.name)
    assert [(c["address"], c["interface"], c["template"], c["pool"]) for c in reported] == [
        (f"{address}/{PREFIX}", NIC, name, CIDR)], f"{node.name}: status.addressClaims {reported}"
    return address


def wait_holding(steps, nodes, name: str, first: int, last: int) -> dict[str, str]:
    """Every node Applied at the current generation holding one address; node -> address,
    all distinct."""
    for node in nodes:
        steps.wait_state(node.name, name, "Applied")

    def all_hold():
        have = {node.name: assert_holds_one(steps, node, name, first, last) for node in nodes}
        assert len(set(have.values())) == len(have), f"shared addresses: {have}"
        return have
    return wait_for(all_hold, timeout_s=CONVERGE_TIMEOUT_S, max_interval_s=1.0,
                    what=f"{len(nodes)} nodes holding addresses of {name}")


def reconcile_passes(node) -> int:
    """plumber_reconciles_total of the node's agent process now running (from its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics",
                                timeout=API_TIMEOUT_S) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("plumber_reconciles_total "):
            return int(float(line.split()[1]))
    return 0


def claim_creates(steps) -> int:
    """POSTs of AddressClaims the API server has answered so far (fake API server only)."""
    server = getattr(steps.cluster, "server", None)
    return len(server.requests(method="POST", path_contains="/addressclaims")) if server else -1


def wait_pool_status(steps, name: str, *, size: int, allocated: int) -> dict:
    def check():
        pools = pool_status(steps, name)
        want = {"interface": NIC, "family": "ipv4", "cidr": CIDR, "size": size,
                "allocated": allocated}
        assert [{k: p.get(k) for k in want} for p in pools] == [want], f"{name} status.pools {pools}"
        return pools[0]
    return wait_for(check, timeout_s=CONVERGE_TIMEOUT_S, what=f"{name} status.pools {allocated}/{size}")


def pool_exhausted_events(steps) -> list[dict]:
    return [e for e in steps.api.events(reason="PoolExhausted") if "is exhausted" in e.get("message", "")]


def kubectl_claims(steps, tmp_path) -> dict[str, dict[str, str]]:
    """`kubectl get addressclaims` as name -> {column: cell}."""
    if not os.path.exists(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed")
    server = getattr(steps.cluster, "server", None)
    if server is not None and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so the fake API server cannot serve kubectl over HTTPS")
    kubeconfig = (server.kubectl_kubeconfig(tmp_path / "kubectl.kubeconfig") if server is not None
                  else steps.cluster.kubeconfig)
    argv = [KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "kubectl-cache"),
            "get", "addressclaims", f"--request-timeout={int(KUBECTL_TIMEOUT_S)}s"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S + 10,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    headers = lines[0].split()
    return {cells[0]: dict(zip(headers, cells)) for cells in (line.split() for line in lines[1:])}


# =================================================================================== scenarios
def test_every_node_gets_a_distinct_address_that_stays(steps, tmp_path):
    name = "e2e-pool-ten"
    first, last = 10, 60
    obj = template(name, pool_spec(str(first), str(last)), node_selector=TEN_LABEL)
    steps.apply(obj)
    addresses = wait_holding(steps, ten(steps), name, first, last)
    # Exactly these ten claims exist: none for the ten nodes the template does not select.
    assert sorted(c["spec"]["address"] for c in claim_objects(steps.api)) == sorted(addresses.values())
    for node in steps.nodes[TEN:]:
        assert not pool_addresses_on(node) and not status_claims(steps.api, node.name), node.name

    table = kubectl_claims(steps, tmp_path)
    assert {row["NODE"]: row["ADDRESS"] for row in table.values()} == addresses, table
    assert all(row["TEMPLATE"] == name and row["INTERFACE"] == NIC and row["POOL"] == CIDR
               for row in table.values()), table
    assert sorted(table) == sorted(f"ipv4-{a}" for a in addresses.values()), table
    wait_pool_status(steps, name, size=last - first + 1, allocated=TEN)

    # Stable across agent restarts: the restarted agents find their own claims, claim nothing.
    creates = claim_creates(steps)
    restarted = [ten(steps)[0], ten(steps)[4], ten(steps)[9]]
    for node in restarted:
        node.kill_agent()
    for node in restarted:
        node.ensure_agent_running()
    for node in restarted:  # each restarted agent has run its own passes since
        wait_for(lambda node=node: reconcile_passes(node) >= 1, timeout_s=CONVERGE_TIMEOUT_S,
                 what=f"a pass of the restarted agent of {node.name}")
    assert wait_holding(steps, ten(steps), name, first, last) == addresses
    holds_for(lambda: wait_holding_now(steps, name, first, last, addresses), 3.0,
              what="addresses kept after the restarts")
    assert claim_creates(steps) == creates, "a restarted agent created another claim"

    # Stable across an edit that leaves the pool alone (an MTU on another NIC): same addresses.
    generation = steps.api.get_template(name)["metadata"]["generation"]
    spec = pool_spec(str(first), str(last))
    spec["interfaceConfig"].append({"name": "eno2", "mtu": 9000})
    steps.patch(name, {"spec": {"interfaceConfig": spec["interfaceConfig"]}})
    assert steps.api.get_template(name)["metadata"]["generation"] > generation
    assert wait_holding(steps, ten(steps), name, first, last) == addresses
    for node in ten(steps):
        assert node.mtu("eno2") == 9000, node.name
    assert claim_creates(steps) == creates, "an unrelated edit created claims"
    wait_pool_status(steps, name, size=last - first + 1, allocated=TEN)


def wait_holding_now(steps, name: str, first: int, last: int, want: dict[str, str]) -> None:
    have = {node.name: assert_holds_one(steps, node, name, first, last) for node in ten(steps)}
    assert have == want, f"addresses moved: {want} -> {have}"


def split_by_state(steps, name: str, nodes) -> dict[str, list[str]]:
    generation = steps.api.get_template(name)["metadata"]["generation"]
    by_state: dict[str, list[str]] = {}
    for node in nodes:
        entry = steps.template_entry(node.name, name) or {}
        state = entry.get("state") if entry.get("observedGeneration") == generation else "stale"
        by_state.setdefault(state or "stale", []).append(node.name)
    return by_state


def wait_split(steps, name: str, nodes, *, applied: int, failed: int) -> dict[str, list[str]]:
    def check():
        by_state = split_by_state(steps, name, nodes)
        if len(by_state.get("Applied", [])) != applied or len(by_state.get("Failed", [])) != failed:
            raise AssertionError(f"want {applied} Applied and {failed} Failed: {by_state}")
        return by_state
    return wait_for(check, timeout_s=CONVERGE_TIMEOUT_S, what=f"{name}: {applied} Applied, {failed} Failed")


def test_pool_of_five_for_ten_fails_exactly_five(steps):
    name = "e2e-pool-five"
    first, last = 20, 24
    events_before = len(pool_exhausted_events(steps))
    steps.apply(template(name, pool_spec(str(first), str(last)), node_selector=TEN_LABEL))
    by_state = wait_split(steps, name, ten(steps), applied=5, failed=5)
    holders = [n for n in ten(steps) if n.name in by_state["Applied"]]
    left_out = [n for n in ten(steps) if n.name in by_state["Failed"]]
    addresses = wait_holding(steps, holders, name, first, last)
    assert sorted(addresses.values()) == [f"198.18.100.{i}" for i in range(first, last + 1)]
    for node in left_out:
        entry = steps.assert_state(node.name, name, "Failed", contains=["is exhausted", CIDR])
        assert not pool_addresses_on(node), f"{node.name} failed yet has {pool_addresses_on(node)}"
        assert not claims_by_node(steps.api).get(node.name), entry
        assert not status_claims(steps.api, node.name)
    wait_pool_status(steps, name, size=5, allocated=5)

    def one_event_per_left_out_node():
        found = pool_exhausted_events(steps)[events_before:]
        # reportingInstance is `<controller>-<node>` (kube/recorder.py).
        hosts = {(e.get("source") or {}).get("host")
                 or str(e.get("reportingInstance")).removeprefix(AGENT_CONTROLLER + "-")
                 for e in found}
        assert hosts >= {n.name for n in left_out}, f"PoolExhausted Events from {hosts}: {found}"
        assert hosts <= {n.name for n in left_out}, f"a node holding an address said exhausted: {hosts}"
        return found
    wait_for(one_event_per_left_out_node, timeout_s=CONVERGE_TIMEOUT_S, what="PoolExhausted Events")

    # The five keep theirs while the five others keep retrying.
    def unchanged():
        now = {n.name: assert_holds_one(steps, n, name, first, last) for n in holders}
        assert now == addresses, f"{addresses} -> {now}"
        assert split_by_state(steps, name, ten(steps)).get("Failed") == by_state["Failed"]
    holds_for(unchanged, KEEP_WATCH_S, what="the five holders keep their addresses")


def test_deleted_nodes_address_goes_to_the_waiting_node(steps):
    """Nine addresses for ten nodes: one waits (Failed, exhausted); a holder's Node is deleted,
    the garbage collector deletes its claim, and the waiting node gets exactly that address."""
    name = "e2e-pool-nine"
    first, last = 30, 38
    steps.apply(template(name, pool_spec(str(first), str(last)), node_selector=TEN_LABEL))
    by_state = wait_split(steps, name, ten(steps), applied=9, failed=1)
    (waiting_name,) = by_state["Failed"]
    waiting = steps.cluster.node(waiting_name)
    steps.assert_state(waiting_name, name, "Failed", contains=["is exhausted"])
    holders = [n for n in ten(steps) if n.name != waiting_name]
    addresses = wait_holding(steps, holders, name, first, last)
    gone = holders[len(holders) // 2]
    freed = addresses[gone.name]
    gone_labels = steps.baseline["labels"][gone.name]

    gone.kill_agent()  # the machine is gone with its Node
    steps.api.delete_node(gone.name)
    try:
        wait_for(lambda: not claims_by_node(steps.api).get(gone.name), timeout_s=CONVERGE_TIMEOUT_S,
                 what=f"the claim of deleted {gone.name} collected")
        steps.wait_state(waiting_name, name, "Applied")
        got = wait_for(lambda: assert_holds_one(steps, waiting, name, first, last),
                       timeout_s=CONVERGE_TIMEOUT_S, what=f"{waiting_name} holding an address")
        assert got == freed, f"{waiting_name} got {got}, the freed address was {freed}"
        others = [n for n in holders if n is not gone]
        assert {n.name: assert_holds_one(steps, n, name, first, last) for n in others} == {
            k: v for k, v in addresses.items() if k != gone.name}
        wait_pool_status(steps, name, size=9, allocated=9)
    finally:
        # Back in the order a machine comes back: the template goes first (so the old host's
        # address is cleaned up by its own agent, not left next to the new holder's), then the
        # Node (a new uid) and its agent.
        steps.delete(name)
        steps.api.ensure_node(gone.name, gone_labels)
        gone.ensure_agent_running()


def wait_no_claims(steps) -> None:
    def none_left():
        left = claim_objects(steps.api)
        assert not left, f"{len(left)} claims left: {[c['metadata']['name'] for c in left]}"
        for node in steps.nodes:
            assert not pool_addresses_on(node), f"{node.name} still has {pool_addresses_on(node)}"
        return True
    wait_for(none_left, timeout_s=CONVERGE_TIMEOUT_S, max_interval_s=1.0, what="every claim released")


def assert_twenty_distinct(steps, name: str, first: int, last: int) -> dict[str, str]:
    have = wait_holding(steps, steps.nodes, name, first, last)
    claimed = [c["spec"]["address"] for c in claim_objects(steps.api)]
    assert sorted(claimed) == sorted(have.values()), f"claims {claimed} vs hosts {have}"
    assert len(set(claimed)) == NODE_COUNT
    return have


def test_twenty_agents_racing_never_share_an_address(steps):
    """A pool of exactly twenty addresses for twenty nodes, three rounds: every agent started
    at the same moment with the template already there, then the template deleted (every
    address released) and created again while all twenty run."""
    name = "e2e-pool-race"
    first, last = 100, 100 + NODE_COUNT - 1
    obj = template(name, pool_spec(str(first), str(last)), node_selector=EVERY_NODE)
    timings: list[float] = []

    for node in steps.nodes:
        node.kill_agent()
    steps.apply(obj)
    started = time.monotonic()
    for node in steps.nodes:
        node.start_agent()
    for node in steps.nodes:
        node.wait_agent_ready()
    rounds = [assert_twenty_distinct(steps, name, first, last)]
    timings.append(time.monotonic() - started)

    for _ in range(RACE_ROUNDS - 1):
        steps.delete(name)
        wait_no_claims(steps)
        started = time.monotonic()
        steps.apply(obj)
        rounds.append(assert_twenty_distinct(steps, name, first, last))
        timings.append(time.monotonic() - started)
    print(f"\nrace rounds: all {NODE_COUNT} addressed after "
          + ", ".join(f"{t:.1f} s" for t in timings)
          + "; node -> address differed between rounds for "
          + ", ".join(str(sum(a[n] != b[n] for n in a)) for a, b in zip(rounds, rounds[1:]))
          + " nodes")

