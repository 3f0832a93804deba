"""HostNetwork status as published: the seed README's shape and field names, plus OVS bridges
and per-template results. Optional fields left as None are omitted on output (`to_api`), so an
unknown value is absent rather than a made-up `false`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Optional

from plumber_agent.models.codec import camel_json, field_table as _fields


MAX_TEMPLATE_MESSAGE = 1024  # characters of one status.templates[].message (docs/pitfalls.md 40)
MAX_PLANNED_ACTIONS = 20  # lines of status.templates[].plannedActions before "... and N more"
MAX_ADDRESS_CLAIMS = 256  # entries of status.addressClaims (the CRD's maxItems)


class TemplateState(StrEnum):
    """status.templates[].state. There is no "not yet processed" state: the status is published
    only at the end of a pass, when every template has one of these. The last three come from
    the fleet rollout (docs/rollout.md): a node changes its host only while it holds one of the
    template's maxUnavailable slots."""

    APPLIED = "Applied"  # the host matches the template
    FAILED = "Failed"  # the host refused, a dependency is missing, or cleanup failed
    CONFLICT = "Conflict"  # an older template wins a setting
    INVALID = "Invalid"  # the template has a bad value
    NOT_SELECTED = "NotSelected"  # its nodeSelector does not match this node
    # Needs a slot for this generation and none is free: keeps what it had (the last
    # generation it applied, or nothing); plannedActions says what it will do.
    WAITING = "Waiting"
    # Holds a slot and is changing the host (while a pass lasts; the slot Lease shows it too).
    APPLYING = "Applying"
    # spec.rollout.dryRun: computed and published its plan, changed nothing.
    PREVIEWED = "Previewed"


@camel_json
@dataclass
class VfStatus:
    id: int
    pci_addr: Optional[str] = None
    vf_driver: Optional[str] = None
    mac: Optional[str] = None
    vlan: Optional[int] = None
    qos: Optional[int] = None
    spoofchk: Optional[bool] = None
    trust: Optional[bool] = None
    link_state: Optional[str] = None  # auto, enable or disable (IFLA_VF_LINK_STATE)
    min_tx_rate: Optional[int] = None  # Mbit/s, 0 = no limit
    max_tx_rate: Optional[int] = None


@camel_json
@dataclass
class SriovStatus:
    total_vfs: Optional[int] = None
    num_vfs: Optional[int] = None
    vfs: Optional[list[VfStatus]] = None


@camel_json
@dataclass
class AddressStatus:
    address: list[str] = field(default_factory=list)


@camel_json
@dataclass
class BondMemberStatus:
    name: str
    state: Optional[str] = None  # active | backup
    mii_status: Optional[str] = None  # up | fail | down | back


@camel_json
@dataclass
class BondStatus:
    """A Linux bond's mode, its active member and each member's state (status_builder)."""

    mode: Optional[str] = None
    active_member: Optional[str] = None
    members: list[BondMemberStatus] = field(default_factory=list)


@camel_json
@dataclass
class LinuxBridgeStatus:
    """interfaceStatus[].linuxBridge: a Linux bridge's settings and its ports (each port's VLANs
    are on the port's own entry, bridgeVlans)."""

    stp: Optional[bool] = None
    vlan_filtering: Optional[bool] = None
    ports: list[str] = field(default_factory=list)


@camel_json
@dataclass
class InterfaceStatus:
    pf_name: str  # the seed calls every interface's name `pfName`
    mac: Optional[str] = None
    mtu: Optional[int] = None
    pci_addr: Optional[str] = None
    vendor_id: Optional[str] = None
    device_id: Optional[str] = None
    pf_driver: Optional[str] = None
    sriov_enabled: Optional[bool] = None
    sriov_status: Optional[SriovStatus] = None
    ipv4: Optional[AddressStatus] = None
    ipv6: Optional[AddressStatus] = None
    # Beyond the seed: what kind of link this is, for VLANs their parent and id.
    kind: Optional[str] = None
    parent: Optional[str] = None
    vlan_id: Optional[int] = None
    oper_state: Optional[str] = None
    # Linux bridges: the bridge an interface is a port of, that port's VLAN entries
    # ("10 pvid untagged", "100-199"), and on the bridge itself its settings and ports. For a
    # bond member, `master` is its bond.
    master: Optional[str] = None
    bridge_vlans: Optional[list[str]] = None
    linux_bridge: Optional[LinuxBridgeStatus] = None
    bond: Optional[BondStatus] = None  # for a Linux bond


@camel_json
@dataclass
class RouteStatus:
    """Never changed after it is built: the status builder reuses these between builds and
    to_api caches their encoding on them."""

    dev: Optional[str] = None
    dst: Optional[str] = None
    gw: Optional[str] = None
    src: Optional[str] = None


@camel_json
@dataclass
class RoutesStatus:
    ipv4: list[RouteStatus] = field(default_factory=list)
    ipv6: list[RouteStatus] = field(default_factory=list)


@camel_json
@dataclass
class OvsPortStatus:
    name: str
    interfaces: list[str] = field(default_factory=list)
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None


@camel_json
@dataclass
class OvsBridgeStatus:
    name: str
    datapath_type: Optional[str] = None
    ports: list[OvsPortStatus] = field(default_factory=list)
    managed: Optional[bool] = None


@camel_json
@dataclass
class TemplateStatus:
    name: str
    state: str  # a TemplateState
    observed_generation: Optional[int] = None
    message: Optional[str] = None
    # Waiting and Previewed only: the plan for the new generation (`bounded_plan`) and its
    # full length; absent (None) in every other state.
    planned_actions: Optional[list[str]] = None
    planned_action_count: Optional[int] = None


def bounded_plan(lines: list[str], limit: int = MAX_PLANNED_ACTIONS) -> list[str]:
    """At most `limit` plan lines, then "... and N more": a big plan (thousands of VLANs) must
    not grow the HostNetwork towards etcd's object limit; plannedActionCount keeps the total."""
    if len(lines) <= limit:
        return list(lines)
    return list(lines[:limit]) + [f"... and {len(lines) - limit} more"]


@camel_json
@dataclass
class StatusSummary:
    """Counts for `kubectl get hn` printer columns (JSONPath cannot count)."""

    interfaces: int = 0
    vfs: int = 0
    bridges: int = 0
    applied: int = 0
    failed: int = 0
    conflict: int = 0
    invalid: int = 0
    # Always 0: no template is ever published as pending (see TemplateState). Kept because it
    # is a field of the served v1 schema and a `kubectl get hn -o wide` column.
    pending: int = 0


@camel_json
@dataclass
class AddressClaimStatus:
    """status.addressClaims[]: an address this node holds from a template's pool
    (docs/address-pools.md), so `kubectl get hn -o yaml` shows where each came from."""

    address: str  # with the pool's prefix length, like 192.168.50.10/24
    interface: str
    template: str
    pool: str  # the pool's cidr


@camel_json
@dataclass(frozen=True)
class NodeCondition:
    """status.conditions[]: what keeps this node's agent from doing its part in the fleet
    (README "Errors, named"). Abnormal-true and present only while it holds (a healthy node
    writes nothing for it); no timestamps, so an unchanged condition never rewrites the
    status."""

    type: str     # LeaderElectionFailing
    status: str   # "True"
    reason: str   # an apierrors.ApiReason, or RenewDeadlineExceeded
    message: str


@camel_json
@dataclass
class HostNetworkStatus:
    interface_status: list[InterfaceStatus] = field(default_factory=list)
    routes: RoutesStatus = field(default_factory=RoutesStatus)
    ovs_status: Optional[list[OvsBridgeStatus]] = None
    ovs_error: Optional[str] = None
    templates: Optional[list[TemplateStatus]] = None
    # Set when the status had to be summarised to stay far below etcd's object limit.
    truncated: Optional[dict[str, Any]] = None
    summary: Optional[StatusSummary] = None
    address_claims: Optional[list[AddressClaimStatus]] = None
    conditions: Optional[list[NodeCondition]] = None


_SCALARS = frozenset((str, int, float, bool))


def _encode(value: Any) -> Any:
    cls = type(value)
    if cls in _SCALARS:
        return value
    if isinstance(value, Enum):
        return value.value
    if cls is RouteStatus:  # thousands per status, reused between builds: encoded once
        encoded = value.__dict__.get("_encoded")
        if encoded is None:
            encoded = value.__dict__["_encoded"] = {
                key: item for name, key in _fields(cls)
                if (item := getattr(value, name)) is not None}
        return encoded
    table = _fields(cls)
    if table is not None:
        out = {}
        for name, key in table:
            item = getattr(value, name)
            if item is not None:
                out[key] = item if type(item) in _SCALARS else _encode(item)
        return out
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items() if v is not None}
    return value


def drop_none(value: Any) -> Any:
    """Recursively drop None values from dicts (unknown = absent)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def to_api(status: HostNetworkStatus) -> dict:
    """The status as the API object's `status` field (None dropped, camelCase keys).

    Encoded with a cached field table rather than dataclasses-json's `to_dict`, which took
    0.2-0.4 s for a 1,000-interface status, the largest cost of a reconcile pass (bench B2);
    tests check both give the same dict."""
    return _encode(status)


def from_api(raw: dict) -> HostNetworkStatus:
    return HostNetworkStatus.from_dict(raw or {})
