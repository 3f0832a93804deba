"""802.1Q VLAN interfaces on a parent (interfaceConfig[].vlan[])."""
from plumber_agent.kinds.base import (IF_NOT_AVAILABLE, NO_PATH, REMOVING, Cleanup, Kind, Merge,
                                      Parent)

KIND = Kind(
    name="vlan",
    doc="VLAN interface <parent>.<id> (or named) on an interfaceConfig[] entry",
    spec_keys={"interfaceConfig[]": ("vlan",), "interfaceConfig[].vlan[]": ("id", "name")},
    merge=Merge("vlans", "vlan"),
    after=("sriov", "bond"),  # a VLAN on a VF or on a bond to be created
    parent=Parent(desired_field="vlans", link_kinds=("vlan",)),
    observed=("links[].parent", "links[].vlan_id"),
    plan_room="vlan",
    cleanups=(Cleanup("vlan", "vlan", "cleanup", rank=10),),
    interface_keys=("vlan",),
    verbs={"ensure_vlan": NO_PATH, "delete_link": REMOVING},
    # NotAvailable: the create itself was refused (no 802.1Q). Any other error may come from
    # setting the just-created VLAN up.
    unchanged_when={"ensure_vlan": IF_NOT_AVAILABLE},
    status=("interface_status[].parent", "interface_status[].vlan_id"),
)
