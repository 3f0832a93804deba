"""HostNetworkTemplate spec: the typed dataclasses a parsed template is made of.

models/parse.py builds them from a raw document it has checked (dataclasses-json, in
models/codec.py, does not type-check on load); models/fleet.py holds what the fleet side reads
from a template (node selection, maxUnavailable, offered slots). Field names are the seed
README's exactly.

Route configuration mirrors the status `routes` shape: `spec.routes.ipv4[]` / `spec.routes.ipv6[]`
with `dst` (omitted = default route), `gw`, `dev`, `src` and an optional `metric`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from plumber_agent.kinds import omit_when_empty
from plumber_agent.models.bond_spec import BondConfig
from plumber_agent.models.codec import camel_json, plain_dict
from plumber_agent.models.drain_spec import DEFAULT_DRAIN, DEFAULT_DRAIN_TIMEOUT_S
from plumber_agent.models.lbridge_spec import LinuxBridgeConfig
from plumber_agent.models.vfattrs_spec import VfConfig



@camel_json
@dataclass
class SriovConfig:
    pf_name: Optional[str] = None
    pci_addr: Optional[str] = None
    vendor_id: Optional[str] = None
    device_id: Optional[str] = None
    num_vfs: Optional[int] = None
    vf_driver: Optional[str] = None
    mtu: Optional[int] = None
    vfs: list[VfConfig] = field(default_factory=list)  # per-VF attributes (vfattrs_spec.py)

    def selector(self) -> tuple[str, str]:
        """('pfName', 'eno2') / ('pciAddr', '0000:03:00.0') / ('vendorDevice', '8086:1528')."""
        if self.pf_name is not None:
            return ("pfName", self.pf_name)
        if self.pci_addr is not None:
            return ("pciAddr", self.pci_addr)
        return ("vendorDevice", f"{self.vendor_id}:{self.device_id}")


@camel_json
@dataclass
class VlanConfig:
    id: int
    name: Optional[str] = None

    def ifname(self, parent: str) -> str:
        return self.name or f"{parent}.{self.id}"




@camel_json
@dataclass
class PoolConfig:
    """interfaceConfig[].ipv4/ipv6.pool: every selected node gets one address of this pool
    (docs/address-pools.md). Values are canonical text; an absent range end means the first or
    last usable address of the CIDR (plumber_agent.models.pool.Pool works them out)."""

    cidr: str
    range_start: Optional[str] = None
    range_end: Optional[str] = None
    exclude: list[str] = field(default_factory=list)  # addresses or CIDRs never handed out


@camel_json
@dataclass
class AddressConfig:
    address: list[str] = field(default_factory=list)
    pool: Optional[PoolConfig] = None


@camel_json
@dataclass
class InterfaceConfig:
    name: str
    mtu: Optional[int] = None
    vlan: list[VlanConfig] = field(default_factory=list)
    ipv4: Optional[AddressConfig] = None
    ipv6: Optional[AddressConfig] = None


@camel_json
@dataclass
class OvsParams:
    mtu_request: Optional[int] = None
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None
    datapath_type: Optional[str] = None


@camel_json
@dataclass
class OvsConfig:
    bridge_name: str
    node_interface: Optional[str] = None
    params: Optional[OvsParams] = None

    def interfaces(self) -> list[str]:
        """'eth1,eth2' -> ['eth1', 'eth2'] (two or more make a bond, as the original did)."""
        if not self.node_interface:
            return []
        return [part.strip() for part in self.node_interface.split(",")]


@camel_json
@dataclass
class RouteConfig:
    dst: Optional[str] = None
    gw: Optional[str] = None
    dev: Optional[str] = None
    src: Optional[str] = None
    metric: Optional[int] = None


IPV6_DEFAULT_METRIC = 1024  # the kernel's metric for an IPv6 route added without one (or with 0)


def kernel_metric(family: int, metric: Optional[int]) -> int:
    """The metric the kernel gives a route of `metric` (None: none given): what it reads back as,
    so a route is identified the same way in the spec, the desired state and the host."""
    if not metric:
        return IPV6_DEFAULT_METRIC if family == 6 else 0
    return metric


@camel_json
@dataclass
class RoutesConfig:
    ipv4: list[RouteConfig] = field(default_factory=list)
    ipv6: list[RouteConfig] = field(default_factory=list)


DEFAULT_MAX_UNAVAILABLE = "25%"  # a Deployment's default: at most a quarter of the fleet at risk


@camel_json
@dataclass
class RolloutConfig:
    """spec.rollout: how a change reaches the fleet (docs/rollout.md). Not part of what a node
    applies, so editing it alone starts no rollout."""

    max_unavailable: Union[int, str] = DEFAULT_MAX_UNAVAILABLE  # >= 1, or "1%".."100%"
    dry_run: bool = False
    drain: str = DEFAULT_DRAIN.value  # models/drain_spec.py: none | pods | node
    drain_timeout_seconds: int = DEFAULT_DRAIN_TIMEOUT_S


@camel_json
@dataclass
class TemplateSpec:
    node_selector: dict[str, str] = field(default_factory=dict)
    sriov_config: list[SriovConfig] = field(default_factory=list)
    interface_config: list[InterfaceConfig] = field(default_factory=list)
    ovs_config: list[OvsConfig] = field(default_factory=list)
    routes: Optional[RoutesConfig] = None
    bond_config: list[BondConfig] = field(default_factory=list)  # models/bond_spec.py
    linux_bridge_config: list[LinuxBridgeConfig] = field(default_factory=list)  # lbridge_spec.py
    # Opt-in to changes touching the interface/address/route this node uses to reach the API
    # server; without it such changes are refused (the node is never cut off by accident).
    allow_api_server_disruption: bool = False
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def network_part(self) -> "TemplateSpec":
        """A copy with rollout at its default: what decides whether an edit is a new rollout
        (two specs that differ only in rollout change no host)."""
        return dataclasses.replace(self, rollout=RolloutConfig())

    @classmethod
    def from_network_dict(cls, raw: dict) -> "TemplateSpec":
        """The inverse of `network_spec_dict` (a spec kept in the node's rollout state file)."""
        return cls.from_dict(raw).network_part()


def network_spec_dict(spec: TemplateSpec) -> dict:
    """The network part of a spec as plain JSON-able data (camelCase keys, rollout left out),
    stable for equal specs, for the node's rollout state file."""
    raw = plain_dict(spec)  # = spec.to_dict(encode_json=True), without dataclasses-json
    raw.pop("rollout", None)
    # A field added after templates existed (an absent pool: kinds/<kind>.py omit_when_empty)
    # is left out while empty rather than stored as null, so a spec without it keeps the dict
    # (and the rollout identity hashed from it) it had before: upgrading the agent starts no
    # rollout.
    for path in omit_when_empty():
        _omit_empty(raw, path.split("."))
    return raw


def _omit_empty(node: Any, steps: list[str]) -> None:
    """Drop the value at `steps` ("interfaceConfig[]", "ipv4", "pool") when None or empty."""
    step, rest = steps[0], steps[1:]
    key = step[:-2] if step.endswith("[]") else step
    if not isinstance(node, dict) or key not in node:
        return
    if not rest and not step.endswith("[]"):
        if node[key] in (None, [], {}):
            node.pop(key)
        return
    children = (node[key] if isinstance(node[key], list) else []) if step.endswith("[]") \
        else [node[key]]
    for child in children:
        if rest:
            _omit_empty(child, rest)




@dataclass
class Template:
    """A HostNetworkTemplate as the reconciler needs it: identity, generation, parsed spec."""

    name: str
    generation: int
    creation_timestamp: str
    spec: Optional[TemplateSpec]
    problems: list[str] = field(default_factory=list)  # validation problems (spec is None then)
    uid: str = ""
    # status.rollout.offered when the status is about this generation: {node: slot index} the
    # status writer lets try next (docs/rollout.md). Never the limit: no status field is.
    offered: dict[str, int] = field(default_factory=dict)

    def order_key(self) -> tuple[str, str]:
        """The conflict rule: the oldest template wins; ties broken by name."""
        return (self.creation_timestamp or "", self.name)
