"""The netlink monitor sees real kernel changes made by `ip` in a throw-away namespace."""
from __future__ import annotations

import threading

import pytest

from plumber_agent.errors import NotAvailable
from plumber_agent.host.monitor import NetlinkMonitor
from tests.helpers.netns import ip, netns_exists, unique_netns_name, veth_pair
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.privileged

WAIT_BOUND_S = 10.0


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[str] = []

    def __call__(self, event) -> None:
        with self.lock:
            self.seen.append(str(event))  # a KernelEvent; its str() is the description

    def wait_seen(self, predicate, timeout_s: float = WAIT_BOUND_S) -> bool:
        """Poll (bounded) until some recorded description satisfies `predicate`; the timeout
        lists what was recorded."""
        def seen_one() -> bool:
            with self.lock:
                return any(predicate(text) for text in self.seen)
        return wait_for(seen_one, timeout_s=timeout_s, what="a matching monitor report",
                        on_timeout=lambda: f"recorded: {self.seen}")


@pytest.fixture
def running_monitor(netns_name):
    ns = netns_name
    veth_pair(ns, "va", "vb")
    ip(ns, "addr", "add", "10.1.0.1/24", "dev", "va")
    recorder = Recorder()
    stop = threading.Event()
    monitor = NetlinkMonitor(ns, recorder, stop_event=stop)
    thread = threading.Thread(target=monitor.run, name="netlink-monitor-test")
    thread.start()
    try:
        yield ns, recorder, stop, thread
    finally:
        stop.set()
        thread.join(WAIT_BOUND_S)


def test_reports_an_address_removed_by_ip(running_monitor):
    ns, recorder, _stop, _thread = running_monitor
    ip(ns, "addr", "del", "10.1.0.1/24", "dev", "va")
    assert recorder.wait_seen(lambda t: t == "address 10.1.0.1/24 removed from va"), recorder.seen


def test_reports_links_and_routes(running_monitor):
    ns, recorder, _stop, _thread = running_monitor
    ip(ns, "link", "set", "vb", "mtu", "1400")
    assert recorder.wait_seen(lambda t: t.startswith("link vb changed") and "mtu 1400" in t)
    ip(ns, "route", "add", "10.9.0.0/16", "via", "10.1.0.2")
    assert recorder.wait_seen(lambda t: t.startswith("IPv4 route 10.9.0.0/16 via 10.1.0.2 dev va"))
    ip(ns, "-6", "addr", "add", "2001:db8::5/64", "dev", "vb", "nodad")
    assert recorder.wait_seen(lambda t: t == "address 2001:db8::5/64 added on vb")
    ip(ns, "link", "del", "va")
    assert recorder.wait_seen(lambda t: t == "link va removed")


def test_stops_promptly_and_survives_a_failing_callback(netns_name):
    calls: list[str] = []

    def flaky(description: str) -> None:
        calls.append(description)
        raise ValueError("callback bug")

    stop = threading.Event()
    monitor = NetlinkMonitor(netns_name, flaky, stop_event=stop)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        ip(netns_name, "link", "add", "name", "x1", "type", "veth", "peer", "name", "x2")
        wait_for(lambda: len(calls) >= 2, timeout_s=WAIT_BOUND_S, what="two callback calls")
        assert len(calls) >= 2  # the first failure did not end the monitor
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(WAIT_BOUND_S)
    assert not thread.is_alive()


def test_missing_namespace_is_not_available_and_not_created(netns_name):
    missing = unique_netns_name()
    with pytest.raises(NotAvailable):
        NetlinkMonitor(missing, lambda _text: None, stop_event=threading.Event())
    assert not netns_exists(missing)
