"""plan(desired, observed, ledger records) -> ordered host actions. Pure: no I/O, no clock.

Why pure: every promise of architecture §3 (final-state addresses, ownership, drift repair, the
API-server guard, a converged host doing nothing) is decided here, so it is tested here, on data.

Rules, in short:
- Compare canonical forms only (sorted lists, compressed IPv6, no IPv6 link-local); keys the
  user did not set are not compared. A converged host gives an EMPTY plan.
- Ownership: every action that creates or changes a host object carries `ledger_key`,
  `ledger_op='claim'` and `ledger_prior` (None for created objects, else the value found).
  The ledger keeps the first prior it saw. Ledger records whose key the desired state no longer
  wants are undone exactly (`ledger_op='release'`) in the DELETE_*/RESTORE_* phases; a record
  whose object is already gone (or is about to vanish with its parent) becomes a ledger-only
  `forget` action. Nothing without a ledger record is ever deleted, except addresses of a
  family a template manages (the seed's final-state rule); each such removal is claimed, one
  ledger record per address, so cleanup adds it back.
- Pending records (write-ahead intents the executor wrote before a change it may not have
  made: host/ledger.py) are safe either way: cleanup compares the host with the prior (forget
  when nothing changed) and deletes a created object only when the host shows it is the one we
  were creating (same VLAN parent/id, same route gateway/dev, OVS rows tagged as ours);
  anything else is forgotten, never deleted. A same-named link that does not match a pending
  VLAN record is left alone like any link we did not create.
- SR-IOV: one `set_num_vfs` per PF (the driver writes 0 first between non-zero counts; the
  action is marked destroys_vfs=True whenever existing VFs go away). VF driver binds and VF MTUs
  are planned only for VFs that exist: when numVfs changes, VFs appear after the write, so the
  reconciler's re-plan (after execute, at most 3 rounds) binds them. This keeps the plan pure
  and every action concrete (chosen over wildcard "<pf>/vf*" actions expanded by the executor).
- The API server guard: never delete the address the node uses to reach the API server, nor
  delete/replace/add a route that changes the path to it, unless a template owning that field
  set allowApiServerDisruption. A refused change yields no action and a `refusals` entry.
- Addresses: deletions run before additions on the same interface (final state and cleanup
  alike): deleting a primary IPv4 address deletes its secondaries unless promote_secondaries
  is set, so adding first could lose the very address being added (seen on a real kernel).
- Missing parents (VLAN parent, route dev, OVS port netdev neither present nor planned) and a
  VLAN MTU above its parent's give no action and a per-template note / refusal.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Optional

from plumber_agent.desired import DesiredState
from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.keys import (KeyKind, key_addr, key_bridge, key_mtu, key_numvfs,
                                       key_port, key_route, key_vfdriver, key_vlan, LedgerKey,
                                       parse_key)
from plumber_agent.models.observed import MAIN_TABLE, ObservedHost, ObservedRoute, ovs_managed
from plumber_agent.models.plan import ApiServerPath, PlanIssue, PlanResult

IPV6_DEFAULT_METRIC = 1024  # the kernel's metric for an IPv6 route added without one

__all__ = ["ApiServerPath", "PlanIssue", "PlanResult", "plan"]


def canonical_cidr(cidr: str) -> str:
    iface = ipaddress.ip_interface(cidr)
    return f"{iface.ip.compressed}/{iface.network.prefixlen}"


def is_ipv6_link_local(cidr: str) -> bool:
    ip = ipaddress.ip_interface(cidr).ip
    return ip.version == 6 and ip.is_link_local


def canonical_metric(family: int, metric: Optional[int]) -> int:
    if not metric:
        return IPV6_DEFAULT_METRIC if family == 6 else 0
    return metric


def _route_dict(route: ObservedRoute) -> dict:
    return {"family": route.family, "dst": route.dst, "gw": route.gw, "dev": route.dev,
            "src": route.src, "metric": canonical_metric(route.family, route.metric)}


def _reason(templates: list[str]) -> str:
    if not templates:
        return ""
    return ("template " if len(templates) == 1 else "templates ") + ", ".join(templates)


# ----------------------------------------------------------------------------------------------


class _Planner:
    def __init__(self, desired: DesiredState, observed: ObservedHost, records: dict,
                 api_server: Optional[ApiServerPath]):
        self.desired = desired
        self.observed = observed
        self.records = records or {}
        self.api = api_server
        self.last_guard_risky = False  # set by the API-path guards for the action they let by
        self.out: list[tuple[tuple, Action]] = []
        self.result = PlanResult()
        self.wanted: set[str] = set()  # ledger keys the desired state still wants
        self.planned_links: set[str] = set()  # VLANs this plan creates
        self.doomed_links: set[str] = set()  # links this plan deletes
        self.numvfs_changing: set[str] = set()  # PFs whose VFs this plan destroys/creates
        self._noted: set[tuple] = set()
        self._current_routes: Optional[list[dict]] = None  # main table, as dicts (lazy)
        # Addresses the final-state rule removed earlier, by ifname (ledger records).
        self.removed_addrs: dict[str, list[tuple[str, dict]]] = {}
        for key, rec in self.records.items():
            if key.startswith(f"{KeyKind.ADDR}:") and not rec.get("created"):
                try:
                    parsed = parse_key(key)
                except ValueError:
                    continue  # cleanup reports the unreadable record
                self.removed_addrs.setdefault(parsed.name, []).append((parsed.cidr, rec))

    # -- output helpers -------------------------------------------------------------------

    def emit(self, phase: Phase, sub: tuple, verb: str, target: str, params: dict | None = None,
             *, templates: list[str], key: Optional[str] = None, op: Optional[str] = None,
             prior: Any = None, reason: Optional[str] = None,
             stale_intent: bool = False, drift: bool = False) -> Action:
        params = {k: v for k, v in (params or {}).items() if v is not None}  # unset = absent
        action = Action(phase=phase, verb=verb, target=target, params=params,
                        templates=list(templates), ledger_key=key, ledger_op=op)
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
        if (target, message) not in self._noted:
            self._noted.add((target, message))
            self.result.notes.append(PlanIssue(target, message, list(templates)))

    def refuse(self, target: str, message: str, templates: list[str]) -> None:
        self.result.refusals.append(PlanIssue(target, message, list(templates)))

    def allowed(self, templates: list[str]) -> bool:
        return any(t in self.desired.allow_api_server_disruption for t in templates)

    # -- queries --------------------------------------------------------------------------

    def link_exists(self, ifname: str) -> bool:
        return ifname in self.observed.links or ifname in self.planned_links

    def depth(self, ifname: str) -> int:
        """0 for a plain device, 1 for a VLAN on it, 2 for a VLAN on a VLAN..."""
        seen = 0
        current = ifname
        while seen < 8:
            vlan = self.desired.vlans.get(current)
            link = self.observed.links.get(current)
            parent = vlan.parent if vlan else (link.parent if link and link.kind == "vlan" else None)
            if not parent:
                return seen
            seen += 1
            current = parent
        return seen

    def effective_mtu(self, ifname: str) -> Optional[int]:
        link = self.desired.links.get(ifname)
        if link and link.mtu:
            return link.mtu.value
        obs = self.observed.links.get(ifname)
        if obs is not None:
            return obs.mtu
        vlan = self.desired.vlans.get(ifname)
        return self.effective_mtu(vlan.parent) if vlan else None

    def creation_mtu(self, ifname: str) -> Optional[int]:
        """The MTU a VLAN this plan creates starts with: its parent's at LINK_CREATE time
        (a PF netdev's MTU is already changed then, in SRIOV_MTU)."""
        vlan = self.desired.vlans.get(ifname)
        if vlan is None:
            return None
        parent = self.observed.links.get(vlan.parent)
        if parent is None:
            return self.creation_mtu(vlan.parent)
        dl = self.desired.links.get(vlan.parent)
        if dl and dl.mtu and self.observed.pf_by_ifname(vlan.parent) is not None:
            return dl.mtu.value
        return parent.mtu

    def parent_of(self, ifname: str) -> Optional[str]:
        vlan = self.desired.vlans.get(ifname)
        if vlan:
            return vlan.parent
        obs = self.observed.links.get(ifname)
        return obs.parent if obs and obs.kind == "vlan" else None

    def api_src_ips(self) -> set[str]:
        return {self.api.src} if self.api and self.api.src else set()

    # -- SR-IOV -----------------------------------------------------------------------------

    def plan_sriov(self) -> None:
        for pci, dpf in self.desired.pfs.items():
            pf = self.observed.pfs.get(pci)
            if pf is None:
                continue  # merge resolved it against this observation; cannot happen
            if dpf.num_vfs is not None:
                want = dpf.num_vfs.value
                self.wanted.add(key_numvfs(pci))
                if want != pf.num_vfs:
                    if pf.total_vfs and want > pf.total_vfs:
                        self.note(pci, f"numVfs {want} of PF {pci} is above its sriov_totalvfs "
                                       f"{pf.total_vfs}", dpf.num_vfs.templates)
                    else:
                        params = {"num_vfs": want}
                        if pf.num_vfs > 0:
                            params["destroys_vfs"] = True
                        self.emit(Phase.SRIOV_NUMVFS, (pci,), Verb.SET_NUM_VFS, pci, params,
                                  templates=dpf.num_vfs.templates, key=key_numvfs(pci),
                                  op=LedgerOp.CLAIM, prior=pf.num_vfs)
                        self.numvfs_changing.add(pci)
            for vf in sorted(pf.vfs, key=lambda v: v.id):
                if dpf.vf_driver is not None:
                    self.wanted.add(key_vfdriver(vf.pci_addr))
                if dpf.mtu is not None and vf.ifname:
                    self.wanted.add(key_mtu(vf.ifname))
            if pci in self.numvfs_changing:
                continue  # VFs come and go: bind drivers / set MTUs on the next round
            for vf in sorted(pf.vfs, key=lambda v: v.id):
                if dpf.vf_driver is not None and vf.driver != dpf.vf_driver.value:
                    self.emit(Phase.SRIOV_VF_DRIVER, (pci, vf.id), Verb.BIND_VF_DRIVER,
                              vf.pci_addr, {"driver": dpf.vf_driver.value, "pf": pci},
                              templates=dpf.vf_driver.templates,
                              key=key_vfdriver(vf.pci_addr), op=LedgerOp.CLAIM, prior=vf.driver)
                    if vf.ifname:
                        self.doomed_links.add(vf.ifname)  # its netdev goes with the old driver
                    continue  # MTU of the new netdev: next round
                if dpf.mtu is not None and vf.ifname:
                    link = self.observed.links.get(vf.ifname)
                    if link is not None and link.mtu != dpf.mtu.value:
                        self.emit(Phase.SRIOV_MTU, (1, vf.ifname), Verb.SET_MTU, vf.ifname,
                                  {"mtu": dpf.mtu.value}, templates=dpf.mtu.templates,
                                  key=key_mtu(vf.ifname), op=LedgerOp.CLAIM, prior=link.mtu)

    # -- links ------------------------------------------------------------------------------

    def plan_vlans(self) -> None:
        for vname in sorted(self.desired.vlans, key=lambda n: (self.depth(n), n)):
            dv = self.desired.vlans[vname]
            key = key_vlan(vname)
            self.wanted.add(key)
            if not self.link_exists(dv.parent):
                self.note(vname, f"VLAN {vname}: parent interface {dv.parent} does not exist on "
                                 "this node", dv.templates)
                continue
            obs = self.observed.links.get(vname)
            rec = self.records.get(key)
            sub = (self.depth(vname), vname)
            params = {"parent": dv.parent, "vlan_id": dv.vlan_id}
            if obs is not None:
                if obs.kind == "vlan" and obs.parent == dv.parent and obs.vlan_id == dv.vlan_id:
                    if obs.admin_up is False:
                        self.emit(Phase.LINK_UP, sub, Verb.SET_UP, vname, templates=dv.templates)
                    continue
                if rec is None or (rec.get("pending") and not _vlan_matches(obs, rec)):
                    self.note(vname, f"interface {vname} already exists and is not VLAN "
                                     f"{dv.vlan_id} on {dv.parent}; it was not created by "
                                     "HostPlumber, so it is left alone", dv.templates)
                    continue
                self.emit(Phase.LINK_CREATE, sub + (0,), Verb.DELETE_LINK, vname,
                          templates=dv.templates, drift=True)
            self.emit(Phase.LINK_CREATE, sub + (1,), Verb.ENSURE_VLAN, vname, params,
                      templates=dv.templates, key=key, op=LedgerOp.CLAIM, prior=None)
            self.emit(Phase.LINK_UP, sub, Verb.SET_UP, vname, templates=dv.templates)
            self.planned_links.add(vname)

    def plan_mtus(self) -> None:
        for ifname, dl in self.desired.links.items():
            if dl.mtu is None:
                continue
            want = dl.mtu.value
            self.wanted.add(key_mtu(ifname))
            if not self.link_exists(ifname):
                self.note(ifname, f"interface {ifname} does not exist on this node",
                          dl.mtu.templates)
                continue
            obs = self.observed.links.get(ifname)
            current = obs.mtu if obs is not None else self.creation_mtu(ifname)
            if current == want:
                continue
            parent = self.parent_of(ifname)
            if parent is not None:
                parent_mtu = self.effective_mtu(parent)
                if parent_mtu is not None and want > parent_mtu:
                    self.refuse(ifname, f"MTU {want} of VLAN {ifname} is above the MTU "
                                        f"{parent_mtu} of its parent {parent}; refused",
                                dl.mtu.templates)
                    continue
            if self.observed.pf_by_ifname(ifname) is not None:
                phase, sub = Phase.SRIOV_MTU, (0, ifname)  # PF netdev before its VFs
            else:
                phase, sub = Phase.LINK_MTU, (self.depth(ifname), ifname)  # parents first
            self.emit(phase, sub, Verb.SET_MTU, ifname, {"mtu": want}, templates=dl.mtu.templates,
                      key=key_mtu(ifname), op=LedgerOp.CLAIM, prior=current)

    def plan_addresses(self) -> None:
        for ifname, dl in self.desired.links.items():
            for family in (4, 6):
                owned = dl.addresses(family)
                if owned is None:
                    continue
                want = set(owned.value)
                for cidr in want:
                    self.wanted.add(key_addr(ifname, cidr))
                if not self.link_exists(ifname):
                    self.note(ifname, f"interface {ifname} does not exist on this node",
                              owned.templates)
                    continue
                obs = self.observed.links.get(ifname)
                have_raw = (obs.ipv4 if family == 4 else obs.ipv6) if obs is not None else []
                have = {canonical_cidr(c) for c in have_raw}
                for cidr in sorted(want - have):
                    key = key_addr(ifname, cidr)
                    rec = self.records.get(key)
                    if rec is not None and not rec.get("created"):
                        # We removed it once (it pre-existed); now wanted again: give it back
                        # and forget, so it counts as pre-existing again.
                        self.emit(Phase.ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                                  {"address": cidr}, templates=owned.templates, key=key,
                                  op=LedgerOp.RELEASE)
                    else:
                        self.emit(Phase.ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                                  {"address": cidr}, templates=owned.templates, key=key,
                                  op=LedgerOp.CLAIM, prior=None)
                for cidr in sorted(have - want):
                    if family == 6 and is_ipv6_link_local(cidr):
                        continue
                    key = key_addr(ifname, cidr)
                    rec = self.records.get(key)
                    if rec is not None and rec.get("created"):
                        continue  # ours and no longer wanted: cleanup removes it
                    self.wanted.add(key)
                    if self._guard_address(ifname, cidr, owned.templates):
                        action = self.emit(Phase.ADDRESS, (ifname, family, 0), Verb.DELETE_ADDRESS,
                                           ifname, {"address": cidr}, templates=owned.templates,
                                           key=key, op=LedgerOp.CLAIM, prior=cidr)
                        action.api_risk = self.last_guard_risky
                # Removals done earlier stay wanted while the family is managed.
                for cidr, rec in self.removed_addrs.get(ifname, ()):
                    if _family_of(cidr) == family and cidr not in want:
                        self.wanted.add(key_addr(ifname, cidr))

    def _guard_address(self, ifname: str, cidr: str, templates: list[str]) -> bool:
        """False (and a refusal) when removing `cidr` would cut the node off the API server;
        when a template allows it, True with `last_guard_risky` set so the action is marked."""
        ip = cidr.split("/")[0]
        self.last_guard_risky = ip in self.api_src_ips()
        if self.last_guard_risky and not self.allowed(templates):
            self.refuse(ifname, f"not removing {cidr} from {ifname}: this node reaches the API "
                                f"server {self.api.ip} from it (set allowApiServerDisruption "
                                "to allow)", templates)
            return False
        return True

    # -- routes -----------------------------------------------------------------------------

    def observed_route(self, family: int, dst: Optional[str], metric: int) -> Optional[ObservedRoute]:
        for route in self.observed.routes:
            if (route.family == family and route.dst == dst and route.table == MAIN_TABLE
                    and canonical_metric(family, route.metric) == metric):
                return route
        return None

    def _covers_api(self, route: dict) -> bool:
        ip = ipaddress.ip_address(self.api.ip)
        if route["family"] != ip.version:
            return False
        return route["dst"] is None or ip in ipaddress.ip_network(route["dst"])

    def _api_path(self, routes: list[dict]) -> Optional[tuple]:
        """(dev, gw) of the route the kernel would pick for the API server's address."""
        ip = ipaddress.ip_address(self.api.ip)
        best = None
        for r in routes:
            if r["family"] != ip.version:
                continue
            net = ipaddress.ip_network(r["dst"] or ("0.0.0.0/0" if ip.version == 4 else "::/0"))
            if ip not in net:
                continue
            rank = (-net.prefixlen, r["metric"])
            if best is None or rank < best[0]:
                best = (rank, (r["dev"], r["gw"]))
        return best[1] if best else None

    def _guard_route(self, before: Optional[dict], after: Optional[dict],
                     templates: list[str], target: str) -> bool:
        """Refuse a route change that changes how the node reaches the API server: compare the
        route the kernel would pick for the API server's address before and after it.
        Sets `last_guard_risky` when the change is let through only because it is allowed."""
        self.last_guard_risky = False
        if self.api is None or not self.api.ip:
            return True
        if not any(self._covers_api(r) for r in (before, after) if r is not None):
            return True  # neither the old nor the new route can carry the API traffic
        if self._current_routes is None:
            self._current_routes = [_route_dict(r) for r in self.observed.routes
                                    if r.table == MAIN_TABLE]
        current = self._current_routes
        ident = before or after
        ident_key = (ident["family"], ident["dst"], ident["metric"])
        changed = [r for r in current if (r["family"], r["dst"], r["metric"]) != ident_key]
        if after is not None:
            changed.append(after)
        old, new = self._api_path(current), self._api_path(changed)
        if old is None or (new is not None and old[1] == new[1]
                           and (old[0] == new[0] or new[0] is None)):
            return True
        if self.allowed(templates):
            self.last_guard_risky = True
            return True
        self.refuse(target, f"not changing the route to {ident['dst'] or 'default'}: it would "
                            f"change how this node reaches the API server {self.api.ip} (set "
                            "allowApiServerDisruption to allow)", templates)
        return False

    def plan_routes(self) -> None:
        for (family, dst, _metric), dr in self.desired.routes.items():
            metric = canonical_metric(family, dr.metric)
            key = key_route(family, dst, metric)
            self.wanted.add(key)
            target = dst or "default"
            if dr.dev and not self.link_exists(dr.dev):
                self.note(target, f"route to {target}: dev {dr.dev} does not exist on this node",
                          dr.templates)
                continue
            want = {"family": family, "dst": dst, "gw": dr.gw, "dev": dr.dev, "src": dr.src,
                    "metric": metric}
            obs = self.observed_route(family, dst, metric)
            if obs is not None:
                same = (obs.gw == dr.gw and (dr.dev is None or obs.dev == dr.dev)
                        and (dr.src is None or obs.src == dr.src))
                if same:
                    continue
            before = _route_dict(obs) if obs is not None else None
            if not self._guard_route(before, want, dr.templates, target):
                continue
            rec = self.records.get(key)
            stale = bool(rec and rec.get("pending")
                         and (obs is None or not _route_matches(obs, rec)))
            action = self.emit(Phase.ROUTE, (family, target, metric), Verb.ADD_ROUTE, target, want,
                               templates=dr.templates, key=key, op=LedgerOp.CLAIM,
                               prior=before if obs is not None else None, stale_intent=stale)
            action.api_risk = self.last_guard_risky

    # -- OVS --------------------------------------------------------------------------------

    def plan_ovs(self) -> None:
        if not self.desired.bridges:
            return
        if self.observed.bridges is None:
            for name, db in self.desired.bridges.items():
                self.wanted.add(key_bridge(name))
                port = db.port_name()
                if port:
                    self.wanted.add(key_port(name, port))
                self.note(name, f"OVS bridge {name}: Open vSwitch is not available "
                                f"({self.observed.ovs_error or 'unknown reason'})", db.templates)
            return
        for name, db in self.desired.bridges.items():
            key = key_bridge(name)
            self.wanted.add(key)
            obs = self.observed.bridges.get(name)
            if obs is None:
                self.emit(Phase.OVS, (name,), Verb.ENSURE_BRIDGE, name,
                          {"datapath_type": db.datapath_type}, templates=db.templates, key=key,
                          op=LedgerOp.CLAIM, prior=None)
            elif db.datapath_type and obs.datapath_type != db.datapath_type:
                if not ovs_managed(obs.external_ids):
                    self.note(name, f"OVS bridge {name} exists with datapath_type "
                                    f"{obs.datapath_type or 'system'} and was not created by "
                                    "HostPlumber: it is left as it is", db.templates)
                    continue
                self.emit(Phase.OVS, (name,), Verb.ENSURE_BRIDGE, name,
                          {"datapath_type": db.datapath_type}, templates=db.templates, key=key,
                          op=LedgerOp.CLAIM, prior={"datapath_type": obs.datapath_type or None})
            port = db.port_name()
            if not port:
                continue
            pkey = key_port(name, port)
            self.wanted.add(pkey)
            missing = [i for i in db.interfaces if not self.link_exists(i)]
            if missing:
                self.note(name, f"OVS bridge {name}: nodeInterface {', '.join(missing)} does not "
                                "exist on this node (and no template creates it)", db.templates)
                continue
            want = {"bridge": name, "interfaces": list(db.interfaces), "bond_mode": db.bond_mode,
                    "lacp": db.lacp, "mtu_request": db.mtu_request}
            oport = next((p for p in obs.ports if p.name == port), None) if obs else None
            prior = None
            if oport is not None:
                have = _port_config(oport)
                same = (sorted(have["interfaces"]) == sorted(db.interfaces)
                        and (db.bond_mode is None or have["bond_mode"] == db.bond_mode)
                        and (db.lacp is None or have["lacp"] == db.lacp)
                        and (db.mtu_request is None or have["mtu_request"] == db.mtu_request))
                if same:
                    continue
                if not ovs_managed(oport.external_ids):
                    self.note(name, f"OVS port {port} on bridge {name} exists with other settings "
                                    "and was not created by HostPlumber: it is left as it is",
                              db.templates)
                    continue
                prior = have
            self.emit(Phase.OVS_PORT, (name, port), Verb.ENSURE_PORT, port, want,
                      templates=db.templates, key=pkey, op=LedgerOp.CLAIM, prior=prior)

    # -- cleanup ----------------------------------------------------------------------------

    def plan_cleanup(self) -> None:
        stale = {k: r for k, r in self.records.items() if k not in self.wanted}
        # Objects that vanish with this plan come first, so their dependants are just forgotten.
        handlers = {KeyKind.VLAN: self.cleanup_vlan, KeyKind.NUMVFS: self.cleanup_numvfs,
                    KeyKind.BRIDGE: self.cleanup_bridge, KeyKind.PORT: self.cleanup_port,
                    KeyKind.ROUTE: self.cleanup_route, KeyKind.ADDR: self.cleanup_addr,
                    KeyKind.VFDRIVER: self.cleanup_vfdriver, KeyKind.MTU: self.cleanup_mtu}
        by_kind: dict[KeyKind, list[str]] = {kind: [] for kind in handlers}
        for key in sorted(stale):
            kind = key.split(":", 1)[0]
            if kind in by_kind:
                by_kind[KeyKind(kind)].append(key)
        for kind, handler in handlers.items():
            for key in by_kind[kind]:
                rec = stale[key]
                try:
                    if not isinstance(rec, dict):
                        raise TypeError(f"{type(rec).__name__} is not a record")
                    handler(parse_key(key), key, rec)
                except (TypeError, KeyError, ValueError, AttributeError) as exc:
                    # A hand-edited or foreign ledger must not stop every pass: leave the
                    # object as it is and say so.
                    templates = rec.get("templates") if isinstance(rec, dict) else None
                    self.note(key, f"ledger record {key} is unreadable ({exc}); the object is "
                                   "left as it is", templates if isinstance(templates, list) else [])

    def forget(self, phase: Phase, key: str, rec: dict, why: str) -> None:
        self.emit(phase, ("~", key), Verb.FORGET, key, templates=[], key=key, op=LedgerOp.RELEASE,
                  reason=f"cleanup: {why}")

    def _cleanup_reason(self, rec: dict) -> str:
        names = rec.get("templates") or []
        return "cleanup" + (f" (was {', '.join(names)})" if names else "")

    def _release(self, phase: Phase, sub: tuple, verb: str, target: str, params: dict | None,
                 key: str, rec: dict) -> None:
        self.emit(phase, sub, verb, target, params, templates=list(rec.get("templates") or []),
                  key=key, op=LedgerOp.RELEASE, reason=self._cleanup_reason(rec))

    def cleanup_vlan(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        ifname = parsed.name
        obs = self.observed.links.get(ifname)
        if obs is None or obs.kind != "vlan":
            self.forget(Phase.DELETE_LINK, key, rec, f"{ifname} is already gone")
            return
        if not rec.get("created") or (rec.get("pending") and not _vlan_matches(obs, rec)):
            self.forget(Phase.DELETE_LINK, key, rec, f"{ifname} was not created by HostPlumber")
            return
        self.doomed_links.add(ifname)
        self._release(Phase.DELETE_LINK, (-self.depth(ifname), ifname), Verb.DELETE_LINK, ifname,
                      None, key, rec)

    def _vfs_of(self, pci: str) -> list:
        pf = self.observed.pfs.get(pci)
        return pf.vfs if pf else []

    def cleanup_numvfs(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        pci = parsed.name
        pf = self.observed.pfs.get(pci)
        prior = rec.get("prior")
        if pf is None or not isinstance(prior, int) or pf.num_vfs == prior:
            self.forget(Phase.RESTORE_NUMVFS, key, rec,
                        f"PF {pci} is gone" if pf is None else f"PF {pci} already has {prior} VFs")
            return
        params = {"num_vfs": prior}
        if pf.num_vfs > 0:
            params["destroys_vfs"] = True
        self.numvfs_changing.add(pci)
        self._release(Phase.RESTORE_NUMVFS, (pci,), Verb.SET_NUM_VFS, pci, params, key, rec)

    def _bridges(self) -> dict:
        return self.observed.bridges or {}

    def cleanup_bridge(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        if self.observed.bridges is None:
            return  # OVS unreachable: keep the record, undo when it is back
        name = parsed.name
        obs = self._bridges().get(name)
        if obs is None:
            self.forget(Phase.DELETE_OVS, key, rec, f"bridge {name} is already gone")
        elif rec.get("created") and rec.get("pending") and not ovs_managed(obs.external_ids):
            self.forget(Phase.DELETE_OVS, key, rec, f"bridge {name} was not created by HostPlumber")
        elif rec.get("created"):
            self._release(Phase.DELETE_OVS, (name,), Verb.DELETE_BRIDGE, name, None, key, rec)
        else:
            prior = (rec.get("prior") or {}).get("datapath_type")
            if prior and prior != obs.datapath_type:
                self._release(Phase.DELETE_OVS, (name,), Verb.ENSURE_BRIDGE, name,
                              {"datapath_type": prior}, key, rec)
            else:
                self.forget(Phase.DELETE_OVS, key, rec, f"bridge {name} is as it was")

    def cleanup_port(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        if self.observed.bridges is None:
            return
        bridge, port = parsed.name, parsed.port
        obs_bridge = self._bridges().get(bridge)
        oport = next((p for p in obs_bridge.ports if p.name == port), None) if obs_bridge else None
        if oport is None:
            self.forget(Phase.DELETE_OVS_PORT, key, rec, f"port {port} is already gone")
        elif rec.get("created") and rec.get("pending") and not ovs_managed(oport.external_ids):
            self.forget(Phase.DELETE_OVS_PORT, key, rec,
                        f"port {port} was not created by HostPlumber")
        elif rec.get("created"):
            self._release(Phase.DELETE_OVS_PORT, (bridge, port), Verb.DELETE_PORT, port,
                          {"bridge": bridge}, key, rec)
        elif rec.get("pending") and _port_config(oport) == rec.get("prior"):
            self.forget(Phase.DELETE_OVS_PORT, key, rec, f"port {port} is as it was")
        else:
            prior = dict(rec.get("prior") or {})
            prior["bridge"] = bridge
            self._release(Phase.DELETE_OVS_PORT, (bridge, port), Verb.ENSURE_PORT, port, prior,
                          key, rec)

    def cleanup_route(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        family, dst, metric = parsed.family, parsed.dst, parsed.metric
        obs = self.observed_route(family, dst, metric)
        target = dst or "default"
        if rec.get("created"):
            if obs is None:
                self.forget(Phase.DELETE_ROUTE, key, rec, f"route to {target} is already gone")
                return
            if rec.get("pending") and not _route_matches(obs, rec):
                self.forget(Phase.DELETE_ROUTE, key, rec,
                            f"route to {target} is not the one HostPlumber was adding")
                return
            before = _route_dict(obs)
            if not self._guard_route(before, None, [], target):
                return
            self._release(Phase.DELETE_ROUTE, (family, target, metric), Verb.DELETE_ROUTE, target,
                          before, key, rec)
            return
        prior = rec.get("prior")
        if not isinstance(prior, dict):
            self.forget(Phase.DELETE_ROUTE, key, rec, f"no prior route to {target} recorded")
            return
        if obs is not None and _route_dict(obs) == prior:
            self.forget(Phase.DELETE_ROUTE, key, rec, f"route to {target} is as it was")
            return
        if prior.get("dev") and not self.link_exists(prior["dev"]):
            self.forget(Phase.DELETE_ROUTE, key, rec, f"dev {prior['dev']} is gone")
            return
        if not self._guard_route(_route_dict(obs) if obs else None, prior, [], target):
            return
        self._release(Phase.DELETE_ROUTE, (family, target, metric), Verb.ADD_ROUTE, target,
                      dict(prior), key, rec)

    def cleanup_addr(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        ifname, cidr = parsed.name, parsed.cidr
        obs = self.observed.links.get(ifname)
        if obs is None or ifname in self.doomed_links:
            self.forget(Phase.DELETE_ADDRESS, key, rec, f"{ifname} is gone")
            return
        family = _family_of(cidr)
        have = {canonical_cidr(c) for c in (obs.ipv4 if family == 4 else obs.ipv6)}
        if rec.get("created"):
            if cidr not in have:
                self.forget(Phase.DELETE_ADDRESS, key, rec, f"{cidr} is already gone")
            elif self._guard_address(ifname, cidr, []):
                self._release(Phase.DELETE_ADDRESS, (ifname, family, 0), Verb.DELETE_ADDRESS, ifname,
                              {"address": cidr}, key, rec)
        elif cidr in have:
            self.forget(Phase.DELETE_ADDRESS, key, rec, f"{cidr} is back already")
        else:
            # Re-add what the final-state rule removed, AFTER deleting ours: deleting a primary
            # IPv4 address deletes its secondaries (promote_secondaries=0, the kernel default),
            # so make-before-break would lose the address we give back.
            self._release(Phase.DELETE_ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                          {"address": cidr}, key, rec)

    def cleanup_vfdriver(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        vf_pci = parsed.name
        found = [(pci, vf) for pci, pf in self.observed.pfs.items() for vf in pf.vfs
                 if vf.pci_addr == vf_pci]
        prior = rec.get("prior")
        if not found:
            self.forget(Phase.RESTORE_VF_DRIVER, key, rec, f"VF {vf_pci} is gone")
            return
        if found[0][0] in self.numvfs_changing:
            self.forget(Phase.RESTORE_VF_DRIVER, key, rec,
                        f"VF {vf_pci} goes away with its PF's numVfs change")
            return
        if not prior:
            self.forget(Phase.RESTORE_VF_DRIVER, key, rec, f"VF {vf_pci} had no driver before")
            return
        pci, vf = found[0]
        if vf.driver == prior:
            self.forget(Phase.RESTORE_VF_DRIVER, key, rec, f"VF {vf_pci} has {prior} already")
            return
        if vf.ifname:
            self.doomed_links.add(vf.ifname)
        self._release(Phase.RESTORE_VF_DRIVER, (pci, vf.id), Verb.BIND_VF_DRIVER, vf_pci,
                      {"driver": prior, "pf": pci}, key, rec)

    def cleanup_mtu(self, parsed: LedgerKey, key: str, rec: dict) -> None:
        ifname = parsed.name
        obs = self.observed.links.get(ifname)
        prior = rec.get("prior")
        doomed_vfs = {vf.ifname for pci in self.numvfs_changing for vf in self._vfs_of(pci)}
        if (obs is None or ifname in self.doomed_links or ifname in doomed_vfs
                or not isinstance(prior, int) or obs.mtu == prior):
            self.forget(Phase.RESTORE_MTU, key, rec, f"MTU of {ifname} needs no restore")
            return
        # Children before parents: a parent's MTU may only go down once its VLANs' did.
        self._release(Phase.RESTORE_MTU, (-self.depth(ifname), ifname), Verb.SET_MTU, ifname,
                      {"mtu": prior}, key, rec)

    # ------------------------------------------------------------------------------------

    def run(self) -> PlanResult:
        self.plan_sriov()
        self.plan_vlans()
        self.plan_mtus()
        self.plan_addresses()
        self.plan_routes()
        self.plan_ovs()
        self.plan_cleanup()
        self.out.sort(key=lambda item: _sortable(item[0]))
        self.result.actions = [action for _, action in self.out]
        return self.result


def _vlan_matches(obs, rec: dict) -> bool:
    """Is observed link `obs` the VLAN a (pending) record was creating?"""
    value = rec.get("value")
    return (isinstance(value, dict) and obs.kind == "vlan" and obs.parent == value.get("parent")
            and obs.vlan_id == value.get("vlan_id"))


def _route_matches(obs: ObservedRoute, rec: dict) -> bool:
    """Is observed route `obs` the one a (pending) record was adding (gateway, dev, src)?"""
    value = rec.get("value")
    if not isinstance(value, dict):
        return False
    return (obs.gw == value.get("gw")
            and all(value.get(k) is None or getattr(obs, k) == value[k] for k in ("dev", "src")))


def _family_of(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def _port_config(port) -> dict:
    mtus = {i.mtu_request for i in port.interfaces}
    return {"interfaces": sorted(i.name for i in port.interfaces), "bond_mode": port.bond_mode,
            "lacp": port.lacp, "mtu_request": mtus.pop() if len(mtus) == 1 else None}


def _sortable(key: tuple) -> tuple:
    """Mixed int/str sub-keys: compare by (type, value) so sorting never raises."""
    return tuple((0, k) if isinstance(k, int) else (1, str(k)) for k in key)


def plan(desired: DesiredState, observed: ObservedHost, ledger_records: dict, *,
         api_server: Optional[ApiServerPath] = None) -> PlanResult:
    """The ordered actions that take `observed` to `desired`, plus refusals and notes."""
    return _Planner(desired, observed, ledger_records, api_server).run()
