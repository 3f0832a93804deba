"""Never cut the node off (issue 7, item 4), with the API server reachable only over a veth:
the fake API server listens on 10.202.0.1 in its own namespace; the node namespace reaches it
from 10.202.0.2/24 on `apil0`; the agent runs inside the node namespace and manages it.

Invariants:
- a template whose address list for apil0 drops 10.202.0.2 (the source the node uses to reach
  the API server) is refused: template Failed with a message naming the API server and
  allowApiServerDisruption, the address stays, the agent keeps talking to the API server;
- a template replacing the route the node uses to reach the API server is refused the same way;
- with allowApiServerDisruption: true the same change IS applied;
- rollback on loss: when an allowed change makes the API server unreachable for longer than a
  deadline (--api-loss-rollback-s), the agent rolls that change back from the ledger and
  reports why.
"""
from __future__ import annotations

import pytest

from tests.support.agent_proc import agent_argv, agent_process
from tests.faults.nsnet import ApiNamespace
from tests.helpers.netns import ip, ip_json
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

CONVERGE_S = 60.0
NODE_ADDR, API_ADDR = "10.202.0.2/24", "10.202.0.1/24"
ROLLBACK_DEADLINE_S = 10  # the agent's --api-loss-rollback-s in these tests
ROLLBACK_BOUND_S = 120.0  # how long the test waits for the rollback to show


def v4(ns, ifname):
    return sorted(f"{a['local']}/{a['prefixlen']}" for link in ip_json(ns, "addr", "show",
                                                                         "dev", ifname)
                  for a in link.get("addr_info", []) if a.get("family") == "inet")


@pytest.fixture
def setup(tmp_path, node_ns, static_sysfs):
    with ApiNamespace(node_ns, node_ifname="apil0", node_addr=NODE_ADDR,
                      api_addr=API_ADDR) as api_ns:
        with api_ns.cluster(tmp_path) as cluster:
            argv = api_ns.in_node(agent_argv(
                netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                extra=("--resync-period-s", "2",
                       "--api-loss-rollback-s", str(ROLLBACK_DEADLINE_S))))
            with agent_process(argv, tmp_path / "agent.log") as agent:
                yield api_ns, cluster, agent


def status_of(cluster, name):
    return cluster.template_statuses().get(name) or {}


def test_removing_the_api_server_address_is_refused(setup, node_ns):
    api_ns, cluster, agent = setup
    cluster.put_template("cut", {"interfaceConfig": [
        {"name": "apil0", "ipv4": {"address": ["10.203.0.1/24"]}}]})
    wait_for(lambda: status_of(cluster, "cut").get("state") in ("Failed", "Refused"), timeout_s=CONVERGE_S,
             what="the cutting template refused", on_timeout=agent.log_text)
    message = status_of(cluster, "cut").get("message") or ""
    assert "API server" in message and "allowApiServerDisruption" in message, message
    assert "10.202.0.2/24" in v4(node_ns, "apil0")
    # The agent still talks to the API server: a harmless template applies afterwards.
    cluster.put_template("ok", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
    wait_for(lambda: status_of(cluster, "ok").get("state") == "Applied", timeout_s=CONVERGE_S, what="ok applied",
             on_timeout=agent.log_text)
    assert "10.202.0.2/24" in v4(node_ns, "apil0")


def test_replacing_the_route_to_the_api_server_is_refused(setup, node_ns):
    api_ns, cluster, agent = setup
    # A more specific route for the API server's network through another link.
    ip(node_ns, "addr", "add", "10.204.0.2/24", "dev", "eth1")
    before = ip_json(node_ns, "route", "get", "10.202.0.1")[0]["dev"]
    cluster.put_template("reroute", {"routes": {"ipv4": [
        {"dst": "10.202.0.0/24", "gw": "10.204.0.254", "dev": "eth1", "metric": 0}]}})
    wait_for(lambda: status_of(cluster, "reroute").get("state") in ("Failed", "Refused"),
             timeout_s=CONVERGE_S, what="the rerouting template refused", on_timeout=agent.log_text)
    assert "API server" in (status_of(cluster, "reroute").get("message") or "")
    assert ip_json(node_ns, "route", "get", "10.202.0.1")[0]["dev"] == before == "apil0"


def test_allowed_disruption_is_applied(setup, node_ns):
    api_ns, cluster, agent = setup
    cluster.put_template("cut", {"allowApiServerDisruption": True, "interfaceConfig": [
        {"name": "apil0", "ipv4": {"address": ["10.202.0.2/24", "10.203.0.1/24"]}}]})
    wait_for(lambda: "10.203.0.1/24" in v4(node_ns, "apil0"), timeout_s=CONVERGE_S, what="address added",
             on_timeout=agent.log_text)
    # Now drop the API server source address: allowed, so it happens.
    cluster.put_template("cut", {"allowApiServerDisruption": True, "interfaceConfig": [
        {"name": "apil0", "ipv4": {"address": ["10.203.0.1/24"]}}]})
    wait_for(lambda: "10.202.0.2/24" not in v4(node_ns, "apil0"), timeout_s=CONVERGE_S,
             what="API server address removed (allowed)", on_timeout=agent.log_text)
    assert agent.alive()


def test_allowed_change_that_loses_the_api_server_is_rolled_back(setup, node_ns):
    """When an allowed change makes the API server unreachable for longer than the deadline,
    the agent rolls the change back from the ledger (the address returns) and reports why."""
    api_ns, cluster, agent = setup
    cluster.put_template("cut", {"allowApiServerDisruption": True, "interfaceConfig": [
        {"name": "apil0", "ipv4": {"address": ["10.203.0.1/24"]}}]})
    wait_for(lambda: "10.202.0.2/24" not in v4(node_ns, "apil0"), timeout_s=CONVERGE_S,
             what="API server address removed", on_timeout=agent.log_text)
    wait_for(lambda: "10.202.0.2/24" in v4(node_ns, "apil0"), timeout_s=ROLLBACK_BOUND_S,
             what="the change rolled back after losing the API server", on_timeout=agent.log_text)
    wait_for(lambda: "roll" in (status_of(cluster, "cut").get("message") or "").lower(),
             timeout_s=CONVERGE_S, what="the rollback reported on the status", on_timeout=agent.log_text)
