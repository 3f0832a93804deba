"""Pod churn on a simulated node (issue 19): pods' veths (`cali*`, their other ends in a pod
namespace) and /32 routes come and go, and the agent neither runs a pass nor writes its
HostNetwork for them; a managed change made during the churn is written at once, and that write
carries the pods present then.

Counted, not timed: the writes come from the fake API server's request log and the agent's
passes and classified events from its /metrics. The agent runs with
--unmanaged-publish-interval-s 300, far longer than this test lasts, so a HostNetwork write
before it ends can only be one the managed change caused (an ordering, not a duration).
"""
from __future__ import annotations

import os
import re
import time
import urllib.request
from typing import Iterator

import pytest

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, template
from tests.helpers.netns import ip, ipv6_settled, netns
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

INTERVAL_S = 300  # --unmanaged-publish-interval-s: no unmanaged write can happen in this test
AGENT_ARGS = ("--unmanaged-publish-interval-s", str(INTERVAL_S), "--resync-period-s", "600")
NIC = "eno1"
PODS = 24  # started one after the other; STEADY_PODS alive at a time
STEADY_PODS = 4
EVENTS_PER_POD = 2  # at least: its veth appears, its /32 route is added
METRICS_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    """One simulated node of its own (no Open vSwitch) whose agent holds unmanaged changes for
    INTERVAL_S and resyncs rarely (so every pass counted below has a cause in the test)."""
    from tests.e2e.harness import LocalCluster, local_skip_reason
    if (os.environ.get("E2E_TARGET") or "local").strip().lower() != "local":
        pytest.skip("the churn scenario starts its own LOCAL node (counts the fake API server's "
                    "requests)")
    reason = local_skip_reason()
    if reason:
        pytest.skip(reason)
    instance = LocalCluster.start(count=1, agent_args=AGENT_ARGS, ovs=False)
    try:
        yield instance
    finally:
        instance.close()


def _metrics(node) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics",
                                timeout=METRICS_TIMEOUT_S) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^([a-z_]+) ([0-9.eE+-]+)$", text, re.MULTILINE)}


def _status_writes(cluster, node, since: float) -> list:
    return [r for r in cluster.server.requests(method="PATCH",
                                               path_contains=f"/hostnetworks/{node.name}/status")
            if r.time >= since]


def _hostnetwork_status(cluster, node) -> dict:
    return (cluster.api.hostnetwork(node.name) or {}).get("status") or {}


def _applied(cluster, node, name: str, generation: int, mtu: int):
    status = _hostnetwork_status(cluster, node)
    entry = next((t for t in status.get("templates") or [] if t["name"] == name), {})
    iface = next((i for i in status.get("interfaceStatus") or [] if i["pfName"] == NIC), {})
    assert entry.get("state") == "Applied" and entry.get("observedGeneration") == generation, entry
    assert iface.get("mtu") == mtu, iface
    return status


def test_pod_churn_is_coalesced_while_a_managed_change_is_written_at_once(cluster):
    node = cluster.nodes[0]
    api = cluster.api
    wait_for(lambda: _hostnetwork_status(cluster, node), timeout_s=CONVERGE_TIMEOUT_S,
             what="the first HostNetwork")
    # The node's link-local addresses settled first: the kernel's "address added" at the end
    # of IPv6 duplicate address detection (about a second after the node's links came up) is
    # an event on the managed NIC, and its pass must not be counted as the pods'.
    wait_for(lambda: ipv6_settled(node.netns, (NIC,)), timeout_s=CONVERGE_TIMEOUT_S,
             what=f"no tentative IPv6 address on {NIC}")
    # No rollout slot: a node that waited for its slot's offer also has a fallback wake-up
    # queued 30-61.5 s on (rollout.py), a pass that would land in the churn window on a slow
    # machine. This test is about the pods, not the rollout.
    obj = api.create_template(template("churn-mtu", {"interfaceConfig": [{"name": NIC, "mtu": 1400}],
                                                     "rollout": {"maxUnavailable": "100%"}},
                                       node_selector={"kubernetes.io/hostname": node.name}))
    try:
        wait_for(lambda: _applied(cluster, node, "churn-mtu", obj["metadata"]["generation"], 1400),
                 timeout_s=CONVERGE_TIMEOUT_S, what="the template applied")
        wait_for(lambda: node.ip_json("link", "show", NIC)[0]["mtu"] == 1400,
                 timeout_s=CONVERGE_TIMEOUT_S, what="the MTU on the host")
        with netns() as pods_ns:
            _churn_then_change(cluster, node, pods_ns, obj)
    finally:
        api.delete_template("churn-mtu")
        wait_for(lambda: node.ip_json("link", "show", NIC)[0]["mtu"] == 1500,
                 timeout_s=CONVERGE_TIMEOUT_S, what="the MTU put back after the template went")


def _churn_then_change(cluster, node, pods_ns: str, obj: dict) -> None:
    before = _metrics(node)
    since = time.time()
    alive: list[str] = []
    for n in range(PODS):
        name = f"cali{n:011x}"
        ip(node.netns, "-batch", "-", input_text="\n".join([
            f"link add {name} type veth peer name p{n} netns {pods_ns}",
            f"link set {name} up",
            f"route add 10.244.0.{n + 1}/32 dev {name}"]) + "\n")
        alive.append(name)
        if len(alive) > STEADY_PODS:
            ip(node.netns, "link", "del", alive.pop(0))

    def events_seen():
        seen = _metrics(node)["plumber_kernel_events_unmanaged_total"]
        assert seen - before.get("plumber_kernel_events_unmanaged_total", 0) >= PODS * EVENTS_PER_POD, seen
        return True
    wait_for(events_seen, timeout_s=CONVERGE_TIMEOUT_S, what="the agent saw the pods' events")
    after_churn = _metrics(node)
    passes = after_churn["plumber_reconciles_total"] - before["plumber_reconciles_total"]
    assert passes == 0, f"{passes} reconcile passes for pod churn alone"
    assert _status_writes(cluster, node, since) == []  # held: the interval is INTERVAL_S
    assert not [i for i in _hostnetwork_status(cluster, node)["interfaceStatus"]
                if i["pfName"].startswith("cali")]  # the published status predates the pods

    # A managed change now is written at once, and carries the pods held until then.
    changed = cluster.api.patch_template("churn-mtu", {"spec": {"interfaceConfig": [
        {"name": NIC, "mtu": 1450}]}})
    status = wait_for(lambda: _applied(cluster, node, "churn-mtu",
                                       changed["metadata"]["generation"], 1450),
                      timeout_s=CONVERGE_TIMEOUT_S, what="the managed change written")
    writes = _status_writes(cluster, node, since)
    assert 1 <= len(writes) <= 2, [(r.method, r.path) for r in writes]  # result (+ host change)
    listed = {i["pfName"] for i in status["interfaceStatus"] if i["pfName"].startswith("cali")}
    assert listed == set(alive)
    routes = {r.get("dst") for r in status["routes"]["ipv4"] if (r.get("dev") or "").startswith("cali")}
    assert routes == {f"10.244.0.{int(name[4:], 16) + 1}/32" for name in alive}
    after = _metrics(node)
    assert after["plumber_reconciles_total"] - after_churn["plumber_reconciles_total"] >= 1
