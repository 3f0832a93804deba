"""SR-IOV through sysfs: discover PFs/VFs, set sriov_numvfs and VF drivers as the kernel wants.

Why a module of its own: sysfs is the only interface the kernel offers for SR-IOV and it is full of
traps that have bitten real projects (docs/pitfalls.md 21-29):

- `sriov_numvfs` is parsed in base 0 ("010" is 8), so we always write `str(int)`;
- a change between two non-zero counts gives EBUSY, so we write 0 first (this destroys the VFs:
  the caller only asks for it because the spec changed, and we log it);
- ERANGE / ENOENT / ENOSPC / EROFS / EINVAL / EPERM mean different things to the person who must
  act, so each gets its own message naming the PF;
- a driver may enable fewer VFs than asked, so we read back and return what the kernel enabled;
- a write to a sick driver can block forever, so every write runs in a daemon worker thread and
  we give up after `write_timeout_s` (the thread is left behind; a second write to the same file
  while the first is still stuck is refused at once instead of piling up threads);
- the PCI core creates the VF devices and `virtfnN` links before the sriov_numvfs write returns
  (checked against a real kernel, tests/fullkernel/test_sriov_kernel.py), but their drivers
  bind and register netdevs asynchronously and udev renames the netdevs, so VFs are found
  through `virtfnN` links and PCI addresses only, and waited for with a deadline;
- a VF is briefly driverless during a rebind, so a missing `driver` link is re-read before we
  believe it;
- `driver_override` takes the driver name and is cleared with "\\n" (never a NUL byte).

Every path is joined onto one configurable root (the `--sysfs-root` seam that lets the tests and
the e2e harness use an emulated sysfs) and its resolved real path must stay under that root's real
path; names and PCI addresses are re-validated with plumber_agent.validation before they reach a
path. Nothing here caches: every call re-reads the host (VFs vanish on reboots and driver reloads).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from typing import Optional

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.models.observed import (DEFAULT_PF_CLASSES, NETWORK_CLASS_PREFIX,
                                           ObservedLink, ObservedPf, ObservedVf)
from plumber_agent.validation import (NUMVFS_MAX, check_driver, check_ifname, check_int_range,
                                      check_pci_addr, normalise_pci_addr, require)

log = logging.getLogger(__name__)

DEFAULT_SYSFS_ROOT = "/sys"
DEFAULT_WRITE_TIMEOUT_S = 10.0
"""A sysfs write that takes longer than this is treated as hung (docs/pitfalls.md 24)."""
DEFAULT_VF_WAIT_TIMEOUT_S = 60.0
"""VFs and their netdevs may take up to a minute to appear (docs/pitfalls.md 25)."""
VF_POLL_INITIAL_INTERVAL_S = 0.05
VF_POLL_MAX_INTERVAL_S = 0.5
DRIVER_READ_RETRIES = 2
"""How often a missing VF `driver` link is re-read before we believe it (docs/pitfalls.md 26)."""
DRIVER_READ_RETRY_INTERVAL_S = 0.05
BIND_POLL_INTERVAL_S = 0.05
MAX_STUCK_WRITES = 8
"""Worker threads left blocked in sysfs writes; beyond this we refuse further writes."""
NON_NETDEV_DRIVERS = frozenset({"vfio-pci", "pci-stub", "uio_pci_generic", "igb_uio"})
"""Drivers that hand the device to userspace (DPDK, VMs) and create no netdev."""

_VIRTFN_RE = re.compile(r"^virtfn([0-9]+)$")


class _OutsideRoot(Exception):
    """A path resolved outside the sysfs root (a symlink pointing elsewhere, a '..')."""


def _check_pci(value, what: str) -> str:
    require(check_pci_addr, value, what)
    return normalise_pci_addr(value)


def _pci_class(text: Optional[str]) -> Optional[str]:
    """sysfs `class` ("0x020000\n") -> "0x020000"; None when missing or not of that form."""
    value = (text or "").strip().lower()
    return value if re.fullmatch(r"0x[0-9a-f]{6}", value) else None


def _hex_id(text: Optional[str]) -> Optional[str]:
    """'0x8086\\n' as the kernel writes it -> '8086'; None when unreadable or malformed."""
    if text is None:
        return None
    value = text.strip().lower()
    if value.startswith("0x"):
        value = value[2:]
    return value if re.fullmatch(r"[0-9a-f]{4}", value) else None


_MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def read_module_aliases(path: str) -> Optional[dict[str, str]]:
    """The plain-name aliases of a modules.alias file ("alias i40evf iavf"), names with '-'
    written '_' as modprobe compares them; the device patterns (pci:v...) are left out. None
    when the file cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    aliases: dict[str, str] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and _MODULE_NAME_RE.fullmatch(parts[1]) \
                and _MODULE_NAME_RE.fullmatch(parts[2]):
            aliases.setdefault(parts[1].replace("-", "_"), parts[2].replace("-", "_"))
    return aliases


def read_module_names(directory: str) -> Optional[frozenset]:
    """Names of the kernel's modules from modules.dep ("kernel/.../iavf.ko: deps") and
    modules.builtin ("kernel/.../e1000e.ko"), '-' written '_'; None without modules.dep."""
    names: set[str] = set()
    for file, required in (("modules.dep", True), ("modules.builtin", False)):
        try:
            with open(os.path.join(directory, file), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    path = line.split(":", 1)[0].strip()
                    base = os.path.basename(path)
                    name = base.split(".ko", 1)[0]
                    if name and ".ko" in base:
                        names.add(name.replace("-", "_"))
        except OSError:
            if required:
                return None
    return frozenset(names)


class Sysfs:
    """The SR-IOV driver: sysfs rooted at `root` (default /sys)."""

    def kernel_modules(self) -> Optional[frozenset]:
        """The running kernel's module names (re-read when modules.dep changes)."""
        directory = os.path.dirname(self.modules_alias_path())
        try:
            st = os.stat(os.path.join(directory, "modules.dep"))
        except OSError:
            return None
        stamp = (directory, st.st_mtime_ns, st.st_size)
        if self._modules_cache is None or self._modules_cache[0] != stamp:
            self._modules_cache = (stamp, read_module_names(directory))
        return self._modules_cache[1]

    def modules_alias_path(self) -> str:
        """The running kernel's modules.alias under the host root the sysfs root lives in
        (/sys -> /lib/modules/<release>/modules.alias; an emulated <dir>/sys -> <dir>/lib/...)."""
        host_root = os.path.dirname(os.path.abspath(self.root)) or "/"
        return os.path.join(host_root, "lib", "modules", os.uname().release, "modules.alias")

    def module_aliases(self) -> Optional[dict[str, str]]:
        """modules.alias's plain-name aliases, re-read only when the file changes."""
        path = self.modules_alias_path()
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            if self._aliases_warned != path:
                log.warning("no %s: vfDriver names are used as written (an alias such as "
                            "i40evf is not resolved to its module)", path)
                self._aliases_warned = path
            return None
        if self._aliases_cache is None or self._aliases_cache[0] != (path, stamp):
            self._aliases_cache = ((path, stamp), read_module_aliases(path))
        return self._aliases_cache[1]

    def __init__(self, root: str = DEFAULT_SYSFS_ROOT, *,
                 write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
                 vf_wait_timeout_s: float = DEFAULT_VF_WAIT_TIMEOUT_S,
                 pf_classes: tuple[str, ...] = DEFAULT_PF_CLASSES):
        self.root = root
        self.pf_classes = pf_classes  # PCI class prefixes accepted as PFs (--pf-pci-classes)
        self._real_root = os.path.realpath(root)
        self._aliases_cache: Optional[tuple] = None  # ((path, mtime, size), aliases)
        self._aliases_warned: Optional[str] = None
        self._modules_cache: Optional[tuple] = None
        self._write_timeout_s = write_timeout_s
        self._vf_wait_timeout_s = vf_wait_timeout_s
        self._stuck_lock = threading.Lock()
        self._stuck: dict[str, threading.Thread] = {}  # path -> worker still blocked in write()
        self._warned_no_pci = False

    def __repr__(self) -> str:
        return f"Sysfs({self.root!r})"

    # ----------------------------------------------------------------------------- paths
    def _inside(self, path: str) -> str:
        """The real path of `path`, or _OutsideRoot when it resolves outside the root."""
        real = os.path.realpath(path)
        root = self._real_root
        if real == root or root == os.sep or real.startswith(root + os.sep):
            return real
        raise _OutsideRoot(f"{path} resolves to {real}, outside the sysfs root {self.root}")

    def _join(self, *parts: str) -> str:
        for part in parts:
            # Parts are our own constants or validated names; refuse anything path-like anyway.
            if not part or part in (".", "..") or "/" in part or "\0" in part:
                raise HostError(f"refusing sysfs path component {part!r}")
        return os.path.join(self.root, *parts)

    def _device_dir(self, pci_addr: str) -> str:
        """Real path of <root>/bus/pci/devices/PCI (validated, present, under the root)."""
        link = self._join("bus", "pci", "devices", pci_addr)
        try:
            real = self._inside(link)
        except _OutsideRoot as exc:
            raise HostError(f"refusing PCI device {pci_addr}: {exc}") from None
        if not os.path.isdir(real):
            raise NotAvailable(f"PCI device {pci_addr} not found under {self.root}/bus/pci/devices")
        return real

    def _attr(self, dev_dir: str, name: str) -> str:
        """Real path of attribute `name` of a device dir (must stay under the root)."""
        return self._inside(os.path.join(dev_dir, name))

    # ----------------------------------------------------------------------------- reads
    def _read(self, path: str) -> Optional[str]:
        """Read a sysfs attribute; None when absent or when it resolves outside the root (a
        hostile or broken tree must not make us read arbitrary files)."""
        try:
            path = self._inside(path)
        except _OutsideRoot as exc:
            log.warning("ignoring attribute: %s", exc)
            return None
        try:
            with open(path, "r", encoding="ascii", errors="replace") as handle:
                return handle.read().strip()
        except OSError:
            return None

    def _read_int(self, path: str) -> Optional[int]:
        text = self._read(path)
        if text is None or not text.isdigit():  # the kernel prints these with %u / %d
            return None
        return int(text)

    def _read_driver(self, dev_dir: str) -> Optional[str]:
        """Basename of the device's `driver` link; None when unbound (or the link is bad)."""
        link = os.path.join(dev_dir, "driver")
        try:
            target = os.readlink(link)
            self._inside(link)
        except OSError:
            return None
        except _OutsideRoot as exc:
            log.warning("ignoring driver link: %s", exc)
            return None
        name = os.path.basename(target.rstrip("/"))
        return None if check_driver(name) else name

    def _read_ifname(self, dev_dir: str) -> Optional[str]:
        """The netdev under the device's net/ dir (first in name order), if any."""
        try:
            names = sorted(os.listdir(self._inside(os.path.join(dev_dir, "net"))))
        except OSError:
            return None
        except _OutsideRoot as exc:
            log.warning("ignoring netdev dir: %s", exc)
            return None
        for name in names:
            if check_ifname(name) is None:
                return name
        return None

    def _read_drivers_with_retry(self, vfs: list[tuple[ObservedVf, str]]) -> None:
        """Fill VF drivers; re-read briefly missing links (a VF is driverless during a rebind)."""
        pending = []
        for vf, dev_dir in vfs:
            vf.driver = self._read_driver(dev_dir)
            if vf.driver is None:
                pending.append((vf, dev_dir))
        for _ in range(DRIVER_READ_RETRIES):
            if not pending:
                return
            time.sleep(DRIVER_READ_RETRY_INTERVAL_S)
            still = []
            for vf, dev_dir in pending:
                vf.driver = self._read_driver(dev_dir)
                if vf.driver is None and os.path.isdir(dev_dir):
                    still.append((vf, dev_dir))
            pending = still
        for vf, dev_dir in pending:
            if vf.ifname is None:  # a driver may have come and gone: refresh the netdev too
                vf.ifname = self._read_ifname(dev_dir)

    # ----------------------------------------------------------------------------- discovery
    def discover_pfs(self) -> dict[str, ObservedPf]:
        """Every PCI function with sriov_totalvfs (network class or not), by PCI address."""
        devices_dir = self._join("bus", "pci", "devices")
        try:
            names = sorted(os.listdir(devices_dir))
        except FileNotFoundError:
            # Every pass would repeat it (a VM or container without PCI): say it once.
            if not self._warned_no_pci:
                log.warning("no %s: no PCI devices to discover", devices_dir)
                self._warned_no_pci = True
            return {}
        except OSError as exc:
            raise HostError(f"cannot list {devices_dir}: {exc.strerror}") from None
        pfs: dict[str, ObservedPf] = {}
        for name in names:
            pci_addr = normalise_pci_addr(name)
            if pci_addr is None or pci_addr != name:
                continue
            try:
                dev_dir = self._inside(os.path.join(devices_dir, name))
            except _OutsideRoot as exc:
                log.warning("skipping PCI device: %s", exc)
                continue
            if not os.path.exists(os.path.join(dev_dir, "sriov_totalvfs")):
                continue
            pf = self._discover_pf(pci_addr, dev_dir)
            if pf is not None:
                pfs[pci_addr] = pf
        return pfs

    def _discover_pf(self, pci_addr: str, dev_dir: str) -> Optional[ObservedPf]:
        total = self._read_int(os.path.join(dev_dir, "sriov_totalvfs"))
        if total is None:
            if not os.path.isdir(dev_dir):
                return None  # vanished meanwhile (driver reload, hot unplug)
            log.warning("PF %s: unreadable sriov_totalvfs; treating as 0", pci_addr)
            total = 0
        num = self._read_int(os.path.join(dev_dir, "sriov_numvfs"))
        if num is None:
            log.warning("PF %s: unreadable sriov_numvfs; treating as 0", pci_addr)
            num = 0
        pf = ObservedPf(
            pci_addr=pci_addr,
            ifname=self._read_ifname(dev_dir),
            vendor_id=_hex_id(self._read(os.path.join(dev_dir, "vendor"))),
            device_id=_hex_id(self._read(os.path.join(dev_dir, "device"))),
            driver=self._read_driver(dev_dir),
            total_vfs=total,
            num_vfs=num,
            pci_class=_pci_class(self._read(os.path.join(dev_dir, "class"))),
            accepted_classes=self.pf_classes,
        )
        pf.vfs = self._discover_vfs(pf, dev_dir)
        return pf

    def _discover_vfs(self, pf: ObservedPf, dev_dir: str) -> list[ObservedVf]:
        try:
            entries = os.listdir(dev_dir)
        except OSError:
            return []
        found: list[tuple[ObservedVf, str]] = []
        for entry in entries:
            match = _VIRTFN_RE.match(entry)
            if not match:
                continue
            link = os.path.join(dev_dir, entry)
            try:
                vf_pci = normalise_pci_addr(os.path.basename(os.readlink(link)))
                vf_dir = self._inside(link)
            except OSError:
                continue  # removed while we looked
            except _OutsideRoot as exc:
                log.warning("PF %s: skipping %s: %s", pf.pci_addr, entry, exc)
                continue
            if vf_pci is None or not os.path.isdir(vf_dir):
                continue
            vf = ObservedVf(id=int(match.group(1)), pci_addr=vf_pci,
                            ifname=self._read_ifname(vf_dir))
            found.append((vf, vf_dir))
        self._read_drivers_with_retry(found)
        return sorted((vf for vf, _ in found), key=lambda vf: vf.id)

    def annotate_links(self, links: dict[str, ObservedLink]) -> None:
        """Fill pci_addr/vendor_id/device_id/driver of links whose netdev has a PCI device."""
        for ifname, link in links.items():
            if check_ifname(ifname) is not None:
                continue
            device_link = self._join("class", "net", ifname, "device")
            if not os.path.lexists(device_link):
                continue  # virtual device (lo, veth, bridge, VLAN) or not in this sysfs
            try:
                dev_dir = self._inside(device_link)
            except _OutsideRoot as exc:
                log.warning("link %s: ignoring PCI device: %s", ifname, exc)
                continue
            pci_addr = normalise_pci_addr(os.path.basename(dev_dir))
            if pci_addr is None or not os.path.exists(os.path.join(dev_dir, "vendor")):
                continue  # not PCI (USB, platform device)
            link.pci_addr = pci_addr
            link.vendor_id = _hex_id(self._read(os.path.join(dev_dir, "vendor")))
            link.device_id = _hex_id(self._read(os.path.join(dev_dir, "device")))
            link.driver = self._read_driver(dev_dir)

    def driver_available(self, driver: str) -> bool:
        """Is <root>/bus/pci/drivers/DRIVER there (the module loaded)?"""
        require(check_driver, driver, "vfDriver")
        path = self._join("bus", "pci", "drivers", driver)
        try:
            return os.path.isdir(self._inside(path))
        except _OutsideRoot as exc:
            log.warning("driver %s: %s", driver, exc)
            return False

    # ----------------------------------------------------------------------------- writes
    def _write(self, path: str, text: str) -> None:
        """One write(2) of `text` to `path`, bounded by write_timeout_s (docs/pitfalls.md 24).

        Raises OSError for the kernel's refusal (callers map errno) and HostTimeout when the write
        does not return in time. The worker is a daemon thread: if the driver never answers it
        stays blocked, and we refuse to stack another write on the same file meanwhile."""
        with self._stuck_lock:
            for stuck_path, thread in list(self._stuck.items()):
                if not thread.is_alive():
                    del self._stuck[stuck_path]
            if path in self._stuck:
                raise HostTimeout(f"an earlier write to {path} is still blocked: the driver looks "
                                  "hung; check dmesg (a reboot or driver reload may be needed)")
            if len(self._stuck) >= MAX_STUCK_WRITES:
                raise HostTimeout(f"{len(self._stuck)} sysfs writes under {self.root} are still "
                                  "blocked: refusing more until the host recovers; check dmesg")
        data = text.encode("ascii")
        outcome: dict[str, object] = {}
        done = threading.Event()

        def work() -> None:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    written = os.write(fd, data)
                finally:
                    os.close(fd)
                if written != len(data):
                    outcome["error"] = OSError(errno.EIO, f"short write ({written} of {len(data)})")
            except OSError as exc:
                outcome["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name=f"sysfs-write:{os.path.basename(path)}",
                                  daemon=True)
        worker.start()
        if not done.wait(self._write_timeout_s):
            with self._stuck_lock:
                self._stuck[path] = worker
            raise HostTimeout(f"writing {text.strip()!r} to {path} did not finish within "
                              f"{self._write_timeout_s:g} s: the driver looks hung; check dmesg "
                              "(the write may still complete later)")
        error = outcome.get("error")
        if error is not None:
            raise error  # type: ignore[misc]

    def _numvfs_error(self, exc: OSError, *, pf: str, num_vfs: int,
                      total: Optional[int]) -> HostError:
        """A message for the person who must act, per errno (docs/pitfalls.md 23 and 29)."""
        code = exc.errno
        what = f"PF {pf}: cannot set sriov_numvfs to {num_vfs}"
        if code == errno.EBUSY:
            return HostError(f"{what}: the kernel says busy (EBUSY): VFs are already enabled or "
                             "still in use; they must be set to 0 first (the agent does this when "
                             "the spec changes) and nothing may hold them")
        if code == errno.ERANGE:
            limit = f" ({total})" if total is not None else ""
            return HostError(f"{what}: more than the PF supports: sriov_totalvfs{limit} (ERANGE); "
                             "lower numVfs")
        if code == errno.ENOSPC:
            return HostError(f"{what}: the PF is out of resources (ENOSPC: interrupt vectors, "
                             "PCI bus numbers or queues); lower numVfs, or enable SR-IOV/VT-d in "
                             "the BIOS or boot with pci=realloc")
        if code == errno.ENOENT:
            return HostError(f"{what}: no driver is bound to the PF, or its driver cannot do "
                             "SR-IOV (ENOENT); load and bind the PF driver")
        if code == errno.EROFS:
            return HostError(f"{what}: sysfs at {self.root} is read-only (EROFS), as in an "
                             "unprivileged container; run the agent privileged with /sys mounted "
                             "read-write")
        if code == errno.EINVAL:
            return HostError(f"{what}: the PF driver rejected the value (EINVAL); check dmesg")
        if code in (errno.EPERM, errno.EACCES):
            return HostError(f"{what}: permission denied ({errno.errorcode[code]}); the agent "
                             "must run as root with CAP_SYS_ADMIN (a privileged pod)")
        name = errno.errorcode.get(code, str(code))
        return HostError(f"{what}: {exc.strerror or exc} ({name}); check dmesg")

    def _write_error(self, exc: OSError, what: str) -> HostError:
        code = exc.errno
        if code == errno.EROFS:
            return HostError(f"{what}: sysfs at {self.root} is read-only (EROFS), as in an "
                             "unprivileged container; run the agent privileged with /sys mounted "
                             "read-write")
        if code in (errno.EPERM, errno.EACCES):
            return HostError(f"{what}: permission denied; the agent must run as root (privileged)")
        name = errno.errorcode.get(code, str(code))
        return HostError(f"{what}: {exc.strerror or exc} ({name}); check dmesg")

    def set_num_vfs(self, pf_pci_addr: str, num_vfs: int) -> int:
        """Write sriov_numvfs as plain decimal (0 first between two non-zero counts); read back
        and return what the kernel enabled, which may be fewer than asked."""
        pci = _check_pci(pf_pci_addr, "pfPciAddr")
        require(lambda v: check_int_range(v, 0, NUMVFS_MAX), num_vfs, "numVfs")
        dev_dir = self._device_dir(pci)
        label = self._pf_label(pci, dev_dir)
        try:
            path = self._attr(dev_dir, "sriov_numvfs")
        except _OutsideRoot as exc:
            raise HostError(f"PF {label}: {exc}") from None
        if not os.path.exists(path):
            raise NotAvailable(f"PCI device {label} is not SR-IOV capable (no sriov_numvfs)")
        current = self._read_int(path)
        if current is None:
            raise HostError(f"PF {label}: cannot read sriov_numvfs")
        if current == num_vfs:
            return current
        total = self._read_int(os.path.join(dev_dir, "sriov_totalvfs"))
        if current and num_vfs:
            # docs/pitfalls.md 22: the kernel refuses non-zero -> non-zero with EBUSY.
            log.warning("PF %s: changing %d -> %d VFs goes through 0: the existing VFs are "
                        "destroyed", label, current, num_vfs)
            self._write_num_vfs(path, 0, label=label, total=total, target=num_vfs)
        self._write_num_vfs(path, num_vfs, label=label, total=total, target=num_vfs)
        enabled = self._read_int(path)
        if enabled is None:
            raise HostError(f"PF {label}: cannot read sriov_numvfs back after writing {num_vfs}")
        if enabled != num_vfs:
            log.warning("PF %s: asked for %d VFs, the driver enabled %d", label, num_vfs, enabled)
        return enabled

    def _write_num_vfs(self, path: str, num_vfs: int, *, label: str, total: Optional[int],
                       target: int) -> None:
        step = f" (on the way to {target})" if num_vfs != target else ""
        try:
            self._write(path, str(int(num_vfs)))  # docs/pitfalls.md 21: decimal, never "010"
        except HostTimeout as exc:
            raise HostTimeout(f"PF {label}{step}: {exc}") from None
        except OSError as exc:
            raise self._numvfs_error(exc, pf=label + step, num_vfs=num_vfs, total=total) from None

    def _pf_label(self, pci: str, dev_dir: str) -> str:
        ifname = self._read_ifname(dev_dir)
        return f"{pci} ({ifname})" if ifname else pci

    def wait_for_vfs(self, pf_pci_addr: str, num_vfs: int,
                     timeout_s: Optional[float] = None) -> ObservedPf:
        """Wait until `num_vfs` virtfnN links exist, each VF's driver link is readable and every
        network VF bound to a netdev driver has its netdev. Bounded: HostTimeout after timeout_s
        (default vf_wait_timeout_s). Returns the PF as discovered at that moment."""
        pci = _check_pci(pf_pci_addr, "pfPciAddr")
        require(lambda v: check_int_range(v, 0, NUMVFS_MAX), num_vfs, "numVfs")
        timeout = self._vf_wait_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        interval = VF_POLL_INITIAL_INTERVAL_S
        while True:
            dev_dir = self._device_dir(pci)
            pf = self._discover_pf(pci, dev_dir)
            if pf is None:
                raise NotAvailable(f"PF {pci} vanished while waiting for its VFs")
            waiting = self._vfs_not_ready(pf, num_vfs)
            if not waiting:
                return pf
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                label = f"{pci} ({pf.ifname})" if pf.ifname else pci
                raise HostTimeout(f"PF {label}: {len(pf.vfs)} of {num_vfs} VFs present after "
                                  f"{timeout:g} s; still waiting for: {'; '.join(waiting[:5])}")
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, VF_POLL_MAX_INTERVAL_S)

    def _vfs_not_ready(self, pf: ObservedPf, num_vfs: int) -> list[str]:
        waiting = []
        ids = {vf.id for vf in pf.vfs}
        for vf_id in range(num_vfs):
            if vf_id not in ids:
                waiting.append(f"virtfn{vf_id}")
        for vf in pf.vfs:
            if vf.id >= num_vfs:
                waiting.append(f"virtfn{vf.id} to go away")
            elif vf.driver and vf.driver not in NON_NETDEV_DRIVERS and vf.ifname is None:
                try:
                    vf_dir = self._device_dir(vf.pci_addr)
                except (HostError, NotAvailable):
                    waiting.append(f"VF {vf.pci_addr}")
                    continue
                pci_class = self._read(os.path.join(vf_dir, "class")) or ""
                if pci_class.startswith(NETWORK_CLASS_PREFIX):  # only network VFs get a netdev
                    waiting.append(f"netdev of VF {vf.pci_addr} ({vf.driver})")
        return waiting

    def bind_vf_driver(self, vf_pci_addr: str, driver: str) -> None:
        """driver_override + unbind + drivers_probe; verify the driver link (bounded).

        No-op when already bound to `driver`. On failure the override is cleared again so the
        kernel's own binding can return, and HostError says what the VF is bound to now."""
        pci = _check_pci(vf_pci_addr, "vfPciAddr")
        require(check_driver, driver, "vfDriver")
        if not self.driver_available(driver):
            raise NotAvailable(f"driver {driver} is not loaded on this host (no "
                               f"{self.root}/bus/pci/drivers/{driver}); load its module or choose "
                               "another vfDriver")
        dev_dir = self._device_dir(pci)
        current = self._read_driver_retrying(dev_dir)
        if current == driver:
            return
        what = f"VF {pci}: cannot bind to {driver}"
        try:
            override = self._attr(dev_dir, "driver_override")
            probe = self._inside(self._join("bus", "pci", "drivers_probe"))
            unbind = (self._inside(self._join("bus", "pci", "drivers", current, "unbind"))
                      if current else None)
        except _OutsideRoot as exc:
            raise HostError(f"{what}: {exc}") from None
        log.info("VF %s: binding %s -> %s", pci, current or "(no driver)", driver)
        try:
            self._write(override, driver)
            if unbind is not None:
                try:
                    self._write(unbind, pci)
                except OSError as exc:
                    if exc.errno != errno.ENODEV:  # ENODEV: unbound meanwhile, which is fine
                        raise
            self._write(probe, pci)
        except HostTimeout as exc:
            raise HostTimeout(f"{what}: {exc}") from None
        except OSError as exc:
            raise self._write_error(exc, what) from None
        if self._wait_for_driver(dev_dir, driver):
            return
        now = self._read_driver(dev_dir)
        self._clear_override_and_reprobe(pci, override, probe)
        raise HostError(f"{what}: after driver_override/unbind/drivers_probe the VF is bound to "
                        f"{now or 'no driver'} (waited {self._write_timeout_s:g} s); the driver "
                        "may not support this device: check dmesg")

    def _read_driver_retrying(self, dev_dir: str) -> Optional[str]:
        driver = self._read_driver(dev_dir)
        for _ in range(DRIVER_READ_RETRIES):
            if driver is not None:
                break
            time.sleep(DRIVER_READ_RETRY_INTERVAL_S)
            driver = self._read_driver(dev_dir)
        return driver

    def _wait_for_driver(self, dev_dir: str, driver: str) -> bool:
        deadline = time.monotonic() + self._write_timeout_s
        while True:
            if self._read_driver(dev_dir) == driver:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(BIND_POLL_INTERVAL_S, remaining))

    def _clear_override_and_reprobe(self, pci: str, override: str, probe: str) -> None:
        try:
            self._write(override, "\n")
            self._write(probe, pci)
        except (OSError, HostError) as exc:
            log.warning("VF %s: could not clear driver_override after a failed bind: %s", pci, exc)

    def clear_driver_override(self, vf_pci_addr: str) -> None:
        """Clear a VF's driver_override with "\\n" (never a NUL byte, docs/pitfalls.md 27). The binding
        itself is left as it is; the next probe follows the kernel's own matching."""
        pci = _check_pci(vf_pci_addr, "vfPciAddr")
        dev_dir = self._device_dir(pci)
        what = f"VF {pci}: cannot clear driver_override"
        try:
            self._write(self._attr(dev_dir, "driver_override"), "\n")
        except _OutsideRoot as exc:
            raise HostError(f"{what}: {exc}") from None
        except HostTimeout as exc:
            raise HostTimeout(f"{what}: {exc}") from None
        except OSError as exc:
            raise self._write_error(exc, what) from None
