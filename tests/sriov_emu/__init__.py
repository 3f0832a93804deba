"""An SR-IOV sysfs emulator that behaves like the kernel, for host tests and the e2e harness.

Why: CI has no SR-IOV hardware, and a passive fake tree cannot answer a write with EBUSY or hang
like a sick driver. This package gives three things:

- tree.py: PfSpec/DriverSpec data, presets (the seed README's i40e eno1/eno2, an ixgbe X540 card)
  and `build_static_tree(dest, model)` for plain on-disk trees (no root, no FUSE);
- kernel.py + fuse_fs.py: the same tree served live through FUSE with the kernel's write
  semantics and switchable faults;
- `emulated_sysfs(tmpdir, preset=..., pfs=..., **knobs)`: runs the FUSE emulator as a separate
  process (`python -m tests.sriov_emu`), waits until it serves, and always unmounts and stops it.
  Several can run at once (one per simulated node), each on its own mount.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from tests.sriov_emu.tree import (IXGBE_PFS, PRESETS, SEED_PFS, DriverSpec, PfSpec, SysfsModel,
                                  build_static_tree, pci_offset)

__all__ = ["EmulatedSysfs", "emulated_sysfs", "fuse_unusable_reason", "build_static_tree",
           "SysfsModel", "PfSpec", "DriverSpec", "PRESETS", "SEED_PFS", "IXGBE_PFS", "pci_offset"]

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
READY_POLL_INTERVAL_S = 0.02
CONTROL_TIMEOUT_S = 5.0


def fuse_unusable_reason() -> Optional[str]:
    """Why the FUSE emulator cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the SR-IOV sysfs emulator mounts FUSE: needs root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: the SR-IOV sysfs emulator needs FUSE"
    try:
        importlib.import_module("fuse")  # fusepy loads libfuse.so.2 at import
    except ImportError:
        return "fusepy is not installed (pip install fusepy)"
    except (OSError, EnvironmentError) as exc:
        return f"fusepy cannot load libfuse2 ({exc}): apt-get install libfuse2"
    return None


def _mounted(path: str) -> bool:
    """From /proc/self/mountinfo: os.path.ismount is False for a dead FUSE mount (ENOTCONN)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4:
                    point = fields[4].encode().decode("unicode_escape")
                    if point == target:
                        return True
    except OSError:
        pass
    return False


class EmulatedSysfs:
    """A running emulator: `root` is the mount to use as the sysfs root."""

    def __init__(self, root: str, proc: subprocess.Popen, log_path: str):
        self.root = root
        self.proc = proc
        self.log_path = log_path

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def set_knobs(self, **knobs) -> None:
        """Flip faults/timings at run time (see tests/sriov_emu/kernel.py); None = default."""
        with open(self.path(".emu", "faults"), "w", encoding="ascii") as handle:
            handle.write(json.dumps(knobs))

    def knobs(self) -> dict:
        with open(self.path(".emu", "faults"), encoding="ascii") as handle:
            return json.load(handle)

    def writes(self, attr: Optional[str] = None) -> list[dict]:
        """Every sysfs write the emulator saw, in order (optionally only to attribute `attr`)."""
        with open(self.path(".emu", "writes"), encoding="ascii") as handle:
            log = json.load(handle)
        return [w for w in log if attr is None or w["attr"] == attr]

    def clear_writes(self) -> None:
        with open(self.path(".emu", "writes"), "w", encoding="ascii") as handle:
            handle.write("clear")

    def state(self) -> dict:
        with open(self.path(".emu", "state"), encoding="ascii") as handle:
            return json.load(handle)

    def read(self, *parts: str) -> str:
        with open(self.path(*parts), encoding="ascii") as handle:
            return handle.read()

    def write_raw(self, data: str, *parts: str) -> None:
        """One write(2) of `data`, exactly as given (raises OSError with the emulated errno)."""
        fd = os.open(self.path(*parts), os.O_WRONLY)
        try:
            os.write(fd, data.encode("ascii"))
        finally:
            os.close(fd)

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        ready = self.path(".emu", "ready")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sriov emulator exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()}")
            try:
                with open(ready, encoding="ascii") as handle:
                    if handle.read().strip() == "1":
                        return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"sriov emulator not serving {self.root} after {timeout_s:g} s:"
                                   f"\n{self.log_text()}")
            time.sleep(READY_POLL_INTERVAL_S)

    def stop(self) -> None:
        """Release blocked writes, stop the process, and make sure nothing stays mounted."""
        if self.proc.poll() is None and _mounted(self.root):
            with contextlib.suppress(OSError):
                self.set_knobs(block_writes=False, hold_vfs=False, hold_probe=False,
                               hold_rename=False)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        if _mounted(self.root):
            # Lazy: a dead FUSE mount, or one a leaked worker still holds a file open on.
            subprocess.run(["umount", "-l", self.root], check=False, capture_output=True,
                           timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def emulated_sysfs(tmpdir, preset: str = "seed", *, pfs: Sequence[PfSpec] = (),
                   name: str = "sysfs", startup_timeout_s: float = STARTUP_TIMEOUT_S,
                   **knobs) -> Iterator[EmulatedSysfs]:
    """Run the FUSE emulator at <tmpdir>/<name> with `preset` plus `pfs` (preset="empty" for
    only `pfs`) and initial knobs; always unmounted and stopped on exit, even on failure."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    mountpoint = Path(tmpdir) / name
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_path = Path(tmpdir) / f"{name}.emu.log"
    argv = [sys.executable, "-m", "tests.sriov_emu", "--mount", str(mountpoint),
            "--preset", preset, "--knobs", json.dumps(knobs)]
    for spec in pfs:
        argv += ["--pf", spec.to_arg()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(REPO_ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                     else []))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env)
    emu = EmulatedSysfs(str(mountpoint), proc, str(log_path))
    try:
        emu.wait_ready(startup_timeout_s)
        yield emu
    finally:
        emu.stop()
