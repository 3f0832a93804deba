"""Linux bridges (spec.linuxBridgeConfig: models/lbridge_spec.py): STP and VLAN filtering
(desired/lbridge.py, planner/lbridge.py, host/netlink/lbridge.py); their ports are
lbridge_port."""
from plumber_agent.kinds.base import DEVICE, Cleanup, Kind, Merge

KIND = Kind(
    name="lbridge",
    doc="a Linux bridge with stp and vlan_filtering",
    spec_keys={"": ("linuxBridgeConfig",),
               "linuxBridgeConfig[]": ("name", "stp", "vlanFiltering", "ports")},
    merge=Merge("linux_bridges", "lbridge", offer="offer", assemble="assemble_bridges"),
    after=("vlan", "bond"),  # a VLAN or a bond to be created is a port that exists
    observed=("links[].linux_bridge",),
    plan_room="lbridge",
    cleanups=(Cleanup("lbridge", "lbridge", "cleanup_bridge", rank=13),),
    interface_keys=("lbridge",),
    verbs={"ensure_linux_bridge": DEVICE},
    status=("interface_status[].linux_bridge",),
    omit_when_empty=("linuxBridgeConfig",),  # a spec without them hashes as before
)
