"""The "mistakes" table's SR-IOV rows (issue 20): ordinary mistakes in `sriovConfig`, made with
the real `plumber-agent` command in local mode after an SR-IOV template has been applied to the
seed README's two emulated Intel PFs (the FUSE sysfs emulator, which answers writes as the
kernel does). For every row: the exit status, the message the user sees, and snapshots of the
sysfs tree and of the namespace that must be the same before and after."""
from __future__ import annotations

import pytest

from tests.e2e.test_mistakes import Node, snapshot
from tests.support.agent_proc import tree_snapshot
from tests.helpers.netns import veth_pair
from tests.sriov_emu import emulated_sysfs, fuse_unusable_reason

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

SRIOV = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata:
  name: {name}
spec:
  sriovConfig:
{entries}
"""
APPLIED = "    - pfName: eno1\n      numVfs: 2\n      vfDriver: vfio-pci"


def sriov(entries: str = APPLIED, name: str = "vfs") -> str:
    return SRIOV.format(name=name, entries=entries)


def sysfs_state(root) -> dict:
    """What a pass could change: every PF's and VF's numvfs, driver binding and override."""
    return {path: value for path, value in tree_snapshot(root).items()
            if path.rsplit("/", 1)[-1] in ("sriov_numvfs", "driver", "driver_override")}


@pytest.fixture
def sriov_node(netns_name, tmp_path):
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(f"the SR-IOV sysfs emulator needs FUSE: {reason}")
    veth_pair(netns_name, "eth1", "peer1")
    node = Node(netns_name, tmp_path)
    with emulated_sysfs(tmp_path, preset="seed", name="sysfs"):
        node.write({"vfs.yaml": sriov()})
        applied = node.agent("run", "--templates", str(node.templates))
        assert applied.returncode == 0, applied.stderr + applied.stdout
        yield node


# (id, sriovConfig entries of the template "vfs", command, exit status, text expected)
ROWS = [
    ("numvfs-above-totalvfs", "    - pfName: eno1\n      numVfs: 65", "run", 1,
     "numVfs 65 of PF 0000:01:00.0 is above its sriov_totalvfs"),
    ("typo-in-pf-name", "    - pfName: eno9\n      numVfs: 2\n      vfDriver: vfio-pci", "run",
     1, "no PF matches pfName eno9 on this node; nothing it applied before is undone"),
    ("no-pf-with-those-ids",
     "    - vendorId: \"8086\"\n      deviceId: \"0000\"\n      numVfs: 2", "run", 1,
     "no PF matches vendorDevice 8086:0000 on this node; nothing it applied before is undone"),
    ("no-pf-at-that-address", "    - pciAddr: \"0000:09:00.0\"\n      numVfs: 2", "run", 1,
     "no PF matches pciAddr 0000:09:00.0 on this node; nothing it applied before is undone"),
    ("driver-name-with-a-path", "    - pfName: eno1\n      numVfs: 2\n      vfDriver: ../vfio",
     "run", 1, "vfDriver"),
    ("two-selectors-on-one-entry",
     "    - pfName: eno1\n      pciAddr: \"0000:01:00.0\"\n      numVfs: 2", "run", 1, "pciAddr"),
    ("plan-typo-in-pf-name", "    - pfName: eno9\n      numVfs: 2", "plan", 1,
     "no PF matches pfName eno9 on this node"),
    # VF attributes (sriovConfig[].vfs): a VF eno1 does not have, a multicast MAC, and VF
    # attributes on a PF whose netdev reports no VF settings (the emulated PFs' veths: the
    # emulator has no netlink side), each failing with nothing changed.
    ("vf-attributes-where-the-pf-reports-no-vf-settings",
     APPLIED + "\n      vfs:\n        - id: 1\n          trust: true", "run", 1,
     "PF eno1 reports no settings for its VF 1 (IFLA_VF_INFO): its driver cannot set VF "
     "attributes"),
    ("vf-attribute-on-a-vf-that-does-not-exist",
     APPLIED + "\n    - pfName: eno1\n      vfs:\n        - id: 5\n          trust: true",
     "run", 1, "spec.sriovConfig[1].vfs[0]: VF 5 of PF 0000:01:00.0 (eno1): VF 5 does not exist "
     "(numVfs 2: VFs 0..1)"),
    ("vf-mac-multicast",
     APPLIED + "\n      vfs:\n        - id: 0\n          mac: \"01:00:5e:00:00:01\"", "run", 1,
     "spec.sriovConfig[0].vfs[0].mac: 01:00:5e:00:00:01 is a multicast address"),
]


@pytest.mark.parametrize("entries, command, status, expected",
                         [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_an_sriov_mistake_changes_nothing(sriov_node, entries, command, status, expected):
    node = sriov_node
    node.write({"vfs.yaml": sriov(entries)})
    sysfs, host = sysfs_state(node.tmp / "sysfs"), snapshot(node.ns)
    argv = ("run", "--templates", str(node.templates)) if command == "run" else \
        ("plan", "-f", str(node.templates))
    proc = node.agent(*argv)
    output = proc.stderr + proc.stdout
    assert proc.returncode == status, output
    assert " ".join(expected.split()) in " ".join(output.split()), output
    assert "Traceback" not in output, output
    assert sysfs_state(node.tmp / "sysfs") == sysfs
    assert snapshot(node.ns) == host
