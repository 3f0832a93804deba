"""802.1Q VLAN interfaces on a parent (interfaceConfig[].vlan[])."""
from plumber_agent.kinds.base import REMOVING, Cleanup, Kind, Parent, NO_PATH

KIND = Kind(
    name="vlan",
    doc="VLAN interface <parent>.<id> (or named) on an interfaceConfig[] entry",
    spec_keys={"interfaceConfig[]": ("vlan",), "interfaceConfig[].vlan[]": ("id", "name")},
    desired_field="vlans", merge_room="vlan",
    after=("sriov",),
    parent=Parent(desired_field="vlans", link_kinds=("vlan",)),
    observed=("links[].parent", "links[].vlan_id"),
    plan_room="vlan",
    cleanups=(Cleanup("vlan", "vlan", "cleanup", rank=10),),
    interface_keys=("vlan",),
    verbs={"ensure_vlan": NO_PATH, "delete_link": REMOVING},
    status=("interface_status[].parent", "interface_status[].vlan_id"),
)
