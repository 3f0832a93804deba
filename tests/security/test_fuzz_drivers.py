"""Fuzzing every path and argv builder of the host drivers (issue 7, item 2).

Invariants:
- SR-IOV (sysfs): whatever PCI address or driver name reaches the driver, and however the sysfs
  tree's symlinks point (a hostile or broken tree: links to /etc, to a sibling directory outside
  the root, attribute files that are symlinks), no file or directory OUTSIDE the sysfs root is
  ever opened, listed or written. Observed with a process audit hook (sys.addaudithook: the
  'open', 'os.listdir' and 'os.scandir' events), not by patching the driver.
- OVS: spying on the driver's own `runner` seam, no argument that came from the caller (bridge,
  port and interface names) starts with '-' or contains ',' or '='; the only such arguments are
  our own option syntax (--db=, --timeout=, --format=json, --columns=, --may-exist, --if-exists,
  key=value settings built from validated values). Invalid names never reach the runner.
- netlink: every write method refuses an invalid interface name with InvalidSpec before talking
  to the kernel (checked against a real throw-away namespace: nothing changes in it).
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumber_agent.errors import HostError, InvalidSpec, NotAvailable, PlumberError
from plumber_agent.validation import check_ifname
from tests.security.strategies import IFNAME_ALPHABET, NASTY_STRINGS

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------------
# SR-IOV sysfs: an audit hook records every open/listdir while armed.

_AUDIT = {"armed": False, "paths": [], "lock": threading.Lock()}


def _audit_hook(event, args):
    if not _AUDIT["armed"] or event not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0] if args else None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str):
        with _AUDIT["lock"]:
            _AUDIT["paths"].append((event, path))


sys.addaudithook(_audit_hook)  # hooks cannot be removed; it records nothing unless armed


class Recording:
    def __enter__(self):
        with _AUDIT["lock"]:
            _AUDIT["paths"].clear()
        _AUDIT["armed"] = True
        return self

    def __exit__(self, *exc):
        _AUDIT["armed"] = False

    @property
    def paths(self):
        with _AUDIT["lock"]:
            return list(_AUDIT["paths"])


def outside_opens(recorded, root: str) -> list[str]:
    real_root = os.path.realpath(root)
    bad = []
    for event, path in recorded:
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root + os.sep):
            bad.append(f"{event} {path} -> {real}")
    return bad


OUTSIDE_FILES = ("sriov_totalvfs", "sriov_numvfs", "vendor", "device", "class",
                 "driver_override", "unbind", "secret")


@pytest.fixture(scope="module")
def hostile_sysfs(tmp_path_factory):
    """The seed preset's static tree, plus symlinks that point outside the root in every place
    the driver follows links or joins names. Returns (root, outside_dir)."""
    from tests.sriov_emu import build_static_tree
    base = tmp_path_factory.mktemp("hostile-sysfs")
    root, outside = base / "sys", base / "outside"
    build_static_tree(str(root))
    outside.mkdir()
    for name in OUTSIDE_FILES:
        (outside / name).write_text("7\n")
    (outside / "net" / "evil0").mkdir(parents=True)
    (outside / "virtfn-target").mkdir()
    # A whole device outside the root.
    os.symlink(str(outside), root / "bus/pci/devices/0000:09:00.0")
    # Attributes of a real PF that are symlinks leaving the root.
    pf = Path(os.path.realpath(root / "bus/pci/devices/0000:01:00.0"))
    for attr in ("sriov_totalvfs", "vendor", "device"):
        if (pf / attr).exists() or (pf / attr).is_symlink():
            (pf / attr).unlink()
        os.symlink(str(outside / attr), pf / attr)
    # A PF whose net/ directory and virtfn link and driver link leave the root.
    pf2 = Path(os.path.realpath(root / "bus/pci/devices/0000:01:00.1"))
    os.symlink(str(outside / "virtfn-target"), pf2 / "virtfn63")
    (pf2 / "net").rename(pf2 / "net.orig")
    os.symlink(str(outside / "net"), pf2 / "net")
    vf0 = Path(os.path.realpath(root / "bus/pci/devices/0000:02:0a.0"))
    (vf0 / "driver").unlink()
    os.symlink(str(outside), vf0 / "driver")
    (vf0 / "driver_override").unlink()
    os.symlink(str(outside / "driver_override"), vf0 / "driver_override")
    # A netdev whose device link leaves the root, and a driver dir outside.
    os.symlink(str(outside), root / "class/net/evil0")
    os.symlink(str(outside), root / "bus/pci/drivers/evildrv")
    return str(root), str(outside)


def _outside_unchanged(outside: str) -> None:
    for name in OUTSIDE_FILES:
        assert Path(outside, name).read_text() == "7\n", f"{name} outside the root was written"


def test_sysfs_discovery_never_opens_outside_the_root(hostile_sysfs):
    from plumber_agent.host.sriov import Sysfs
    from plumber_agent.models.observed import ObservedLink
    root, outside = hostile_sysfs
    sysfs = Sysfs(root, write_timeout_s=0.2)
    links = {name: ObservedLink(ifname=name, index=i) for i, name in
             enumerate(["eno1", "eno2", "evil0", "lo", "eno2v0", "-x", "../x"], start=1)}
    with Recording() as rec:
        try:
            sysfs.discover_pfs()
        except PlumberError:
            pass
        sysfs.annotate_links(links)
    assert outside_opens(rec.paths, root) == []
    _outside_unchanged(outside)


PCI_CANDIDATES = ["0000:01:00.0", "0000:01:00.1", "0000:02:0a.0", "0000:02:0a.1", "0000:09:00.0",
                  "0000:3b:00.0", "0000:01:00.1/../..", "../", "0000:01:00.1\n", "0000:01:00.8",
                  "0000:01:00.1/../../../../etc"]
DRIVER_CANDIDATES = ["i40evf", "vfio-pci", "evildrv", "../vfio", "vfio-pci\n", "x" * 4096, "",
                     "-f", "i40e/../../x"]


@FUZZ
@given(pci=st.one_of(st.sampled_from(PCI_CANDIDATES), st.text(max_size=24)),
       driver=st.one_of(st.sampled_from(DRIVER_CANDIDATES), st.text(max_size=16)),
       num=st.one_of(st.integers(-2, 70000), st.sampled_from([True, 5.0, "4", "010"])),
       op=st.sampled_from(["set_num_vfs", "bind_vf_driver", "wait_for_vfs",
                           "clear_driver_override", "driver_available"]))
def test_sysfs_operations_never_touch_outside_the_root(hostile_sysfs, pci, driver, num, op):
    from plumber_agent.host.sriov import Sysfs
    root, outside = hostile_sysfs
    sysfs = Sysfs(root, write_timeout_s=0.2, vf_wait_timeout_s=0.05)
    call = {"set_num_vfs": lambda: sysfs.set_num_vfs(pci, num),
            "bind_vf_driver": lambda: sysfs.bind_vf_driver(pci, driver),
            "wait_for_vfs": lambda: sysfs.wait_for_vfs(pci, num, 0.05),
            "clear_driver_override": lambda: sysfs.clear_driver_override(pci),
            "driver_available": lambda: sysfs.driver_available(driver)}[op]
    with Recording() as rec:
        try:
            call()
        except (PlumberError, OSError):
            pass  # refusals and host errors are fine; escaping the root is not
    assert outside_opens(rec.paths, root) == []
    _outside_unchanged(outside)


# ------------------------------------------------------------------------------------------------
# OVS argv through the runner seam

_OUR_OPTIONS = ("--db=", "--timeout=", "--format=json", "--columns=", "--may-exist",
                "--if-exists", "--")
_OUR_SETTINGS_PREFIXES = ("external_ids:plumber-managed=", "datapath_type=", "bond_mode=",
                          "lacp=", "mtu_request=")
_EMPTY_TABLES = ('{"data":[],"headings":["name","datapath_type","external_ids","ports"]}\n'
                 '{"data":[],"headings":["_uuid","name","interfaces","bond_mode","lacp",'
                 '"external_ids"]}\n'
                 '{"data":[],"headings":["_uuid","name","type","ofport","mtu_request","mtu",'
                 '"external_ids","error"]}\n')


class SpyRunner:
    """Records every argv; answers reads with empty tables and changes with success."""

    def __init__(self):
        self.argvs: list[list] = []

    def __call__(self, argv, timeout_s):
        import subprocess
        assert isinstance(argv, list), "argv must be a list, never a shell string"
        self.argvs.append(list(argv))
        out = _EMPTY_TABLES if "--format=json" in argv else ""
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")


def _bad_caller_args(argv: list, caller_values: set[str]) -> list[str]:
    problems = []
    for arg in argv[1:]:
        if not isinstance(arg, str):
            problems.append(f"non-string argument {arg!r}")
            continue
        if arg.startswith(_OUR_OPTIONS) or arg.startswith(_OUR_SETTINGS_PREFIXES):
            continue
        if arg.startswith("-") or "," in arg or "=" in arg or "\0" in arg:
            problems.append(arg)
        elif arg not in caller_values and arg not in (
                "add-br", "del-br", "add-port", "add-bond", "del-port", "set", "list", "Bridge",
                "Port", "Interface"):
            problems.append(f"unexpected argument {arg!r}")
    return problems


_ovs_names = st.one_of(st.sampled_from(NASTY_STRINGS + ["br0", "eth1", "eth2", "bond0"]),
                       st.text(alphabet=IFNAME_ALPHABET, max_size=18))


@FUZZ
@given(bridge=_ovs_names, port=_ovs_names, ifaces=st.lists(_ovs_names, max_size=3),
       dp=st.sampled_from([None, "netdev", "system", "netdev,x", "--x", "a=b"]),
       bond=st.sampled_from([None, "active-backup", "balance-slb,x", "-x"]),
       lacp=st.sampled_from([None, "active", "off=1"]),
       mtu=st.sampled_from([None, 1500, 67, "1500", True]),
       op=st.sampled_from(["ensure_bridge", "delete_bridge", "ensure_port", "delete_port",
                           "is_managed", "is_port_managed"]))
def test_ovs_argv_never_carries_caller_options_or_separators(bridge, port, ifaces, dp, bond,
                                                             lacp, mtu, op):
    from plumber_agent.host.ovs import Ovs
    ovs = Ovs("unix:/nonexistent/db.sock", timeout_s=1)
    spy = SpyRunner()
    ovs.runner = spy
    call = {"ensure_bridge": lambda: ovs.ensure_bridge(bridge, dp),
            "delete_bridge": lambda: ovs.delete_bridge(bridge),
            "ensure_port": lambda: ovs.ensure_port(bridge, port, ifaces, bond_mode=bond,
                                                   lacp=lacp, mtu_request=mtu),
            "delete_port": lambda: ovs.delete_port(bridge, port),
            "is_managed": lambda: ovs.is_managed(bridge),
            "is_port_managed": lambda: ovs.is_port_managed(port)}[op]
    try:
        call()
    except PlumberError:
        pass
    caller_values = {v for v in [bridge, port, *ifaces] if isinstance(v, str)}
    for argv in spy.argvs:
        assert argv[1].startswith("--db=") and argv[2].startswith("--timeout=")
        assert _bad_caller_args(argv, caller_values) == [], argv
        for value in caller_values:
            if value in argv and check_ifname(value) is not None:
                raise AssertionError(f"invalid name {value!r} reached ovs-vsctl: {argv}")


# ------------------------------------------------------------------------------------------------
# netlink: invalid names refused before the kernel sees them


@pytest.fixture(scope="module")
def nl_ns():
    from tests.helpers.netns import _cached_skip_reason, netns, veth_pair
    reason = _cached_skip_reason()
    if reason:
        pytest.skip(reason)
    with netns() as name:
        veth_pair(name, "fz0", "fz1")
        yield name


def _snapshot(ns):
    """What an invalid call could have changed; volatile bits (IPv6 DAD flags, operstate
    while a fresh veth settles) are left out so the comparison does not flap."""
    from tests.helpers.netns import ip_json
    links = sorted((link["ifname"], link.get("mtu"), "UP" in link.get("flags", []))
                   for link in ip_json(ns, "link"))
    addrs = sorted((a["ifname"], i.get("local"), i.get("prefixlen"))
                   for a in ip_json(ns, "addr") for i in a.get("addr_info", []))
    routes = sorted((r.get("dst"), r.get("dev"), r.get("gateway"))
                    for r in ip_json(ns, "-4", "route", "show", "table", "all"))
    return links, addrs, routes


@pytest.mark.privileged
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.one_of(st.sampled_from(NASTY_STRINGS), st.text(alphabet=IFNAME_ALPHABET,
                                                              max_size=20)),
       op=st.sampled_from(["ensure_vlan", "delete_link", "set_mtu", "set_up", "add_address",
                           "delete_address", "add_route"]))
def test_netlink_refuses_invalid_names_before_the_kernel(nl_ns, name, op):
    from plumber_agent.host.netlink import Netlink
    from plumber_agent.models.observed import ObservedRoute
    if check_ifname(name) is None:
        return  # valid names are the host tests' business
    before = _snapshot(nl_ns)
    nl = Netlink(nl_ns)
    try:
        call = {"ensure_vlan": lambda: nl.ensure_vlan(name, "fz0", 10),
                "delete_link": lambda: nl.delete_link(name),
                "set_mtu": lambda: nl.set_mtu(name, 1400),
                "set_up": lambda: nl.set_up(name),
                "add_address": lambda: nl.add_address(name, "10.77.0.1/24"),
                "delete_address": lambda: nl.delete_address(name, "10.77.0.1/24"),
                "add_route": lambda: nl.add_route(ObservedRoute(family=4, dst="10.78.0.0/16",
                                                                dev=name))}[op]
        with pytest.raises(InvalidSpec):
            call()
    finally:
        nl.close()
    assert _snapshot(nl_ns) == before


def test_netns_name_is_validated():
    """--netns reaches a path (/var/run/netns/NAME): path-like names are refused."""
    from plumber_agent.host.netlink import Netlink
    for bad in ["../../proc/1/ns/net", "a/b", "..", "", "-x", "x\0"]:
        with pytest.raises((InvalidSpec, NotAvailable, HostError)):
            Netlink(bad).discover()
