"""The fleet-rollout e2e scenarios' shared support (test_rollout.py and the modules that reuse its
cluster: test_rollout_stall.py; its checks: test_upgrade_uninstall.py, test_pools.py): a
module-scoped ten-node LOCAL cluster with short leases, reads of the Leases and of a template's
status, the agents' own logs turned into per-node rollout intervals (the limit is checked on what
the hosts went through), and the steps that hold two nodes mid-apply.

A test module takes the fixtures with `from tests.e2e.rollout import rollout_baseline,
rollout_cluster` (registered as `cluster` and `baseline`: one cluster per module).
"""
from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
import yaml

from tests.e2e.cluster import API_TIMEOUT_S, CONVERGE_TIMEOUT_S, snapshot_diff, template
from tests.e2e.steps import take_baseline
from tests.helpers.agent_env import REPO_ROOT, agent_env
from tests.helpers.wait import wait_for

NODE_COUNT = 10
NAMESPACE = "plumber-system"
SLOT_LEASE_S = 4
LEADER_LEASE_S = 3
AGENT_ARGS = ("--slot-lease-duration-s", str(SLOT_LEASE_S),
              "--leader-lease-duration-s", str(LEADER_LEASE_S), "--namespace", NAMESPACE)
EVERY_NODE = {"kubernetes.io/os": "linux"}  # the harness gives every simulated node this label
LIMIT = 2
STATUS_WRITER_LEASE = "plumber-status-writer"
SLOT_SELECTOR = "plumber.k8s.pf9.io/lease=rollout-slot"
TEMPLATE_ANNOTATION = "plumber.k8s.pf9.io/template"
PHASE_ANNOTATION = "plumber.k8s.pf9.io/phase"
GENERATION_ANNOTATION = "plumber.k8s.pf9.io/generation"
# A new leader writes within one leader lease after the old one died, plus the 1 s coalescing
# and a busy 2-core machine's scheduling.
STATUS_TAKEOVER_S = 20.0
# The kernel refuses a route through a gateway no address of the link reaches.
UNREACHABLE_GW = "192.0.2.1"
GW_ADDRESS = "192.0.2.10/24"  # the fix: an address on the link that makes the gateway on-link
EXECUTOR_LOGGER = "plumber_agent.host"  # the Executor logs through its Host's logger
AGENT_START_LINE = "----- agent start"  # what the harness writes to the log before each start


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", name="cluster")
def rollout_cluster(request) -> Iterator:
    """Ten simulated nodes (no Open vSwitch: nothing here needs it), agents with short leases."""
    from tests.e2e.harness import module_cluster
    yield from module_cluster(request, count=NODE_COUNT, agent_args=AGENT_ARGS, what="rollout")


@pytest.fixture(scope="module", name="baseline")
def rollout_baseline(cluster) -> dict:
    return take_baseline(cluster)


# ----------------------------------------------------------------------------------- API reads
def leases(api, *, selector: Optional[str] = None) -> list[dict]:
    """Leases of the agents' namespace, as plain dicts (like KubeApi's other reads)."""
    from kubernetes import client
    coordination = client.CoordinationV1Api(api.api_client)
    kwargs = {"label_selector": selector} if selector else {}
    response = coordination.list_namespaced_lease(NAMESPACE, _preload_content=False,
                                                  _request_timeout=API_TIMEOUT_S, **kwargs)
    return json.loads(response.data or b"{}").get("items") or []


def slot_leases(api, name: str) -> list[dict]:
    return [lease for lease in leases(api, selector=SLOT_SELECTOR)
            if (lease["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION) == name]


def holder(lease: dict) -> str:
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def slot_phase(lease: dict) -> str:
    return (lease["metadata"].get("annotations") or {}).get(PHASE_ANNOTATION, "")


def status_writer(api) -> str:
    for lease in leases(api):
        if lease["metadata"]["name"] == STATUS_WRITER_LEASE and holder(lease):
            return holder(lease)
    raise AssertionError(f"no holder of Lease {NAMESPACE}/{STATUS_WRITER_LEASE} "
                         f"(have {[lease['metadata']['name'] for lease in leases(api)]})")


def generation_of(steps, name: str) -> int:
    return steps.api.get_template(name)["metadata"]["generation"]


def entries(steps, name: str) -> dict[str, dict]:
    """Each node's status.templates[] entry for `name` (nodes without one left out)."""
    out = {}
    for node in steps.nodes:
        entry = steps.template_entry(node.name, name)
        if entry is not None:
            out[node.name] = entry
    return out


def states_at(steps, name: str, generation: int,
              nodes: Optional[list[str]] = None) -> dict[str, list[str]]:
    """state -> nodes whose entry is at `generation` ('stale' for any other generation)."""
    by_state: dict[str, list[str]] = {}
    have = entries(steps, name)
    for node in nodes or [n.name for n in steps.nodes]:
        entry = have.get(node)
        state = (entry or {}).get("state") if (entry or {}).get("observedGeneration") == generation \
            else "stale"
        by_state.setdefault(state or "stale", []).append(node)
    return by_state


def template_status(steps, name: str) -> dict:
    return (steps.api.get_template(name) or {}).get("status") or {}


def condition(status: dict, kind: str) -> dict:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    raise AssertionError(f"no condition {kind} in {status.get('conditions')}")


def assert_template_status(steps, name: str, *, phase: str, **counts: int) -> dict:
    """The template's status describes its current generation with this phase and counts."""
    status = template_status(steps, name)
    generation = generation_of(steps, name)
    nodes = status.get("nodes") or {}
    wrong = {k: nodes.get(k) for k, v in counts.items() if nodes.get(k) != v}
    if status.get("observedGeneration") != generation or status.get("phase") != phase or wrong:
        raise AssertionError(f"{name} status {status}; want generation {generation}, phase {phase}, "
                             f"counts {counts} (wrong: {wrong})")
    return status


def wait_template_status(steps, name: str, *, phase: str, timeout_s: float = CONVERGE_TIMEOUT_S,
                         **counts: int) -> dict:
    return wait_for(lambda: assert_template_status(steps, name, phase=phase, **counts),
                    timeout_s=timeout_s, what=f"{name} status {phase} {counts}")


def wait_all_applied(steps, obj: dict, nodes=None) -> None:
    for node in nodes or steps.nodes:
        steps.wait_applied(obj, node)


def event_on(steps, name: str, reason: str) -> dict:
    uid = steps.api.get_template(name)["metadata"]["uid"]
    found = [e for e in steps.api.events(reason=reason, involved_name=name)
             if (e.get("involvedObject") or e.get("regarding") or {}).get("uid") == uid]
    if not found:
        raise AssertionError(f"no {reason} Event on template {name} (uid {uid})")
    return found[-1]


class InvariantBroken(Exception):
    """Not an AssertionError on purpose: wait_for must not retry it."""


def holds_for(check, duration_s: float, *, what: str) -> None:
    """`check` keeps passing for `duration_s` (an invariant over time, not a wait for a state):
    polled by wait_for until the time is up; the first failure ends it at once."""
    deadline = time.monotonic() + duration_s

    def still_holds() -> bool:
        try:
            check()
        except AssertionError as exc:
            raise InvariantBroken(f"{what}: {exc}") from None
        return time.monotonic() >= deadline
    wait_for(still_holds, timeout_s=duration_s + 5.0, interval_s=0.2, what=what)


# ----------------------------------------------------------------------------------- agent logs
def _epoch(ts: str) -> float:
    """The agent's JSON log time (plumber_agent.logs.JsonFormatter: UTC, milliseconds)."""
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def log_marks(cluster) -> dict[str, int]:
    """Where each agent's log ends now: later reads see only what happens from here on."""
    return {node.name: node.log_path.stat().st_size if node.log_path.exists() else 0
            for node in cluster.nodes}


def log_records(node) -> list[tuple[int, dict]]:
    """The agent's JSON log lines with the byte offset each ends at; the harness's line before
    each (re)start of the agent as {"agent_start": True}; anything else that is not JSON is
    left out."""
    out = []
    offset = 0
    with open(node.log_path, "rb") as fh:
        for raw in fh:
            offset += len(raw)
            line = raw.decode(errors="replace")
            if line.startswith(AGENT_START_LINE):
                out.append((offset, {"agent_start": True}))
                continue
            if not line.startswith("{"):
                continue
            try:
                out.append((offset, json.loads(line)))
            except ValueError:
                continue  # a line cut by SIGKILL
    return out


def _action_templates(msg: str) -> list[str]:
    """Templates an executor line names: `apply  <action>  # template a`, `# drift; templates
    a, b`, `# cleanup (was a)` (what an edit of `a` no longer sets goes in the same pass)."""
    if "  # " not in msg:
        return []
    reason = msg.rsplit("  # ", 1)[1]
    # What follows the templates after "; " is the action's foreseen side effects and what it
    # disrupts (models/actions.py describe()).
    match = (re.match(r"^(?:drift; )?templates? ([^;]+)", reason)
             or re.match(r"^cleanup \(was ([^;)]+)\)", reason))  # an edit drops what it had set
    return [t.strip() for t in match.group(1).split(",")] if match else []


@dataclass
class Interval:
    node: str
    generation: int
    start: float
    end: Optional[float]  # None: still open (the agent died, or the log ends mid-apply)
    outcome: str  # applied | failed | fenced | open | killed
    actions: int = 0  # host actions of the template logged inside it
    first_action: Optional[float] = None  # when the first of them started (its log line)
    last_action: Optional[float] = None  # when the last of them started


def _is_cleanup(msg: str) -> bool:
    return msg.rsplit("  # ", 1)[-1].startswith("cleanup")


def rollout_intervals(cluster, marks: dict[str, int], name: str, generation: int,
                      *, killed_at: Optional[dict[str, float]] = None) -> tuple[list[Interval], list[str]]:
    """Per node, the [applying .. applied/failed] intervals of `name` at `generation` that began
    after `marks` (from its log, with the host actions inside each), and every host action of the
    template logged after `marks` OUTSIDE any interval of the template (by log order, exact
    within one process). An interval left open by an agent SIGKILLed at `killed_at[node]` ends
    there.

    One exemption, the design's "a waiting node keeps the last generation it applied, or
    nothing": a node whose apply of an earlier generation FAILED (never approved) puts back what
    that apply changed while it waits for a slot for the next one (`# cleanup (was ...)` lines)."""
    intervals: list[Interval] = []
    outside: list[str] = []
    for node in cluster.nodes:
        current: Optional[Interval] = None
        failed_before = False
        mark = marks.get(node.name, 0)
        for offset, record in log_records(node):
            msg = str(record.get("msg", ""))
            if record.get("agent_start"):
                if current is not None:  # the agent before this start died mid-apply
                    current.end, current.outcome = (killed_at or {}).get(node.name), "killed"
                    if current.generation == generation:
                        intervals.append(current)
                    current = None
                continue
            if record.get("rollout") and record.get("template") == name:
                found = re.search(r"generation (\d+)", msg)
                gen = int(found.group(1)) if found else -1
                if record["rollout"] == "applying":
                    if current is None:
                        current = Interval(node.name, gen, _epoch(record["ts"]), None, "open")
                elif current is not None:
                    current.end, current.outcome = _epoch(record["ts"]), record["rollout"]
                    failed_before = failed_before or current.outcome == "failed"
                    if offset > mark and current.generation == generation:
                        intervals.append(current)
                    current = None
            elif str(record.get("logger", "")).startswith(EXECUTOR_LOGGER) \
                    and msg.startswith("apply  ") and name in _action_templates(msg):
                if current is not None:
                    current.actions += 1
                    current.last_action = _epoch(record["ts"])
                    if current.first_action is None:
                        current.first_action = current.last_action
                elif offset > mark and not (failed_before and _is_cleanup(msg)):
                    outside.append(f"{node.name} {record.get('ts')}: {msg}")
        if current is not None and current.generation == generation:
            current.end = (killed_at or {}).get(node.name)
            intervals.append(current)
    return intervals, outside


def max_overlap(intervals: list[Interval]) -> tuple[int, float]:
    """The most intervals open at one instant, and when (an end sorts before a start at the
    same millisecond: the slot was released before the next node could see it free)."""
    points = []
    for interval in intervals:
        points.append((interval.start, 1))
        points.append((interval.end if interval.end is not None else float("inf"), -1))
    points.sort(key=lambda p: (p[0], p[1]))
    open_now, best, when = 0, 0, 0.0
    for at, delta in points:
        open_now += delta
        if open_now > best:
            best, when = open_now, at
    return best, when


def max_starting(intervals: list[Interval]) -> tuple[int, float]:
    """The most nodes inside their span of host action starts at one instant, and when. A
    span runs from an interval's first action start to its last, or on without end while the
    interval is still open (that node may start more); intervals that started none have no
    span. Closed spans: a start in the same millisecond as another node's last start counts
    both (the order within a millisecond is unknown)."""
    spans = [(i.node, i.first_action, i.last_action if i.end is not None or i.outcome != "open"
              else float("inf")) for i in intervals if i.actions]
    return max(((len({node for node, first, last in spans if first <= at <= last}), at)
                for _, at, _ in spans), default=(0, 0.0))


def assert_rollout_under_limit(cluster, marks, name: str, generation: int, limit: int, *,
                               nodes: Optional[list[str]] = None,
                               killed_at: Optional[dict[str, float]] = None,
                               starts: bool = False) -> list[Interval]:
    """What the agents did: every node in `nodes` applied `name` at `generation` inside an
    interval that ended `applied`, every host action of it lies in such an interval, and never
    more than `limit` intervals overlapped. `starts`: each interval counts from its first to
    its last host action START (what fencing bounds: an action already started runs to its
    end, README "Rollout"), and intervals that started none do not count."""
    intervals, outside = rollout_intervals(cluster, marks, name, generation, killed_at=killed_at)
    assert not outside, f"host actions of {name} outside any rollout interval: {outside[:5]}"
    applied = {i.node for i in intervals if i.outcome == "applied" and i.actions}
    missing = sorted(set(nodes if nodes is not None else [n.name for n in cluster.nodes])
                     - applied)
    assert not missing, (f"no interval with host actions ending 'applied' on {missing}: "
                         f"{[i for i in intervals if i.node in missing]}")
    if starts:
        most, when = max_starting(intervals)
        assert most <= limit, (
            f"{most} nodes started host actions of {name} at once (limit {limit}) at {when}: "
            f"{sorted((i.node, i.first_action, i.last_action, i.outcome) for i in intervals)}")
        return intervals
    most, when = max_overlap(intervals)
    assert most <= limit, (f"{most} nodes applied {name} at once (limit {limit}) at {when}: "
                           f"{sorted((i.node, i.start, i.end) for i in intervals)}")
    return intervals


# ----------------------------------------------------------------------------------- host checks
def assert_untouched(steps, nodes: list[str]) -> None:
    for name in nodes:
        diff = snapshot_diff(steps.baseline["snapshots"][name], steps.cluster.node(name).snapshot())
        assert not diff, f"{name} waits, yet its host changed: {diff}"


def failing_spec(limit: int = LIMIT) -> dict:
    """An MTU (applies) and a route through a gateway eno2 cannot reach (the kernel refuses it
    with ENETUNREACH): Failed on every node, with the kernel's answer in the message."""
    return {"interfaceConfig": [{"name": "eno2", "mtu": 9000}],
            "routes": {"ipv4": [{"dst": "10.71.0.0/16", "gw": UNREACHABLE_GW, "dev": "eno2"}]},
            "rollout": {"maxUnavailable": limit}}


def fixed_interfaces() -> list[dict]:
    return [{"name": "eno2", "mtu": 9000, "ipv4": {"address": [GW_ADDRESS]}}]


def wait_halted(steps, name: str, generation: int) -> tuple[list[str], list[str]]:
    """Exactly LIMIT nodes Failed (with the kernel's message) and the rest Waiting."""
    def halted():
        by_state = states_at(steps, name, generation)
        failed, waiting = by_state.get("Failed", []), by_state.get("Waiting", [])
        if len(failed) != LIMIT or len(waiting) != NODE_COUNT - LIMIT:
            raise AssertionError(f"want {LIMIT} Failed and {NODE_COUNT - LIMIT} Waiting: {by_state}")
        return failed, waiting
    return wait_for(halted, timeout_s=CONVERGE_TIMEOUT_S, what=f"{name} halted")


# =================================================================================== scenarios
def plan_lines(node, obj: dict, workdir: Path) -> list[str]:
    """What `plumber-agent plan` prints for `obj` on this node (its action lines)."""
    path = workdir / f"plan-{node.name}.yaml"
    path.write_text(yaml.safe_dump(obj))
    labels = ",".join(f"{k}={v}" for k, v in EVERY_NODE.items())
    argv = [sys.executable, "-m", "plumber_agent", "--log-format", "text", "plan", "-f", str(path),
            "--node-name", node.name, "--node-labels", labels, "--netns", node.netns,
            "--sysfs-root", node.sysfs_root, "--ovsdb", node.ovsdb,
            "--state-dir", str(node.state_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd=str(REPO_ROOT), env=agent_env(drop=("KUBECONFIG",)))
    assert proc.returncode in (0, 2), f"plumber-agent plan: {proc.stderr[-2000:]}"  # 2: changes
    return [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]


SRIOV_SPEC = {"sriovConfig": [{"pfName": "eno1", "numVfs": 4}], "rollout": {"maxUnavailable": LIMIT}}


def need_sriov(steps) -> None:
    if not steps.caps.sriov:
        pytest.skip("needs the emulated SR-IOV sysfs to hold an apply in the middle: "
                    + steps.caps.why_not.get("sriov", ""))


def hold_two_mid_apply(steps, name: str, spec: dict = SRIOV_SPEC) -> list[str]:
    """Apply `name` (`spec`: SRIOV_SPEC, or one that starts with it) while new VFs are parked
    on every node (the caller unparks): whoever gets a slot is provably mid-apply (it wrote
    sriov_numvfs and waits for the VFs). Returns the two slot holders."""
    writes_before = {n.name: len(n.sysfs_writes("sriov_numvfs")) for n in steps.nodes}
    for node in steps.nodes:
        node.pause_sriov(True)
    steps.apply(template(name, spec, node_selector=EVERY_NODE))

    def two_stuck_holders():
        slots = [s for s in slot_leases(steps.api, name) if slot_phase(s) == "Applying"]
        holders = sorted(holder(s) for s in slots)
        if len(holders) != LIMIT:
            raise AssertionError(f"want {LIMIT} Applying slots: {slots}")
        for who in holders:
            if len(steps.cluster.node(who).sysfs_writes("sriov_numvfs")) <= writes_before[who]:
                raise AssertionError(f"{who} holds a slot but has not written sriov_numvfs yet")
        return holders
    return wait_for(two_stuck_holders, timeout_s=CONVERGE_TIMEOUT_S,
                    what="two nodes mid-apply under slots")


def unpark(steps) -> None:
    for node in steps.nodes:
        node.pause_sriov(False)
