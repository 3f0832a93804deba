"""Host actions: what the planner emits and the executor carries out, one host change each, and
the table of verbs both sides agree on.

Planning is pure, so an Action is plain data; `describe()` gives the `plan` command's line and
the log line of the executor's chokepoint.

Why a verb table here (and not strings interpreted twice): the executor skips an action whose
prerequisite failed, forgets the netlink snapshot after non-netlink changes and decides whether
a failed change certainly left the host as it was; the planner decides which claims create an
object (so cleanup deletes it) and how it is undone. All of that is a property of the verb, so
it is written once, in VERBS. A new verb is one Verb member, one VERBS row, and one driver call
in host/executor.py's dispatch table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Callable, Optional


class Phase(IntEnum):
    """Execution order. Deletions run last, in reverse dependency order."""

    SRIOV_NUMVFS = 10
    SRIOV_VF_DRIVER = 20
    SRIOV_VF_ATTR = 22  # mac, vlan, trust... of VFs, set on their PF (planner/vfattrs.py)
    SRIOV_MTU = 25
    LINK_CREATE = 30  # VLAN interfaces, bonds and their members (planner/bond.py)
    LINUX_BRIDGE = 32  # Linux bridges, after the VLANs that may be their ports
    LINUX_BRIDGE_PORT = 33
    LINUX_BRIDGE_VLANS = 34
    LINK_MTU = 40
    LINK_UP = 45
    ADDRESS = 50
    ROUTE = 60
    OVS = 70
    OVS_PORT = 75
    DELETE_OVS_PORT = 80
    DELETE_OVS = 85
    DELETE_ROUTE = 90
    DELETE_ADDRESS = 95
    RESTORE_MTU = 100
    RESTORE_LINUX_BRIDGE_VLANS = 101  # while the port is still in the bridge
    RESTORE_LINUX_BRIDGE_PORT = 102
    RESTORE_LINUX_BRIDGE = 103  # stp/vlan_filtering of a bridge we did not create
    RELEASE_MEMBER = 104  # bond members released (and put back up) before their bond goes
    DELETE_LINK = 105
    RESTORE_VF_DRIVER = 110
    RESTORE_VF_ATTR = 112  # before numVfs is restored (which re-creates the VFs bare)
    RESTORE_NUMVFS = 115
    RESTORE_COLLATERAL = 120  # what the kernel removed with an undone change, after that undo


class Verb(StrEnum):
    SET_NUM_VFS = "set_num_vfs"
    BIND_VF_DRIVER = "bind_vf_driver"
    SET_VF = "set_vf"  # ip link set PF vf N <attribute>: target the PF netdev, params pf, vf
    ENSURE_VLAN = "ensure_vlan"
    DELETE_LINK = "delete_link"
    SET_MTU = "set_mtu"
    SET_UP = "set_up"
    ADD_ADDRESS = "add_address"
    DELETE_ADDRESS = "delete_address"
    ADD_ROUTE = "add_route"
    DELETE_ROUTE = "delete_route"
    ENSURE_BRIDGE = "ensure_bridge"
    DELETE_BRIDGE = "delete_bridge"
    ENSURE_PORT = "ensure_port"
    DELETE_PORT = "delete_port"
    ENSURE_BOND = "ensure_bond"
    ENSLAVE = "enslave"  # a member into its bond (set down first: the kernel wants it down)
    RELEASE_MEMBER = "release_member"  # out of its bond, then up again if it was
    ENSURE_LINUX_BRIDGE = "ensure_linux_bridge"
    SET_LINUX_BRIDGE_PORT = "set_linux_bridge_port"  # params bridge: the master (absent: none)
    SET_LINUX_BRIDGE_VLANS = "set_linux_bridge_vlans"
    FORGET = "forget"  # ledger only: the object is already gone or needs no undo
    # Puts back routes/addresses the kernel removed along with a change now undone
    # (models/collateral.py); each only where it is still missing.
    RESTORE_COLLATERAL = "restore_collateral"


class LedgerOp(StrEnum):
    CLAIM = "claim"  # record the prior (write-ahead), confirm after the change
    RELEASE = "release"  # forget the record after the undo ran


@dataclass
class Action:
    phase: Phase
    verb: str  # a Verb (a plain string only in tests of the executor's unknown-verb path)
    target: str  # the object: 'eno2', '0000:01:00.1', 'ovs-br01', 'default'
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # for people: 'template t1', 'drift; template t1', 'cleanup (was t1)'
    # Ledger bookkeeping: the executor records the intent (with the prior value) before the
    # change and confirms it after (write-ahead, so a crash in between leaves nothing unowned).
    ledger_key: Optional[str] = None  # models/keys.py
    ledger_op: Optional[str] = None  # a LedgerOp
    ledger_prior: Any = None
    templates: list[str] = field(default_factory=list)  # templates this action serves
    # Changes the node's path to the API server (let through by allowApiServerDisruption): the
    # reconciler arms the rollback-on-loss probe around it.
    api_risk: bool = False
    drift: bool = False  # puts back a value the ledger says we set and someone changed
    # What the kernel will do by itself because of this change, foreseen by the planner from
    # the observed host ("drops the default route via 10.0.0.1 dev eno1 (...)"): shown in
    # `plan`, the status preview and the executor's log line.
    side_effects: list[str] = field(default_factory=list)
    # What it takes away from pods (planner/disruption.py's Disruption: the VFs and the pods
    # using them); None: not disruptive. Decides whether the node drains first (fleet/drain.py).
    disruption: Any = None

    def __post_init__(self) -> None:
        if self.verb in Verb.__members__.values():
            self.verb = Verb(self.verb)
        if self.ledger_op is not None:
            self.ledger_op = LedgerOp(self.ledger_op)

    @property
    def spec(self) -> Optional["VerbSpec"]:
        """This action's row of VERBS (None for an unknown verb)."""
        return VERBS.get(self.verb)

    @property
    def creates(self) -> bool:
        """Does this claim create the object (so cleanup deletes it) rather than change it?"""
        spec = self.spec
        return spec is not None and spec.creates and self.ledger_prior is None

    def ledger_value(self) -> dict:
        """What this action sets, as recorded in the ledger (tells drift from a spec change)."""
        return {k: v for k, v in sorted(self.params.items()) if k not in TRANSIENT_PARAMS}

    def summary(self, phase: bool = True) -> str:
        """Phase (unless told not), verb, target and params: the `describe()` line without its
        reason."""
        params = " ".join(f"{k}={v}" for k, v in sorted(self.params.items())
                          if k not in DATA_PARAMS)
        text = f"{self.verb} {self.target}"
        if phase:
            text = f"{self.phase.name.lower():<18} {text}"
        return f"{text} {params}" if params else text

    def describe(self) -> str:
        text = self.summary()
        comment = "; ".join(([self.reason] if self.reason else []) + self.side_effects
                            + ([self.disruption.words()] if self.disruption is not None else []))
        return f"{text}  # {comment}" if comment else text


# Params that are not part of the applied value (pf_ifname: where the VF settings a numVfs
# change destroys are read, host/collateral.py).
TRANSIENT_PARAMS = ("destroys_vfs", "pf", "restore", "pf_ifname", "vlan_add", "vlan_delete")
DATA_PARAMS = ("items", "pf_ifname")  # data for the executor (items: told in words by side_effects), not in summary()


# -- dependencies between actions, as tokens: 'link:<ifname>', 'pf:<pci>', 'bridge:<name>' ------

def link_token(ifname: str) -> str:
    return f"link:{ifname}"


def _none(action: Action) -> frozenset[str]:
    return frozenset()


def _own_link(action: Action) -> frozenset[str]:
    return frozenset({link_token(action.target)})


@dataclass(frozen=True)
class VerbSpec:
    """What the executor and the planner need to know about one verb."""

    requires: Callable[[Action], frozenset[str]] = _none  # skipped when one of these failed
    provides: Callable[[Action], frozenset[str]] = _none  # broken when this action fails
    creates: bool = False  # a claim without a prior creates the object: cleanup deletes it
    undo: Optional[Verb] = None  # how cleanup undoes a created object (else: same verb, prior)
    netlink: bool = False  # carried out over rtnetlink only (the kernel notifies its changes)
    one_write: bool = False  # ONE host write: an error other than a timeout left it unchanged


VERBS: dict[Verb, VerbSpec] = {
    Verb.SET_NUM_VFS: VerbSpec(provides=lambda a: frozenset({f"pf:{a.target}"})),
    Verb.BIND_VF_DRIVER: VerbSpec(requires=lambda a: frozenset({f"pf:{a.params['pf']}"})),
    Verb.SET_VF: VerbSpec(requires=lambda a: frozenset({f"pf:{a.params['pf']}"}), netlink=True,
                          one_write=True),
    Verb.ENSURE_VLAN: VerbSpec(
        requires=lambda a: frozenset({link_token(a.params["parent"])}), provides=_own_link,
        creates=True, undo=Verb.DELETE_LINK, netlink=True),
    # A failed delete of a drifted VLAN blocks its re-creation.
    Verb.DELETE_LINK: VerbSpec(provides=_own_link, netlink=True),
    Verb.SET_MTU: VerbSpec(requires=_own_link, netlink=True, one_write=True),
    Verb.SET_UP: VerbSpec(requires=_own_link, netlink=True),
    Verb.ADD_ADDRESS: VerbSpec(requires=_own_link, creates=True, undo=Verb.DELETE_ADDRESS,
                               netlink=True, one_write=True),
    # Undone by adding the address back (cleanup after the final-state rule removed it).
    Verb.DELETE_ADDRESS: VerbSpec(requires=_own_link, netlink=True, one_write=True),
    Verb.ADD_ROUTE: VerbSpec(
        requires=lambda a: frozenset({link_token(a.params["dev"])} if a.params.get("dev")
                                     else ()),
        creates=True, undo=Verb.DELETE_ROUTE, netlink=True, one_write=True),
    Verb.DELETE_ROUTE: VerbSpec(netlink=True),
    Verb.ENSURE_BRIDGE: VerbSpec(provides=lambda a: frozenset({f"bridge:{a.target}"}),
                                 creates=True, undo=Verb.DELETE_BRIDGE),
    Verb.DELETE_BRIDGE: VerbSpec(),
    Verb.ENSURE_PORT: VerbSpec(
        requires=lambda a: frozenset({f"bridge:{a.params['bridge']}"}
                                     | {link_token(i) for i in a.params.get("interfaces") or []}),
        creates=True, undo=Verb.DELETE_PORT),
    Verb.DELETE_PORT: VerbSpec(),
    # Bonds (planner/bond.py, host/netlink/bond.py). A member's enslaving needs its bond.
    Verb.ENSURE_BOND: VerbSpec(provides=_own_link, creates=True, undo=Verb.DELETE_LINK,
                               netlink=True),
    Verb.ENSLAVE: VerbSpec(
        requires=lambda a: frozenset({link_token(a.target), link_token(a.params["bond"])}),
        netlink=True),
    Verb.RELEASE_MEMBER: VerbSpec(requires=_own_link, netlink=True),
    Verb.ENSURE_LINUX_BRIDGE: VerbSpec(provides=_own_link, creates=True, undo=Verb.DELETE_LINK,
                                       netlink=True, one_write=True),
    # A port whose enslaving failed gets no VLAN entries (they would land on no bridge).
    Verb.SET_LINUX_BRIDGE_PORT: VerbSpec(
        requires=lambda a: _own_link(a) | ({link_token(a.params["bridge"])}
                                           if a.params.get("bridge") else frozenset()),
        provides=lambda a: frozenset({f"lbport:{a.target}"}), netlink=True, one_write=True),
    Verb.SET_LINUX_BRIDGE_VLANS: VerbSpec(
        requires=lambda a: _own_link(a) | {f"lbport:{a.target}"}, netlink=True),
    Verb.FORGET: VerbSpec(),  # ledger only
    Verb.RESTORE_COLLATERAL: VerbSpec(netlink=True),
}
