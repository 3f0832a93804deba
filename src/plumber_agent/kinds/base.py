"""What one kind of host object declares, once (kinds/<kind>.py), for every layer to take from.

Why plain data (names, not functions): the registry sits below every layer (models included:
models/keys.py reads which ledger keys name an interface), so it imports nothing of the agent.
A layer turns the names it owns into its own objects: desired/__init__.py imports
`desired.<room>` for a Merge's `offer`/`assemble`, planner/__init__.py imports
`planner.<plan_room>` for `plan` and the cleanups, each inside its own package; Verb and KeyKind
values are the enums' values (models/actions.py, models/keys.py). tests/unit/test_kinds.py checks
that every name resolves and that no part of a layer is left without a kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

# How the API-path guard (planner/apipath.py) reads a verb.
ROUTING = "routing"  # may change the route lookup to an endpoint: modelled and compared
REMOVING = "removing"  # removes a device: guarded even as an undo
DEVICE = "device"  # changes a device of the uplink itself (MTU, membership, PF/VF)
NO_PATH = "none"  # never touches the path to the API server
API_PATH_ROLES = (ROUTING, REMOVING, DEVICE, NO_PATH)

# When a failed verb certainly left the host as it was (host/executor.py
# `certainly_unchanged`, which then drops the fresh write-ahead intent), for verbs whose
# answer is not simply VERBS' `one_write` (one host write: any error but a timeout).
IF_NOT_AVAILABLE = "if NotAvailable"  # NotAvailable is decided before any write
UNLESS_NOT_AVAILABLE = "unless NotAvailable"  # the driver removes its half on other errors
UNLESS_DESTROYS_VFS = "unless destroys_vfs"  # between non-zero counts 0 is written first
UNCHANGED_WHEN = (IF_NOT_AVAILABLE, UNLESS_NOT_AVAILABLE, UNLESS_DESTROYS_VFS)


@dataclass(frozen=True)
class Cleanup:
    """How cleanup undoes the stale ledger records of one key kind: `planner.<room>.<function>`,
    run in `rank` order over all kinds (objects that vanish with the plan first, so their
    dependants are only forgotten)."""

    key_kind: str  # a KeyKind value
    room: str
    function: str
    rank: int


@dataclass(frozen=True)
class Merge:
    """A kind's merge identity: the DesiredState `field` it fills, from
    `desired.<room>.<offer>(ctx, spec, template)` per template and `<assemble>(ctx)` once."""

    field: str
    room: str
    offer: str = "offer"
    assemble: str = "assemble"


@dataclass(frozen=True)
class Parent:
    """A kind stacked on a parent link: the desired objects (a DesiredState field whose values
    have `.parent`) and the observed link kinds whose IFLA_LINK names the parent."""

    desired_field: str
    link_kinds: tuple[str, ...]


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str
    # CRD schema fragment: the properties it owns under spec, by JSON path ("" is spec itself,
    # "[]" a list's items): {"interfaceConfig[]": ("mtu",)}. models/parse.py's key sets and
    # the CRD check (tests/unit/test_kinds.py) are derived from these.
    spec_keys: Mapping[str, tuple[str, ...]]
    # Merge identity (a Merge), or `merged_with`: the kind whose merge also carries its fields.
    merge: Optional[Merge] = None
    merged_with: Optional[str] = None
    # Dependencies: kinds planned before this one (it reads what they decide, planner/context.py)
    # and, for a link stacked on another, its parent (planner/context.py `parent_of`, `depth`;
    # status_builder.py STACKED_KINDS).
    after: tuple[str, ...] = ()
    parent: Optional[Parent] = None
    # How it is read from the host: ObservedHost fields ("routes") and ObservedLink fields
    # ("links[].mtu") it reads.
    observed: tuple[str, ...] = ()
    # Planning: `planner.<plan_room>.plan`, or `planned_with` (the kind whose room plans it too),
    # and a cleanup per ledger key kind it writes.
    plan_room: Optional[str] = None
    planned_with: Optional[str] = None
    cleanups: tuple[Cleanup, ...] = ()
    # Ledger key kinds whose key names an interface (the status' `managed` marks).
    interface_keys: tuple[str, ...] = ()
    # Executor verbs (Verb values) with how the API-path guard reads each (API_PATH_ROLES).
    verbs: Mapping[str, str] = field(default_factory=dict)
    # Those of its verbs whose failure leaves the host unchanged only in some cases
    # (UNCHANGED_WHEN); the others follow VERBS' `one_write`.
    unchanged_when: Mapping[str, str] = field(default_factory=dict)
    # Status shape: HostNetworkStatus fields ("routes") and fields of its entries
    # ("interface_status[].mtu", "ovs_status[].ports") it fills.
    status: tuple[str, ...] = ()
    # Spec paths left out of the rollout identity while empty (models/spec.py
    # `network_spec_dict`): a field added after templates exist must not start a rollout of
    # every template when the agent is upgraded.
    omit_when_empty: tuple[str, ...] = ()

    @property
    def key_kinds(self) -> tuple[str, ...]:
        return tuple(cleanup.key_kind for cleanup in self.cleanups)
