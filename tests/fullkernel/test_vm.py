"""The VM runner's own contract: argv and environment reach the job verbatim, the exit status and
output come back, files left in the share are visible on the host, and a hung job is killed.

Why: test_fullkernel_tier trusts run_in_vm's return code and junit file; if quoting or the rc
hand-off were wrong, the tier could pass without having run anything. Two short boots (~4 s).
Not marked `fullkernel`: these run on the host and start the VM themselves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fullkernel.build_initramfs import BuildError, parse_modules_dep, resolve_load_order
from tests.fullkernel.vm import VmTimeout, in_vm, run_in_vm

REPO_DIR = Path(__file__).resolve().parents[2]

#: A job that never finishes on its own; the timeout must end it well before this.
HANG_S = 600
#: Shorter than the VM's boot (~2.5 s measured), so the job is guaranteed to be running or booting.
SHORT_TIMEOUT_S = 1.0

pytestmark = pytest.mark.skipif(in_vm(), reason="starts VMs; not nested inside the VM")


def test_run_in_vm_passes_argv_env_and_returns_status(vm_available, tmp_path):
    tricky = ["a b", "it's", "$HOME", "*", "new\nline", ""]
    script = ('printf "<%s>" "$@"; echo; echo "$PLUMBER_IN_VM $EXTRA"; pwd; '
              'echo done > "$OUT"; exit 7')
    share = tmp_path / "share"
    result = run_in_vm(["sh", "-c", script, "sh", *tricky], workdir=tmp_path.parent,
                       env={"EXTRA": "x'y z", "OUT": str(share / "left.txt")}, share_dir=share)

    assert result.returncode == 7
    lines = result.output.splitlines()
    assert "".join(lines[:2]) == "".join(f"<{word}>" for word in tricky).replace("\n", "")
    assert lines[2] == "1 x'y z"
    assert lines[3] == str(tmp_path.parent)
    assert (share / "left.txt").read_text() == "done\n"
    assert "job done" in result.console
    with pytest.raises(subprocess.CalledProcessError):
        result.check_returncode()


def test_run_in_vm_kills_qemu_on_timeout(vm_available, tmp_path):
    with pytest.raises(VmTimeout, match="qemu killed"):
        run_in_vm(["sleep", str(HANG_S)], workdir=tmp_path, timeout_s=SHORT_TIMEOUT_S,
                  share_dir=tmp_path / "share")


MODULES_DEP = """\
kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/net/9p/9pnet-virtio.ko: kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
"""


def test_resolve_load_order_puts_dependencies_first_once():
    table = parse_modules_dep(MODULES_DEP)
    order = [Path(p).name for p in resolve_load_order(table, ["8021q", "9pnet_virtio", "stp"])]
    assert order == ["llc.ko", "stp.ko", "garp.ko", "8021q.ko", "9pnet.ko", "9pnet-virtio.ko"]


def test_resolve_load_order_names_a_missing_module():
    with pytest.raises(BuildError, match="'bonding' is not in modules.dep"):
        resolve_load_order(parse_modules_dep(MODULES_DEP), ["bonding"])


def test_inner_plugin_reports_progress_and_fails_a_test_over_budget(tmp_path):
    """The VM's pytest plugin: a phase over its budget fails with the budget named, the next
    test still runs, and every start/end is on the terminal."""
    (tmp_path / "test_budget.py").write_text(
        "import time\n"
        "def test_slow():\n    time.sleep(30)\n"
        "def test_fast():\n    pass\n")
    env = dict(os.environ, PLUMBER_VM_SCENARIO_BUDGET_S="1",
               PYTHONPATH=os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.fullkernel.vm_pytest_plugin",
                           "-p", "no:cacheprovider", "-q", str(tmp_path / "test_budget.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1, proc.stdout
    assert "test_slow: call ran over its budget of 1 s" in proc.stdout
    assert "1 failed, 1 passed" in proc.stdout
    assert re.search(r"\[vm \d\d:\d\d:\d\d\] end .*test_fast after", proc.stdout)
