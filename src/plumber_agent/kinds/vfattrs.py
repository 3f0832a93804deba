"""VF attributes set on the host through their PF (sriovConfig[].vfs: models/vfattrs_spec.py):
mac, vlan+qos, spoofchk, trust, min/max tx rate and link state of a VF or a range of VFs
(desired/vfattrs.py, planner/vfattrs.py, the netlink driver's set_vf)."""
from plumber_agent.kinds.base import DEVICE, Cleanup, Kind, Merge

KIND = Kind(
    name="vfattrs",
    doc="sriovConfig[].vfs[]: attributes of a VF or a range of VFs, set on their PF",
    spec_keys={"sriovConfig[]": ("vfs",),
               "sriovConfig[].vfs[]": ("id", "range", "mac", "vlan", "qos", "spoofchk",
                                       "trust", "minTxRate", "maxTxRate", "linkState")},
    merge=Merge("vfs", "vfattrs"),
    after=("sriov",),  # VF attributes wait while numVfs changes (context.numvfs_changing)
    observed=("links[].vfs",),  # read with the PF netdev, as sriov reads them
    plan_room="vfattrs",
    # Before numVfs is restored (which re-creates the VFs bare), after their driver.
    cleanups=(Cleanup("vfattr", "vfattrs", "cleanup", rank=72),),
    verbs={"set_vf": DEVICE},
    status=("interface_status[].sriov_status",),
    omit_when_empty=("sriovConfig[].vfs",),  # an entry without vfs hashes as before vfs existed
)
