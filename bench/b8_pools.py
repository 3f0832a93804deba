"""B8: per-node addresses from one pool (docs/address-pools.md). One template whose pool holds
exactly N addresses (default N=50, BENCH_B8_NODES to change) selects N simulated nodes (one agent
process and one namespace each) that are running and have published their first status; the
same agents first get a template with a static address (B5's fan-out) as the baseline, after an
uncounted warm-up fan-out on a third NIC.

At fleet size (BENCH_B8_FLEET_NODES, default 1,000, and again at N for comparison) agent
processes are too heavy for one machine, so the allocators are simulated in-process: each node
is the agent's own PoolResolver and KubeClaims, with its own name and Node uid, sending its real
requests over HTTP to the fake API server, which also holds every node's realistic HostNetwork
(about 34.5 KB: 4 PFs, 32 VFs, 110 pod veths and their /32 routes). What is simulated: no hosts
(the proof of no duplicate is read from the claims and from what each allocator was given), one
shared watch of the pool's claims stands for each agent's own (every agent would receive the
same stream: its bytes are counted once, per agent), and SIM_WORKERS threads run the nodes'
passes. The baseline is what each allocation read before this change: one LIST of every
HostNetwork, timed and counted on the same server in the same run.

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

import concurrent.futures
import contextlib
import ipaddress
import json
import threading
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
FLEET_NODES = 1000
SIM_WORKERS = 16  # threads running the simulated nodes' passes
SIM_PASS_RETRY_S = 0.05  # a pass that got no address is retried (the agent requeues it)
SIM_MAX_PASSES = 50
SIM_TIMEOUT_S = 150.0
FLEET_CIDR = "10.128.0.0/16"
VFS_PER_PF, PFS, POD_VETHS = 8, 4, 110


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
    hostnetwork_lists: int = 0  # one per allocation before issue 19; allocation sends none now
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


# ------------------------------------------------------------------------------------------------
# fleet size: simulated allocators against realistic HostNetworks


def realistic_hostnetwork(name: str, index: int) -> dict:
    """A busy node's HostNetwork (~35 KB of JSON, as issue 19's 34.5 KB): 4 SR-IOV PFs with
    8 VFs each, 110 pod veths with their /32 routes (Calico's `cali*`, as the seed's example
    lists them) and the kernel's fe80::/64 route on each."""
    def mac(*parts: int) -> str:
        return ":".join(f"{p & 255:02x}" for p in (0x02, *parts))
    pfs = [{"pfName": f"ens{pf + 1}f0", "mac": mac(index >> 8, index, pf, 0, 0), "mtu": 9000,
            "pciAddr": f"0000:{pf + 0x3b:02x}:00.0", "pfDriver": "ice", "vendorId": "8086",
            "deviceId": "159b", "sriovEnabled": True, "kind": "device", "operState": "up",
            "ipv4": {"address": [f"10.{pf + 1}.{index >> 8}.{index & 255}/16"]},
            "sriovStatus": {"totalVfs": 64, "numVfs": VFS_PER_PF, "vfs": [
                {"id": vf, "mac": mac(index >> 8, index, pf, vf, 1), "vlan": 100 + vf, "qos": 0,
                 "spoofchk": True, "trust": False, "vfDriver": "iavf",
                 "pciAddr": f"0000:{pf + 0x3b:02x}:{vf + 1:02x}.{vf % 8}"}
                for vf in range(VFS_PER_PF)]}} for pf in range(PFS)]
    veths = [{"pfName": f"cali{index:05x}{v:06x}", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450,
              "operState": "up",
              "ipv6": {"address": [f"fe80::ecee:eeff:feee:{v:x}/64"]}}
             for v in range(POD_VETHS)]
    routes = [{"dev": f"cali{index:05x}{v:06x}", "dst": f"10.244.{index & 255}.{v + 1}/32",
               "src": f"10.1.{index >> 8}.{index & 255}"} for v in range(POD_VETHS)]
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
            "metadata": {"name": name},
            "status": {"interfaceStatus": [*pfs, *veths], "routes": {
                "ipv4": [{"dev": "ens1f0", "gw": f"10.1.{index >> 8}.1"}, *routes],
                "ipv6": [{"dev": veth["pfName"], "dst": "fe80::/64"} for veth in veths]}}}


def count_bytes(client) -> None:
    """Count the bytes of every answer the client reads (`client.bytes_read`), error answers
    included: wrapped at our own seam (KubeClient._call), the `kubernetes` package untouched."""
    from kubernetes.client import ApiException
    call, lock = client._call, threading.Lock()
    client.bytes_read = 0

    def add(count: int) -> None:
        with lock:
            client.bytes_read += count

    def counted_call(method, *args, **kwargs):
        def counted(*a, **kw):
            try:
                response = method(*a, **kw)
            except ApiException as exc:
                add(len(exc.body or b""))
                raise
            add(len(response.data or b""))  # urllib3 keeps it: _call reads the same bytes
            return response
        return call(counted, *args, **kwargs)
    client._call = counted_call


@dataclass
class Fleet:
    nodes: int
    holding: int = 0
    seconds: float = float("nan")
    allocation_bytes: list[int] = field(default_factory=list)  # what each allocation read
    allocation_requests: int = 0
    passes: int = 0
    conflicts: int = 0  # creates answered 409
    hostnetwork_requests: int = 0  # during the allocations (must be 0)
    watch_bytes_per_agent: int = 0  # the pool's claims, as one agent's watch receives them
    list_bytes: int = 0  # baseline: one LIST of every HostNetwork
    list_s: float = float("nan")
    hostnetwork_bytes: float = 0.0  # one HostNetwork's JSON
    problems: list[str] = field(default_factory=list)


def _simulated_fleet(count: int) -> Fleet:
    """`count` simulated allocators racing for one pool of exactly `count` addresses."""
    from plumber_agent.kube.client import KubeClient
    from plumber_agent.kube.reflector import Reflector, object_name
    from plumber_agent.clock import RealClock
    from plumber_agent.models.parse import template_from_object
    from plumber_agent.pools.claims import KubeClaims, pool_selector
    from plumber_agent.pools.pool import pool_uses
    from plumber_agent.pools.resolve import PoolResolver
    from tests.fakeapi.server import ADDRESSCLAIMS, HOSTNETWORKS, NODES
    fleet = Fleet(nodes=count)
    first = ipaddress.ip_address("10.128.1.1")
    last = ipaddress.ip_address(int(first) + count - 1)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(temp_dir("bench-b8-fleet-"))
        server, kubeconfig = stack.enter_context(fake_api(work))
        names = [f"fleet-{i:04d}" for i in range(count)]
        uids = {}
        for i, name in enumerate(names):
            uids[name] = server.put_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": name, "labels": LABEL}})["metadata"]["uid"]
            server.put_object(HOSTNETWORKS, realistic_hostnetwork(name, i))
        fleet.hostnetwork_bytes = len(json.dumps(server.get(HOSTNETWORKS, names[0])))
        # Baseline: what each allocation read before (cluster.py's other_nodes_addresses).
        probe = KubeClient.from_kubeconfig(kubeconfig)
        stack.callback(probe.close)
        count_bytes(probe)
        started = time.perf_counter()
        probe.list_hostnetworks()
        fleet.list_s, fleet.list_bytes = time.perf_counter() - started, probe.bytes_read
        obj = put_template(server, "fleet-pool", {"nodeSelector": LABEL, "interfaceConfig": [
            {"name": POOL_NIC, "ipv4": {"pool": {"cidr": FLEET_CIDR, "rangeStart": str(first),
                                                 "rangeEnd": str(last)}}}]})
        template = template_from_object(obj)
        (use,) = pool_uses(template)
        selector = pool_selector(use.pool_id)
        watcher = KubeClient.from_kubeconfig(kubeconfig)
        stack.callback(watcher.close)
        watch = Reflector("fleet-claims", lambda: watcher.list_address_claims(selector),
                          lambda *a: watcher.watch_address_claims(selector, *a),
                          lambda *a: None, RealClock(), key_fn=object_name)
        stop = threading.Event()
        stack.callback(stop.set)
        threading.Thread(target=watch.run, args=(stop,), name="fleet-claims", daemon=True).start()
        deadline = time.time() + SIM_TIMEOUT_S
        while not watch.has_synced() and time.time() < deadline:
            time.sleep(0.05)
        local = threading.local()
        clients: list = []
        lock = threading.Lock()

        def client():
            if getattr(local, "client", None) is None:
                local.client = KubeClient.from_kubeconfig(kubeconfig)
                count_bytes(local.client)
                with lock:
                    clients.append(local.client)
            return local.client

        def allocate(name: str):
            kube = client()
            bytes_before, requests_before = kube.bytes_read, kube.requests
            resolver = PoolResolver(claims=KubeClaims(kube, watch.store), node=name,
                                    node_uid=lambda: uids[name])
            for passes in range(1, SIM_MAX_PASSES + 1):
                if time.time() > deadline:
                    break
                result = resolver.resolve([template], LABEL, claim=True)
                if result.held:
                    return (name, result.held[0].address, passes, kube.bytes_read - bytes_before,
                            kube.requests - requests_before)
                time.sleep(SIM_PASS_RETRY_S)
            return (name, None, SIM_MAX_PASSES, kube.bytes_read - bytes_before,
                    kube.requests - requests_before)

        window_start = time.time()
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(SIM_WORKERS) as pool:
            results = list(pool.map(allocate, names))
        fleet.seconds = time.perf_counter() - started
        for kube in clients:
            stack.callback(kube.close)
        window = [r for r in server.requests() if r.time >= window_start]
        fleet.hostnetwork_requests = sum(1 for r in window if "/hostnetworks" in r.path)
        fleet.conflicts = sum(1 for r in window if r.method == "POST" and r.status == 409
                              and r.path.endswith("/addressclaims"))
        given = {name: address for name, address, *_ in results}
        fleet.holding = sum(1 for address in given.values() if address)
        fleet.passes = sum(passes for _, _, passes, _, _ in results)
        fleet.allocation_bytes = [read for *_, read, _ in results]
        fleet.allocation_requests = sum(requests for *_, requests in results)
        claims = server.list(ADDRESSCLAIMS)
        fleet.watch_bytes_per_agent = sum(len(json.dumps({"type": "ADDED", "object": c})) + 1
                                          for c in claims)
        fleet.problems = _fleet_problems(claims, given, uids)
    return fleet


def _fleet_problems(claims: list[dict], given: dict, uids: dict) -> list[str]:
    """Zero duplicates: every address claimed once, every node holds exactly one claim (its
    own uid) and was given that claim's address."""
    problems = []
    addresses = [c["spec"]["address"] for c in claims]
    if len(set(addresses)) != len(addresses):
        problems.append(f"{len(addresses) - len(set(addresses))} addresses claimed twice")
    by_node: dict[str, list[dict]] = {}
    for claim in claims:
        by_node.setdefault(claim["spec"]["node"], []).append(claim)
    for name, address in given.items():
        held = by_node.get(name, [])
        if address is None:
            problems.append(f"{name} got no address")
        elif [c["spec"]["address"] for c in held] != [address] \
                or held[0]["spec"]["nodeUID"] != uids[name]:
            problems.append(f"{name}: given {address}, claims {[c['spec'] for c in held]}")
    return problems


def _fleet_rows(fleet: Fleet) -> list[Row]:
    n = fleet.nodes
    mean_bytes = sum(fleet.allocation_bytes) / n if n else float("nan")
    worst = max(fleet.allocation_bytes, default=0)
    return [
        Row(id="B8", measure=f"fleet {n} (simulated): nodes holding an address from one pool of "
                             f"{n}, from the template to the last claim ({fleet.passes} passes, "
                             f"{fleet.conflicts} creates lost a race: 409)",
            value=fleet.seconds, unit="s", target=f"all {n}", ok=fleet.holding == n),
        Row(id="B8", measure=f"fleet {n} (simulated): duplicates (claims x nodes x what each "
                             f"allocator was given; {len(fleet.problems)} problems)",
            value=len(fleet.problems), unit="", target="0", ok=not fleet.problems),
        Row(id="B8", measure=f"fleet {n} (simulated): KB read per allocation, mean (worst "
                             f"{worst / 1e3:.1f} KB; {fleet.allocation_requests / n:.2f} requests, "
                             f"{fleet.hostnetwork_requests} on HostNetworks)",
            value=mean_bytes / 1e3, unit="KB", baseline=fleet.list_bytes / 1e3,
            baseline_label=f"before: one LIST of {n} HostNetworks of "
                           f"{fleet.hostnetwork_bytes / 1e3:.1f} KB, {fleet.list_s:.1f} s",
            target="no HostNetwork read",
            ok=fleet.hostnetwork_requests == 0 and mean_bytes < fleet.list_bytes),
        Row(id="B8", measure=f"fleet {n} (simulated): KB of the pool's claims one agent's "
                             "watch receives for the whole fan-out",
            value=fleet.watch_bytes_per_agent / 1e3, unit="KB", baseline=fleet.list_bytes / 1e3,
            baseline_label="before: the LIST each allocating agent sent"),
    ]


def run_bench() -> list[Row]:
    wanted = env_int("BENCH_B8_NODES", 50)
    rows = _processes_rows(wanted)
    for size in (wanted, env_int("BENCH_B8_FLEET_NODES", FLEET_NODES)):
        log(f"B8: fleet of {size} simulated allocators, realistic HostNetworks")
        fleet = _simulated_fleet(size)
        log(f"B8: fleet {size}: {fleet.holding}/{size} in {fleet.seconds:.1f} s, "
            f"{len(fleet.problems)} problems {fleet.problems[:3]}")
        rows += _fleet_rows(fleet)
    return rows


def _processes_rows(wanted: int) -> list[Row]:
    """Today's B8: `wanted` real agent processes, one namespace each."""
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
