"""B9: fleet size. The elected status writer (leader) and one other agent against the fake API
server holding 100, 1,000 and 5,000 simulated nodes with realistic objects: a HostNetwork of
~34.5 KB of JSON (4 PFs, 32 VFs, 110 pod veths and their /32 routes) and a Node with 50
`status.images` entries. The simulated nodes are objects created directly in the fake's store
(their status shared, so the bench process stays small); the two agents are real processes.

Measured for each size: the leader's RSS once it has counted the fleet, its CPU at idle and while
20 HostNetworks elsewhere change their status per second (pods coming and going), the bytes it
is sent per such change (counted by the fake server), and the time from the last node's result to the
template status counting it. The other agent's bytes per change and its fleet-wide reads show
that it reads nothing about other nodes. The baseline is the leader watching whole objects
(`--leader-watch full`, the cost before issue 19) in the same run, at 100 and 1,000 nodes (at
5,000 its one list would be ~170 MB: the issue's measurement is the prior one there).
Knobs: BENCH_B9_SIZES=100,1000,5000, BENCH_B9_FULL_MAX=1000, BENCH_B9_WINDOW_S=10.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time

from common import (AgentNode, Row, add_node, env_float, env_int, fake_api, log, netns,
                    proc_stat, put_template, temp_dir)

TEMPLATE = "b9-mtu"
SIM_LABEL = {"bench": "b9-sim"}
CHANGES_PER_S = 20
SYNC_TIMEOUT_S = 240.0
LEADER_TIMEOUT_S = 60.0
COUNT_TIMEOUT_S = 60.0
SETTLE_S = 3.0
POLL_S = 0.05
RSS_GROWTH_TARGET_MIB = 16.0
BYTES_PER_CHANGE_TARGET = 1024
COUNT_TARGET_S = 10.0
MIB = 2 ** 20
FLEET_NAMESPACE = "plumber-system"
RESULTS_ANNOTATION = "plumber.k8s.pf9.io/template-results"


# -- realistic objects ----------------------------------------------------------------------------
def _mac(i: int) -> str:
    return "ee:ee:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def hostnetwork_status(variant: int) -> dict:
    """~34.5 KB: 4 PFs with 8 VFs each, 110 Calico veths with their /32 routes."""
    interfaces = []
    for pf in range(4):
        vfs = [{"id": vf, "pciAddr": f"0000:3b:0{pf}.{vf + 1}", "vfDriver": "iavf",
                "mac": _mac(pf * 100 + vf), "vlan": 0, "spoofchk": True, "trust": False}
               for vf in range(8)]
        interfaces.append({"pfName": f"ens{pf + 1}f0", "mac": _mac(pf), "mtu": 9000,
                           "pciAddr": f"0000:3b:00.{pf}", "vendorId": "8086",
                           "deviceId": "1593", "pfDriver": "ice", "kind": "device",
                           "operState": "up", "sriovEnabled": True,
                           "ipv4": {"address": [f"10.0.{pf}.5/24"]},
                           "sriovStatus": {"totalVfs": 64, "numVfs": 8, "vfs": vfs}})
    routes, routes6 = [], []
    for pod in range(110):
        name = f"cali{pod:04x}{variant:02x}a9b8c7d"
        interfaces.append({"pfName": name, "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450,
                           "kind": "veth", "operState": "up",
                           "ipv6": {"address": ["fe80::ecee:eeff:feee:eeee/64"]}})
        routes.append({"dev": name, "dst": f"192.168.{pod // 200}.{pod % 200 + 1}/32"})
        routes6.append({"dev": name, "dst": "fe80::/64"})
    routes.append({"dev": "ens1f0", "gw": "10.0.0.1"})
    return {"interfaceStatus": interfaces, "routes": {"ipv4": routes, "ipv6": routes6},
            "summary": {"interfaces": len(interfaces), "vfs": 32, "applied": 1}}


def node_object(name: str) -> dict:
    """A Node as kubelet publishes it: labels, conditions, addresses and 50 images."""
    images = [{"names": [f"registry.example.com/team/app-{i}@sha256:{i:064x}",
                         f"registry.example.com/team/app-{i}:v1.{i}.0"],
               "sizeBytes": 100_000_000 + i} for i in range(50)]
    conditions = [{"type": t, "status": "False", "reason": f"Kubelet{t}",
                   "message": f"kubelet has no {t}", "lastHeartbeatTime": "2026-12-06T12:00:00Z",
                   "lastTransitionTime": "2026-12-01T12:00:00Z"}
                  for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "m5.4xlarge", "topology.kubernetes.io/zone": "zone-a",
        "topology.kubernetes.io/region": "region-1", **SIM_LABEL}},
        "status": {"images": images, "conditions": conditions,
                   "addresses": [{"type": "InternalIP", "address": "10.1.2.3"},
                                 {"type": "Hostname", "address": name}],
                   "nodeInfo": {"kubeletVersion": "v1.36.0", "osImage": "Ubuntu 24.04 LTS",
                                "containerRuntimeVersion": "containerd://2.0.0"}}}


def summary(generation: int) -> str:
    return json.dumps([{"name": TEMPLATE, "observedGeneration": generation, "state": "Applied"}],
                      separators=(",", ":"), sort_keys=True)


class SimulatedFleet:
    """N nodes' Node and HostNetwork objects, written straight into the fake's store (versioned
    and watched like any write, without the HTTP and schema costs)."""

    def __init__(self, server, count: int):
        self.server, self.names = server, [f"sim-{i:05d}" for i in range(count)]
        self.statuses = [hostnetwork_status(0), hostnetwork_status(1)]
        self.status_bytes = len(json.dumps(self.statuses[0]))
        self.node_bytes = len(json.dumps(node_object(self.names[0] if self.names else "x")))
        for name in self.names:
            self._commit("nodes", node_object(name), "ADDED")
            self._commit("hostnetworks", {
                "apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
                "metadata": {"name": name, "annotations": {RESULTS_ANNOTATION: summary(1)}},
                "spec": {}, "status": self.statuses[0]}, "ADDED")

    def _commit(self, resource: str, obj: dict, event_type: str) -> None:
        from tests.fakeapi.server import RESOURCE_TYPES
        server = self.server
        with server._lock:
            if event_type == "ADDED":
                server._fill_new_meta(RESOURCE_TYPES[resource], obj)
            server._commit(resource, ("", obj["metadata"]["name"]), event_type, obj)

    def _modify(self, name: str, edit) -> None:
        from tests.fakeapi.server import HOSTNETWORKS
        with self.server._lock:
            old = self.server._objects[HOSTNETWORKS][("", name)]
            new = {**old, "metadata": dict(old["metadata"])}
            edit(new)
            self._commit(HOSTNETWORKS, new, "MODIFIED")

    def churn(self, seconds: float, rng: random.Random) -> int:
        """CHANGES_PER_S status changes per second on random nodes (a pod veth renamed)."""
        changes, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            name = rng.choice(self.names)

            def edit(obj):
                obj["status"] = self.statuses[1] if obj["status"] is self.statuses[0] \
                    else self.statuses[0]
            self._modify(name, edit)
            changes += 1
            time.sleep(max(0.0, started + changes / CHANGES_PER_S - time.monotonic()))
        return changes

    def report(self, generation: int) -> float:
        """Every node's result for `generation`; returns when the last one was written."""
        text = summary(generation)
        for name in self.names:
            def edit(obj):
                obj["metadata"]["annotations"] = {RESULTS_ANNOTATION: text}
            self._modify(name, edit)
        return time.monotonic()


# -- measuring ----------------------------------------------------------------------------------
def fleet_wide(record) -> bool:
    """A list or watch of every Node or every HostNetwork (only the leader makes them)."""
    return (record.path.endswith("/nodes") or record.path.endswith("/hostnetworks")) \
        and "fieldSelector" not in record.query


def bytes_sent(server) -> tuple[int, int]:
    """(bytes the fake sent on fleet-wide reads, on every other GET) so far."""
    fleet = other = 0
    for record in server.requests(method="GET"):
        if fleet_wide(record):
            fleet += record.bytes_sent
        else:
            other += record.bytes_sent
    return fleet, other


def cpu_percent(pid: int, seconds: float, during=None) -> tuple[float, object]:
    cpu0, _ = proc_stat(pid)
    t0 = time.monotonic()
    result = during() if during else time.sleep(seconds)
    cpu1, _ = proc_stat(pid)
    return 100.0 * (cpu1 - cpu0) / max(1e-6, time.monotonic() - t0), result


def wait_for(predicate, timeout_s: float, what: str, agents=()) -> float:
    started = time.monotonic()
    while not predicate():
        for agent in agents:
            agent.check_alive()
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"B9: {what} not within {timeout_s:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic()


def counted(server, generation: int, expected: int) -> bool:
    from tests.fakeapi.server import TEMPLATES
    status = (server.get(TEMPLATES, TEMPLATE) or {}).get("status") or {}
    nodes = status.get("nodes") or {}
    return status.get("observedGeneration") == generation and nodes.get("applied") == expected \
        and nodes.get("matching") == expected


def leader_is(server, name: str) -> bool:
    from tests.fakeapi.server import LEASES
    lease = server.get(LEASES, "plumber-status-writer", FLEET_NAMESPACE) or {}
    return (lease.get("spec") or {}).get("holderIdentity") == name


def fleet_wide_reads(server, since: float) -> int:
    """List and watch requests of every Node or every HostNetwork (no field selector)."""
    return sum(1 for r in server.requests(method="GET") if r.time >= since and fleet_wide(r))


def measure(size: int, mode: str, window_s: float) -> dict:
    rng = random.Random(size)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(temp_dir(f"bench-b9-{size}-{mode}-"))
        server, kubeconfig = stack.enter_context(fake_api(work))
        fleet = SimulatedFleet(server, size - 2)
        put_template(server, TEMPLATE, {"nodeSelector": SIM_LABEL,
                                        "interfaceConfig": [{"name": "eth0", "mtu": 1400}]})
        agents = []
        for role in ("leader", "other"):
            name = f"b9-{role}"
            add_node(server, name)
            ns = stack.enter_context(netns(f"b9{role[0]}-"))
            agent = AgentNode(name=name, ns=ns, workdir=work, kubeconfig=kubeconfig,
                              extra_args=("--leader-watch", mode))
            stack.callback(agent.stop)
            agents.append(agent)
            if role == "leader":
                wait_for(lambda: leader_is(server, name), LEADER_TIMEOUT_S, "leadership",
                         agents)
        leader, other = agents
        since = time.time()
        wait_for(lambda: counted(server, 1, size - 2), SYNC_TIMEOUT_S, "first count", agents)
        time.sleep(SETTLE_S)
        _, rss = proc_stat(leader.proc.pid)
        idle_cpu, _ = cpu_percent(leader.proc.pid, window_s)
        bytes0 = bytes_sent(server)
        other_cpu0, _ = proc_stat(other.proc.pid)
        churn_cpu, changes = cpu_percent(leader.proc.pid, window_s,
                                         lambda: fleet.churn(window_s, rng))
        other_cpu1, _ = proc_stat(other.proc.pid)
        time.sleep(1.0)  # the last events arrive
        per_change = [(a - b) / max(1, changes) for a, b in zip(bytes_sent(server), bytes0)]
        reads = fleet_wide_reads(server, since - 60)
        # A new generation; every simulated node reports it; time until the status counts it.
        put_template(server, TEMPLATE, {"nodeSelector": SIM_LABEL,
                                        "interfaceConfig": [{"name": "eth0", "mtu": 1450}]})
        last = fleet.report(2)
        counted_at = wait_for(lambda: counted(server, 2, size - 2), COUNT_TIMEOUT_S,
                              "the new generation's count", agents)
        _, rss_after = proc_stat(leader.proc.pid)
        list_bytes = max((r.bytes_sent for r in server.requests(method="GET")
                          if fleet_wide(r) and r.path.endswith("/hostnetworks") and not r.watch),
                         default=0)
        result = {"size": size, "mode": mode, "rss_mib": rss / MIB,
                  "rss_after_mib": rss_after / MIB, "idle_cpu": idle_cpu,
                  "churn_cpu": churn_cpu, "changes": changes, "leader_bytes": per_change[0],
                  "other_bytes": per_change[1],
                  "other_cpu": 100.0 * (other_cpu1 - other_cpu0) / window_s,
                  "count_s": counted_at - last, "fleet_reads": reads,
                  "hostnetwork_bytes": fleet.status_bytes, "node_bytes": fleet.node_bytes,
                  "list_bytes": list_bytes}
    log(f"B9: {json.dumps(result)}")
    return result


def run_bench() -> list[Row]:
    sizes = [int(s) for s in os.environ.get("BENCH_B9_SIZES", "100,1000,5000").split(",") if s]
    full_max = env_int("BENCH_B9_FULL_MAX", 1000)
    window_s = env_float("BENCH_B9_WINDOW_S", 10.0)
    new = {size: measure(size, "metadata", window_s) for size in sizes}
    old = {size: measure(size, "full", window_s) for size in sizes if size <= full_max}
    rows = []
    base = "--leader-watch full"
    for size in sizes:
        m, f = new[size], old.get(size) or {}
        rows += [
            Row(id="B9", measure=f"{size} nodes: the leader's one LIST of all HostNetworks",
                value=m["list_bytes"] / 1e6, unit="MB", baseline=f["list_bytes"] / 1e6 if f
                else None, baseline_label=base if f else ""),
            Row(id="B9", measure=f"{size} nodes: leader RSS once counted",
                value=m["rss_mib"], unit="MiB", baseline=f.get("rss_mib"),
                baseline_label=base if f else ""),
            Row(id="B9", measure=f"{size} nodes: leader CPU at idle", value=m["idle_cpu"],
                unit="%", baseline=f.get("idle_cpu"), baseline_label=base if f else ""),
            Row(id="B9", measure=f"{size} nodes: leader CPU, {CHANGES_PER_S} HostNetwork "
                                 f"changes/s elsewhere", value=m["churn_cpu"], unit="%",
                baseline=f.get("churn_cpu"), baseline_label=base if f else ""),
            Row(id="B9", measure=f"{size} nodes: bytes the leader reads per unmanaged change "
                                 f"elsewhere", value=m["leader_bytes"], unit="B",
                baseline=f.get("leader_bytes"), baseline_label=base if f else "",
                target=f"<= {BYTES_PER_CHANGE_TARGET}",
                ok=m["leader_bytes"] <= BYTES_PER_CHANGE_TARGET),
            Row(id="B9", measure=f"{size} nodes: last node's result to the template's count",
                value=m["count_s"], unit="s", baseline=f.get("count_s"),
                baseline_label=base if f else "", target=f"<= {COUNT_TARGET_S:.0f} s",
                ok=m["count_s"] <= COUNT_TARGET_S),
            Row(id="B9", measure=f"{size} nodes: bytes both agents' own watches get per change "
                                 f"elsewhere (fleet-wide lists/watches: {m['fleet_reads']}, "
                                 f"all the leader's: 4, +2 per relist)",
                value=m["other_bytes"], unit="B"),
        ]
    if len(sizes) >= 2:
        low, high = new[sizes[0]], new[sizes[-1]]
        growth = high["rss_mib"] - low["rss_mib"]
        prior = "issue 19: +141 MiB from ~300 to 1,000 nodes"
        old_growth = None
        if sizes[0] in old and sizes[-1] in old:
            old_growth = old[sizes[-1]]["rss_mib"] - old[sizes[0]]["rss_mib"]
        rows.append(Row(
            id="B9", measure=f"leader RSS growth {sizes[0]} -> {sizes[-1]} nodes (ratio "
                             f"{high['rss_mib'] / low['rss_mib']:.2f}x)",
            value=growth, unit="MiB", baseline=old_growth,
            baseline_label=base if old_growth is not None else prior,
            target=f"<= {RSS_GROWTH_TARGET_MIB:.0f} MiB", ok=growth <= RSS_GROWTH_TARGET_MIB))
        rows.append(Row(id="B9", measure=f"object sizes: HostNetwork {low['hostnetwork_bytes']} B, "
                                         f"Node {low['node_bytes']} B of JSON",
                        value=low["hostnetwork_bytes"] / 1000, unit="KB"))
    return rows


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
