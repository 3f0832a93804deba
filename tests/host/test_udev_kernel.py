"""The udev watcher on a real SR-IOV PF: `sriov_numvfs` written behind the agent's back is
reported through real kernel uevents. Only the full-kernel VM tier has a PF (an emulated one);
everywhere else the test skips and says why."""
from __future__ import annotations

import glob
import os
import threading

import pytest

from plumber_agent.host.udev import PyudevSource, SriovUdevWatcher, open_pyudev_monitor
from tests.helpers.wait import wait_for

UDEV_DEADLINE_S = 10.0
"""Bound on a uevent reaching the watcher (generous: the VM runs under TCG on 2 busy cores)."""
PCI_DEVICES = "/sys/bus/pci/devices"


def _writable_pf() -> tuple[str, str]:
    """(PCI address, sysfs dir) of a PF whose sriov_numvfs can be written, or skip."""
    candidates = sorted(glob.glob(os.path.join(PCI_DEVICES, "*", "sriov_totalvfs")))
    if not candidates:
        pytest.skip(f"no SR-IOV PF here (no {PCI_DEVICES}/*/sriov_totalvfs); the full-kernel "
                    "VM tier provides one")
    for total_path in candidates:
        dev_dir = os.path.dirname(total_path)
        with open(total_path) as fh:
            total = int(fh.read().strip() or 0)
        if total < 1 or not os.path.exists(os.path.join(dev_dir, "driver")):
            continue  # no VFs possible, or no PF driver to create them
        if os.access(os.path.join(dev_dir, "sriov_numvfs"), os.W_OK):
            return os.path.basename(dev_dir), dev_dir
    pytest.skip(f"no SR-IOV PF with a driver and a writable sriov_numvfs among {candidates}")


def _read_numvfs(dev_dir: str) -> int:
    with open(os.path.join(dev_dir, "sriov_numvfs")) as fh:
        return int(fh.read().strip() or 0)


def _write_numvfs(dev_dir: str, count: int) -> None:
    with open(os.path.join(dev_dir, "sriov_numvfs"), "w") as fh:
        fh.write(str(count))


def _vf_addresses(dev_dir: str) -> set[str]:
    return {os.path.basename(os.readlink(link))
            for link in glob.glob(os.path.join(dev_dir, "virtfn*"))}


@pytest.mark.privileged
@pytest.mark.fullkernel
def test_numvfs_written_behind_the_agents_back_is_reported():
    pf, dev_dir = _writable_pf()
    original = _read_numvfs(dev_dir)
    if original:
        _write_numvfs(dev_dir, 0)  # start from no VFs, restored below
    seen: list[str] = []
    opened = threading.Event()

    def open_monitor():
        monitor = open_pyudev_monitor()
        opened.set()
        return monitor

    stop = threading.Event()
    watcher = SriovUdevWatcher(PyudevSource(open_monitor=open_monitor), seen.append,
                               stop_event=stop)
    thread = threading.Thread(target=watcher.run, name="udev-kernel-test")
    thread.start()
    try:
        assert opened.wait(UDEV_DEADLINE_S), "the udev monitor never opened"
        _write_numvfs(dev_dir, 1)
        vfs = _vf_addresses(dev_dir)
        assert vfs, f"PF {pf}: no virtfn link after writing sriov_numvfs 1"

        def reported(suffixes: tuple[str, ...]) -> bool:
            return any(text.startswith(f"PCI SR-IOV VF {vf} ") and text.endswith(suffixes)
                       for text in list(seen) for vf in vfs)
        wait_for(lambda: reported(("add", "change", "bind")), timeout_s=UDEV_DEADLINE_S,
                 on_timeout=lambda: repr(seen), what="uevents of the new VF")
        _write_numvfs(dev_dir, 0)
        wait_for(lambda: reported(("removed",)), timeout_s=UDEV_DEADLINE_S,
                 on_timeout=lambda: repr(seen), what="the VF's removal reported")
        assert watcher.delivered >= 2
    finally:
        stop.set()
        thread.join(UDEV_DEADLINE_S)
        if _read_numvfs(dev_dir) != original:
            if _read_numvfs(dev_dir):
                _write_numvfs(dev_dir, 0)
            _write_numvfs(dev_dir, original)
    assert not thread.is_alive()
