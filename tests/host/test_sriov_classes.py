"""Discovery reads each PF's PCI class from sysfs (the emulator's `class` file, as the kernel's)."""
from plumber_agent.host.sriov import Sysfs
from tests.sriov_emu import build_static_tree


def test_discovery_reads_the_pci_class(tmp_path):
    root = tmp_path / "sys"
    build_static_tree(str(root))
    pfs = Sysfs(str(root)).discover_pfs()
    assert pfs and all(pf.pci_class == "0x020000" and pf.is_network() for pf in pfs.values())
    some = next(iter(pfs))
    class_file = root / "bus" / "pci" / "devices" / some / "class"
    class_file.resolve().write_text("0x010802\n")
    assert Sysfs(str(root)).discover_pfs()[some].is_network() is False
