"""The README's first command (`make demo` = scripts/demo.sh) works: the agent in local mode
applies the seed's SR-IOV and address examples to a throw-away node, then undoes them."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo needs root (network namespaces, FUSE)")
@pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 is not installed")
def test_demo_applies_then_undoes():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    applied, _, undone = out.partition("== templates deleted")
    assert "kind: HostNetwork" in applied and "state: Applied" in applied
    assert "state: Failed" not in applied and "state: Invalid" not in applied
    assert "0000:03:00.0 sriov_numvfs=4" in applied and "0000:03:00.1 sriov_numvfs=8" in applied
    assert "192.168.195.7/24" in applied and "mtu 9000" in applied
    # Undone: VFs back to 0, the template's addresses gone, the one it removed back, MTU restored.
    assert "0000:03:00.0 sriov_numvfs=0" in undone and "0000:03:00.1 sriov_numvfs=0" in undone
    assert "192.168.195.99/24" in undone and "192.168.195.7/24" not in undone
    assert "mtu 9000" not in undone
    # Nothing left behind.
    assert "plumber-demo" not in subprocess.run(["ip", "netns", "list"], text=True,
                                                capture_output=True).stdout
