"""HostNetwork status as published: the seed README's shape and field names, plus OVS bridges
and per-template results. Optional fields left as None are omitted on output (`to_api`), so an
unknown value is absent rather than a made-up `false`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dataclasses_json import LetterCase, dataclass_json


@dataclass_json(letter_case=LetterCase.CAMEL)
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


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class SriovStatus:
    total_vfs: Optional[int] = None
    num_vfs: Optional[int] = None
    vfs: Optional[list[VfStatus]] = None


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class AddressStatus:
    address: list[str] = field(default_factory=list)


@dataclass_json(letter_case=LetterCase.CAMEL)
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


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class RouteStatus:
    dev: Optional[str] = None
    dst: Optional[str] = None
    gw: Optional[str] = None
    src: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class RoutesStatus:
    ipv4: list[RouteStatus] = field(default_factory=list)
    ipv6: list[RouteStatus] = field(default_factory=list)


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class OvsPortStatus:
    name: str
    interfaces: list[str] = field(default_factory=list)
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class OvsBridgeStatus:
    name: str
    datapath_type: Optional[str] = None
    ports: list[OvsPortStatus] = field(default_factory=list)
    managed: Optional[bool] = None


@dataclass_json(letter_case=LetterCase.CAMEL)
@dataclass
class TemplateStatus:
    name: str
    state: str  # Applied | Failed | Conflict | NotSelected | Invalid | Pending
    observed_generation: Optional[int] = None
    message: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL)
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
    pending: int = 0


@dataclass_json(letter_case=LetterCase.CAMEL)
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


def drop_none(value: Any) -> Any:
    """Recursively drop None values from dicts (unknown = absent)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def to_api(status: HostNetworkStatus) -> dict:
    """The status as the API object's `status` field."""
    return drop_none(status.to_dict(encode_json=False))


def from_api(raw: dict) -> HostNetworkStatus:
    return HostNetworkStatus.from_dict(raw or {})
