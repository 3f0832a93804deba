"""Merge every template that selects this node into ONE desired state, field by field.

Why a separate, pure step: the planner must see a single goal per host object, and users must
be told, deterministically and on every node alike, which template won when two disagree.

Desired state is keyed per host object:
  pfs      by PF PCI address     numVfs, vfDriver, mtu (the MTU given to the PF's VF netdevs)
  links    by ifname             mtu, ipv4 address list, ipv6 address list (None = unmanaged)
  vlans    by ifname             (parent, VLAN id)
  routes   by (family, dst, metric)   (gw, dev, src)
  bridges  by name               (ports: the nodeInterface list, params)
Each field remembers which template(s) asked for it (`Owned.templates`).

CONFLICT RULE (README): every field is owned independently. When two templates that select the
node set the same field to different values -- numVfs / vfDriver / mtu of one PF, the MTU of one
interface (an SR-IOV `mtu` on a PF with a netdev is also that netdev's MTU), the address list of
one interface and family, the parent/VLAN id behind one VLAN interface name, the gw/dev/src of
the route to one dst+metric, the ports/params of one OVS bridge -- the OLDEST template wins that
field (metadata.creationTimestamp, ties broken by name: `Template.order_key`). The loser is
reported `Conflict` with a message naming the field and the winner; the winner stays `Applied`
with a note naming the loser. The loser's other, non-conflicting fields still apply. Templates
that agree on a value share the field and are not in conflict. A later SR-IOV selector that
matches nothing fails only that entry (`Failed: no PF matches ...`).

Per-template results: a TemplateState (models/status.py), with a message and the
observed generation. The reconciler later downgrades Applied to Failed when an action serving
the template fails (`MergeResult.mark_failed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.spec import OvsConfig, SriovConfig, Template, selects
from plumber_agent.models.status import MAX_TEMPLATE_MESSAGE, TemplateState, TemplateStatus

T = TypeVar("T")

APPLIED, FAILED, CONFLICT, NOT_SELECTED, INVALID = (
    TemplateState.APPLIED, TemplateState.FAILED, TemplateState.CONFLICT,
    TemplateState.NOT_SELECTED, TemplateState.INVALID)
# Which state a template shows when several things happened to it (higher wins).
_SEVERITY = {NOT_SELECTED: 0, APPLIED: 1, CONFLICT: 2, FAILED: 3, INVALID: 4}


@dataclass
class Owned(Generic[T]):
    """A desired value and the templates asking for it (the winner first)."""

    value: T
    templates: list[str] = field(default_factory=list)


@dataclass
class DesiredPf:
    pci_addr: str
    ifname: Optional[str] = None
    num_vfs: Optional[Owned[int]] = None
    vf_driver: Optional[Owned[str]] = None
    mtu: Optional[Owned[int]] = None  # for the VF netdevs (the PF netdev's MTU is in links)


@dataclass
class DesiredLink:
    ifname: str
    mtu: Optional[Owned[int]] = None
    ipv4: Optional[Owned[list[str]]] = None  # canonical, sorted; None = family unmanaged
    ipv6: Optional[Owned[list[str]]] = None

    def addresses(self, family: int) -> Optional[Owned[list[str]]]:
        return self.ipv4 if family == 4 else self.ipv6


@dataclass
class DesiredVlan:
    ifname: str
    parent: str
    vlan_id: int
    templates: list[str] = field(default_factory=list)


@dataclass
class DesiredRoute:
    family: int
    dst: Optional[str]  # None = default route
    gw: Optional[str] = None
    dev: Optional[str] = None
    src: Optional[str] = None
    metric: Optional[int] = None
    templates: list[str] = field(default_factory=list)

    def key(self) -> tuple:
        return (self.family, self.dst, self.metric or 0)


@dataclass
class DesiredBridge:
    name: str
    interfaces: list[str] = field(default_factory=list)  # [] = bridge only
    datapath_type: Optional[str] = None
    bond_mode: Optional[str] = None
    lacp: Optional[str] = None
    mtu_request: Optional[int] = None
    templates: list[str] = field(default_factory=list)

    def port_name(self) -> Optional[str]:
        return bond_port_name(self.name, self.interfaces)


def bond_port_name(bridge: str, interfaces: list[str]) -> Optional[str]:
    """One interface: the port is named after it. Several: a bond port named after the bridge
    (at most 15 characters, so it is a valid netdev name too)."""
    if not interfaces:
        return None
    if len(interfaces) == 1:
        return interfaces[0]
    return f"{bridge[:10]}-bond"


@dataclass
class DesiredState:
    pfs: dict[str, DesiredPf] = field(default_factory=dict)
    links: dict[str, DesiredLink] = field(default_factory=dict)
    vlans: dict[str, DesiredVlan] = field(default_factory=dict)
    routes: dict[tuple, DesiredRoute] = field(default_factory=dict)
    bridges: dict[str, DesiredBridge] = field(default_factory=dict)
    # Templates that opted in to changes touching the path to the API server.
    allow_api_server_disruption: set[str] = field(default_factory=set)

    def is_empty(self) -> bool:
        return not (self.pfs or self.links or self.vlans or self.routes or self.bridges)


@dataclass
class TemplateResult:
    name: str
    state: str
    observed_generation: Optional[int] = None
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        text = "; ".join(self.notes)
        return text if len(text) <= MAX_TEMPLATE_MESSAGE else text[:MAX_TEMPLATE_MESSAGE - 3] + "..."

    def to_status(self) -> TemplateStatus:
        return TemplateStatus(name=self.name, state=self.state,
                              observed_generation=self.observed_generation,
                              message=self.message or None)

    def raise_to(self, state: str, note: Optional[str] = None) -> None:
        if _SEVERITY[state] > _SEVERITY[self.state]:
            self.state = state
        if note and note not in self.notes:
            self.notes.append(note)


@dataclass
class MergeResult:
    desired: DesiredState
    results: dict[str, TemplateResult]  # by template name

    def mark_failed(self, template: str, message: str) -> None:
        """Downgrade a template (an action serving it failed, or the planner refused)."""
        result = self.results.get(template)
        if result is not None and result.state in (APPLIED, CONFLICT, FAILED):
            result.raise_to(FAILED, message)


# ----------------------------------------------------------------------------------------------


@dataclass
class _Field:
    value: Any
    templates: list[str]
    describe: str


class _Merger:
    """First writer (in conflict-rule order) owns a field; later disagreeing writers lose."""

    def __init__(self, results: dict[str, TemplateResult]):
        self.fields: dict[tuple, _Field] = {}
        self.results = results

    def offer(self, field_id: tuple, value: Any, template: str, describe: str) -> bool:
        current = self.fields.get(field_id)
        if current is None:
            self.fields[field_id] = _Field(value, [template], describe)
            return True
        if current.value == value:
            if template not in current.templates:
                current.templates.append(template)
            return True
        winner = current.templates[0]
        if winner == template:
            self.results[template].raise_to(
                CONFLICT, f"{describe}: two entries of this template disagree "
                          f"({_show(current.value)} vs {_show(value)}); the first one is used")
            return False
        self.results[template].raise_to(
            CONFLICT, f"{describe}: conflicts with template {winner!r}, which is older and wins "
                      f"({_show(current.value)}; this template wants {_show(value)})")
        self.results[winner].raise_to(
            APPLIED, f"{describe}: wins over template {template!r} (which wants {_show(value)})")
        return False

    def get(self, field_id: tuple) -> Optional[Owned]:
        f = self.fields.get(field_id)
        return Owned(f.value, list(f.templates)) if f else None


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def resolve_pfs(entry: SriovConfig, observed: ObservedHost) -> list[str]:
    """PCI addresses of the PFs an sriovConfig entry selects (sorted)."""
    kind, value = entry.selector()
    if kind == "pfName":
        pf = observed.pf_by_ifname(value)
        return [pf.pci_addr] if pf else []
    if kind == "pciAddr":
        return [value] if value in observed.pfs else []
    return sorted(pci for pci, pf in observed.pfs.items()
                  if pf.vendor_id == entry.vendor_id and pf.device_id == entry.device_id)


def _pf_label(pci: str, observed: ObservedHost) -> str:
    ifname = observed.pfs[pci].ifname
    return f"PF {pci} ({ifname})" if ifname else f"PF {pci}"


def _bridge_value(ovs: OvsConfig) -> dict:
    params = ovs.params
    return {"interfaces": ovs.interfaces(),
            "datapath_type": params.datapath_type if params else None,
            "bond_mode": params.bond_mode if params else None,
            "lacp": params.lacp if params else None,
            "mtu_request": params.mtu_request if params else None}


def merge(templates: list[Template], labels: dict, observed: ObservedHost) -> MergeResult:
    """All templates -> (desired state of this node, per-template results). Pure."""
    results: dict[str, TemplateResult] = {}
    merger = _Merger(results)
    allow: set[str] = set()
    pf_ifnames: dict[str, Optional[str]] = {}
    vlan_order: list[str] = []
    route_order: list[tuple] = []
    bridge_order: list[str] = []
    link_order: list[str] = []

    for tpl in sorted(templates, key=Template.order_key):
        if tpl.spec is None:
            results[tpl.name] = TemplateResult(tpl.name, INVALID, tpl.generation,
                                               list(tpl.problems) or ["invalid spec"])
            continue
        if not selects(tpl.spec.node_selector, labels or {}):
            results[tpl.name] = TemplateResult(tpl.name, NOT_SELECTED, tpl.generation)
            continue
        results[tpl.name] = TemplateResult(tpl.name, APPLIED, tpl.generation)
        spec, name = tpl.spec, tpl.name
        if spec.allow_api_server_disruption:
            allow.add(name)

        for i, entry in enumerate(spec.sriov_config):
            kind, value = entry.selector()
            pcis = resolve_pfs(entry, observed)
            if not pcis:
                results[name].raise_to(
                    FAILED, f"spec.sriovConfig[{i}]: no PF matches {kind} {value} on this node")
                continue
            for pci in pcis:
                label = _pf_label(pci, observed)
                pf_ifnames[pci] = observed.pfs[pci].ifname
                if entry.num_vfs is not None:
                    merger.offer(("pf", pci, "numVfs"), entry.num_vfs, name, f"numVfs of {label}")
                if entry.vf_driver is not None:
                    merger.offer(("pf", pci, "vfDriver"), entry.vf_driver, name,
                                 f"vfDriver of {label}")
                if entry.mtu is not None:
                    merger.offer(("pf", pci, "mtu"), entry.mtu, name, f"mtu of {label}")
                    ifname = observed.pfs[pci].ifname
                    if ifname:
                        if ifname not in link_order:
                            link_order.append(ifname)
                        merger.offer(("link", ifname, "mtu"), entry.mtu, name,
                                     f"MTU of interface {ifname}")

        for iface in spec.interface_config:
            if iface.name not in link_order:
                link_order.append(iface.name)
            if iface.mtu is not None:
                merger.offer(("link", iface.name, "mtu"), iface.mtu, name,
                             f"MTU of interface {iface.name}")
            for family, addrs in ((4, iface.ipv4), (6, iface.ipv6)):
                if addrs is not None:
                    merger.offer(("link", iface.name, f"ipv{family}"), sorted(addrs.address), name,
                                 f"IPv{family} addresses of interface {iface.name}")
            for vlan in iface.vlan:
                vname = vlan.ifname(iface.name)
                if merger.offer(("vlan", vname), {"parent": iface.name, "vlan_id": vlan.id}, name,
                                f"VLAN interface {vname}") and vname not in vlan_order:
                    vlan_order.append(vname)

        if spec.routes is not None:
            for family, routes in ((4, spec.routes.ipv4), (6, spec.routes.ipv6)):
                for route in routes:
                    key = (family, route.dst, route.metric or 0)
                    if merger.offer(("route",) + key,
                                    {"gw": route.gw, "dev": route.dev, "src": route.src}, name,
                                    f"route to {route.dst or 'default'} (IPv{family}, metric "
                                    f"{route.metric or 0})") and key not in route_order:
                        route_order.append(key)

        for ovs in spec.ovs_config:
            if merger.offer(("bridge", ovs.bridge_name), _bridge_value(ovs), name,
                            f"OVS bridge {ovs.bridge_name}") and ovs.bridge_name not in bridge_order:
                bridge_order.append(ovs.bridge_name)

    desired = DesiredState()
    for pci in sorted(pf_ifnames):
        pf = DesiredPf(pci_addr=pci, ifname=pf_ifnames[pci],
                       num_vfs=merger.get(("pf", pci, "numVfs")),
                       vf_driver=merger.get(("pf", pci, "vfDriver")),
                       mtu=merger.get(("pf", pci, "mtu")))
        if pf.num_vfs or pf.vf_driver or pf.mtu:
            desired.pfs[pci] = pf
    for ifname in sorted(link_order):
        link = DesiredLink(ifname, mtu=merger.get(("link", ifname, "mtu")),
                           ipv4=merger.get(("link", ifname, "ipv4")),
                           ipv6=merger.get(("link", ifname, "ipv6")))
        if link.mtu or link.ipv4 or link.ipv6:
            desired.links[ifname] = link
    for vname in sorted(vlan_order):
        owned = merger.get(("vlan", vname))
        desired.vlans[vname] = DesiredVlan(vname, owned.value["parent"], owned.value["vlan_id"],
                                           owned.templates)
    for key in sorted(route_order, key=lambda k: (k[0], k[1] or "", k[2])):
        owned = merger.get(("route",) + key)
        desired.routes[key] = DesiredRoute(family=key[0], dst=key[1], metric=key[2] or None,
                                           templates=owned.templates, **owned.value)
    for bname in sorted(bridge_order):
        owned = merger.get(("bridge", bname))
        desired.bridges[bname] = DesiredBridge(bname, templates=owned.templates, **owned.value)
    desired.allow_api_server_disruption = allow
    return MergeResult(desired=desired, results=dict(sorted(results.items())))
