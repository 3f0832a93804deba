"""Which securityContext the agent needs, measured: tests/image/capability_probe.py run from the
agent image under each candidate (privileged; podman's default capabilities; NET_ADMIN alone,
i.e. manifests/components/unprivileged, with the node's sysfs mounted read-write or not mounted
at all), in a throw-away network
namespace, against a real kernel sysfs, the emulated SR-IOV sysfs and a private userspace OVS.

The expectations are the measured outcome (README "Security context" reports them): netlink
changes need CAP_NET_ADMIN and nothing else; kernel sysfs writes need the read-write mount (the
runtime's own /sys is read-only) and, for class/net attributes, CAP_NET_ADMIN; driver_override,
sriov_numvfs and the OVS socket need no capability beyond being root with the files mounted. So
`privileged` is replaceable: manifests/components/unprivileged does it; why the default keeps
it is in the README (the container runtime's AppArmor/SELinux profile, absent here, is what the
component must lift, and where OVS is not root's its socket needs DAC_OVERRIDE).

`python3 -m tests.image.test_security_context IMAGE` prints the table for any image.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.image.container import (podman, podman_argv, security_options, ulimit_args,
                                   unprivileged_security_context)

pytestmark = [pytest.mark.image, pytest.mark.privileged]

PROBE = Path(__file__).with_name("capability_probe.py")
PROBE_TIMEOUT_S = 120.0
SRIOV_PF = "0000:01:00.1"  # eno2 in the emulator's seed preset
NETNS_RUN_DIR = "/run/netns"

# name -> `podman run` options for the securityContext; "sysfs" says whether the node's sysfs is
# bind-mounted read-write at /sys (the DaemonSet's hostPath) or left to the runtime (read-only).
COMPONENT = tuple(security_options(unprivileged_security_context(), "components/unprivileged"))
CANDIDATES: dict[str, tuple[tuple[str, ...], bool]] = {
    "privileged": (("--privileged",), True),
    "default capabilities, sysfs rw": ((), True),
    "components/unprivileged (NET_ADMIN only), sysfs rw": (COMPONENT, True),
    "components/unprivileged (NET_ADMIN only), no sysfs mount": (COMPONENT, False),
}


def _first_pci_device(sysfs: Path) -> str:
    """A real PCI device whose driver_override the probe rewrites with its own value."""
    devices = sorted(p.name for p in (sysfs / "bus" / "pci" / "devices").iterdir())
    return devices[0] if devices else ""


@contextlib.contextmanager
def probe_node(workdir: Path) -> Iterator[dict]:
    """A throw-away netns, its own sysfs mount (class/net shows that netns), the emulated SR-IOV
    sysfs and a userspace OVS; yields what `probe_matrix` mounts."""
    from tests.helpers.ovs import userspace_ovs
    from tests.sriov_emu import emulated_sysfs

    netns = f"capprobe-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    sysfs = workdir / "netns-sysfs"
    sysfs.mkdir()
    try:
        # nsenter --net only: the mount is made in our mount namespace, by a task in the netns,
        # so the new sysfs superblock's class/net is that netns's (as a pod's /sys would be).
        subprocess.run(["nsenter", f"--net={NETNS_RUN_DIR}/{netns}", "mount", "-t", "sysfs",
                        "sysfs", str(sysfs)], check=True)
        with emulated_sysfs(workdir) as emu, userspace_ovs(workdir / "ovs", netns,
                                                          skip_missing=False) as ovs:
            yield {"netns": netns, "sysfs": str(sysfs), "emu": emu.root, "ovs_dir": str(ovs.dir),
                   "pci": _first_pci_device(sysfs)}
    finally:
        subprocess.run(["umount", str(sysfs)], check=False)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def run_probe(image: str, node: dict, options: tuple[str, ...], mount_sysfs: bool) -> dict:
    argv = [*podman_argv(), "run", "--rm", *ulimit_args(), "--network",
            f"ns:{NETNS_RUN_DIR}/{node['netns']}", *options,
            "--volume", f"{PROBE}:/probe.py:ro",
            "--volume", f"{node['emu']}:/emu-sys",
            "--volume", f"{node['ovs_dir']}:/var/run/openvswitch",
            "--env", f"PROBE_SRIOV=/emu-sys/bus/pci/devices/{SRIOV_PF}/sriov_numvfs",
            "--env", "PROBE_OVSDB=unix:/var/run/openvswitch/db.sock",
            "--env", f"PROBE_PCI_DEVICE={node['pci']}"]
    if mount_sysfs:
        argv += ["--volume", f"{node['sysfs']}:/sys:rw"]
    argv += ["--entrypoint", "python3", image, "/probe.py"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                          check=False)
    if proc.returncode:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe_matrix(image: str, workdir: Path) -> dict[str, dict[str, str]]:
    with probe_node(workdir) as node:
        return {name: run_probe(image, node, options, sysfs)
                for name, (options, sysfs) in CANDIDATES.items()}


def _ok(results: dict[str, str]) -> set[str]:
    return {op for op, outcome in results.items() if outcome == "ok"}


def test_privileged_is_replaceable_by_net_admin_and_a_rw_sysfs_here(agent_image, tmp_path):
    from tests.e2e.harness import local_skip_reason
    from tests.helpers.ovs import missing_ovs_reason
    from tests.sriov_emu import fuse_unusable_reason

    for reason in (local_skip_reason(), missing_ovs_reason(), fuse_unusable_reason()):
        if reason:
            pytest.skip(reason)
    podman("image", "exists", agent_image)
    matrix = probe_matrix(agent_image, tmp_path)
    print("\n" + json.dumps(matrix, indent=1))
    every_op = set(matrix["privileged"])
    assert _ok(matrix["privileged"]) == every_op, matrix["privileged"]
    component = matrix["components/unprivileged (NET_ADMIN only), sysfs rw"]
    assert _ok(component) == every_op, component
    default = matrix["default capabilities, sysfs rw"]
    netlink_writes = {op for op in every_op if op.startswith("netlink: ") and "subscribe" not in op}
    assert not _ok(default) & netlink_writes, f"netlink changes without CAP_NET_ADMIN: {default}"
    assert "EPERM" in default["netlink: create a veth pair"], default
    unmounted = matrix["components/unprivileged (NET_ADMIN only), no sysfs mount"]
    kernel_sysfs = {op for op in every_op if op.startswith("sysfs (kernel)")}
    assert kernel_sysfs and not _ok(unmounted) & kernel_sysfs, \
        f"the runtime's own /sys is read-only, kernel sysfs writes must fail: {unmounted}"
    assert all("EROFS" in unmounted[op] for op in kernel_sysfs), unmounted


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="capprobe-", dir="/var/tmp") as scratch:
        print(json.dumps(probe_matrix(sys.argv[1], Path(scratch)), indent=1))
