"""The planning context every kind's room shares: the inputs, the output being built, and the
few facts one kind decides and another reads.

Why shared facts are fields here, named, and not hidden in each room: the kinds really are
coupled, and the coupling should be visible in one place --
  planned_links    bonds, VLANs and Linux bridges this plan creates (bond.py, vlan.py,
                   lbridge.py) -> a parent/dev/port "exists" for vlan.py, links.py,
                   addresses.py, routes.py, ovs.py, lbridge.py
  doomed_links     netdevs this plan removes (VF driver rebinds in sriov.py, VLAN and bond
                   deletes in vlan.py's and bond.py's cleanup) -> their addresses and MTUs are
                   forgotten, not undone
  unbridged_ports  interfaces this plan takes out of a Linux bridge (lbridge.py's cleanup)
                   -> their VLAN entries go with them: forgotten, not undone
  numvfs_changing  PFs whose VFs this plan destroys or creates (sriov.py) -> VF binds, VF
                   MTUs and VF attributes (vfattrs.py) wait for the next round; their records
                   are forgotten on cleanup
  wanted           ledger keys the desired state still wants (every room) -> cleanup undoes
                   the rest
"""
from __future__ import annotations

import ipaddress
from typing import Any, Optional, Sequence

from plumber_agent.desired import DesiredState
from plumber_agent.kinds import parents
from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.plan import ApiServerPath, PlanIssue, PlanResult
from plumber_agent.models.spec import kernel_metric

# The kinds stacked on a parent link, and the observed link kinds that are (kinds/).
_PARENTS = parents()
_PARENT_LINK_KINDS = frozenset(kind for parent in _PARENTS for kind in parent.link_kinds)


class PlanContext:
    def __init__(self, desired: DesiredState, observed: ObservedHost, records: dict,
                 api_server: Optional[ApiServerPath | Sequence[ApiServerPath]],
                 undo_allowed: frozenset = frozenset()):
        """`api_server`: the kernel's path to each API endpoint (apipath.py guards them);
        `undo_allowed`: templates whose undo may change that path (being rolled back)."""
        self.desired = desired
        self.observed = observed
        self.records = records or {}
        if isinstance(api_server, ApiServerPath):
            api_server = [api_server]
        self.api_paths: list[ApiServerPath] = list(api_server or ())
        self.undo_allowed = frozenset(undo_allowed)
        self.out: list[tuple[tuple, Action]] = []
        self.result = PlanResult()
        self.wanted: set[str] = set()
        self.planned_links: set[str] = set()
        self.doomed_links: set[str] = set()
        self.numvfs_changing: set[str] = set()
        self.unbridged_ports: set[str] = set()
        self._noted: set[tuple] = set()

    # -- output -----------------------------------------------------------------------------

    def emit(self, phase: Phase, sub: tuple, verb: Verb, target: str, params: dict | None = None,
             *, templates: list[str], key: Optional[str] = None, op: Optional[LedgerOp] = None,
             prior: Any = None, reason: Optional[str] = None, stale_intent: bool = False,
             drift: bool = False, api_risk: bool = False) -> Action:
        """Add an action; `sub` orders it inside its phase (e.g. VLAN depth, parents first)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}  # unset = absent
        action = Action(phase=phase, verb=verb, target=target, params=params,
                        templates=list(templates), ledger_key=key, ledger_op=op,
                        api_risk=api_risk)
        if op == LedgerOp.CLAIM:
            rec = self.records.get(key)
            # A pending record whose change the host shows did NOT happen (stale_intent) has
            # no say: what is there now is the prior (the executor rewrites the intent).
            action.ledger_prior = rec.get("prior") if rec and not stale_intent else prior
            drift = drift or (rec is not None and not rec.get("pending")
                              and rec.get("value") == action.ledger_value())
        action.drift = drift
        action.reason = reason or (("drift; " if drift else "") + _reason(templates))
        self.out.append(((int(phase),) + sub + (verb, target), action))
        return action

    def note(self, target: str, message: str, templates: list[str]) -> None:
        """A per-template failure (a missing parent...): no action for it."""
        if (target, message) not in self._noted:
            self._noted.add((target, message))
            self.result.notes.append(PlanIssue(target, message, list(templates)))

    def refuse(self, target: str, message: str, templates: list[str]) -> None:
        """A change that would hurt the node: no action, and the executor logs it."""
        self.result.refusals.append(PlanIssue(target, message, list(templates)))

    def forget(self, phase: Phase, key: str, why: str) -> None:
        """Drop a ledger record whose object needs no undo (gone, as it was, not ours)."""
        self.emit(phase, ("~", key), Verb.FORGET, key, templates=[], key=key,
                  op=LedgerOp.RELEASE, reason=f"cleanup: {why}")

    def release(self, phase: Phase, sub: tuple, verb: Verb, target: str, params: dict | None,
                key: str, rec: dict) -> None:
        """Undo a ledger record's change, then drop the record."""
        names = rec.get("templates") or []
        self.emit(phase, sub, verb, target, params, templates=list(names), key=key,
                  op=LedgerOp.RELEASE,
                  reason="cleanup" + (f" (was {', '.join(names)})" if names else ""))

    def finish(self) -> PlanResult:
        self.out.sort(key=lambda item: _sortable(item[0]))
        self.result.actions = [action for _, action in self.out]
        return self.result

    # -- queries ----------------------------------------------------------------------------

    def allowed(self, templates: list[str]) -> bool:
        """Did one of `templates` set allowApiServerDisruption?"""
        return any(t in self.desired.allow_api_server_disruption for t in templates)

    def link_exists(self, ifname: str) -> bool:
        return ifname in self.observed.links or ifname in self.planned_links

    def depth(self, ifname: str) -> int:
        """0 for a plain device, 1 for a VLAN on it, 2 for a VLAN on a VLAN..."""
        seen = 0
        current = ifname
        while seen < 8:
            parent = self.parent_of(current)
            if not parent:
                return seen
            seen += 1
            current = parent
        return seen

    def parent_of(self, ifname: str) -> Optional[str]:
        """The link `ifname` is stacked on: as wanted, else as found (kinds/<kind>.py parent)."""
        for parent in _PARENTS:
            wanted = getattr(self.desired, parent.desired_field).get(ifname)
            if wanted:
                return wanted.parent
        obs = self.observed.links.get(ifname)
        return obs.parent if obs and obs.kind in _PARENT_LINK_KINDS else None

    def vfs_of(self, pci: str) -> list:
        pf = self.observed.pfs.get(pci)
        return pf.vfs if pf else []


def canonical_cidr(cidr: str) -> str:
    iface = ipaddress.ip_interface(cidr)
    return f"{iface.ip.compressed}/{iface.network.prefixlen}"


def is_ipv6_link_local(cidr: str) -> bool:
    ip = ipaddress.ip_interface(cidr).ip
    return ip.version == 6 and ip.is_link_local


def family_of(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def canonical_metric(family: int, metric: Optional[int]) -> int:
    return kernel_metric(family, metric)


def _reason(templates: list[str]) -> str:
    if not templates:
        return ""
    return ("template " if len(templates) == 1 else "templates ") + ", ".join(templates)


def _sortable(key: tuple) -> tuple:
    """Mixed int/str sub-keys: compare by (type, value) so sorting never raises."""
    return tuple((0, k) if isinstance(k, int) else (1, str(k)) for k in key)
