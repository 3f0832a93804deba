"""Open vSwitch bridges (ovsConfig[].bridgeName, params.datapathType)."""
from plumber_agent.kinds.base import DEVICE, REMOVING, UNLESS_NOT_AVAILABLE, Cleanup, Kind, Merge

KIND = Kind(
    name="ovs_bridge",
    doc="an OVS bridge tagged as ours (external_ids), with its datapath type",
    spec_keys={"": ("ovsConfig",), "ovsConfig[]": ("bridgeName", "params"),
               "ovsConfig[].params": ("datapathType",)},
    merge=Merge("bridges", "ovs"),
    after=("vlan", "bond", "lbridge"),  # a port's netdev may be one of these, to be created
    observed=("bridges", "ovs_error"),
    plan_room="ovs",
    cleanups=(Cleanup("bridge", "ovs", "cleanup_bridge", rank=30),),
    verbs={"ensure_bridge": DEVICE, "delete_bridge": REMOVING},
    # The OVS driver deletes a half-made bridge on a HostError; OVS vanishing mid-way
    # (NotAvailable) may leave it behind.
    unchanged_when={"ensure_bridge": UNLESS_NOT_AVAILABLE},
    status=("ovs_status", "ovs_error", "ovs_status[].name", "ovs_status[].datapath_type",
            "ovs_status[].managed"),
)
