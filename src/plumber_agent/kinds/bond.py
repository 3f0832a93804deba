"""Linux bonds (spec.bondConfig: models/bond_spec.py) and their members (desired/bond.py,
planner/bond.py, host/netlink/bond.py)."""
from plumber_agent.kinds.base import (DEVICE, IF_NOT_AVAILABLE, REMOVING, Cleanup, Kind,
                                      Merge)

KIND = Kind(
    name="bond",
    doc="a Linux bond (mode, miimon, lacp_rate, xmit_hash_policy, primary) and its members",
    spec_keys={"": ("bondConfig",), "bondConfig[]": ("name", "mode", "options", "members"),
               "bondConfig[].options": ("miimon", "lacpRate", "xmitHashPolicy", "primary")},
    merge=Merge("bonds", "bond"),
    after=("sriov",),  # members may be VFs
    observed=("links[].bond", "links[].bond_member"),
    plan_room="bond",
    # Members are released before their bond is deleted (Phase RELEASE_MEMBER, DELETE_LINK).
    cleanups=(Cleanup("bond", "bond", "cleanup_bond", rank=11),
              Cleanup("bondmember", "bond", "cleanup_member", rank=12)),
    interface_keys=("bond", "bondmember"),
    verbs={"ensure_bond": DEVICE, "enslave": DEVICE, "release_member": REMOVING},
    # NotAvailable: the create itself was refused (no bonding module).
    unchanged_when={"ensure_bond": IF_NOT_AVAILABLE},
    status=("interface_status[].bond",),
    omit_when_empty=("bondConfig",),  # a spec without bonds hashes as before bonds existed
)
