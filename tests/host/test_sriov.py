"""SR-IOV sysfs driver against static sysfs trees (plain files and relative symlinks, no root).

The trees come from tests/sriov_emu/tree.py, the same layout the FUSE emulator serves; kernel
behaviour on writes (errnos, late VFs, renames, binding) is tested in test_sriov_emu.py.
"""
from __future__ import annotations

import os

import pytest

from plumber_agent.errors import HostError, HostTimeout, InvalidSpec, NotAvailable
from plumber_agent.host.sriov import Sysfs
from plumber_agent.models.observed import ObservedLink, ObservedPf, ObservedVf
from tests.helpers.wait import wait_for
from tests.sriov_emu import PfSpec, SysfsModel, build_static_tree

ENO1, ENO2 = "0000:01:00.0", "0000:01:00.1"
FIFO_RELEASE_TIMEOUT_S = 10.0

BAD_PCI_ADDRS = ["../", "0000:01:00.1/../..", "0000:01:00.1\n", "3b:00.0", "", "0000:01:00.8",
                 "../../etc", "0000:01:00.1/../../../../tmp", None]
BAD_DRIVERS = ["../vfio", "vfio-pci\n", "a" * 4096, "", "vfio pci", "-vfio", None]


def _tree(tmp_path, model: SysfsModel) -> str:
    root = str(tmp_path / "sys")
    build_static_tree(root, model)
    return root


@pytest.fixture
def seed(tmp_path):
    """The node from the seed README: eno1 (0 of 64 VFs), eno2 (8 of 64, i40evf)."""
    model = SysfsModel.from_preset("seed")
    return _tree(tmp_path, model), model


def test_discovers_the_seed_readme_sample(seed):
    root, _ = seed
    pfs = Sysfs(root).discover_pfs()

    assert list(pfs) == [ENO1, ENO2]
    assert pfs[ENO1] == ObservedPf(pci_addr=ENO1, ifname="eno1", vendor_id="8086",
                                   device_id="1572", driver="i40e", total_vfs=64, num_vfs=0,
                                   vfs=[], pci_class="0x020000")
    assert pfs[ENO2] == ObservedPf(
        pci_addr=ENO2, ifname="eno2", vendor_id="8086", device_id="1572", driver="i40e",
        total_vfs=64, num_vfs=8, pci_class="0x020000",
        vfs=[ObservedVf(id=n, pci_addr=f"0000:02:0a.{n}", driver="i40evf", ifname=f"eno2v{n}")
             for n in range(8)])


def test_tree_looks_like_the_kernels(seed):
    """What the driver parses: "0x8086\\n", driver links into bus/pci/drivers, virtfn/physfn."""
    root, _ = seed
    pf_dir = os.path.join(root, "bus/pci/devices", ENO2)
    with open(os.path.join(pf_dir, "vendor")) as handle:
        assert handle.read() == "0x8086\n"
    assert os.readlink(os.path.join(pf_dir, "driver")) == "../../../bus/pci/drivers/i40e"
    assert os.readlink(os.path.join(pf_dir, "virtfn3")) == "../0000:02:0a.3"
    assert os.path.realpath(os.path.join(pf_dir, "virtfn3", "physfn")) == os.path.realpath(pf_dir)
    assert os.path.realpath(os.path.join(root, "class/net/eno2v3/device")) == \
        os.path.realpath(os.path.join(root, "bus/pci/devices/0000:02:0a.3"))


def test_pf_without_sriov_enabled_or_driver_and_plain_nics(tmp_path):
    root = _tree(tmp_path, SysfsModel.from_preset("lab"))
    pfs = Sysfs(root).discover_pfs()

    assert "0000:00:1f.6" not in pfs  # e1000e eno3: a NIC without SR-IOV capability
    assert pfs["0000:03:00.0"].num_vfs == 0 and pfs["0000:03:00.0"].vfs == []
    assert pfs["0000:03:00.0"].total_vfs == 63 and pfs["0000:03:00.0"].device_id == "1528"
    assert pfs["0000:05:00.0"] == ObservedPf(pci_addr="0000:05:00.0", ifname=None,
                                             vendor_id="15b3", device_id="1017", driver=None,
                                             total_vfs=16, num_vfs=0, vfs=[],
                                             pci_class="0x020000")


def test_ixgbe_vfs_are_found_by_virtfn_not_by_guessing_addresses(tmp_path):
    """The X540's two PFs interleave their VFs (stride 2): only virtfnN says which is whose."""
    spec = PfSpec("0000:03:00.1", "enp3s0f1", device="1528", driver="ixgbe", total_vfs=63,
                  vf_device="1515", vf_driver="ixgbevf", vf_pci_base="0000:04:10.1",
                  vf_stride=2, num_vfs=3)
    root = _tree(tmp_path, SysfsModel([spec]))
    pf = Sysfs(root).discover_pfs()["0000:03:00.1"]

    assert [(vf.id, vf.pci_addr, vf.driver, vf.ifname) for vf in pf.vfs] == [
        (0, "0000:04:10.1", "ixgbevf", "enp3s0f1v0"),
        (1, "0000:04:10.3", "ixgbevf", "enp3s0f1v1"),
        (2, "0000:04:10.5", "ixgbevf", "enp3s0f1v2")]


def test_vf_bound_to_vfio_pci_and_vf_without_driver(tmp_path):
    model = SysfsModel.from_preset("seed")
    model.bind_now("0000:02:0a.3", "vfio-pci")
    model.bind_now("0000:02:0a.5", None)
    root = _tree(tmp_path, model)

    vfs = {vf.id: vf for vf in Sysfs(root).discover_pfs()[ENO2].vfs}

    assert vfs[3] == ObservedVf(id=3, pci_addr="0000:02:0a.3", driver="vfio-pci", ifname=None)
    assert vfs[5] == ObservedVf(id=5, pci_addr="0000:02:0a.5", driver=None, ifname=None)
    assert vfs[4].driver == "i40evf" and vfs[4].ifname == "eno2v4"


def test_annotate_links_fills_pci_facts_of_pci_netdevs_only(seed):
    root, _ = seed
    links = {name: ObservedLink(ifname=name, index=i)
             for i, name in enumerate(["eno2", "eno2v3", "lo", "veth0"], start=1)}

    Sysfs(root).annotate_links(links)

    eno2, vf, lo, veth = (links[n] for n in ["eno2", "eno2v3", "lo", "veth0"])
    assert (eno2.pci_addr, eno2.vendor_id, eno2.device_id, eno2.driver) == \
        (ENO2, "8086", "1572", "i40e")
    assert (vf.pci_addr, vf.vendor_id, vf.device_id, vf.driver) == \
        ("0000:02:0a.3", "8086", "154c", "i40evf")
    for virtual in (lo, veth):
        assert (virtual.pci_addr, virtual.vendor_id, virtual.device_id, virtual.driver) == \
            (None, None, None, None)


def test_empty_or_missing_root_discovers_nothing(tmp_path):
    assert Sysfs(str(tmp_path / "nothing-here")).discover_pfs() == {}
    assert Sysfs(_tree(tmp_path, SysfsModel.from_preset("empty"))).discover_pfs() == {}


def test_driver_available(seed):
    root, _ = seed
    sysfs = Sysfs(root)
    assert sysfs.driver_available("i40evf") and sysfs.driver_available("vfio-pci")
    assert not sysfs.driver_available("mlx5_core")


# ------------------------------------------------------------------------- bad input, escapes
@pytest.mark.parametrize("bad", BAD_PCI_ADDRS)
def test_bad_pci_addresses_are_refused_before_any_path(seed, bad):
    root, _ = seed
    sysfs = Sysfs(root)
    for call in (lambda: sysfs.set_num_vfs(bad, 1), lambda: sysfs.wait_for_vfs(bad, 1, 0.1),
                 lambda: sysfs.bind_vf_driver(bad, "vfio-pci"),
                 lambda: sysfs.clear_driver_override(bad)):
        with pytest.raises(InvalidSpec):
            call()


@pytest.mark.parametrize("bad", BAD_DRIVERS)
def test_bad_driver_names_are_refused(seed, bad):
    root, _ = seed
    sysfs = Sysfs(root)
    with pytest.raises(InvalidSpec):
        sysfs.bind_vf_driver("0000:02:0a.0", bad)
    with pytest.raises(InvalidSpec):
        sysfs.driver_available(bad)


@pytest.mark.parametrize("bad", [-1, 65536, True, 5.0, "010", "8", None])
def test_bad_vf_counts_are_refused(seed, bad):
    root, _ = seed
    with pytest.raises(InvalidSpec):
        Sysfs(root).set_num_vfs(ENO1, bad)


def _outside_device(tmp_path) -> str:
    """A PCI-device-looking directory outside the sysfs root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, text in {"sriov_totalvfs": "64\n", "sriov_numvfs": "0\n", "vendor": "0x8086\n",
                       "device": "0x1572\n"}.items():
        (outside / name).write_text(text)
    return str(outside)


@pytest.mark.parametrize("relative", [False, True])
def test_symlinks_pointing_outside_the_root_are_refused(seed, tmp_path, relative):
    root, _ = seed
    outside = _outside_device(tmp_path)
    target = os.path.relpath(outside, os.path.join(root, "bus/pci/devices")) if relative \
        else outside
    os.symlink(target, os.path.join(root, "bus/pci/devices/0000:09:00.0"))
    os.symlink(outside, os.path.join(root, "bus/pci/devices", ENO2, "virtfn8"))
    os.symlink(outside, os.path.join(root, "class/net/evil0"))
    os.symlink(outside, os.path.join(root, "bus/pci/drivers/evil"))
    sysfs = Sysfs(root)

    pfs = sysfs.discover_pfs()
    assert "0000:09:00.0" not in pfs
    assert [vf.id for vf in pfs[ENO2].vfs] == list(range(8))
    with pytest.raises(HostError, match="outside the sysfs root"):
        sysfs.set_num_vfs("0000:09:00.0", 1)
    with open(os.path.join(outside, "sriov_numvfs")) as handle:
        assert handle.read() == "0\n"
    links = {"evil0": ObservedLink(ifname="evil0", index=9)}
    sysfs.annotate_links(links)
    assert links["evil0"].pci_addr is None
    assert not sysfs.driver_available("evil")


def test_unknown_or_non_sriov_devices_are_not_available(tmp_path):
    root = _tree(tmp_path, SysfsModel.from_preset("lab"))
    sysfs = Sysfs(root)
    with pytest.raises(NotAvailable, match="0000:42:00.0 not found"):
        sysfs.set_num_vfs("0000:42:00.0", 1)
    with pytest.raises(NotAvailable, match="not SR-IOV capable"):
        sysfs.set_num_vfs("0000:00:1f.6", 1)


def test_binding_to_a_driver_that_is_not_loaded(seed):
    root, _ = seed
    with pytest.raises(NotAvailable, match="driver mlx5_core is not loaded on this host"):
        Sysfs(root).bind_vf_driver("0000:02:0a.0", "mlx5_core")


def test_binding_to_the_current_driver_writes_nothing(seed):
    root, _ = seed
    override = os.path.join(root, "bus/pci/devices/0000:02:0a.0/driver_override")
    before = os.stat(override).st_mtime_ns

    Sysfs(root).bind_vf_driver("0000:02:0a.0", "i40evf")

    with open(override) as handle:
        assert handle.read() == "(null)\n"
    assert os.stat(override).st_mtime_ns == before


# ------------------------------------------------------------------------- waiting
def test_wait_for_vfs_returns_when_present_and_times_out_otherwise(seed):
    root, _ = seed
    sysfs = Sysfs(root)

    assert len(sysfs.wait_for_vfs(ENO2, 8, timeout_s=5).vfs) == 8
    with pytest.raises(HostTimeout, match="8 of 9 VFs.*virtfn8"):
        sysfs.wait_for_vfs(ENO2, 9, timeout_s=0.2)
    with pytest.raises(HostTimeout, match="virtfn0.*to go away"):
        sysfs.wait_for_vfs(ENO2, 0, timeout_s=0.2)


def test_wait_for_vfs_waits_for_the_netdev_of_a_network_vf(seed):
    root, _ = seed
    vf_dir = os.path.join(root, "devices/pci0000:00/0000:02:0a.2")
    os.unlink(os.path.join(root, "class/net/eno2v2"))
    for name in os.listdir(os.path.join(vf_dir, "net/eno2v2")):
        path = os.path.join(vf_dir, "net/eno2v2", name)
        os.unlink(path)
    os.rmdir(os.path.join(vf_dir, "net/eno2v2"))
    os.rmdir(os.path.join(vf_dir, "net"))

    with pytest.raises(HostTimeout, match=r"netdev of VF 0000:02:0a\.2 \(i40evf\)"):
        Sysfs(root).wait_for_vfs(ENO2, 8, timeout_s=0.2)


# ------------------------------------------------------------------------- bounded writes
def test_a_write_that_never_returns_is_abandoned_with_host_timeout(seed):
    """A FIFO stands in for a hung driver: open(O_WRONLY) blocks until someone reads."""
    root, _ = seed
    override = os.path.join(root, "bus/pci/devices/0000:02:0a.0/driver_override")
    os.unlink(override)
    os.mkfifo(override)
    sysfs = Sysfs(root, write_timeout_s=0.2)

    with pytest.raises(HostTimeout, match="did not finish within 0.2 s"):
        sysfs.bind_vf_driver("0000:02:0a.0", "vfio-pci")
    with pytest.raises(HostTimeout, match="still blocked"):
        sysfs.bind_vf_driver("0000:02:0a.0", "vfio-pci")

    # Let the abandoned write finish: it completes late, with exactly the driver name.
    fd = os.open(override, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = wait_for(lambda: os.read(fd, 100), timeout_s=FIFO_RELEASE_TIMEOUT_S,
                        interval_s=0.01, retry_on=(BlockingIOError,),
                        what="the abandoned write to reach the FIFO")
        assert data == b"vfio-pci"
    finally:
        os.close(fd)


def test_unreadable_sriov_numvfs_is_a_host_error_not_a_crash(seed):
    root, _ = seed
    numvfs = os.path.join(root, "bus/pci/devices", ENO1, "sriov_numvfs")
    os.unlink(numvfs)
    os.mkdir(numvfs)  # reading it fails with EISDIR
    with pytest.raises(HostError, match="cannot read sriov_numvfs"):
        Sysfs(root).set_num_vfs(ENO1, 1)
    assert Sysfs(root).discover_pfs()[ENO1].num_vfs == 0
