"""The API-path guard: a pass must not change how this node reaches the API server unless a
template asks for it (allowApiServerDisruption: true).

Why one guard over the whole plan, after every room planned, and not a check per kind: the path
to an endpoint is decided by the kernel's route lookup, and many kinds of change can alter it --
a route (a more specific one, or a new default), an address (one that makes the endpoint local,
or whose connected prefix covers it, or the source the node dials from), the state of the
device that carries it (deleted, its MTU, enslaved to an OVS bridge or a bond), or the SR-IOV PF under it.
The guard therefore asks, for every endpoint the agent dials:

  before  the kernel's own answer to `ip route get ENDPOINT` (host layer: RTM_GETROUTE), given
          as `ApiServerPath`s;
  after   the same lookup on a model of the routing tables (`PathModel`: the observed main table
          and a local table derived from the addresses) with the planned change applied:
          longest prefix, then lowest metric; a local address wins; removing an address
          removes its connected prefix, the routes that named it as source and, for the last
          IPv4 address of a device, every IPv4 route through that device (fib_disable_ip);
          deleting, enslaving or unbinding a device removes its routes.

A change is on the API path (refused unless one of its templates opts in; marked api_risk when
allowed) when the modelled path of an endpoint changes (device, gateway, source, local), or when
it changes a device carrying the path -- the uplink: the output device of an endpoint's route,
its VLAN parents, its master, the members of a bridge or bond it is, and the SR-IOV PF (and VF)
under them: MTU, master/bridge membership, SR-IOV, deletion. A change that merely touches the
uplink without altering the path (another address on it, a route through it to elsewhere) is
let through and still marked api_risk, so the reconciler probes the API server after the pass.

Undo (cleanup of a record) is judged the same way, with one difference: an undo restoring a
device's prior value (an MTU, numVfs, a VF driver, a port's settings) puts back what the node ran
with, so it is let through and probed; undoing a route or address that would change the path, or
removing a device the path now runs over (a VLAN, an OVS port or bridge, a bond or a bond
member), is refused unless a
template it served still opts in or is being rolled back after a loss of the API server
(`undo_allowed`).

Limits of the model, stated: only the main and local tables are modelled (policy rules and
other tables are not; when the kernel's answer comes from another table, or disagrees with the
model, every route or address change covering the endpoint counts as altering it); IPv4
secondary promotion is not modelled; IPv6 routes through a device that is down are kept, like
the kernel's. After the pass the reconciler asks the kernel again, and a path that changed
although the plan said it would not is treated as touched (probed, rolled back on loss).
"""
from __future__ import annotations

import functools
import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Optional

from plumber_agent.kinds import REMOVING_VERBS, ROUTING_VERBS
from plumber_agent.models.actions import Action, LedgerOp, Verb
from plumber_agent.models.observed import MAIN_TABLE, ObservedHost, ObservedRoute
from plumber_agent.models.plan import ApiServerPath
from plumber_agent.planner import lbridge
from plumber_agent.planner.context import PlanContext, canonical_metric

LOCAL_TABLE = 255  # RT_TABLE_LOCAL
IPV4_CONNECTED_METRIC = 0
IPV6_CONNECTED_METRIC = 256  # the kernel's metric for an IPv6 address's prefix route
OPT_IN_HINT = "set allowApiServerDisruption to allow"


def route_dict(route: ObservedRoute) -> dict:
    return {"family": route.family, "dst": route.dst, "gw": route.gw, "dev": route.dev,
            "src": route.src, "metric": canonical_metric(route.family, route.metric)}


@dataclass(frozen=True)
class Hop:
    """The model's answer to `ip route get`: what the guard compares."""

    dev: Optional[str]
    gw: Optional[str] = None
    src: Optional[str] = None
    local: bool = False

    def describe(self) -> str:
        if self.local:
            return f"local on {self.dev}"
        text = f"dev {self.dev}" + (f" via {self.gw}" if self.gw else "")
        return text + (f" src {self.src}" if self.src else "")


NO_ROUTE = Hop(dev=None)


@dataclass
class PathModel:
    """The main table and the addresses, as the planner knows them; `apply` changes a copy."""

    routes: dict[tuple, list[dict]] = field(default_factory=dict)  # (family, dst, metric)
    addrs: dict[str, list[str]] = field(default_factory=dict)  # ifname -> CIDRs, kernel order
    _order: itertools.count = field(default_factory=itertools.count)

    @classmethod
    def of(cls, observed: ObservedHost) -> "PathModel":
        model = cls()
        for route in observed.routes:
            if route.table == MAIN_TABLE:
                model._add(route_dict(route), replace=False)
        for ifname, link in observed.links.items():
            model.addrs[ifname] = list(link.ipv4) + list(link.ipv6)
        return model

    def copy(self) -> "PathModel":
        return PathModel(routes={k: list(v) for k, v in self.routes.items()},
                         addrs={k: list(v) for k, v in self.addrs.items()}, _order=self._order)

    def _add(self, route: dict, *, replace: bool) -> None:
        key = (route["family"], route["dst"], route["metric"])
        entry = dict(route, order=next(self._order), net=_network(route["dst"], route["family"]))
        if replace:
            self.routes[key] = [entry]
        else:
            self.routes.setdefault(key, []).append(entry)

    def _drop(self, keep) -> None:
        for key in list(self.routes):
            kept = [r for r in self.routes[key] if keep(r)]
            if kept:
                self.routes[key] = kept
            else:
                del self.routes[key]

    # -- the lookup ---------------------------------------------------------------------------

    def lookup(self, ip: str) -> Hop:
        addr = ipaddress.ip_address(ip)
        for ifname, cidrs in self.addrs.items():  # the local table comes first (rule 0)
            if any(ipaddress.ip_interface(c).ip == addr for c in cidrs):
                return Hop(dev=ifname, local=True)
        best = None
        for routes in self.routes.values():
            for r in routes:
                if r["family"] != addr.version:
                    continue
                net = r["net"]
                if addr not in net:
                    continue
                rank = (-net.prefixlen, r["metric"], r["order"])
                if best is None or rank < best[0]:
                    best = (rank, r)
        if best is None:
            return NO_ROUTE
        r = best[1]
        return Hop(dev=r["dev"], gw=r["gw"], src=r["src"] or self._source(r["dev"], r["gw"], addr))

    def device_for(self, gw: str) -> Optional[str]:
        """The device a gateway is reached through (memoised: every route of a plan of
        thousands may name the same gateway)."""
        cache = self.__dict__.setdefault("_gw_devs", {})
        if gw not in cache:
            cache[gw] = self.lookup(gw).dev
        return cache[gw]

    def _forget_gateways(self, action: Action) -> None:
        """Drop memoised gateway devices `action` may move: those a route change covers, or
        all of them for any other change."""
        cache = self.__dict__.get("_gw_devs")
        if not cache:
            return
        p = action.params
        if action.verb in (Verb.ADD_ROUTE, Verb.DELETE_ROUTE) and p.get("family") in (4, 6):
            net = _network(p.get("dst"), p["family"])
            for gw in [g for g in cache if ipaddress.ip_address(g) in net]:
                del cache[gw]
        else:
            cache.clear()

    def _source(self, dev: Optional[str], gw: Optional[str], addr) -> Optional[str]:
        """The kernel's source choice, approximately (inet_select_addr): an address of `dev`
        on the gateway's (or the destination's) subnet, else its first one."""
        target = ipaddress.ip_address(gw) if gw else addr
        usable = [ipaddress.ip_interface(c) for c in self.addrs.get(dev or "", [])
                  if ipaddress.ip_interface(c).version == addr.version
                  and not ipaddress.ip_interface(c).ip.is_link_local]
        for iface in usable:
            if target in iface.network:
                return str(iface.ip)
        return str(usable[0].ip) if usable else None

    # -- planned changes ----------------------------------------------------------------------

    def apply(self, action: Action, observed: ObservedHost) -> "PathModel":
        """A copy with `action` applied (unchanged for a verb that moves no route)."""
        model = self.copy()
        model.apply_in_place(action, observed)
        return model

    def apply_in_place(self, action: Action, observed: ObservedHost) -> None:
        model, p, verb = self, action.params, action.verb
        self._forget_gateways(action)
        if verb == Verb.ADD_ROUTE:
            dev = p.get("dev") or (self.device_for(p["gw"]) if p.get("gw") else None)
            model._add({"family": p["family"], "dst": p.get("dst"), "gw": p.get("gw"),
                        "dev": dev, "src": p.get("src"),
                        "metric": canonical_metric(p["family"], p.get("metric"))}, replace=True)
        elif verb == Verb.DELETE_ROUTE:
            model.routes.pop((p["family"], p.get("dst"),
                              canonical_metric(p["family"], p.get("metric"))), None)
        elif verb == Verb.ADD_ADDRESS:
            model._add_address(action.target, p["address"])
        elif verb == Verb.DELETE_ADDRESS:
            model._delete_address(action.target, p["address"])
        elif verb == Verb.SET_UP:
            for cidr in list(self.addrs.get(action.target, [])):
                model._connected(action.target, cidr)
        elif verb in (Verb.DELETE_LINK, Verb.ENSURE_PORT, Verb.SET_NUM_VFS,
                      Verb.BIND_VF_DRIVER, Verb.ENSLAVE, Verb.SET_LINUX_BRIDGE_PORT):
            gone = devices_taken(action, observed)
            model._drop(lambda r: r["dev"] not in gone)
            for ifname in gone:
                model.addrs.pop(ifname, None)

    def _add_address(self, ifname: str, cidr: str) -> None:
        self.addrs.setdefault(ifname, [])
        if cidr not in self.addrs[ifname]:
            self.addrs[ifname].append(cidr)
        self._connected(ifname, cidr)

    def _connected(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        if iface.network.prefixlen == iface.max_prefixlen or iface.ip.is_link_local:
            return  # a /32 or /128 is only local; link-locals route on fe80::/64 already
        metric = IPV4_CONNECTED_METRIC if iface.version == 4 else IPV6_CONNECTED_METRIC
        key = (iface.version, str(iface.network), metric)
        if any(r["dev"] == ifname for r in self.routes.get(key, [])):
            return
        self._add({"family": iface.version, "dst": str(iface.network), "gw": None,
                   "dev": ifname, "src": str(iface.ip) if iface.version == 4 else None,
                   "metric": metric}, replace=False)

    def _delete_address(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        left = [c for c in self.addrs.get(ifname, [])
                if ipaddress.ip_interface(c).ip != iface.ip]
        self.addrs[ifname] = left
        same_net = any(ipaddress.ip_interface(c).network == iface.network for c in left)
        last_v4 = iface.version == 4 and not any(
            ipaddress.ip_interface(c).version == 4 for c in left)

        def keep(r: dict) -> bool:
            if r["src"] == str(iface.ip):
                return False  # routes naming it as their source go with it
            if r["dev"] != ifname or r["family"] != iface.version:
                return True
            if last_v4:
                return False  # fib_disable_ip: the last IPv4 address takes every v4 route
            return not (r["gw"] is None and r["dst"] == str(iface.network) and not same_net)
        self._drop(keep)


@functools.lru_cache(maxsize=1024)
def _ip(text: str):
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=65536)
def _network(dst: Optional[str], version: int):
    """Parsed once per prefix: the guard looks thousands of them up per plan."""
    return ipaddress.ip_network(dst or ("0.0.0.0/0" if version == 4 else "::/0"))


def devices_taken(action: Action, observed: ObservedHost) -> set[str]:
    """Netdevs whose traffic `action` takes away from the IP stack: a deleted link, a port's
    interfaces (enslaved to OVS), the VF netdevs a numVfs change destroys, a VF unbound."""
    if action.verb == Verb.DELETE_LINK:
        return {action.target}
    if action.verb == Verb.ENSURE_PORT:
        return set(action.params.get("interfaces") or ())
    if action.verb == Verb.ENSLAVE:  # a bond member's traffic is the bond's
        return {action.target}
    if action.verb == Verb.SET_NUM_VFS:
        pf = observed.pfs.get(action.target)
        return {vf.ifname for vf in (pf.vfs if pf else []) if vf.ifname}
    if action.verb == Verb.BIND_VF_DRIVER:
        return {vf.ifname for pf in observed.pfs.values() for vf in pf.vfs
                if vf.pci_addr == action.target and vf.ifname}
    return lbridge.taken_from_ip(action)


# -- the uplink: the devices under the endpoints' paths -------------------------------------

@dataclass
class Uplink:
    """The devices (and PCI functions) carrying the path to at least one endpoint."""

    devices: set[str] = field(default_factory=set)
    pcis: set[str] = field(default_factory=set)  # PFs and VFs under those devices
    endpoints: dict[str, list[str]] = field(default_factory=dict)  # device -> endpoint IPs

    def carries(self, ifname: Optional[str]) -> bool:
        return bool(ifname) and ifname in self.devices


def uplink_of(paths: Iterable[ApiServerPath], observed: ObservedHost) -> Uplink:
    up = Uplink()
    for path in paths:
        devs = _path_devices(path, observed)
        for dev in devs:
            up.endpoints.setdefault(dev, [])
            if path.ip not in up.endpoints[dev]:
                up.endpoints[dev].append(path.ip)
        up.devices |= devs
    for pci, pf in observed.pfs.items():
        if pf.ifname in up.devices:
            up.pcis.add(pci)
        for vf in pf.vfs:
            if vf.ifname in up.devices:
                up.pcis |= {pci, vf.pci_addr}
    return up


def _path_devices(path: ApiServerPath, observed: ObservedHost) -> set[str]:
    start = path.dev
    if path.local:  # the kernel says `dev lo`: the device holding the address carries it
        start = next((name for name, link in observed.links.items()
                      if any(c.split("/")[0] == path.ip for c in link.ipv4 + link.ipv6)), None)
    if not start or start == "lo":
        return set()
    found, todo = set(), [start]
    while todo:
        dev = todo.pop()
        if dev in found:
            continue
        found.add(dev)
        link = observed.links.get(dev)
        if link is not None:
            todo += [d for d in (link.parent, link.master) if d]
        todo += [name for name, other in observed.links.items() if other.master == dev]
        bridge = (observed.bridges or {}).get(dev)
        if bridge is not None:  # an OVS bridge's internal port: its ports carry the traffic
            todo += [i.name for port in bridge.ports for i in port.interfaces if i.name != dev]
    return found


# -- the guard ----------------------------------------------------------------------------------

def guard(ctx: PlanContext, actions: list[Action]) -> list[Action]:
    """The actions that may run: those on the API path without an opt-in are dropped (a
    refusal each); those let through are marked api_risk (the reconciler probes after them)."""
    paths = [p for p in ctx.api_paths if p.ip]
    if not paths:
        return actions
    observed = ctx.observed
    uplink = uplink_of(paths, observed)
    model = PathModel.of(observed)
    before = {p.ip: model.lookup(p.ip) for p in paths}
    # Where the model and the kernel disagree (policy routing, another table), the model
    # cannot tell: every route or address change covering the endpoint counts as altering it.
    uncertain = {p.ip for p in paths
                 if (p.table not in (None, MAIN_TABLE, LOCAL_TABLE))
                 or (p.dev is None and not p.local)
                 or (before[p.ip].dev, before[p.ip].gw, before[p.ip].local)
                 != (p.dev if not p.local else before[p.ip].dev, p.gw, p.local)}
    kept: list[Action] = []
    for action in actions:
        try:
            why = _on_path(ctx, action, paths, uplink, model, before, uncertain)
        except (KeyError, TypeError, ValueError) as exc:  # a hand-edited ledger's prior
            why = (f"not {action.verb} {action.target}: cannot tell whether it changes how "
                   f"this node reaches the API server ({type(exc).__name__}: {exc}; "
                   f"{OPT_IN_HINT})")
        if why is None:
            action.api_risk = action.api_risk or _touches(action, uplink, observed, model)
            kept.append(action)
            continue
        if _allowed(ctx, action):
            action.api_risk = True
            kept.append(action)
        else:
            ctx.refuse(action.target, why, action.templates)
    _whole_plan(ctx, kept, paths, model, before)
    return kept


def _allowed(ctx: PlanContext, action: Action) -> bool:
    """A template asking for the change (or, for an undo, the template it served) has
    allowApiServerDisruption, or the template is being rolled back after a loss."""
    return ctx.allowed(action.templates) or (
        action.ledger_op == LedgerOp.RELEASE
        and any(t in ctx.undo_allowed for t in action.templates))


def _on_path(ctx: PlanContext, action: Action, paths, uplink: Uplink, model: PathModel,
             before: dict, uncertain: set) -> Optional[str]:
    """Why `action` would change the path to an endpoint (the refusal message), or None."""
    undo = action.ledger_op == LedgerOp.RELEASE
    # An undo restoring a device's prior value puts back what the node ran with (let through,
    # probed); one removing a device the path now runs over is guarded like a change.
    if not undo or action.verb in _REMOVING_VERBS:
        device = _device_change(action, uplink, ctx.observed)
        if device is not None:
            what, dev = device
            ips = ", ".join(uplink.endpoints.get(dev) or [p.ip for p in paths])
            text = f"not {what}: {dev} carries this node's path to the API server {ips}"
            if undo:
                return (f"{text}: the undo is left as it is (undoing it needs "
                        f"allowApiServerDisruption on {', '.join(action.templates) or 'a template'})")
            return f"{text} ({OPT_IN_HINT})"
    if action.verb not in _ROUTING_VERBS:
        return None
    for path in paths:
        if action.verb == Verb.DELETE_ADDRESS and path.src and \
                action.params["address"].split("/")[0] == path.src:
            # The kernel's own answer names this address as the source: no modelling needed
            # (and none trusted: the model may not see the route the kernel used).
            return _message(action, path, "", undo)
        if path.ip in uncertain:
            if _may_move(action, path, model, None):
                return _message(action, path, "", undo)
            continue
        if not _may_move(action, path, model, before[path.ip]):
            continue
        after = model.apply(action, ctx.observed).lookup(path.ip)
        if after != before[path.ip]:
            return _message(action, path,
                            f" ({before[path.ip].describe()} -> "
                            f"{after.describe() if after.dev else 'no route'})", undo)
    return None


# The verbs each kind declares REMOVING or ROUTING (kinds/<kind>.py verbs).
_REMOVING_VERBS = tuple(Verb(verb) for verb in REMOVING_VERBS)
_ROUTING_VERBS = tuple(Verb(verb) for verb in ROUTING_VERBS)


def _message(action: Action, path: ApiServerPath, change: str, undo: bool) -> str:
    ip = path.ip
    if action.verb in (Verb.ADD_ROUTE, Verb.DELETE_ROUTE):
        text = (f"not changing the route to {action.target}: it would change how this node "
                f"reaches the API server {ip}{change}")
    elif action.verb == Verb.DELETE_ADDRESS and (path.src or "") == \
            action.params["address"].split("/")[0]:
        text = (f"not removing {action.params['address']} from {action.target}: this node "
                f"reaches the API server {ip} from it")
    elif action.verb == Verb.DELETE_ADDRESS:
        text = (f"not removing {action.params['address']} from {action.target}: it would "
                f"change how this node reaches the API server {ip}{change}")
    elif action.verb == Verb.ADD_ADDRESS:
        text = (f"not adding {action.params['address']} to {action.target}: it would change "
                f"how this node reaches the API server {ip}{change}")
    else:
        text = (f"not setting {action.target} up: it would change how this node reaches the "
                f"API server {ip}{change}")
    if undo:
        return (f"{text}: the undo is left as it is (undoing it needs "
                f"allowApiServerDisruption on {', '.join(action.templates) or 'a template'})")
    return f"{text} ({OPT_IN_HINT})"


def _may_move(action: Action, path: ApiServerPath, model: PathModel,
              hop: Optional[Hop]) -> bool:
    """Can `action` change the lookup of `path.ip` at all: a cheap test before modelling (it
    keeps a plan of 4,096 routes linear), and, with no modelled `hop` (the model cannot
    tell), the whole test: the change covers the endpoint or removes its source."""
    addr = _ip(path.ip)
    p = action.params
    if action.verb in (Verb.ADD_ROUTE, Verb.DELETE_ROUTE):
        return p.get("family") == addr.version and addr in _network(p.get("dst"), addr.version)
    if action.verb in (Verb.ADD_ADDRESS, Verb.DELETE_ADDRESS):
        iface = ipaddress.ip_interface(p["address"])
        return iface.version == addr.version and (
            addr in iface.network or str(iface.ip) == path.src
            or (hop is not None and (str(iface.ip) == hop.src
                                     or action.target in (hop.dev, path.dev))))
    if action.verb == Verb.SET_UP:
        return any(ipaddress.ip_interface(c).version == addr.version
                   and addr in ipaddress.ip_interface(c).network
                   for c in model.addrs.get(action.target, []))
    return False


def _device_change(action: Action, uplink: Uplink,
                   observed: ObservedHost) -> Optional[tuple[str, str]]:
    """(what, device) when `action` changes a device of the uplink itself: its MTU, its
    membership of an OVS bridge, its SR-IOV PF or VF, its existence."""
    verb, target, p = action.verb, action.target, action.params
    if verb == Verb.SET_MTU and uplink.carries(target):
        return f"changing the MTU of {target} to {p.get('mtu')}", target
    if verb == Verb.DELETE_LINK and uplink.carries(target):
        return f"deleting {target}", target
    if verb == Verb.ENSURE_PORT:
        for ifname in p.get("interfaces") or ():
            if uplink.carries(ifname):
                return f"adding {ifname} to OVS bridge {p.get('bridge')}", ifname
    if verb in (Verb.DELETE_PORT, Verb.DELETE_BRIDGE):
        for ifname in _bridge_devices(action, observed):
            if uplink.carries(ifname):
                return f"removing {ifname} from OVS bridge {p.get('bridge') or target}", ifname
    if verb == Verb.ENSLAVE and uplink.carries(target):
        return f"enslaving {target} to bond {p.get('bond')}", target
    if verb == Verb.RELEASE_MEMBER and uplink.carries(target):
        return f"releasing {target} from bond {p.get('bond')}", target
    if verb == Verb.ENSURE_BOND and uplink.carries(target):
        return f"changing the settings of bond {target}", target
    if verb == Verb.ENSURE_BRIDGE and uplink.carries(target):
        return f"changing OVS bridge {target}", target
    linux_bridge = lbridge.device_change(action, uplink.carries)
    if linux_bridge is not None:
        return linux_bridge
    if verb == Verb.SET_VF:
        vf = _set_vf_target(action, observed)
        if vf is not None and vf.pci_addr in uplink.pcis:
            change = " ".join(f"{k} {v}" for k, v in sorted(p.items()) if k not in ("pf", "vf"))
            return (f"setting {change} on VF {vf.id} of {target}",
                    _pci_device(vf.pci_addr, uplink, observed))
    if verb in (Verb.SET_NUM_VFS, Verb.BIND_VF_DRIVER) and target in uplink.pcis:
        dev = _pci_device(target, uplink, observed)
        if verb == Verb.SET_NUM_VFS:
            return f"changing numVfs of PF {target} to {p.get('num_vfs')}", dev
        return f"binding VF {target} to {p.get('driver')}", dev
    return None


def _set_vf_target(action: Action, observed: ObservedHost):
    """The VF (ObservedVf) a set_vf action changes, None when not found."""
    pf = observed.pfs.get(action.params.get("pf") or "")
    return next((vf for vf in (pf.vfs if pf else []) if vf.id == action.params.get("vf")), None)


def _bridge_devices(action: Action, observed: ObservedHost) -> list[str]:
    name = action.params.get("bridge") if action.verb == Verb.DELETE_PORT else action.target
    bridge = (observed.bridges or {}).get(name or "")
    if bridge is None:
        return []
    ports = [p for p in bridge.ports
             if action.verb == Verb.DELETE_BRIDGE or p.name == action.target]
    names = [i.name for port in ports for i in port.interfaces]
    return names + ([bridge.name] if action.verb == Verb.DELETE_BRIDGE else [])


def _pci_device(pci: str, uplink: Uplink, observed: ObservedHost) -> str:
    """The uplink device a PF or VF address stands for (for the message)."""
    for pf_pci, pf in observed.pfs.items():
        if pf_pci == pci and pf.ifname in uplink.devices:
            return pf.ifname
        for vf in pf.vfs:
            if (pci in (vf.pci_addr, pf_pci)) and vf.ifname in uplink.devices:
                return vf.ifname
    return pci


def _touches(action: Action, uplink: Uplink, observed: ObservedHost, model: PathModel) -> bool:
    """Does `action` change anything on an uplink device (probed afterwards)?"""
    if action.verb == Verb.FORGET:
        return False
    p = action.params
    names = {action.target, p.get("dev"), p.get("parent"), p.get("bond")} | set(
        p.get("interfaces") or ())
    if action.verb in (Verb.ADD_ROUTE, Verb.DELETE_ROUTE) and not p.get("dev") and p.get("gw"):
        try:
            names.add(model.device_for(p["gw"]))
        except ValueError:
            return True  # an unreadable gateway (a hand-edited ledger): probe it
    if action.verb in (Verb.DELETE_PORT, Verb.DELETE_BRIDGE):
        names |= set(_bridge_devices(action, observed))
    if action.verb == Verb.SET_VF:
        vf = _set_vf_target(action, observed)
        names = {vf.ifname} if vf is not None else set()  # the PF's own traffic is not changed
    return bool(names & uplink.devices) or action.target in uplink.pcis


def _whole_plan(ctx: PlanContext, kept: list[Action], paths, model: PathModel,
                before: dict) -> None:
    """Changes harmless one by one may still move the path together (a route added and the
    one it shadowed deleted): if the whole plan moves an endpoint's path, every routing change
    covering it is marked api_risk (probed; the opt-in was not needed for either alone)."""
    routing = [a for a in kept if a.verb in _ROUTING_VERBS and not a.api_risk]
    if not routing:
        return
    after = model.copy()
    for action in routing:
        try:
            after.apply_in_place(action, ctx.observed)
        except (KeyError, TypeError, ValueError):
            action.api_risk = True  # unreadable parameters (a hand-edited ledger): probe it
    for path in paths:
        if after.lookup(path.ip) != before[path.ip]:
            for action in routing:
                if _may_move(action, path, model, before[path.ip]):
                    action.api_risk = True
