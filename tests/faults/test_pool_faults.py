"""Pool allocation under crashes, against a real agent process (docs/address-pools.md,
"Allocation" step 3): the claim is created before the host is changed, so whatever instant the
agent dies at, its restart finds its own claim and keeps that address: no second claim, no
address leaked, nothing taken twice.

The windows are made exact with the fake API server's knobs, not with timing: the claim's
create is committed but its answer held (`hold_next_answer`) while the agent is SIGKILLed or
the API server restarts; status writes are refused (`fail_next`) so the agent is killed after
the host change and before any status could say so.
"""
from __future__ import annotations

import ipaddress

import pytest

from tests.support.agent_proc import agent_argv, agent_process
from tests.support.cluster import ClusterFixture
from tests.fakeapi.server import ADDRESSCLAIMS
from tests.helpers.netns import ip_json
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

CONVERGE_S = 60.0
TEMPLATE = "pool-faults"
CIDR = "198.18.100.0/24"
RANGE = ("198.18.100.10", "198.18.100.20")
SPEC = {"interfaceConfig": [{"name": "eth1", "ipv4": {"pool": {
    "cidr": CIDR, "rangeStart": RANGE[0], "rangeEnd": RANGE[1]}}}]}
CLAIMS_PATH = "/addressclaims"
ALWAYS = 10 ** 6  # "every request from now on", for fail_next


@pytest.fixture
def cluster(tmp_path):
    with ClusterFixture(tmp_path) as fixture:
        yield fixture


def start_agent(tmp_path, node_ns, static_sysfs, cluster, log_name: str):
    argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                      kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                      extra=("--resync-period-s", "2"))
    return agent_process(argv, tmp_path / log_name)


def pool_addresses_on_host(ns) -> list[str]:
    """eth1's IPv4 addresses inside the pool's CIDR."""
    net = ipaddress.ip_network(CIDR)
    return sorted(f"{a['local']}/{a['prefixlen']}" for link in ip_json(ns, "addr", "show", "dev", "eth1")
                  for a in link.get("addr_info", [])
                  if a.get("family") == "inet" and ipaddress.ip_address(a["local"]) in net)


def claims(cluster) -> list[dict]:
    return cluster.server.list(ADDRESSCLAIMS)


def claim_creates(cluster) -> list:
    return [r for r in cluster.server.requests(method="POST", path_contains=CLAIMS_PATH)]


def claim_lines(agent) -> str:
    """The agent's log lines about claims (for assertion messages)."""
    return "\n".join(line for line in agent.log_text().splitlines()
                     if any(word in line for word in ("claim", "released", "Traceback")))


def status_claims(cluster) -> list[dict]:
    return ((cluster.hostnetwork() or {}).get("status") or {}).get("addressClaims") or []


def assert_one_claim_on_host_and_status(cluster, ns) -> str:
    """Exactly one claim, this node's, its address on eth1 (and nothing else of the pool),
    the template Applied and the HostNetwork listing the claim. Returns the address."""
    have = claims(cluster)
    assert len(have) == 1, f"want exactly one claim: {have}"
    only = have[0]
    node_uid = cluster.server.get("nodes", cluster.node)["metadata"]["uid"]
    assert only["spec"]["node"] == cluster.node and only["spec"]["nodeUID"] == node_uid, only
    address = only["spec"]["address"]
    assert only["metadata"]["name"] == f"ipv4-{address}"
    assert pool_addresses_on_host(ns) == [f"{address}/24"]
    assert cluster.template_state(TEMPLATE) == "Applied", cluster.template_statuses()
    assert [(c["address"], c["interface"], c["template"]) for c in status_claims(cluster)] == [
        (f"{address}/24", "eth1", TEMPLATE)], status_claims(cluster)
    return address


def wait_settled(cluster, ns, agent) -> str:
    return wait_for(lambda: assert_one_claim_on_host_and_status(cluster, ns), timeout_s=CONVERGE_S,
                    what="one claim, on the host and in the status",
                    on_timeout=lambda: f"claims={claims(cluster)}\nhost={pool_addresses_on_host(ns)}\n"
                                       f"status={cluster.hostnetwork()}\n{agent.log_text()[-4000:]}")


def hold_first_claim(cluster, agent, ns):
    """Put the template and wait until the agent's claim is committed with its answer held;
    the host is still without a pool address. Returns (hold, the committed claim)."""
    hold = cluster.server.hold_next_answer("POST", CLAIMS_PATH)
    cluster.put_template(TEMPLATE, SPEC)
    assert hold.wait_held(CONVERGE_S), agent.log_text()[-4000:]
    (committed,) = claims(cluster)
    assert hold.status == 201
    assert pool_addresses_on_host(ns) == [], "the host changed before the claim's answer"
    return hold, committed


def test_killed_between_claim_and_host_change_finds_its_claim(cluster, node_ns, static_sysfs,
                                                              tmp_path):
    with start_agent(tmp_path, node_ns, static_sysfs, cluster, "agent-1.log") as agent:
        hold, committed = hold_first_claim(cluster, agent, node_ns)
        agent.kill()
        assert agent.wait_exit(15) is not None
        hold.release()  # nobody is left to hear it
    assert pool_addresses_on_host(node_ns) == []
    creates_before = len(claim_creates(cluster))

    with start_agent(tmp_path, node_ns, static_sysfs, cluster, "agent-2.log") as agent:
        address = wait_settled(cluster, node_ns, agent)
        assert address == committed["spec"]["address"]
        assert claims(cluster)[0]["metadata"]["uid"] == committed["metadata"]["uid"]
        assert len(claim_creates(cluster)) == creates_before, "the restarted agent claimed again"
        assert agent.alive()


def test_killed_after_host_change_before_status(cluster, node_ns, static_sysfs, tmp_path):
    # No HostNetwork write gets through (reads do: the allocator reads the other nodes'),
    # so whatever the agent did, no status can say so yet.
    for method in ("POST", "PUT", "PATCH"):
        cluster.server.fail_next(ALWAYS, 500, method=method, path_contains="/hostnetworks")
    with start_agent(tmp_path, node_ns, static_sysfs, cluster, "agent-1.log") as agent:
        cluster.put_template(TEMPLATE, SPEC)
        on_host = wait_for(lambda: pool_addresses_on_host(node_ns), timeout_s=CONVERGE_S,
                           what="the pool address on eth1", on_timeout=agent.log_text)
        agent.kill()
        assert agent.wait_exit(15) is not None
    assert not status_claims(cluster), "a status write got through the injected failures"
    (committed,) = claims(cluster)
    assert on_host == [f"{committed['spec']['address']}/24"]
    creates_before = len(claim_creates(cluster))
    cluster.server.clear_failures()

    with start_agent(tmp_path, node_ns, static_sysfs, cluster, "agent-2.log") as agent:
        address = wait_settled(cluster, node_ns, agent)
        assert address == committed["spec"]["address"]
        assert claims(cluster)[0]["metadata"]["uid"] == committed["metadata"]["uid"]
        assert len(claim_creates(cluster)) == creates_before, "the restarted agent claimed again"


def test_api_server_restarts_with_the_claims_answer_lost(cluster, node_ns, static_sysfs,
                                                         tmp_path):
    """The create is committed, the server restarts before answering: the agent never heard
    back, yet it ends with exactly that claim (its own, found by name or by its watch)."""
    with start_agent(tmp_path, node_ns, static_sysfs, cluster, "agent.log") as agent:
        hold, committed = hold_first_claim(cluster, agent, node_ns)
        cluster.restart()  # the held answer is lost with the old server
        hold.release()
        address = wait_settled(cluster, node_ns, agent)
        assert address == committed["spec"]["address"]
        # The very object committed before the restart: not released and claimed again.
        assert claims(cluster)[0]["metadata"]["uid"] == committed["metadata"]["uid"], \
            claim_lines(agent)
        assert agent.alive()
