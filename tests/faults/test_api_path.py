"""The API-path guard on a real kernel (issue 20, items 5 and 6): one test per kind of change
that can move the node's path to the API server, on a topology where the endpoint is reachable
only through the uplink.

    node namespace                                   API namespace
      eno1 10.202.0.2/24 (default via 10.202.0.1) --- apipeer0 10.202.0.1/24
      eth1 10.204.0.2/24 (a second NIC, no way out)    lo 10.250.0.10/32, TCP listener :6443
      eth2 (a third NIC)

eno1 is also the netdev of the static sysfs tree's PF 0000:01:00.0, so an SR-IOV change there is
a change to the PF carrying the path. The agent's own converge loop runs in process on the real
Host (netlink in the node namespace); the endpoint and the probe are the agent's own classes
(ApiEndpoint, apiprobe.Probe with a tcp target through the kernel); time is a FakeClock, so the
rollback bound is asserted in the clock's seconds, never in wall time.

Each kind: refused without allowApiServerDisruption (a message naming the API server and the
opt-in on the template, the host unchanged); with the opt-in and the API unreachable after the
pass, rolled back once the bound has passed.
"""
from __future__ import annotations

import functools
import socket
import threading
from contextlib import contextmanager

import pytest

from plumber_agent.apiprobe import Probe, parse_target
from plumber_agent.clock import FakeClock
from plumber_agent.host import Host
from plumber_agent.models.plan import ApiEndpoint
from plumber_agent.reconciler import Reconciler
from plumber_agent.rollback import RolledBack
from tests.faults.nsnet import ApiNamespace, run_in_netns
from tests.helpers.netns import IpCommandError, ip, ip_json
from tests.support.fakehost import ListSource, make_template

pytestmark = [pytest.mark.fault, pytest.mark.privileged]

API_IP, API_PORT = "10.250.0.10", 6443
NODE_ADDR, GW_ADDR = "10.202.0.2/24", "10.202.0.1/24"
ROLLBACK_BOUND_S = 5.0  # the agent's --api-loss-rollback-s here, in FakeClock seconds
ENDPOINT = ApiEndpoint(ip=API_IP, port=API_PORT)
TCP_PROBE = parse_target(f"tcp:{API_IP}:{API_PORT}")
PROBE_ATTEMPT_S = 0.5  # one probe attempt (real sockets); a lost path fails within it


class Listener:
    """A TCP server in the API namespace that accepts and closes (the API endpoint)."""

    def __init__(self, ns: str) -> None:
        def listen():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((API_IP, API_PORT))
            sock.listen(16)
            return sock
        self.sock = run_in_netns(ns, listen)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


@contextmanager
def topology(node_ns: str, *, bridged: bool = False):
    with ApiNamespace(node_ns, node_ifname="eno1", node_addr=NODE_ADDR,
                      api_addr=GW_ADDR) as api:
        ip(api.api_ns, "addr", "add", f"{API_IP}/32", "dev", "lo")
        uplink = "eno1"
        if bridged:  # the uplink is a Linux bridge with eno1 as its member
            ip(node_ns, "link", "add", "name", "br0", "type", "bridge")
            ip(node_ns, "addr", "del", NODE_ADDR, "dev", "eno1")
            ip(node_ns, "link", "set", "eno1", "master", "br0")
            ip(node_ns, "addr", "add", NODE_ADDR, "dev", "br0")
            ip(node_ns, "link", "set", "br0", "up")
            uplink = "br0"
        ip(node_ns, "route", "add", "default", "via", "10.202.0.1", "dev", uplink)
        ip(node_ns, "addr", "add", "10.204.0.2/24", "dev", "eth1")
        listener = Listener(api.api_ns)
        try:
            assert route_get(node_ns)["dev"] == uplink
            yield api
        finally:
            listener.close()


def route_get(ns: str) -> dict:
    (answer,) = ip_json(ns, "route", "get", API_IP)
    return answer


class InNodeNamespace:
    """The probe seam: the real tcp probe, run from the node namespace (where the agent would
    run), or False once `lost` is set (a loss the topology cannot cause by itself: an MTU
    change does not stop TCP between veths)."""

    def __init__(self, probe, ns: str) -> None:
        self.probe, self.ns, self.lost, self.calls = probe, ns, False, 0

    def __call__(self) -> bool:
        self.calls += 1
        return False if self.lost else bool(run_in_netns(self.ns, self.probe))

    @property
    def last_failure(self):
        return "scripted loss" if self.lost else self.probe.last_failure


@pytest.fixture
def agent(node_ns, static_sysfs, tmp_path):
    """make(templates, probe=None) -> (reconciler, published statuses, clock)."""
    hosts: list[Host] = []

    def make(templates, *, probe=None, ovs_db=None):
        if not hosts:  # one host (and ledger lock) for every reconciler of the test
            hosts.append(Host.for_node(netns=node_ns, sysfs_root=str(static_sysfs),
                                       ovsdb=ovs_db or f"unix:{tmp_path}/no-ovs.sock",
                                       state_dir=str(tmp_path / "state")))
            assert hosts[0].ledger.acquire()
        host = hosts[0]
        published: list = []
        clock = FakeClock(auto_advance=True)
        probe = probe or InNodeNamespace(Probe([TCP_PROBE], endpoints=lambda: [ENDPOINT],
                                               timeout_s=PROBE_ATTEMPT_S), node_ns)
        rec = Reconciler(host=host, source=ListSource(templates), publish=published.append,
                         api_endpoints=lambda: [ENDPOINT], api_probe=probe,
                         api_loss_deadline_s=ROLLBACK_BOUND_S, clock=clock,
                         rolled_back=RolledBack(str(tmp_path / "rolled-back.json")))
        return rec, published, clock, probe
    yield make
    for host in hosts:
        host.close()


def state_of(published, name) -> tuple[str, str]:
    entry = {t["name"]: t for t in published[-1]["templates"]}[name]
    return entry["state"], entry.get("message") or ""


def assert_refused(published, name, *needles) -> str:
    state, message = state_of(published, name)
    assert state == "Failed", message
    assert f"API server {API_IP}" in message and "allowApiServerDisruption" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def v4(ns, ifname) -> list[str]:
    (link,) = ip_json(ns, "addr", "show", "dev", ifname)
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                  if a.get("family") == "inet")


def mtu(ns, ifname) -> int:
    return ip_json(ns, "link", "show", "dev", ifname)[0]["mtu"]


def opted_in(spec: dict) -> dict:
    return {"allowApiServerDisruption": True, **spec}


def assert_rolled_back(published, clock, started, name) -> None:
    state, message = state_of(published, name)
    assert state == "Failed" and message.startswith("rolled back: the API server did not "
                                                    f"answer for {ROLLBACK_BOUND_S:g} s"), message
    waited = clock.monotonic() - started
    assert ROLLBACK_BOUND_S <= waited <= ROLLBACK_BOUND_S + 2, waited  # the bound, in clock time


# -- routes -----------------------------------------------------------------------------------

HIJACK = {"routes": {"ipv4": [{"dst": "10.250.0.0/24", "gw": "10.204.0.254", "dev": "eth1"}]}}
NEW_DEFAULT = {"routes": {"ipv4": [{"gw": "10.204.0.254", "dev": "eth1", "metric": 0}]}}


@pytest.mark.parametrize("spec", [HIJACK, {"routes": {"ipv4": [
    {"dst": f"{API_IP}/32", "gw": "10.204.0.254"}]}}], ids=["more-specific", "host-route"])
def test_a_route_hijacking_the_endpoint_is_refused(node_ns, agent, spec):
    with topology(node_ns):
        before = route_get(node_ns)
        rec, published, _, _ = agent([make_template("hijack", spec)])
        rec.sync()
        assert_refused(published, "hijack", "not changing the route to")
        assert route_get(node_ns) == before


def test_a_hijacking_route_with_the_opt_in_is_rolled_back_within_the_bound(node_ns, agent):
    with topology(node_ns):
        before = route_get(node_ns)
        rec, published, clock, probe = agent([make_template("hijack", opted_in(HIJACK))])
        started = clock.monotonic()
        rec.sync()  # applied, the real tcp probe fails through eth1, rolled back
        assert_rolled_back(published, clock, started, "hijack")
        assert route_get(node_ns) == before
        assert "10.250.0.0/24" not in ip(node_ns, "route", "show")


def test_a_harmless_route_through_the_uplink_is_applied_and_probed(node_ns, agent):
    with topology(node_ns):
        rec, published, _, probe = agent([make_template("elsewhere", {"routes": {"ipv4": [
            {"dst": "10.99.0.0/16", "gw": "10.202.0.1"}]}})])
        rec.sync()
        assert state_of(published, "elsewhere")[0] == "Applied"
        assert probe.calls == 2  # before (armed) and after the pass: it touched eno1
        assert route_get(node_ns)["dev"] == "eno1"


# -- addresses --------------------------------------------------------------------------------

@pytest.mark.parametrize("cidr,how", [(f"{API_IP}/32", "local on eth1"),
                                      ("10.250.0.9/30", "dev eth1")],
                         ids=["slash32-makes-it-local", "slash30-covers-it"])
def test_an_address_shadowing_the_endpoint_is_refused(node_ns, agent, cidr, how):
    with topology(node_ns):
        spec = {"interfaceConfig": [{"name": "eth1", "ipv4": {"address": ["10.204.0.2/24", cidr]}}]}
        rec, published, _, _ = agent([make_template("shadow", spec)])
        rec.sync()
        assert_refused(published, "shadow", f"not adding {cidr} to eth1", how)
        assert v4(node_ns, "eth1") == ["10.204.0.2/24"]
        assert route_get(node_ns)["dev"] == "eno1"


def test_a_shadowing_address_with_the_opt_in_is_rolled_back(node_ns, agent):
    with topology(node_ns):
        spec = opted_in({"interfaceConfig": [{"name": "eth1", "ipv4": {
            "address": ["10.204.0.2/24", f"{API_IP}/32"]}}]})
        rec, published, clock, _ = agent([make_template("shadow", spec)])
        started = clock.monotonic()
        rec.sync()  # the endpoint became local: nothing listens there, the probe fails
        assert_rolled_back(published, clock, started, "shadow")
        assert v4(node_ns, "eth1") == ["10.204.0.2/24"]
        assert route_get(node_ns)["dev"] == "eno1"


def test_removing_the_source_address_is_refused(node_ns, agent):
    with topology(node_ns):
        spec = {"interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.202.0.3/24"]}}]}
        rec, published, _, _ = agent([make_template("cut", spec)])
        rec.sync()
        assert_refused(published, "cut", "not removing 10.202.0.2/24 from eno1")
        assert "10.202.0.2/24" in v4(node_ns, "eno1")


# -- MTU, bridge membership, SR-IOV, link state ------------------------------------------------

def test_the_uplink_mtu_is_refused_and_rolled_back_with_the_opt_in(node_ns, agent):
    with topology(node_ns):
        spec = {"interfaceConfig": [{"name": "eno1", "mtu": 1400}]}
        rec, published, _, _ = agent([make_template("mtu", spec)])
        rec.sync()
        assert_refused(published, "mtu", "not changing the MTU of eno1 to 1400")
        assert mtu(node_ns, "eno1") == 1500

        rec, published, clock, probe = agent([make_template("mtu", opted_in(spec))])
        real_execute = rec.host.execute

        def execute_then_lose(*args, **kwargs):
            report = real_execute(*args, **kwargs)
            probe.lost = True  # the NIC renegotiates and the switch drops the bigger frames
            return report
        rec.host.execute = execute_then_lose
        started = clock.monotonic()
        rec.sync()
        rec.host.execute = real_execute
        assert_rolled_back(published, clock, started, "mtu")
        assert mtu(node_ns, "eno1") == 1500


def test_a_member_of_the_uplink_bridge_is_guarded(node_ns, agent):
    """The path leaves through br0, a Linux bridge: its member eno1 carries it too."""
    with topology(node_ns, bridged=True):
        rec, published, _, _ = agent([make_template("member", {"interfaceConfig": [
            {"name": "eno1", "mtu": 1400}]})])
        rec.sync()
        assert_refused(published, "member", "not changing the MTU of eno1", "eno1 carries")
        assert mtu(node_ns, "eno1") == 1500


def test_enslaving_the_uplink_to_an_ovs_bridge_is_refused(node_ns, agent, tmp_path):
    from tests.helpers.ovs import userspace_ovs
    with topology(node_ns), userspace_ovs(tmp_path / "ovs", node_ns) as ovs:
        rec, published, _, _ = agent([make_template("enslave", {"ovsConfig": [
            {"bridgeName": "br-api", "nodeInterface": "eno1",
             "params": {"datapathType": "netdev"}}]})], ovs_db=ovs.db)
        rec.sync()
        assert_refused(published, "enslave", "not adding eno1 to OVS bridge br-api")
        assert ovs.vsctl("list-br").stdout.split() == ["br-api"]  # the bridge alone is harmless
        assert "eno1" not in ovs.vsctl("list-ports", "br-api").stdout.split()
        assert route_get(node_ns)["dev"] == "eno1"


def test_sriov_on_the_pf_carrying_the_path_is_refused(node_ns, agent, static_sysfs):
    with topology(node_ns):
        numvfs = static_sysfs / "bus/pci/devices/0000:01:00.0/sriov_numvfs"
        before = numvfs.read_text()
        rec, published, _, _ = agent([make_template("vfs", {"sriovConfig": [
            {"pfName": "eno1", "numVfs": 4}]})])
        rec.sync()
        assert_refused(published, "vfs", "not changing numVfs of PF 0000:01:00.0 to 4",
                       "eno1 carries")
        assert numvfs.read_text() == before


def test_bringing_up_a_link_that_would_shadow_the_endpoint_is_refused(node_ns, agent):
    """eth1.5 is down with 10.250.0.9/30 (someone's leftover); a template taking the VLAN
    over would set it up, and its connected /30 would carry the API traffic."""
    with topology(node_ns):
        try:
            ip(node_ns, "link", "add", "link", "eth1", "name", "eth1.5", "type", "vlan",
               "id", "5")
        except IpCommandError as exc:  # the CI kernel has no 802.1Q (tests/fullkernel has)
            pytest.skip(f"no VLAN links in this kernel ({exc}); the model's half of this "
                        "case is tests/unit/test_apipath.py")
        ip(node_ns, "addr", "add", "10.250.0.9/30", "dev", "eth1.5")
        rec, published, _, _ = agent([make_template("vlan", {"interfaceConfig": [
            {"name": "eth1", "vlan": [{"id": 5}]}]})])
        rec.sync()
        assert_refused(published, "vlan", "not setting eth1.5 up")
        assert ip_json(node_ns, "link", "show", "dev", "eth1.5")[0]["operstate"] == "DOWN"
        assert route_get(node_ns)["dev"] == "eno1"


def test_a_path_the_kernel_moved_unexpectedly_is_probed_and_rolled_back(node_ns, agent):
    """The plan said eth2's MTU could not move the path; the kernel says it did (here: the
    uplink went down during the pass, as a NIC reset would): probed, and rolled back."""
    with topology(node_ns):
        spec = {"interfaceConfig": [{"name": "eth2", "mtu": 1400}]}
        rec, published, clock, probe = agent([make_template("eth2", spec)])
        real_execute = rec.host.execute

        def execute_and_reset(*args, **kwargs):
            report = real_execute(*args, **kwargs)
            ip(node_ns, "link", "set", "eno1", "down")
            return report
        rec.host.execute = execute_and_reset
        started = clock.monotonic()
        rec.sync()
        rec.host.execute = real_execute
        assert probe.calls >= 2  # no pre-probe: the plan expected nothing; then until the bound
        assert_rolled_back(published, clock, started, "eth2")
        assert mtu(node_ns, "eth2") == 1500


def test_an_unrelated_change_is_neither_refused_nor_probed(node_ns, agent):
    with topology(node_ns):
        rec, published, _, probe = agent([make_template("eth2", {"interfaceConfig": [
            {"name": "eth2", "mtu": 1400}]})])
        rec.sync()
        assert state_of(published, "eth2")[0] == "Applied"
        assert mtu(node_ns, "eth2") == 1400 and probe.calls == 0


# -- the probe targets, from the node namespace -------------------------------------------------

def test_probe_targets_answer_through_the_uplink_and_not_without_it(node_ns):
    with topology(node_ns):
        def check(text, **kw):
            probe = Probe([parse_target(text)], endpoints=lambda: [ENDPOINT],
                          timeout_s=PROBE_ATTEMPT_S, **kw)
            return run_in_netns(node_ns, probe), probe.last_failure
        assert check(f"tcp:{API_IP}:{API_PORT}") == (True, None)
        assert check("ping:10.202.0.1") == (True, None)
        assert check("ping:gateway", gateways=lambda: ["10.202.0.1"]) == (True, None)
        assert check("dns:localhost") == (True, None)
        ip(node_ns, "link", "set", "eno1", "down")
        for text in (f"tcp:{API_IP}:{API_PORT}", "ping:10.202.0.1", "api"):
            ok, failure = check(text)
            assert not ok and failure.startswith(text), failure


# -- local mode, through the command line ---------------------------------------------------------

@pytest.mark.parametrize("how", ["api-endpoint", "kubeconfig"])
def test_local_mode_guards_the_endpoint_it_is_given(node_ns, static_sysfs, tmp_path, how):
    from tests.support.agent_proc import run_once
    with topology(node_ns):
        templates = tmp_path / "templates"
        templates.mkdir()
        (templates / "hijack.yaml").write_text(
            "apiVersion: plumber.k8s.pf9.io/v1\nkind: HostNetworkTemplate\n"
            "metadata: {name: hijack}\n"
            "spec:\n  routes:\n    ipv4:\n"
            "      - {dst: 10.250.0.0/24, gw: 10.204.0.254, dev: eth1}\n")
        if how == "kubeconfig":
            kubeconfig = tmp_path / "kubeconfig"
            kubeconfig.write_text(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                f"clusters: [{{name: k, cluster: {{server: 'https://{API_IP}:{API_PORT}'}}}}]\n"
                "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
                "users: [{name: u, user: {token: x}}]\n")
            extra = ("--kubeconfig", str(kubeconfig))
        else:
            extra = ("--api-endpoint", f"{API_IP}:{API_PORT}")
        before = route_get(node_ns)
        proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                        templates=templates, output=tmp_path / "hn.yaml", extra=extra)
        assert proc.returncode == 1, proc.stderr
        text = (tmp_path / "hn.yaml").read_text()
        assert "not changing the route to 10.250.0.0/24" in text and "allowApiServerDisruption" \
            in text, text
        assert route_get(node_ns) == before


def test_plan_refuses_what_run_would(node_ns, static_sysfs, tmp_path):
    import subprocess
    import sys

    from tests.helpers.agent_env import REPO_ROOT, agent_env
    with topology(node_ns):
        path = tmp_path / "hijack.yaml"
        path.write_text("apiVersion: plumber.k8s.pf9.io/v1\nkind: HostNetworkTemplate\n"
                        "metadata: {name: hijack}\nspec:\n  routes:\n    ipv4:\n"
                        "      - {dst: 10.250.0.0/24, gw: 10.204.0.254, dev: eth1}\n")
        argv = [sys.executable, "-m", "plumber_agent", "plan", "-f", str(path), "--netns",
                node_ns, "--sysfs-root", str(static_sysfs), "--ovsdb", f"unix:{tmp_path}/no.sock",
                "--state-dir", str(tmp_path / "state"), "--node-name", "n1"]
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=120,
                                env=agent_env(), cwd=str(REPO_ROOT), check=False)
        guarded = run(argv + ["--api-endpoint", f"{API_IP}:{API_PORT}"])
        assert guarded.returncode == 1, guarded.stderr
        assert "would fail: not changing the route to 10.250.0.0/24" in guarded.stdout
        unguarded = run(argv)  # no endpoint given: nothing to keep
        assert unguarded.returncode == 2, unguarded.stdout + unguarded.stderr
