"""Linux bonds on a real kernel: the agent's whole loop (merge, discover, plan, execute over
the netlink driver, re-plan until empty) builds an active-backup and an 802.3ad bond over two
veth NICs, traffic is checked across them with ICMP echo (and across a failover), the status shows
mode, active member and member states as the kernel reports them, and deleting the template
releases the members as they were. Then a VLAN-filtering Linux bridge over the bond (branch
lbridge's kind): an access port's untagged traffic reaches the peer tagged over the bond, and
stops when the bond's port no longer carries that VLAN.

Why here: the CI kernel has no bonding module; test_fullkernel_tier runs this module inside the
full-kernel VM (Debian's kernel, which has it). The other end of the two NICs is a peer
namespace with its own bond of the same mode, made with `ip` (an LACP partner for 802.3ad).
SR-IOV and OVS are the test fake's (tests/support/fakehost.py): this host has neither to offer.
"""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from plumber_agent.host import Host
from plumber_agent.host.ledger import Ledger
from plumber_agent.apiprobe import ping
from plumber_agent.host.netlink import Netlink
from plumber_agent.host.netlink.netns import NETNS_RUN_DIR, _setns_net
from plumber_agent.reconciler import Reconciler, SyncOutcome
from plumber_agent.status_builder import build_status
from tests.helpers.netns import ip, ip_json, netns
from tests.helpers.wait import wait_for
from tests.support.fakehost import FakeHost, ListSource, make_template


def _kernel_has_bond() -> bool:
    try:
        from tests.fullkernel.vm import kernel_has
    except Exception:
        return False
    return kernel_has("bond")


pytestmark = [
    pytest.mark.fullkernel, pytest.mark.privileged,
    pytest.mark.skipif(not _kernel_has_bond(),
                       reason="this kernel has no bonding module; test_fullkernel_tier runs "
                              "this inside the full-kernel VM"),
]

#: TCG is slow and LACP needs a few LACPDU exchanges (fast rate: one a second) to aggregate.
TRAFFIC_TIMEOUT_S = 60.0
KERNEL_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 5
NODE_IP, PEER_IP = "192.0.2.1", "192.0.2.2"
MEMBERS = ("n1", "n2")
PEERS = ("p1", "p2")


@pytest.fixture
def lab():
    """(node namespace, peer namespace): n1<->p1 and n2<->p2, n1 up (MTU 1500), n2 down."""
    with netns() as node, netns() as peer:
        for mine, theirs in zip(MEMBERS, PEERS):
            ip(None, "link", "add", mine, "netns", node, "type", "veth",
               "peer", "name", theirs, "netns", peer)
        ip(node, "link", "set", "n1", "up")
        yield node, peer


def peer_bond(peer: str, mode: str, *, vlan: int | None = None) -> None:
    """The other side: a bond of the same mode over p1, p2, with PEER_IP (on its VLAN `vlan`
    when given)."""
    extra = ["lacp_rate", "fast"] if mode == "802.3ad" else []
    ip(peer, "link", "add", "pbond", "type", "bond", "mode", mode, "miimon", "100", *extra)
    for name in PEERS:
        ip(peer, "link", "set", name, "master", "pbond")
    ip(peer, "link", "set", "pbond", "up")
    dev = "pbond"
    if vlan is not None:
        dev = f"pbond.{vlan}"
        ip(peer, "link", "add", "link", "pbond", "name", dev, "type", "vlan", "id", str(vlan))
        ip(peer, "link", "set", dev, "up")
    ip(peer, "addr", "add", f"{PEER_IP}/24", "dev", dev)


def pings(ns: str, target: str) -> bool:
    """One ICMP echo from namespace `ns` to `target`, answered within PING_TIMEOUT_S: the
    agent's own raw-socket ping (apiprobe.ping; this machine has no ping binary), run in a
    thread that entered `ns` (setns changes that thread only)."""
    answer: dict = {}

    def in_namespace() -> None:
        fd = os.open(os.path.join(NETNS_RUN_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns_net(fd)
        finally:
            os.close(fd)
        answer["why_not"] = ping(target, timeout_s=PING_TIMEOUT_S)

    thread = threading.Thread(target=in_namespace, name=f"ping:{ns}", daemon=True)
    thread.start()
    thread.join(PING_TIMEOUT_S + 10)
    return answer.get("why_not", "no answer") is None


def diagnostics(*namespaces: str) -> str:
    """What both ends look like (the wait's timeout message)."""
    out = []
    for ns in namespaces:
        for argv in (["ip", "-d", "link", "show"], ["ip", "addr", "show"], ["ip", "neigh"],
                     ["bridge", "-d", "vlan", "show"],
                     ["ip", "-s", "link", "show"],
                     ["sh", "-c", "cat /proc/net/bonding/* 2>&1"]):
            done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                  text=True, check=False, timeout=PING_TIMEOUT_S + 10)
            out.append(f"--- {ns}: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


class Agent:
    """The reconciler's converge loop on the node namespace (real netlink, real ledger)."""

    def __init__(self, ns: str, state_dir) -> None:
        fake = FakeHost()  # no PFs, no OVS: their drivers are the fake's
        self.ledger = Ledger(str(state_dir))
        assert self.ledger.acquire()
        self.netlink = Netlink(ns, wait_timeout_s=KERNEL_TIMEOUT_S)
        self.host = Host(self.netlink, fake.sysfs, fake.ovs, self.ledger)

    def apply(self, templates):
        reconciler = Reconciler(host=self.host, source=ListSource(templates),
                                publish=lambda status: None, api_server_ip=None)
        run = reconciler.converge(templates, {}, SyncOutcome())
        for result, report in run.rounds:
            assert report.ok, [(r.action.describe(), r.error) for r in report.failed()]
        assert run.final is not None and run.final.actions == [], run.final
        return run

    def bond_status(self, name: str):
        status = build_status(self.host.discover())
        return next(i for i in status.interface_status if i.pf_name == name).bond


def template(mode: str, options: dict):
    return make_template("bonds", {
        "bondConfig": [{"name": "bond0", "mode": mode, "members": list(MEMBERS),
                        "options": options}],
        "interfaceConfig": [{"name": "bond0", "mtu": 1400,
                             "ipv4": {"address": [f"{NODE_IP}/24"]}}]})


def links(ns: str) -> dict:
    return {row["ifname"]: row for row in ip_json(ns, "-d", "link", "show")}


def assert_released(node: str) -> None:
    rows = links(node)
    assert "bond0" not in rows
    assert "master" not in rows["n1"] and "master" not in rows["n2"]
    assert "UP" in rows["n1"]["flags"] and "UP" not in rows["n2"]["flags"]  # as they were
    assert rows["n1"]["mtu"] == rows["n2"]["mtu"] == 1500  # the kernel put their MTU back


def test_active_backup_bond_carries_traffic_fails_over_and_is_undone(lab, tmp_path):
    node, peer = lab
    peer_bond(peer, "active-backup")
    agent = Agent(node, tmp_path / "state")
    agent.apply([template("active-backup", {"miimon": 100, "primary": "n1"})])
    rows = links(node)
    assert rows["bond0"]["linkinfo"]["info_data"]["mode"] == "active-backup"
    assert rows["n1"]["master"] == rows["n2"]["master"] == "bond0"
    assert rows["n1"]["mtu"] == rows["n2"]["mtu"] == 1400  # members follow the bond's MTU
    wait_for(lambda: pings(node, PEER_IP), timeout_s=TRAFFIC_TIMEOUT_S,
             what=f"ping {PEER_IP} over the active-backup bond",
             on_timeout=lambda: diagnostics(node, peer))
    bond = agent.bond_status("bond0")
    assert (bond.mode, bond.active_member) == ("active-backup", "n1")
    assert {(m.name, m.state) for m in bond.members} == {("n1", "active"), ("n2", "backup")}
    # Failover: n1's wire goes dead; miimon moves the traffic to n2.
    ip(peer, "link", "set", "p1", "down")
    wait_for(lambda: agent.bond_status("bond0").active_member == "n2",
             timeout_s=KERNEL_TIMEOUT_S, what="bond0 failing over to n2")
    states = {m.name: m.mii_status for m in agent.bond_status("bond0").members}
    assert states == {"n1": "down", "n2": "up"}
    wait_for(lambda: pings(node, PEER_IP), timeout_s=TRAFFIC_TIMEOUT_S,
             what=f"ping {PEER_IP} after the failover to n2",
             on_timeout=lambda: diagnostics(node, peer))
    agent.apply([])
    assert_released(node)
    assert agent.ledger.records() == {}


def test_lacp_bond_aggregates_with_its_partner_and_is_undone(lab, tmp_path):
    node, peer = lab
    peer_bond(peer, "802.3ad")
    agent = Agent(node, tmp_path / "state")
    agent.apply([template("802.3ad", {"miimon": 100, "lacpRate": "fast",
                                      "xmitHashPolicy": "layer3+4"})])
    info = links(node)["bond0"]["linkinfo"]["info_data"]
    assert (info["mode"], info["ad_lacp_rate"], info["xmit_hash_policy"]) == \
        ("802.3ad", "fast", "layer3+4")
    wait_for(lambda: pings(node, PEER_IP), timeout_s=TRAFFIC_TIMEOUT_S,
             what=f"ping {PEER_IP} over the 802.3ad bond",
             on_timeout=lambda: diagnostics(node, peer))

    def both_active() -> bool:
        bond = agent.bond_status("bond0")
        assert bond.mode == "802.3ad"
        seen = {(m.name, m.state, m.mii_status) for m in bond.members}
        assert seen == {("n1", "active", "up"), ("n2", "active", "up")}, seen
        return True
    wait_for(both_active, timeout_s=TRAFFIC_TIMEOUT_S, what="both members in the aggregator")
    agent.apply([])
    assert_released(node)


def test_vlan_filtering_bridge_over_the_bond_carries_only_its_vlan(lab, tmp_path):
    """client (untagged) -> acc (pvid 100) -> br0 -> bond0 (tagged 100) -> pbond.100."""
    node, peer = lab
    peer_bond(peer, "active-backup", vlan=100)
    with netns() as client:
        ip(None, "link", "add", "acc", "netns", node, "type", "veth", "peer", "name", "cl",
           "netns", client)
        ip(node, "link", "set", "acc", "up")
        ip(client, "link", "set", "cl", "up")
        ip(client, "addr", "add", f"{NODE_IP}/24", "dev", "cl")
        agent = Agent(node, tmp_path / "state")

        def bridged(tagged: list) -> object:
            return make_template("bonds", {
                "bondConfig": [{"name": "bond0", "mode": "active-backup",
                                "members": list(MEMBERS), "options": {"miimon": 100}}],
                "linuxBridgeConfig": [{"name": "br0", "stp": False, "vlanFiltering": True,
                                       "ports": [{"name": "bond0", "tagged": tagged},
                                                 {"name": "acc", "pvid": 100}]}]})
        agent.apply([bridged([100])])
        rows = links(node)
        assert rows["bond0"]["master"] == "br0" and rows["n1"]["master"] == "bond0"
        assert rows["br0"]["linkinfo"]["info_data"]["vlan_filtering"] == 1
        wait_for(lambda: pings(client, PEER_IP), timeout_s=TRAFFIC_TIMEOUT_S,
                 what=f"ping {PEER_IP} across br0 and bond0 on VLAN 100",
                 on_timeout=lambda: diagnostics(node, peer, client))
        status = build_status(agent.host.discover())
        bond0 = next(i for i in status.interface_status if i.pf_name == "bond0")
        assert bond0.master == "br0" and "100" in (bond0.bridge_vlans or []), bond0
        agent.apply([bridged([101])])  # the bond's port leaves VLAN 100: the bridge drops it
        assert not pings(client, PEER_IP), diagnostics(node, peer, client)
        agent.apply([])
        assert_released(node)
        assert "br0" not in links(node) and "master" not in links(node)["acc"]
