"""The rollout limit under a stalled API server and a loaded CPU, across ten real agents (issue
25: the e2e rollout tests overran maxUnavailable on a busy two-core machine).

One holder's Lease writes are held inside the fake API server (`stall_writes`, as a request
waiting in a slow server's priority-and-fairness queue or on a slow etcd) while it is in the
middle of its apply and the CPU is kept busy by as many busy loops as there are cores. Its slot
goes quiet, a waiting node takes it over after the duration, and then the stalled holder's next
host action comes due. Without fencing it ran that action (three nodes changing their hosts
under a limit of two: docs/rollout.md "Reproduced on ..."); with fencing it does not start it,
says why in its per-node state, loses the slot once its held renewal is answered (409), and
applies later under a slot of its own.

How the middle of an apply is held: new VFs are parked in the emulated sysfs (as in
test_rollout's slow-holder tests), so a holder has written sriov_numvfs and waits for its VFs;
its MTU and address actions come after. What is measured is when each node STARTED host
actions of the template, from the agents' own logs: the VF write the stalled holder started
before its deadline runs to its end (the README's "an action already started runs to its
end"), the MTU after it must not start.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from tests.e2e import rollout as rollout_e2e
from tests.e2e.cluster import CONVERGE_TIMEOUT_S, template
from tests.e2e.rollout import (EVERY_NODE, LIMIT, SRIOV_SPEC, assert_rollout_under_limit,
                               generation_of, holder, log_marks, log_records, slot_leases,
                               status_writer, wait_all_applied)
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

# The same module-scoped ten-node cluster (4 s slots, 3 s leader lease) and baseline fixtures,
# one instance for this module.
cluster = rollout_e2e.rollout_cluster
baseline = rollout_e2e.rollout_baseline

# The MTU and the address are the actions after the VF write.
STALL_SPEC = {**SRIOV_SPEC, "interfaceConfig": [{"name": "enp3s0f1", "mtu": 1600,
                                                 "ipv4": {"address": ["10.93.0.1/24"]}}]}
MTU_NIC = "enp3s0f1"
VF_PF = "eno1"
WANT_VFS = SRIOV_SPEC["sriovConfig"][0]["numVfs"]
BUSY_LOOP = "while True:\n    pass\n"
LOAD_STOP_TIMEOUT_S = 10.0
FENCE_REASON = "past the renew deadline"


@pytest.fixture
def cpu_load() -> Iterator[int]:
    """As many busy loops as cores (at least two): the agents' renewer threads, the reconcilers
    and the API server compete for the CPU, as in the run issue 25 describes (twenty agents of
    the pool tests before it)."""
    count = max(2, os.cpu_count() or 1)
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        yield count
    finally:
        for loop in loops:
            loop.send_signal(signal.SIGKILL)
        for loop in loops:
            loop.wait(LOAD_STOP_TIMEOUT_S)


def _log_lines(node, marks: dict[str, int], *, contains: str) -> list[str]:
    """The messages of `node`'s JSON log lines after `marks` that contain `contains`."""
    mark = marks.get(node.name, 0)
    return [str(record.get("msg", "")) for offset, record in log_records(node)
            if offset > mark and contains in str(record.get("msg", ""))]


def _interval_done(node, marks: dict[str, int], name: str) -> bool:
    """Has `node` ended an apply of `name` (applied, failed or fenced) since `marks`?"""
    mark = marks.get(node.name, 0)
    return any(offset > mark and record.get("template") == name
               and record.get("rollout") in ("applied", "failed", "fenced")
               for offset, record in log_records(node))


def test_stalled_holder_under_cpu_load_stops_and_the_limit_holds(steps, cpu_load):
    rollout_e2e.need_sriov(steps)
    server = getattr(steps.cluster, "server", None)
    if server is None:
        pytest.skip("stalling one holder's Lease writes needs the in-repo fake API server")
    name = "e2e-rollout-stall"
    obj = template(name, STALL_SPEC, node_selector=EVERY_NODE)
    mtu_before = {n.name: n.mtu(MTU_NIC) for n in steps.nodes}
    marks = log_marks(steps.cluster)
    stall = None
    try:
        holders = rollout_e2e.hold_two_mid_apply(steps, name, spec=STALL_SPEC)
        writer = wait_for(lambda: status_writer(steps.api), timeout_s=CONVERGE_TIMEOUT_S,
                          what="a status writer")
        # Not the status writer if one of them is not: its leader Lease would stall too.
        victim = next((h for h in holders if h != writer), holders[0])
        node = steps.cluster.node(victim)
        stall = server.stall_writes("PUT", "/leases/", holder=victim)
        wait_for(lambda: stall.stalled >= 1, timeout_s=CONVERGE_TIMEOUT_S,
                 what=f"a slot renewal of {victim} held inside the API server")

        def taken_over() -> str:
            now = {holder(s) for s in slot_leases(steps.api, name)}
            successors = now - set(holders)
            if victim in now or not successors:
                raise AssertionError(f"the slot of {victim} not taken over yet: {sorted(now)}")
            return successors.pop()
        successor = wait_for(taken_over, timeout_s=CONVERGE_TIMEOUT_S,
                             what=f"a waiting node taking the quiet slot of {victim} over")
        wait_for(lambda: steps.cluster.node(successor).sysfs_writes("sriov_numvfs"),
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"{successor} applying under the slot")

        # The stalled holder's VFs appear: its next host action (the MTU) comes due now, while
        # two other nodes hold the template's two slots.
        node.pause_sriov(False)
        wait_for(lambda: _interval_done(node, marks, name), timeout_s=CONVERGE_TIMEOUT_S,
                 what=f"{victim} ending its apply of {name}")
        generation = generation_of(steps, name)
        assert_rollout_under_limit(steps.cluster, marks, name, generation, LIMIT,
                                   nodes=[], starts=True)

        # It says so, truthfully: Failed, not started, why; what it did start ran to its end.
        def fenced_entry() -> dict:
            return steps.assert_state(victim, name, "Failed",
                                      contains=["not started", FENCE_REASON])
        entry = wait_for(fenced_entry, timeout_s=CONVERGE_TIMEOUT_S, interval_s=0.1,
                         what=f"{victim} reporting {name} fenced")
        assert node.mtu(MTU_NIC) == mtu_before[victim], \
            f"{victim} changed the MTU of {MTU_NIC} on a slot it no longer held: {entry}"
        assert node.num_vfs(node.pf(VF_PF).pci_addr) == WANT_VFS, entry
        assert _log_lines(node, marks, contains="not started"), "no action was held back"
    finally:
        if stall is not None:
            stall.release()
        rollout_e2e.unpark(steps)

    # The stall over: its held renewal is answered 409 (the slot moved on), it waits for a
    # slot, and the rollout completes on all ten.
    wait_all_applied(steps, obj)
    assert_rollout_under_limit(steps.cluster, marks, name, generation_of(steps, name), LIMIT,
                               starts=True)
    assert _log_lines(node, marks, contains="lost rollout slot"), \
        f"{victim} never learned it lost its slot"
    deleted = [f"{n.name}: {line}" for n in steps.cluster.nodes
               for line in _log_lines(n, marks, contains="deleted stale rollout slot")]
    assert not deleted, f"the status writer deleted slots of live holders: {deleted}"
