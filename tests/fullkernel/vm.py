"""Run a command inside a throw-away qemu VM booted with Debian's full kernel.

Why: the CI kernel has no 802.1Q, dummy, bonding or OVS kernel datapath and cannot load modules,
so tests needing those would only ever skip. Debian's 6.1 kernel has them as modules; booting it
under qemu (TCG: the machine's /dev/kvm cannot run a stock kernel) with the host's ``/`` shared
read-only over 9p under a tmpfs overlay lets the very same Python, repo and packages run against a
full kernel in a few seconds, with no disk image to build or keep in sync.

Contract with the initramfs (build_initramfs.INIT_SCRIPT): the writable share (a temporary
directory on the host, mounted at the *same path* inside the VM) holds ``job.env`` and ``run.sh``
written here; the VM leaves ``output`` (merged stdout+stderr) and ``rc`` there and powers off.
Boot artifacts come from ``scripts/fetch-vm-kernel.sh`` into ``$PLUMBER_VM_DIR``.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fullkernel.build_initramfs import INITRAMFS_NAME, VMLINUX_NAME

VM_DIR_ENV = "PLUMBER_VM_DIR"
DEFAULT_VM_DIR = Path("/var/cache/plumber-vm")
IN_VM_ENV = "PLUMBER_IN_VM"
QEMU_BINARY = "qemu-system-x86_64"
#: qboot is much quicker than SeaBIOS to hand over to a PVH kernel; Debian ships it in
#: qemu-system-data (a dependency of qemu-system-x86).
QBOOT_ROM = Path("/usr/share/qemu/qboot.rom")
FETCH_HINT = "run scripts/fetch-vm-kernel.sh (as root) to install qemu and build the VM kernel"

VM_MEMORY_MB = 1536
VM_CPUS = 2
#: q35, not pc: SR-IOV needs PCI Express (the capability lives in extended config space), and the
#: emulated NVMe PF below sits behind a PCIe root port. qboot boots q35 as quickly as pc.
VM_MACHINE = "q35"
#: Not `max`: under TCG every CPU feature the guest sees is emulated, and `max` makes the guest
#: kernel save/restore AVX-512 state on context switches and glibc pick AVX2 string functions
#: QEMU 7.2 emulates through helpers. With qemu64 the guest's system time for `import
#: kubernetes.client` dropped from 11-16 s to 6-10 s; the e2e cluster start did not change
#: (66 vs 67 s, two VMs side by side under the same load). Measured on a loaded machine.
VM_CPU_MODEL = "qemu64"
#: mitigations=off: no speculative-execution workarounds to emulate; transparent_hugepage=never:
#: khugepaged was seen using 40 % of a vCPU collapsing pages during the e2e scenarios.
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 mitigations=off transparent_hugepage=never"
#: A real SR-IOV physical function for tests/fullkernel/test_sriov_kernel.py: QEMU's NVMe
#: controller with SR-IOV (needs an NVMe subsystem and a PCIe root port). Constraints checked by
#: QEMU (hw/nvme/ctrl.c nvme_check_params): max_ioqpairs - sriov_vq_flexible >= 2, and the
#: flexible queue/interrupt pools must cover sriov_max_vfs times the per-VF maxima.
SRIOV_PF_PCI_ADDR = "0000:01:00.0"
SRIOV_TOTAL_VFS = 4
SRIOV_PF_VENDOR_DEVICE = ("1b36", "0010")  # QEMU's NVMe; its VFs have the same ids
SRIOV_DEVICE_ARGS = (
    "-device", "pcie-root-port,id=plumb_rp0,chassis=1,slot=1",
    "-device", "nvme-subsys,id=plumb_nvme_subsys,nqn=plumber-sriov",
    "-device", "nvme,serial=plumbersriov,bus=plumb_rp0,subsys=plumb_nvme_subsys,"
               f"sriov_max_vfs={SRIOV_TOTAL_VFS},sriov_vq_flexible=16,sriov_vi_flexible=8,"
               "sriov_max_vi_per_vf=2,sriov_max_vq_per_vf=4,msix_qsize=10,max_ioqpairs=20",
)
DEFAULT_TIMEOUT_S = 300.0
#: Bound for one `ip`/`genl` probe in kernel_has().
PROBE_TIMEOUT_S = 10.0
#: Environment variables worth carrying from the caller into the VM (same root filesystem, so
#: paths stay valid); everything else starts clean so the host's pytest state does not leak in.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "CI", "PYTHONPATH", "TERM")


class VmError(Exception):
    """The VM did not run the job to completion (missing artifacts, boot failure, crash)."""


class VmTimeout(VmError):
    """The job outlived its timeout; qemu was killed."""


@dataclass(frozen=True)
class VmResult:
    """What a job did inside the VM; shaped like subprocess.CompletedProcess."""

    args: list[str]
    returncode: int
    output: str  # the job's stdout and stderr, merged in order
    console: str  # the VM's serial console: kernel messages and init's timestamps
    duration_s: float  # qemu start to exit, boot and power-off included

    def check_returncode(self) -> None:
        if self.returncode != 0:
            raise subprocess.CalledProcessError(self.returncode, self.args, self.output)


@dataclass(frozen=True)
class VmArtifacts:
    qemu: Path
    bios: Path
    kernel: Path
    initramfs: Path


def vm_dir() -> Path:
    return Path(os.environ.get(VM_DIR_ENV) or DEFAULT_VM_DIR)


def missing_artifacts() -> str | None:
    """None when the VM can boot here, else a sentence saying what is missing and how to fix it."""
    missing = []
    if shutil.which(QEMU_BINARY) is None:
        missing.append(QEMU_BINARY)
    if not QBOOT_ROM.is_file():
        missing.append(str(QBOOT_ROM))
    for name in (VMLINUX_NAME, INITRAMFS_NAME):
        if not (vm_dir() / name).is_file():
            missing.append(str(vm_dir() / name))
    if not missing:
        return None
    return f"full-kernel VM artifacts missing ({', '.join(missing)}): {FETCH_HINT}"


def find_artifacts() -> VmArtifacts:
    reason = missing_artifacts()
    if reason is not None:
        raise VmError(reason)
    return VmArtifacts(
        qemu=Path(shutil.which(QEMU_BINARY) or QEMU_BINARY),
        bios=QBOOT_ROM,
        kernel=vm_dir() / VMLINUX_NAME,
        initramfs=vm_dir() / INITRAMFS_NAME,
    )


def qemu_argv(artifacts: VmArtifacts, *, share_dir: Path, console_path: Path) -> list[str]:
    """The qemu command line: no disk, no NIC, host root read-only plus one writable share, and
    one SR-IOV capable (NVMe) PCIe function."""
    return [
        str(artifacts.qemu),
        # /dev/kvm here is a PVM hypervisor a stock kernel cannot boot under: emulate.
        "-accel", "tcg", "-cpu", VM_CPU_MODEL,
        "-M", VM_MACHINE, "-m", str(VM_MEMORY_MB), "-smp", str(VM_CPUS),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-bios", str(artifacts.bios),
        "-kernel", str(artifacts.kernel), "-initrd", str(artifacts.initramfs),
        "-append", KERNEL_CMDLINE,
        "-serial", f"file:{console_path}",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={_virtfs_path(share_dir)},mount_tag=job,security_model=none,"
                   "multidevs=remap",
        *SRIOV_DEVICE_ARGS,
    ]


def _virtfs_path(path: Path) -> str:
    text = str(path)
    if "," in text:  # qemu's option syntax would split it; our temp dirs never contain one
        raise VmError(f"share directory {text!r} contains a comma")
    return text


def _job_env(env: dict[str, str] | None) -> dict[str, str]:
    merged = {key: os.environ[key] for key in PASSTHROUGH_ENV if key in os.environ}
    merged.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    merged.setdefault("HOME", "/root")
    merged.setdefault("LANG", "C.UTF-8")
    merged["PYTHONDONTWRITEBYTECODE"] = "1"  # the overlay would discard them anyway
    merged[IN_VM_ENV] = "1"
    merged.update(env or {})
    return merged


def _run_script(argv: list[str], *, workdir: Path, env: dict[str, str]) -> str:
    """/bin/sh script run as the job inside the VM. Every word is shlex-quoted: nothing the
    caller passes is ever parsed by the shell."""
    lines = ["# written by tests/fullkernel/vm.py", f"cd {shlex.quote(str(workdir))} || exit 126"]
    for key, value in env.items():
        if not key.isidentifier():
            raise VmError(f"environment variable name {key!r} is not a shell identifier")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append("exec " + " ".join(shlex.quote(word) for word in argv))
    return "\n".join(lines) + "\n"


def run_in_vm(argv: list[str], *, workdir: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S,
              env: dict[str, str] | None = None, share_dir: str | Path | None = None) -> VmResult:
    """Boot the VM, run ``argv`` in ``workdir`` (a host path: the host's / is the VM's /).

    ``env`` is added to a small clean environment that has ``PLUMBER_IN_VM=1``. ``share_dir``,
    if given, is the writable directory shared with the VM at the same path (the job can leave
    files there, e.g. a junit XML); otherwise a temporary one is used and removed afterwards.
    Raises VmTimeout (qemu killed) after ``timeout_s``, VmError if the job never completed.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    artifacts = find_artifacts()
    workdir = Path(workdir).resolve()
    own_share = share_dir is None
    share = Path(tempfile.mkdtemp(prefix="plumber-vm-")) if own_share else Path(share_dir).resolve()
    try:
        share.mkdir(parents=True, exist_ok=True)
        for stale in ("output", "rc"):
            (share / stale).unlink(missing_ok=True)
        (share / "job.env").write_text(
            f"JOB_DIR={shlex.quote(str(share))}\nWORKDIR={shlex.quote(str(workdir))}\n")
        (share / "run.sh").write_text(_run_script(list(argv), workdir=workdir, env=_job_env(env)))
        console_path = share / "console.log"
        return _boot(artifacts, argv=list(argv), share=share, console_path=console_path,
                     timeout_s=timeout_s)
    finally:
        if own_share:
            shutil.rmtree(share, ignore_errors=True)


def _boot(artifacts: VmArtifacts, *, argv: list[str], share: Path, console_path: Path,
          timeout_s: float) -> VmResult:
    cmd = qemu_argv(artifacts, share_dir=share, console_path=console_path)
    started = time.monotonic()
    # start_new_session: a Ctrl-C aimed at pytest must not leave qemu behind half-killed.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        qemu_out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise VmTimeout(
            f"VM job {argv!r} still running after {timeout_s:.0f} s; qemu killed.\n"
            + _diagnostics(share, console_path)) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    duration_s = time.monotonic() - started
    rc_file = share / "rc"
    output = _read(share / "output")
    console = _read(console_path)
    rc_text = _read(rc_file).strip()
    if not rc_text.lstrip("-").isdigit():
        raise VmError(
            f"VM exited (qemu status {proc.returncode}) without finishing job {argv!r}.\n"
            f"qemu said: {qemu_out.decode(errors='replace').strip()}\n"
            + _diagnostics(share, console_path))
    return VmResult(args=argv, returncode=int(rc_text), output=output, console=console,
                    duration_s=duration_s)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _diagnostics(share: Path, console_path: Path, *, tail_chars: int = 4000) -> str:
    return (f"--- job output (tail) ---\n{_read(share / 'output')[-tail_chars:]}\n"
            f"--- VM console (tail) ---\n{_read(console_path)[-tail_chars:]}")


# ---------------------------------------------------------------------------------------------
# Does the running kernel have a feature? Link kinds are probed in a private network namespace
# (unshare -n), so nothing is created in, or left behind in, the caller's namespace.

#: feature -> `ip -batch` commands that succeed only when the kernel has it. VLAN needs a parent;
#: veth is the one link kind every kernel we run on has.
_LINK_PROBES = {
    "vlan": "link add name kp0 type veth peer name kp1\n"
            "link add link kp0 name kp0.7 type vlan id 7\n",
    "dummy": "link add name kp0 type dummy\n",
    "bond": "link add name kp0 type bond\n",
    "veth": "link add name kp0 type veth peer name kp1\n",
    "macvlan": "link add name kp0 type veth peer name kp1\n"
               "link add link kp0 name kp2 type macvlan\n",
    "bridge": "link add name kp0 type bridge\n",
    "bridge_vlan_filtering": "link add name kp0 type bridge vlan_filtering 1\n",
}
#: feature -> generic netlink family the kernel registers for it.
_GENL_PROBES = {"ovs_datapath": "ovs_datapath"}
KERNEL_FEATURES = tuple(sorted({*_LINK_PROBES, *_GENL_PROBES}))


@functools.lru_cache(maxsize=None)
def kernel_has(feature: str) -> bool:
    """True when the running kernel supports ``feature`` (one of KERNEL_FEATURES).

    Needs root (a new network namespace); without it, returns False, which makes callers skip or
    go to the VM — never a false "yes".
    """
    if feature in _LINK_PROBES:
        argv, stdin = ["unshare", "--net", "ip", "-batch", "-"], _LINK_PROBES[feature]
    elif feature in _GENL_PROBES:
        # A read-only query of a global registry: no private namespace needed.
        argv, stdin = ["genl", "ctrl", "get", "name", _GENL_PROBES[feature]], ""
    else:
        raise ValueError(f"unknown kernel feature {feature!r}; known: {', '.join(KERNEL_FEATURES)}")
    try:
        probe = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def in_ci() -> bool:
    """CI=true: a VM that cannot start is a failure there, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def in_vm() -> bool:
    """True inside the VM started by run_in_vm (tests use it to avoid starting another one)."""
    return os.environ.get(IN_VM_ENV) == "1"
