"""The full-kernel tier: every test marked `fullkernel` runs against a kernel that has 802.1Q,
dummy, bonding and the OVS datapath, on every CI run.

Why: the CI kernel lacks those, so such tests would only ever skip there. test_fullkernel_tier
collects the `fullkernel` tests of the whole tree on the host, then runs them in ONE pytest
invocation: directly when this kernel has the features, otherwise inside one qemu VM booted with
Debian's kernel (tests/fullkernel/vm.py), and fails unless that pytest passed with at least one
test. The other tests here prove the VM itself; they skip on a kernel without the features (the
tier runs them inside the VM) and use `ip -j` and the test helpers, never pyroute2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fullkernel.vm import VmError, in_ci, in_vm, kernel_has, run_in_vm
from tests.helpers.netns import ip, ip_json, netns

REPO_DIR = Path(__file__).resolve().parents[2]
#: Features whose absence sends the tier into the VM.
TIER_FEATURES = ("vlan", "dummy", "bond")
#: One pytest run inside the VM: boot ~3 s, python + imports over 9p a few seconds per module.
TIER_TIMEOUT_S = 600.0
COLLECT_TIMEOUT_S = 180.0
OVS_GONE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
SELECT_ARGS = ("-m", "fullkernel", "-p", "no:cacheprovider")
INNER_PYTEST_ARGS = (
    *SELECT_ARGS,
    # Plugins whose import alone costs seconds over 9p under TCG (hypothesis: 6.4 s of a 8 s
    # pytest start, measured); @given tests still work without the plugin.
    "-p", "no:hypothesispytest",
    "-q", "-rfEs", "--durations=5",
)


@dataclass(frozen=True)
class JunitSummary:
    tests: int
    failures: int
    errors: int
    skipped: int
    skip_reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped


def parse_junit(path: Path) -> JunitSummary:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {key: sum(int(s.get(key, "0")) for s in suites)
             for key in ("tests", "failures", "errors", "skipped")}
    reasons = tuple(f"{case.get('classname')}.{case.get('name')}: {skip.get('message', '')}"
                    for case in root.iter("testcase") for skip in case.findall("skipped"))
    return JunitSummary(**total, skip_reasons=reasons)


def collect_fullkernel_nodeids(*, exclude: str) -> list[str]:
    """Node ids of all `fullkernel` tests in the tree except ``exclude``, collected natively on
    the host so the VM only imports the modules that hold them (imports over 9p are slow)."""
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", *SELECT_ARGS,
            "--deselect", exclude, "tests"]
    proc = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=COLLECT_TIMEOUT_S, check=False)
    nodeids = [line.strip() for line in proc.stdout.splitlines()
               if "::" in line and not line.startswith(" ")]
    if proc.returncode != 0 or not nodeids:
        pytest.fail(f"collecting fullkernel tests failed (exit {proc.returncode}, "
                    f"{len(nodeids)} collected):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}",
                    pytrace=False)
    return nodeids


def _timeline(console: str) -> str:
    marks = re.findall(r"plumber-vm: (.+?) \(t=([\d.]+)s\)", console)
    return ", ".join(f"{what} {t} s" for what, t in marks)


@pytest.mark.fullkernel
def test_fullkernel_tier(request, tmp_path):
    if in_vm():
        pytest.skip("already inside the full-kernel VM")
    nodeids = collect_fullkernel_nodeids(exclude=request.node.nodeid)
    junit = tmp_path / "share" / "junit.xml"
    junit.parent.mkdir()
    argv = [sys.executable, "-m", "pytest", *INNER_PYTEST_ARGS, f"--junitxml={junit}", *nodeids]
    missing = [feature for feature in TIER_FEATURES if not kernel_has(feature)]
    started = time.monotonic()
    if not missing:
        where = "this kernel (it has " + ", ".join(TIER_FEATURES) + ")"
        proc = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True,
                              timeout=TIER_TIMEOUT_S, check=False)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    else:
        request.getfixturevalue("vm_available")
        where = f"the full-kernel VM (this kernel lacks {', '.join(missing)})"
        try:
            result = run_in_vm(argv, workdir=REPO_DIR, timeout_s=TIER_TIMEOUT_S,
                               share_dir=junit.parent)
        except VmError as exc:
            pytest.fail(str(exc), pytrace=False)
        returncode, output = result.returncode, result.output
        where += f"; VM {result.duration_s:.1f} s: {_timeline(result.console)}"
    print(f"fullkernel tier: {len(nodeids)} tests in {where}; "
          f"total {time.monotonic() - started:.1f} s\n{output}")

    if not junit.is_file():
        pytest.fail(f"pytest in {where} wrote no junit report (exit {returncode}):\n"
                    f"{output[-6000:]}", pytrace=False)
    summary = parse_junit(junit)
    assert (returncode, summary.failures, summary.errors) == (0, 0, 0), (
        f"fullkernel tests failed in {where}: {summary}\n{output[-6000:]}")
    assert summary.passed >= 1, f"no fullkernel test passed in {where}: {summary}\n{output}"
    # A fullkernel test that skips on a full kernel exercises nothing; in CI that is a failure.
    if in_ci() and summary.skipped:
        pytest.fail(f"fullkernel tests skipped in {where} (CI=true):\n"
                    + "\n".join(summary.skip_reasons), pytrace=False)


def _require(*features: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    missing = [feature for feature in features if not kernel_has(feature)]
    if missing:
        pytest.skip(f"this kernel lacks {', '.join(missing)}; "
                    "test_fullkernel_tier runs this test inside the full-kernel VM")


def _links(ns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link", "show")}


@pytest.mark.fullkernel
@pytest.mark.privileged
def test_vm_has_vlan_dummy_bond():
    _require("vlan", "dummy", "bond")
    with netns() as ns:
        ip(ns, "link", "add", "name", "kd0", "type", "dummy")
        ip(ns, "link", "set", "kd0", "up")
        ip(ns, "link", "add", "link", "kd0", "name", "kd0.100", "type", "vlan", "id", "100")
        ip(ns, "link", "set", "kd0.100", "up")
        ip(ns, "link", "add", "name", "kb0", "type", "bond", "mode", "active-backup")
        ip(ns, "link", "add", "name", "kd1", "type", "dummy")
        ip(ns, "link", "set", "kd1", "master", "kb0")

        links = _links(ns)
        vlan = links["kd0.100"]
        assert vlan["linkinfo"]["info_kind"] == "vlan"
        assert vlan["linkinfo"]["info_data"]["id"] == 100
        assert vlan["linkinfo"]["info_data"]["protocol"] == "802.1Q"
        assert vlan["link"] == "kd0"
        assert "UP" in vlan["flags"]
        assert links["kd0"]["linkinfo"]["info_kind"] == "dummy"
        assert links["kb0"]["linkinfo"]["info_kind"] == "bond"
        assert links["kb0"]["linkinfo"]["info_data"]["mode"] == "active-backup"
        assert links["kd1"]["master"] == "kb0"
        assert links["kd1"]["linkinfo"]["info_slave_kind"] == "bond"

        ip(ns, "link", "del", "kd0.100")
        assert "kd0.100" not in _links(ns)


@pytest.mark.fullkernel
@pytest.mark.privileged
@pytest.mark.ovs
def test_vm_has_ovs_kernel_datapath(tmp_path):
    from tests.helpers.ovs import userspace_ovs  # skips when the OVS tools are missing

    _require("ovs_datapath", "dummy")
    with netns() as ns, userspace_ovs(tmp_path, netns=ns) as ovs:
        ovs.vsctl("add-br", "kbr0", "--", "set", "bridge", "kbr0", "datapath_type=system")
        ip(ns, "link", "add", "name", "kp0", "type", "dummy")
        ovs.vsctl("add-port", "kbr0", "kp0")
        # ovs-vsctl exits 0 even when the datapath refused the bridge: check the result.
        assert ovs.vsctl("get", "Interface", "kbr0", "ofport").stdout.strip() == "65534"
        links = _links(ns)
        assert links["kbr0"]["linkinfo"]["info_kind"] == "openvswitch"
        assert links["kp0"]["master"] == "ovs-system"
        assert links["kp0"]["linkinfo"]["info_slave_kind"] == "openvswitch"

        ovs.vsctl("del-br", "kbr0")
        deadline = time.monotonic() + OVS_GONE_TIMEOUT_S
        while "kbr0" in _links(ns):
            assert time.monotonic() < deadline, "kbr0 still in the kernel after del-br"
            time.sleep(POLL_INTERVAL_S)
        assert "master" not in _links(ns)["kp0"]
