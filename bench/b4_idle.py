"""B4: steady state of an idle agent on a host with 1,000 links and 10k routes: resident memory,
CPU, API requests and API writes over an idle window.

Why: the agent runs on every node of every cluster, so its idle cost is paid thousands of times
and its API traffic lands on one shared API server. The window is BENCH_IDLE_S seconds (default
120; the issue's 10 minutes is BENCH_IDLE_S=600). Per-hour figures are extrapolated honestly:
CPU and plain requests scale with the window; watch renewals are computed from the server-side
timeout each watch asked for (a 2-minute window usually contains none of them).
Baselines: the same agent right after start-up (memory), the original's published budget
(64 MiB memory request; a status rewrite every 10 s = 720 writes/h).

The agent runs as the DaemonSet runs it: in-cluster configuration from a service-account
directory (common.py `in_pod_argv`), not a kubeconfig. A kubeconfig makes the agent import
`kubernetes`' kubeconfig loader, which imports ApiClient, pydantic, requests and oauthlib (the
import path of the agent before issue 19's footprint work): the same node's agent is then
restarted with a kubeconfig for BENCH_B4_BASELINE_S (default 30) seconds, its idle RSS printed
beside the in-cluster figure.
"""
from __future__ import annotations

import contextlib
import re
import time
import urllib.request

from b2_latency import spec_for, status_has
from common import (AgentNode, Row, busy_node, env_float, free_port, log, percentile, proc_stat,
                    put_template)

NODE = "bench-b2"
SETTLE_S = 5.0
RSS_TARGET_MIB = 64.0
CPU_TARGET_PCT = 0.2
REQUESTS_TARGET_PER_H = 30
ORIGINAL_WRITES_PER_H = 720
SAMPLE_S = 5.0
BASELINE_WINDOW_S = 30.0
RESTART_TIMEOUT_S = 120.0


def _metrics(port: int) -> dict:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


LEADER_LEASE_PATH = "/leases/plumber-status-writer"


def leader_renewals(server, started: float) -> int:
    """Writes of the status writer's leader Lease: one agent in the fleet renews it (every 5 s),
    whatever the fleet's size; the only agent here is that one, so they are counted apart."""
    return sum(1 for r in server.requests() if r.time >= started
               and r.path.endswith(LEADER_LEASE_PATH))


def per_hour_requests(server, started: float, window_s: float) -> tuple[int, int, float]:
    """(requests in window, writes in window, honest per-hour estimate), the leader Lease's
    renewals left out (see leader_renewals)."""
    in_window = [r for r in server.requests() if r.time >= started
                 and not r.path.endswith(LEADER_LEASE_PATH)]
    writes = [r for r in in_window if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    plain = [r for r in in_window if not r.watch]
    # every watch the agent holds is renewed once per its timeoutSeconds
    latest: dict = {}
    for r in server.requests(watch=True):
        latest[r.path + r.query.get("fieldSelector", "")] = r
    renewals = sum(3600.0 / max(1.0, float(r.query.get("timeoutSeconds") or 1800))
                   for r in latest.values())
    return len(in_window), len(writes), len(plain) * 3600.0 / window_s + renewals


def _rss_samples(node, window_s: float) -> list[int]:
    """Resident bytes of the agent every SAMPLE_S over `window_s` (and once at the end)."""
    started = time.time()
    samples = []
    while time.time() - started < window_s:
        node.check_alive()
        samples.append(proc_stat(node.proc.pid)[1])
        time.sleep(min(SAMPLE_S, max(0.0, window_s - (time.time() - started))))
    samples.append(proc_stat(node.proc.pid)[1])
    return samples


def restart_agent(node, server, *, port: int, extra_args: tuple = (),
                  kubeconfig: bool = False):
    """The same node's agent again (same namespace, state dir and ledger, the same in-cluster
    configuration or, with `kubeconfig`, a kubeconfig), with `extra_args`; returns once it ran
    a pass (B4's baseline, B10's)."""
    import os
    node.stop()
    workdir = os.path.dirname(node.state_dir)
    account = None if kubeconfig else node.account
    path = server.kubeconfig(os.path.join(workdir, f"kubeconfig-{node.name}-{port}"))
    again = AgentNode(name=node.name, ns=node.ns, workdir=workdir, kubeconfig=path,
                      account=account, metrics_port=port, extra_args=extra_args)
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while _metrics(port).get("plumber_reconciles_total", 0) < 1:
        again.check_alive()
        if time.monotonic() > deadline:
            again.stop()
            raise TimeoutError(f"the restarted agent ran no pass: {again.log_tail()}")
        time.sleep(0.2)
    return again


def _kubeconfig_baseline(node, server, window_s: float) -> list[int]:
    """The same node's agent restarted with a kubeconfig; its idle RSS samples."""
    again = restart_agent(node, server, port=free_port(), kubeconfig=True)
    try:
        time.sleep(SETTLE_S)
        log(f"B4: the same agent through a kubeconfig, {window_s:.0f} s (baseline)")
        return _rss_samples(again, window_s)
    finally:
        again.stop()


def run_bench() -> list[Row]:
    window_s = env_float("BENCH_IDLE_S", 120.0)
    baseline_window_s = env_float("BENCH_B4_BASELINE_S", BASELINE_WINDOW_S)
    with contextlib.ExitStack() as stack:
        port = free_port()
        ns, server, node = stack.enter_context(busy_node(stack, "b4", NODE, metrics_port=port,
                                                         in_cluster=True))
        _, rss_start = proc_stat(node.proc.pid)
        obj = put_template(server, "b2", spec_for(1450, "198.18.9.1/24"))
        since = time.time()
        while not status_has(server, since, 1450, "198.18.9.1/24", obj["metadata"]["generation"]):
            node.check_alive()
            if time.time() - since > 60:
                raise TimeoutError(f"B4: template not applied: {node.log_tail()}")
            time.sleep(0.01)
        time.sleep(SETTLE_S)
        log(f"B4: idle window of {window_s:.0f} s")
        cpu0, _ = proc_stat(node.proc.pid)
        m0 = _metrics(port)
        started = time.time()
        rss_samples = _rss_samples(node, window_s)
        cpu1, _ = proc_stat(node.proc.pid)
        elapsed = time.time() - started
        m1 = _metrics(port)
        rss_max = max(rss_samples)
        requests, writes, per_hour = per_hour_requests(server, started, elapsed)
        renewals = leader_renewals(server, started)
        kubeconfig_rss = _kubeconfig_baseline(node, server, baseline_window_s)
    cpu_pct = (cpu1 - cpu0) / elapsed * 100.0
    reconciles = m1.get("plumber_reconciles_total", 0) - m0.get("plumber_reconciles_total", 0)
    dur = (m1.get("plumber_reconcile_duration_seconds_sum", 0)
           - m0.get("plumber_reconcile_duration_seconds_sum", 0))
    mib = 1024 * 1024
    rows = [
        Row(id="B4", measure=f"idle RSS, max over {elapsed:.0f} s (in-cluster configuration, "
                             "as the DaemonSet runs)", value=rss_max / mib, unit="MiB",
            baseline=max(kubeconfig_rss) / mib,
            baseline_label=f"through a kubeconfig, max over {baseline_window_s:.0f} s, MiB",
            target=f"<= {RSS_TARGET_MIB:.0f} MiB", ok=rss_max / mib <= RSS_TARGET_MIB),
        Row(id="B4", measure=f"idle RSS, p95 of {len(rss_samples)} samples",
            value=percentile(rss_samples, 95) / mib, unit="MiB", baseline=rss_start / mib,
            baseline_label="at start-up, MiB"),
        Row(id="B4", measure=f"idle CPU over {elapsed:.0f} s ({reconciles:.0f} resync passes, "
                             f"{(dur / reconciles * 1000) if reconciles else 0:.0f} ms each)",
            value=cpu_pct, unit="% core", target=f"<= {CPU_TARGET_PCT} %",
            ok=cpu_pct <= CPU_TARGET_PCT),
        Row(id="B4", measure=f"idle API writes in {elapsed:.0f} s", value=writes, unit="",
            baseline=ORIGINAL_WRITES_PER_H * elapsed / 3600, baseline_label="original, same window",
            target="0", ok=writes == 0),
        Row(id="B4", measure=f"idle API requests per hour ({requests} in {elapsed:.0f} s "
                             "+ watch renewals)",
            value=per_hour, unit="/h", baseline=ORIGINAL_WRITES_PER_H, baseline_label="original writes/h",
            target=f"<= {REQUESTS_TARGET_PER_H}/h", ok=per_hour <= REQUESTS_TARGET_PER_H),
        Row(id="B4", measure="status writer's Lease renewals per hour (one agent of the fleet; "
                             "left out above)",
            value=renewals * 3600.0 / elapsed, unit="/h", baseline=ORIGINAL_WRITES_PER_H,
            baseline_label="original writes/h, per node", target="<= 720/h for the fleet",
            ok=renewals * 3600.0 / elapsed <= 720 * 1.1),
    ]
    return rows


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
