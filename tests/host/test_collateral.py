"""Kernel collateral on a real kernel (issue 20 item 2): a change makes the kernel remove other
state by itself, the ledger records it, and undo puts it back.

In a throw-away namespace, through the real Host (netlink driver, ledger, executor) and the
reconciler's own loop: removing the last IPv4 address of eth1 (the final-state rule replacing
it) makes the kernel drop the default route and a route of table 100 through eth1; an MTU
below 1280 makes it drop eth1's IPv6 address and route. Deleting the template undoes the change
and brings them back, exactly as they were (protocol and table included), and leaves alone a
route someone re-created meanwhile."""
from __future__ import annotations

import pytest

from plumber_agent.host import Host
from plumber_agent.host.ledger import read_records
from plumber_agent.reconciler import Reconciler, SyncOutcome
from tests.helpers.netns import ip, ip_json, ipv6_settled, veth_pair
from tests.helpers.wait import wait_for
from tests.support.fakehost import ListSource, make_template

pytestmark = pytest.mark.privileged
SETTLE_TIMEOUT_S = 10.0


def routes(ns: str) -> list:
    """Every unicast route of every table that is not the kernel's own (both families)."""
    out = []
    for family in ("-4", "-6"):
        for r in ip_json(ns, family, "route", "show", "table", "all"):
            if r.get("type", "unicast") != "unicast" or r.get("protocol") == "kernel":
                continue
            out.append((family, r.get("table", "main"), r["dst"], r.get("gateway"), r.get("dev"),
                        r.get("protocol"), r.get("metric")))
    return sorted(out, key=repr)


def addresses(ns: str) -> list:
    return sorted((link["ifname"], a["local"], a["prefixlen"])
                  for link in ip_json(ns, "addr", "show")
                  for a in link.get("addr_info") or [] if a.get("scope") != "link")


def snapshot(ns: str) -> dict:
    links = {link["ifname"]: link.get("mtu") for link in ip_json(ns, "link", "show")}
    return {"links": links, "addresses": addresses(ns), "routes": routes(ns)}


class RealNode:
    """The agent's host layer on the namespace: real netlink, a real ledger in tmp_path."""

    def __init__(self, ns: str, tmp_path) -> None:
        (tmp_path / "sysfs").mkdir(exist_ok=True)
        self.state_dir = tmp_path / "state"
        self.host = Host.for_node(netns=ns, sysfs_root=str(tmp_path / "sysfs"),
                                  ovsdb=f"unix:{tmp_path}/no-ovs.sock",
                                  state_dir=str(self.state_dir))
        assert self.host.ledger.acquire()

    def reconcile(self, templates):
        reconciler = Reconciler(host=self.host, source=ListSource(templates),
                                publish=lambda status: None, api_server_ip=None)
        run = reconciler.converge(templates, {}, SyncOutcome())
        assert all(report.ok for _, report in run.rounds), [
            r.error for _, report in run.rounds for r in report.failed()]
        return run

    def close(self) -> None:
        self.host.close()


@pytest.fixture
def node(netns_name, tmp_path):
    veth_pair(netns_name, "eth1", "peer1")
    veth_pair(netns_name, "eth2", "peer2")
    wait_for(lambda: ipv6_settled(netns_name), timeout_s=SETTLE_TIMEOUT_S, what="link-locals settled")
    real = RealNode(netns_name, tmp_path)
    yield real
    real.close()


def _lines(run) -> list[str]:
    return [a.describe() for plan, _ in run.rounds for a in plan.actions]


def test_undo_of_an_address_replacement_brings_back_the_default_route(netns_name, node):
    ns = netns_name
    ip(ns, "addr", "add", "10.0.0.5/24", "dev", "eth1")
    ip(ns, "route", "add", "default", "via", "10.0.0.1", "dev", "eth1", "proto", "boot")
    ip(ns, "route", "add", "10.9.0.0/16", "via", "10.0.0.254", "dev", "eth1", "table", "100")
    ip(ns, "route", "add", "172.16.0.0/16", "dev", "eth2", "src", "10.0.0.5")
    before = snapshot(ns)

    template = make_template("replace", {"interfaceConfig": [
        {"name": "eth1", "ipv4": {"address": ["10.0.0.6/24"]}}]})
    run = node.reconcile([template])
    # The kernel dropped them with 10.0.0.5/24 (its last IPv4 address), in every table; the
    # plan said so beforehand.
    after = routes(ns)
    assert not [r for r in after if r[2] in ("default", "10.9.0.0/16", "172.16.0.0/16")], after
    (delete,) = [line for line in _lines(run) if "delete_address eth1" in line]
    assert ("drops the default route via 10.0.0.1 dev eth1 (the kernel removes it with "
            "10.0.0.5/24)") in delete
    assert "drops route 172.16.0.0/16 dev eth2 src 10.0.0.5" in delete
    # Recorded in the journal: a restarted agent still knows.
    records = read_records(str(node.state_dir))
    collateral = records["collateral:addr:eth1:10.0.0.5/24"]
    gone = {(r["dst"], r["table"]) for r in collateral["value"]["routes"]}
    assert gone == {(None, 254), ("10.9.0.0/16", 100), ("172.16.0.0/16", 254)}
    assert not collateral.get("pending")

    run = node.reconcile([])  # the template is deleted: undo
    assert any("restore_collateral addr:eth1:10.0.0.5/24" in line
               and "restores the default route via 10.0.0.1 dev eth1" in line
               for line in _lines(run)), _lines(run)
    assert snapshot(ns) == before
    assert read_records(str(node.state_dir)) == {}


def test_undo_leaves_a_route_someone_recreated_and_says_why_a_gone_device_is_skipped(
        netns_name, node):
    ns = netns_name
    ip(ns, "addr", "add", "10.0.0.5/24", "dev", "eth1")
    ip(ns, "addr", "add", "10.2.0.5/24", "dev", "eth2")
    ip(ns, "route", "add", "default", "via", "10.0.0.1", "dev", "eth1")
    ip(ns, "route", "add", "10.7.0.0/16", "dev", "eth2", "src", "10.0.0.5")
    template = make_template("drop", {"interfaceConfig": [
        {"name": "eth1", "ipv4": {"address": []}}]})
    node.reconcile([template])
    assert routes(ns) == []
    # Meanwhile someone sets another default route, and eth2 goes away.
    ip(ns, "route", "add", "default", "via", "10.2.0.1", "dev", "eth2")
    ip(ns, "link", "del", "eth2")
    ip(ns, "route", "add", "default", "via", "10.0.0.99", "dev", "peer1", "onlink")

    run = node.reconcile([])
    lines = _lines(run)
    assert any("not restoring route 10.7.0.0/16 dev eth2 src 10.0.0.5: eth2 is gone" in line
               for line in lines), lines
    assert [r[2:5] for r in routes(ns)] == [("default", "10.0.0.99", "peer1")]
    assert ("eth1", "10.0.0.5", 24) in addresses(ns)
    assert read_records(str(node.state_dir)) == {}


def test_undo_of_an_mtu_below_1280_brings_back_ipv6(netns_name, node):
    ns = netns_name
    ip(ns, "addr", "add", "2001:db8::5/64", "dev", "eth1", "nodad")
    ip(ns, "route", "add", "2001:db8:9::/48", "via", "2001:db8::1", "dev", "eth1")
    before = snapshot(ns)

    template = make_template("small", {"interfaceConfig": [{"name": "eth1", "mtu": 1200}]})
    run = node.reconcile([template])
    assert ("eth1", "2001:db8::5", 64) not in addresses(ns)
    assert not [r for r in routes(ns) if r[2] == "2001:db8:9::/48"]
    (mtu,) = [line for line in _lines(run) if "set_mtu eth1" in line]
    assert "drops address 2001:db8::5/64 of eth1 (the kernel disables IPv6 on eth1" in mtu

    node.reconcile([])
    wait_for(lambda: ipv6_settled(ns), timeout_s=SETTLE_TIMEOUT_S, what="DAD of the restored address")
    assert snapshot(ns) == before


@pytest.mark.fullkernel
def test_fullkernel_undo_brings_back_the_default_route_of_a_nic_and_a_vlan(netns_name,
                                                                        tmp_path):
    """The same on Debian's kernel (the full-kernel VM tier), with links as on a real node: a
    dummy NIC carrying the node's address and default route, and an 802.1Q VLAN on it whose
    address a route of table 100 needs. The template moves both addresses; undo restores both
    addresses and every route the kernel dropped with them."""
    from tests.fullkernel.vm import kernel_has

    if not (kernel_has("dummy") and kernel_has("vlan")):
        pytest.skip("this kernel lacks dummy or 802.1Q; test_fullkernel_tier runs this test "
                    "inside the full-kernel VM")
    ns = netns_name
    ip(ns, "link", "add", "name", "eno1", "type", "dummy")
    ip(ns, "link", "set", "eno1", "up")
    ip(ns, "link", "add", "link", "eno1", "name", "eno1.100", "type", "vlan", "id", "100")
    ip(ns, "link", "set", "eno1.100", "up")
    ip(ns, "addr", "add", "10.0.0.5/24", "dev", "eno1")
    ip(ns, "addr", "add", "10.100.0.5/24", "dev", "eno1.100")
    ip(ns, "route", "add", "default", "via", "10.0.0.1", "dev", "eno1", "proto", "boot")
    ip(ns, "route", "add", "10.200.0.0/16", "via", "10.100.0.1", "dev", "eno1.100", "table",
       "100")
    wait_for(lambda: ipv6_settled(ns), timeout_s=SETTLE_TIMEOUT_S, what="link-locals settled")
    before = snapshot(ns)
    node = RealNode(ns, tmp_path)
    try:
        template = make_template("move", {"interfaceConfig": [
            {"name": "eno1", "ipv4": {"address": ["10.0.0.6/24"]}},
            {"name": "eno1.100", "ipv4": {"address": ["10.100.0.6/24"]}}]})
        node.reconcile([template])
        assert not [r for r in routes(ns) if r[2] in ("default", "10.200.0.0/16")], routes(ns)
        node.reconcile([])
        assert snapshot(ns) == before
        assert read_records(str(node.state_dir)) == {}
    finally:
        node.close()


def _encode_link_set(**kwarg) -> bytes:
    """The RTM_SETLINK body pyroute2 builds for ipr.link("set", **kwarg), as NetlinkRequest
    fills an ifinfmsg (pyroute2/netlink/nlsocket.py), without sending it."""
    from pyroute2.iproute.linux import get_arguments_processor
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    for key, value in get_arguments_processor("link", "set", kwarg).items():
        nla = type(msg).name2nla(key)
        if msg.valid_nla(nla) and value is not None:
            msg["attrs"].append([nla, value])
        else:
            msg[key] = value
    msg.encode()
    return bytes(msg.data)


def test_what_set_vf_sends_is_what_discovery_reads_back():
    """No kernel here has a device with VFs (QEMU 7.2 has no igb, Debian's kernel no
    netdevsim): the VF settings the driver asks pyroute2 to send are checked against our own
    IFLA_VF_INFO parser instead, field by field."""
    from plumber_agent.host.netlink.driver import vf_request
    from plumber_agent.host.netlink.messages import parse_link
    from plumber_agent.models.collateral import VF_SETTINGS

    settings = {"mac": "02:00:00:00:00:10", "vlan": 10, "qos": 3, "spoofchk": False,
                "trust": True, "link_state": 2, "min_tx_rate": 10, "max_tx_rate": 100}
    data = _encode_link_set(index=7, vf=vf_request(1, settings))
    link, _, _ = parse_link(data, 16, len(data))
    (vf,) = link.vfs
    assert (link.index, vf.id) == (7, 1)
    assert {name: getattr(vf, name) for name in VF_SETTINGS} == settings


def test_set_vf_on_a_link_without_vfs_is_a_clear_error(netns_name):
    from plumber_agent.errors import HostError
    from plumber_agent.host.netlink import Netlink

    veth_pair(netns_name, "eth1", "peer1")
    with Netlink(netns_name) as nl:
        assert nl.discover_vfs("eth1") == []
        assert nl.discover_vfs("nosuch") is None
        with pytest.raises(HostError, match="setting VF 0 of eth1 in network namespace"):
            nl.set_vf("eth1", 0, {"mac": "02:00:00:00:00:10"})
