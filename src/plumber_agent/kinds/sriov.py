"""SR-IOV PFs: numVfs, the VFs' driver (vfDriver) and the MTU of the PF's netdev."""
from plumber_agent.kinds.base import (DEVICE, IF_NOT_AVAILABLE, UNLESS_DESTROYS_VFS, Cleanup,
                                      Kind, Merge)

KIND = Kind(
    name="sriov",
    doc="SR-IOV PF selected by pfName, pciAddr or vendorId+deviceId: numVfs, vfDriver, mtu",
    spec_keys={"": ("sriovConfig",),
               "sriovConfig[]": ("pfName", "pciAddr", "vendorId", "deviceId", "numVfs",
                                 "vfDriver", "mtu")},
    merge=Merge("pfs", "sriov"),
    observed=("pfs", "links[].vfs", "links[].pci_addr", "links[].vendor_id",
              "links[].device_id", "links[].driver"),
    plan_room="sriov",
    cleanups=(Cleanup("numvfs", "sriov", "cleanup_numvfs", rank=20),
              Cleanup("vfdriver", "sriov", "cleanup_vfdriver", rank=70)),
    verbs={"set_num_vfs": DEVICE, "bind_vf_driver": DEVICE},
    # NotAvailable (driver not loaded, VF gone) is decided before driver_override is written.
    unchanged_when={"set_num_vfs": UNLESS_DESTROYS_VFS, "bind_vf_driver": IF_NOT_AVAILABLE},
    status=("interface_status[].pci_addr", "interface_status[].vendor_id",
            "interface_status[].device_id", "interface_status[].pf_driver",
            "interface_status[].sriov_enabled", "interface_status[].sriov_status"),
)
