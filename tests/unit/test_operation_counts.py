"""Regression checks on operation COUNTS behind the benchmarks (bench/), never on seconds.

Why: the benchmarks measure time on one machine; what keeps them good is a handful of counts that
a refactor can silently make worse: how many host discoveries (and kernel dumps) one reconcile
costs, how many API writes an idle node makes in an hour, how many requests its watches cost per
hour, and that the published status stays bounded however big the host is. Each is checked here
on fakes at our own seams (the host facade's drivers, the reporter's sink) or, for the kernel
dump count, on a real throw-away namespace.
"""
from __future__ import annotations

import json
import math

import pytest

from plumber_agent.host import Host
from plumber_agent.host.ledger import Ledger
from plumber_agent.models.observed import (ObservedHost, ObservedLink, ObservedPf, ObservedRoute,
                                           ObservedVf, ObservedVfInfo)
from plumber_agent.models.status import to_api
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from plumber_agent.reporter import Reporter
from plumber_agent.status_builder import build_status
from tests.support.fakehost import ListSource, make_template, seed_host

ETCD_LIMIT_BYTES = 1_572_864
IDLE_HOUR_S = 3600.0
RESYNC_PERIOD_S = 60.0          # the CLI default (--resync-period-s)
IDLE_REQUESTS_PER_HOUR_MAX = 30  # issue 6, B4
NODE = "node-a"


class CountingNetlink:
    """Wraps the fake netlink driver at the host facade's seam and counts discoveries."""

    def __init__(self, inner):
        self._inner = inner
        self.discoveries = 0
        self.calls: list[str] = []  # "discover" / "forget", in order

    def discover(self):
        self.discoveries += 1
        self.calls.append("discover")
        return self._inner.discover()

    def forget_snapshot(self):
        self.calls.append("forget")
        self._inner.forget_snapshot()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class RecordingSink:
    def __init__(self):
        self.published = None
        self.writes = 0

    def ensure(self):
        return self.published

    def write(self, status):
        self.writes += 1
        self.published = status


@pytest.fixture
def node(tmp_path):
    fake = seed_host()
    counting = CountingNetlink(fake.netlink)
    ledger = Ledger(str(tmp_path / "state"))
    assert ledger.acquire()
    host = Host(counting, fake.sysfs, fake.ovs, ledger)
    yield fake, counting, host
    ledger.release_lock()


def _reconciler(host, templates, sink):
    reporter = Reporter(sink=sink, metrics=Metrics())
    source = ListSource(templates, {"kubernetes.io/hostname": NODE})
    reconciler = Reconciler(host=host, source=source, publish=reporter.publish, metrics=Metrics())
    return reconciler, reporter


MTU_TEMPLATE = {"nodeSelector": {"kubernetes.io/hostname": NODE},
                "interfaceConfig": [{"name": "enp3s0f1", "mtu": 9000,
                                     "ipv4": {"address": ["192.168.195.7/24"]}}]}


def test_idle_pass_discovers_the_host_once_and_changes_nothing(node):
    fake, counting, host = node
    reconciler, _ = _reconciler(host, [make_template("mtu", MTU_TEMPLATE)], RecordingSink())
    assert reconciler.sync().ok
    fake.calls.clear()
    counting.discoveries = 0

    outcome = reconciler.sync()

    assert outcome.ok and outcome.actions == 0
    assert counting.discoveries == 1
    assert fake.calls == []


def test_a_one_interface_change_costs_at_most_two_discoveries(node):
    fake, counting, host = node
    reconciler, _ = _reconciler(host, [make_template("mtu", MTU_TEMPLATE)], RecordingSink())

    outcome = reconciler.sync()

    assert outcome.ok and outcome.actions >= 1
    assert fake.links["enp3s0f1"].mtu == 9000
    # one read to plan from, one to verify what was done: never a discovery per action
    assert counting.discoveries <= 2


SRIOV_TEMPLATE = {"nodeSelector": {"kubernetes.io/hostname": NODE},
                  "sriovConfig": [{"pfName": "eno1", "numVfs": 4}]}


def test_netlink_changes_leave_the_rereading_to_kernel_notifications(node):
    """Netlink may answer from its last dump updated by the kernel's notifications; the
    MTU/address changes of this template are all notified, so nothing is forgotten."""
    fake, counting, host = node
    reconciler, _ = _reconciler(host, [make_template("mtu", MTU_TEMPLATE)], RecordingSink())
    assert reconciler.sync().actions >= 1
    first, second = [i for i, call in enumerate(counting.calls) if call == "discover"][:2]
    assert "forget" not in counting.calls[first + 1:second], counting.calls


def test_sysfs_changes_make_the_verifying_discovery_dump_everything(node):
    """numVfs is written through sysfs, which sends no rtnetlink notification naming the PF:
    the snapshot must be dropped before the verifying discovery."""
    fake, counting, host = node
    reconciler, _ = _reconciler(host, [make_template("vfs", SRIOV_TEMPLATE)], RecordingSink())
    assert reconciler.sync().actions >= 1
    first, second = [i for i, call in enumerate(counting.calls) if call == "discover"][:2]
    assert "forget" in counting.calls[first + 1:second], counting.calls


def test_a_changed_sr_iov_pf_makes_netlink_reread(node):
    """VF lists in the PF's link message can change with numVfs without a link notification."""
    fake, counting, host = node
    host.discover()
    counting.calls.clear()
    host.discover()
    assert counting.calls == ["discover"]  # PFs unchanged: the snapshot may serve
    pf = next(iter(fake.pfs.values()))
    pf.num_vfs = 3
    host.discover()
    assert counting.calls[1:] == ["forget", "discover"]


def test_an_idle_hour_makes_no_api_writes(node):
    """60 resyncs (one idle hour at the default period) after converging: zero status writes."""
    fake, counting, host = node
    sink = RecordingSink()
    reconciler, reporter = _reconciler(host, [make_template("mtu", MTU_TEMPLATE)], sink)
    reconciler.sync()
    reporter.flush()
    assert sink.writes == 1  # the first publish
    counting.discoveries = 0
    fake.calls.clear()

    passes = int(IDLE_HOUR_S / RESYNC_PERIOD_S)
    for _ in range(passes):
        reconciler.sync()
        reporter.flush()

    assert sink.writes == 1
    assert counting.discoveries == passes  # one discovery per idle pass, nothing more
    assert fake.calls == []  # an idle host is never touched


def test_watch_renewals_per_idle_hour_fit_the_request_budget():
    """Two watches (templates, own Node) renewed at the shortest server-side timeout we ask for,
    plus nothing else when idle, must stay within B4's 30 requests per hour."""
    from plumber_agent.kube import reflector

    watches = 2
    renewals = watches * math.ceil(IDLE_HOUR_S / reflector.WATCH_TIMEOUT_MIN_S)
    assert renewals <= IDLE_REQUESTS_PER_HOUR_MAX
    # a stream that outlives the server timeout is cut only after a margin, never earlier
    assert reflector.INACTIVITY_TIMEOUT_S > 60  # bookmarks arrive about every minute


def _big_host(*, interfaces: int, vfs: int, routes: int) -> ObservedHost:
    host = ObservedHost(bridges={})
    pf = ObservedPf(pci_addr="0000:3b:00.0", ifname="ens1f0", vendor_id="8086", device_id="158b",
                    driver="i40e", total_vfs=vfs, num_vfs=vfs,
                    vfs=[ObservedVf(id=i, pci_addr=f"0000:3c:{i // 8:02x}.{i % 8}", driver="iavf")
                         for i in range(vfs)])
    host.pfs[pf.pci_addr] = pf
    host.links["ens1f0"] = ObservedLink(
        ifname="ens1f0", index=2, mtu=9000, mac="3c:fd:fe:00:00:01", pci_addr=pf.pci_addr,
        vfs=[ObservedVfInfo(id=i, mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", vlan=i + 1,
                            spoofchk=True, trust=False) for i in range(vfs)])
    for i in range(interfaces - 1):
        name = f"vlan{i}"
        host.links[name] = ObservedLink(
            ifname=name, index=10 + i, kind="vlan", parent="ens1f0", vlan_id=1 + i % 4094,
            mtu=1500, mac=f"3c:fd:fe:01:{i >> 8 & 255:02x}:{i & 255:02x}",
            ipv4=[f"172.16.{i >> 8 & 255}.{i & 255}/32"], ipv6=[f"fd00:{i:x}::1/64"])
    for r in range(routes):
        if r % 5 == 4:
            host.routes.append(ObservedRoute(family=6, dst=f"2001:db8:{r:x}::/64",
                                             gw="fe80::1", dev="ens1f0", proto="bgp"))
        else:
            host.routes.append(ObservedRoute(family=4, dst=f"10.{r >> 16 & 255}.{r >> 8 & 255}."
                                             f"{r & 255}/32", gw="192.168.0.1", dev="ens1f0",
                                             proto="bgp"))
    return host


def _status_bytes(host: ObservedHost) -> tuple[int, dict]:
    status = to_api(build_status(host, []))
    return len(json.dumps(status, separators=(",", ":")).encode()), status


def test_status_for_1000_interfaces_256_vfs_50k_routes_is_bounded_and_says_what_it_dropped():
    size, status = _status_bytes(_big_host(interfaces=1000, vfs=256, routes=50_000))

    assert size < ETCD_LIMIT_BYTES
    assert len(status["interfaceStatus"]) == 1000
    pf = next(i for i in status["interfaceStatus"] if i["pfName"] == "ens1f0")
    assert len(pf["sriovStatus"]["vfs"]) == 256
    listed = len(status["routes"]["ipv4"]) + len(status["routes"]["ipv6"])
    assert listed < 50_000
    assert status["truncated"]["routesIpv4"] == 40_000
    assert status["truncated"]["routesIpv6"] == 10_000


def test_status_size_does_not_grow_with_the_routing_table():
    small, _ = _status_bytes(_big_host(interfaces=10, vfs=0, routes=20_000))
    large, _ = _status_bytes(_big_host(interfaces=10, vfs=0, routes=200_000))
    # route counts differ 10x; the listed part is capped, only the totals' digits may differ
    assert large - small < 64


# ------------------------------------------------------------------------------------------------
# kernel dumps per discovery, on a real namespace

@pytest.mark.privileged
def test_discovery_is_four_kernel_dumps(netns_name):
    from plumber_agent.host.netlink import Netlink
    from tests.helpers.netns import veth_pair

    veth_pair(netns_name, "cnt0", "cnt1")
    netlink = Netlink(netns_name)
    try:
        reader = netlink._reader
        calls = []
        real_dump = reader.dump

        def counting_dump(msg_type, *args, **kwargs):
            calls.append(msg_type)
            return real_dump(msg_type, *args, **kwargs)

        reader.dump = counting_dump  # our own raw reader: the seam, not pyroute2
        links, routes = netlink.discover()
        assert {"lo", "cnt0", "cnt1"} <= set(links)
        # links, addresses, IPv4 routes, IPv6 routes: one dump each, no per-link requests
        assert len(calls) == 4
    finally:
        netlink.close()
