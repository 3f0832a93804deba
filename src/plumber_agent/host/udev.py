"""SR-IOV and PCI changes from udev, so SR-IOV drift is repaired within a second.

A `sriov_numvfs` changed behind the agent's back, a VF rebound to another driver or a PF that
appears (hot-plug, driver reload) sends no rtnetlink message the netlink monitor could see; the
kernel announces them as uevents of the PCI devices instead (add/remove of the VF functions,
bind/unbind when a driver takes or releases one, change on the PF). This module listens to them
and hands a short description of each relevant one to a callback; the agent turns it into a
debounced reconcile pass, exactly like a netlink event (agent.py HostEvents). A VF's `add`
uevent is sent before the kernel links it to its PF (`physfn`); the kernel then sends a `change`
for it, which is the one recognised.

Two parts, so tests can script the events:
* a `UdevSource` yields `UdevEvent(action, subsystem, sys_path)` until a stop event is set.
  `PyudevSource` is the real one: a pyudev netlink monitor in the caller's thread that polls in
  short slices (it never blocks shutdown), and survives monitor errors by logging, backing off
  and opening a new monitor. Lost uevents (ENOBUFS) become one `LOST_ACTION` event.
* `SriovUdevWatcher` keeps only the events about SR-IOV functions: a PCI device with
  `sriov_totalvfs` (a PF) or a `physfn` link (a VF), or any event about one it saw before (the
  links and the sysfs directory of a device being removed go before its last events, so roles
  are remembered, from a start-up scan and from earlier events, until the device's `remove`). Everything else on the PCI bus is ignored and counted.

Not for an emulated sysfs tree (`--sysfs-root` elsewhere than /sys): libudev reports the real
host's devices, which are not the ones the agent manages then (see `udev_wanted`).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

log = logging.getLogger(__name__)

HOST_SYSFS_ROOT = "/sys"
UDEVD_CONTROL_PATH = "/run/udev/control"
"""Exists while systemd-udevd runs: then its (post-rules) events are used, else the kernel's."""
UDEV_SUBSYSTEMS = ("pci",)
POLL_INTERVAL_S = 0.2
"""How long one wait for a uevent lasts: bounds how late the source notices stop_event."""
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # creating 64 VFs is a few hundred uevents at once
LOST_ACTION = "lost"
LOST_EVENTS_DESCRIPTION = "udev events were lost (receive buffer overflow): re-read everything"
PCI_DEVICES_DIR = os.path.join("bus", "pci", "devices")


@dataclass(frozen=True)
class UdevEvent:
    action: str     # add, remove, change, bind, unbind, move, ... or LOST_ACTION
    subsystem: str  # pci, net, ...
    sys_path: str   # the device's sysfs directory, e.g. /sys/devices/pci0000:00/0000:00:03.0


class UdevSource(Protocol):
    def events(self, stop_event: threading.Event) -> Iterator[UdevEvent]:
        """Yield events until stop_event is set (then return within a poll interval)."""


def udev_wanted(sysfs_root: str) -> Optional[str]:
    """None when udev events describe the devices the agent manages, else why not."""
    if os.path.realpath(sysfs_root) != HOST_SYSFS_ROOT:
        return (f"--sysfs-root {sysfs_root} is not the host's {HOST_SYSFS_ROOT}: udev would "
                "report the real host's devices, not that tree's")
    return None


def default_netlink_source() -> str:
    """'udev' (events after udevd applied its rules, such as VF netdev renames) when udevd
    runs, else 'kernel' (raw uevents; nothing else sends them without udevd)."""
    return "udev" if os.path.exists(UDEVD_CONTROL_PATH) else "kernel"


def open_pyudev_monitor(subsystems: tuple[str, ...] = UDEV_SUBSYSTEMS, *,
                        netlink_source: Optional[str] = None):
    """A started pyudev Monitor for `subsystems` (in the calling thread's network namespace)."""
    import pyudev  # imported here: only the real source needs libudev

    monitor = pyudev.Monitor.from_netlink(pyudev.Context(),
                                          source=netlink_source or default_netlink_source())
    for subsystem in subsystems:
        monitor.filter_by(subsystem)
    try:
        monitor.set_receive_buffer_size(RECEIVE_BUFFER_BYTES)
    except (OSError, ValueError) as exc:  # no CAP_NET_ADMIN: the default buffer still works
        log.debug("udev: keeping the default receive buffer: %s", exc)
    monitor.start()
    return monitor


class PyudevSource:
    """The real UdevSource. `open_monitor` (a seam) returns a started pyudev Monitor."""

    def __init__(self, subsystems: tuple[str, ...] = UDEV_SUBSYSTEMS, *,
                 open_monitor: Optional[Callable[[], object]] = None,
                 poll_interval_s: float = POLL_INTERVAL_S,
                 retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S):
        self.open_monitor = open_monitor or (lambda: open_pyudev_monitor(subsystems))
        self.poll_interval_s = poll_interval_s
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self.errors = 0  # monitor failures survived (opening or receiving)

    def events(self, stop_event: threading.Event) -> Iterator[UdevEvent]:
        delay_s = self.retry_first_s
        while not stop_event.is_set():
            try:
                monitor = self.open_monitor()
            except Exception as exc:  # noqa: BLE001 - no libudev, no permission, ...: retry
                self.errors += 1
                log.warning("udev: cannot open a monitor (%s); retrying in %.1f s", exc, delay_s)
                stop_event.wait(delay_s)
                delay_s = min(delay_s * 2, self.retry_max_s)
                continue
            try:
                while not stop_event.is_set():
                    try:
                        device = monitor.poll(timeout=self.poll_interval_s)
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            raise
                        yield UdevEvent(LOST_ACTION, "", "")
                        continue
                    if device is None:
                        continue
                    delay_s = self.retry_first_s  # it works again
                    yield UdevEvent(device.action or "", device.subsystem or "",
                                    device.sys_path)
            except Exception as exc:  # noqa: BLE001 - a broken monitor is replaced, not fatal
                self.errors += 1
                log.warning("udev: monitor failed (%s); reopening in %.1f s", exc, delay_s)
                stop_event.wait(delay_s)
                delay_s = min(delay_s * 2, self.retry_max_s)
            finally:
                monitor = None  # pyudev closes the socket when the Monitor is collected


class SriovUdevWatcher:
    """Calls `callback(description)` for every uevent about an SR-IOV PF or VF until
    `stop_event` is set; `run()` is meant for its own thread. A callback that raises is logged
    and the watcher goes on. `delivered` and `ignored` count the events (and feed `metrics`)."""

    def __init__(self, source: UdevSource, callback: Callable[[str], None], *,
                 stop_event: threading.Event, sysfs_root: str = HOST_SYSFS_ROOT,
                 metrics=None):
        self.source = source
        self.callback = callback
        self.stop_event = stop_event
        self.sysfs_root = sysfs_root
        self.metrics = metrics
        self.delivered = 0
        self.ignored = 0
        self._known: dict[str, str] = {}  # PCI address -> role, of SR-IOV functions seen

    def run(self) -> None:
        self._known = self._scan()
        for event in self.source.events(self.stop_event):
            description = self.describe(event)
            if description is None:
                self.ignored += 1
                self._count("plumber_udev_events_ignored_total")
                continue
            try:
                self.callback(description)
            except Exception:  # the watcher must outlive a buggy callback
                log.exception("udev watcher callback failed for %r", description)
            self.delivered += 1
            self._count("plumber_udev_events_total")

    def describe(self, event: UdevEvent) -> Optional[str]:
        """A short description of a relevant event, None for one to ignore."""
        if event.action == LOST_ACTION:
            return LOST_EVENTS_DESCRIPTION
        if event.subsystem != "pci" or not event.sys_path:
            return None
        address = os.path.basename(event.sys_path.rstrip("/"))
        if event.action == "remove":
            role = self._known.pop(address, None)
            return f"PCI {role} {address} removed" if role else None
        # A VF being removed loses its physfn link before its driver is unbound and the device
        # removed (drivers/pci/iov.c virtfn_remove): it stays known until its remove event.
        role = _sriov_role(event.sys_path) or self._known.get(address)
        if role is None:
            return None
        self._known[address] = role
        return f"PCI {role} {address} {event.action}"

    def _scan(self) -> dict[str, str]:
        devices = os.path.join(self.sysfs_root, PCI_DEVICES_DIR)
        try:
            names = os.listdir(devices)
        except OSError as exc:
            log.info("udev: cannot list %s (%s); removals of devices present now are not "
                     "recognised", devices, exc)
            return {}
        known = {}
        for name in names:
            role = _sriov_role(os.path.join(devices, name))
            if role:
                known[name] = role
        return known

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name)


def _sriov_role(device_dir: str) -> Optional[str]:
    if os.path.exists(os.path.join(device_dir, "sriov_totalvfs")):
        return "SR-IOV PF"
    if os.path.islink(os.path.join(device_dir, "physfn")):
        return "SR-IOV VF"
    return None


def udev_thread(*, sysfs_root: str, callback: Callable[[str], None],
                metrics=None) -> Optional[Callable[[threading.Event], None]]:
    """The body of the agent's udev thread (the real source), or None (logged) when udev
    events do not describe the managed devices (see udev_wanted)."""
    why_not = udev_wanted(sysfs_root)
    if why_not:
        log.info("udev events are off: %s; SR-IOV drift waits for the resync", why_not)
        return None

    def run(stop_event: threading.Event) -> None:
        SriovUdevWatcher(PyudevSource(), callback, stop_event=stop_event, metrics=metrics).run()
    return run
