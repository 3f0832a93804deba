"""Links, addresses and routes of one network namespace: the only module that imports pyroute2.

* Reads (discovery, `route_to`, visibility polls) go through the raw reader (reader.py) and
  the discovery snapshot (snapshot.py), not pyroute2's dumps (see messages.py for why).
* Writes go through pyroute2's IPRoute, created lazily on the first write. pyroute2 0.9 runs on a
  per-thread asyncio loop (docs/pitfalls.md 14), so a `Netlink` belongs to ONE thread: the first thread
  that calls a method owns it; calls from another thread raise RuntimeError. Use one instance per
  thread (they may share a namespace).
* Namespace sockets are opened without forking (netns.py); pyroute2 gets a socket opened there.
* Changes are idempotent (EEXIST means compare and set), deletes tolerate absence, and every
  change is polled until visible with a bound (docs/pitfalls.md 17).
"""
from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Callable, Optional

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.host.netlink.bond import BondLinks
from plumber_agent.host.netlink.lbridge import LinuxBridgeDriver
from plumber_agent.host.netlink.messages import (CHANGE_GROUPS, RT_PROTO_NUMBERS,
                                                 RTN_UNREACHABLE_TYPES, NetlinkOSError,
                                                 errno_text)
from plumber_agent.host.netlink.netns import (check_netns_name, new_plain_rtnl_socket,
                                              new_rtnl_socket, open_netns_sockets)
from plumber_agent.host.netlink.reader import RtnlReader
from plumber_agent.host.netlink.snapshot import DiscoverySnapshot
from plumber_agent.models.observed import MAIN_TABLE, ObservedLink, ObservedRoute
from plumber_agent.packages import unexecuted_package
from plumber_agent.validation import (canonical_interface_address, canonical_ip,
                                      canonical_network, check_ifname, check_int_range,
                                      check_mtu, check_vlan_id, require)

DEFAULT_WAIT_TIMEOUT_S = 5.0
POLL_INTERVAL_FIRST_S = 0.005
POLL_INTERVAL_MAX_S = 0.1
ROUTE_DELETE_ROUNDS = 16
VLAN_MISSING_MESSAGE = "this kernel has no 802.1Q VLAN support (module 8021q)"

_TOLERATED_DELETE_ERRNOS = (errno.ENODEV, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ESRCH)


def _pyroute2():
    """(IPRoute, NetlinkError), imported on the first write (reads never need pyroute2) without
    running pyroute2/__init__.py (plumber_agent/packages.py), which imports NDB (sqlite3), IPDB,
    nftables, ipset, wireguard and thirty other sockets the agent never opens: 5 MiB resident
    in every agent that has written once (bench B4, README "Footprint")."""
    unexecuted_package("pyroute2")
    from pyroute2.iproute import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    return IPRoute, NetlinkError


def _require_canonical(fn, value, what: str, **kwargs) -> str:
    """Run a canonical_* helper as a validator: InvalidSpec with the reason, else the canonical
    text."""
    def check(candidate):
        try:
            fn(candidate, **kwargs)
        except ValueError as exc:
            return str(exc)
        return None
    require(check, value, what)
    return fn(value, **kwargs)


def vf_request(vf_id: int, settings: dict) -> dict:
    """pyroute2's `vf=` argument for the settings given (ObservedVfInfo's names; None = not
    set). Its encoding is checked against our own IFLA_VF_INFO parser (tests/host/
    test_collateral.py), as no kernel here has a device with VFs."""
    spec: dict = {"vf": vf_id}
    if settings.get("mac") is not None:
        spec["mac"] = settings["mac"]
    if settings.get("vlan") is not None:
        spec["vlan"] = {"vlan": int(settings["vlan"]), "qos": int(settings.get("qos") or 0)}
    for name in ("spoofchk", "trust"):
        if settings.get(name) is not None:
            spec[name] = int(bool(settings[name]))
    if settings.get("link_state") is not None:
        spec["link_state"] = int(settings["link_state"])
    if settings.get("max_tx_rate") is not None or settings.get("min_tx_rate") is not None:
        spec["rate"] = {"min_tx_rate": int(settings.get("min_tx_rate") or 0),
                        "max_tx_rate": int(settings.get("max_tx_rate") or 0)}
    return spec


VF_RATES = ("min_tx_rate", "max_tx_rate")


def with_current_rates(settings: dict, current) -> dict:
    """`settings` with the VF rate not given taken from `current` (an ObservedVfInfo, or None:
    0): IFLA_VF_RATE carries both, so setting one alone would reset the other. iproute2 does
    the same for `ip link set PF vf N max_tx_rate X` (ipaddr_get_vf_rate)."""
    out = dict(settings)
    for name in VF_RATES:
        if out.get(name) is None:
            out[name] = getattr(current, name, None) or 0
    return out


def _check_family(value) -> Optional[str]:
    return None if value in (4, 6) else f"{value!r} is not 4 or 6"


def _check_optional_ifname(value) -> Optional[str]:
    return None if value is None else check_ifname(value)


class Netlink(BondLinks, LinuxBridgeDriver):
    """The netlink driver for one network namespace (None: the caller's own).

    ONE INSTANCE PER THREAD: the first thread that calls a method owns the instance (pyroute2 0.9
    sockets live on a per-thread asyncio loop); other threads get RuntimeError. It may be built
    in one thread and handed to another before its first use; close it in the thread that used
    it. Several instances (one per thread) may work on the same namespace at once.
    Usable as a context manager. Linux bridge writes: lbridge.py (LinuxBridgeDriver).
    """

    def __init__(self, netns: Optional[str] = None, *,
                 wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S):
        if netns is not None:
            require(check_netns_name, netns, "netns")
        self.netns = netns
        self.wait_timeout_s = wait_timeout_s
        self._where = f"network namespace {netns!r}" if netns else "this network namespace"
        # Three sockets opened at once: the reader's, one kept for pyroute2 (writes), and one
        # subscribed to change notifications, which tells discover() whether its last full dump
        # is still exact.
        self._reader_sock, self._writer_sock, changes_sock = open_netns_sockets(
            netns, [new_rtnl_socket, new_plain_rtnl_socket,
                    lambda: new_rtnl_socket(CHANGE_GROUPS)])
        self._reader = RtnlReader(self._reader_sock)
        self._discovery = DiscoverySnapshot(self._reader, changes_sock, read=self._read)
        self._ipr = None
        self._owner: Optional[int] = None
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise HostError(f"netlink driver for {self._where} is closed")
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("a Netlink instance belongs to the thread that first used it "
                               "(pyroute2 0.9 sockets are per thread): create one per thread")

    def _iproute(self):
        if self._ipr is None:
            IPRoute, _ = _pyroute2()
            sock, self._writer_sock = self._writer_sock, None
            if sock is None:
                raise HostError(f"netlink driver for {self._where} lost its socket")
            fd = sock.detach()
            try:
                # ext_ack: the kernel explains refusals ("Nexthop has invalid gateway").
                self._ipr = IPRoute(fileno=fd, ext_ack=True)
            except BaseException:
                os.close(fd)
                raise
        return self._ipr

    def _write(self, what: str, call, *, tolerate: tuple[int, ...] = ()):
        """Run a pyroute2 call; kernel errnos become HostError naming `what` (or are ignored
        when listed in `tolerate`). Returns the errno that was tolerated, or 0."""
        _, NetlinkError = _pyroute2()
        try:
            call(self._iproute())
        except NetlinkError as exc:
            if exc.code in tolerate:
                return exc.code
            detail = exc.args[1] if len(exc.args) > 1 else ""
            explained = f": {detail}" if detail and detail != os.strerror(exc.code) else ""
            raise HostError(f"{what} in {self._where}: the kernel said "
                            f"{errno_text(exc.code)}{explained}") from None
        except OSError as exc:
            code = exc.errno or 0
            if code in tolerate:
                return code
            raise HostError(f"{what} in {self._where}: {errno_text(code)}") from None
        return 0

    def _read(self, what: str, call):
        try:
            return call()
        except NetlinkOSError as exc:
            raise HostError(f"{what} in {self._where}: the kernel said "
                            f"{errno_text(exc.errno or 0)}") from None
        except OSError as exc:
            raise HostError(f"{what} in {self._where}: {errno_text(exc.errno or 0)}") from None

    def _wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        """Poll `condition` until true, at most wait_timeout_s (HostTimeout then)."""
        deadline = time.monotonic() + self.wait_timeout_s
        interval = POLL_INTERVAL_FIRST_S
        while not condition():
            if time.monotonic() >= deadline:
                raise HostTimeout(f"{what} in {self._where}: not visible after "
                                  f"{self.wait_timeout_s} s")
            time.sleep(interval)
            interval = min(interval * 2, POLL_INTERVAL_MAX_S)

    def _link(self, ifname: str):
        return self._read(f"reading link {ifname}", lambda: self._reader.get_link(ifname=ifname))

    def _require_link(self, ifname: str, purpose: str):
        found = self._link(ifname)
        if found is None:
            raise NotAvailable(f"{purpose}: link {ifname!r} does not exist in {self._where}")
        return found

    # -- reads ----------------------------------------------------------------------------------

    def discover(self, *, reuse: bool = True) -> tuple[dict[str, ObservedLink],
                                                      list[ObservedRoute]]:
        """All links (canonical addresses, VF info) and the main table's unicast v4+v6 routes,
        from the discovery snapshot (snapshot.py: a dump only when something changed)."""
        self._enter()
        return self._discovery.discover(reuse=reuse)

    def forget_snapshot(self) -> None:
        """Make the next discover() dump the kernel again (after changes made outside netlink,
        such as sysfs writes, which send no rtnetlink notification of their own)."""
        self._discovery.forget()

    def route_to(self, ip: str) -> Optional[ObservedRoute]:
        """ip route get IP: which dev/src/gw this namespace uses to reach `ip` (None if none)."""
        self._enter()
        ip = _require_canonical(canonical_ip, ip, "ip")
        found = self._read(f"looking up the route to {ip}", lambda: self._reader.get_route(ip))
        if found is None:
            return None
        route, rtype = found
        if rtype in RTN_UNREACHABLE_TYPES:
            return None
        if route.dev is not None:
            link = self._read("resolving a route's device",
                              lambda: self._reader.get_link(index=route.dev))
            route.dev = link[0].ifname if link else None
        return route

    def discover_collateral(self, ifname: str) -> tuple[Optional[list[str]], list[ObservedRoute]]:
        """What a change to `ifname` can make the kernel remove by itself: the link's addresses
        (canonical CIDRs, link-local included; None when there is no such link) and the unicast
        routes of EVERY table, both families (dev by name). Read fresh, not from the discovery
        snapshot: host/collateral.py compares it just before and just after one change."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        found = self._link(ifname)
        addresses = None
        if found is not None:
            index = found[0].index
            rows = self._read("listing addresses", lambda: self._reader.dump_addrs(
                socket.AF_UNSPEC, index))
            addresses = sorted(row[2] for row in rows if row[2])
        links = self._read("listing links", lambda: self._reader.dump_links(with_vfs=False))
        names = {row[0].index: row[0].ifname for row in links}
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            rows = self._read("listing routes", lambda fam=family: self._reader.dump_routes(
                fam, table=0, names=names))
            routes.extend(row[0] for row in rows)
        return addresses, routes

    def discover_vfs(self, ifname: str) -> Optional[list]:
        """The VF settings PF netdev `ifname` reports (IFLA_VF_INFO), by VF id; None when there
        is no such link."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        found = self._read(f"reading the VFs of {ifname}",
                           lambda: self._reader.get_link(ifname=ifname, with_vfs=True))
        return None if found is None else list(found[0].vfs)

    def set_vf(self, ifname: str, vf_id: int, settings: dict) -> None:
        """ip link set IFNAME vf ID [mac M] [vlan V qos Q] [spoofchk on|off] [trust on|off]
        [state auto|enable|disable] [min_tx_rate A max_tx_rate B]: the settings given (keys as
        in ObservedVfInfo; None = leave as it is)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        require(lambda v: check_int_range(v, 0, 0xFFFF), vf_id, "vf_id")
        index = self._require_link(ifname, f"setting VF {vf_id}")[0].index
        if sum(settings.get(name) is not None for name in VF_RATES) == 1:
            current = next((vf for vf in self.discover_vfs(ifname) or [] if vf.id == vf_id), None)
            settings = with_current_rates(settings, current)
        spec = vf_request(vf_id, settings)
        self._write(f"setting VF {vf_id} of {ifname}",
                    lambda ipr: ipr.link("set", index=index, vf=spec))

    # -- links ----------------------------------------------------------------------------------

    def ensure_vlan(self, ifname: str, parent: str, vlan_id: int) -> None:
        """ip link add link PARENT name IFNAME type vlan id ID; ip link set IFNAME up."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        require(check_ifname, parent, "parent")
        require(check_vlan_id, vlan_id, "vlan_id")
        what = f"VLAN {ifname} (id {vlan_id} on {parent})"
        for _attempt in range(2):
            existing = self._link(ifname)
            if existing is not None:
                self._check_is_vlan(existing, ifname, parent, vlan_id)
                break
            parent_link, _, _ = self._require_link(parent, f"creating {what}")
            code = self._write(
                f"creating {what}",
                lambda ipr: ipr.link("add", ifname=ifname, kind="vlan",
                                     link=parent_link.index, vlan_id=vlan_id),
                tolerate=(errno.EEXIST, errno.EOPNOTSUPP))
            if code == errno.EOPNOTSUPP:
                raise NotAvailable(f"cannot create {what}: {VLAN_MISSING_MESSAGE}; the kernel "
                                   f"said {errno_text(code)}")
            if code == 0:
                self._wait_for(f"creating {what}", lambda: self._link(ifname) is not None)
                break
            # EEXIST: someone created it between our look and our add; compare on the next turn.
        self.set_up(ifname)

    def _check_is_vlan(self, existing, ifname: str, parent: str, vlan_id: int) -> None:
        link, parent_index, _extras = existing
        parent_name = None
        if parent_index is not None:
            found = self._read("resolving a VLAN's parent",
                               lambda: self._reader.get_link(index=parent_index))
            parent_name = found[0].ifname if found else None
        if link.kind != "vlan" or link.vlan_id != vlan_id or parent_name != parent:
            actual = (f"a VLAN with id {link.vlan_id} on {parent_name}" if link.kind == "vlan"
                      else f"of kind {link.kind or 'plain device'}")
            raise HostError(f"link {ifname!r} already exists in {self._where} and is {actual}, "
                            f"not VLAN id {vlan_id} on {parent}; it is left untouched")

    def delete_link(self, ifname: str) -> None:
        """ip link del IFNAME (absent is fine)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        existing = self._link(ifname)
        if existing is None:
            return
        index = existing[0].index
        self._write(f"deleting link {ifname}", lambda ipr: ipr.link("del", index=index),
                    tolerate=(errno.ENODEV, errno.ENOENT))
        self._wait_for(f"deleting link {ifname}", lambda: self._link(ifname) is None)

    def set_mtu(self, ifname: str, mtu: int) -> None:
        """ip link set IFNAME mtu MTU (waits until visible)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        require(check_mtu, mtu, "mtu")
        link, parent_index, extras = self._require_link(ifname, f"setting MTU {mtu}")
        if link.mtu == mtu:
            return
        limits = []
        if "min_mtu" in extras or "max_mtu" in extras:
            limits.append(f"the device allows {extras.get('min_mtu', '?')}.."
                          f"{extras.get('max_mtu', '?')}")
        if parent_index is not None:  # VLANs and macvlans cannot exceed their parent's MTU
            parent = self._read("resolving a link's parent",
                                lambda: self._reader.get_link(index=parent_index))
            if parent is not None:
                limits.append(f"its parent {parent[0].ifname} has MTU {parent[0].mtu}")
        limits = f" ({'; '.join(limits)})" if limits else ""
        index = link.index
        self._write(f"setting MTU {mtu} on {ifname}{limits}",
                    lambda ipr: ipr.link("set", index=index, mtu=mtu))

        def has_mtu() -> bool:
            found = self._link(ifname)
            return bool(found and found[0].mtu == mtu)
        self._wait_for(f"setting MTU {mtu} on {ifname}", has_mtu)

    def set_up(self, ifname: str) -> None:
        """ip link set IFNAME up."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        link, _parent, _extras = self._require_link(ifname, "setting the link up")
        if link.admin_up:
            return
        index = link.index
        self._write(f"setting {ifname} up", lambda ipr: ipr.link("set", index=index, state="up"))

        def is_up() -> bool:
            found = self._link(ifname)
            return bool(found and found[0].admin_up)
        self._wait_for(f"setting {ifname} up", is_up)

    # -- addresses ------------------------------------------------------------------------------

    def _has_address(self, index: int, family: int, cidr: str) -> bool:
        rows = self._read("listing addresses", lambda: self._reader.dump_addrs(family, index))
        return any(row[2] == cidr for row in rows)

    def add_address(self, ifname: str, cidr: str) -> None:
        """ip addr add CIDR dev IFNAME (EEXIST is fine)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        cidr = _require_canonical(canonical_interface_address, cidr, "address")
        ip, _, prefix = cidr.partition("/")
        family = socket.AF_INET if ":" not in ip else socket.AF_INET6
        link, _parent, _extras = self._require_link(ifname, f"adding address {cidr}")
        index = link.index
        if self._has_address(index, family, cidr):
            return
        self._write(f"adding address {cidr} to {ifname}",
                    lambda ipr: ipr.addr("add", index=index, family=family, address=ip,
                                         prefixlen=int(prefix)),
                    tolerate=(errno.EEXIST,))
        self._wait_for(f"adding address {cidr} to {ifname}",
                       lambda: self._has_address(index, family, cidr))

    def delete_address(self, ifname: str, cidr: str) -> None:
        """ip addr del CIDR dev IFNAME (absent is fine)."""
        self._enter()
        require(check_ifname, ifname, "ifname")
        cidr = _require_canonical(canonical_interface_address, cidr, "address")
        ip, _, prefix = cidr.partition("/")
        family = socket.AF_INET if ":" not in ip else socket.AF_INET6
        existing = self._link(ifname)
        if existing is None:
            return
        index = existing[0].index
        if not self._has_address(index, family, cidr):
            return
        self._write(f"deleting address {cidr} from {ifname}",
                    lambda ipr: ipr.addr("del", index=index, family=family, address=ip,
                                         prefixlen=int(prefix)),
                    tolerate=_TOLERATED_DELETE_ERRNOS)
        self._wait_for(f"deleting address {cidr} from {ifname}",
                       lambda: not self._has_address(index, family, cidr))

    # -- routes ---------------------------------------------------------------------------------

    def _validated_route(self, route: ObservedRoute) -> ObservedRoute:
        require(_check_family, route.family, "route.family")
        family = route.family
        dst = (None if route.dst is None else
               _require_canonical(canonical_network, route.dst, "route.dst", family=family))
        gw = (None if route.gw is None else
              _require_canonical(canonical_ip, route.gw, "route.gw", family=family))
        src = (None if route.src is None else
               _require_canonical(canonical_ip, route.src, "route.src", family=family))
        require(_check_optional_ifname, route.dev, "route.dev")
        if route.metric is not None:
            require(lambda v: check_int_range(v, 0, 0xFFFFFFFF), route.metric, "route.metric")
        require(lambda v: check_int_range(v, 1, 0xFFFFFFFF), route.table, "route.table")
        if route.scope is not None:
            require(lambda v: check_int_range(v, 0, 255), route.scope, "route.scope")
        proto = route.proto
        if proto is not None and proto not in RT_PROTO_NUMBERS:
            require(lambda v: None if v.isdigit() and int(v) < 256 else
                    f"{v!r} is not a route protocol name or number",
                    proto if isinstance(proto, str) else repr(proto), "route.proto")
        return ObservedRoute(family=family, dst=dst, gw=gw, dev=route.dev, src=src,
                             metric=route.metric, proto=proto, scope=route.scope,
                             table=route.table)

    @staticmethod
    def _route_text(route: ObservedRoute) -> str:
        text = f"route {route.dst or 'default'} (IPv{route.family})"
        if route.gw:
            text += f" via {route.gw}"
        if route.dev:
            text += f" dev {route.dev}"
        if route.metric is not None:
            text += f" metric {route.metric}"
        return text

    def _route_args(self, route: ObservedRoute, oif: Optional[int]) -> dict:
        args: dict = {"family": socket.AF_INET if route.family == 4 else socket.AF_INET6,
                      "table": route.table}
        if route.dst is not None:
            args["dst"] = route.dst
        else:
            args["dst_len"] = 0
        if route.gw is not None:
            args["gateway"] = route.gw
        if oif is not None:
            args["oif"] = oif
        if route.src is not None:
            args["prefsrc"] = route.src
        if route.metric is not None:
            args["priority"] = route.metric
        if route.proto is not None:
            args["proto"] = RT_PROTO_NUMBERS.get(route.proto) or int(route.proto)
        if route.scope is not None:
            args["scope"] = route.scope
        return args

    def _find_route(self, route: ObservedRoute, oif: Optional[int]) -> bool:
        family = socket.AF_INET if route.family == 4 else socket.AF_INET6
        rows = self._read("listing routes",
                          lambda: self._reader.dump_routes(family, oif=oif or 0,
                                                           table=route.table))
        for found, _rtype in rows:
            if found.dst != route.dst:
                continue
            # IPv4 omits metric 0 (None); IPv6 always has one, so None there means "any".
            if route.family == 4 and (found.metric or 0) != (route.metric or 0):
                continue
            if route.family == 6 and route.metric is not None and found.metric != route.metric:
                continue
            if route.gw is not None and found.gw != route.gw:
                continue
            return True
        return False

    def add_route(self, route: ObservedRoute) -> None:
        """ip route replace DST via GW dev DEV src SRC metric M (idempotent)."""
        self._enter()
        route = self._validated_route(route)
        what = f"adding {self._route_text(route)}"
        oif = None
        if route.dev is not None:
            oif = self._require_link(route.dev, what)[0].index
        args = self._route_args(route, oif)
        self._write(what, lambda ipr: ipr.route("replace", **args))
        self._wait_for(what, lambda: self._find_route(route, oif))

    def create_route(self, route: ObservedRoute) -> bool:
        """ip route add ... (NOT replace): False when the table already has a route with that
        key -- someone re-created it, and it is left as it is. For putting back what the kernel
        removed (executor's restore_collateral), where overwriting another's route is wrong."""
        self._enter()
        route = self._validated_route(route)
        what = f"restoring {self._route_text(route)}"
        if route.table != MAIN_TABLE:
            what += f" in table {route.table}"
        oif = None
        if route.dev is not None:
            oif = self._require_link(route.dev, what)[0].index
        args = self._route_args(route, oif)
        if self._write(what, lambda ipr: ipr.route("add", **args), tolerate=(errno.EEXIST,)):
            return False
        self._wait_for(what, lambda: self._find_route(route, oif))
        return True

    def delete_route(self, route: ObservedRoute) -> None:
        """ip route del ... (absent is fine)."""
        self._enter()
        route = self._validated_route(route)
        what = f"deleting {self._route_text(route)}"
        oif = None
        if route.dev is not None:
            found = self._link(route.dev)
            if found is None:
                return  # the kernel removed its routes with the link
            oif = found[0].index
        args = self._route_args(route, oif)
        args.pop("proto", None)
        args.pop("scope", None)
        args.pop("prefsrc", None)
        # The kernel treats metric 0 as "any" and removes one match per request (lowest metric
        # first): delete until our route is gone, bounded.
        for _attempt in range(ROUTE_DELETE_ROUNDS):
            if not self._find_route(route, oif):
                return
            if self._write(what, lambda ipr: ipr.route("del", **args),
                           tolerate=_TOLERATED_DELETE_ERRNOS):
                break
        self._wait_for(what, lambda: not self._find_route(route, oif))

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        self._discovery.close()
        if self._writer_sock is not None:
            self._writer_sock.close()
            self._writer_sock = None
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
