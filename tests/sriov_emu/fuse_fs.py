"""Serve a KernelSysfs through FUSE so a separate process (the agent) sees it as a real sysfs.

Why FUSE and not a directory of files: the agent must meet errnos from write(2) (EBUSY, ERANGE,
ENOSPC, EROFS...), a write that blocks, and files whose content changes under it; only a live
filesystem can answer a syscall like the kernel does. Mounted with direct_io and zero attribute /
entry / negative timeouts so every read and lookup reaches us (sysfs is never cached either).

A small control directory `.emu/` sits beside bus/ class/ devices/:
  .emu/ready    "1" once serving (the launcher waits for it)
  .emu/faults   read: the knobs as JSON; write: a JSON object of knobs to change (null = default)
  .emu/writes   read: every sysfs write so far as JSON ({path, attr, data, result}); write: clear
  .emu/state    read: PF/VF/driver/netdev summary as JSON (for test diagnostics)
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from typing import Optional

from tests.sriov_emu.kernel import KernelSysfs
from tests.sriov_emu.tree import RO, RW, DirNode, FileNode, LinkNode

try:  # fusepy raises OSError when libfuse.so.2 is missing
    from fuse import FUSE, FuseOSError, Operations
    FUSE_IMPORT_ERROR: Optional[str] = None
except (ImportError, OSError, EnvironmentError) as exc:  # pragma: no cover - depends on host
    FUSE = None  # type: ignore[assignment]
    Operations = object  # type: ignore[assignment,misc]
    FUSE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

    class FuseOSError(OSError):  # type: ignore[no-redef]
        def __init__(self, code):
            super().__init__(code, os.strerror(code))

CONTROL_DIR = ".emu"
SYSFS_FILE_SIZE = 4096  # what sysfs reports for every attribute


def _err(code: int) -> OSError:
    return FuseOSError(code)


class EmulatedSysfsFs(Operations):  # type: ignore[misc,valid-type]
    """fusepy Operations over a KernelSysfs plus the .emu control directory."""

    use_ns = True

    def __init__(self, model: KernelSysfs):
        self.model = model
        self._start_ns = time.time_ns()
        self._fh_lock = threading.Lock()
        self._next_fh = 1
        self._snapshots: dict[int, bytes] = {}

    # --------------------------------------------------------------------- nodes
    def _control(self, parts: list[str]):
        if len(parts) == 1:
            return DirNode(["faults", "ready", "state", "writes"])
        if len(parts) != 2:
            return None
        name = parts[1]
        if name == "ready":
            return FileNode(lambda: "1\n", None, RO, "ready")
        if name == "faults":
            return FileNode(self.model.knobs_json, self._store_faults, RW, "faults")
        if name == "writes":
            return FileNode(self._writes_json, self._clear_writes, RW, "writes")
        if name == "state":
            return FileNode(self._state_json, None, RO, "state")
        return None

    def _node(self, path: str):
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == CONTROL_DIR:
            node = self._control(parts)
        else:
            node = self.model.lookup(path)
            if isinstance(node, DirNode) and not parts:
                node = DirNode(node.names + [CONTROL_DIR])
        if node is None:
            raise _err(errno.ENOENT)
        return node

    @staticmethod
    def _is_control(path: str) -> bool:
        return path.strip("/").split("/")[0] == CONTROL_DIR

    def _store_faults(self, data: bytes) -> None:
        try:
            self.model.set_knobs(json.loads(data.decode() or "{}"))
        except (ValueError, UnicodeDecodeError):
            raise _err(errno.EINVAL) from None

    def _writes_json(self) -> str:
        with self.model.lock:
            return json.dumps(self.model.write_log) + "\n"

    def _clear_writes(self, data: bytes) -> None:
        with self.model.lock:
            self.model.write_log.clear()

    def _state_json(self) -> str:
        with self.model.lock:
            state = {
                "devices": {a: {"driver": d.driver, "override": d.driver_override,
                                "netdev": d.netdev, "num_vfs": d.num_vfs,
                                "virtfn": d.virtfn, "physfn": d.physfn}
                            for a, d in self.model.devices.items()},
                "netdevs": sorted(self.model.netdevs),
                "drivers": sorted(self.model.drivers),
            }
            return json.dumps(state, sort_keys=True) + "\n"

    # --------------------------------------------------------------------- reads
    def getattr(self, path, fh=None):
        node = self._node(path)
        now = self._start_ns
        st = {"st_uid": 0, "st_gid": 0, "st_atime": now, "st_mtime": now, "st_ctime": now}
        if isinstance(node, DirNode):
            st.update(st_mode=stat.S_IFDIR | node.mode, st_nlink=2, st_size=0)
        elif isinstance(node, LinkNode):
            st.update(st_mode=stat.S_IFLNK | 0o777, st_nlink=1, st_size=len(node.target))
        else:
            st.update(st_mode=stat.S_IFREG | node.mode, st_nlink=1, st_size=SYSFS_FILE_SIZE)
        return st

    def readdir(self, path, fh):
        node = self._node(path)
        if not isinstance(node, DirNode):
            raise _err(errno.ENOTDIR)
        return [".", ".."] + list(node.names)

    def readlink(self, path):
        node = self._node(path)
        if not isinstance(node, LinkNode):
            raise _err(errno.EINVAL)
        return node.target

    def open(self, path, flags):
        node = self._node(path)
        if not isinstance(node, FileNode):
            raise _err(errno.EISDIR)
        access = flags & os.O_ACCMODE
        if access in (os.O_WRONLY, os.O_RDWR):
            if not self._is_control(path):
                self.model.check_open_for_write()  # EROFS when /sys is read-only
            if node.store is None or not node.mode & 0o200:
                raise _err(errno.EACCES)  # kernfs: no store op -> EACCES
        if access in (os.O_RDONLY, os.O_RDWR) and not node.mode & 0o444:
            raise _err(errno.EACCES)
        with self._fh_lock:
            fh = self._next_fh
            self._next_fh += 1
        return fh

    def read(self, path, size, offset, fh):
        node = self._node(path)
        if not isinstance(node, FileNode):
            raise _err(errno.EISDIR)
        with self._fh_lock:
            data = self._snapshots.get(fh) if offset else None
        if data is None:  # sysfs fills its buffer at offset 0, later reads continue it
            data = node.read().encode("ascii", errors="replace")
            with self._fh_lock:
                self._snapshots[fh] = data
        return data[offset:offset + size]

    def release(self, path, fh):
        with self._fh_lock:
            self._snapshots.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    # --------------------------------------------------------------------- writes
    def write(self, path, data, offset, fh):
        node = self._node(path)
        if not isinstance(node, FileNode):
            raise _err(errno.EISDIR)
        if self._is_control(path):
            if node.store is None:
                raise _err(errno.EACCES)
            node.store(data)
            return len(data)
        return self.model.write(path, node, data)

    def truncate(self, path, length, fh=None):
        node = self._node(path)  # O_TRUNC on an attribute is harmless (shell `echo 1 > f`)
        if not isinstance(node, FileNode) or node.store is None:
            raise _err(errno.EACCES)
        return 0

    def create(self, path, mode, fi=None):
        raise _err(errno.EACCES)

    def _refuse(self, *args, **kwargs):
        raise _err(errno.EPERM)

    mkdir = rmdir = unlink = rename = symlink = link = mknod = chmod = chown = _refuse

    def utimens(self, path, times=None):
        return 0

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


def mount(model: KernelSysfs, mountpoint: str) -> None:
    """Serve `model` at `mountpoint` until unmounted or signalled (blocks; multithreaded)."""
    if FUSE is None:
        raise RuntimeError(f"fusepy cannot load libfuse: {FUSE_IMPORT_ERROR}")
    FUSE(EmulatedSysfsFs(model), mountpoint, foreground=True, nothreads=False,
         direct_io=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
         fsname="sriov-emu", subtype="sriovemu")
