"""Linux bridges through the netlink driver (host/netlink/lbridge.py) against the real kernel, in
throw-away namespaces, checked with `ip -j -d link` and `bridge -j vlan`.

The CI kernel has bridges but not CONFIG_BRIDGE_VLAN_FILTERING: the bridge, STP and ports are
tested here, and that VLAN filtering is refused cleanly (NotAvailable, nothing left behind). The
tests marked `fullkernel` need VLAN filtering (and 802.1Q for the tagged side of the traffic):
they skip here and run in the full-kernel VM (tests/fullkernel/test_vlan_kernel.py runs every
`fullkernel` test there), where traffic crosses the bridge between two more namespaces.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plumber_agent.errors import HostError, NotAvailable
from plumber_agent.host.netlink import Netlink
from tests.helpers.netns import ip, ip_json, netns

WAIT_BOUND_S = 10.0
ECHO_DEADLINE_S = 5  # a UDP echo across a working bridge answers well within this
privileged = pytest.mark.privileged


def _probe(script: str) -> bool:
    try:
        return subprocess.run(["unshare", "--net", "ip", "-batch", "-"], input=script,
                              capture_output=True, text=True, timeout=30,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kernel_has_bridge_vlan_filtering() -> bool:
    return _probe("link add name b0 type bridge vlan_filtering 1\n")


def kernel_has_8021q() -> bool:
    return _probe("link add name d0 type veth peer name d1\nlink add link d0 name d0.5 "
                  "type vlan id 5\n")


def bridge_info(ns: str, name: str) -> dict:
    rows = ip_json(ns, "-d", "link", "show", "dev", name)
    return rows[0]["linkinfo"]["info_data"]


def master_of(ns: str, name: str):
    return ip_json(ns, "link", "show", "dev", name)[0].get("master")


def bridge_vlans(ns: str, port: str) -> list[str]:
    """`bridge -j vlan show dev PORT` in models/lbridge_spec.py's canonical text."""
    out = subprocess.run(["ip", "netns", "exec", ns, "bridge", "-j", "vlan", "show", "dev",
                          port], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out or "[]")
    entries = []
    for row in rows:
        for vlan in row.get("vlans", []):
            flags = vlan.get("flags", [])
            vid = str(vlan["vlan"]) + (f"-{vlan['vlanEnd']}" if "vlanEnd" in vlan else "")
            entries.append(" ".join([vid] + (["pvid"] if "PVID" in flags else [])
                                    + (["untagged"] if "Egress Untagged" in flags else [])))
    return entries


@pytest.fixture
def lab(node_ns):
    """eth1/peer1 and eth2/peer2 (tests/conftest.py): eth1 and eth2 become bridge ports."""
    return node_ns


@pytest.fixture
def driver(lab):
    drv = Netlink(lab, wait_timeout_s=WAIT_BOUND_S)
    yield drv
    drv.close()


@privileged
def test_bridge_stp_and_ports_are_made_discovered_and_undone(lab, driver):
    driver.ensure_linux_bridge("br0", stp=True)
    assert bridge_info(lab, "br0")["stp_state"] == 1
    links, _ = driver.discover()
    assert links["br0"].kind == "bridge" and links["br0"].linux_bridge.stp is True
    driver.ensure_linux_bridge("br0", stp=False)  # an existing bridge: set, not re-created
    assert bridge_info(lab, "br0")["stp_state"] == 0
    index = links["br0"].index
    driver.set_linux_bridge_port("eth1", "br0")
    driver.set_linux_bridge_port("eth1", "br0")  # idempotent
    assert master_of(lab, "eth1") == "br0"
    links, _ = driver.discover()
    assert links["br0"].index == index and links["br0"].linux_bridge.stp is False
    assert links["eth1"].master == "br0"
    assert links["eth1"].bridge_vlans is not None  # a Linux bridge port (entries: kernel's)
    assert links["eth2"].master is None and links["eth2"].bridge_vlans is None
    driver.set_linux_bridge_port("eth1", None)
    assert master_of(lab, "eth1") is None
    links, _ = driver.discover()  # from the change notifications (partial re-read)
    assert links["eth1"].master is None and links["eth1"].bridge_vlans is None
    assert links == driver.discover(reuse=False)[0]
    driver.delete_link("br0")
    assert "br0" not in driver.discover()[0]


@privileged
def test_bridge_errors_are_clear_and_touch_nothing(lab, driver):
    with pytest.raises(HostError, match="not a linux bridge"):
        driver.set_linux_bridge_port("eth1", "eth2")  # eth2 is a veth
    with pytest.raises(NotAvailable, match="eth9"):
        driver.set_linux_bridge_port("eth9", None)
    with pytest.raises(HostError, match="not a linux bridge"):
        driver.ensure_linux_bridge("eth2", stp=True)
    assert master_of(lab, "eth1") is None
    assert ip_json(lab, "-d", "link", "show", "dev", "eth2")[0]["linkinfo"]["info_kind"] == "veth"


@privileged
@pytest.mark.skipif(kernel_has_bridge_vlan_filtering(),
                    reason="this kernel has bridge VLAN filtering; the fullkernel tests cover it")
def test_vlan_filtering_without_kernel_support_is_not_available(lab, driver):
    with pytest.raises(NotAvailable, match="CONFIG_BRIDGE_VLAN_FILTERING"):
        driver.ensure_linux_bridge("br0", vlan_filtering=True)
    assert "br0" not in driver.discover()[0]  # the create was refused whole


# -- VLAN filtering (the full-kernel VM) --------------------------------------------------------

def needs_vlan_filtering(fn):
    """Marks a test that needs VLAN filtering: run in the full-kernel VM, skipped here."""
    for mark in (privileged, pytest.mark.fullkernel,
                 pytest.mark.skipif(not kernel_has_bridge_vlan_filtering(),
                                    reason="this kernel has no bridge VLAN filtering "
                                           "(CONFIG_BRIDGE_VLAN_FILTERING); the full-kernel VM "
                                           "runs this")):
        fn = mark(fn)
    return fn


@needs_vlan_filtering
def test_port_vlans_are_set_discovered_and_removed(lab, driver):
    driver.ensure_linux_bridge("br0", vlan_filtering=True)
    assert bridge_info(lab, "br0")["vlan_filtering"] == 1
    driver.set_linux_bridge_port("eth1", "br0")
    assert bridge_vlans(lab, "eth1") == ["1 pvid untagged"]  # the kernel's default entry
    driver.set_linux_bridge_vlans("eth1", add=["10 pvid untagged", "100-199", "300-301 untagged"])
    want = ["1 untagged", "10 pvid untagged", "100-199", "300-301 untagged"]
    assert _canonical(bridge_vlans(lab, "eth1")) == want
    links, _ = driver.discover()
    assert links["br0"].linux_bridge.vlan_filtering is True
    assert links["br0"].linux_bridge.default_pvid == 1
    assert links["eth1"].bridge_vlans == want
    driver.set_linux_bridge_vlans("eth1", delete=["10", "150-199", "300-301"],
                                  add=["1 pvid untagged"])
    assert driver.discover()[0]["eth1"].bridge_vlans == ["1 pvid untagged", "100-149"]
    assert driver.discover()[0] == driver.discover(reuse=False)[0]


def _canonical(entries: list[str]) -> list[str]:
    from plumber_agent.models.lbridge_spec import compress, expand
    return compress(expand(entries))


_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7777))
print("bound", flush=True)
s.settimeout(float(sys.argv[2]))
while True:
    data, peer = s.recvfrom(64)
    s.sendto(data, peer)
"""
_ECHO_CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    s.sendto(b"hello", (sys.argv[1], 7777))  # again and again: the first waits for ARP
    try:
        if s.recvfrom(64)[0] == b"hello":
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"""


def _udp_echo(src_ns: str, dst_ns: str, dst_ip: str) -> bool:
    """Does a UDP datagram from `src_ns` to `dst_ip` (in `dst_ns`) come back? (No ping here.)"""
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c",
                               _ECHO_SERVER, dst_ip, str(ECHO_DEADLINE_S * 2)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "bound"
        return subprocess.run(["ip", "netns", "exec", src_ns, sys.executable, "-c",
                               _ECHO_CLIENT, dst_ip, str(ECHO_DEADLINE_S)],
                              check=False).returncode == 0
    finally:
        server.kill()
        server.wait()


def _bridge_state(*namespaces: str) -> str:
    """What a failed traffic assertion shows: ports, their VLANs and links, per namespace."""
    out = []
    for ns in namespaces:
        for argv in (["bridge", "-d", "vlan", "show"], ["bridge", "link", "show"],
                     ["ip", "-d", "addr", "show"], ["ip", "neigh", "show"]):
            proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                  text=True, check=False)
            out.append(f"[{ns}] {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(out)


@needs_vlan_filtering
@pytest.mark.skipif(not kernel_has_8021q(), reason="the tagged side needs 802.1Q (8021q)")
def test_traffic_crosses_untagged_and_tagged_ports_of_one_vlan_only(lab, driver):
    """peer1 (namespace A) sends untagged into eth1 (pvid 10); peer2.10 (namespace B) sends
    VLAN 10 tagged into eth2 (tagged 10): they reach each other; with eth2 on VLAN 11 instead,
    they do not."""
    with netns() as side_a, netns() as side_b:
        ip(lab, "link", "set", "peer1", "netns", side_a)
        ip(lab, "link", "set", "peer2", "netns", side_b)
        ip(side_a, "addr", "add", "10.9.0.1/24", "dev", "peer1")
        ip(side_a, "link", "set", "peer1", "up")
        ip(side_b, "link", "set", "peer2", "up")
        ip(side_b, "link", "add", "link", "peer2", "name", "peer2.10", "type", "vlan", "id", "10")
        ip(side_b, "addr", "add", "10.9.0.2/24", "dev", "peer2.10")
        ip(side_b, "link", "set", "peer2.10", "up")
        driver.ensure_linux_bridge("br0", vlan_filtering=True, stp=False)
        driver.set_up("br0")
        for port in ("eth1", "eth2"):
            driver.set_linux_bridge_port(port, "br0")
        driver.set_linux_bridge_vlans("eth1", add=["10 pvid untagged"])
        driver.set_linux_bridge_vlans("eth2", add=["10"], delete=["1"])
        assert _udp_echo(side_a, side_b, "10.9.0.2"), _bridge_state(lab, side_a, side_b)
        driver.set_linux_bridge_vlans("eth2", add=["11"], delete=["10"])
        assert not _udp_echo(side_a, side_b, "10.9.0.2")
        driver.set_linux_bridge_vlans("eth2", add=["10"])  # back on VLAN 10: through again
        assert _udp_echo(side_a, side_b, "10.9.0.2"), _bridge_state(lab, side_a, side_b)


# -- the agent's own loop on the real kernel ----------------------------------------------------

def _converge(host, templates) -> None:
    """Plan, execute, re-plan until empty (the reconciler's loop), on the real host."""
    from plumber_agent.reconciler import Reconciler, SyncOutcome
    from tests.support.fakehost import ListSource

    outcome = SyncOutcome()
    run = Reconciler(host=host, source=ListSource(templates), publish=lambda status: None
                     ).converge(templates, {}, outcome)
    assert outcome.ok, outcome.failures
    assert run.final is not None and not run.final.actions, "not converged"
    assert not run.final.notes and not run.final.refusals, (run.final.notes, run.final.refusals)


def _agent_lifecycle(ns, static_sysfs, tmp_path, bridge: dict, vlans: dict) -> None:
    from plumber_agent.host import Host
    from tests.support.fakehost import make_template

    host = Host.for_node(netns=ns, sysfs_root=str(static_sysfs),
                         ovsdb=f"unix:{tmp_path / 'no-ovs.sock'}", state_dir=str(tmp_path / "s"))
    assert host.ledger.acquire()
    template = make_template("lb", {"linuxBridgeConfig": [bridge], "interfaceConfig": [
        {"name": bridge["name"], "ipv4": {"address": ["10.77.0.1/24"]}}]})
    try:
        _converge(host, [template])
        assert bridge_info(ns, "br0")["stp_state"] == 1
        assert [master_of(ns, p) for p in ("eth1", "eth2")] == ["br0", "br0"]
        for port, want in vlans.items():
            assert _canonical(bridge_vlans(ns, port)) == want
        _converge(host, [])
        assert "br0" not in {row["ifname"] for row in ip_json(ns, "link", "show")}
        assert [master_of(ns, p) for p in ("eth1", "eth2")] == [None, None]
        assert host.ledger.records() == {}
    finally:
        host.close()


@privileged
def test_agent_makes_and_undoes_a_bridge_on_the_real_kernel(lab, static_sysfs, tmp_path):
    _agent_lifecycle(lab, static_sysfs, tmp_path,
                     {"name": "br0", "stp": True, "ports": [{"name": "eth1"}, {"name": "eth2"}]},
                     {})


@needs_vlan_filtering
def test_agent_makes_and_undoes_port_vlans_on_the_real_kernel(lab, static_sysfs, tmp_path):
    _agent_lifecycle(lab, static_sysfs, tmp_path,
                     {"name": "br0", "stp": True, "vlanFiltering": True,
                      "ports": [{"name": "eth1", "pvid": 10},
                                {"name": "eth2", "tagged": ["100-199"], "untagged": [20]}]},
                     {"eth1": ["1 untagged", "10 pvid untagged"],
                      "eth2": ["1 pvid untagged", "20 untagged", "100-199"]})
