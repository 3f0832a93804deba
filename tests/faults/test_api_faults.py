"""API-server faults against a real agent process managing a throw-away namespace.

Each test states its invariant. Common to all: the agent process never exits (no crash loop),
and once the fault is over the host and the HostNetwork status converge to the templates as
they are NOW, with changes made during the outage applied and deletions cleaned up.
"""
from __future__ import annotations

import time

import pytest

from tests.support.agent_proc import agent_argv, agent_process
from tests.support.cluster import ClusterFixture
from tests.helpers.netns import ip_json
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

CONVERGE_S = 60.0
# The agent's default inactivity watchdog (kube/reflector.py INACTIVITY_TIMEOUT_S = 80 s,
# --watch-inactivity-timeout-s) plus one backoff and a relist: the stall test runs the default
# users run, and this bound is what it has to wait.
WATCHDOG_BOUND_S = 80.0 + 40.0
# The link test's watchdog: a watch whose TCP flow died with the link is replaced this soon
# after the link is back, not up to 80 s after it went down (a race with CONVERGE_S).
LINK_WATCHDOG_S = 10.0


def mtu(ns, ifname):
    return ip_json(ns, "link", "show", "dev", ifname)[0]["mtu"]


def addrs(ns, ifname):
    return sorted(f"{a['local']}/{a['prefixlen']}" for link in ip_json(ns, "addr", "show",
                                                                         "dev", ifname)
                  for a in link.get("addr_info", []) if a.get("family") == "inet")


@pytest.fixture
def cluster(tmp_path):
    with ClusterFixture(tmp_path) as fixture:
        yield fixture


@pytest.fixture
def agent(tmp_path, node_ns, static_sysfs, cluster):
    argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                      kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                      extra=("--resync-period-s", "2"))
    with agent_process(argv, tmp_path / "agent.log") as proc:
        yield proc


def converged(cluster, agent, name, generation=None, state="Applied", timeout_s=CONVERGE_S):
    wait_for(lambda: cluster.template_state(name, generation=generation) == state, timeout_s=timeout_s,
             what=f"{name} (generation {generation}) {state}",
             on_timeout=lambda: f"status={cluster.template_statuses()}\n{agent.log_text()}")


def test_api_server_killed_and_restarted(cluster, agent, node_ns):
    """Invariant: with the API server gone the agent keeps running (no crash loop, exit code
    never set) and leaves the host as it was; a template edited while it was down is applied
    after the restart, without restarting the agent."""
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
    converged(cluster, agent, "t1")
    assert mtu(node_ns, "eth1") == 1400
    cluster.kill()
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]})
    # Outage: several reconnect attempts (backoff) and resyncs happen; the host stays put.
    wait_for(lambda: "retrying in" in agent.log_text(), timeout_s=30, what="a backoff while the API is down",
             on_timeout=agent.log_text)
    assert agent.alive(), agent.log_text()[-4000:]
    assert mtu(node_ns, "eth1") == 1400
    cluster.restart()
    converged(cluster, agent, "t1", generation=2)
    assert mtu(node_ns, "eth1") == 1300
    assert agent.alive()


def test_compaction_410_during_outage_create_edit_delete(cluster, agent, node_ns):
    """Invariant: a create, an edit and a delete made while the agent was disconnected, with
    history compacted meanwhile (the agent's resourceVersion is answered with 410), all take
    effect: the new template applies, the edit applies, and the deleted template's change is
    undone (eth2 back to its MTU before the agent touched it) -- nothing is lost."""
    original_eth2 = mtu(node_ns, "eth2")
    cluster.put_template("keep", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
    cluster.put_template("gone", {"interfaceConfig": [{"name": "eth2", "mtu": 1280}]})
    converged(cluster, agent, "keep")
    converged(cluster, agent, "gone")
    assert mtu(node_ns, "eth2") == 1280
    cluster.kill()
    cluster.put_template("new", {"interfaceConfig": [{"name": "eth1",
                                                      "ipv4": {"address": ["10.44.0.1/24"]}}]})
    cluster.put_template("keep", {"interfaceConfig": [{"name": "eth1", "mtu": 1350}]})
    cluster.delete_template("gone")
    cluster.server.compact()
    cluster.restart()
    converged(cluster, agent, "new")
    converged(cluster, agent, "keep", generation=2)
    wait_for(lambda: "gone" not in cluster.template_statuses(), timeout_s=CONVERGE_S, what="gone dropped",
             on_timeout=agent.log_text)
    wait_for(lambda: mtu(node_ns, "eth2") == original_eth2, timeout_s=CONVERGE_S, what="eth2 MTU restored",
             on_timeout=agent.log_text)
    assert mtu(node_ns, "eth1") == 1350 and addrs(node_ns, "eth1") == ["10.44.0.1/24"]
    assert agent.alive()


def test_429_storm_with_retry_after(cluster, agent, node_ns):
    """Invariant: under a storm of 429s with Retry-After the agent waits at least as long as it
    is told between attempts on the same endpoint (it does not hammer the server), stays up,
    and converges once the storm is over."""
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
    converged(cluster, agent, "t1")
    storm_start = len(cluster.server.request_log)
    # Enough to span several attempts of both watches, few enough that the agent's own backoff
    # (0.8 s doubling to 30 s) does not stretch the storm past the convergence bound.
    cluster.server.fail_next(8, 429, retry_after=2)
    cluster.server.drop_streams()  # force reconnects into the storm
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]})
    converged(cluster, agent, "t1", generation=2, timeout_s=120)
    assert mtu(node_ns, "eth1") == 1300
    storm = [r for r in cluster.server.request_log[storm_start:] if r.status == 429]
    assert storm, "the storm never reached the agent"
    by_endpoint: dict[tuple, list[float]] = {}
    for r in storm:
        if r.method == "GET":  # list/watch loops; status writes are retried by the queue
            # One reflector per (path, watch, selectors): the node's own Node and, while this
            # agent is the status writer, all Nodes are two loops on /api/v1/nodes.
            key = (r.path, r.watch, r.query.get("fieldSelector"), r.query.get("labelSelector"))
            by_endpoint.setdefault(key, []).append(r.time)
    for endpoint, times in by_endpoint.items():
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(gap >= 1.9 for gap in gaps), f"{endpoint}: Retry-After 2 not honoured: {gaps}"
    assert agent.alive()


def test_api_server_stalled_longer_than_the_watchdog(cluster, agent, node_ns):
    """Invariant: a stalled API server (watches open but silent: no events, no bookmarks, like
    SIGSTOP or a half-open TCP flow) is detected by the inactivity watchdog -- the agent opens a
    new watch on its own while the stall lasts -- and a change made during the stall is applied
    once the server answers again. Bounded by the agent's default watchdog (80 s)."""
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
    converged(cluster, agent, "t1")
    cluster.server.stall_streams(True)
    stalled_at = time.monotonic()
    watches_before = len(cluster.server.requests(watch=True, path_contains="hostnetworktemplates"))
    cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]})
    try:
        wait_for(lambda: len(cluster.server.requests(watch=True, path_contains=
                                                      "hostnetworktemplates")) > watches_before,
                 timeout_s=WATCHDOG_BOUND_S, what="a new templates watch opened by the watchdog during the stall",
                 on_timeout=agent.log_text)
        assert "presumed dead" in agent.log_text() or "closing it" in agent.log_text()
        assert agent.alive()
    finally:
        cluster.server.stall_streams(False)
    converged(cluster, agent, "t1", generation=2)
    assert mtu(node_ns, "eth1") == 1300
    print(f"stall detected and recovered after {time.monotonic() - stalled_at:.0f}s")


def test_link_to_the_api_server_down(tmp_path, node_ns, static_sysfs):
    """Invariant: when the network path to the API server goes down (its veth down: connects
    time out instead of being refused) the agent survives, keeps the host as it is, and picks
    up a change made meanwhile once the link is back.

    Topology: the fake API server listens on 10.201.0.1 inside a second namespace; the agent runs
    inside the node namespace (`ip netns exec`), reaching it over veth apil0/apil1."""
    from tests.faults.nsnet import ApiNamespace
    with ApiNamespace(node_ns, node_ifname="apil0", node_addr="10.201.0.2/24",
                      api_addr="10.201.0.1/24") as api_ns:
        with api_ns.cluster(tmp_path) as cluster:
            argv = api_ns.in_node(agent_argv(
                netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                extra=("--resync-period-s", "2",
                       "--watch-inactivity-timeout-s", str(LINK_WATCHDOG_S))))
            with agent_process(argv, tmp_path / "agent.log") as agent:
                cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
                converged(cluster, agent, "t1")
                api_ns.link_down()
                seen = len(agent.log_text())  # noticed from now on: "presumed dead" may be older
                cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]})
                wait_for(lambda: "retrying in" in agent.log_text()[seen:] or
                         "presumed dead" in agent.log_text()[seen:], timeout_s=WATCHDOG_BOUND_S,
                         what="the agent noticing the dead link", on_timeout=agent.log_text)
                assert agent.alive() and mtu(node_ns, "eth1") == 1400
                api_ns.link_up()
                converged(cluster, agent, "t1", generation=2)
                assert mtu(node_ns, "eth1") == 1300


def test_stalled_slot_renewal_starts_no_host_action(cluster, tmp_path, node_ns, static_sysfs):
    """Invariant (fencing, docs/rollout.md): an agent whose rollout slot is not confirmed by the
    API server starts no host action of the template. The agent restarts holding a slot (its
    Lease from before the restart) while the server holds every Lease PUT of this node
    (`stall_writes`: a slow server or etcd): it reports the template Failed with the reason and
    leaves the host as it is; once the stall ends its renewal goes through and it applies.
    Deterministic: nothing here races a timer (the default 30 s slot lasts longer than the
    wait for the first pass)."""
    from plumber_agent.fleet import rollout
    from plumber_agent.fleet.slots import micro_time
    from plumber_agent.models.parse import template_from_object
    from plumber_agent.models.status import TemplateState
    from tests.fakeapi.server import LEASES, TEMPLATES

    before = mtu(node_ns, "eth1")
    cluster.put_template("fenced", {"interfaceConfig": [{"name": "eth1", "mtu": before - 100}],
                                    "rollout": {"maxUnavailable": 1}})
    template = template_from_object(cluster.server.get(TEMPLATES, "fenced"))
    now = micro_time(time.time())
    cluster.server.put_object(LEASES, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": rollout.slot_name("fenced", 0), "namespace": "plumber-system",
                     "labels": {rollout.LEASE_ROLE_LABEL: rollout.SLOT_ROLE,
                                rollout.MANAGED_BY_LABEL: rollout.MANAGED_BY},
                     "annotations": {rollout.TEMPLATE_ANNOTATION: "fenced",
                                     rollout.TEMPLATE_UID_ANNOTATION: template.uid,
                                     rollout.GENERATION_ANNOTATION: str(template.generation),
                                     rollout.SPEC_HASH_ANNOTATION:
                                         rollout.template_spec_hash(template),
                                     rollout.PHASE_ANNOTATION: TemplateState.APPLYING}},
        "spec": {"holderIdentity": cluster.node, "leaseDurationSeconds": 30,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0}})
    stall = cluster.server.stall_writes("PUT", "/leases/", holder=cluster.node)
    argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                      kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                      extra=("--namespace", "plumber-system"))
    with agent_process(argv, tmp_path / "agent.log") as agent:
        def fenced():
            entry = cluster.template_statuses().get("fenced") or {}
            return entry.get("state") == "Failed" and "not confirmed by the API server" \
                in (entry.get("message") or "")
        wait_for(fenced, timeout_s=CONVERGE_S, what="fenced reported Failed with the reason",
                 on_timeout=lambda: f"{cluster.template_statuses()}\n{agent.log_text()}")
        wait_for(lambda: stall.stalled >= 1, timeout_s=CONVERGE_S,
                 what="the agent's slot renewal held in the server")
        assert mtu(node_ns, "eth1") == before, "a host action started on an unconfirmed slot"
        assert "not started" in agent.log_text()
        stall.release()
        converged(cluster, agent, "fenced")
        assert mtu(node_ns, "eth1") == before - 100
        assert agent.alive()

