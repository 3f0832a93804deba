"""What discovery found on the host: the planner's input and the status builder's source.

Kept apart from the published status (models/status.py): this holds what the planner needs
(link kinds, parents, VLAN ids, indexes, OVS external_ids) in canonical form, so comparing it with
the desired state never flaps (lower-case MACs, compressed IPv6, sorted lists, no link-local).
`None` always means "unknown", never a made-up default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


MAIN_TABLE = 254  # the kernel's main routing table (RT_TABLE_MAIN), the only one managed

@dataclass
class ObservedVfInfo:
    """Per-VF settings the PF's driver reports over netlink (IFLA_VF_INFO)."""

    id: int
    mac: Optional[str] = None
    vlan: Optional[int] = None
    qos: Optional[int] = None
    spoofchk: Optional[bool] = None
    trust: Optional[bool] = None
    link_state: Optional[int] = None  # IFLA_VF_LINK_STATE_*: 0 auto, 1 enable, 2 disable
    min_tx_rate: Optional[int] = None  # Mbit/s, 0 = no limit
    max_tx_rate: Optional[int] = None


@dataclass(frozen=True)
class ObservedBond:
    """A bond's settings and state (IFLA_INFO_DATA of kind 'bond'); names as the kernel's
    sysfs spells them (mode 'active-backup', lacp_rate 'fast'), None when not reported."""

    mode: Optional[str] = None
    miimon: Optional[int] = None
    lacp_rate: Optional[str] = None
    xmit_hash_policy: Optional[str] = None
    primary: Optional[str] = None  # resolved to a name (IFLA_BOND_PRIMARY is an ifindex)
    active_member: Optional[str] = None  # IFLA_BOND_ACTIVE_SLAVE, resolved to a name


@dataclass(frozen=True)
class ObservedBondMember:
    """A bond member's state (IFLA_INFO_SLAVE_DATA of slave kind 'bond')."""

    state: Optional[str] = None  # 'active' or 'backup' (IFLA_BOND_SLAVE_STATE)
    mii_status: Optional[str] = None  # 'up', 'fail', 'down', 'back' (IFLA_BOND_SLAVE_MII_STATUS)


@dataclass
class ObservedLink:
    ifname: str
    index: int
    kind: Optional[str] = None  # None for a plain device; 'vlan', 'veth', 'bridge', 'openvswitch'...
    mtu: Optional[int] = None
    mac: Optional[str] = None
    oper_state: Optional[str] = None
    admin_up: Optional[bool] = None
    parent: Optional[str] = None  # IFLA_LINK resolved to a name (VLAN parent)
    master: Optional[str] = None  # IFLA_MASTER resolved to a name (bridge, bond, ovs-system)
    vlan_id: Optional[int] = None
    ipv4: list[str] = field(default_factory=list)  # canonical CIDRs, sorted
    ipv6: list[str] = field(default_factory=list)  # canonical CIDRs, sorted, link-local included
    vfs: list[ObservedVfInfo] = field(default_factory=list)
    bond: Optional[ObservedBond] = None  # kind 'bond' only
    bond_member: Optional[ObservedBondMember] = None  # a member of a bond only
    # From sysfs (filled by the SR-IOV/sysfs layer when the netdev has a PCI device).
    pci_addr: Optional[str] = None
    vendor_id: Optional[str] = None
    device_id: Optional[str] = None
    driver: Optional[str] = None
    # A Linux bridge's settings (kind 'bridge'), and a Linux bridge port's VLAN entries in
    # models/lbridge_spec.py's canonical text (None: not a Linux bridge port).
    linux_bridge: Optional["ObservedLinuxBridge"] = None
    bridge_vlans: Optional[list[str]] = None


@dataclass
class ObservedLinuxBridge:
    """IFLA_BR_* of a Linux bridge (IFLA_INFO_DATA of kind 'bridge')."""

    stp: Optional[bool] = None  # IFLA_BR_STP_STATE != 0
    vlan_filtering: Optional[bool] = None
    default_pvid: Optional[int] = None  # the entry the kernel gives a new port (0: none)


@dataclass
class ObservedRoute:
    family: int  # 4 or 6
    dst: Optional[str] = None  # canonical network; None = default route
    gw: Optional[str] = None
    dev: Optional[str] = None
    src: Optional[str] = None
    metric: Optional[int] = None
    proto: Optional[str] = None  # 'kernel', 'boot', 'static', 'ra', ... or a number as text
    scope: Optional[int] = None
    table: int = MAIN_TABLE

    def key(self) -> tuple:
        """Identity of a route in a table (what the kernel keys on for our purposes)."""
        return (self.family, self.dst, self.metric or 0)


@dataclass
class ObservedVf:
    id: int
    pci_addr: str
    driver: Optional[str] = None
    ifname: Optional[str] = None


NETWORK_CLASS_PREFIX = "0x02"  # PCI base class 02h: network controller
DEFAULT_PF_CLASSES = (NETWORK_CLASS_PREFIX,)  # what --pf-pci-classes accepts unless told


@dataclass
class ObservedPf:
    pci_addr: str
    ifname: Optional[str] = None
    vendor_id: Optional[str] = None
    device_id: Optional[str] = None
    driver: Optional[str] = None
    total_vfs: int = 0
    num_vfs: int = 0
    vfs: list[ObservedVf] = field(default_factory=list)
    pci_class: Optional[str] = None  # sysfs `class`, like "0x020000"; None when unreadable
    # The class prefixes the agent accepts as PFs (--pf-pci-classes; discovery sets them).
    accepted_classes: tuple[str, ...] = DEFAULT_PF_CLASSES

    def is_network(self) -> bool:
        """PCI base class 0x02 (network controller) or another class the operator accepted
        (--pf-pci-classes), or not known (an unreadable `class`)."""
        return self.pci_class is None or self.pci_class.startswith(self.accepted_classes)



# OVS rows HostPlumber created carry external_ids:plumber-managed=true; only those are changed
# or deleted (docs/pitfalls.md 33).
OVS_MANAGED_KEY = "plumber-managed"
OVS_MANAGED_VALUE = "true"


def ovs_managed(external_ids: dict) -> bool:
    return external_ids.get(OVS_MANAGED_KEY) == OVS_MANAGED_VALUE


@dataclass
class ObservedOvsInterface:
    name: str
    type: str = ""
    ofport: Optional[int] = None  # -1 when its netdev is gone (docs/pitfalls.md 32)
    mtu_request: Optional[int] = None
    external_ids: dict[str, str] = field(default_factory=dict)


@dataclass
class ObservedOvsPort:
    name: str
    interfaces: list[ObservedOvsInterface] = field(default_factory=list)
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None
    external_ids: dict[str, str] = field(default_factory=dict)


@dataclass
class ObservedBridge:
    name: str
    datapath_type: str = ""
    ports: list[ObservedOvsPort] = field(default_factory=list)
    external_ids: dict[str, str] = field(default_factory=dict)


@dataclass
class ObservedHost:
    links: dict[str, ObservedLink] = field(default_factory=dict)
    routes: list[ObservedRoute] = field(default_factory=list)
    pfs: dict[str, ObservedPf] = field(default_factory=dict)  # by PF PCI address
    bridges: Optional[dict[str, ObservedBridge]] = None  # None: OVS not reachable
    ovs_error: Optional[str] = None  # why OVS is not reachable
    # The address/interface this node uses to reach the API server (never removed unasked).
    api_server_ip: Optional[str] = None
    # The kernel's plain module-name aliases (modules.alias: "i40evf" -> "iavf"); None when
    # the host's modules.alias cannot be read (names are then used as written).
    module_aliases: Optional[dict[str, str]] = None
    # Every module of the running kernel, loadable or built in (modules.dep, modules.builtin);
    # None when they cannot be read (a driver name is then not checked).
    kernel_modules: Optional[frozenset] = None

    def pf_by_ifname(self, ifname: str) -> Optional[ObservedPf]:
        for pf in self.pfs.values():
            if pf.ifname == ifname:
                return pf
        return None
