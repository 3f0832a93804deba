"""Kernel behaviour for the emulated sysfs: what writes do, when things appear, and the faults.

Why: a passive fake tree (as other projects use) cannot show the bugs that matter: writing "010"
and getting 8 VFs, EBUSY between two non-zero counts, VFs and netdevs that appear seconds later
under a name udev then changes, a VF that is driverless in the middle of a rebind, a write that
never returns. This module does what drivers/pci/iov.c, drivers/pci/pci-driver.c (driver_override,
drivers_probe) and drivers/base/bus.c (bind/unbind) do, closely enough for the agent to meet the
same answers, plus switches ("knobs") to inject the failures real hosts produce.

Knobs (all settable at run time through <mount>/.emu/faults, JSON; null restores the default):
  vf_delay_s, vf_stagger_s   0 (the default): the VFs (device dir, virtfnN, physfn) exist when
                             the sriov_numvfs write returns, as pci_enable_sriov() makes them.
                             > 0: VF i appears vf_delay_s + i*stagger later instead -- a fault
                             no kernel shows, kept to prove the agent waits for virtfnN links
  probe_delay_s              autoprobe binds a new VF this long after it appears (the kernel may
                             probe asynchronously there); drivers_probe and bind are synchronous
  netdev_delay_s             a VF netdev (ethN) is registered this long after the bind
  rename_delay_s             then udev renames it to <pf>v<N>
  hold_vfs / hold_probe / hold_rename   park those steps until the knob is cleared (deterministic
                             "not yet" states for tests; hold_probe also parks drivers_probe)
  vf_cap                     the PF driver enables at most this many VFs (write still succeeds)
  enospc                     enabling VFs fails with ENOSPC (out of interrupt vectors)
  numvfs_errno               enabling VFs fails with this errno name (e.g. "EINVAL", "EPERM")
  erofs                      every sysfs open for writing fails with EROFS (read-only /sys)
  block_writes               true (every sysfs write) or a list of attribute names (e.g.
                             ["sriov_numvfs"]): such writes block until the knob is cleared
  driver_gap_reads           the next N lookups of a VF's `driver` link find nothing (a VF
                             briefly driverless during a rebind)
  remove_keeps_vfs           unbinding a PF driver leaves its VFs enabled (the PCI core only warns
                             "driver left SR-IOV enabled after remove"; nvme does this, while NIC
                             drivers such as i40e/ixgbe disable SR-IOV in remove: the default)

What was checked against a real kernel (tests/fullkernel/test_sriov_kernel.py; the list is in
tests/fullkernel/README.md, "Real kernel vs the SR-IOV emulator") is modelled as the kernel does
it; the delays and faults above are the emulator's own additions.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import json
import os
import threading
import time
from typing import Callable, Optional

from tests.sriov_emu.tree import DriverSpec, FileNode, LinkNode, Node, PciDev, SysfsModel

DEFAULT_KNOBS: dict[str, object] = {
    "vf_delay_s": 0.0,
    "vf_stagger_s": 0.0,
    "probe_delay_s": 0.02,
    "netdev_delay_s": 0.02,
    "rename_delay_s": 0.1,
    "hold_vfs": False,
    "hold_probe": False,
    "hold_rename": False,
    "vf_cap": None,
    "enospc": False,
    "numvfs_errno": None,
    "erofs": False,
    "block_writes": False,
    "driver_gap_reads": 0,
    "remove_keeps_vfs": False,
}
WRITE_LOG_MAX = 10_000
PAGE_SIZE = 4096
U16_MAX = 0xFFFF


def kstrtou16_base0(data: bytes) -> int:
    """The kernel's kstrtou16(buf, 0, &v): "0x" hex, leading "0" octal, else decimal; an
    optional '+', one trailing newline allowed; EINVAL for junk, ERANGE above 65535."""
    text = data.decode("ascii", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    if text.startswith("+"):
        text = text[1:]
    hex_digits = "0123456789abcdefABCDEF"
    if len(text) >= 3 and text[0] == "0" and text[1] in "xX" and text[2] in hex_digits:
        base, digits = 16, text[2:]
    elif text.startswith("0"):
        base, digits = 8, text
    else:
        base, digits = 10, text
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c.lower() not in allowed for c in digits):
        raise OSError(errno.EINVAL, "Invalid argument")
    value = int(digits, base)
    if value > U16_MAX:
        raise OSError(errno.ERANGE, "Numerical result out of range")
    return value


def kstrtobool(data: bytes) -> bool:
    text = data.decode("ascii", errors="replace").strip().lower()
    if text[:1] in ("1", "y", "t") or text in ("on",):
        return True
    if text[:1] in ("0", "n", "f") or text in ("off",):
        return False
    raise OSError(errno.EINVAL, "Invalid argument")


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class KernelSysfs(SysfsModel):
    """A SysfsModel whose attributes react to writes like the kernel's, with timed events."""

    def __init__(self, pfs=(), drivers: Optional[list[DriverSpec]] = None,
                 knobs: Optional[dict] = None):
        self.lock = threading.RLock()
        self.knobs: dict[str, object] = dict(DEFAULT_KNOBS)
        self.write_log: list[dict] = []
        self._changed = threading.Condition(self.lock)
        self._timers: list = []
        self._parked: dict[str, list] = {"vfs": [], "probe": [], "rename": []}
        self._seq = itertools.count()
        self._stopping = False
        super().__init__(pfs, drivers)
        if knobs:
            self.set_knobs(knobs)
        self._thread = threading.Thread(target=self._run_timers, name="emu-timers", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------- knobs
    def set_knobs(self, changes: dict) -> None:
        if not isinstance(changes, dict):
            raise ValueError("knobs must be a JSON object")
        unknown = set(changes) - set(DEFAULT_KNOBS)
        if unknown:
            raise ValueError(f"unknown knobs: {', '.join(sorted(unknown))}")
        with self.lock:
            for key, value in changes.items():
                self.knobs[key] = DEFAULT_KNOBS[key] if value is None else value
            code = self.knobs["numvfs_errno"]
            if code is not None and not hasattr(errno, str(code)):
                self.knobs["numvfs_errno"] = None
                raise ValueError(f"numvfs_errno: unknown errno {code!r}")
            for gate, parked in self._parked.items():
                if not self.knobs[f"hold_{gate}"] and parked:
                    for fn in parked:
                        self._schedule(0.0, fn)
                    parked.clear()
            self._changed.notify_all()

    def knobs_json(self) -> str:
        with self.lock:
            return json.dumps(self.knobs, sort_keys=True) + "\n"

    def shutdown(self) -> None:
        """Stop timers and fail every blocked write with EIO (so the FUSE loop can exit)."""
        with self.lock:
            self._stopping = True
            self._changed.notify_all()

    # --------------------------------------------------------------------- timers
    def _schedule(self, delay_s: float, fn: Callable[[], None], gate: Optional[str] = None) -> None:
        def run() -> None:
            if gate is not None and self.knobs[f"hold_{gate}"]:
                self._parked[gate].append(fn)
            else:
                fn()
        heapq.heappush(self._timers, (time.monotonic() + float(delay_s), next(self._seq), run))
        self._changed.notify_all()

    def _run_timers(self) -> None:
        with self.lock:
            while not self._stopping:
                now = time.monotonic()
                if self._timers and self._timers[0][0] <= now:
                    _, _, run = heapq.heappop(self._timers)
                    run()
                    continue
                timeout = self._timers[0][0] - now if self._timers else None
                self._changed.wait(timeout)

    # --------------------------------------------------------------------- lookups
    def lookup(self, path: str) -> Optional[Node]:
        with self.lock:
            node = super().lookup(path)
            if (isinstance(node, LinkNode) and path.endswith("/driver")
                    and self.knobs["driver_gap_reads"]):
                dev = self.devices.get(path.rstrip("/").split("/")[-2])
                if dev is not None and dev.physfn is not None:
                    self.knobs["driver_gap_reads"] = int(self.knobs["driver_gap_reads"]) - 1
                    return None
            return node

    def store_handler(self, kind: str, *args) -> Optional[Callable[[bytes], None]]:
        handlers = {
            "sriov_numvfs": self._store_numvfs,
            "sriov_drivers_autoprobe": self._store_autoprobe,
            "driver_override": self._store_driver_override,
            "bind": self._store_bind,
            "unbind": self._store_unbind,
            "drivers_probe": self._store_drivers_probe,
            "drivers_autoprobe": self._store_bus_autoprobe,
        }
        handler = handlers.get(kind)
        if handler is None:
            return None
        return lambda data: handler(*args, data)

    # --------------------------------------------------------------------- writes
    def write(self, path: str, node: FileNode, data: bytes) -> int:
        """A write(2) on attribute `node` at `path`: honours block_writes, logs, runs the store."""
        entry = {"path": "/" + path.strip("/"), "attr": node.key,
                 "data": data.decode("ascii", errors="backslashreplace")}
        with self.lock:
            while self._blocked(node.key) and not self._stopping:
                self._changed.wait()
            try:
                if self._stopping:
                    raise _fail(errno.EIO)
                if node.store is None:
                    raise _fail(errno.EACCES)
                node.store(data)
                entry["result"] = "ok"
                return len(data)
            except OSError as exc:
                entry["result"] = errno.errorcode.get(exc.errno, str(exc.errno))
                raise
            finally:
                self.write_log.append(entry)
                del self.write_log[:-WRITE_LOG_MAX]

    def _blocked(self, key: str) -> bool:
        block = self.knobs["block_writes"]
        if isinstance(block, list):
            return key in block
        return bool(block)

    def check_open_for_write(self) -> None:
        with self.lock:
            if self.knobs["erofs"]:
                raise _fail(errno.EROFS)

    def _store_numvfs(self, pf: PciDev, data: bytes) -> None:
        """drivers/pci/iov.c sriov_numvfs_store(): any kstrtou16() failure, an overflow above
        65535 included, is EINVAL there (real kernel: "65536" -> EINVAL)."""
        try:
            num_vfs = kstrtou16_base0(data)
        except OSError:
            raise _fail(errno.EINVAL) from None
        if num_vfs > pf.total_vfs:
            raise _fail(errno.ERANGE)
        if num_vfs == pf.num_vfs:
            return
        driver = self.drivers.get(pf.driver or "")
        if driver is None or not driver.sriov:
            raise _fail(errno.ENOENT)  # "no driver bound to device; cannot configure SR-IOV"
        if num_vfs == 0:
            self.remove_vfs(pf)
            return
        if pf.num_vfs:
            raise _fail(errno.EBUSY)  # "%d VFs already enabled. Disable before enabling %d VFs"
        if self.knobs["numvfs_errno"]:
            raise _fail(getattr(errno, str(self.knobs["numvfs_errno"])))
        if self.knobs["enospc"]:
            raise _fail(errno.ENOSPC)
        cap = self.knobs["vf_cap"]
        enabled = min(num_vfs, int(cap)) if cap is not None else num_vfs
        if enabled <= 0:
            raise _fail(errno.ENOSPC)
        pf.num_vfs = enabled
        gen = pf.sriov_gen
        delay = float(self.knobs["vf_delay_s"])
        stagger = float(self.knobs["vf_stagger_s"])
        for index in range(enabled):
            appear = self._vf_appears(pf, gen, index)
            at_s = delay + index * stagger
            if at_s <= 0 and not self.knobs["hold_vfs"]:
                appear()  # the kernel: the VF exists before write(2) returns
            else:
                self._schedule(at_s, appear, gate="vfs")

    def _vf_appears(self, pf: PciDev, gen: int, index: int) -> Callable[[], None]:
        def appear() -> None:
            if self.devices.get(pf.pci_addr) is not pf or pf.sriov_gen != gen:
                return  # SR-IOV was disabled meanwhile
            vf = self.create_vf(pf, index)
            if pf.drivers_autoprobe:
                self._probe_later(vf)
        return appear

    def _probe_later(self, dev: PciDev) -> None:
        gen = dev.bind_gen

        def probe() -> None:
            if self.devices.get(dev.pci_addr) is not dev or dev.bind_gen != gen or dev.driver:
                return
            driver = self.first_match(dev)
            if driver is not None:
                self._attach(dev, driver.name)
        self._schedule(float(self.knobs["probe_delay_s"]), probe, gate="probe")

    def _attach(self, dev: PciDev, driver_name: str) -> None:
        """Bind; a VF's netdev is registered later as ethN and renamed later still (udev)."""
        self.attach(dev, driver_name, netdev_now=False)
        driver = self.drivers[driver_name]
        if dev.physfn is None or not driver.netdev or not dev.class_code.startswith("0x02"):
            return
        gen = dev.bind_gen

        def register() -> None:
            if self.devices.get(dev.pci_addr) is not dev or dev.bind_gen != gen:
                return
            self.add_vf_netdev(dev, self.free_eth_name())
            self._schedule(float(self.knobs["rename_delay_s"]), rename, gate="rename")

        def rename() -> None:
            if self.devices.get(dev.pci_addr) is not dev or dev.bind_gen != gen or not dev.netdev:
                return
            new = self.vf_final_name(dev)
            if new:
                self.rename_netdev(dev.netdev, new)
        self._schedule(float(self.knobs["netdev_delay_s"]), register)

    def _store_autoprobe(self, pf: PciDev, data: bytes) -> None:
        pf.drivers_autoprobe = kstrtobool(data)

    def _store_driver_override(self, dev: PciDev, data: bytes) -> None:
        """driver_set_override(): up to the first newline / NUL; empty clears."""
        if len(data) >= PAGE_SIZE - 1:
            raise _fail(errno.EINVAL)
        text = data.split(b"\0", 1)[0].split(b"\n", 1)[0].decode("ascii", errors="replace")
        dev.driver_override = text or None

    def _store_bind(self, driver: DriverSpec, data: bytes) -> None:
        """drivers/base/bus.c bind_store(): synchronous probe."""
        dev = self.find_device(data)
        if dev is None or not self.matches(driver, dev):
            raise _fail(errno.ENODEV)
        if dev.driver:
            raise _fail(errno.EBUSY)
        self._attach(dev, driver.name)

    def _store_unbind(self, driver: DriverSpec, data: bytes) -> None:
        dev = self.find_device(data)
        if dev is None or dev.driver != driver.name:
            raise _fail(errno.ENODEV)
        self.detach(dev)

    def _store_drivers_probe(self, data: bytes) -> None:
        """drivers_probe_store(): attach if unbound, synchronously (device_attach() does not
        probe asynchronously there, real kernel: the driver link exists when the write returns);
        hold_probe parks it instead (a probe that does not take)."""
        dev = self.find_device(data)
        if dev is None:
            raise _fail(errno.ENODEV)
        if dev.driver is not None:
            return
        if self.knobs["hold_probe"]:
            self._probe_later(dev)
            return
        driver = self.first_match(dev)
        if driver is not None:
            self._attach(dev, driver.name)

    def remove_disables_sriov(self, pf: PciDev) -> bool:
        return not self.knobs["remove_keeps_vfs"]

    def _store_bus_autoprobe(self, data: bytes) -> None:
        self.bus_drivers_autoprobe = kstrtobool(data)
