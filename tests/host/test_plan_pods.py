"""`plumber-agent plan --pods FILE` on the seed README's emulated PFs (eno2 has 8 VFs, eno1
the 2 of test_mistakes_sriov's fixture): a numVfs change is marked disruptive with the VFs it
destroys, and with a pods file also with the pods whose network-status names one of them; a
pods file that does not read is one line."""
from __future__ import annotations

import json

import pytest

from tests.e2e.test_mistakes_sriov import sriov_node  # noqa: F401 - the fixture
from tests.unit.test_disruption import pod

pytestmark = pytest.mark.privileged

TEMPLATE = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata: {name: vfs}
spec:
  sriovConfig:
    - pfName: eno2
      numVfs: 4
"""


def numvfs_line(output: str) -> str:
    """eno2's numVfs change (the fixture applied eno1's 2 VFs, which this template undoes)."""
    [line] = [line for line in output.splitlines() if " set_num_vfs 0000:01:00.1 " in line]
    return line


def test_plan_marks_the_numvfs_change_disruptive_and_names_the_pods_hit(sriov_node):  # noqa: F811
    node = sriov_node
    node.write({"vfs.yaml": TEMPLATE})
    alone = node.agent("plan", "-f", str(node.templates))
    assert alone.returncode == 2, alone.stderr + alone.stdout
    line = numvfs_line(alone.stdout)
    assert "DISRUPTIVE: numVfs 8 -> 4 destroys the 8 VF(s) of PF 0000:01:00.1" in line, line
    assert line.endswith("pods using them not read"), line
    pods = {"apiVersion": "v1", "kind": "PodList",
            "items": [pod("web", "0000:02:0a.3"), pod("elsewhere", "0000:02:02.0"),
                      pod("plain")]}
    (node.tmp / "pods.json").write_text(json.dumps(pods))
    proc = node.agent("plan", "-f", str(node.templates), "--pods", str(node.tmp / "pods.json"))
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert numvfs_line(proc.stdout).endswith("; pods apps/web"), proc.stdout


def test_a_pods_file_that_does_not_read_is_one_line(sriov_node):  # noqa: F811
    node = sriov_node
    (node.tmp / "pods.yaml").write_text("items: [\n")
    proc = node.agent("plan", "-f", str(node.templates), "--pods", str(node.tmp / "pods.yaml"))
    assert proc.returncode == 1
    assert "plumber-agent plan: error: --pods" in proc.stderr and "Traceback" not in proc.stderr
    missing = node.agent("plan", "-f", str(node.templates), "--pods", str(node.tmp / "none"))
    assert missing.returncode == 1 and "No such file" in missing.stderr
