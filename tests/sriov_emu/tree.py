"""The shape of a PCI/SR-IOV sysfs tree, as data and as a layout, for tests and the e2e harness.

Why: the SR-IOV driver must be tested against what the kernel really shows (vendor written as
"0x8086\\n", driver links three levels up into bus/pci/drivers, virtfnN/physfn links, netdevs under
the device's net/ dir, class/net links) without SR-IOV hardware. One model serves two purposes:

- `build_static_tree(dest, model)` writes the tree as plain files and relative symlinks (no FUSE,
  no root needed) for discovery tests;
- the FUSE emulator (kernel.py + fuse_fs.py) serves the same layout live and changes the state
  the way the kernel does when files are written.

`SysfsModel.lookup(path)` is the single source of the layout: a DirNode, FileNode or LinkNode for
a path relative to the sysfs root, or None. State changes here are instantaneous; the kernel-like
timing (asynchronous autoprobe and VF netdevs, udev renames, optionally late VFs) lives in
kernel.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

PCI_ROOT = "pci0000:00"
NETWORK_CLASS = "0x020000"
RO, RW, WO = 0o444, 0o644, 0o200


# --------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class PfSpec:
    """One PCI NIC function. total_vfs=0 means no SR-IOV capability (a plain NIC).

    driver=None: no driver bound (its module is not loaded). num_vfs: VFs enabled at start, each
    bound to vf_driver (if any) with its netdev already renamed to <ifname>v<N>."""

    pci_addr: str
    ifname: Optional[str]
    vendor: str = "8086"
    device: str = "1572"
    driver: Optional[str] = "i40e"
    total_vfs: int = 64
    vf_device: str = "154c"
    vf_driver: Optional[str] = "i40evf"
    vf_pci_base: str = "0000:02:0a.0"
    vf_stride: int = 1
    num_vfs: int = 0
    mac: Optional[str] = None

    def to_arg(self) -> str:
        """key=value,... as accepted by `python -m tests.sriov_emu --pf`."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={'' if value is None else value}")
        return ",".join(parts)

    @classmethod
    def from_arg(cls, text: str) -> "PfSpec":
        values: dict[str, object] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(f"--pf: bad item {item!r} (known keys: {', '.join(types)})")
            if key in ("total_vfs", "num_vfs", "vf_stride"):
                values[key] = int(value)
            else:
                values[key] = value or None
        if "pci_addr" not in values:
            raise ValueError("--pf needs pci_addr=")
        values.setdefault("ifname", None)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DriverSpec:
    """A loaded PCI driver: the (vendor, device) ids it matches, whether its devices get a
    netdev, and whether it implements sriov_configure (can enable VFs)."""

    name: str
    ids: tuple[tuple[str, str], ...] = ()
    netdev: bool = True
    sriov: bool = False


VFIO_PCI = DriverSpec("vfio-pci", ids=(), netdev=False)  # binds only through driver_override

SEED_PFS = (
    # The node in the seed README: eno1 (64 VFs possible, none enabled), eno2 (8 VFs, i40evf).
    PfSpec("0000:01:00.0", "eno1", mac="b4:96:91:70:19:38", vf_pci_base="0000:02:02.0"),
    PfSpec("0000:01:00.1", "eno2", mac="b4:96:91:70:19:39", vf_pci_base="0000:02:0a.0",
           num_vfs=8),
)
IXGBE_PFS = (
    # Intel X540 (8086:1528, ixgbe): 63 VFs each, VF 8086:1515 (ixgbevf); the two PFs' VFs
    # interleave (offset 0x80, stride 2), as on the real card.
    PfSpec("0000:03:00.0", "enp3s0f0", device="1528", driver="ixgbe", total_vfs=63,
           vf_device="1515", vf_driver="ixgbevf", vf_pci_base="0000:04:10.0", vf_stride=2),
    PfSpec("0000:03:00.1", "enp3s0f1", device="1528", driver="ixgbe", total_vfs=63,
           vf_device="1515", vf_driver="ixgbevf", vf_pci_base="0000:04:10.1", vf_stride=2),
)
LAB_EXTRA_PFS = (
    # A plain NIC without SR-IOV, and a ConnectX-5 whose driver (mlx5_core) is not loaded.
    PfSpec("0000:00:1f.6", "eno3", device="15b8", driver="e1000e", total_vfs=0),
    PfSpec("0000:05:00.0", None, vendor="15b3", device="1017", driver=None, total_vfs=16,
           vf_device="1018", vf_driver=None, vf_pci_base="0000:05:00.2"),
)
PRESETS: dict[str, tuple[PfSpec, ...]] = {
    "seed": SEED_PFS,
    "ixgbe": IXGBE_PFS,
    "lab": SEED_PFS + IXGBE_PFS + LAB_EXTRA_PFS,
    "empty": (),
}


def drivers_for(pfs) -> list[DriverSpec]:
    """The drivers a set of PFs implies: each PF driver (matching the PF id, SR-IOV capable),
    each VF driver (matching the VF id), and vfio-pci."""
    ids: dict[str, list[tuple[str, str]]] = {}
    sriov: set[str] = set()
    for pf in pfs:
        if pf.driver:
            ids.setdefault(pf.driver, []).append((pf.vendor, pf.device))
            if pf.total_vfs:
                sriov.add(pf.driver)
        if pf.vf_driver and pf.total_vfs:
            ids.setdefault(pf.vf_driver, []).append((pf.vendor, pf.vf_device))
    drivers = [DriverSpec(name, ids=tuple(dict.fromkeys(pairs)), sriov=name in sriov)
               for name, pairs in ids.items() if name != VFIO_PCI.name]
    drivers.append(VFIO_PCI)
    return drivers


def pci_offset(base: str, index: int, stride: int = 1) -> str:
    """The PCI address `index` functions (times stride) after `base`, carrying into the bus."""
    domain, bus, rest = base.split(":")
    dev, fn = rest.split(".")
    devfn = int(dev, 16) * 8 + int(fn) + index * stride
    bus_no = int(bus, 16) + devfn // 256
    devfn %= 256
    return f"{domain}:{bus_no:02x}:{devfn // 8:02x}.{devfn % 8}"


def _mac_for(seed: str) -> str:
    digest = hashlib.sha1(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


# --------------------------------------------------------------------------------- state
@dataclass
class PciDev:
    pci_addr: str
    vendor: str
    device: str
    class_code: str = NETWORK_CLASS
    driver: Optional[str] = None
    driver_override: Optional[str] = None
    netdev: Optional[str] = None  # current netdev name
    # PF only
    spec: Optional[PfSpec] = None
    total_vfs: int = 0
    num_vfs: int = 0
    virtfn: dict[int, str] = field(default_factory=dict)  # VF index -> VF PCI address (present)
    drivers_autoprobe: bool = True
    sriov_gen: int = 0  # bumped when SR-IOV is disabled: cancels pending VF creation
    # VF only
    physfn: Optional[str] = None
    vf_index: Optional[int] = None
    bind_gen: int = 0  # bumped on every bind/unbind: cancels pending probe/netdev/rename


@dataclass
class Netdev:
    ifname: str
    ifindex: int
    mac: str
    pci_addr: Optional[str] = None  # None: virtual (devices/virtual/net)
    mtu: int = 1500


@dataclass
class DirNode:
    names: list[str]
    mode: int = 0o755


@dataclass
class FileNode:
    read: Callable[[], str]
    store: Optional[Callable[[bytes], None]] = None
    mode: int = RO
    key: str = ""  # what the write log and the fault switches call this attribute


@dataclass
class LinkNode:
    target: str


Node = DirNode | FileNode | LinkNode


class SysfsModel:
    """PCI devices, drivers and netdevs, and the sysfs layout they show."""

    def __init__(self, pfs=(), drivers: Optional[list[DriverSpec]] = None):
        pfs = tuple(pfs)
        self.drivers: dict[str, DriverSpec] = {
            d.name: d for d in (drivers if drivers is not None else drivers_for(pfs))}
        self.devices: dict[str, PciDev] = {}
        self.netdevs: dict[str, Netdev] = {}
        self.bus_drivers_autoprobe = True
        self._next_ifindex = 1
        self._add_netdev("lo", mac="00:00:00:00:00:00", pci_addr=None)
        for spec in pfs:
            self.add_pf(spec)

    @classmethod
    def from_preset(cls, preset: str = "seed", extra_pfs=()) -> "SysfsModel":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        return cls(PRESETS[preset] + tuple(extra_pfs))

    # --------------------------------------------------------------------- mutations
    def add_pf(self, spec: PfSpec) -> PciDev:
        if spec.pci_addr in self.devices:
            raise ValueError(f"duplicate PCI address {spec.pci_addr}")
        dev = PciDev(spec.pci_addr, spec.vendor, spec.device, spec=spec,
                     total_vfs=spec.total_vfs)
        self.devices[dev.pci_addr] = dev
        if spec.driver and spec.driver in self.drivers:
            self.attach(dev, spec.driver)
        if spec.num_vfs:
            if not dev.driver:
                raise ValueError(f"{spec.pci_addr}: VFs need a PF driver")
            dev.num_vfs = spec.num_vfs
            for index in range(spec.num_vfs):
                vf = self.create_vf(dev, index)
                self.autoprobe_now(vf)
        return dev

    def vf_addr(self, pf: PciDev, index: int) -> str:
        assert pf.spec is not None
        return pci_offset(pf.spec.vf_pci_base, index, pf.spec.vf_stride)

    def create_vf(self, pf: PciDev, index: int) -> PciDev:
        assert pf.spec is not None
        addr = self.vf_addr(pf, index)
        vf = PciDev(addr, pf.vendor, pf.spec.vf_device, physfn=pf.pci_addr, vf_index=index)
        self.devices[addr] = vf
        pf.virtfn[index] = addr
        return vf

    def remove_vfs(self, pf: PciDev) -> None:
        """What pci_disable_sriov does: unbind and remove every VF, synchronously."""
        for index in sorted(pf.virtfn, reverse=True):
            vf = self.devices.get(pf.virtfn[index])
            if vf is not None:
                if vf.driver:
                    self.detach(vf)
                del self.devices[vf.pci_addr]
        pf.virtfn.clear()
        pf.num_vfs = 0
        pf.sriov_gen += 1

    def matches(self, driver: DriverSpec, dev: PciDev) -> bool:
        """pci_bus_match + pci_device_can_probe: a driver_override decides alone; a VF whose PF
        has sriov_drivers_autoprobe=0 may be probed by no other driver (real kernel: neither
        drivers_probe nor bind); otherwise the driver's id table."""
        if dev.driver_override is not None:
            return dev.driver_override == driver.name
        if dev.physfn is not None:
            pf = self.devices.get(dev.physfn)
            if pf is not None and not pf.drivers_autoprobe:
                return False
        return (dev.vendor, dev.device) in driver.ids

    def first_match(self, dev: PciDev) -> Optional[DriverSpec]:
        for driver in self.drivers.values():
            if self.matches(driver, dev):
                return driver
        return None

    def attach(self, dev: PciDev, driver_name: str, *, netdev_now: bool = True) -> None:
        """Bind `dev` (probe succeeded). PFs get their persistent netdev name at once; VFs get
        <pf>v<N> at once when netdev_now, else the caller creates the netdev later."""
        dev.driver = driver_name
        dev.bind_gen += 1
        driver = self.drivers[driver_name]
        if not driver.netdev or not dev.class_code.startswith("0x02"):
            return
        if dev.physfn is None:
            if dev.spec is not None and dev.spec.ifname:
                self._add_netdev(dev.spec.ifname, mac=dev.spec.mac or _mac_for(dev.pci_addr),
                                 pci_addr=dev.pci_addr)
        elif netdev_now:
            name = self.vf_final_name(dev) or self.free_eth_name()
            self._add_netdev(name, mac=_mac_for(dev.pci_addr), pci_addr=dev.pci_addr)

    def remove_disables_sriov(self, pf: PciDev) -> bool:
        """Does the PF driver's remove() disable SR-IOV? NIC drivers' (i40e, ixgbe) do; the PCI
        core itself leaves the VFs enabled (kernel.py makes it a knob)."""
        return True

    def detach(self, dev: PciDev) -> None:
        """Unbind (driver remove): the netdev goes; a PF driver's remove may disable SR-IOV."""
        if dev.netdev:
            self.netdevs.pop(dev.netdev, None)
            dev.netdev = None
        if dev.physfn is None and dev.virtfn:
            if self.remove_disables_sriov(dev):
                self.remove_vfs(dev)
        elif dev.physfn is None:
            dev.num_vfs = 0
            dev.sriov_gen += 1
        dev.driver = None
        dev.bind_gen += 1

    def autoprobe_now(self, dev: PciDev) -> None:
        driver = self.first_match(dev)
        if driver is not None:
            self.attach(dev, driver.name)

    def bind_now(self, pci_addr: str, driver: Optional[str]) -> None:
        """Test helper: move a device to `driver` (None: leave it driverless) at once."""
        dev = self.devices[pci_addr]
        if dev.driver:
            self.detach(dev)
        if driver:
            if driver not in self.drivers:
                raise ValueError(f"driver {driver} is not loaded")
            self.attach(dev, driver)

    def vf_final_name(self, vf: PciDev) -> Optional[str]:
        """The name udev gives a VF netdev: <pf ifname>v<N> (None when the PF has no netdev)."""
        pf = self.devices.get(vf.physfn or "")
        if pf is None or not pf.netdev:
            return None
        name = f"{pf.netdev}v{vf.vf_index}"
        return name if len(name) <= 15 and name not in self.netdevs else None

    def free_eth_name(self) -> str:
        """The kernel's ethN: the lowest N not in use."""
        index = 0
        while f"eth{index}" in self.netdevs:
            index += 1
        return f"eth{index}"

    def _add_netdev(self, ifname: str, *, mac: str, pci_addr: Optional[str]) -> Netdev:
        netdev = Netdev(ifname, self._next_ifindex, mac, pci_addr)
        self._next_ifindex += 1
        self.netdevs[ifname] = netdev
        if pci_addr is not None:
            self.devices[pci_addr].netdev = ifname
        return netdev

    def add_vf_netdev(self, vf: PciDev, name: str) -> None:
        self._add_netdev(name, mac=_mac_for(vf.pci_addr), pci_addr=vf.pci_addr)

    def rename_netdev(self, old: str, new: str) -> None:
        netdev = self.netdevs.pop(old)
        netdev.ifname = new
        self.netdevs[new] = netdev
        if netdev.pci_addr is not None:
            self.devices[netdev.pci_addr].netdev = new

    def find_device(self, data: bytes) -> Optional[PciDev]:
        """bus_find_device_by_name with sysfs_streq: one trailing newline is ignored."""
        text = data.decode("ascii", errors="replace")
        if text.endswith("\n"):
            text = text[:-1]
        return self.devices.get(text)

    # --------------------------------------------------------------------- layout
    def store_handler(self, kind: str, *args) -> Optional[Callable[[bytes], None]]:
        """Write behaviour of an attribute; the static model has none (kernel.py adds them)."""
        return None

    def lookup(self, path: str) -> Optional[Node]:
        parts = [p for p in path.split("/") if p]
        try:
            return self._lookup(parts)
        except (KeyError, IndexError, ValueError):
            return None

    def _file(self, text: Callable[[], str], kind: str, *args, mode: int = RO) -> FileNode:
        return FileNode(text, self.store_handler(kind, *args), mode, kind)

    def _lookup(self, parts: list[str]) -> Optional[Node]:
        if not parts:
            return DirNode(["bus", "class", "devices"])
        top, rest = parts[0], parts[1:]
        if top == "devices":
            return self._lookup_devices(rest)
        if top == "bus":
            return self._lookup_bus(rest)
        if top == "class":
            if not rest:
                return DirNode(["net"])
            if rest[0] != "net":
                return None
            if len(rest) == 1:
                return DirNode(sorted(self.netdevs))
            if len(rest) == 2:
                netdev = self.netdevs[rest[1]]
                return LinkNode(f"../../{self._netdev_dir(netdev)}")
            return None
        return None

    def _netdev_dir(self, netdev: Netdev) -> str:
        if netdev.pci_addr is None:
            return f"devices/virtual/net/{netdev.ifname}"
        return f"devices/{PCI_ROOT}/{netdev.pci_addr}/net/{netdev.ifname}"

    def _lookup_devices(self, parts: list[str]) -> Optional[Node]:
        if not parts:
            return DirNode([PCI_ROOT, "virtual"])
        if parts[0] == "virtual":
            virtual = sorted(n for n, d in self.netdevs.items() if d.pci_addr is None)
            if len(parts) == 1:
                return DirNode(["net"])
            if parts[1] != "net":
                return None
            if len(parts) == 2:
                return DirNode(virtual)
            if parts[2] not in virtual:
                return None
            return self._lookup_netdev(self.netdevs[parts[2]], parts[3:])
        if parts[0] != PCI_ROOT:
            return None
        if len(parts) == 1:
            return DirNode(sorted(self.devices))
        dev = self.devices[parts[1]]
        return self._lookup_device(dev, parts[2:])

    def _device_entries(self, dev: PciDev) -> dict[str, Node]:
        entries: dict[str, Node] = {
            "vendor": self._file(lambda: f"0x{dev.vendor}\n", "vendor"),
            "device": self._file(lambda: f"0x{dev.device}\n", "device"),
            "subsystem_vendor": self._file(lambda: f"0x{dev.vendor}\n", "subsystem_vendor"),
            "subsystem_device": self._file(lambda: "0x0000\n", "subsystem_device"),
            "class": self._file(lambda: f"{dev.class_code}\n", "class"),
            "numa_node": self._file(lambda: "-1\n", "numa_node"),
            "uevent": self._file(lambda: self._uevent(dev), "uevent"),
            "driver_override": self._file(
                lambda: f"{dev.driver_override if dev.driver_override is not None else '(null)'}\n",
                "driver_override", dev, mode=RW),
            "subsystem": LinkNode("../../../bus/pci"),
        }
        if dev.driver:
            entries["driver"] = LinkNode(f"../../../bus/pci/drivers/{dev.driver}")
        if dev.netdev:
            entries["net"] = DirNode([dev.netdev])
        if dev.physfn is None and dev.total_vfs:
            spec = dev.spec
            assert spec is not None
            offset = self._vf_offset(spec)
            entries.update({
                "sriov_totalvfs": self._file(lambda: f"{dev.total_vfs}\n", "sriov_totalvfs"),
                "sriov_numvfs": self._file(lambda: f"{dev.num_vfs}\n", "sriov_numvfs", dev,
                                           mode=RW),
                "sriov_offset": self._file(lambda: f"{offset}\n", "sriov_offset"),
                "sriov_stride": self._file(lambda: f"{spec.vf_stride}\n", "sriov_stride"),
                "sriov_vf_device": self._file(lambda: f"{spec.vf_device}\n", "sriov_vf_device"),
                "sriov_drivers_autoprobe": self._file(
                    lambda: f"{int(dev.drivers_autoprobe)}\n", "sriov_drivers_autoprobe", dev,
                    mode=RW),
            })
            for index, vf_addr in dev.virtfn.items():
                entries[f"virtfn{index}"] = LinkNode(f"../{vf_addr}")
        if dev.physfn is not None:
            entries["physfn"] = LinkNode(f"../{dev.physfn}")
        return entries

    @staticmethod
    def _vf_offset(spec: PfSpec) -> int:
        def routing_id(addr: str) -> int:
            _, bus, rest = addr.split(":")
            dev, fn = rest.split(".")
            return int(bus, 16) * 256 + int(dev, 16) * 8 + int(fn)
        return routing_id(spec.vf_pci_base) - routing_id(spec.pci_addr)

    def _uevent(self, dev: PciDev) -> str:
        lines = []
        if dev.driver:
            lines.append(f"DRIVER={dev.driver}")
        lines += [f"PCI_CLASS={int(dev.class_code, 16):X}",
                  f"PCI_ID={dev.vendor.upper()}:{dev.device.upper()}",
                  f"PCI_SLOT_NAME={dev.pci_addr}"]
        return "\n".join(lines) + "\n"

    def _lookup_device(self, dev: PciDev, parts: list[str]) -> Optional[Node]:
        entries = self._device_entries(dev)
        if not parts:
            return DirNode(sorted(entries))
        node = entries.get(parts[0])
        if node is None:
            return None
        if parts[0] == "net" and len(parts) > 1:
            if parts[1] != dev.netdev:
                return None
            return self._lookup_netdev(self.netdevs[parts[1]], parts[2:])
        return node if len(parts) == 1 else None

    def _lookup_netdev(self, netdev: Netdev, parts: list[str]) -> Optional[Node]:
        entries: dict[str, Node] = {
            "address": self._file(lambda: f"{netdev.mac}\n", "address"),
            "mtu": self._file(lambda: f"{netdev.mtu}\n", "mtu"),
            "ifindex": self._file(lambda: f"{netdev.ifindex}\n", "ifindex"),
            "type": self._file(lambda: "772\n" if netdev.pci_addr is None else "1\n", "type"),
            "operstate": self._file(lambda: "up\n" if netdev.pci_addr else "unknown\n",
                                    "operstate"),
            "uevent": self._file(lambda: f"INTERFACE={netdev.ifname}\nIFINDEX={netdev.ifindex}\n",
                                 "uevent"),
        }
        if netdev.pci_addr is not None:
            entries["device"] = LinkNode(f"../../../{netdev.pci_addr}")
        if not parts:
            return DirNode(sorted(entries))
        return entries.get(parts[0]) if len(parts) == 1 else None

    def _lookup_bus(self, parts: list[str]) -> Optional[Node]:
        if not parts:
            return DirNode(["pci"])
        if parts[0] != "pci":
            return None
        if len(parts) == 1:
            return DirNode(["devices", "drivers", "drivers_autoprobe", "drivers_probe"])
        what, rest = parts[1], parts[2:]
        if what == "devices":
            if not rest:
                return DirNode(sorted(self.devices))
            if len(rest) == 1 and rest[0] in self.devices:
                return LinkNode(f"../../../devices/{PCI_ROOT}/{rest[0]}")
            return None
        if what == "drivers":
            if not rest:
                return DirNode(sorted(self.drivers))
            driver = self.drivers[rest[0]]
            bound = sorted(a for a, d in self.devices.items() if d.driver == driver.name)
            entries: dict[str, Node] = {
                "bind": self._file(lambda: "", "bind", driver, mode=WO),
                "unbind": self._file(lambda: "", "unbind", driver, mode=WO),
                "uevent": self._file(lambda: "", "uevent", mode=WO),
            }
            for addr in bound:
                entries[addr] = LinkNode(f"../../../../devices/{PCI_ROOT}/{addr}")
            if len(rest) == 1:
                return DirNode(sorted(entries))
            return entries.get(rest[1]) if len(rest) == 2 else None
        if rest:
            return None
        if what == "drivers_probe":
            return self._file(lambda: "", "drivers_probe", mode=WO)
        if what == "drivers_autoprobe":  # 0644 in the kernel, as every RW attribute here
            return self._file(lambda: f"{int(self.bus_drivers_autoprobe)}\n", "drivers_autoprobe",
                              mode=RW)
        return None

    def walk(self, path: str = ""):
        """Yield (relative path, node) for the whole tree, depth first, not following links."""
        node = self.lookup(path)
        if node is None:
            return
        yield path, node
        if isinstance(node, DirNode):
            for name in node.names:
                yield from self.walk(f"{path}/{name}" if path else name)


def build_static_tree(dest: str, model: Optional[SysfsModel] = None) -> SysfsModel:
    """Write `model` (default: the seed preset) under `dest` as plain files and relative
    symlinks, exactly as the layout shows them. Returns the model."""
    model = model if model is not None else SysfsModel.from_preset("seed")
    os.makedirs(dest, exist_ok=True)
    for rel, node in model.walk():
        target = os.path.join(dest, rel) if rel else dest
        if isinstance(node, DirNode):
            os.makedirs(target, exist_ok=True)
        elif isinstance(node, LinkNode):
            os.symlink(node.target, target)
        else:
            with open(target, "w", encoding="ascii") as handle:
                handle.write(node.read())
            os.chmod(target, node.mode)
    return model
