"""The full-kernel tier: every test marked `fullkernel` runs against a kernel that has 802.1Q,
dummy, bonding and the OVS datapath, on every CI run.

Why: the CI kernel lacks those, so such tests would only ever skip there. test_fullkernel_tier
collects the `fullkernel` tests of the whole tree on the host, then runs them: in one pytest
directly when this kernel has the features, otherwise in two qemu VMs side by side booted with
Debian's kernel (tests/fullkernel/vm.py; one for the e2e scenarios, one for the rest), and fails
unless every pytest passed with at least one test. The other tests here prove the VM itself; they skip on a kernel without the features (the
tier runs them inside the VM) and use `ip -j` and the test helpers, never pyroute2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fullkernel.conftest import TIER_DURATIONS
from tests.fullkernel.vm import VmError, in_ci, in_vm, kernel_has, run_in_vm
from tests.helpers.netns import ip, ip_json, netns

REPO_DIR = Path(__file__).resolve().parents[2]
#: Features whose absence sends the tier into the VM.
TIER_FEATURES = ("vlan", "dummy", "bond")
#: One pytest run inside the VM: boot ~3 s, python + imports over 9p a few seconds per module.
TIER_TIMEOUT_S = 600.0
COLLECT_TIMEOUT_S = 180.0
COMPILE_TIMEOUT_S = 120.0
#: Compiled on the host before the VM starts (see precompile_bytecode).
BYTECODE_DIRS = ("src", "tests")
E2E_PREFIX = "tests/e2e/"
OVS_GONE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
SELECT_ARGS = ("-m", "fullkernel", "-p", "no:cacheprovider")
INNER_PYTEST_ARGS = (
    *SELECT_ARGS,
    # Plugins whose import alone costs seconds over 9p under TCG (hypothesis: 6.4 s of a 8 s
    # pytest start, measured); @given tests still work without the plugin.
    "-p", "no:hypothesispytest",
    # Timestamped start/end of every test and a time budget per test phase (see the plugin).
    "-p", "tests.fullkernel.vm_pytest_plugin",
    "-q", "-rfEs", "--durations=8",
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


def precompile_bytecode() -> None:
    """Write fresh .pyc files for the repository on the host, where compiling is ~30x cheaper.

    Why: the VM runs with PYTHONDONTWRITEBYTECODE (its overlay is thrown away), so every
    process there (pytest, each agent, the SR-IOV emulator, the fake API server's imports)
    would recompile every module whose .pyc is missing or stale -- in a fresh CI checkout,
    all of src/ and tests/. Best effort: a failure only costs time inside the VM."""
    argv = [sys.executable, "-m", "compileall", "-q", "-j", "0", *BYTECODE_DIRS]
    try:
        subprocess.run(argv, cwd=REPO_DIR, capture_output=True, timeout=COMPILE_TIMEOUT_S,
                       check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _timeline(console: str) -> str:
    marks = re.findall(r"plumber-vm: (.+?) \(t=([\d.]+)s\)", console)
    return ", ".join(f"{what} {t} s" for what, t in marks)


def split_for_vms(nodeids: list[str]) -> list[list[str]]:
    """The tests as groups, one VM each, run side by side: the e2e scenarios (they share one
    session-scoped cluster, so they stay together; the longest group) and everything else.

    Why two VMs: inside one, a third of the time both vCPUs wait on 9p round trips to the host,
    so a second VM doing the short tests fits mostly in those gaps instead of after them."""
    e2e = [nodeid for nodeid in nodeids if nodeid.startswith(E2E_PREFIX)]
    rest = [nodeid for nodeid in nodeids if not nodeid.startswith(E2E_PREFIX)]
    return [group for group in (e2e, rest) if group]


@dataclass(frozen=True)
class GroupRun:
    """One pytest run of a group of tests: where, its output and junit report."""

    where: str
    returncode: int
    output: str
    junit: Path


def _run_group(index: int, nodeids: list[str], *, tmp_path: Path, missing: list[str]) -> GroupRun:
    share = tmp_path / f"share{index}"
    share.mkdir()
    junit = share / "junit.xml"
    argv = [sys.executable, "-m", "pytest", *INNER_PYTEST_ARGS, f"--junitxml={junit}", *nodeids]
    if not missing:
        proc = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True,
                              timeout=TIER_TIMEOUT_S, check=False)
        return GroupRun("this kernel (it has " + ", ".join(TIER_FEATURES) + ")",
                        proc.returncode, proc.stdout + proc.stderr, junit)
    result = run_in_vm(argv, workdir=REPO_DIR, timeout_s=TIER_TIMEOUT_S, share_dir=share)
    return GroupRun(f"VM {index} ({len(nodeids)} tests, {result.duration_s:.1f} s: "
                    f"{_timeline(result.console)})", result.returncode, result.output, junit)


@pytest.mark.fullkernel
def test_fullkernel_tier(request, tmp_path):
    if in_vm():
        pytest.skip("already inside the full-kernel VM")
    nodeids = collect_fullkernel_nodeids(exclude=request.node.nodeid)
    missing = [feature for feature in TIER_FEATURES if not kernel_has(feature)]
    started = time.monotonic()
    if not missing:
        groups = [nodeids]
        where = "this kernel (it has " + ", ".join(TIER_FEATURES) + ")"
    else:
        request.getfixturevalue("vm_available")
        precompile_bytecode()
        groups = split_for_vms(nodeids)
        where = (f"{len(groups)} full-kernel VM(s) side by side (this kernel lacks "
                 f"{', '.join(missing)})")
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [pool.submit(_run_group, index, group, tmp_path=tmp_path, missing=missing)
                   for index, group in enumerate(groups)]
        runs, errors = [], []
        for future in futures:
            try:
                runs.append(future.result())
            except VmError as exc:
                errors.append(str(exc))
    duration_s = time.monotonic() - started
    TIER_DURATIONS.append((f"{len(nodeids)} tests in {where}", duration_s, TIER_TIMEOUT_S))
    output = "\n".join(f"===== {run.where} (exit {run.returncode}) =====\n{run.output}"
                       for run in runs)
    print(f"fullkernel tier: {len(nodeids)} tests in {where}; "
          f"total {duration_s:.1f} s of {TIER_TIMEOUT_S:.0f} s limit\n{output}")
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)

    for run in runs:
        if not run.junit.is_file():
            pytest.fail(f"pytest in {run.where} wrote no junit report (exit {run.returncode}):\n"
                        f"{run.output[-6000:]}", pytrace=False)
    summaries = [parse_junit(run.junit) for run in runs]
    summary = JunitSummary(*(sum(getattr(one, key) for one in summaries)
                             for key in ("tests", "failures", "errors", "skipped")),
                           skip_reasons=tuple(r for one in summaries for r in one.skip_reasons))
    returncodes = [run.returncode for run in runs]
    assert (returncodes, summary.failures, summary.errors) == ([0] * len(runs), 0, 0), (
        f"fullkernel tests failed in {where}: {summary}\n{output[-8000:]}")
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
