"""Discovery reuse (issue 6): an unchanged namespace is not dumped again, any change is seen.

Netlink.discover() keeps its last full dump and returns it again while the kernel has sent no
link/address/route notification since; it also re-parses only the kernel messages that differ
from the previous dump. Both are only worth having if they can never hide a change, so every
kind of change made behind the driver's back (with `ip`, in a real namespace) is checked against
a fresh driver's view.
"""
from __future__ import annotations

import copy
import errno
import socket

import pytest

from plumber_agent.errors import HostError
from plumber_agent.host.netlink import messages as nl_mod
from plumber_agent.host.netlink import snapshot as nl_snapshot
from plumber_agent.host.netlink import Netlink
from tests.helpers.netns import ip, veth_pair

privileged = pytest.mark.privileged


class DumpCounter:
    """Counts the kernel dumps (`count`) and single requests (`requests`) one driver's raw
    reader makes (our own seam)."""

    def __init__(self, driver: Netlink, monkeypatch):
        self.count = 0
        self.requests = 0
        reader = driver._reader
        dump, request = reader.dump, reader.request

        def counting_dump(*args, **kwargs):
            self.count += 1
            return dump(*args, **kwargs)

        def counting_request(*args, **kwargs):
            self.requests += 1
            return request(*args, **kwargs)
        monkeypatch.setattr(reader, "dump", counting_dump)
        monkeypatch.setattr(reader, "request", counting_request)

    @property
    def reads(self) -> int:
        return self.count + self.requests


def view(discovered) -> tuple:
    """Everything discovery reports, comparable."""
    links, routes = discovered
    return (sorted((name, copy.deepcopy(vars(link))) for name, link in links.items()),
            sorted(tuple(vars(r).items()) for r in routes))


@pytest.fixture
def lab(netns_name):
    ns = netns_name
    veth_pair(ns, "va", "vb")
    ip(ns, "addr", "add", "10.1.0.1/24", "dev", "va")
    ip(ns, "addr", "add", "2001:db8::1/64", "dev", "va", "nodad")
    ip(ns, "route", "add", "10.9.0.0/16", "dev", "va")
    return ns


@pytest.fixture
def driver(lab):
    drv = Netlink(lab)
    yield drv
    drv.close()


def fresh_view(ns: str) -> tuple:
    with Netlink(ns) as other:
        return view(other.discover(reuse=False))


@privileged
def test_unchanged_namespace_is_answered_without_a_dump(lab, driver, monkeypatch):
    counter = DumpCounter(driver, monkeypatch)
    first = driver.discover()
    assert counter.count == 4  # links, addresses, IPv4 routes, IPv6 routes
    first_view = view(first)
    first[0]["va"].ipv4.append("192.0.2.1/32")  # callers own what they get...
    first[0]["va"].mtu = 9999
    first[1].clear()
    second = driver.discover()
    assert counter.count == 4, "nothing changed, yet the kernel was dumped again"
    assert view(second) == first_view == fresh_view(lab)  # ...and cannot spoil the next answer
    assert "10.9.0.0/16" in {r.dst for r in second[1]}


@privileged
def test_reuse_false_and_forget_snapshot_dump_again(lab, driver, monkeypatch):
    counter = DumpCounter(driver, monkeypatch)
    driver.discover()
    driver.discover(reuse=False)
    assert counter.count == 8
    driver.forget_snapshot()
    driver.discover()
    assert counter.count == 12
    driver.discover()
    assert counter.count == 12


@privileged
def test_snapshot_older_than_the_bound_is_not_reused(lab, driver, monkeypatch):
    counter = DumpCounter(driver, monkeypatch)
    monkeypatch.setattr(nl_snapshot, "SNAPSHOT_MAX_AGE_S", 0.0)
    driver.discover()
    driver.discover()
    assert counter.count == 8


CHANGES = [
    ("mtu", ["link", "set", "va", "mtu", "1400"]),
    ("address added", ["addr", "add", "10.2.0.1/24", "dev", "vb"]),
    ("address removed", ["addr", "del", "10.1.0.1/24", "dev", "va"]),
    ("IPv6 address added", ["addr", "add", "2001:db8:5::1/64", "dev", "vb", "nodad"]),
    ("route added", ["route", "add", "10.8.0.0/16", "dev", "va"]),
    ("route replaced (metric)", ["route", "replace", "10.9.0.0/16", "dev", "vb"]),
    ("route removed", ["route", "del", "10.9.0.0/16"]),
    ("IPv6 route added", ["-6", "route", "add", "2001:db8:9::/64", "dev", "va"]),
    ("link added", ["link", "add", "name", "vc", "type", "veth", "peer", "name", "vd"]),
    ("link down", ["link", "set", "va", "down"]),
    ("link renamed (routes follow the name)", ["link", "set", "vb", "name", "vbx"]),
    ("link removed", ["link", "del", "vc"]),
    ("mac changed", ["link", "set", "va", "address", "02:00:00:00:00:99"]),
    ("link up again", ["link", "set", "va", "up"]),
    ("macvlan added on va", ["link", "add", "mv0", "link", "va", "type", "macvlan"]),
    ("address on the macvlan", ["addr", "add", "10.3.0.1/24", "dev", "mv0"]),
    ("macvlan up", ["link", "set", "mv0", "up"]),
    ("parent renamed (the macvlan's parent follows)", ["link", "set", "va", "name", "vax"]),
    ("multipath route", ["route", "add", "10.70.0.0/24", "nexthop", "dev", "vax",
                         "nexthop", "dev", "vbx"]),
    ("route on a link, then the link deleted", ["route", "add", "10.71.0.0/24", "dev", "mv0"]),
    ("macvlan deleted", ["link", "del", "mv0"]),
    ("routes flushed by link down (IPv4 sends no notification per route)",
     ["link", "set", "vbx", "down"]),
]


@privileged
def test_every_kind_of_change_behind_the_drivers_back_is_seen(lab, driver, monkeypatch):
    counter = DumpCounter(driver, monkeypatch)
    driver.discover()
    for what, argv in CHANGES:
        before = counter.reads
        ip(lab, *argv)
        assert view(driver.discover()) == fresh_view(lab), f"after: {what}"
        assert counter.reads > before, f"{what}: answered from the snapshot"
        assert view(driver.discover()) == fresh_view(lab), f"after: {what} (second read)"
    links, routes = driver.discover()
    assert links["vax"].mtu == 1400 and links["vbx"].admin_up is False
    assert "vbx" in links and "vb" not in links and "vc" not in links and "mv0" not in links
    assert not any(r.dev == "vbx" for r in routes)  # flushed with the link going down


def routes_on_vb_then_count_parses(lab, driver, monkeypatch) -> list:
    """200 routes on vb, discovered once; from then on every parsed route message is counted
    in the returned list."""
    ip(lab, "-batch", "-", input_text="".join(
        f"route add 10.50.{i}.0/24 dev vb\n" for i in range(200)))
    driver.discover()
    parsed: list = []
    original = nl_mod.parse_route

    def counting(data, start, end):
        parsed.append(1)
        return original(data, start, end)
    monkeypatch.setattr(nl_mod, "parse_route", counting)
    return parsed


@privileged
def test_a_change_on_one_interface_rereads_only_that_interface(lab, driver, monkeypatch):
    """After a route is added on va, va's routes are read again; vb's 200 are not, and the
    full dumps are not repeated."""
    parsed = routes_on_vb_then_count_parses(lab, driver, monkeypatch)
    counter = DumpCounter(driver, monkeypatch)
    ip(lab, "route", "add", "10.51.0.0/24", "dev", "va")
    _links, routes = driver.discover()
    assert "10.51.0.0/24" in {r.dst for r in routes}
    assert 1 <= len(parsed) <= 10, f"{len(parsed)} route messages parsed for one new route"
    assert counter.requests == 1 and counter.count == 3  # va: link, addresses, v4+v6 routes
    assert view(driver.discover()) == fresh_view(lab)


@privileged
def test_unchanged_messages_are_not_parsed_again_in_a_full_dump(lab, driver, monkeypatch):
    parsed = routes_on_vb_then_count_parses(lab, driver, monkeypatch)
    ip(lab, "route", "add", "10.51.0.0/24", "dev", "va")
    driver.forget_snapshot()  # a full dump, as after a sysfs change
    _links, routes = driver.discover()
    assert "10.51.0.0/24" in {r.dst for r in routes}
    assert 1 <= len(parsed) <= 2, f"{len(parsed)} route messages parsed for one new route"
    assert view(driver.discover()) == fresh_view(lab)


class QueuedThenLost:
    """A change socket that reports lost notifications (ENOBUFS) with nothing queued, as the
    kernel does after its receive queue overflowed and was read empty."""

    def __init__(self):
        self.calls = 0

    def recv_into(self, buffer, nbytes=0, flags=0):
        self.calls += 1
        if self.calls == 1:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def close(self):
        pass


@privileged
def test_lost_notifications_count_as_a_change(lab, driver, monkeypatch):
    counter = DumpCounter(driver, monkeypatch)
    driver.discover()
    real = driver._discovery.changes_sock
    driver._discovery.changes_sock = QueuedThenLost()
    try:
        driver.discover()
    finally:
        driver._discovery.changes_sock = real
    assert counter.count == 8


@privileged
def test_overflowing_the_notification_queue_still_gives_the_true_state(lab, driver):
    """A real overflow: a tiny receive buffer and a burst of 300 routes."""
    driver.discover()
    changes = driver._discovery.changes_sock
    changes.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)  # kernel minimum
    ip(lab, "-batch", "-", input_text="".join(
        f"route add 10.{60 + i // 200}.{i % 200}.0/24 dev va\n" for i in range(300)))
    _links, routes = driver.discover()
    assert sum(1 for r in routes if (r.dst or "").startswith(("10.60.", "10.61."))) == 300
    assert view(driver.discover()) == fresh_view(lab)


@privileged
def test_a_failed_reread_is_not_answered_from_the_snapshot_next_time(lab, driver, monkeypatch):
    """The notifications are consumed by a re-read that fails half-way; the next discovery
    must dump everything rather than trust what it had."""
    driver.discover()
    ip(lab, "addr", "add", "10.4.0.1/24", "dev", "vb")
    real_dump = driver._reader.dump

    def failing(*args, **kwargs):
        raise nl_mod.NetlinkOSError(errno.EBUSY, "Device or resource busy")
    monkeypatch.setattr(driver._reader, "dump", failing)
    with pytest.raises(HostError):
        driver.discover()
    monkeypatch.setattr(driver._reader, "dump", real_dump)
    links, _routes = driver.discover()
    assert "10.4.0.1/24" in links["vb"].ipv4
    assert view(driver.discover()) == fresh_view(lab)
