"""Run inside the agent image (`python3 /probe.py`): try each kind of host change the agent makes
and print one JSON object {operation: "ok" | "<errno name>: <message>"}.

Why a probe and not the agent: the question is which rights each kind of change needs (README
"Security context"), so each is tried on its own and its errno kept, under each candidate
securityContext (tests/image/test_security_context.py). Standard library + pyroute2 (the image's)
only. Every change is made on links the probe creates in the container's network namespace, which
the driver makes a throw-away one, and is undone before the probe exits.

Environment: PROBE_SRIOV (an sriov_numvfs file to write, the emulated sysfs), PROBE_PCI_DEVICE (a
real PCI device's sysfs directory: its driver_override is written with its current value, which
changes nothing), PROBE_OVSDB (ovs-vsctl --db), PROBE_SYSFS (where the node's sysfs is mounted).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

PROBE_LINK = "capprobe0"
PROBE_PEER = "capprobe1"
PROBE_MTU = 1400
PROBE_ADDRESS = "198.51.100.7"  # TEST-NET-2: never routed anywhere
PROBE_PREFIX = 24
OVS_TIMEOUT_S = 10
NETLINK_KOBJECT_UEVENT = 15
UEVENT_KERNEL_GROUP = 1
RTMGRP_LINK = 1


def _outcome(fn) -> str:
    try:
        fn()
        return "ok"
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "E?")
        return f"{name}: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, it never stops
        code = getattr(exc, "code", None)
        name = errno.errorcode.get(code, type(exc).__name__) if isinstance(code, int) else type(exc).__name__
        return f"{name}: {exc}"


def _sysfs() -> str:
    return os.environ.get("PROBE_SYSFS", "/sys")


def probe() -> dict[str, str]:
    from pyroute2 import IPRoute

    results: dict[str, str] = {}
    with IPRoute() as ipr:
        results["netlink: create a veth pair"] = _outcome(
            lambda: ipr.link("add", ifname=PROBE_LINK, kind="veth", peer=PROBE_PEER))
        created = bool(ipr.link_lookup(ifname=PROBE_LINK))
        index = (ipr.link_lookup(ifname=PROBE_LINK) or [0])[0]
        results["netlink: set MTU and up"] = _outcome(
            lambda: ipr.link("set", index=index, mtu=PROBE_MTU, state="up"))
        results["netlink: add an address"] = _outcome(
            lambda: ipr.addr("add", index=index, address=PROBE_ADDRESS, prefixlen=PROBE_PREFIX))
        results["netlink: add a route"] = _outcome(
            lambda: ipr.route("add", dst="203.0.113.0/24", gateway="198.51.100.1", oif=index))

        def write_mtu() -> None:
            with open(f"{_sysfs()}/class/net/{PROBE_LINK}/mtu", "w", encoding="ascii") as handle:
                handle.write(f"{PROBE_MTU + 100}\n")
        results["sysfs (kernel): write class/net/*/mtu"] = _outcome(write_mtu)
        if created:
            ipr.link("del", index=index)

    def monitor_links() -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
        finally:
            sock.close()
    results["netlink: subscribe to link changes"] = _outcome(monitor_links)

    def monitor_uevents() -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        try:
            sock.bind((0, UEVENT_KERNEL_GROUP))
        finally:
            sock.close()
    results["netlink: subscribe to kernel uevents"] = _outcome(monitor_uevents)

    pci = os.environ.get("PROBE_PCI_DEVICE")
    if pci:
        def rewrite_driver_override() -> None:
            path = f"{_sysfs()}/bus/pci/devices/{pci}/driver_override"
            with open(path, encoding="ascii") as handle:
                current = handle.read().strip()
            with open(path, "w", encoding="ascii") as handle:  # "\n" = none: what "(null)" means
                handle.write("\n" if current == "(null)" else current + "\n")
        results["sysfs (kernel): write a PCI device's driver_override"] = _outcome(
            rewrite_driver_override)

    sriov = os.environ.get("PROBE_SRIOV")
    if sriov:
        def write_numvfs() -> None:
            with open(sriov, encoding="ascii") as handle:
                current = handle.read().strip()
            for value in ("0", current):
                with open(sriov, "w", encoding="ascii") as handle:
                    handle.write(value + "\n")
        results["sysfs (emulated SR-IOV): write sriov_numvfs"] = _outcome(write_numvfs)

    ovsdb = os.environ.get("PROBE_OVSDB")
    if ovsdb:
        def ovs() -> None:
            for args in (["add-br", "capprobe-br"], ["del-br", "capprobe-br"]):
                proc = subprocess.run(["ovs-vsctl", f"--db={ovsdb}", f"--timeout={OVS_TIMEOUT_S}",
                                       "--no-wait", *args], capture_output=True, text=True,
                                      check=False, timeout=OVS_TIMEOUT_S + 5)
                if proc.returncode:
                    raise RuntimeError(proc.stderr.strip())
        results["OVS: ovs-vsctl through db.sock"] = _outcome(ovs)
    return results


if __name__ == "__main__":
    print(json.dumps(probe()))
