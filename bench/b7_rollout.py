"""B7: a limited rollout. One template over N simulated nodes (default N=50, BENCH_B7_NODES to
change) with `maxUnavailable: 10`, next to the same change with `maxUnavailable: "100%"` (no
limit: B5's fan-out) on the same agents in the same run as the baseline.

Why: the limit trades speed for safety; what it costs is the time until the last node is done
(about N / limit waves instead of one), the API traffic of the slot Leases on top of B5's writes,
and the writes of the elected status writer on the template. And the limit must hold: the most
nodes changing at once is measured from what the agents did, from each agent's own log (the
interval between its `"rollout": "applying"` and `"applied"` lines, docs/rollout.md), not from a
status. Each run changes its own NIC (eth4 for an uncounted warm-up, eth0 for the baseline, eth2
for the limited run), so every run is a fresh rollout on every node with nothing to clean up in
between. The clock runs
from the template write to the last node's status showing it Applied at its generation; the
window for counting requests ends when the template's own status says Available.

B7 at 1,000 nodes (BENCH_B7_SCALE_NODES) cannot run 1,000 agent processes on this machine: it
runs the real slot code (fleet/slots.py LeaseSlots, rollout.decide/choose) and the status
writer's real offers (aggregate.offers) for 1,000 simulated agents in one process, on a
FakeClock, over an in-memory Lease API with the API server's optimistic rules
(tests/support/fleetsim.py says what is simulated and how). It counts the claim attempts (Lease
creates and takeover PUTs) per node and the simulated time to complete, with offers (this code),
before offers (`rollout.decide` alone: every waiting node tries a free slot it sees) as the
baseline, and with no status writer at all (the ranked fallback); the same simulation at 50
nodes stands beside it.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import time
from dataclasses import dataclass

from common import (AgentNode, Row, env_int, fake_api, log, put_template, start_fleet,
                    temp_dir)

LIMIT = 10
CONVERGE_TIMEOUT_S = 300.0
STATUS_TIMEOUT_S = 60.0
LABEL = {"bench": "rollout"}
MTU = 1400
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
JSON_INFO_LOGS = ("--log-format", "json", "--log-level", "info")


@dataclass
class RolloutRun:
    label: str
    limit: object
    nodes: int
    applied: int
    converged_s: float
    requests: int
    writes: int
    lease_requests: int
    template_status_writes: int
    max_concurrency: int
    status_phase: str
    lease_creates: int  # slot claims (and a rare leader Lease create)


def _applied(server, template: str, names: list[str], generation: int) -> set[str]:
    from tests.fakeapi.server import HOSTNETWORKS
    done = set()
    for obj in server.list(HOSTNETWORKS):
        name = obj["metadata"]["name"]
        if name not in names:
            continue
        for entry in (obj.get("status") or {}).get("templates") or []:
            if (entry.get("name") == template and entry.get("state") == "Applied"
                    and entry.get("observedGeneration") == generation):
                done.add(name)
    return done


def _epoch(ts: str) -> float:
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _intervals(nodes: list[AgentNode], template: str) -> list[tuple[float, float]]:
    """Every node's [applying .. applied/failed] intervals of `template`, from its JSON log."""
    out = []
    for node in nodes:
        start = None
        with contextlib.suppress(OSError), open(node.log_path, errors="replace") as fh:
            for line in fh:
                if not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("template") != template or not record.get("rollout"):
                    continue
                if record["rollout"] == "applying" and start is None:
                    start = _epoch(record["ts"])
                elif record["rollout"] in ("applied", "failed") and start is not None:
                    out.append((start, _epoch(record["ts"])))
                    start = None
        if start is not None:
            out.append((start, float("inf")))
    return out


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = current = 0
    for _, delta in points:  # at equal times the end (-1) sorts first
        current += delta
        best = max(best, current)
    return best


def _rollout(server, nodes: list[AgentNode], *, template: str, nic: str, limit) -> RolloutRun:
    from tests.fakeapi.server import TEMPLATES
    names = [n.name for n in nodes]
    started = time.time()
    obj = put_template(server, template, {
        "nodeSelector": LABEL, "rollout": {"maxUnavailable": limit},
        "interfaceConfig": [{"name": nic, "mtu": MTU}]})
    generation = obj["metadata"]["generation"]
    done: set = set()
    while len(done) < len(names) and time.time() - started < CONVERGE_TIMEOUT_S:
        done = _applied(server, template, names, generation)
        time.sleep(0.02)
    converged_s = time.time() - started
    # The window ends when the status writer has said so (its writes are part of the cost).
    deadline = time.time() + STATUS_TIMEOUT_S
    phase = ""
    while time.time() < deadline:
        status = (server.get(TEMPLATES, template) or {}).get("status") or {}
        phase = status.get("phase", "")
        if status.get("observedGeneration") == generation and phase == "Available":
            break
        time.sleep(0.05)
    time.sleep(1.0)  # trailing writes (Events, slot deletes) land before counting
    window = [r for r in server.requests() if r.time >= started]
    status_path = f"/{TEMPLATES}/{template}/status"
    return RolloutRun(
        label=template, limit=limit, nodes=len(names), applied=len(done), converged_s=converged_s,
        requests=len(window), writes=sum(1 for r in window if r.method in WRITE_METHODS),
        lease_requests=sum(1 for r in window if "/leases" in r.path),
        template_status_writes=sum(1 for r in window
                                   if r.method in WRITE_METHODS and r.path.endswith(status_path)),
        max_concurrency=_max_overlap(_intervals(nodes, template)), status_phase=phase,
        lease_creates=sum(1 for r in window if r.method == "POST" and "/leases" in r.path))


def run_bench() -> list[Row]:
    wanted = env_int("BENCH_B7_NODES", 50)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(temp_dir("bench-b7-"))
        server, kubeconfig = stack.enter_context(fake_api(work))
        nodes = start_fleet(stack, server, work=work, kubeconfig=kubeconfig, tag="B7",
                            count=wanted, labels=LABEL, nics=("eth0", "eth2", "eth4"),
                            log_args=JSON_INFO_LOGS)
        time.sleep(2.0)  # start-up writes settle before the first clock starts
        # A first rollout (not counted) warms every agent's code paths and watches, so neither
        # measured run pays for being first.
        warmup = _rollout(server, nodes, template="rollout-warmup", nic="eth4", limit="100%")
        log(f"B7: warm-up rollout: {warmup.applied}/{len(nodes)} in {warmup.converged_s:.2f} s")
        log(f"B7: baseline, {len(nodes)} nodes, maxUnavailable 100%")
        everyone = _rollout(server, nodes, template="rollout-all", nic="eth0", limit="100%")
        log(f"B7: limited, maxUnavailable {LIMIT}")
        limited = _rollout(server, nodes, template="rollout-limited", nic="eth2", limit=LIMIT)
    count = len(nodes)
    claims = limited.lease_creates

    def per(value: int) -> float:
        return value / count if count else float("nan")
    base_label = 'maxUnavailable "100%"'
    return [
        Row(id="B7", measure=f"{limited.applied}/{count} nodes applied with maxUnavailable {LIMIT} "
                             f"(of {wanted} asked; baseline {everyone.applied}/{count})",
            value=limited.converged_s, unit="s", baseline=everyone.converged_s,
            baseline_label=base_label, target=f"all {wanted} applied",
            ok=count == wanted and limited.applied == count and everyone.applied == count),
        Row(id="B7", measure=f"most nodes applying at once, from the agents' logs "
                             f"(baseline: {everyone.max_concurrency})",
            value=limited.max_concurrency, unit="", baseline=everyone.max_concurrency,
            baseline_label=base_label, target=f"<= {LIMIT}",
            ok=0 < limited.max_concurrency <= LIMIT),
        Row(id="B7", measure=f"API requests per node ({limited.requests} in all, "
                             f"{limited.lease_requests} on Leases)",
            value=per(limited.requests), unit="", baseline=per(everyone.requests),
            baseline_label=base_label),
        Row(id="B7", measure=f"API writes per node ({limited.writes} in all)",
            value=per(limited.writes), unit="", baseline=per(everyone.writes),
            baseline_label=base_label),
        Row(id="B7", measure=f"Lease creates per node, real agents ({claims} in all; "
                             f"maxUnavailable {LIMIT}; takeover PUTs not counted)",
            value=per(claims), unit="", target=f"<= {MAX_ATTEMPTS}",
            ok=claims <= MAX_ATTEMPTS * count),
        Row(id="B7", measure=f"writes on the template's /status for the whole rollout "
                             f"(phase at the end: {limited.status_phase or '-'})",
            value=limited.template_status_writes, unit="",
            baseline=everyone.template_status_writes, baseline_label=base_label,
            ok=limited.status_phase == "Available" and limited.template_status_writes > 0),
    ] + scale_rows()


MAX_ATTEMPTS = 3  # claim attempts per node for a whole rollout (issue 19, must deliver 4)
SCALE_LIMIT_SHARE = 4  # maxUnavailable of the simulated rollouts: a quarter (the default 25%)
SCALE_APPLY_S = 2.0  # each simulated node's host work


def _simulate(nodes: int, **kwargs):
    from tests.support.fleetsim import Fleet
    started = time.process_time()
    result = Fleet(nodes, limit=max(1, nodes // SCALE_LIMIT_SHARE), apply_s=SCALE_APPLY_S,
                   **kwargs).run(timeout_s=3600.0)
    log(f"B7 simulated {nodes} nodes {kwargs or 'offers'}: max {result.max_attempts}, mean "
        f"{result.mean_attempts:.2f} attempts, {result.duration_s:.1f} s simulated, "
        f"{time.process_time() - started:.1f} s CPU")
    return result


def scale_rows() -> list[Row]:
    big = env_int("BENCH_B7_SCALE_NODES", 1000)
    rows = []
    for count in (50, big):
        offered = _simulate(count)
        herd = _simulate(count, herd=True)
        label = f"before offers, {sum(herd.attempts.values())} in all"
        limit = max(1, count // SCALE_LIMIT_SHARE)
        rows += [
            Row(id="B7", measure=f"simulated {count} nodes, maxUnavailable {limit}: claim "
                                 f"attempts per node, max ({sum(offered.attempts.values())} "
                                 f"in all)",
                value=offered.max_attempts, unit="", baseline=herd.max_attempts,
                baseline_label=label, target=f"<= {MAX_ATTEMPTS}",
                ok=offered.completed and offered.max_attempts <= MAX_ATTEMPTS),
            Row(id="B7", measure=f"simulated {count} nodes: claim attempts per node, mean",
                value=offered.mean_attempts, unit="", baseline=herd.mean_attempts,
                baseline_label="before offers"),
            Row(id="B7", measure=f"simulated {count} nodes: time to complete ({SCALE_APPLY_S:g} s "
                                 f"of host work each; most at once {offered.most_at_once})",
                value=offered.duration_s, unit="s", baseline=herd.duration_s,
                baseline_label="before offers", target=f"all applied, <= {limit} at once",
                ok=offered.completed and offered.most_at_once <= limit),
        ]
    alone = _simulate(big, writer=False)
    rows.append(Row(id="B7", measure=f"simulated {big} nodes, no status writer (ranked "
                                     f"fallback): attempts per node max / mean "
                                     f"{alone.mean_attempts:.2f}; {alone.duration_s:.0f} s "
                                     f"simulated",
                    value=alone.max_attempts, unit="", target=f"<= {MAX_ATTEMPTS}, all applied",
                    ok=alone.completed and alone.max_attempts <= MAX_ATTEMPTS))
    return rows


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
