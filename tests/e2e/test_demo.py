"""The README's first command (`make demo` = scripts/demo.sh) works: the agent in local mode
applies the seed's SR-IOV and address examples to a throw-away node, then undoes them."""
import os
import re
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


VENV_TIMEOUT_S = 600  # pip installs the agent's pinned dependencies into a fresh venv
OFFLINE_MARKERS = ("NewConnectionError", "Could not fetch", "Temporary failure in name resolution",
                   "No matching distribution found")


def _system_packages() -> str:
    """The system Python's installed packages: what `make demo` must leave alone."""
    return subprocess.run(["python3", "-m", "pip", "freeze", "--all"], text=True,
                          capture_output=True, timeout=120, env=_without_pythonpath()).stdout


def _without_pythonpath() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_make_demo_runs_the_demo_with_its_virtualenvs_python():
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs the make command")
    commands = subprocess.run([make, "-s", "--no-print-directory", "-n", "demo",
                               "DEMO_VENV=/tmp/v"], cwd=REPO, text=True, capture_output=True,
                              timeout=60, check=True).stdout.strip().splitlines()
    assert commands == ['PYTHON="$(bash scripts/demo-venv.sh /tmp/v)" bash scripts/demo.sh']
    assert not re.search(r"\bpip\b", (REPO / "scripts" / "demo.sh").read_text())


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo needs root (network namespaces, FUSE)")
def test_the_demo_refuses_a_python_without_the_agent_and_installs_nothing(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], cwd=REPO, text=True,
                          capture_output=True, timeout=120,
                          env=dict(_without_pythonpath(), PYTHON=str(bare / "bin" / "python")))
    assert proc.returncode == 1
    assert "lacks plumber_agent or fusepy: run `make demo`" in proc.stderr
    assert "plumber-demo" not in subprocess.run(["ip", "netns", "list"], text=True,
                                                capture_output=True).stdout


def test_demo_venv_installs_into_the_venv_only(tmp_path):
    """scripts/demo-venv.sh (`make demo`'s first step): the agent and fusepy land in the venv,
    importable from this checkout; the system Python's packages are the same afterwards."""
    before = _system_packages()
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo-venv.sh"), str(venv)], cwd=REPO,
                          text=True, capture_output=True, timeout=VENV_TIMEOUT_S,
                          env=_without_pythonpath())
    if proc.returncode and any(marker in proc.stderr for marker in OFFLINE_MARKERS):
        pytest.skip(f"no package index reachable for the venv: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    python = proc.stdout.strip().splitlines()[-1]
    assert python == f"{venv}/bin/python"
    where = subprocess.run([python, "-c", "import fuse, plumber_agent, sys; "
                            "print(plumber_agent.__file__); print(sys.prefix)"], text=True,
                           capture_output=True, timeout=60, check=True, cwd=tmp_path,
                           env=_without_pythonpath()).stdout.split()
    assert where == [str(REPO / "src" / "plumber_agent" / "__init__.py"), str(venv)]
    assert _system_packages() == before
