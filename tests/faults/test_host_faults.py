"""Host-side faults against the real agent: a crash at every step of a multi-phase apply,
a torn or corrupt ledger, two agents for one node, sysfs writes that fail or hang, and
ovs-vswitchd killed mid-change. Each test states its invariant."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from plumber_agent.host.ledger import JOURNAL_FILE, LEDGER_FILE, Ledger, read_records
from tests.support.agent_proc import (agent_argv, agent_process, host_snapshot, read_hostnetwork,
                                     run_once, template_states, write_templates)
from tests.helpers.netns import netns, veth_pair
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

CONVERGE_S = 60.0
APPLY_LINE = re.compile(r"\bapply\s{2}")

# Several phases: link MTUs, addresses on two links, a route -- each its own host action.
MULTI_PHASE = {"interfaceConfig": [
    {"name": "eth1", "mtu": 1400, "ipv4": {"address": ["10.61.0.1/24", "10.61.1.1/24"]}},
    {"name": "eth2", "mtu": 1300, "ipv4": {"address": ["10.62.0.1/24"]}}],
    "routes": {"ipv4": [{"dst": "10.63.0.0/16", "gw": "10.61.0.254"},
                        {"dst": "10.64.0.0/16", "dev": "eth2"}]}}


def fresh_node():
    """A context manager: a new namespace with the same veths as the node_ns fixture."""
    ctx = netns()
    name = ctx.__enter__()
    veth_pair(name, "eth1", "peer1")
    veth_pair(name, "eth2", "peer2")
    return ctx, name


def apply_count(log: str) -> int:
    return len(APPLY_LINE.findall(log))


def ledger_records(state_dir) -> dict:
    return read_records(state_dir)


def snapshot_the_ledger(state) -> Path:
    """Compact the journal into ledger.json (what the lock holder does when it closes)."""
    led = Ledger(state)
    assert led.acquire()
    led.release_lock()
    return Path(state) / LEDGER_FILE


def test_sigkill_at_every_step_of_a_multi_phase_apply(tmp_path, static_sysfs):
    """Invariant, for every N: an agent SIGKILLed right after logging its Nth host action and
    then restarted converges to the same host as an uninterrupted run (no duplicate addresses or
    routes, template Applied), and deleting the template afterwards returns the host EXACTLY to
    its state before the first run (nothing the crash interrupted is lost from the ledger)."""
    tdir = write_templates(tmp_path / "templates", {"multi": MULTI_PHASE})
    # Reference: one uninterrupted run on a fresh node.
    ctx, ns = fresh_node()
    try:
        pristine = host_snapshot(ns)
        proc = run_once(netns=ns, state_dir=tmp_path / "ref-state", sysfs_root=static_sysfs,
                        templates=tdir, output=tmp_path / "ref.yaml")
        assert proc.returncode == 0, proc.stderr[-3000:]
        reference = host_snapshot(ns)
        steps = apply_count(proc.stdout + proc.stderr)
    finally:
        ctx.__exit__(None, None, None)
    assert steps >= 6, f"expected a multi-step apply, got {steps} actions"
    failures = []
    for n in range(1, steps + 1):
        ctx, ns = fresh_node()
        try:
            state = tmp_path / f"state-{n}"
            argv = agent_argv(netns=ns, state_dir=state, sysfs_root=static_sysfs, templates=tdir,
                              output=tmp_path / f"hn-{n}.yaml", extra=("--no-monitor",))
            with agent_process(argv, tmp_path / f"agent-{n}.log") as agent:
                wait_for(lambda: apply_count(agent.log_text()) >= n, timeout_s=CONVERGE_S,
                         what=f"host action {n}", on_timeout=agent.log_text)
                agent.kill(signal.SIGKILL)
                agent.wait_exit(10)
            proc = run_once(netns=ns, state_dir=state, sysfs_root=static_sysfs, templates=tdir,
                            output=tmp_path / f"hn-{n}.yaml")
            converged = host_snapshot(ns)
            states = template_states(read_hostnetwork(tmp_path / f"hn-{n}.yaml"))
            empty = write_templates(tmp_path / f"empty-{n}", {})
            cleanup = run_once(netns=ns, state_dir=state, sysfs_root=static_sysfs,
                               templates=empty, output=tmp_path / f"hn-clean-{n}.yaml",
                               extra=("--allow-empty-templates",))
            restored = host_snapshot(ns)
            if proc.returncode != 0 or states.get("multi", {}).get("state") != "Applied":
                failures.append(f"step {n}: restart did not converge: {states} "
                                f"{proc.stderr[-800:]}")
            elif converged != reference:
                failures.append(f"step {n}: converged host differs from the reference")
            elif cleanup.returncode != 0 or restored != pristine:
                failures.append(f"step {n}: cleanup left the host different from before: "
                                f"{_diff(pristine, restored)}")
        finally:
            ctx.__exit__(None, None, None)
    assert not failures, "\n".join(failures)


def _diff(a: dict, b: dict) -> str:
    out = []
    for key in a:
        gone, new = set(a[key]) - set(b[key]), set(b[key]) - set(a[key])
        if gone or new:
            out.append(f"{key}: missing {sorted(gone)} extra {sorted(new)}")
    return "; ".join(out)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong-shape", "empty",
                                    "journal-middle"])
def test_corrupt_ledger_deletes_nothing_and_is_reported(tmp_path, node_ns, static_sysfs, damage):
    """Invariant: with the ledger torn or corrupt the agent starts from an empty ledger, deletes
    or restores NOTHING (a VLAN-less host: the previously applied MTU and addresses stay even
    though the template is gone), keeps a copy of the bad file, says so in its log, and does not
    crash (exit code 0 or 1, no traceback). The snapshot damaged, or a journal line damaged with
    intact ones after it (a torn LAST line is no corruption: it is dropped)."""
    state = tmp_path / "state"
    tdir = write_templates(tmp_path / "t", {"t1": MULTI_PHASE})
    first = run_once(netns=node_ns, state_dir=state, sysfs_root=static_sysfs, templates=tdir,
                     output=tmp_path / "hn.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    applied = host_snapshot(node_ns)
    if damage == "journal-middle":
        journal = state / JOURNAL_FILE
        lines = journal.read_bytes().splitlines(keepends=True)
        assert len(lines) > 2, "the run wrote too few ledger lines to damage one in the middle"
        damaged = lines[1][:9] + b"[" + lines[1][10:]  # its checksum no longer matches
        journal.write_bytes(b"".join([lines[0], damaged] + lines[2:]))
        kept_aside = "ledger.journal.corrupt-*"
    else:
        ledger = snapshot_the_ledger(state)
        text = ledger.read_text()
        ledger.write_text({"truncated": text[: len(text) // 2], "garbage": "\x00\xff{{{not json",
                           "wrong-shape": json.dumps({"version": 1, "records": []}),
                           "empty": ""}[damage])
        kept_aside = "ledger.json.corrupt-*"
    empty = write_templates(tmp_path / "none", {})
    proc = run_once(netns=node_ns, state_dir=state, sysfs_root=static_sysfs, templates=empty,
                    output=tmp_path / "hn2.yaml", extra=("--allow-empty-templates",))
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 1)
    assert host_snapshot(node_ns) == applied, "something was undone from a corrupt ledger"
    assert list(state.glob(kept_aside)), "the corrupt ledger was not kept aside"
    assert "corrupt" in (proc.stdout + proc.stderr).lower()


def test_two_agents_for_one_node_only_one_acts(tmp_path, node_ns, static_sysfs):
    """Invariant: a second agent started with the same state dir (same node) refuses to act --
    it exits non-zero naming the ledger lock, makes no host change -- while the first keeps
    running and converging."""
    tdir = write_templates(tmp_path / "t", {"t1": {"interfaceConfig": [
        {"name": "eth1", "mtu": 1400}]}})
    state = tmp_path / "state"
    first = agent_argv(netns=node_ns, state_dir=state, sysfs_root=static_sysfs, templates=tdir,
                       output=tmp_path / "hn1.yaml", extra=("--no-monitor",))
    with agent_process(first, tmp_path / "a1.log") as a1:
        wait_for(lambda: template_states(read_hostnetwork(tmp_path / "hn1.yaml")).get(
            "t1", {}).get("state") == "Applied", timeout_s=CONVERGE_S, what="first agent applied", on_timeout=a1.log_text)
        before = host_snapshot(node_ns)
        write_templates(tdir, {"t1": {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]},
                               "t2": {"interfaceConfig": [{"name": "eth2", "mtu": 1300}]}})
        second = agent_argv(netns=node_ns, state_dir=state, sysfs_root=static_sysfs,
                            templates=tdir, output=tmp_path / "hn2.yaml", once=True)
        proc = run_once(netns=node_ns, state_dir=state, sysfs_root=static_sysfs, templates=tdir,
                        output=tmp_path / "hn2.yaml")
        assert proc.returncode != 0
        assert "lock" in (proc.stdout + proc.stderr).lower()
        assert a1.alive(), a1.log_text()[-3000:]
        del second
        # Only the first agent acts on the change (it polls the template directory).
        wait_for(lambda: template_states(read_hostnetwork(tmp_path / "hn1.yaml")).get(
            "t2", {}).get("state") == "Applied", timeout_s=CONVERGE_S, what="first agent applied t2",
            on_timeout=a1.log_text)
        assert before != host_snapshot(node_ns)


# -------------------------------------------------------------------------------------------
# sysfs faults through the SR-IOV emulator (FUSE)

SYSFS_FAULTS = [
    ("EBUSY", {"numvfs_errno": "EBUSY"}, "EBUSY"),
    ("ENOSPC", {"enospc": True}, "ENOSPC"),
    ("EROFS", {"erofs": True}, "read-only"),
    # First pass: "did not finish within"; later passes: "still blocked ... looks hung".
    ("blocking", {"block_writes": ["sriov_numvfs"]}, "hung"),
]


@pytest.fixture
def emu(tmp_path):
    from tests.sriov_emu import emulated_sysfs, fuse_unusable_reason
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    with emulated_sysfs(tmp_path, preset="seed") as fs:
        yield fs


@pytest.mark.parametrize("name,knobs,expect", SYSFS_FAULTS, ids=[f[0] for f in SYSFS_FAULTS])
def test_sysfs_fault_is_reported_then_recovers(tmp_path, node_ns, emu, name, knobs, expect):
    """Invariant: a sysfs write refused with EBUSY/ENOSPC/EROFS, or one that blocks, makes the
    template Failed with a message naming the cause, is bounded in time (the agent exits from
    --once; a blocked write is abandoned), records nothing in the ledger for the failed change,
    and once the fault clears the next run converges."""
    from tests.support.agent_proc import AGENT_ONCE_TIMEOUT_S  # noqa: F401  (the bound)
    tdir = write_templates(tmp_path / "t", {"vfs": {"sriovConfig": [
        {"pfName": "eno1", "numVfs": 2}]}})
    pf = "0000:01:00.0"
    before = emu.read("bus", "pci", "devices", pf, "sriov_numvfs").strip()
    emu.set_knobs(**knobs)
    out = tmp_path / "hn.yaml"
    if name == "blocking":
        # A write blocked in the kernel holds its thread (and so the process) until the driver
        # answers: the agent must still publish a Failed status within its write timeout and
        # finish its pass; the process can only exit once the write is released.
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=emu.root,
                          templates=tdir, output=out, once=True)
        with agent_process(argv, tmp_path / "agent.log") as agent:
            try:
                wait_for(lambda: template_states(read_hostnetwork(out)).get("vfs"), timeout_s=90,
                         what="a status while the sysfs write is blocked", on_timeout=agent.log_text)
            finally:
                emu.set_knobs(block_writes=None)
            code = agent.wait_exit(60)
        assert code == 1, agent.log_text()[-3000:]
        knobs = {}
    else:
        proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=emu.root,
                        templates=tdir, output=out)
        assert proc.returncode == 1, proc.stderr[-3000:]
    states = template_states(read_hostnetwork(out))
    assert states["vfs"]["state"] == "Failed", states
    assert expect.lower() in states["vfs"]["message"].lower(), states["vfs"]
    # Nothing is owned for a write the kernel refused. A write that blocked may still land
    # after the agent gave up, so its intent stays recorded (pending, with the prior count) and
    # a late change is still undone when the template goes away.
    rec = ledger_records(tmp_path / "state").get("numvfs:" + pf)
    if name == "blocking":
        assert rec is not None and rec.get("pending") and rec["prior"] == 0, rec
    else:
        assert rec is None, rec
    emu.set_knobs(**{k: None for k in knobs})
    if name != "blocking":
        assert emu.read("bus", "pci", "devices", pf, "sriov_numvfs").strip() == before
    proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=emu.root,
                    templates=tdir, output=tmp_path / "hn.yaml")
    states = template_states(read_hostnetwork(tmp_path / "hn.yaml"))
    assert proc.returncode == 0 and states["vfs"]["state"] == "Applied", (
        states, proc.stderr[-3000:])
    assert emu.read("bus", "pci", "devices", pf, "sriov_numvfs").strip() == "2"


# -------------------------------------------------------------------------------------------
# OVS daemons killed mid-change


@pytest.mark.ovs
@pytest.mark.parametrize("victim", ["ovs-vswitchd", "ovsdb-server"])
def test_ovs_daemon_killed_mid_change(tmp_path, node_ns, static_sysfs, victim):
    """Invariant: with an OVS daemon dead the agent stays up and reports the bridge template as
    not applied (Failed, naming OVS) instead of claiming success; no untagged bridge is touched;
    when OVS is back the next passes converge: the bridge exists, tagged as ours, exactly once."""
    from tests.helpers.ovs import userspace_ovs
    with userspace_ovs(tmp_path / "ovs", netns=node_ns) as ovs:
        ovs.vsctl("add-br", "foreign0", "--", "set", "Bridge", "foreign0",
                  "datapath_type=netdev")
        tdir = write_templates(tmp_path / "t", {"br": {"ovsConfig": [
            {"bridgeName": "br-test", "nodeInterface": "eth1",
             "params": {"datapathType": "netdev"}}]}})
        out = tmp_path / "hn.yaml"
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                          templates=tdir, output=out,
                          extra=("--ovsdb", f"unix:{ovs.db_sock}", "--resync-period-s", "2",
                                 "--no-monitor"))
        (ovs.kill_vswitchd if victim == "ovs-vswitchd" else ovs.kill_ovsdb)()
        with agent_process(argv, tmp_path / "agent.log") as agent:
            wait_for(lambda: template_states(read_hostnetwork(out)).get("br", {}).get("state")
                     == "Failed", timeout_s=CONVERGE_S, what="bridge template Failed while OVS is down",
                     on_timeout=agent.log_text)
            assert agent.alive()
            # "Restart OVS": the fixture re-creates its database on start, so the foreign
            # bridge is put back the way its owner would.
            ovs.stop()
            for db in Path(ovs.db_sock).parent.glob("conf.db*"):
                db.unlink()
            ovs.start()
            ovs.vsctl("add-br", "foreign0", "--", "set", "Bridge", "foreign0",
                      "datapath_type=netdev")
            wait_for(lambda: template_states(read_hostnetwork(out)).get("br", {}).get("state")
                     == "Applied", timeout_s=CONVERGE_S, what="bridge template Applied after OVS restart",
                     on_timeout=agent.log_text)
            assert agent.alive()
        bridges = ovs.vsctl("list-br").stdout.split()
        assert bridges.count("br-test") == 1 and "foreign0" in bridges
        assert "plumber-managed" in ovs.vsctl("get", "Bridge", "br-test", "external_ids").stdout
