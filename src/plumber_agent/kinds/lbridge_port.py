"""A Linux bridge's port: its master and its VLAN entries (pvid, untagged and tagged ranges),
merged and planned by the Linux bridge's rooms (desired/lbridge.py, planner/lbridge.py)."""
from plumber_agent.kinds.base import DEVICE, REMOVING, Cleanup, Kind, Merge

KIND = Kind(
    name="lbridge_port",
    doc="an interface as a Linux bridge port, with its pvid and untagged/tagged VLAN ranges",
    spec_keys={"linuxBridgeConfig[].ports[]": ("name", "pvid", "untagged", "tagged")},
    # lbridge's offer covers the ports; this merge only assembles them.
    merge=Merge("linux_bridge_ports", "lbridge", offer="offer_none", assemble="assemble_ports"),
    observed=("links[].bridge_vlans",),
    planned_with="lbridge",
    # A port's VLAN entries are restored while it is still in the bridge.
    cleanups=(Cleanup("lbport", "lbridge", "cleanup_port", rank=14),
              Cleanup("lbvlan", "lbridge", "cleanup_vlans", rank=15)),
    interface_keys=("lbport", "lbvlan"),
    verbs={"set_linux_bridge_port": REMOVING, "set_linux_bridge_vlans": DEVICE},
    status=("interface_status[].bridge_vlans",),
)
