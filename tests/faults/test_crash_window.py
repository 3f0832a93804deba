"""The crash window between a host change and its ledger record, on a real kernel.

Why: the executor writes a pending (write-ahead) ledger record before every creating/changing
action and confirms it afterwards; a SIGKILL right after the kernel applied the change must still
leave a record that owns it, so a restarted agent undoes it once the template is gone. Here the
real Host (Netlink in a throw-away namespace, a static sysfs tree, no OVS) is "killed" at our own
driver seam: the wrapped Netlink method calls through to the kernel and then raises a
BaseException nothing in the agent catches, so neither the confirm nor anything after it runs.
"""
from __future__ import annotations

import pytest

from plumber_agent.host import Host
from plumber_agent.reconciler import Reconciler, SyncOutcome
from tests.helpers.netns import ip_json
from tests.support.fakehost import ListSource, SimulatedCrash, make_template

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

TEMPLATE = make_template("crash-window", {"interfaceConfig": [
    {"name": "eth1", "mtu": 1400, "ipv4": {"address": ["10.71.0.1/24"]}}]})


class CrashAfter:
    """Wraps the Netlink driver (our seam): `method` reaches the kernel, then the 'agent' dies."""

    def __init__(self, inner, method: str):
        self._inner, self._method = inner, method
        self.fired = False

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            attr(*args, **kwargs)
            self.fired = True
            raise SimulatedCrash(f"killed right after {name}{args}")
        return call


def real_host(ns, state_dir, sysfs_root, ovs_sock) -> Host:
    host = Host.for_node(netns=ns, sysfs_root=str(sysfs_root), ovsdb=f"unix:{ovs_sock}",
                         state_dir=str(state_dir))
    assert host.ledger.acquire(), "another ledger holds the lock"
    return host


def reconcile(host: Host, templates) -> None:
    """The agent's own converge loop (plan, execute, re-plan until empty), on the real host."""
    outcome = SyncOutcome()
    run = Reconciler(host=host, source=ListSource(templates), publish=lambda status: None
                     ).converge(templates, {}, outcome)
    assert outcome.ok, outcome.failures
    assert run.final is not None and not run.final.actions, "not converged"


def eth1(ns) -> tuple[int, list[str]]:
    (link,) = ip_json(ns, "addr", "show", "dev", "eth1")
    addrs = sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                   if a.get("family") == "inet")
    return link["mtu"], addrs


@pytest.mark.parametrize("method", ["set_mtu", "add_address"])
def test_crash_right_after_the_host_change_is_undone_after_restart(node_ns, static_sysfs,
                                                                   tmp_path, method):
    state = tmp_path / "state"
    before = eth1(node_ns)
    assert before == (1500, [])
    first = real_host(node_ns, state, static_sysfs, tmp_path / "no-ovs.sock")
    crashing = CrashAfter(first.netlink, method)
    dying = Host(crashing, first.sysfs, first.ovs, first.ledger)
    try:
        with pytest.raises(SimulatedCrash):
            reconcile(dying, [TEMPLATE])
    finally:
        first.close()  # what the kernel does for a killed process: sockets and flock go
    assert crashing.fired
    mtu, addrs = eth1(node_ns)
    assert mtu == 1400  # set_mtu runs first, so it happened in both cases
    assert addrs == (["10.71.0.1/24"] if method == "add_address" else [])

    second = real_host(node_ns, state, static_sysfs, tmp_path / "no-ovs.sock")
    try:
        mtu_key, addr_key = "mtu:eth1", "addr:eth1:10.71.0.1/24"
        # The interrupted change is owned. Killed at set_mtu, the address's intent is pending
        # too: it was written ahead in the same batch (executor.py INTENT_GROUP_ACTIONS) and its
        # change never started; cleanup finds the address absent and forgets it.
        assert second.ledger.pending_keys() == (sorted([mtu_key, addr_key])
                                                if method == "set_mtu" else [addr_key])
        reconcile(second, [])  # the template is gone
        assert eth1(node_ns) == before
        assert second.ledger.records() == {}
    finally:
        second.close()
