"""A real agent process whose leader election is forbidden by RBAC (the fake API server's
`deny`, with the authorization filter's answer): the failure is named in the node's
HostNetwork status, as a Warning Event (events.k8s.io/v1, a series when it repeats), and in
/metrics; once RBAC allows it, the agent is elected, the condition goes away and a template
applies (the rollout slots are Leases too: while forbidden, no template can be claimed).

Invariant: none of this stops the agent.
"""
from __future__ import annotations

import re
import urllib.request

import pytest

from tests.support.agent_proc import agent_argv, agent_process
from tests.support.cluster import ClusterFixture
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

CONVERGE_S = 60.0
NAMESPACE = "plumber-system"
METRICS_TIMEOUT_S = 10.0


def conditions(cluster) -> list[dict]:
    return ((cluster.hostnetwork() or {}).get("status") or {}).get("conditions") or []


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=METRICS_TIMEOUT_S) as response:
        return response.read().decode()


def test_a_forbidden_leader_election_is_named_then_clears(tmp_path, node_ns, static_sysfs):
    port = free_port()
    with ClusterFixture(tmp_path) as cluster:
        cluster.server.deny("create", "leases", group="coordination.k8s.io",
                            namespace=NAMESPACE)
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                          kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                          extra=("--no-monitor", "--metrics-addr", f"127.0.0.1:{port}"))
        with agent_process(argv, tmp_path / "agent.log") as agent:

            def named():
                found = conditions(cluster)
                assert len(found) == 1, found
                condition = found[0]
                assert condition["type"] == "LeaderElectionFailing"
                assert condition["status"] == "True" and condition["reason"] == "Forbidden"
                return condition
            condition = wait_for(named, timeout_s=CONVERGE_S, what="LeaderElectionFailing",
                                 on_timeout=agent.log_text)
            assert condition["message"].startswith(
                "cannot take part in the status writer's leader election: permission denied: "
                f"create leases.coordination.k8s.io {NAMESPACE}/plumber-status-writer")
            assert "Role plumber-agent in namespace 'plumber-system'" in condition["message"]
            def warned():
                found = [e for e in cluster.server.list("events")
                         if e.get("reason") == "LeaderElectionFailing"]
                assert found, cluster.server.list("events")
                return found
            found = wait_for(warned, timeout_s=CONVERGE_S, what="the Warning Event")
            assert len(found) == 1, found  # once: the reason did not change
            event = found[0]
            assert (event["type"], event["action"], event["reportingComponent"]) == (
                "Warning", "LeaderElection", "plumber.k8s.pf9.io/agent")
            assert event["eventTime"] and event["involvedObject"]["name"] == cluster.node
            assert event["message"].endswith(condition["message"])
            text = metrics(port)
            failures = re.search(r'^plumber_leader_election_failures_total\{reason="Forbidden"\} '
                                 r"(\d+)", text, re.M)
            assert failures and int(failures.group(1)) >= 1, text
            assert re.search(r'^plumber_api_errors_total\{operation="leader_election",'
                             r'reason="Forbidden"\} \d+', text, re.M), text

            cluster.server.allow_all()
            wait_for(lambda: not conditions(cluster), timeout_s=CONVERGE_S,
                     what="the condition gone", on_timeout=agent.log_text)
            assert cluster.server.get("leases", "plumber-status-writer", NAMESPACE)
            cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
            wait_for(lambda: cluster.template_state("t1") == "Applied", timeout_s=CONVERGE_S,
                     what="t1 Applied", on_timeout=agent.log_text)
            assert agent.alive(), agent.log_text()[-4000:]
