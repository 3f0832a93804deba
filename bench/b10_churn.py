"""B10: pod churn on the busy node (1,000 links, 10k routes, one applied template): one pod
veth with its /32 route up and one down every second, as Calico does, for BENCH_B10_S seconds
(default 60, the issue's minute). Status writes, full passes, the agent's CPU, and the repair
time of a managed drift (the template's MTU changed with `ip`) made half-way through the churn.

Why: every pod start and stop is a handful of kernel events. Before issue 19 each caused a full
pass (~150 ms here) and a HostNetwork write: 61 writes and 62 passes a minute per node. Now an
event about nothing a template manages or depends on is only published, at most once per
--unmanaged-publish-interval-s (default 60 s). The baseline is the same agent, the same churn
and the same drifts in the same run with `--unmanaged-publish-interval-s 0` (every change
published at once, as before). Pods' other ends live in a namespace of their own, like a pod's.
The agent runs with the DaemonSet's in-cluster configuration (common.py `in_pod_argv`); its
resident memory is sampled every second of the churn (the DaemonSet's memory request is sized
on the p95).
"""
from __future__ import annotations

import collections
import contextlib
import time

from b2_latency import IFNAME, KernelProbe, spec_for, status_has
from b4_idle import _metrics, restart_agent
from common import (AgentNode, Row, busy_node, env_float, free_port, ip_batch, log, netns,
                    percentile, proc_stat, put_template, status_patches)

NODE = "bench-b2"  # B2's template helpers select this node
MTU, ADDRESS = 1450, "198.18.7.1/24"
DRIFT_MTU = 1300
WINDOW_S = 60.0
STEADY_PODS = 10  # pods alive at any time: each second the oldest goes, a new one comes
DRIFT_AT = (0.5,)  # fractions of the window at which the managed MTU drifts
TICK_S = 1.0
SETTLE_S = 3.0
REPAIR_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0
POLL_S = 0.001
WRITES_TARGET_PER_MIN = 2
CPU_TARGET_PCT = 1.0
REPAIR_TARGET_S = 1.0
INTERVAL_S = 60.0  # the agent's default --unmanaged-publish-interval-s
HELD_WRITE_TIMEOUT_S = 120.0
MIB = 1024 * 1024


class Pods:
    """Pod veths `caliNNN` (the host end, in the node's namespace) with their /32 routes."""

    def __init__(self, ns: str, pods_ns: str):
        self.ns, self.pods_ns = ns, pods_ns
        self.alive: collections.deque = collections.deque()
        self.started = 0

    def _up(self) -> list[str]:
        n = self.started
        self.started += 1
        name = f"cali{n:011x}"
        self.alive.append(name)
        return [f"link add {name} type veth peer name p{n} netns {self.pods_ns}",
                f"link set {name} up",
                f"route add 10.244.{(n >> 8) & 255}.{n & 255}/32 dev {name}"]

    def fill(self, count: int) -> None:
        ip_batch(self.ns, [c for _ in range(count) for c in self._up()])

    def churn(self) -> None:
        """One pod up, the oldest down (its veth and route go with it)."""
        ip_batch(self.ns, [*self._up(), f"link del {self.alive.popleft()}"])


def _drift(ns: str, probe: KernelProbe, node: AgentNode) -> float:
    started = time.time()
    ip_batch(ns, [f"link set {IFNAME} mtu {DRIFT_MTU}"])
    deadline = time.monotonic() + REPAIR_TIMEOUT_S
    while probe.mtu(IFNAME) != MTU:
        node.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"B10: drift not repaired within {REPAIR_TIMEOUT_S} s")
        time.sleep(POLL_S)
    return time.time() - started


def _window(ns: str, server, node: AgentNode, port: int, pods: Pods, probe: KernelProbe,
            window_s: float) -> dict:
    """Churn for `window_s`; what the agent did meanwhile."""
    time.sleep(SETTLE_S)
    cpu0, _ = proc_stat(node.proc.pid)
    m0 = _metrics(port)
    started = time.time()
    drift_ticks = {int(window_s * f) for f in DRIFT_AT}
    repairs = []
    rss = []
    for tick in range(int(window_s / TICK_S)):
        rss.append(proc_stat(node.proc.pid)[1])
        pods.churn()
        if tick in drift_ticks:
            repairs.append(_drift(ns, probe, node))
        node.check_alive()
        time.sleep(max(0.0, started + (tick + 1) * TICK_S - time.time()))
    elapsed = time.time() - started
    cpu1, _ = proc_stat(node.proc.pid)
    m1 = _metrics(port)
    writes = len([r for r in status_patches(server, NODE, started) if r.status and r.status < 300])

    def delta(name):
        return m1.get(name, 0) - m0.get(name, 0)
    return {"started": started, "elapsed": elapsed, "writes": writes, "passes": delta("plumber_reconciles_total"),
            "cpu_pct": (cpu1 - cpu0) / elapsed * 100.0, "repair_s": max(repairs),
            "unmanaged": delta("plumber_kernel_events_unmanaged_total"), "rss": rss,
            "pass_s": delta("plumber_reconcile_duration_seconds_sum")}


def _held_write_after_s(server, node: AgentNode, started: float) -> float:
    """Seconds from the last status write before the churn to the first one after it began:
    the held pod changes going out once the interval has passed."""
    def done(since=0.0):
        return [r.time for r in status_patches(server, NODE, since) if r.status and r.status < 300]
    before = max(t for t in done() if t < started)
    deadline = time.monotonic() + HELD_WRITE_TIMEOUT_S
    while not done(started):
        node.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"B10: the held pod changes were not written within "
                               f"{HELD_WRITE_TIMEOUT_S} s")
        time.sleep(0.1)
    return min(done(started)) - before


def run_bench() -> list[Row]:
    window_s = env_float("BENCH_B10_S", WINDOW_S)
    with contextlib.ExitStack() as stack:
        port = free_port()
        ns, server, node = stack.enter_context(busy_node(stack, "b10", NODE, metrics_port=port,
                                                         in_cluster=True))
        pods_ns = stack.enter_context(netns("b10pods-"))
        probe = KernelProbe(ns)
        stack.callback(probe.close)
        obj = put_template(server, "b2", spec_for(MTU, ADDRESS))
        since = time.time()
        while not status_has(server, since, MTU, ADDRESS, obj["metadata"]["generation"]):
            node.check_alive()
            if time.time() - since > START_TIMEOUT_S:
                raise TimeoutError(f"B10: template not applied: {node.log_tail()}")
            time.sleep(0.01)
        pods = Pods(ns, pods_ns)
        pods.fill(STEADY_PODS)
        log(f"B10: {window_s:.0f} s of churn, unmanaged changes coalesced (the default)")
        coalesced = _window(ns, server, node, port, pods, probe, window_s)
        held_s = _held_write_after_s(server, node, coalesced["started"])
        base_port = free_port()
        baseline_node = restart_agent(node, server, port=base_port,
                                      extra_args=("--unmanaged-publish-interval-s", "0"))
        stack.callback(baseline_node.stop)
        log(f"B10: {window_s:.0f} s of the same churn, every change published at once (baseline)")
        baseline = _window(ns, server, baseline_node, base_port, pods, probe, window_s)
    per_min = 60.0 / coalesced["elapsed"]
    base_per_min = 60.0 / baseline["elapsed"]
    label = "interval 0, same run"
    return [
        Row(id="B10", measure=f"status writes per minute, {coalesced['elapsed']:.0f} s of 1 pod up "
                              "+ 1 down per second (a managed drift repaired meanwhile)",
            value=coalesced["writes"] * per_min, unit="/min",
            baseline=baseline["writes"] * base_per_min, baseline_label=label,
            target=f"<= {WRITES_TARGET_PER_MIN}/min",
            ok=coalesced["writes"] * per_min <= WRITES_TARGET_PER_MIN),
        Row(id="B10", measure="the held pod changes written this long after the previous write",
            value=held_s, unit="s", target=f">= {INTERVAL_S:.0f} s (the interval)",
            ok=held_s >= INTERVAL_S),
        Row(id="B10", measure=f"full passes per minute ({coalesced['unmanaged']:.0f} unmanaged "
                              "kernel events without a pass of their own)",
            value=coalesced["passes"] * per_min, unit="/min",
            baseline=baseline["passes"] * base_per_min, baseline_label=label, ok=None),
        Row(id="B10", measure=f"agent CPU during the churn (passes took "
                              f"{coalesced['pass_s']:.2f} s, baseline {baseline['pass_s']:.2f} s)",
            value=coalesced["cpu_pct"], unit="% core", baseline=baseline["cpu_pct"],
            baseline_label=label, target=f"<= {CPU_TARGET_PCT} %",
            ok=coalesced["cpu_pct"] <= CPU_TARGET_PCT),
        Row(id="B10", measure=f"agent RSS during the churn, p95 of {len(coalesced['rss'])} "
                              f"samples (max {max(coalesced['rss']) / MIB:.1f} MiB; the "
                              "DaemonSet's memory request is sized on it)",
            value=percentile(coalesced["rss"], 95) / MIB, unit="MiB",
            baseline=percentile(baseline["rss"], 95) / MIB, baseline_label=label, ok=None),
        Row(id="B10", measure="managed drift (MTU) repaired during the churn",
            value=coalesced["repair_s"] * 1000, unit="ms", baseline=baseline["repair_s"] * 1000,
            baseline_label=label, target=f"<= {REPAIR_TARGET_S * 1000:.0f} ms",
            ok=coalesced["repair_s"] <= REPAIR_TARGET_S),
    ]


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
