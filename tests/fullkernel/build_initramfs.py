"""Build the boot artifacts of the full-kernel test VM from an unpacked Debian kernel package.

Why this exists: the CI kernel lacks 802.1Q, dummy, bonding and the OVS datapath, so the
fullkernel tests run under qemu with Debian's kernel. qemu boots fastest from the uncompressed
``vmlinux`` (PVH entry, no real-mode setup, no in-guest decompression under TCG), so we extract
it from the bzImage here (the logic of the kernel's ``scripts/extract-vmlinux``). The initramfs
is a busybox with just the modules the tests need, already ordered so dependencies load first;
it mounts the host's ``/`` over 9p under a tmpfs overlay and runs the job the host wrote into a
writable 9p share (see ``vm.py`` for the host side of that contract).

Written in Python (stdlib only) so CI needs no ``cpio``; ``modules.dep`` comes from ``depmod -b``
run by ``scripts/fetch-vm-kernel.sh`` because the .deb does not ship it.

Usage: python3 build_initramfs.py --kernel-root DIR --kernel-version VER --out-dir DIR
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import stat
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

#: Modules loaded at boot, in this order after their dependencies. 9p/virtio/overlay carry the
#: root filesystem; the rest are the kernel features the fullkernel tests exist for, plus the
#: link kinds the ordinary host tests use (built in on the CI kernel, modules on Debian's).
BOOT_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "8021q",
    "dummy",
    "bonding",
    # libcrc32c (under openvswitch) needs a crc32c implementation loaded first: a soft
    # dependency ("pre: crc32c") that modules.dep does not list.
    "crc32c_generic",
    "openvswitch",
    "veth",
    "macvlan",
    "bridge",
    "vxlan",
    "tun",
    "fuse",
    # The SR-IOV physical function of the VM (QEMU's NVMe, see vm.py) and the driver the SR-IOV
    # test binds its VFs to (pci-stub needs no IOMMU). crc-t10dif and crc64-rocksoft (under
    # nvme-core) have soft dependencies on these implementations, not listed in modules.dep.
    "crct10dif_generic",
    "crc64_rocksoft_generic",
    "nvme",
    "pci_stub",
)

#: Module parameters: without these, loading dummy/bonding creates dummy0/bond0 in the VM's
#: initial namespace, links no test asked for.
MODULE_PARAMS = {"dummy": "numdummies=0", "bonding": "max_bonds=0"}

BUSYBOX_PATH = Path("/bin/busybox")
VMLINUX_NAME = "vmlinux"
INITRAMFS_NAME = "initramfs.cpio"

#: Compressed-payload magics searched in the bzImage, as scripts/extract-vmlinux does.
_PAYLOAD_MAGICS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_ELF_MAGIC = b"\x7fELF"

#: PID 1 of the VM. Contract with vm.py: the job share (tag ``job``) holds ``job.env``
#: (JOB_DIR, WORKDIR assignments, shell-quoted by vm.py) and ``run.sh``; init writes the job's
#: merged stdout/stderr to ``output`` and its exit status to ``rc``, then powers off.
#: ``panic=-1`` on the kernel command line plus qemu ``-no-reboot`` make any init failure end
#: the VM at once instead of hanging until the host's timeout.
INIT_SCRIPT = r"""#!/bin/sh
export PATH=/bin
log() { echo "plumber-vm: $* (t=$(cut -d' ' -f1 /proc/uptime)s)"; }
# No rc file is written on this path: the host reports "VM exited without finishing" + console.
fail() { log "FAILED: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log "init started"
while read -r mod params; do
    # $params unquoted on purpose: zero or more key=value words.
    insmod "/modules/$mod" $params || log "insmod $mod FAILED"
done < /modules/load-order
log "modules loaded"
# hostroot: cache=loose makes python imports over 9p ~25% faster (measured: pyroute2 4.0 -> 3.2 s).
# It hides the host's /proc under the share, which is harmless: fresh proc/sys/dev/run are
# mounted over the overlay below. The job share stays cache=none so every write reaches the host.
P9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $P9,ro,cache=loose hostroot /lower || fail "mount hostroot"
mount -t 9p -o $P9,cache=none job /job || fail "mount job share"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "mount overlay"
. /job/job.env
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
# No fresh tmpfs on /tmp: the repository under test (and its editable install) may live there,
# as in a CI checkout; the overlay's tmpfs upper layer already keeps the host's /tmp unchanged.
mount -t tmpfs -o mode=0755 tmpfs $R/run
mkdir -p "$R$JOB_DIR"
mount --bind /job "$R$JOB_DIR"
hostname plumber-vm
# Loopback up: tests inside talk to servers on 127.0.0.1 (the fake API server).
chroot $R /sbin/ip link set lo up || fail "loopback"
log "job start"
chroot $R /bin/sh "$JOB_DIR/run.sh" > /job/output 2>&1 < /dev/null
echo $? > /job/rc
log "job done"
sync
poweroff -f
"""


class BuildError(Exception):
    """The kernel package does not contain what the VM needs."""


def extract_vmlinux(bzimage: Path) -> bytes:
    """Return the ELF kernel inside a bzImage (first payload that decompresses to an ELF)."""
    data = bzimage.read_bytes()
    for magic, kind in _PAYLOAD_MAGICS:
        start = data.find(magic)
        while start != -1:
            elf = _try_decompress(data[start:], kind)
            if elf is not None and elf.startswith(_ELF_MAGIC):
                return elf
            start = data.find(magic, start + 1)
    raise BuildError(f"no compressed ELF payload found in {bzimage}")


def _try_decompress(blob: bytes, kind: str) -> bytes | None:
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob)
        if kind == "gzip":
            return zlib.decompressobj(wbits=31).decompress(blob)
    except (lzma.LZMAError, zlib.error, EOFError):
        return None
    return None  # zstd: Debian's 6.1 uses xz; add a decompressor when a kernel needs it


def _norm(module: str) -> str:
    return module.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {module name: [relative path, dependency paths...]}."""
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        name = _norm(Path(path).name.split(".ko")[0])
        table[name] = [path.strip(), *deps.split()]
    return table


def resolve_load_order(table: dict[str, list[str]],
                       wanted: tuple[str, ...] | list[str]) -> list[str]:
    """Relative .ko paths for ``wanted`` with every dependency before its user, no repeats."""
    by_path = {paths[0]: name for name, paths in table.items()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in table:
            raise BuildError(f"module {name!r} is not in modules.dep (built in or missing?)")
        for dep_path in table[name][1:]:
            visit(by_path[dep_path], chain + (name,))
        seen.add(name)
        order.append(table[name][0])

    for module in wanted:
        visit(_norm(module), ())
    return order


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def write_newc(entries: list[_Entry]) -> bytes:
    """Serialise ``entries`` as an uncompressed newc cpio archive (the initramfs format)."""
    out = io.BytesIO()

    def pad4() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (
            ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0,
            entry.rdev[0], entry.rdev[1], len(name), 0,
        )
        out.write(b"070701" + b"".join(b"%08X" % value for value in fields))
        out.write(name)
        pad4()
        out.write(entry.data)
        pad4()
    return out.getvalue()


def build_initramfs(*, kernel_root: Path, kernel_version: str,
                    modules: tuple[str, ...] = BOOT_MODULES) -> bytes:
    """The initramfs image: busybox, ordered modules, /init (see INIT_SCRIPT)."""
    mod_dir = kernel_root / "lib" / "modules" / kernel_version
    dep_file = mod_dir / "modules.dep"
    if not dep_file.is_file():
        raise BuildError(f"{dep_file} missing: run depmod -b {kernel_root} {kernel_version}")
    order = resolve_load_order(parse_modules_dep(dep_file.read_text()), modules)
    if not BUSYBOX_PATH.is_file():
        raise BuildError(f"{BUSYBOX_PATH} missing: apt-get install busybox-static")

    dir_mode, file_mode, exe_mode = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [_Entry(d, dir_mode) for d in
               ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "job", "modules")]
    entries.append(_Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(_Entry("bin/busybox", exe_mode, BUSYBOX_PATH.read_bytes()))
    for applet in ("sh", "mount", "insmod", "mkdir", "cut", "chroot", "hostname", "poweroff",
                   "sync", "cat", "ls", "echo"):
        entries.append(_Entry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox"))
    lines = []
    for rel in order:
        flat = Path(rel).name
        lines.append(f"{flat} {MODULE_PARAMS.get(_norm(flat[:-3]), '')}".rstrip())
        entries.append(_Entry(f"modules/{flat}", file_mode, (mod_dir / rel).read_bytes()))
    entries.append(_Entry("modules/load-order", file_mode, ("\n".join(lines) + "\n").encode()))
    entries.append(_Entry("init", exe_mode, INIT_SCRIPT.encode()))
    return write_newc(entries)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-root", type=Path, required=True,
                        help="directory the linux-image .deb was unpacked into (dpkg-deb -x)")
    parser.add_argument("--kernel-version", required=True, help="e.g. 6.1.0-56-amd64")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        bzimage = args.kernel_root / "boot" / f"vmlinuz-{args.kernel_version}"
        vmlinux = extract_vmlinux(bzimage)
        initramfs = build_initramfs(kernel_root=args.kernel_root,
                                    kernel_version=args.kernel_version)
    except (BuildError, OSError) as exc:
        print(f"build_initramfs: {exc}", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out_dir / VMLINUX_NAME, vmlinux)
    _write_atomic(args.out_dir / INITRAMFS_NAME, initramfs)
    print(f"build_initramfs: {VMLINUX_NAME} {len(vmlinux)} bytes, "
          f"{INITRAMFS_NAME} {len(initramfs)} bytes in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
