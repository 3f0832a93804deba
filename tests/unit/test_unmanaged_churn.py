"""Unmanaged churn through the real pieces: the reconciler hands a status that changed only in
pod veths to `publish_unmanaged` and a managed change to `publish`; the reporter holds the
former until the interval since its last write has passed (on a fake clock) and writes the
latter at once; kernel events about pods schedule one refresh, not a pass."""
from __future__ import annotations

import threading

import pytest

from plumber_agent.agent import HOST_EVENT_KEY, MONITOR_DEBOUNCE_S, REFRESH_KEY, HostEvents
from plumber_agent.clock import FakeClock
from plumber_agent.interest import MANAGED, UNMANAGED, Interest, StatusFilter
from plumber_agent.models.events import EventKind, KernelEvent
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from plumber_agent.reporter import UNMANAGED_JITTER_FRACTION, Reporter
from plumber_agent.workqueue import WorkQueue
from tests.support.fakehost import ListSource, Node, make_template, seed_host
from tests.unit.test_reporter import RecordingSink, _eventually

INTERVAL_S = 60.0
MTU_TEMPLATE = make_template("mtu", {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]})


def _names(status):
    return {entry["pfName"] for entry in status["interfaceStatus"]}


def test_the_reconciler_hands_pod_churn_to_publish_unmanaged_and_managed_changes_to_publish(tmp_path):
    fake = seed_host()
    node = Node(fake, tmp_path)
    source = ListSource([MTU_TEMPLATE])
    urgent, held = [], []
    rec = Reconciler(host=node.host, source=source, publish=urgent.append,
                     publish_unmanaged=held.append, metrics=Metrics())
    rec.sync()
    assert len(urgent) == 1 and not held  # the first status: at once
    assert rec.interest.name_class("eno1") is MANAGED
    assert rec.interest.name_class("cali0") is UNMANAGED
    fake.add_link("cali0", kind="veth")
    fake.add_route(dst="10.244.0.5/32", dev="cali0")
    rec.sync()
    assert len(urgent) == 1 and len(held) == 1 and "cali0" in _names(held[-1])
    fake.links["eno1"].mtu = 1500  # drift of a managed object: repaired, status unchanged there
    fake.add_link("cali1", kind="veth")
    outcome = rec.sync()
    assert outcome.drift_repaired == 1 and len(urgent) == 1 and len(held) == 2
    fake.links["eno2"].mtu = 1400  # not managed by any template
    rec.sync()
    assert len(urgent) == 1 and len(held) == 3
    source.items = [MTU_TEMPLATE, make_template("eno2", {"interfaceConfig": [
        {"name": "eno2", "mtu": 1450}]})]
    rec.sync()
    assert len(urgent) == 2 and len(held) == 3  # a template result: at once
    assert {"cali0", "cali1"} <= _names(urgent[-1])  # carries what was held


def test_without_publish_unmanaged_every_change_is_published_at_once(tmp_path):
    fake = seed_host()
    published = []
    rec = Reconciler(host=Node(fake, tmp_path).host, source=ListSource([MTU_TEMPLATE]),
                     publish=published.append, metrics=Metrics())
    rec.sync()
    fake.add_link("cali0", kind="veth")
    rec.sync()
    assert len(published) == 2


class FixedRandom:
    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.fixture
def reporter_thread():
    made = []

    def start(**kwargs):
        sink = RecordingSink()
        clock = FakeClock()
        reporter = Reporter(sink=sink, metrics=Metrics(), clock=clock, coalesce_s=0.0, **kwargs)
        stop = threading.Event()
        thread = threading.Thread(target=reporter.run, args=(stop,), daemon=True)
        thread.start()
        made.append((stop, thread))
        return reporter, sink, clock

    yield start
    for stop, thread in made:
        stop.set()
        thread.join(5)
        assert not thread.is_alive()


def test_an_unmanaged_change_waits_for_the_interval_and_a_managed_one_does_not(reporter_thread):
    reporter, sink, clock = reporter_thread(unmanaged_interval_s=INTERVAL_S, rng=FixedRandom(0.5))
    reporter.publish({"mtu": 9000})
    assert _eventually(lambda: len(sink.writes) == 1, timeout_s=10)
    due_s = INTERVAL_S * (1 + UNMANAGED_JITTER_FRACTION * 0.5)
    assert reporter.unmanaged_due_in() == pytest.approx(due_s)
    for pods in range(1, 30):  # a pod a second, each a new status
        reporter.publish_unmanaged({"mtu": 9000, "pods": pods})
    assert clock.wait_for_waiters(1)
    clock.advance(due_s - 1.0)
    assert clock.wait_for_waiters(1)
    assert len(sink.writes) == 1 and reporter.published() == {"mtu": 9000}  # held
    assert reporter.unmanaged_due_in() == pytest.approx(1.0)
    clock.advance(1.0)
    assert _eventually(lambda: len(sink.writes) == 2, timeout_s=10)
    assert sink.published == {"mtu": 9000, "pods": 29}  # the newest, once
    reporter.publish_unmanaged({"mtu": 9000, "pods": 30})
    reporter.publish({"mtu": 1500, "pods": 30})  # a managed change: at once, with the pods
    assert _eventually(lambda: len(sink.writes) == 3, timeout_s=10)
    assert sink.published == {"mtu": 1500, "pods": 30}
    assert reporter.unmanaged_due_in() == pytest.approx(due_s)  # counted from this write


def test_a_held_change_goes_at_once_when_the_last_write_is_older_than_the_interval(reporter_thread):
    reporter, sink, clock = reporter_thread(unmanaged_interval_s=INTERVAL_S, rng=FixedRandom(1.0))
    reporter.publish({"pods": 0})
    assert _eventually(lambda: len(sink.writes) == 1, timeout_s=10)
    clock.advance(INTERVAL_S * (1 + UNMANAGED_JITTER_FRACTION))  # the most the jitter adds
    reporter.publish_unmanaged({"pods": 1})
    assert _eventually(lambda: len(sink.writes) == 2, timeout_s=10)


def test_interval_zero_writes_unmanaged_changes_at_once(reporter_thread):
    reporter, sink, _clock = reporter_thread(unmanaged_interval_s=0.0)
    reporter.publish({"pods": 0})
    assert _eventually(lambda: len(sink.writes) == 1, timeout_s=10)
    reporter.publish_unmanaged({"pods": 1})
    assert _eventually(lambda: len(sink.writes) == 2, timeout_s=10)


# ---------------------------------------------------------------------------- kernel events

class LastPass:
    """What HostEvents reads of the reconciler: the last pass's interest and discovery time."""

    def __init__(self, interest: Interest, last_discovery_started: float = float("-inf")):
        self.interest = interest
        self.last_discovery_started = last_discovery_started


POD_ROUTE = KernelEvent(EventKind.ROUTE, "IPv4 route 10.244.0.5/32 dev cali0 added or changed",
                        ifname="cali0", family=4, dst="10.244.0.5/32")
HIDDEN_POD = KernelEvent(EventKind.LINK, "link veth1 changed", ifname="veth1", link_kind="veth")
MANAGED_MTU = KernelEvent(EventKind.LINK, "link eno1 changed", ifname="eno1")


def _events(due_s: float):
    clock = FakeClock()
    work = WorkQueue(clock)
    metrics = Metrics()
    host_events = HostEvents(work, clock, unmanaged_due_in=lambda: due_s,
                             status_filter=StatusFilter.parse("veth*"), metrics=metrics)
    last = LastPass(Interest(links={"eno1": MANAGED}))
    host_events.watch(last)
    return host_events, work, clock, last, metrics


def test_pod_events_schedule_one_refresh_when_the_reporter_may_write_again():
    host_events, work, clock, _last, metrics = _events(due_s=30.0)
    for _ in range(20):
        host_events(POD_ROUTE)
    host_events(HIDDEN_POD)  # left out of the status: not even a refresh
    assert metrics.get("plumber_kernel_events_unmanaged_total") == 21
    assert len(work) == 0 and work.waiting() == 1
    clock.advance(28.9)  # the refresh runs REFRESH_LEAD_S (1 s) before the reporter may write
    assert work.get(0) is None
    clock.advance(0.1)
    assert work.get(0) == REFRESH_KEY
    work.done(REFRESH_KEY)
    host_events(MANAGED_MTU)
    host_events("uevent: PF 0000:01:00.0 change")  # udev's text: always a pass
    clock.advance(MONITOR_DEBOUNCE_S)
    assert work.get(0) == HOST_EVENT_KEY and work.waiting() == 0


def test_a_refresh_is_skipped_when_a_pass_saw_its_events_and_postponed_while_writes_are_held():
    host_events, _work, clock, last, _metrics = _events(due_s=0.0)
    host_events(POD_ROUTE)
    assert host_events.refresh_postponed_s(last) is None  # run it
    clock.advance(1.0)
    last.last_discovery_started = clock.monotonic()  # a pass (the resync) discovered since
    assert host_events.refresh_postponed_s(last) == 0.0
    held, _w, _c, held_last, _m = _events(due_s=40.0)
    held(POD_ROUTE)
    assert held.refresh_postponed_s(held_last) == pytest.approx(39.0)


def test_without_coalescing_every_kernel_event_is_a_pass():
    clock = FakeClock()
    work = WorkQueue(clock)
    host_events = HostEvents(work, clock)
    host_events.watch(LastPass(Interest()))
    host_events(POD_ROUTE)
    clock.advance(MONITOR_DEBOUNCE_S)
    assert work.get(0) == HOST_EVENT_KEY


def test_a_pass_for_any_reason_postpones_the_resync_which_still_runs_when_idle():
    from plumber_agent.agent import NODE_KEY, _resync
    clock = FakeClock()
    work = WorkQueue(clock)
    last = LastPass(Interest())
    stop = threading.Event()
    thread = threading.Thread(target=_resync(work, INTERVAL_S, clock,
                                             last_pass_at=lambda: last.last_discovery_started),
                              args=(stop,), daemon=True)
    thread.start()
    try:
        assert clock.wait_for_waiters(1)
        clock.advance(INTERVAL_S / 2)
        last.last_discovery_started = clock.monotonic()  # e.g. a refresh of pod changes
        clock.advance(INTERVAL_S / 2)
        assert clock.wait_for_waiters(1)
        assert len(work) == 0  # that pass was the drift check; due again 60 s after it
        clock.advance(INTERVAL_S / 2)
        assert _eventually(lambda: len(work) == 1, timeout_s=10)  # idle since: resync
        assert work.get(0) == NODE_KEY
        work.done(NODE_KEY)
        assert clock.wait_for_waiters(1)
        clock.advance(INTERVAL_S)  # still idle: one resync every period
        assert _eventually(lambda: len(work) == 1, timeout_s=10)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
