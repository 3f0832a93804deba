"""SR-IOV sysfs driver against the FUSE emulator, which answers writes like the kernel does.

Each test runs the emulator as a separate process (as the e2e harness does for every simulated
node) and talks to it only through the filesystem. Timing-dependent states ("not there yet") are
made deterministic with the emulator's hold_* knobs; waits are bounded polls.
"""
from __future__ import annotations

import errno
import os
import stat

import pytest

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.host.sriov import Sysfs
from plumber_agent.models.observed import ObservedLink
from tests.helpers.wait import wait_for
from tests.sriov_emu import PfSpec, emulated_sysfs, fuse_unusable_reason

_REASON = fuse_unusable_reason()
pytestmark = [pytest.mark.privileged,
              pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

ENO1, ENO2 = "0000:01:00.0", "0000:01:00.1"
NUMVFS = "bus/pci/devices/{}/sriov_numvfs"
POLL_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.02
VF_WAIT_S = 20.0


def poll(predicate, what: str, timeout_s: float = POLL_TIMEOUT_S):
    """Bounded poll (never a blind sleep): the predicate's truthy value, or fail."""
    return wait_for(predicate, timeout_s=timeout_s, interval_s=POLL_INTERVAL_S, what=what)


@pytest.fixture
def emu(tmp_path):
    with emulated_sysfs(tmp_path, preset="seed") as running:
        yield running


@pytest.fixture
def sysfs(emu):
    return Sysfs(emu.root, write_timeout_s=5.0)


def numvfs(emu, pf: str) -> int:
    return int(emu.read(NUMVFS.format(pf)))


# ------------------------------------------------------------------------- the kernel's rules
@pytest.mark.parametrize("text, expected", [("010", 8), ("0x10", 16), ("10", 10), ("8\n", 8),
                                            ("+3", 3), ("0", 0)])
def test_emulator_parses_sriov_numvfs_in_base_0_like_the_kernel(emu, text, expected):
    emu.write_raw(text, NUMVFS.format(ENO1))
    assert numvfs(emu, ENO1) == expected


@pytest.mark.parametrize("text, code", [("08", errno.EINVAL), ("-1", errno.EINVAL),
                                        ("\n", errno.EINVAL), ("4 VFs", errno.EINVAL),
                                        (" 2", errno.EINVAL), ("2 ", errno.EINVAL),
                                        # real kernel: every kstrtou16 failure is EINVAL
                                        ("65536", errno.EINVAL), ("65", errno.ERANGE)])
def test_emulator_refuses_bad_counts_like_the_kernel(emu, text, code):
    with pytest.raises(OSError) as caught:
        emu.write_raw(text, NUMVFS.format(ENO1))
    assert caught.value.errno == code
    assert numvfs(emu, ENO1) == 0


def test_a_zero_length_write_changes_nothing(emu):
    """Real kernel: write(2) of 0 bytes returns 0 and never reaches the attribute."""
    fd = os.open(emu.path(NUMVFS.format(ENO1)), os.O_WRONLY)
    try:
        assert os.write(fd, b"") == 0
    finally:
        os.close(fd)
    assert numvfs(emu, ENO1) == 0 and emu.writes() == []


def test_vfs_exist_when_the_numvfs_write_returns(emu):
    """Real kernel: pci_enable_sriov() adds the VF devices and virtfnN/physfn links before
    write(2) returns (disabling removes them before it returns, too)."""
    emu.write_raw("3", NUMVFS.format(ENO1))
    pf_dir = emu.path("bus/pci/devices", ENO1)
    assert sorted(e for e in os.listdir(pf_dir) if e.startswith("virtfn")) == \
        ["virtfn0", "virtfn1", "virtfn2"]
    assert os.path.realpath(os.path.join(pf_dir, "virtfn2", "physfn")) == os.path.realpath(pf_dir)
    emu.write_raw("0", NUMVFS.format(ENO1))
    assert not any(e.startswith("virtfn") for e in os.listdir(pf_dir))
    assert not os.path.exists(emu.path("bus/pci/devices/0000:02:02.0"))


def test_file_modes_are_the_kernels(emu):
    pf_dir = emu.path("bus/pci/devices", ENO2)
    modes = {name: stat.S_IMODE(os.stat(os.path.join(pf_dir, name)).st_mode)
             for name in ("sriov_numvfs", "sriov_totalvfs", "sriov_drivers_autoprobe",
                          "driver_override")}
    assert modes == {"sriov_numvfs": 0o644, "sriov_totalvfs": 0o444,
                     "sriov_drivers_autoprobe": 0o644, "driver_override": 0o644}
    assert stat.S_IMODE(os.stat(emu.path("bus/pci/drivers_probe")).st_mode) == 0o200
    assert stat.S_IMODE(os.stat(emu.path("bus/pci/drivers/i40evf/bind")).st_mode) == 0o200
    # bus/pci/drivers_autoprobe is 0644 and takes a boolean, like sriov_drivers_autoprobe.
    assert stat.S_IMODE(os.stat(emu.path("bus/pci/drivers_autoprobe")).st_mode) == 0o644
    emu.write_raw("0", "bus/pci/drivers_autoprobe")
    assert emu.read("bus/pci/drivers_autoprobe") == "0\n"


def test_emulator_refuses_nonzero_to_nonzero_with_ebusy(emu):
    with pytest.raises(OSError) as caught:
        emu.write_raw("4", NUMVFS.format(ENO2))
    assert caught.value.errno == errno.EBUSY
    assert numvfs(emu, ENO2) == 8


def test_driver_writes_plain_decimal(emu, sysfs):
    """"010" would be 8 (above); the driver writes "10" and gets 10."""
    assert sysfs.set_num_vfs(ENO1, 10) == 10
    assert [w["data"] for w in emu.writes("sriov_numvfs")] == ["10"]


def test_changing_between_nonzero_counts_goes_through_zero(emu, sysfs):
    assert sysfs.set_num_vfs(ENO2, 4) == 4
    assert [(w["data"], w["result"]) for w in emu.writes("sriov_numvfs")] == \
        [("0", "ok"), ("4", "ok")]
    pf = sysfs.wait_for_vfs(ENO2, 4, timeout_s=VF_WAIT_S)
    assert [vf.pci_addr for vf in pf.vfs] == [f"0000:02:0a.{n}" for n in range(4)]


def test_the_same_count_writes_nothing(emu, sysfs):
    assert sysfs.set_num_vfs(ENO2, 8) == 8
    assert emu.writes() == []


def test_disabling_waits_until_the_vfs_are_gone(emu, sysfs):
    assert sysfs.set_num_vfs(ENO2, 0) == 0
    assert sysfs.wait_for_vfs(ENO2, 0, timeout_s=VF_WAIT_S).vfs == []
    assert not any(name.startswith("eno2v") for name in os.listdir(emu.path("class/net")))


# ------------------------------------------------------------------------- errnos
@pytest.mark.parametrize("knobs, count, message", [
    ({}, 65, r"more than the PF supports: sriov_totalvfs \(64\) \(ERANGE\)"),
    ({"enospc": True}, 4, r"out of resources \(ENOSPC: interrupt vectors"),
    ({"erofs": True}, 4, r"read-only \(EROFS\).*privileged"),
    ({"numvfs_errno": "EINVAL"}, 4, r"rejected the value \(EINVAL\)"),
    ({"numvfs_errno": "EPERM"}, 4, r"permission denied \(EPERM\)"),
    ({"numvfs_errno": "EIO"}, 4, r"\(EIO\); check dmesg"),
])
def test_kernel_refusals_become_clear_host_errors(emu, sysfs, knobs, count, message):
    emu.set_knobs(**knobs)
    with pytest.raises(HostError, match=message) as caught:
        sysfs.set_num_vfs(ENO1, count)
    assert not isinstance(caught.value, HostTimeout)
    assert "PF 0000:01:00.0 (eno1)" in str(caught.value)
    assert numvfs(emu, ENO1) == 0


def test_pf_without_driver_gives_enoent(emu, sysfs):
    emu.write_raw(ENO1, "bus/pci/drivers/i40e/unbind")
    with pytest.raises(HostError, match=r"no driver is bound to the PF.*\(ENOENT\)"):
        sysfs.set_num_vfs(ENO1, 2)


def test_unbinding_the_pf_driver_destroys_its_vfs(emu, sysfs):
    """i40e's remove() disables SR-IOV (the emulator's default)."""
    emu.write_raw(ENO2, "bus/pci/drivers/i40e/unbind")
    pf = Sysfs(emu.root).discover_pfs()[ENO2]
    assert (pf.driver, pf.ifname, pf.num_vfs, pf.vfs) == (None, None, 0, [])


def test_a_pf_driver_may_leave_its_vfs_enabled_and_then_numvfs_is_enoent(emu, sysfs):
    """Real kernel (nvme PF): the PCI core leaves SR-IOV enabled when the PF driver goes, and
    without a PF driver every sriov_numvfs write is ENOENT, even 0."""
    emu.set_knobs(remove_keeps_vfs=True)
    emu.write_raw(ENO2, "bus/pci/drivers/i40e/unbind")
    pf = sysfs.discover_pfs()[ENO2]
    assert (pf.driver, pf.num_vfs, len(pf.vfs)) == (None, 8, 8)
    for text in ("0", "4"):
        with pytest.raises(OSError) as caught:
            emu.write_raw(text, NUMVFS.format(ENO2))
        assert caught.value.errno == errno.ENOENT
    with pytest.raises(HostError, match=r"no driver is bound to the PF.*\(ENOENT\)"):
        sysfs.set_num_vfs(ENO2, 0)
    emu.write_raw(ENO2, "bus/pci/drivers/i40e/bind")
    assert sysfs.set_num_vfs(ENO2, 0) == 0


def test_a_blocked_write_times_out_and_is_not_stacked(emu):
    emu.set_knobs(block_writes=["sriov_numvfs"])
    sysfs = Sysfs(emu.root, write_timeout_s=0.3)

    with pytest.raises(HostTimeout, match="did not finish within 0.3 s"):
        sysfs.set_num_vfs(ENO1, 4)
    with pytest.raises(HostTimeout, match="still blocked"):
        sysfs.set_num_vfs(ENO1, 4)

    emu.set_knobs(block_writes=False)  # the sick driver recovers: the late write lands
    poll(lambda: numvfs(emu, ENO1) == 4, "the abandoned write to complete")
    assert sysfs.wait_for_vfs(ENO1, 4, timeout_s=VF_WAIT_S).num_vfs == 4


# ------------------------------------------------------------------------- VFs appear later
def test_vfs_that_appear_late_are_waited_for(emu, sysfs):
    emu.set_knobs(hold_vfs=True)
    assert sysfs.set_num_vfs(ENO1, 4) == 4
    assert sysfs.discover_pfs()[ENO1].vfs == []
    with pytest.raises(HostTimeout, match=r"0 of 4 VFs.*virtfn0"):
        sysfs.wait_for_vfs(ENO1, 4, timeout_s=0.2)

    emu.set_knobs(hold_vfs=False)
    pf = sysfs.wait_for_vfs(ENO1, 4, timeout_s=VF_WAIT_S)

    assert [(vf.id, vf.pci_addr, vf.driver) for vf in pf.vfs] == \
        [(n, f"0000:02:02.{n}", "i40evf") for n in range(4)]
    assert all(vf.ifname for vf in pf.vfs)


def test_vfs_with_a_real_delay(tmp_path):
    with emulated_sysfs(tmp_path, vf_delay_s=0.5, vf_stagger_s=0.05, probe_delay_s=0.05,
                        netdev_delay_s=0.1) as emu:
        sysfs = Sysfs(emu.root)
        assert sysfs.set_num_vfs(ENO1, 6) == 6
        pf = sysfs.wait_for_vfs(ENO1, 6, timeout_s=VF_WAIT_S)
    assert [vf.id for vf in pf.vfs] == list(range(6))
    assert all(vf.driver == "i40evf" and vf.ifname for vf in pf.vfs)


def test_renamed_netdevs_are_found_through_virtfn(emu, sysfs):
    emu.set_knobs(hold_rename=True)
    sysfs.set_num_vfs(ENO1, 3)
    pf = sysfs.wait_for_vfs(ENO1, 3, timeout_s=VF_WAIT_S)
    assert all(vf.ifname.startswith("eth") for vf in pf.vfs)  # the kernel's first name

    emu.set_knobs(hold_rename=False)  # udev renames them
    pf = poll(lambda: (lambda p: p if [vf.ifname for vf in p.vfs] == ["eno1v0", "eno1v1",
                                                                        "eno1v2"] else None)(
        sysfs.discover_pfs()[ENO1]), "udev renames")
    assert [vf.pci_addr for vf in pf.vfs] == ["0000:02:02.0", "0000:02:02.1", "0000:02:02.2"]
    links = {"eno1v1": ObservedLink(ifname="eno1v1", index=7)}
    sysfs.annotate_links(links)
    assert (links["eno1v1"].pci_addr, links["eno1v1"].device_id) == ("0000:02:02.1", "154c")


def test_fewer_vfs_than_asked_are_reported(emu, sysfs):
    emu.set_knobs(vf_cap=4)
    assert sysfs.set_num_vfs(ENO1, 8) == 4
    assert len(sysfs.wait_for_vfs(ENO1, 4, timeout_s=VF_WAIT_S).vfs) == 4
    assert sysfs.discover_pfs()[ENO1].num_vfs == 4


def test_a_briefly_missing_driver_link_is_read_again(emu, sysfs):
    emu.set_knobs(driver_gap_reads=1)
    vf0_driver = emu.path("bus/pci/devices/0000:02:0a.0/driver")
    assert not os.path.lexists(vf0_driver)  # the emulator hides it once...
    assert os.path.lexists(vf0_driver)  # ...then it is back

    emu.set_knobs(driver_gap_reads=1)
    vfs = sysfs.discover_pfs()[ENO2].vfs
    assert [vf.driver for vf in vfs] == ["i40evf"] * 8


# ------------------------------------------------------------------------- driver binding
VF0 = "0000:02:0a.0"


def test_bind_goes_through_override_unbind_probe_and_verifies(emu, sysfs):
    sysfs.bind_vf_driver(VF0, "vfio-pci")

    assert [(w["attr"], w["path"], w["data"]) for w in emu.writes()] == [
        ("driver_override", f"/devices/pci0000:00/{VF0}/driver_override", "vfio-pci"),
        ("unbind", "/bus/pci/drivers/i40evf/unbind", VF0),
        ("drivers_probe", "/bus/pci/drivers_probe", VF0)]
    vf = sysfs.discover_pfs()[ENO2].vfs[0]
    assert (vf.driver, vf.ifname) == ("vfio-pci", None)
    assert emu.read(f"bus/pci/devices/{VF0}/driver_override") == "vfio-pci\n"

    sysfs.bind_vf_driver(VF0, "i40evf")  # and back; its netdev returns
    vf = poll(lambda: (lambda v: v if v.ifname else None)(sysfs.discover_pfs()[ENO2].vfs[0]),
              "the VF netdev to come back")
    assert vf.driver == "i40evf"


def test_bind_to_the_current_driver_is_a_no_op(emu, sysfs):
    sysfs.bind_vf_driver(VF0, "i40evf")
    assert emu.writes() == []


def test_bind_that_does_not_take_is_reported_and_the_override_cleared(emu):
    emu.set_knobs(hold_probe=True)
    sysfs = Sysfs(emu.root, write_timeout_s=0.3)
    with pytest.raises(HostError, match=r"bound to no driver"):
        sysfs.bind_vf_driver(VF0, "vfio-pci")
    assert emu.read(f"bus/pci/devices/{VF0}/driver_override") == "(null)\n"
    assert [w["data"] for w in emu.writes("driver_override")] == ["vfio-pci", "\n"]
    emu.set_knobs(hold_probe=False)  # the kernel's own binding returns
    poll(lambda: sysfs.discover_pfs()[ENO2].vfs[0].driver == "i40evf", "default rebind")


def test_clear_driver_override_writes_a_newline_never_nul(emu, sysfs):
    emu.write_raw("vfio-pci", f"bus/pci/devices/{VF0}/driver_override")
    emu.clear_writes()
    sysfs.clear_driver_override(VF0)
    assert [w["data"] for w in emu.writes()] == ["\n"]
    assert emu.read(f"bus/pci/devices/{VF0}/driver_override") == "(null)\n"


def test_unknown_driver_is_not_available(emu, sysfs):
    with pytest.raises(NotAvailable, match="driver mlx5_core is not loaded on this host"):
        sysfs.bind_vf_driver(VF0, "mlx5_core")
    assert emu.writes() == []


def test_emulator_honours_driver_override_on_bind(emu):
    emu.write_raw(VF0, "bus/pci/drivers/i40evf/unbind")
    with pytest.raises(OSError) as caught:  # vfio-pci has no id table: needs the override
        emu.write_raw(VF0, "bus/pci/drivers/vfio-pci/bind")
    assert caught.value.errno == errno.ENODEV
    emu.write_raw("vfio-pci\n", f"bus/pci/devices/{VF0}/driver_override")
    with pytest.raises(OSError) as caught:  # the override now excludes the VF's own driver
        emu.write_raw(VF0, "bus/pci/drivers/i40evf/bind")
    assert caught.value.errno == errno.ENODEV
    emu.write_raw(VF0, "bus/pci/drivers/vfio-pci/bind")
    assert os.readlink(emu.path(f"bus/pci/devices/{VF0}/driver")).endswith("/vfio-pci")


def test_drivers_probe_binds_before_the_write_returns(emu):
    """Real kernel: drivers_probe attaches synchronously (device_attach(), never async)."""
    emu.write_raw(VF0, "bus/pci/drivers/i40evf/unbind")
    emu.write_raw("vfio-pci", f"bus/pci/devices/{VF0}/driver_override")
    emu.write_raw(VF0 + "\n", "bus/pci/drivers_probe")
    assert os.readlink(emu.path(f"bus/pci/devices/{VF0}/driver")).endswith("/vfio-pci")
    emu.write_raw(VF0, "bus/pci/drivers_probe")  # bound already: accepted, nothing changes
    with pytest.raises(OSError) as caught:
        emu.write_raw(VF0, "bus/pci/drivers/vfio-pci/bind")
    assert caught.value.errno == errno.EBUSY
    with pytest.raises(OSError) as caught:
        emu.write_raw("0000:99:00.0", "bus/pci/drivers_probe")
    assert caught.value.errno == errno.ENODEV


def test_driver_override_is_cleared_by_newline_or_nul_and_does_not_unbind(emu):
    """Real kernel (driver_set_override): the text up to a newline; "\\n" or a NUL byte clear
    it; the binding stays as it is."""
    override = f"bus/pci/devices/{VF0}/driver_override"
    for clear in ("\n", "\0"):
        emu.write_raw("vfio-pci\n", override)
        assert emu.read(override) == "vfio-pci\n"
        emu.write_raw(clear, override)
        assert emu.read(override) == "(null)\n"
    emu.write_raw("a b\n", override)
    assert emu.read(override) == "a b\n"
    assert os.readlink(emu.path(f"bus/pci/devices/{VF0}/driver")).endswith("/i40evf")


def test_autoprobe_off_lets_only_the_override_probe_a_vf(emu):
    """Real kernel (pci_device_can_probe): with sriov_drivers_autoprobe=0 a VF stays driverless
    and neither drivers_probe nor bind gives it a driver its driver_override does not name."""
    emu.write_raw("0", f"bus/pci/devices/{ENO1}/sriov_drivers_autoprobe")
    emu.write_raw("2", NUMVFS.format(ENO1))
    vf = "0000:02:02.0"
    emu.write_raw(vf, "bus/pci/drivers_probe")
    assert not os.path.lexists(emu.path(f"bus/pci/devices/{vf}/driver"))
    with pytest.raises(OSError) as caught:
        emu.write_raw(vf, "bus/pci/drivers/i40evf/bind")
    assert caught.value.errno == errno.ENODEV
    emu.write_raw("vfio-pci", f"bus/pci/devices/{vf}/driver_override")
    emu.write_raw(vf, "bus/pci/drivers_probe")
    assert os.readlink(emu.path(f"bus/pci/devices/{vf}/driver")).endswith("/vfio-pci")
    assert not os.path.lexists(emu.path("bus/pci/devices/0000:02:02.1/driver"))


def test_read_only_sysfs_on_bind(emu, sysfs):
    emu.set_knobs(erofs=True)
    with pytest.raises(HostError, match=r"read-only \(EROFS\)"):
        sysfs.bind_vf_driver(VF0, "vfio-pci")


# ------------------------------------------------------------------------- the launcher
def test_several_emulators_with_caller_given_pfs(tmp_path):
    node_a = PfSpec("0000:81:00.0", "ens1f0", num_vfs=2, vf_pci_base="0000:81:02.0")
    node_b = PfSpec("0000:41:00.0", "ens2f0", device="1528", driver="ixgbe", total_vfs=63,
                    vf_device="1515", vf_driver="ixgbevf", vf_pci_base="0000:41:10.0")
    with emulated_sysfs(tmp_path, preset="empty", pfs=[node_a], name="node-a") as emu_a, \
            emulated_sysfs(tmp_path, preset="empty", pfs=[node_b], name="node-b") as emu_b:
        pfs_a = Sysfs(emu_a.root).discover_pfs()
        pfs_b = Sysfs(emu_b.root).discover_pfs()
        assert Sysfs(emu_b.root).set_num_vfs("0000:41:00.0", 2) == 2
        assert pfs_a == Sysfs(emu_a.root).discover_pfs()  # b's change does not leak into a
    assert list(pfs_a) == ["0000:81:00.0"] and list(pfs_b) == ["0000:41:00.0"]
    assert [(vf.pci_addr, vf.ifname) for vf in pfs_a["0000:81:00.0"].vfs] == \
        [("0000:81:02.0", "ens1f0v0"), ("0000:81:02.1", "ens1f0v1")]
    assert pfs_b["0000:41:00.0"].device_id == "1528"


def test_emulator_is_unmounted_and_stopped_even_when_the_test_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with emulated_sysfs(tmp_path, block_writes=True) as emu:
            Sysfs(emu.root, write_timeout_s=0.1)
            with pytest.raises(HostTimeout):
                Sysfs(emu.root, write_timeout_s=0.1).set_num_vfs(ENO1, 1)
            raise RuntimeError("boom")
    assert emu.proc.poll() is not None
    with open("/proc/self/mountinfo") as handle:
        assert emu.root not in handle.read()
