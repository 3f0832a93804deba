"""The Open vSwitch driver against a real userspace OVS (ovsdb-server + ovs-vswitchd with
datapath_type=netdev) running in a throw-away network namespace, plus the checks that must hold
before any OVS command runs (name and remote validation, OVS missing).

The only thing replaced is our own seam, `Ovs.runner`: wrapped to record every argv (to prove that
bad input never reaches a subprocess and that idempotent calls change nothing) while still running
the real ovs-vsctl.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from plumber_agent.errors import HostError, HostTimeout, InvalidSpec, NotAvailable, Refused
from plumber_agent.host.ovs import (MANAGED_KEY, Ovs, check_ovs_name, check_ovsdb_remote,
                                    run_subprocess)
from tests.helpers.netns import netns as throwaway_netns
from tests.helpers.netns import veth_pair
from tests.helpers.ovs import userspace_ovs
from tests.helpers.wait import wait_for

OVS_TIMEOUT_S = 3.0
THREAD_JOIN_BOUND_S = 60.0  # far above the driver's bound: only catches a hang
POLL_BOUND_S = 10.0
CHANGE_VERBS = {"add-br", "add-port", "add-bond", "del-br", "del-port", "set"}


class RecordingRunner:
    """Records each argv, then runs it for real (the spy at our seam)."""

    def __init__(self, inner=run_subprocess):
        self.inner = inner
        self.calls: list[list[str]] = []

    def __call__(self, argv, timeout_s):
        self.calls.append(list(argv))
        return self.inner(argv, timeout_s)

    def changes(self) -> list[list[str]]:
        return [argv for argv in self.calls if CHANGE_VERBS.intersection(argv)]


class NoSubprocess:
    """A runner that fails the test if anything reaches it."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv, timeout_s):
        self.calls.append(list(argv))
        raise AssertionError(f"a subprocess was about to run: {argv}")


# --- fixtures -------------------------------------------------------------------------------

def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def netns(netns_name):
    """The shared throw-away namespace (tests/conftest.py), under the name these tests use."""
    return netns_name


@pytest.fixture
def ovs(tmp_path, netns):
    with userspace_ovs(tmp_path, netns) as instance:
        yield instance


@pytest.fixture
def driver(ovs):
    ovs_driver = Ovs(ovs.db, timeout_s=OVS_TIMEOUT_S)
    ovs_driver.runner = RecordingRunner()
    return ovs_driver


def link_mtu(netns: str, name: str) -> int:
    return json.loads(_run(["ip", "-n", netns, "-j", "link", "show", "dev", name]))[0]["mtu"]


def vsctl(ovs, *args: str) -> str:
    return ovs.vsctl(*args).stdout.strip()


def external_id(ovs, table: str, record: str, key: str = MANAGED_KEY) -> str | None:
    result = ovs.vsctl("--if-exists", "get", table, record, f"external_ids:{key}")
    value = result.stdout.strip()
    return json.loads(value) if value else None


# --- no OVS needed: validation before any subprocess ------------------------------------------

BAD_NAMES = ["br0,br1", "a=b", "--if-exists", "-x", 'a"b', "a'b", "a b", "a\tb", "a:b", "a\nb",
             "x" * 16, "", ".", "..", "a/b", "br[0]", "é", None, 7]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_before_any_subprocess(bad):
    driver = Ovs("unix:/nonexistent/db.sock")
    driver.runner = spy = NoSubprocess()
    calls = [
        lambda: driver.ensure_bridge(bad, "netdev"),
        lambda: driver.delete_bridge(bad),
        lambda: driver.is_managed(bad),
        lambda: driver.is_port_managed(bad),
        lambda: driver.ensure_port(bad, "eth1", ["eth1"]),
        lambda: driver.ensure_port("br0", bad, [bad]),
        lambda: driver.ensure_port("br0", "bond0", ["eth1", bad]),
        lambda: driver.delete_port(bad, "eth1"),
        lambda: driver.delete_port("br0", bad),
    ]
    for call in calls:
        with pytest.raises(InvalidSpec) as excinfo:
            call()
        assert repr(bad)[:10] in str(excinfo.value) or "not a string" in str(excinfo.value)
    assert spy.calls == []


@pytest.mark.parametrize("good", ["br0", "ovs-br01", "eno2.1000", "x" * 15, "_a", "a-b_c.d"])
def test_check_ovs_name_accepts_netdev_names(good):
    assert check_ovs_name(good) is None


@pytest.mark.parametrize("kwargs, field", [
    (dict(datapath_type="dpdk"), "datapathType"),
])
def test_bad_bridge_params_are_refused_before_any_subprocess(kwargs, field):
    driver = Ovs("unix:/nonexistent/db.sock")
    driver.runner = spy = NoSubprocess()
    with pytest.raises(InvalidSpec, match=field):
        driver.ensure_bridge("br0", **kwargs)
    assert spy.calls == []


@pytest.mark.parametrize("kwargs, field", [
    (dict(bond_mode="round-robin"), "bondMode"),
    (dict(lacp="on"), "lacp"),
    (dict(mtu_request=10), "mtuRequest"),
    (dict(mtu_request=True), "mtuRequest"),
    (dict(mtu_request="9000"), "mtuRequest"),
    (dict(interfaces=[]), "nodeInterface"),
    (dict(interfaces="eth1,eth2"), "nodeInterface"),
    (dict(interfaces=["eth1", "eth1"]), "nodeInterface"),
    (dict(port="other", interfaces=["eth1"]), "named after its interface"),
    (dict(port="eth1", interfaces=["eth1", "eth2"]), "named after one of its members"),
])
def test_bad_port_params_are_refused_before_any_subprocess(kwargs, field):
    driver = Ovs("unix:/nonexistent/db.sock")
    driver.runner = spy = NoSubprocess()
    args = dict(bridge="br0", port="bond0", interfaces=["eth1", "eth2"])
    args.update(kwargs)
    with pytest.raises(InvalidSpec, match=field):
        driver.ensure_port(**args)
    assert spy.calls == []


@pytest.mark.parametrize("db", [
    "unix:/var/run/openvswitch/db.sock", "tcp:127.0.0.1:6640", "ssl:[::1]:6640",
    "tcp:ovsdb.example.com:6641",
])
def test_valid_ovsdb_remotes_are_accepted(db):
    assert check_ovsdb_remote(db) is None
    assert Ovs(db).db == db


@pytest.mark.parametrize("db", [
    "", "unix:", "unix:relative/db.sock", "unix:/var/run/../../etc/db.sock", "unix:/a/..",
    "unix:/tmp/db.sock,unix:/tmp/other.sock", "unix:/tmp/a b.sock", "unix:/tmp/--x;rm",
    "punix:/tmp/db.sock", "tcp:host", "tcp:host:0", "tcp:host:70000", "tcp:-host:6640",
    "tcp:host:6640,tcp:other:6640", "/var/run/openvswitch/db.sock", "--db=unix:/x", 5,
])
def test_invalid_ovsdb_remotes_are_refused(db):
    with pytest.raises(InvalidSpec, match="ovsdb"):
        Ovs(db)


def test_default_db_is_the_host_socket():
    assert Ovs().db == "unix:/var/run/openvswitch/db.sock"


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf"), "10", True])
def test_invalid_timeouts_are_refused(timeout_s):
    with pytest.raises(InvalidSpec, match="timeout_s"):
        Ovs(timeout_s=timeout_s)


def test_ovs_not_installed_is_not_available(tmp_path):
    driver = Ovs(f"unix:{tmp_path}/db.sock", vsctl=str(tmp_path / "no-such-ovs-vsctl"))
    with pytest.raises(NotAvailable) as excinfo:
        driver.discover()
    message = str(excinfo.value)
    assert f"not reachable at unix:{tmp_path}/db.sock" in message
    assert "not installed" in message and "HostPlumber does not install OVS" in message
    with pytest.raises(NotAvailable):
        driver.ensure_bridge("br0", "netdev")


def test_stuck_ovs_vsctl_is_bounded_by_the_subprocess_timeout(tmp_path):
    """An ovs-vsctl that ignores its own --timeout is killed by ours (docs/pitfalls.md 30)."""
    fake = tmp_path / "stuck-vsctl"
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    (tmp_path / "db.sock").touch()  # a socket path that exists, so ovs-vsctl is run
    driver = Ovs(f"unix:{tmp_path}/db.sock", timeout_s=0.5, vsctl=str(fake))
    with pytest.raises(NotAvailable, match="timed out"):
        driver.discover()


def test_unreachable_database_is_not_available(tmp_path):
    if shutil.which("ovs-vsctl") is None:
        pytest.skip("ovs-vsctl is not installed (Debian package openvswitch-switch)")
    driver = Ovs(f"unix:{tmp_path}/absent/db.sock", timeout_s=OVS_TIMEOUT_S)
    with pytest.raises(NotAvailable) as excinfo:
        driver.discover()
    assert f"not reachable at unix:{tmp_path}/absent/db.sock" in str(excinfo.value)
    assert "does not exist (is ovsdb-server running?)" in str(excinfo.value)
    # A socket left behind by a dead ovsdb-server: ovs-vsctl is asked and its answer shown.
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()
    driver = Ovs(f"unix:{stale}", timeout_s=OVS_TIMEOUT_S)
    with pytest.raises(NotAvailable) as excinfo:
        driver.discover()
    assert "database connection failed" in str(excinfo.value)


# --- real userspace OVS in a throw-away namespace -----------------------------------------------

@pytest.mark.privileged
@pytest.mark.ovs
def test_ensure_bridge_creates_a_tagged_netdev_bridge(driver, ovs, netns):
    driver.ensure_bridge("pbr0", "netdev")

    assert vsctl(ovs, "list-br") == "pbr0"
    assert vsctl(ovs, "get", "Bridge", "pbr0", "datapath_type") == "netdev"
    assert external_id(ovs, "Bridge", "pbr0") == "true"
    assert vsctl(ovs, "get", "Interface", "pbr0", "ofport") == "65534"
    assert "pbr0" in _run(["ip", "-n", netns, "-br", "link"])  # the userspace tap exists
    assert driver.is_managed("pbr0") is True
    observed = driver.discover()["pbr0"]
    assert observed.datapath_type == "netdev"
    assert observed.external_ids == {MANAGED_KEY: "true"}

    changes_before = len(driver.runner.changes())
    driver.ensure_bridge("pbr0", "netdev")  # idempotent: nothing to change, nothing written
    assert len(driver.runner.changes()) == changes_before
    assert vsctl(ovs, "list-br") == "pbr0"


@pytest.mark.privileged
@pytest.mark.ovs
def test_every_command_is_an_argv_with_db_and_timeout(driver, ovs, netns):
    veth_pair(netns, "pva", "pvb")
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_port("pbr0", "pva", ["pva"], mtu_request=1400)
    driver.delete_port("pbr0", "pva")
    driver.delete_bridge("pbr0")

    assert driver.runner.calls
    for argv in driver.runner.calls:
        assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)
        assert argv[0] == "ovs-vsctl"
        assert argv[1] == f"--db={ovs.db}"
        assert argv[2] == "--timeout=3"


@pytest.mark.privileged
@pytest.mark.ovs
@pytest.mark.parametrize("datapath_type", ["system", None])
def test_bridge_that_vswitchd_cannot_create_is_an_error_despite_exit_0(driver, ovs,
                                                                       datapath_type):
    """Without the OVS kernel module a system-datapath bridge fails, yet ovs-vsctl exits 0."""
    if Path("/sys/module/openvswitch").exists():
        pytest.skip("the openvswitch kernel module is loaded: a system bridge would work here")
    with pytest.raises(HostError) as excinfo:
        driver.ensure_bridge("pbrsys", datapath_type)
    message = str(excinfo.value)
    assert "pbrsys" in message and "could not set it up" in message
    assert "Error detected" in message or "kernel module" in message
    # The half-made row is rolled back: no bridge is left that no ledger record owns.
    assert "pbrsys" not in driver.discover()
    driver.ensure_bridge("pbrsys", "netdev")
    assert vsctl(ovs, "get", "Interface", "pbrsys", "ofport") == "65534"


@pytest.mark.privileged
@pytest.mark.ovs
def test_managed_bridge_datapath_type_is_updated(driver, ovs):
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_bridge("pbr0", None)  # None: leave the datapath type alone
    assert vsctl(ovs, "get", "Bridge", "pbr0", "datapath_type") == "netdev"


@pytest.mark.privileged
@pytest.mark.ovs
def test_single_interface_port_with_mtu_request(driver, ovs, netns):
    veth_pair(netns, "pva", "pvb")
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_port("pbr0", "pva", ["pva"], mtu_request=9000)

    assert vsctl(ovs, "list-ports", "pbr0") == "pva"
    assert int(vsctl(ovs, "get", "Interface", "pva", "ofport")) >= 1
    assert vsctl(ovs, "get", "Interface", "pva", "mtu_request") == "9000"
    assert external_id(ovs, "Port", "pva") == "true"
    assert link_mtu(netns, "pva") == 9000  # ovs-vswitchd applied it to the netdev
    assert driver.is_port_managed("pva") is True

    changes_before = len(driver.runner.changes())
    driver.ensure_port("pbr0", "pva", ["pva"], mtu_request=9000)
    assert len(driver.runner.changes()) == changes_before  # idempotent: no write
    assert vsctl(ovs, "list-ports", "pbr0") == "pva"  # no duplicate

    driver.ensure_port("pbr0", "pva", ["pva"], mtu_request=1400)
    assert vsctl(ovs, "get", "Interface", "pva", "mtu_request") == "1400"
    assert link_mtu(netns, "pva") == 1400


@pytest.mark.privileged
@pytest.mark.ovs
def test_bond_of_two_veth_ends_with_bond_mode_and_lacp(driver, ovs, netns):
    for index in (1, 2, 3):
        veth_pair(netns, f"pb{index}", f"pb{index}p")
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_port("pbr0", "pbond0", ["pb1", "pb2"], bond_mode="balance-slb", lacp="active",
                       mtu_request=1400)

    assert vsctl(ovs, "list-ports", "pbr0") == "pbond0"
    assert sorted(vsctl(ovs, "list-ifaces", "pbr0").split()) == ["pb1", "pb2"]
    assert vsctl(ovs, "get", "Port", "pbond0", "bond_mode") == "balance-slb"
    assert vsctl(ovs, "get", "Port", "pbond0", "lacp") == "active"
    assert external_id(ovs, "Port", "pbond0") == "true"
    for member in ("pb1", "pb2"):
        assert int(vsctl(ovs, "get", "Interface", member, "ofport")) >= 1
        assert vsctl(ovs, "get", "Interface", member, "mtu_request") == "1400"
        assert link_mtu(netns, member) == 1400

    changes_before = len(driver.runner.changes())
    driver.ensure_port("pbr0", "pbond0", ["pb2", "pb1"], bond_mode="balance-slb", lacp="active",
                       mtu_request=1400)
    assert len(driver.runner.changes()) == changes_before  # same bond, any order: no write

    driver.ensure_port("pbr0", "pbond0", ["pb1", "pb2"], bond_mode="active-backup", lacp="off")
    assert vsctl(ovs, "get", "Port", "pbond0", "bond_mode") == "active-backup"
    assert vsctl(ovs, "get", "Port", "pbond0", "lacp") == "off"

    # Members changed: the bond is rebuilt in one transaction, still ours.
    driver.ensure_port("pbr0", "pbond0", ["pb1", "pb3"], bond_mode="active-backup",
                       mtu_request=1400)
    assert vsctl(ovs, "list-ports", "pbr0") == "pbond0"
    assert sorted(vsctl(ovs, "list-ifaces", "pbr0").split()) == ["pb1", "pb3"]
    assert vsctl(ovs, "get", "Port", "pbond0", "bond_mode") == "active-backup"
    assert external_id(ovs, "Port", "pbond0") == "true"
    assert int(vsctl(ovs, "get", "Interface", "pb3", "ofport")) >= 1


@pytest.mark.privileged
@pytest.mark.ovs
def test_discovery_matches_ovs_vsctl(driver, ovs, netns):
    for name in ("pva", "pb1", "pb2"):
        veth_pair(netns, name, f"{name}p")
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_bridge("pbr1", "netdev")
    driver.ensure_port("pbr0", "pva", ["pva"], mtu_request=1400)
    driver.ensure_port("pbr1", "pbond0", ["pb1", "pb2"], bond_mode="balance-slb", lacp="passive")
    ovs.vsctl("set", "Interface", "pb1", "external_ids:note=hello")

    observed = driver.discover()

    assert sorted(observed) == vsctl(ovs, "list-br").split()
    for bridge_name, bridge in observed.items():
        assert bridge.datapath_type == vsctl(ovs, "get", "Bridge", bridge_name, "datapath_type")
        port_names = [port.name for port in bridge.ports]
        # list-ports omits the bridge's own internal port
        assert sorted(set(port_names) - {bridge_name}) == vsctl(
            ovs, "list-ports", bridge_name).split()
        iface_names = sorted(i.name for p in bridge.ports for i in p.interfaces)
        assert sorted(set(iface_names) - {bridge_name}) == vsctl(
            ovs, "list-ifaces", bridge_name).split()
        for port in bridge.ports:
            for iface in port.interfaces:
                assert iface.ofport == int(vsctl(ovs, "get", "Interface", iface.name, "ofport"))
                # ovs-vsctl prints an empty string as "" and other strings bare
                assert iface.type == vsctl(ovs, "get", "Interface", iface.name, "type").strip('"')
    assert [i.name for i in observed["pbr1"].ports[0].interfaces] == ["pb1", "pb2"]
    bond = next(p for p in observed["pbr1"].ports if p.name == "pbond0")
    assert (bond.bond_mode, bond.lacp) == ("balance-slb", "passive")
    assert bond.external_ids == {MANAGED_KEY: "true"}
    assert bond.interfaces[0].external_ids == {"note": "hello"}
    plain = next(p for p in observed["pbr0"].ports if p.name == "pva")
    assert plain.interfaces[0].mtu_request == 1400
    assert plain.bond_mode is None and plain.lacp is None
    local = next(p for p in observed["pbr0"].ports if p.name == "pbr0")
    assert local.interfaces[0].type == "internal" and local.interfaces[0].ofport == 65534


@pytest.mark.privileged
@pytest.mark.ovs
def test_missing_netdev_is_a_clear_error_and_recovers_when_it_appears(driver, ovs, netns):
    driver.ensure_bridge("pbr0", "netdev")
    with pytest.raises(HostError) as excinfo:
        driver.ensure_port("pbr0", "plate", ["plate"])
    message = str(excinfo.value)
    assert "plate" in message and "ofport -1" in message and "No such device" in message
    assert driver.discover()["pbr0"].ports  # the row stays (docs/pitfalls.md 32), tagged as ours
    assert external_id(ovs, "Port", "plate") == "true"

    veth_pair(netns, "plate", "platep")
    # ovs-vswitchd opens the netdev once it exists: until then HostError means "not yet".
    wait_for(lambda: driver.ensure_port("pbr0", "plate", ["plate"]) or True,
             timeout_s=POLL_BOUND_S, retry_on=(HostError,), what="port plate usable")
    assert int(vsctl(ovs, "get", "Interface", "plate", "ofport")) >= 1


@pytest.mark.privileged
@pytest.mark.ovs
def test_delete_managed_port_and_bridge_and_absence_is_fine(driver, ovs, netns):
    veth_pair(netns, "pva", "pvb")
    driver.ensure_bridge("pbr0", "netdev")
    driver.ensure_port("pbr0", "pva", ["pva"])

    driver.delete_port("pbr0", "pva")
    assert vsctl(ovs, "list-ports", "pbr0") == ""
    driver.delete_port("pbr0", "pva")  # absent is fine
    driver.delete_port("pbr0", "never-there")

    driver.delete_bridge("pbr0")
    assert vsctl(ovs, "list-br") == ""
    driver.delete_bridge("pbr0")  # absent is fine
    assert driver.discover() == {}


@pytest.mark.privileged
@pytest.mark.ovs
def test_preexisting_untagged_bridge_and_port_are_never_modified_or_deleted(driver, ovs, netns):
    veth_pair(netns, "pfa", "pfb")
    veth_pair(netns, "pva", "pvb")
    ovs.vsctl("add-br", "pforeign", "--", "set", "Bridge", "pforeign", "datapath_type=netdev")
    ovs.vsctl("add-port", "pforeign", "pfa")
    before = driver.discover()["pforeign"]
    changes_before = len(driver.runner.changes())

    driver.ensure_bridge("pforeign", "netdev")  # compatible: accepted, left as it is
    driver.ensure_bridge("pforeign", None)
    assert driver.is_managed("pforeign") is False
    with pytest.raises(Refused, match="not created by HostPlumber"):
        driver.ensure_bridge("pforeign", "system")
    driver.ensure_port("pforeign", "pfa", ["pfa"])  # matches: accepted, left as it is
    assert driver.is_port_managed("pfa") is False
    with pytest.raises(Refused, match="not modifying it.*mtu_request"):
        driver.ensure_port("pforeign", "pfa", ["pfa"], mtu_request=1400)
    with pytest.raises(Refused, match="not modifying it"):
        driver.ensure_port("pforeign", "pfa", ["pfa"], lacp="active")
    with pytest.raises(Refused, match="not deleting it"):
        driver.delete_port("pforeign", "pfa")
    with pytest.raises(Refused, match="bridge pforeign was not created by HostPlumber"):
        driver.delete_bridge("pforeign")
    ovs.vsctl("add-br", "pforeign2", "--", "set", "Bridge", "pforeign2", "datapath_type=netdev")
    changes_before = len(driver.runner.changes())
    with pytest.raises(Refused, match="bridge pforeign2 was not created by HostPlumber"):
        driver.delete_bridge("pforeign2")

    assert len(driver.runner.changes()) == changes_before  # not a single write
    assert driver.discover()["pforeign"] == before
    assert external_id(ovs, "Bridge", "pforeign") is None
    assert external_id(ovs, "Port", "pfa") is None

    # Our bridge holding a port someone else added: deleting the bridge would delete it too.
    driver.ensure_bridge("pbr0", "netdev")
    ovs.vsctl("add-port", "pbr0", "pva")
    with pytest.raises(Refused, match="holds ports not created by HostPlumber.*pva"):
        driver.delete_bridge("pbr0")
    assert vsctl(ovs, "list-ports", "pbr0") == "pva"


class CreateFirst(RecordingRunner):
    """Simulates another program creating the same row between our read and our write."""

    def __init__(self, ovs, verb: str, *create: str):
        super().__init__()
        self.ovs, self.verb, self.create, self.done = ovs, verb, create, False

    def __call__(self, argv, timeout_s):
        if self.verb in argv and not self.done:
            self.done = True
            self.ovs.vsctl(*self.create)
        return super().__call__(argv, timeout_s)


@pytest.mark.privileged
@pytest.mark.ovs
def test_bridge_created_by_someone_else_meanwhile_is_not_tagged(driver, ovs):
    driver.runner = CreateFirst(ovs, "add-br", "add-br", "prace", "--", "set", "Bridge", "prace",
                                "datapath_type=netdev")
    driver.ensure_bridge("prace", "netdev")  # theirs, compatible: accepted as pre-existing
    assert driver.runner.done
    assert external_id(ovs, "Bridge", "prace") is None
    assert driver.is_managed("prace") is False


@pytest.mark.privileged
@pytest.mark.ovs
def test_port_created_by_someone_else_meanwhile_is_not_tagged(driver, ovs, netns):
    veth_pair(netns, "pva", "pvb")
    driver.ensure_bridge("pbr0", "netdev")
    driver.runner = CreateFirst(ovs, "add-port", "add-port", "pbr0", "pva")
    driver.ensure_port("pbr0", "pva", ["pva"])
    assert driver.runner.done
    assert external_id(ovs, "Port", "pva") is None
    with pytest.raises(Refused, match="not created by HostPlumber"):
        driver.delete_port("pbr0", "pva")


@pytest.mark.privileged
@pytest.mark.ovs
def test_port_on_a_missing_bridge_is_a_clear_error(driver, netns):
    veth_pair(netns, "pva", "pvb")
    with pytest.raises(HostError, match="bridge pnone does not exist"):
        driver.ensure_port("pnone", "pva", ["pva"])


@pytest.mark.privileged
@pytest.mark.ovs
def test_dead_vswitchd_gives_a_clear_timeout_instead_of_hanging(ovs, netns):
    veth_pair(netns, "pva", "pvb")
    driver = Ovs(ovs.db, timeout_s=1)
    driver.ensure_bridge("pbr0", "netdev")
    ovs.kill_vswitchd()

    outcome: dict[str, BaseException | None] = {}

    def attempt(key, call):
        try:
            call()
            outcome[key] = None
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome[key] = exc

    threads = [
        threading.Thread(target=attempt, args=("bridge", lambda: driver.ensure_bridge(
            "pbr1", "netdev")), daemon=True),
        threading.Thread(target=attempt, args=("port", lambda: driver.ensure_port(
            "pbr0", "pva", ["pva"])), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_JOIN_BOUND_S)
        assert not thread.is_alive(), "ensure_* hung on a dead ovs-vswitchd"
    for key in ("bridge", "port"):
        assert isinstance(outcome[key], HostTimeout), outcome[key]
        assert "did not finish within 1 s" in str(outcome[key])
        assert "ovs-vswitchd" in str(outcome[key])
    # The database is still up: the (unapplied) rows are visible and ours.
    assert "pbr1" in driver.discover()


@pytest.mark.privileged
@pytest.mark.ovs
def test_dead_ovsdb_server_is_not_available(ovs):
    driver = Ovs(ovs.db, timeout_s=1)
    driver.ensure_bridge("pbr0", "netdev")
    ovs.kill_ovsdb()
    with pytest.raises(NotAvailable) as excinfo:
        driver.discover()
    assert f"not reachable at {ovs.db}" in str(excinfo.value)
    with pytest.raises(NotAvailable):
        driver.ensure_bridge("pbr0", "netdev")


@pytest.mark.privileged
@pytest.mark.ovs
def test_two_instances_in_two_namespaces_run_side_by_side(tmp_path, netns):
    with throwaway_netns() as other:
        with userspace_ovs(tmp_path, netns) as first, userspace_ovs(tmp_path, other) as second:
            assert first.dir != second.dir and first.db != second.db
            for instance in (first, second):  # the same bridge name in both
                Ovs(instance.db, timeout_s=OVS_TIMEOUT_S).ensure_bridge("pbr0", "netdev")
            for instance, namespace in ((first, netns), (second, other)):
                assert "pbr0" in _run(["ip", "-n", namespace, "-br", "link"])
        for pid in (first.vswitchd_pid, first.ovsdb_pid, second.vswitchd_pid, second.ovsdb_pid):
            assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(
                f"/proc/{pid}/cmdline").read_bytes()


def test_a_missing_ovsdb_socket_is_reported_without_running_ovs_vsctl():
    driver = Ovs("unix:/nonexistent/db.sock")
    driver.runner = spy = NoSubprocess()
    with pytest.raises(NotAvailable, match="/nonexistent/db.sock does not exist"):
        driver.discover()
    assert spy.calls == []
