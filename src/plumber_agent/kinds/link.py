"""A link's MTU (interfaceConfig[].name, .mtu), and setting it up; the interface entry itself."""
from plumber_agent.kinds.base import DEVICE, ROUTING, Cleanup, Kind, Merge

KIND = Kind(
    name="link",
    doc="interfaceConfig[] entry: the interface by name and its MTU",
    spec_keys={"": ("interfaceConfig",), "interfaceConfig[]": ("name", "mtu")},
    merge=Merge("links", "links"),
    # VF MTUs wait for numVfs; a VLAN, bond or Linux bridge to be created is a link that exists.
    after=("sriov", "vlan", "bond", "lbridge"),
    observed=("links", "links[].ifname", "links[].index", "links[].kind", "links[].mtu",
              "links[].mac", "links[].oper_state", "links[].admin_up", "links[].master"),
    plan_room="links",
    cleanups=(Cleanup("mtu", "links", "cleanup", rank=80),),
    interface_keys=("mtu",),
    verbs={"set_mtu": DEVICE, "set_up": ROUTING},
    status=("interface_status", "interface_status[].pf_name", "interface_status[].mac",
            "interface_status[].mtu", "interface_status[].kind",
            "interface_status[].oper_state", "interface_status[].master"),
)
