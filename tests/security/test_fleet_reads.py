"""What an agent reads and writes about the fleet (issue 19): an agent that is not the status
writer reads nothing about other nodes (only the slot and leader Leases, claims and templates);
its template-results annotation changes with its results only, never with unmanaged status
churn; once it leads, it counts the fleet from those annotations.

Why: at 5,000 nodes every agent that listed Nodes or HostNetworks would cost the API server and
itself what only the leader needs, and a summary rewritten on every pod would send every pod's
churn to the leader again.
"""
from __future__ import annotations

import subprocess

import pytest

from plumber_agent.fleet.leader import LEADER_LEASE
from plumber_agent.fleet.results import RESULTS_ANNOTATION, parse_summary
from plumber_agent.fleet.rollout import LEASE_ROLE_LABEL
from tests.fakeapi import HOSTNETWORKS, LEASES, NODES, TEMPLATES
from tests.support.agent_proc import agent_argv, agent_process
from tests.support.cluster import ClusterFixture
from tests.helpers.wait import wait_for

NAMESPACE = "plumber-system"
OTHER = "node-elsewhere"
TIMEOUT_S = 60


def about_other_nodes(record, node: str) -> bool:
    """A read of another node's Node or HostNetwork, or of all of them. Not counted: the node
    count a percentage maxUnavailable is bounded by (KubeClient.count_nodes: `limit=1`, one
    item's metadata and remainingItemCount), which is a number, not the fleet."""
    path = record.path
    if path.endswith("/api/v1/nodes") and record.query.get("limit") == "1" \
            and "watch" not in record.query:
        return False
    for collection in ("/api/v1/nodes", f"/{HOSTNETWORKS}"):
        if path.endswith(collection):
            return record.query.get("fieldSelector") != f"metadata.name={node}"
        if f"{collection}/" in path:
            return path.split(f"{collection}/", 1)[1].split("/")[0] != node
    return False


def main_resource_patches(server, node: str) -> int:
    return sum(1 for r in server.writes() if r.method == "PATCH"
               and r.path.endswith(f"/{HOSTNETWORKS}/{node}"))


@pytest.mark.privileged
def test_a_non_leader_reads_nothing_of_other_nodes(tmp_path, node_ns, static_sysfs):
    with ClusterFixture(tmp_path) as cluster:
        server, node = cluster.server, cluster.node
        server.put_object(NODES, {"apiVersion": "v1", "kind": "Node",
                                  "metadata": {"name": OTHER}})
        # Another node is the status writer; this agent would wait 10 minutes to take over.
        server.put_object(LEASES, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEADER_LEASE, "namespace": NAMESPACE,
                         "labels": {LEASE_ROLE_LABEL: "leader"}},
            "spec": {"holderIdentity": OTHER, "leaseDurationSeconds": 600}})
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                          kubeconfig=cluster.kubeconfig, node_name=node,
                          # Unmanaged changes written at once: this test is about the summary
                          # staying put while the status changes, not about coalescing.
                          extra=("--leader-lease-duration-s", "600", "--namespace", NAMESPACE,
                                 "--unmanaged-publish-interval-s", "0"))
        with agent_process(argv, tmp_path / "agent.log") as agent:
            template = cluster.put_template(
                "t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
            # The writer (absent) would offer this node a slot; without an offer the node waits
            # for the ranked fallback, 30 to 61.5 s by its rank in this rollout (random: the
            # template's uid), longer than this wait. This test is about reads, so the test
            # plays the writer's offer.
            server.put_object(TEMPLATES, dict(template, status={
                "observedGeneration": template["metadata"]["generation"],
                "rollout": {"offered": [{"node": node, "slot": 0}]}}))
            wait_for(lambda: cluster.template_state("t1") == "Applied", timeout_s=TIMEOUT_S,
                     what="t1 Applied", on_timeout=agent.log_text)

            def summary():
                meta = (server.get(HOSTNETWORKS, node) or {}).get("metadata") or {}
                return parse_summary((meta.get("annotations") or {}).get(RESULTS_ANNOTATION))
            wait_for(lambda: (summary().get("t1") or {}).get("state") == "Applied",
                     timeout_s=TIMEOUT_S, what="t1 in the summary", on_timeout=agent.log_text)
            patches = main_resource_patches(server, node)
            # Unmanaged churn: a link no template manages; published, but the summary stays.
            subprocess.run(["ip", "-n", node_ns, "link", "add", "pod7", "type", "veth",
                            "peer", "name", "pod7p"],
                           check=True)
            wait_for(lambda: any(i.get("pfName") == "pod7" for i in (
                (server.get(HOSTNETWORKS, node) or {}).get("status") or {}).get(
                    "interfaceStatus") or []), timeout_s=TIMEOUT_S, what="pod7 published",
                on_timeout=agent.log_text)
            assert main_resource_patches(server, node) == patches
            foreign = [(r.path, r.query) for r in server.requests(method="GET")
                       if about_other_nodes(r, node)]
            assert foreign == [], foreign

            # Once it leads, it reads the fleet (metadata) and counts t1 from the summary.
            assert server.delete_object(LEASES, LEADER_LEASE, NAMESPACE)
            wait_for(lambda: (((server.get(TEMPLATES, "t1") or {}).get("status") or {}).get(
                "nodes") or {}).get("applied") == 1, timeout_s=TIMEOUT_S,
                what="t1 counted by the new leader", on_timeout=agent.log_text)
            assert agent.alive(), agent.log_text()[-4000:]
        fleet_reads = [r for r in server.requests(method="GET") if about_other_nodes(r, node)]
        assert {r.path.rsplit("/", 1)[1] for r in fleet_reads} == {"nodes", HOSTNETWORKS}
