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


def _modules_alias(tmp_path, text: str):
    import os
    directory = tmp_path / "lib" / "modules" / os.uname().release
    directory.mkdir(parents=True)
    (directory / "modules.alias").write_text(text)


def test_vfdriver_i40evf_resolves_to_iavf_as_modprobe_does(tmp_path):
    """Issue 20: the seed's i40evf is only an alias on current kernels (MODULE_ALIAS in iavf);
    VFs bound to iavf already match a template asking for i40evf, so nothing is rebound."""
    from plumber_agent import desired, planner
    from tests.support.fakehost import make_template
    root = tmp_path / "sys"
    build_static_tree(str(root))  # the seed: eno2 with 8 VFs
    sysfs = Sysfs(str(root))
    assert sysfs.module_aliases() is None  # no modules.alias: names used as written
    _modules_alias(tmp_path, "# Aliases extracted from modules themselves.\n"
                             "alias pci:v00008086d0000154Csv*sd*bc*sc*i* iavf\n"
                             "alias i40evf iavf\nalias net-pf-10 ipv6\n")
    assert sysfs.module_aliases() == {"i40evf": "iavf", "net_pf_10": "ipv6"}
    pfs = sysfs.discover_pfs()
    from plumber_agent.models.observed import ObservedHost
    host = ObservedHost(pfs=pfs, module_aliases=sysfs.module_aliases())
    eno2 = next(pci for pci, pf in pfs.items() if pf.ifname == "eno2")
    for vf in pfs[eno2].vfs:
        vf.driver = "iavf"  # what a current kernel binds
    template = make_template("seed", {"sriovConfig": [{"pfName": "eno2", "numVfs": 8,
                                                        "vfDriver": "i40evf"}]})
    merged = desired.merge([template], {}, host)
    assert merged.desired.pfs[eno2].vf_driver.value == "iavf"
    assert planner.plan(merged.desired, host, {}, api_server=None).actions == []
    host.module_aliases = None  # where modules.alias cannot be read: bound as written
    merged = desired.merge([template], {}, host)
    rebinds = planner.plan(merged.desired, host, {}, api_server=None).actions
    assert len(rebinds) == 8 and {a.params["driver"] for a in rebinds} == {"i40evf"}


def test_a_vfdriver_the_kernel_does_not_have_fails_where_its_modules_are_known(tmp_path):
    import os
    from plumber_agent import desired
    from plumber_agent.models.observed import ObservedHost
    from tests.support.fakehost import make_template
    root = tmp_path / "sys"
    build_static_tree(str(root))
    sysfs = Sysfs(str(root))
    assert sysfs.kernel_modules() is None  # unknown: not checked
    _modules_alias(tmp_path, "alias i40evf iavf\n")
    directory = tmp_path / "lib" / "modules" / os.uname().release
    (directory / "modules.dep").write_text(
        "kernel/drivers/net/ethernet/intel/iavf/iavf.ko.zst: kernel/drivers/net/mdio.ko\n"
        "kernel/drivers/vfio/pci/vfio-pci.ko:\n")
    (directory / "modules.builtin").write_text("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko\n")
    assert sysfs.kernel_modules() == {"iavf", "vfio_pci", "e1000e"}  # each line's own module
    host = ObservedHost(pfs=sysfs.discover_pfs(), module_aliases=sysfs.module_aliases(),
                        kernel_modules=sysfs.kernel_modules())
    for driver, ok in (("i40evf", True), ("vfio-pci", True), ("iavf", True), ("ixgbevf", False)):
        merged = desired.merge([make_template("t", {"sriovConfig": [
            {"pfName": "eno2", "vfDriver": driver}]})], {}, host)
        result = merged.results["t"]
        if ok:
            assert result.state == "Applied", (driver, result.message)
        else:
            assert result.state == "Failed" and result.message == (
                f"spec.sriovConfig[0].vfDriver: {driver!r} is neither a module nor a module "
                "alias of this node's kernel (modules.dep, modules.builtin, modules.alias)")
            assert merged.desired.pfs == {}
