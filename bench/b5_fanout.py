"""B5: fan-out. One template selecting N simulated nodes (one agent process and one namespace
each, default N=50, BENCH_B5_NODES to change) -> all applied; API requests and writes during
convergence and during the following idle window.

Why: a template change lands on every node at once; what matters is how fast the last node is
done and how much the burst costs the shared API server. The agents are started (in batches)
and have published their first status before the clock starts; the clock runs from the
template write to the last node's status showing the template Applied at its generation.
If the machine cannot run N agents (memory), the largest N that started is reported.
"""
from __future__ import annotations

import contextlib
import time

from common import (Row, env_float, env_int, fake_api, log, proc_stat, put_template,
                    start_fleet, temp_dir)

TARGET_CONVERGE_S = 5.0
TARGET_WRITES_PER_NODE = 3
CONVERGE_TIMEOUT_S = 120.0
LABEL = {"bench": "fanout"}
MTU, ADDRESS = 1400, "198.18.50.1/24"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _applied(server, names: list[str], generation: int) -> set[str]:
    from tests.fakeapi.server import HOSTNETWORKS
    done = set()
    for obj in server.list(HOSTNETWORKS):
        name = obj["metadata"]["name"]
        if name not in names:
            continue
        for tmpl in (obj.get("status") or {}).get("templates") or []:
            if (tmpl.get("name") == "fanout" and tmpl.get("state") == "Applied"
                    and tmpl.get("observedGeneration") == generation):
                done.add(name)
    return done


def run_bench() -> list[Row]:
    wanted = env_int("BENCH_B5_NODES", 50)
    idle_s = env_float("BENCH_B5_IDLE_S", min(env_float("BENCH_IDLE_S", 120.0), 60.0))
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(temp_dir("bench-b5-"))
        server, kubeconfig = stack.enter_context(fake_api(work))
        nodes = start_fleet(stack, server, work=work, kubeconfig=kubeconfig, tag="B5",
                            count=wanted, labels=LABEL)
        names = [n.name for n in nodes]
        count = len(names)
        rss_total = sum(proc_stat(n.proc.pid)[1] for n in nodes if n.proc.poll() is None)
        time.sleep(2.0)
        started = time.time()
        obj = put_template(server, "fanout", {
            "nodeSelector": LABEL, "rollout": {"maxUnavailable": "100%"},  # no limit: B7 has one
            "interfaceConfig": [{"name": "eth0", "mtu": MTU, "ipv4": {"address": [ADDRESS]}}]})
        generation = obj["metadata"]["generation"]
        done: set = set()
        while len(done) < count:
            done = _applied(server, names, generation)
            if time.time() - started > CONVERGE_TIMEOUT_S:
                break
            time.sleep(0.02)
        converged_s = time.time() - started
        time.sleep(1.0)  # let trailing writes (events) land before counting
        window = [r for r in server.requests() if r.time >= started]
        # The status writer's writes (one agent of the fleet: the template's status, its Lease's
        # renewals) are counted apart: they grow with changes and time, not with nodes.
        template_writes = [r for r in window if r.method in WRITE_METHODS
                           and ("/hostnetworktemplates/" in r.path
                                or r.path.endswith("/leases/plumber-status-writer"))]
        conv_writes = [r for r in window if r.method in WRITE_METHODS and r not in template_writes]
        idle_start = time.time()
        log(f"B5: idle window of {idle_s:.0f} s")
        time.sleep(idle_s)
        idle = [r for r in server.requests() if r.time >= idle_start]
        # The status writer's Lease renewals (one agent of the fleet) are counted apart.
        renewals = [r for r in idle if r.path.endswith("/leases/plumber-status-writer")]
        idle_writes = [r for r in idle if r.method in WRITE_METHODS and r not in renewals]
        alive = sum(1 for n in nodes if n.proc.poll() is None)
    mib = 1024 * 1024
    per_node = len(conv_writes) / count if count else float("nan")
    return [
        Row(id="B5", measure=f"{len(done)}/{count} nodes converged (of {wanted} asked, "
                             f"{rss_total / mib:.0f} MiB RSS in all)",
            value=converged_s, unit="s", baseline=count, baseline_label="nodes",
            target=f"{wanted} in <= {TARGET_CONVERGE_S:.0f} s",
            ok=count == wanted and len(done) == count and converged_s <= TARGET_CONVERGE_S),
        Row(id="B5", measure=f"API writes per node to converge ({len(conv_writes)} writes, "
                             f"{len(window)} requests in all; + {len(template_writes)} by the "
                             "status writer)",
            value=per_node, unit="", baseline=count, baseline_label="nodes",
            target=f"<= {TARGET_WRITES_PER_NODE}", ok=per_node <= TARGET_WRITES_PER_NODE),
        Row(id="B5", measure=f"API writes in the next {idle_s:.0f} idle s ({len(idle)} requests, "
                             f"{alive} agents alive; + {len(renewals)} renewals of the status "
                             "writer's Lease by one agent)",
            value=len(idle_writes), unit="", baseline=count, baseline_label="nodes",
            target="0", ok=len(idle_writes) == 0),
    ]


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
