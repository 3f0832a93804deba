"""B8: per-node addresses from one pool (docs/address-pools.md). One template whose pool holds
exactly N addresses (default N=50, BENCH_B8_NODES to change) selects N simulated nodes (one agent
process and one namespace each) that are running and have published their first status; the
same agents first get a template with a static address (B5's fan-out) as the baseline, after an
uncounted warm-up fan-out on a third NIC.

Why: every node must create its own AddressClaim before it may touch its host, and a full pool
means late nodes lose races (409) and try again; what that costs is the time until the last node
holds its address and the API requests on top of a plain fan-out. And it must be right: the proof
of zero duplicates is read from the hosts (`ip addr` of every namespace: distinct addresses ==
number of nodes), from the claims (no address claimed twice) and between the two (each host's
address is its node's claim). The clock runs from the template write to the last node's status
showing the template Applied at its generation; the request window ends when the template's
status (the elected writer) shows every address allocated.
"""
from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass, field

from common import (AgentNode, Row, env_int, fake_api, ip_json, log, put_template,
                    start_fleet, temp_dir)

CONVERGE_TIMEOUT_S = 300.0
STATUS_TIMEOUT_S = 60.0
LABEL = {"bench": "pools"}
POOL_NIC, BASELINE_NIC, WARMUP_NIC = "eth0", "eth2", "eth4"
CIDR = "198.18.0.0/16"
FIRST = ipaddress.ip_address("198.18.100.1")
BASELINE_ADDRESS, WARMUP_ADDRESS = "198.19.0.1/24", "198.19.1.1/24"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class FanOut:
    label: str
    nodes: int
    applied: int
    converged_s: float
    requests: int
    writes: int
    claim_creates: int = 0
    claim_conflicts: int = 0  # creates answered 409: a race lost
    hostnetwork_lists: int = 0  # the allocator's read of other nodes' addresses
    allocated: int = 0  # status.pools[0].allocated at the end
    status_s: float = float("nan")  # from the template write until status.pools shows them all
    problems: list[str] = field(default_factory=list)


def _applied(server, template: str, names: list[str], generation: int) -> set[str]:
    from tests.fakeapi.server import HOSTNETWORKS
    done = set()
    for obj in server.list(HOSTNETWORKS):
        if obj["metadata"]["name"] not in names:
            continue
        for entry in (obj.get("status") or {}).get("templates") or []:
            if (entry.get("name") == template and entry.get("state") == "Applied"
                    and entry.get("observedGeneration") == generation):
                done.add(obj["metadata"]["name"])
    return done


def _fan_out(server, nodes: list[AgentNode], template: str, spec: dict,
             allocated_target: int = 0) -> FanOut:
    from tests.fakeapi.server import TEMPLATES
    names = [n.name for n in nodes]
    started = time.time()
    obj = put_template(server, template, {"nodeSelector": LABEL,
                                          "rollout": {"maxUnavailable": "100%"}, **spec})
    generation = obj["metadata"]["generation"]
    done: set = set()
    while len(done) < len(names) and time.time() - started < CONVERGE_TIMEOUT_S:
        done = _applied(server, template, names, generation)
        time.sleep(0.02)
    converged_s = time.time() - started
    allocated, status_s = 0, float("nan")
    if allocated_target:
        deadline = time.time() + STATUS_TIMEOUT_S
        while time.time() < deadline:
            pools = ((server.get(TEMPLATES, template) or {}).get("status") or {}).get("pools") or []
            allocated = pools[0].get("allocated", 0) if pools else 0
            if allocated >= allocated_target:
                status_s = time.time() - started
                break
            time.sleep(0.05)
    time.sleep(1.0)  # trailing writes (status, Events) land before counting
    window = [r for r in server.requests() if r.time >= started]
    creates = [r for r in window if r.method == "POST" and r.path.endswith("/addressclaims")]
    return FanOut(label=template, nodes=len(names), applied=len(done), converged_s=converged_s,
                  requests=len(window), writes=sum(1 for r in window if r.method in WRITE_METHODS),
                  claim_creates=len(creates),
                  claim_conflicts=sum(1 for r in creates if r.status == 409),
                  hostnetwork_lists=sum(1 for r in window if r.method == "GET" and not r.watch
                                        and r.path.endswith("/hostnetworks")),
                  allocated=allocated, status_s=status_s)


def _pool_address_on_host(ns: str) -> list[str]:
    net = ipaddress.ip_network(CIDR)
    return sorted(a["local"] for link in ip_json(ns, "addr", "show", "dev", POOL_NIC)
                  for a in link.get("addr_info", [])
                  if a.get("family") == "inet" and ipaddress.ip_address(a["local"]) in net)


def _duplicates_proof(server, nodes: list[AgentNode]) -> tuple[int, int, list[str]]:
    """(distinct addresses on the hosts, claims, problems): zero duplicates when the first two
    equal the number of nodes and the problems are none."""
    from tests.fakeapi.server import ADDRESSCLAIMS
    problems = []
    on_hosts = {n.name: _pool_address_on_host(n.ns) for n in nodes}
    for name, addresses in on_hosts.items():
        if len(addresses) != 1:
            problems.append(f"{name} has {addresses} on {POOL_NIC}")
    claims = server.list(ADDRESSCLAIMS)
    claimed = [c["spec"]["address"] for c in claims]
    if len(set(claimed)) != len(claimed):
        problems.append(f"an address claimed twice: {sorted(claimed)}")
    by_node: dict[str, list[str]] = {}
    for claim in claims:
        by_node.setdefault(claim["spec"]["node"], []).append(claim["spec"]["address"])
    for name, addresses in on_hosts.items():
        if by_node.get(name, []) != addresses:
            problems.append(f"{name}: host {addresses}, claims {by_node.get(name)}")
    distinct = {a for addresses in on_hosts.values() for a in addresses}
    return len(distinct), len(claims), problems


def run_bench() -> list[Row]:
    wanted = env_int("BENCH_B8_NODES", 50)
    last = ipaddress.ip_address(int(FIRST) + wanted - 1)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(temp_dir("bench-b8-"))
        server, kubeconfig = stack.enter_context(fake_api(work))
        nodes = start_fleet(stack, server, work=work, kubeconfig=kubeconfig, tag="B8",
                            count=wanted, labels=LABEL, nics=(POOL_NIC, BASELINE_NIC, WARMUP_NIC))
        time.sleep(2.0)  # start-up writes settle before the first clock starts
        count = len(nodes)
        # A first fan-out (not counted) warms every agent's code paths and watches, so neither
        # measured run pays for being first.
        warmup = _fan_out(server, nodes, "pool-warmup", {"interfaceConfig": [
            {"name": WARMUP_NIC, "ipv4": {"address": [WARMUP_ADDRESS]}}]})
        log(f"B8: warm-up: {warmup.applied}/{count} in {warmup.converged_s:.2f} s")
        log(f"B8: baseline, a static address on {count} nodes")
        baseline = _fan_out(server, nodes, "pool-baseline", {"interfaceConfig": [
            {"name": BASELINE_NIC, "ipv4": {"address": [BASELINE_ADDRESS]}}]})
        log(f"B8: one pool of exactly {count} addresses ({FIRST}-{last}) for {count} nodes")
        pooled = _fan_out(server, nodes, "pool", {"interfaceConfig": [
            {"name": POOL_NIC, "ipv4": {"pool": {"cidr": CIDR, "rangeStart": str(FIRST),
                                                 "rangeEnd": str(last)}}}]},
            allocated_target=count)
        distinct, claims, problems = _duplicates_proof(server, nodes)
        for problem in problems[:10]:
            log(f"B8: {problem}")

    def per(value: int) -> float:
        return value / count if count else float("nan")
    base_label = "a static address"
    return [
        Row(id="B8", measure=f"{pooled.applied}/{count} nodes holding an address from one pool "
                             f"of {count} (of {wanted} asked; baseline {baseline.applied}/{count})",
            value=pooled.converged_s, unit="s", baseline=baseline.converged_s,
            baseline_label=base_label, target=f"all {wanted} applied",
            ok=count == wanted and pooled.applied == count and baseline.applied == count),
        Row(id="B8", measure=f"distinct pool addresses on the hosts ({claims} claims; "
                             f"{len(problems)} problems)",
            value=distinct, unit="", target=f"= {count} nodes, each host's = its claim",
            ok=distinct == count and claims == count and not problems),
        Row(id="B8", measure=f"API requests per node ({pooled.requests} in all, "
                             f"{pooled.hostnetwork_lists} HostNetwork lists)",
            value=per(pooled.requests), unit="", baseline=per(baseline.requests),
            baseline_label=base_label),
        Row(id="B8", measure=f"API writes per node ({pooled.writes} in all; claim creates "
                             f"{pooled.claim_creates}, of which 409 {pooled.claim_conflicts})",
            value=per(pooled.writes), unit="", baseline=per(baseline.writes),
            baseline_label=base_label),
        Row(id="B8", measure=f"status.pools[0].allocated on the template at the end "
                             f"(shown {pooled.status_s:.1f} s after the template write)",
            value=pooled.allocated, unit="", target=f"= {count}", ok=pooled.allocated == count),
    ]


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
