"""The port of an OVS bridge over the node's interface(s) (ovsConfig[].nodeInterface; two or
more make an OVS bond with params.bondMode/lacp)."""
from plumber_agent.kinds.base import DEVICE, REMOVING, Cleanup, Kind

KIND = Kind(
    name="ovs_port",
    doc="the bridge's port over nodeInterface (a bond of several), mtuRequest, bondMode, lacp",
    spec_keys={"ovsConfig[]": ("nodeInterface",),
               "ovsConfig[].params": ("mtuRequest", "bondMode", "lacp")},
    merged_with="ovs_bridge",  # DesiredBridge carries its ports
    planned_with="ovs_bridge",  # planner/ovs.py plans the bridge and its port together
    cleanups=(Cleanup("port", "ovs", "cleanup_port", rank=40),),
    verbs={"ensure_port": DEVICE, "delete_port": REMOVING},
    status=("ovs_status[].ports",),
)
