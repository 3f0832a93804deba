"""B4: steady state of an idle agent on a host with 1,000 links and 10k routes: resident memory,
CPU, API requests and API writes over an idle window.

Why: the agent runs on every node of every cluster, so its idle cost is paid thousands of times
and its API traffic lands on one shared API server. The window is BENCH_IDLE_S seconds (default
120; the issue's 10 minutes is BENCH_IDLE_S=600). Per-hour figures are extrapolated honestly:
CPU and plain requests scale with the window; watch renewals are computed from the server-side
timeout each watch asked for (a 2-minute window usually contains none of them).
Baselines: the same agent right after start-up (memory), the original's published budget
(64 MiB memory request; a status rewrite every 10 s = 720 writes/h).
"""
from __future__ import annotations

import contextlib
import re
import time
import urllib.request

from b2_latency import spec_for, status_has
from common import (Row, busy_node, env_float, free_port, log, percentile, proc_stat,
                    put_template)

NODE = "bench-b2"
SETTLE_S = 5.0
RSS_TARGET_MIB = 64.0
CPU_TARGET_PCT = 0.2
REQUESTS_TARGET_PER_H = 30
ORIGINAL_WRITES_PER_H = 720
SAMPLE_S = 5.0


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


def run_bench() -> list[Row]:
    window_s = env_float("BENCH_IDLE_S", 120.0)
    with contextlib.ExitStack() as stack:
        port = free_port()
        ns, server, node = stack.enter_context(busy_node(stack, "b4", NODE, metrics_port=port))
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
        rss_samples = []
        while time.time() - started < window_s:
            node.check_alive()
            rss_samples.append(proc_stat(node.proc.pid)[1])
            time.sleep(min(SAMPLE_S, max(0.0, window_s - (time.time() - started))))
        cpu1, rss_end = proc_stat(node.proc.pid)
        elapsed = time.time() - started
        m1 = _metrics(port)
        rss_samples.append(rss_end)
        rss_max = max(rss_samples)
        requests, writes, per_hour = per_hour_requests(server, started, elapsed)
        renewals = leader_renewals(server, started)
    cpu_pct = (cpu1 - cpu0) / elapsed * 100.0
    reconciles = m1.get("plumber_reconciles_total", 0) - m0.get("plumber_reconciles_total", 0)
    dur = (m1.get("plumber_reconcile_duration_seconds_sum", 0)
           - m0.get("plumber_reconcile_duration_seconds_sum", 0))
    mib = 1024 * 1024
    rows = [
        Row(id="B4", measure=f"idle RSS, max over {elapsed:.0f} s", value=rss_max / mib, unit="MiB",
            baseline=rss_start / mib, baseline_label="at start-up, MiB",
            target=f"<= {RSS_TARGET_MIB:.0f} MiB", ok=rss_max / mib <= RSS_TARGET_MIB),
        Row(id="B4", measure=f"idle RSS, p95 of {len(rss_samples)} samples (the DaemonSet's "
                             "memory request is sized on it)",
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
