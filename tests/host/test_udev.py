"""The udev watcher: scripted uevents through the UdevSource seam (relevance, one pass per
burst, errors survived, the echo of our own sriov_numvfs write), and the real pyudev source
receiving kernel uevents for veths made in a throw-away namespace."""
from __future__ import annotations

import errno
import os
import queue as queue_mod
import threading
from types import SimpleNamespace

import pytest

from plumber_agent.agent import HOST_EVENT_KEY, MONITOR_DEBOUNCE_S, NODE_KEY, HostEvents, _worker
from plumber_agent.clock import FakeClock, RealClock
from plumber_agent.host.netlink import open_netns_sockets
from plumber_agent.host.udev import (LOST_ACTION, LOST_EVENTS_DESCRIPTION, PyudevSource,
                                     SriovUdevWatcher, UdevEvent, open_pyudev_monitor,
                                     udev_thread, udev_wanted)
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from plumber_agent.workqueue import WorkQueue
from tests.helpers.netns import ip
from tests.helpers.wait import wait_for
from tests.support.fakehost import ListSource, Node, make_template, seed_host

WAIT_BOUND_S = 10.0

PF = "0000:01:00.1"          # eno2 of seed_host()
OTHER_PF = "0000:01:00.0"    # eno1
PLAIN = "0000:00:1f.3"       # an audio controller: no SR-IOV
VF0 = "0000:02:0a.0"


class SysfsTree:
    """A minimal sysfs: bus/pci/devices/<addr> with sriov_totalvfs (PF) or physfn (VF)."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.devices, exist_ok=True)

    @property
    def devices(self) -> str:
        return os.path.join(self.root, "bus", "pci", "devices")

    def path(self, addr: str) -> str:
        return os.path.join(self.devices, addr)

    def plain(self, addr: str) -> str:
        os.makedirs(self.path(addr), exist_ok=True)
        return self.path(addr)

    def pf(self, addr: str, total_vfs: int = 8) -> str:
        with open(os.path.join(self.plain(addr), "sriov_totalvfs"), "w") as fh:
            fh.write(f"{total_vfs}\n")
        return self.path(addr)

    def vf(self, addr: str, pf: str) -> str:
        link = os.path.join(self.plain(addr), "physfn")
        if not os.path.islink(link):
            os.symlink(os.path.join("..", pf), link)
        return self.path(addr)

    def remove(self, addr: str) -> str:
        for name in os.listdir(self.path(addr)):
            os.unlink(os.path.join(self.path(addr), name))
        os.rmdir(self.path(addr))
        return self.path(addr)


class ScriptedSource:
    """UdevSource from a list; after it, optionally waits for pushed events until stopped. An
    item may be a callable: it makes the change (after the watcher started) and returns the
    uevent the kernel would send for it."""

    def __init__(self, events=(), *, keep_open: bool = False):
        self.pending: queue_mod.Queue = queue_mod.Queue()
        for event in events:
            self.pending.put(event)
        self.keep_open = keep_open

    def push(self, event: UdevEvent) -> None:
        self.pending.put(event)

    def events(self, stop_event):
        while not stop_event.is_set():
            try:
                item = self.pending.get(timeout=0.05 if self.keep_open else 0)
            except queue_mod.Empty:
                if not self.keep_open:
                    return
                continue
            yield item() if callable(item) else item


def pci(action: str, path: str) -> UdevEvent:
    return UdevEvent(action, "pci", path)


@pytest.fixture
def tree(tmp_path):
    tree = SysfsTree(tmp_path / "sys")
    tree.pf(PF)
    tree.vf(VF0, PF)
    tree.plain(PLAIN)
    return tree


def run_watcher(tree, events, callback, **kwargs):
    watcher = SriovUdevWatcher(ScriptedSource(events), callback, stop_event=threading.Event(),
                               sysfs_root=tree.root, **kwargs)
    watcher.run()
    return watcher


def test_a_burst_about_sriov_functions_enqueues_exactly_one_pass(tree):
    clock = FakeClock()
    work = WorkQueue(clock)
    host_events = HostEvents(work, clock)
    vfs = [tree.vf(f"0000:02:0a.{i}", PF) for i in range(1, 4)]
    burst = ([pci("change", tree.path(PF))] + [pci("add", path) for path in vfs]
             + [pci("bind", path) for path in vfs] + [pci("unbind", tree.path(VF0))])
    watcher = run_watcher(tree, burst, host_events)
    assert (watcher.delivered, watcher.ignored) == (len(burst), 0)
    assert len(work) == 0 and work.waiting() == 1  # debounced, not yet due
    clock.advance(MONITOR_DEBOUNCE_S)
    assert work.get(0) == HOST_EVENT_KEY
    work.done(HOST_EVENT_KEY)
    assert work.get(0) is None and work.waiting() == 0


def test_events_about_other_devices_are_ignored(tree):
    seen: list[str] = []
    events = [pci("add", tree.path(PLAIN)), pci("bind", tree.path(PLAIN)),
              pci("remove", tree.path("0000:09:00.0")),  # never seen: not ours
              UdevEvent("add", "net", "/sys/devices/virtual/net/veth0"),
              UdevEvent("add", "pci", "")]
    metrics = Metrics()
    watcher = run_watcher(tree, events, seen.append, metrics=metrics)
    assert seen == []
    assert (watcher.delivered, watcher.ignored) == (0, len(events))
    assert metrics.get("plumber_udev_events_ignored_total") == len(events)


def test_removals_of_functions_seen_before_count_once(tree):
    seen: list[str] = []
    new_vf = "0000:02:0b.0"
    events = [lambda: pci("add", tree.vf(new_vf, PF)),
              lambda: pci("remove", tree.remove(new_vf)),
              lambda: pci("remove", tree.remove(VF0)),  # known from the start-up scan only
              pci("remove", tree.path(VF0))]
    run_watcher(tree, events, seen.append)
    assert seen == ["PCI SR-IOV VF 0000:02:0b.0 add", "PCI SR-IOV VF 0000:02:0b.0 removed",
                    f"PCI SR-IOV VF {VF0} removed"]


def test_a_vf_unbound_after_losing_its_physfn_link_is_still_followed_to_its_removal(tree):
    """The kernel's order when VFs are disabled: physfn link removed, driver unbound, device
    removed (drivers/pci/iov.c virtfn_remove); seen in the full-kernel VM."""
    seen: list[str] = []

    def unbind_without_physfn() -> UdevEvent:
        os.unlink(os.path.join(tree.path(VF0), "physfn"))
        return pci("unbind", tree.path(VF0))
    run_watcher(tree, [unbind_without_physfn, lambda: pci("remove", tree.remove(VF0))],
                seen.append)
    assert seen == [f"PCI SR-IOV VF {VF0} unbind", f"PCI SR-IOV VF {VF0} removed"]


def test_a_pf_appearing_and_lost_events_are_reported(tree):
    seen: list[str] = []
    run_watcher(tree, [pci("add", tree.pf(OTHER_PF)), UdevEvent(LOST_ACTION, "", "")],
                seen.append)
    assert seen == [f"PCI SR-IOV PF {OTHER_PF} add", LOST_EVENTS_DESCRIPTION]


def test_a_failing_callback_does_not_end_the_watcher(tree):
    calls: list[str] = []

    def flaky(description: str) -> None:
        calls.append(description)
        raise ValueError("callback bug")

    watcher = run_watcher(tree, [pci("bind", tree.path(VF0))] * 3, flaky)
    assert len(calls) == 3 and watcher.delivered == 3


class ScriptedMonitor:
    """What open_monitor returns: poll() answers from a script (a device, None, or an error)."""

    def __init__(self, script, stop_event):
        self.script = list(script)
        self.stop_event = stop_event

    def poll(self, timeout=None):
        if not self.script:
            self.stop_event.set()
            return None
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def test_the_real_source_survives_monitor_errors_and_reports_lost_events():
    stop = threading.Event()
    device = SimpleNamespace(action="bind", subsystem="pci", sys_path="/sys/devices/x/" + VF0)
    monitors = iter([OSError(errno.EACCES, "no permission"),
                     ScriptedMonitor([None, OSError(errno.EIO, "broken")], stop),
                     ScriptedMonitor([device, OSError(errno.ENOBUFS, "lost"), device], stop)])

    def open_monitor():
        item = next(monitors)
        if isinstance(item, BaseException):
            raise item
        return item

    source = PyudevSource(open_monitor=open_monitor, retry_first_s=0.001, retry_max_s=0.002)
    got = list(source.events(stop))
    assert got == [UdevEvent("bind", "pci", device.sys_path), UdevEvent(LOST_ACTION, "", ""),
                   UdevEvent("bind", "pci", device.sys_path)]
    assert source.errors == 2


def test_off_on_an_emulated_sysfs_tree(tmp_path):
    assert udev_wanted("/sys") is None
    assert "is not the host's /sys" in udev_wanted(str(tmp_path))
    assert udev_thread(sysfs_root=str(tmp_path), callback=lambda _text: None) is None
    assert udev_thread(sysfs_root="/sys", callback=lambda _text: None) is not None


# ------------------------------------------------------------------------------------------------
# The echo of the agent's own write, through the real worker loop, HostEvents and Reconciler.

class CountingReconciler:
    """The real Reconciler; records each pass's action count, and can hand the uevents the
    pass caused to the source only after the pass (the latest they can arrive)."""

    def __init__(self, inner: Reconciler, after_pass=lambda: None):
        self.inner = inner
        self.after_pass = after_pass
        self.actions: list[int] = []

    @property
    def last_discovery_started(self) -> float:
        return self.inner.last_discovery_started

    @property
    def clock(self):  # the worker stamps plumber_last_reconcile_timestamp_seconds with it
        return self.inner.clock

    def sync(self):
        outcome = self.inner.sync()
        self.actions.append(outcome.actions)
        self.after_pass()
        return outcome


def _echo_run(tmp_path, *, late: bool):
    """Apply numVfs 3 on eno2; every VF the write creates sends add + bind uevents and the PF a
    change, as the kernel does. Returns the actions of every pass that ran."""
    tree = SysfsTree(tmp_path / "sys")
    tree.pf(PF)
    fake = seed_host()
    node = Node(fake, tmp_path / "state")
    source = ScriptedSource(keep_open=True)
    stop = threading.Event()
    clock = RealClock()
    work = WorkQueue(clock)
    host_events = HostEvents(work, clock)
    watcher = SriovUdevWatcher(source, host_events, stop_event=stop, sysfs_root=tree.root)
    caused: list[UdevEvent] = []
    real_set_num_vfs = fake.sysfs.set_num_vfs

    def set_num_vfs(pf_pci_addr: str, num_vfs: int) -> int:
        enabled = real_set_num_vfs(pf_pci_addr, num_vfs)
        for i in range(enabled):
            path = tree.vf(fake.pfs[pf_pci_addr].vf_pci(i), pf_pci_addr)
            caused.extend([pci("add", path), pci("bind", path)])
        caused.append(pci("change", tree.path(pf_pci_addr)))
        if not late:  # delivered while the pass still runs, before its last discovery
            flush()
            wait_for(lambda: watcher.delivered == len(delivered), timeout_s=WAIT_BOUND_S,
                     what="the watcher delivered every event")
        return enabled

    delivered: list[UdevEvent] = []

    def flush() -> None:
        for event in caused:
            source.push(event)
        delivered.extend(caused)
        caused.clear()

    fake.sysfs.set_num_vfs = set_num_vfs
    template = make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 3}]})
    reconciler = CountingReconciler(
        Reconciler(host=node.host, source=ListSource([template]), publish=lambda _s: None,
                   metrics=Metrics()),
        after_pass=flush if late else (lambda: None))
    threads = [threading.Thread(target=watcher.run, name="udev-test"),
               threading.Thread(target=_worker(work, reconciler, Metrics(), host_events),
                                args=(stop,), name="worker-test")]
    for thread in threads:
        thread.start()
    try:
        work.add(NODE_KEY)
        expected_passes = 2 if late else 1

        def idle() -> bool:
            return (len(reconciler.actions) >= expected_passes and bool(delivered)
                    and watcher.delivered == len(delivered)
                    and work.waiting() == 0 and len(work) == 0 and work.processing() == 0)
        wait_for(idle, timeout_s=WAIT_BOUND_S,
                 on_timeout=lambda: repr((reconciler.actions, watcher.delivered, len(delivered))),
                 what="the agent idle after its own uevents")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert work.waiting() == 0 and len(work) == 0  # no further pass was pending
    assert fake.pfs[PF].num_vfs == 3
    return reconciler.actions


def test_our_own_write_echoed_during_the_pass_costs_no_extra_pass(tmp_path):
    """The uevents arrive before the pass's verifying discovery: that discovery already saw
    their cause, so the pass they enqueue is skipped."""
    actions = _echo_run(tmp_path, late=False)
    assert len(actions) == 1 and actions[0] >= 1


def test_our_own_write_echoed_after_the_pass_costs_one_idle_pass(tmp_path):
    """The uevents arrive after the pass ended: one more pass runs, finds nothing to do and
    causes no uevents of its own, so the loop ends there."""
    actions = _echo_run(tmp_path, late=True)
    assert len(actions) == 2 and actions[0] >= 1 and actions[1] == 0


# ------------------------------------------------------------------------------------------------
# The real pyudev source: kernel uevents of veths created in a throw-away namespace.

@pytest.mark.privileged
def test_pyudev_source_receives_kernel_uevents_from_a_namespace(netns_name):
    """Net uevents of a device in a namespace go to that namespace's uevent sockets, so the
    monitor is opened inside it; the first two opens fail to show the retry path is real."""
    failures = [OSError(errno.EMFILE, "scripted failure")] * 2

    def open_monitor():
        if failures:
            raise failures.pop()
        return open_netns_sockets(netns_name, [
            lambda: open_pyudev_monitor(("net",), netlink_source="kernel")])[0]

    source = PyudevSource(("net",), open_monitor=open_monitor, retry_first_s=0.01)
    stop = threading.Event()
    got: list[UdevEvent] = []
    opened = threading.Event()

    def consume() -> None:
        got.extend(source.events(stop))

    real_open = source.open_monitor

    def open_and_signal():
        monitor = real_open()
        opened.set()
        return monitor
    source.open_monitor = open_and_signal
    thread = threading.Thread(target=consume, name="pyudev-test")
    thread.start()
    try:
        assert opened.wait(10), "the monitor never opened"
        ip(netns_name, "link", "add", "name", "ud0", "type", "veth", "peer", "name", "ud1")
        ip(netns_name, "link", "del", "ud0")

        def names(action: str) -> set:
            return {os.path.basename(e.sys_path) for e in list(got)
                    if e.action == action and e.subsystem == "net"}
        wait_for(lambda: {"ud0", "ud1"} <= names("add") and {"ud0", "ud1"} <= names("remove"),
                 timeout_s=WAIT_BOUND_S, on_timeout=lambda: repr(got),
                 what="add and remove uevents of ud0 and ud1")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert source.errors == 2
