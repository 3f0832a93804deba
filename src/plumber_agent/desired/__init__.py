"""Merge every template that selects this node into ONE desired state, field by field.

Why a separate, pure step: the planner must see a single goal per host object, and users must
be told, deterministically and on every node alike, which template won when two disagree.

Desired state is keyed per host object:
  pfs      by PF PCI address     numVfs, vfDriver, mtu (the MTU given to the PF's VF netdevs)
  links    by ifname             mtu, ipv4 address list, ipv6 address list (None = unmanaged)
  vlans    by ifname             (parent, VLAN id)
  routes   by (family, dst, metric)   (gw, dev, src)
  bridges  by name               (ports: the nodeInterface list, params)
  bonds    by name               (mode, options, members); each member by its name (its bond)
  linux_bridges       by name     (stp, vlan_filtering)
  linux_bridge_ports  by ifname   (bridge, VLAN entries)
  vfs      by (PF pci, VF id)    one Owned per attribute (mac, vlan+qos, trust...: vfattrs.py)
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

One module per kind (sriov.py, links.py, vlan.py, routes.py, ovs.py), each with its Desired*
type, an `offer` of a template's fields and an `assemble` of the winners; base.py holds the
ownership rule they share. MERGERS below is derived from the kinds registry (kinds/).
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from plumber_agent.desired import ifref
from plumber_agent.desired.base import MergeContext, Owned, TemplateResult
from plumber_agent.desired.bond import DesiredBond
from plumber_agent.desired.lbridge import DesiredLinuxBridge, DesiredLinuxBridgePort
from plumber_agent.desired.links import DesiredLink
from plumber_agent.desired.ovs import DesiredBridge, bond_port_name
from plumber_agent.desired.routes import DesiredRoute
from plumber_agent.desired.sriov import DesiredPf, resolve_pfs
from plumber_agent.desired.vfattrs import DesiredVf
from plumber_agent.desired.vlan import DesiredVlan
from plumber_agent.kinds import merge_order
from plumber_agent.models.bond_spec import member_clashes
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.fleet import selects
from plumber_agent.models.spec import Template
from plumber_agent.models.status import TemplateState

__all__ = ["DesiredBond", "DesiredBridge", "DesiredLink", "DesiredLinuxBridge",
           "DesiredLinuxBridgePort", "DesiredPf", "DesiredRoute", "DesiredState", "DesiredVlan",
           "MergeResult", "Owned", "TemplateResult", "bond_port_name", "merge",
           "resolve_pfs"]


@dataclass
class DesiredState:
    pfs: dict[str, DesiredPf] = field(default_factory=dict)
    links: dict[str, DesiredLink] = field(default_factory=dict)
    vlans: dict[str, DesiredVlan] = field(default_factory=dict)
    routes: dict[tuple, DesiredRoute] = field(default_factory=dict)
    bridges: dict[str, DesiredBridge] = field(default_factory=dict)
    bonds: dict[str, DesiredBond] = field(default_factory=dict)  # desired/bond.py
    linux_bridges: dict[str, DesiredLinuxBridge] = field(default_factory=dict)  # lbridge.py
    linux_bridge_ports: dict[str, DesiredLinuxBridgePort] = field(default_factory=dict)
    vfs: dict[tuple[str, int], DesiredVf] = field(default_factory=dict)  # vfattrs.py
    # Templates that opted in to changes touching the path to the API server.
    allow_api_server_disruption: set[str] = field(default_factory=set)
    # Templates the merge already failed (an SR-IOV selector matching nothing here...): like a
    # planner note, such a failure holds what the template applied (planner `_cleanup`).
    failing: set[str] = field(default_factory=set)
    # An interface reference (pci:, mac:, altname:) matched nothing or several here: a device
    # netdev appearing or changing may be the one it waits for (interest.py).
    unresolved_references: bool = False

    def is_empty(self) -> bool:
        return not any(getattr(self, kind.merge.field) for kind in merge_order())


def _merger(merge) -> tuple:
    room = importlib.import_module(f"{__name__}.{merge.room}")
    return (merge.field, getattr(room, merge.offer), getattr(room, merge.assemble))


# Per kind (kinds/<kind>.py merge): (DesiredState field, offer a template's
# fields, assemble the winners). Offered in KINDS order within each template (sriov.py offers
# a PF netdev's MTU as the interface's MTU before interfaceConfig does).
MERGERS = tuple(_merger(kind.merge) for kind in merge_order())


@dataclass
class MergeResult:
    desired: DesiredState
    results: dict[str, TemplateResult]  # by template name

    def mark_failed(self, template: str, message: str) -> None:
        """Downgrade a template (an action serving it failed, or the planner refused)."""
        result = self.results.get(template)
        if result is not None and result.state in (TemplateState.APPLIED, TemplateState.CONFLICT,
                                                   TemplateState.FAILED):
            result.raise_to(TemplateState.FAILED, message)



def merge(templates: list[Template], labels: dict, observed: ObservedHost) -> MergeResult:
    """All templates -> (desired state of this node, per-template results). Pure."""
    results: dict[str, TemplateResult] = {}
    ctx = MergeContext(observed, results)
    references = ifref.Resolver(observed)
    desired = DesiredState()
    for tpl in sorted(templates, key=Template.order_key):
        if tpl.spec is None:
            results[tpl.name] = TemplateResult(tpl.name, TemplateState.INVALID, tpl.generation,
                                               list(tpl.problems) or ["invalid spec"])
            continue
        if not selects(tpl.spec.node_selector, labels or {}):
            results[tpl.name] = TemplateResult(tpl.name, TemplateState.NOT_SELECTED, tpl.generation)
            continue
        results[tpl.name] = TemplateResult(tpl.name, TemplateState.APPLIED, tpl.generation)
        if tpl.spec.allow_api_server_disruption:
            desired.allow_api_server_disruption.add(tpl.name)
        spec, unresolved = _resolved(references, tpl.spec, results[tpl.name])
        desired.unresolved_references |= unresolved
        for _, offer, _ in MERGERS:
            offer(ctx, spec, tpl.name)
    for attribute, _, assemble in MERGERS:
        setattr(desired, attribute, assemble(ctx))
    desired.failing = {name for name, result in results.items()
                       if result.state == TemplateState.FAILED}
    return MergeResult(desired=desired, results=dict(sorted(results.items())))


def _resolved(references: ifref.Resolver, spec, result: TemplateResult):
    """The spec with its interface references (pci:, mac:, altname:) replaced by this pass's
    kernel names; a reference that matches nothing or several fails the template (which then
    holds what it applied) and leaves its entry out."""
    found = references.resolve_spec(spec)
    result.interface_references = dict(sorted(found.references.items()))
    for problem in found.problems:
        result.raise_to(TemplateState.FAILED, f"{problem}: its entry is not applied")
    if found.references and not found.problems:
        return _without_clashes(found.spec, result), False
    return found.spec, bool(found.problems)


_SPEC_LISTS = {"bondConfig": "bond_config", "interfaceConfig": "interface_config",
               "ovsConfig": "ovs_config"}


def _without_clashes(spec, result: TemplateResult):
    """The resolved spec without the entries whose NIC, written two ways, is a bond member
    and something else too (the check parse_bonds made on the names as written)."""
    clashes = member_clashes(spec.bond_config, spec.interface_config, spec.ovs_config)
    dropped: dict[str, set[int]] = {}
    for where, (listed, index), problem in clashes:
        result.raise_to(TemplateState.FAILED, f"{where}: {problem} (as its references resolve on this "
                                "node): its entry is not applied")
        dropped.setdefault(_SPEC_LISTS[listed], set()).add(index)
    if not dropped:
        return spec
    return dataclasses.replace(spec, **{
        attr: [entry for i, entry in enumerate(getattr(spec, attr)) if i not in indices]
        for attr, indices in dropped.items()})
