"""Shared plumbing for the benchmarks: throw-away namespaces filled in bulk, processes that are
always reaped, timing helpers and the result row every benchmark returns.

Why a module of its own: every benchmark must set up and tear down its own namespaces and agent
processes even when it fails half-way (or the run is interrupted), and must report its figures
next to a baseline measured in the same run. Cleanup is registered twice: by the context
managers (normal path) and by an atexit/SIGTERM hook that removes whatever is still registered.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")
for _path in (SRC, REPO):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.helpers.agent_env import agent_env  # noqa: E402  (after the path set-up above)
from tests.helpers.ports import free_port  # noqa: E402,F401  (re-exported for the benchmarks)

NETNS_PREFIX = "plumbbench-"
IP_TIMEOUT_S = 300.0
PROCESS_STOP_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 60.0
SETTLE_POLL_S = 0.2
V6_ROUTE_FRACTION = 0.2
"""Share of the configured routes that are IPv6 (the rest IPv4); real tables are mostly v4."""
ROUTE_DEVICES_MAX = 100
"""Configured routes are spread over at most this many links."""

_namespaces: set[str] = set()
_processes: list[subprocess.Popen] = []


# ------------------------------------------------------------------------------------------------
# results

@dataclass
class Row:
    """One line of the table: a figure next to its baseline, and whether it meets its target."""

    id: str
    measure: str
    value: float
    unit: str
    baseline: Optional[float] = None
    baseline_label: str = ""
    target: str = ""
    ok: Optional[bool] = None   # None: informational, no target of its own
    note: str = ""

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline in (None, 0) or self.value is None:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict:
        return {"id": self.id, "measure": self.measure, "value": self.value, "unit": self.unit,
                "baseline": self.baseline, "baseline_label": self.baseline_label,
                "ratio": self.ratio, "target": self.target, "ok": self.ok, "note": self.note}


def fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        if abs(value) >= 100:
            text = f"{value:.0f}"
        elif abs(value) >= 1:
            text = f"{value:.2f}"
        else:
            text = f"{value:.4f}"
    else:
        text = f"{int(value)}"
    return f"{text} {unit}".strip()


def table(rows: list[Row], *, markdown: bool = False) -> str:
    header = ["id", "measure", "value", "baseline", "ratio", "target", "pass"]
    lines = []
    for row in rows:
        base = fmt(row.baseline, row.unit if row.baseline_label == "" else "")
        if row.baseline is not None and row.baseline_label:
            base = f"{fmt(row.baseline)} ({row.baseline_label})"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        verdict = {True: "PASS", False: "FAIL", None: "info"}[row.ok]
        lines.append([row.id, row.measure, fmt(row.value, row.unit), base, ratio,
                      row.target or "-", verdict])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(cells[i]) for cells in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 50 samples is the largest but none)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(pct / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def timed(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# ------------------------------------------------------------------------------------------------
# network namespaces

def run(argv: list[str], *, input_text: Optional[str] = None, check: bool = True,
        timeout_s: float = IP_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc


def ip_batch(ns: str, commands: list[str]) -> None:
    if commands:
        run(["ip", "-n", ns, "-batch", "-"], input_text="\n".join(commands) + "\n")


def ip_json(ns: str, *args: str):
    out = run(["ip", "-j", "-n", ns, *args]).stdout.strip()
    return json.loads(out) if out else []


def _delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=60, check=False)
    _namespaces.discard(name)


@contextlib.contextmanager
def netns(tag: str = "") -> Iterator[str]:
    """A fresh namespace (lo up, IPv6 DAD off so bulk link-up settles at once); always deleted."""
    name = f"{NETNS_PREFIX}{tag}{os.getpid() % 100000}-{uuid.uuid4().hex[:6]}"
    run(["ip", "netns", "add", name])
    _namespaces.add(name)
    try:
        for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            run(["ip", "netns", "exec", name, "sysctl", "-qw", f"{key}=0"], check=False)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        _delete_netns(name)


def _v4(base: int, index: int) -> str:
    value = base + index
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def link_names(count: int) -> list[str]:
    """`count` link names: veth pairs bN/cN (pairs keep both ends in the namespace)."""
    names = []
    for i in range((count + 1) // 2):
        names += [f"b{i}", f"c{i}"]
    return names[:count]


def populate(ns: str, *, links: int, routes: int, v6_fraction: float = V6_ROUTE_FRACTION) -> dict:
    """Fill `ns` with `links` veth links (up, one IPv4 /30 each) and `routes` static routes
    (`v6_fraction` of them IPv6) spread over the first ROUTE_DEVICES_MAX links."""
    pairs = (links + 1) // 2
    ip_batch(ns, [f"link add name b{i} type veth peer name c{i}" for i in range(pairs)])
    names = link_names(pairs * 2)
    ip_batch(ns, [f"link set {n} up" for n in names])
    ip_batch(ns, [f"addr add {_v4(0xAC100001, 4 * i)}/30 dev {n}" for i, n in enumerate(names)])
    v6 = int(routes * v6_fraction)
    v4 = routes - v6
    devices = names[:ROUTE_DEVICES_MAX]
    commands = [f"route add {_v4(0x0A000000, i)}/32 dev {devices[i % len(devices)]} proto static"
                for i in range(v4)]
    commands += [f"route add 2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::/64 dev "
                 f"{devices[i % len(devices)]} proto static" for i in range(v6)]
    ip_batch(ns, commands)
    wait_settled(ns)
    return {"links": len(names) + 1, "routes_v4": v4, "routes_v6": v6}


def wait_settled(ns: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until no IPv6 address is tentative (bulk link-up churns addresses for a while)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = run(["ip", "-n", ns, "-6", "addr", "show", "tentative"]).stdout
        if not out.strip():
            return
        time.sleep(SETTLE_POLL_S)
    log(f"namespace {ns}: addresses still tentative after {timeout_s} s; going on")


# ------------------------------------------------------------------------------------------------
# processes

def spawn(argv: list[str], *, log_path: Optional[str] = None, env: Optional[dict] = None,
          stdout=None) -> subprocess.Popen:
    """Start a process in its own session (so it and its children are stopped together)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdout=stdout or out, stderr=out, env=env,
                                start_new_session=True, stdin=subprocess.DEVNULL)
    finally:
        if log_path:
            out.close()
    _processes.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout_s: float = PROCESS_STOP_TIMEOUT_S) -> Optional[int]:
    """SIGTERM, wait, then SIGKILL the process group; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
    if proc in _processes:
        _processes.remove(proc)
    return proc.returncode


def agent_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "plumber_agent", *args]


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, resident bytes) of a process from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/statm") as fh:
        rss_pages = int(fh.read().split()[1])
    return cpu_s, rss_pages * os.sysconf("SC_PAGE_SIZE")


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)


def cleanup_all() -> None:
    for proc in list(_processes):
        with contextlib.suppress(Exception):
            stop(proc, 3.0)
    for name in list(_namespaces):
        _delete_netns(name)


def _on_signal(signum, _frame) -> None:
    cleanup_all()
    sys.exit(128 + signum)


atexit.register(cleanup_all)


def install_signal_cleanup() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def machine_description() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, kernel {os.uname().release}, "
            f"Python {sys.version.split()[0]}")


# ------------------------------------------------------------------------------------------------
# the fake API server and agent processes (simulated nodes)

GROUP_VERSION = "plumber.k8s.pf9.io/v1"
AGENT_READY_TIMEOUT_S = 120.0
STATUS_PATH = "/hostnetworks/{node}/status"


@contextlib.contextmanager
def fake_api(workdir: str) -> Iterator[tuple[object, str]]:
    """The in-repo fake API server (in this process, so its request log can be counted) and a
    kubeconfig for it; always stopped."""
    from tests.fakeapi.server import FakeApiServer
    # Without the CRD schema checks: the Python validation is the fake's cost, not the agent's.
    server = FakeApiServer(token="bench-token", schema_validation=False)
    server.start()
    try:
        yield server, server.kubeconfig(os.path.join(workdir, "kubeconfig"))
    finally:
        server.stop()


def add_node(server, name: str, labels: Optional[dict] = None) -> None:
    from tests.fakeapi.server import NODES
    server.put_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}}})


def put_template(server, name: str, spec: dict) -> dict:
    from tests.fakeapi.server import TEMPLATES
    return server.put_object(TEMPLATES, {"apiVersion": GROUP_VERSION, "kind": "HostNetworkTemplate",
                                         "metadata": {"name": name}, "spec": spec})


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # kube/client.py SA_DIR


@dataclass
class ServiceAccount:
    """What a DaemonSet pod gets to reach its API server: the service's address in the
    environment and a directory with `token` and `ca.crt` (mounted at SA_DIR in the pod)."""

    env: dict
    directory: str


def service_account(server, workdir: str) -> ServiceAccount:
    """The fake API server as a pod sees its cluster: its HTTPS listener (started here) as
    KUBERNETES_SERVICE_HOST/PORT, the bench token and the listener's CA in a directory."""
    from urllib.parse import urlparse
    url = urlparse(server.start_tls_listener())
    directory = os.path.join(workdir, "serviceaccount")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "token"), "w", encoding="utf-8") as fh:
        fh.write(server.token)
    with open(os.path.join(directory, "ca.crt"), "wb") as fh:
        fh.write(server.ca_pem)
    return ServiceAccount(env={"KUBERNETES_SERVICE_HOST": url.hostname,
                               "KUBERNETES_SERVICE_PORT": str(url.port)}, directory=directory)


# Runs the agent in a mount namespace of its own where the service-account directory is
# bind-mounted at SA_DIR, as kubelet mounts it into the pod; `exec` keeps the agent's pid.
_IN_POD_SH = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'


def in_pod_argv(account: ServiceAccount, argv: list[str]) -> list[str]:
    """`argv` run with the in-cluster configuration of a DaemonSet pod (the agent's
    KubeClient.in_cluster path, not a kubeconfig). The mount point must exist on the host:
    an empty directory is left there (removing it could detach another run's mount)."""
    os.makedirs(SA_DIR, exist_ok=True)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _IN_POD_SH, "sh",
            account.directory, SA_DIR, *argv]


class AgentNode:
    """One simulated node: an existing namespace, its own state dir and empty sysfs root, and a
    `plumber-agent run` process against the fake API server, through a kubeconfig or, with
    `account`, the in-cluster configuration a DaemonSet pod uses (in_pod_argv)."""

    def __init__(self, *, name: str, ns: str, workdir: str, kubeconfig: Optional[str] = None,
                 account: Optional[ServiceAccount] = None,
                 metrics_port: Optional[int] = None, extra_args: tuple = (),
                 log_args: tuple = ("--log-format", "text", "--log-level", "warning"),
                 env: Optional[dict] = None):
        """`log_args` go before `run` (B7 reads the agents' JSON info lines); `env`: more
        environment for the agent (B4's MALLOC_ARENA_MAX row)."""
        self.name, self.ns, self.account = name, ns, account
        self.state_dir = os.path.join(workdir, f"state-{name}")
        self.sysfs_root = os.path.join(workdir, f"sys-{name}")
        os.makedirs(self.sysfs_root, exist_ok=True)
        self.log_path = os.path.join(workdir, f"agent-{name}.log")
        where = ["--kubeconfig", kubeconfig] if account is None else []
        argv = [*log_args, "run", "--node-name", name, *where, "--netns", ns,
                "--sysfs-root", self.sysfs_root, "--state-dir", self.state_dir, *extra_args]
        if metrics_port:
            argv += ["--metrics-addr", f"127.0.0.1:{metrics_port}"]
        if account is None:
            self.proc = spawn(agent_argv(*argv), log_path=self.log_path,
                              env=agent_env(env))
        else:
            self.proc = spawn(in_pod_argv(account, agent_argv(*argv)), log_path=self.log_path,
                              env=agent_env({**account.env, **(env or {})},
                                            drop=("KUBECONFIG",)))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent {self.name} exited {self.proc.returncode}: "
                               f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        return ""

    def stop(self) -> Optional[int]:
        return stop(self.proc)


START_BATCH = 10  # agents started at once; each batch publishes its first status first


def start_fleet(stack: contextlib.ExitStack, server, *, work: str, kubeconfig: str, tag: str,
                count: int, labels: dict, nics: tuple[str, ...] = ("eth0",),
                log_args: Optional[tuple] = None) -> list["AgentNode"]:
    """`count` simulated nodes (a namespace each, with veth NICs `nics`, up; a Node object with
    `labels`; an agent process), started in batches of START_BATCH that must each publish their
    first status. Stops at the first batch that does not start (a machine short of memory): the
    nodes that started are returned and the caller reports how many."""
    nodes: list[AgentNode] = []
    log(f"{tag}: starting {count} agents")
    for start in range(0, count, START_BATCH):
        batch = []
        for i in range(start, min(count, start + START_BATCH)):
            name = f"bench-{tag.lower()}-{i:03d}"
            ns = stack.enter_context(netns(f"{tag.lower()}-{i}-"))
            for index, nic in enumerate(nics):
                run(["ip", "-n", ns, "link", "add", "name", nic, "type", "veth", "peer",
                     "name", f"peer{index}"])
                run(["ip", "-n", ns, "link", "set", nic, "up"])
            add_node(server, name, labels)
            extra = {"log_args": log_args} if log_args else {}
            node = AgentNode(name=name, ns=ns, workdir=work, kubeconfig=kubeconfig, **extra)
            stack.callback(node.stop)
            batch.append(node)
        try:
            wait_first_status(server, batch)
        except (RuntimeError, TimeoutError) as exc:
            log(f"{tag}: batch from {start} did not start: {exc}")
            break
        nodes += batch
    return nodes


@contextlib.contextmanager
def busy_node(stack: contextlib.ExitStack, tag: str, node_name: str, *,
              metrics_port: Optional[int] = None,
              before_agent: Optional[Callable[[str], None]] = None,
              in_cluster: bool = False) -> Iterator[tuple]:
    """B2-B4's node: a namespace with 1,000 links and 10k routes, the fake API server with the
    Node object, and one agent process that has published its first status. Yields
    (namespace, server, agent); everything is torn down by `stack`. `before_agent(ns)` runs
    once the namespace is populated, before anything else starts (for baselines). `in_cluster`:
    the agent uses the service-account path of a DaemonSet pod (AgentNode `account`), not a
    kubeconfig."""
    work = stack.enter_context(temp_dir(f"bench-{tag}-"))
    ns = stack.enter_context(netns(f"{tag}-"))
    log(f"{tag.upper()}: building 1000 links / 10k routes")
    populate(ns, links=1000, routes=10_000)
    if before_agent:
        before_agent(ns)
    server, kubeconfig = stack.enter_context(fake_api(work))
    add_node(server, node_name)
    account = service_account(server, work) if in_cluster else None
    node = AgentNode(name=node_name, ns=ns, workdir=work, kubeconfig=kubeconfig,
                     account=account, metrics_port=metrics_port)
    stack.callback(node.stop)
    wait_first_status(server, [node])
    yield ns, server, node


def status_patches(server, node: str, since: float = 0.0) -> list:
    path = STATUS_PATH.format(node=node)
    return [r for r in server.requests(method="PATCH", path_contains=path) if r.time >= since]


def wait_first_status(server, nodes: list, timeout_s: float = AGENT_READY_TIMEOUT_S) -> None:
    from tests.fakeapi.server import HOSTNETWORKS
    deadline = time.monotonic() + timeout_s
    pending = {n.name: n for n in nodes}
    while pending:
        for name in list(pending):
            pending[name].check_alive()
            obj = server.get(HOSTNETWORKS, name) if status_patches(server, name) else None
            if obj and obj.get("status"):
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no status from {sorted(pending)[:5]} within {timeout_s} s: "
                               f"{next(iter(pending.values())).log_tail()}")
        time.sleep(0.05)
