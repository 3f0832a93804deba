"""The discovery snapshot: the last full dump of a namespace, kept exact from the kernel's
change notifications, so a discovery costs a dump only when something changed.

Why: the plan and verify steps of a template change would otherwise each dump 10k routes
(bench B2). The kernel queues a notification before the changing call returns, so an empty
queue really means nothing changed; notifications about a few interfaces mean only those
interfaces' link, addresses and routes are re-read.
"""
from __future__ import annotations

import dataclasses
import gc
import socket
import time
from typing import Callable, Optional

from plumber_agent.host.netlink import bond
from plumber_agent.host.netlink.lbridge import dump_bridge_vlans
from plumber_agent.host.netlink.messages import ALL_INTERFACES, interfaces_named
from plumber_agent.host.netlink.reader import RtnlReader
from plumber_agent.models.observed import ObservedLink, ObservedRoute

SNAPSHOT_MAX_AGE_S = 300.0
"""The last full dump is kept up to date from notifications for at most this long, then taken
again (see DiscoverySnapshot.discover): a periodic re-read in case the kernel ever changes
something it does not notify. Longer than the 60 s resync, so an idle resync costs no full dump."""
DRAIN_MAX_READS = 4096
DRAIN_BUFFER_BYTES = 65536
PARTIAL_MAX_INTERFACES = 32


@dataclasses.dataclass
class _KernelRows:
    """Parsed dump rows keyed by interface, so one interface can be re-read on its own."""

    taken_at: float  # when the last full dump started
    links: dict = dataclasses.field(default_factory=dict)   # ifindex -> parse_link row
    addrs: dict = dataclasses.field(default_factory=dict)   # ifindex -> [parse_addr rows]
    routes: dict = dataclasses.field(default_factory=dict)  # first-hop ifindex (0: none) -> rows
    bridge_vlans: dict = dataclasses.field(default_factory=dict)  # ifindex -> VLAN entries



def _fresh_copy(link: ObservedLink, *, with_addresses: bool = False) -> ObservedLink:
    """A copy of a link the caller may change (address lists its own, empty unless asked)."""
    copy = ObservedLink.__new__(ObservedLink)
    copy.__dict__.update(link.__dict__)
    copy.ipv4 = list(link.ipv4) if with_addresses else []
    copy.ipv6 = list(link.ipv6) if with_addresses else []
    copy.vfs = list(link.vfs)
    return copy


class DiscoverySnapshot:
    """Discovery of one namespace through `reader`, kept current from `changes_sock` (a socket
    subscribed to CHANGE_GROUPS, owned and closed by this object). `read(what, call)` runs a
    reader call and turns kernel errors into HostError (the driver's wording). Not thread-safe:
    it belongs to the driver that made it."""

    def __init__(self, reader: RtnlReader, changes_sock: socket.socket, *,
                 read: Callable[[str, Callable], object]):
        self.reader = reader
        self.changes_sock = changes_sock
        self.changes_sock.setblocking(False)
        self._read = read
        self._drain_buffer = bytearray(DRAIN_BUFFER_BYTES)
        self._rows: Optional[_KernelRows] = None  # the kernel's answer, per interface
        self._snapshot: Optional[tuple] = None  # (pristine links, routes) assembled from it
        # Per dump: kernel message bytes -> parse result, so an unchanged object is not parsed
        # again (bench B1/B2: a 10k-route host re-dumped with nothing changed costs the kernel's
        # dump plus a dict lookup per message instead of a full parse).
        self._dump_memos: dict[str, dict] = {"links": {}, "addrs": {}, "v4": {}, "v6": {},
                                             "brvlan": {}}

    def close(self) -> None:
        self.changes_sock.close()

    def discover(self, *, reuse: bool = True) -> tuple[dict[str, ObservedLink],
                                                      list[ObservedRoute]]:
        """All links (canonical addresses, VF info) and the main table's unicast v4+v6 routes.

        With `reuse`, the last full dump is kept up to date from the kernel's change
        notifications instead of being taken again: no notification since means the previous
        answer still holds; notifications about a few interfaces mean only those interfaces'
        link, addresses and routes are re-read. The kernel queues a notification before the
        changing call returns, so an empty queue really means nothing changed; a lost
        notification (queue overflow), one that cannot be attributed to an interface, more than
        PARTIAL_MAX_INTERFACES interfaces, a dump older than SNAPSHOT_MAX_AGE_S or a call to
        forget() all lead to a full dump. Why: the plan and verify steps of a template
        change would otherwise each dump 10k routes (bench B2).

        The cyclic garbage collector is paused meanwhile: parsing allocates tens of thousands of
        small objects and the collector's passes over them made the cost grow faster than the
        host (bench B1: 26 % faster at 5,000 links, linear again)."""
        touched = self._drain_changes()
        rows = self._rows
        usable = (reuse and rows is not None
                  and time.monotonic() - rows.taken_at < SNAPSHOT_MAX_AGE_S)
        if usable and not touched and self._snapshot is not None:
            links, routes = self._snapshot
            return ({name: _fresh_copy(link, with_addresses=True)
                     for name, link in links.items()}, list(routes))
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if usable and touched is not ALL_INTERFACES \
                    and len(touched) <= PARTIAL_MAX_INTERFACES:
                self._refresh(rows, touched)
            else:
                rows = self._rows = self._dump_all()
            links, routes = self._assemble(rows)
        except BaseException:
            # The notifications are consumed and the rows may be half re-read: only a full
            # dump can be trusted next time.
            self.forget()
            raise
        finally:
            if was_enabled:
                gc.enable()
        self._snapshot = ({name: _fresh_copy(link, with_addresses=True)
                           for name, link in links.items()}, list(routes))
        return links, routes

    def forget(self) -> None:
        """Make the next discover() dump the kernel again (after changes made outside netlink,
        such as sysfs writes, which send no rtnetlink notification of their own)."""
        self._rows = None
        self._snapshot = None

    def _drain_changes(self):
        """Empty the change-notification queue: the set of interface indexes it named (empty:
        nothing changed), or ALL_INTERFACES when it overflowed or named something else."""
        touched: set = set()
        buffer = self._drain_buffer
        for _read in range(DRAIN_MAX_READS):
            try:
                size = self.changes_sock.recv_into(buffer, 0,
                                                    socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except BlockingIOError:
                return touched
            except OSError:  # ENOBUFS: notifications were lost
                touched = ALL_INTERFACES
                continue
            if size > len(buffer):  # cut short: cannot be read whole
                touched = ALL_INTERFACES
            if touched is not ALL_INTERFACES:
                touched = interfaces_named(bytes(buffer[:size]), touched)
        return ALL_INTERFACES  # still busy

    def _dump_all(self) -> "_KernelRows":
        reader = self.reader
        memos = self._dump_memos
        taken_at = time.monotonic()
        link_rows = self._read("listing links", lambda: reader.dump_links(memo=memos["links"]))
        names = {row[0].index: row[0].ifname for row in link_rows}
        addr_rows = self._read("listing addresses",
                               lambda: reader.dump_addrs(memo=memos["addrs"]))
        route_rows = (self._read("listing IPv4 routes",
                                 lambda: reader.dump_routes(socket.AF_INET, memo=memos["v4"],
                                                            names=names))
                      + self._read("listing IPv6 routes",
                                   lambda: reader.dump_routes(socket.AF_INET6, memo=memos["v6"],
                                                              names=names)))
        rows = _KernelRows(taken_at=taken_at)
        for row in link_rows:
            rows.links[row[0].index] = row
        for row in addr_rows:
            rows.addrs.setdefault(row[1], []).append(row)
        for row in route_rows:
            rows.routes.setdefault(row[2] or 0, []).append(row)
        self._read_bridge_vlans(rows)
        return rows

    def _read_bridge_vlans(self, rows: "_KernelRows") -> None:
        """The VLAN entries of every Linux bridge port (one more dump, and only when the
        namespace has a Linux bridge: a host without one pays nothing)."""
        if not any(row[0].kind == "bridge" for row in rows.links.values()):
            rows.bridge_vlans = {}
            return
        rows.bridge_vlans = self._read("listing bridge VLANs", lambda: dump_bridge_vlans(
            self.reader, memo=self._dump_memos["brvlan"]))

    def _refresh(self, rows: "_KernelRows", indexes: set) -> None:
        """Re-read the link, addresses and routes of each interface in `indexes`."""
        reader = self.reader
        present = []
        for index in indexes:
            link = self._read("reading a link", lambda: reader.get_link(index=index,
                                                                         with_vfs=True))
            if link is None:  # gone: so are its addresses and routes
                rows.links.pop(index, None)
                rows.addrs.pop(index, None)
                rows.routes.pop(index, None)
            else:
                rows.links[index] = link
                present.append(index)
        names = {index: row[0].ifname for index, row in rows.links.items()}
        for index in present:
            rows.addrs[index] = self._read("listing addresses",
                                           lambda: reader.dump_addrs(index=index))
            rows.routes[index] = (
                self._read("listing IPv4 routes",
                           lambda: reader.dump_routes(socket.AF_INET, oif=index, names=names))
                + self._read("listing IPv6 routes",
                             lambda: reader.dump_routes(socket.AF_INET6, oif=index,
                                                        names=names)))
        # A port's VLAN change is notified as a link change of the port (br_ifinfo_notify).
        if rows.bridge_vlans or any(rows.links[i][0].kind == "bridge" for i in present):
            self._read_bridge_vlans(rows)

    def _assemble(self, rows: "_KernelRows") -> tuple[dict[str, ObservedLink],
                                                      list[ObservedRoute]]:
        names = {index: row[0].ifname for index, row in rows.links.items()}
        by_index: dict[int, ObservedLink] = {}
        links: dict[str, ObservedLink] = {}
        for index in sorted(rows.links):
            parsed, parent_index, extras = rows.links[index]
            link = _fresh_copy(parsed)  # the parse result may be reused by the next dump
            if parent_index is not None:
                link.parent = names.get(parent_index)
            if extras.get("master_index"):
                link.master = names.get(extras["master_index"])
                master = rows.links.get(extras["master_index"])
                if master is not None and master[0].kind == "bridge":
                    link.bridge_vlans = list(rows.bridge_vlans.get(index, ()))
            if link.bond is not None:
                link.bond = bond.name_bond(link.bond, {k[5:]: v for k, v in extras.items()
                                                       if k.startswith("bond_")}, names)
            by_index[index] = link
            links[link.ifname] = link
        for index, addr_rows in rows.addrs.items():
            link = by_index.get(index)
            if link is None:
                continue
            for family, _index, cidr in addr_rows:
                if cidr:
                    (link.ipv4 if family == socket.AF_INET else link.ipv6).append(cidr)
        for link in by_index.values():
            link.ipv4.sort()
            link.ipv6.sort()
        # Route rows are named when parsed and shared between discoveries (ObservedRoute is
        # never modified after discovery); only a route whose device was renamed since is
        # copied under its new name.
        routes = []
        for oif in sorted(rows.routes):
            for route, _rtype, index in rows.routes[oif]:
                dev = names.get(index) if index is not None else None
                routes.append(route if route.dev == dev else dataclasses.replace(route, dev=dev))
        return links, routes
