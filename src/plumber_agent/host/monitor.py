"""Kernel change events for one network namespace, so drift is repaired within a second.

Periodic resyncs alone would leave a deleted address or a downed link broken for a whole resync
period. The kernel multicasts every link, address and route change on rtnetlink groups; this
module listens to them on a plain netlink socket (opened inside the namespace without forking,
see host/netlink/netns.py) and hands each change to a callback as a KernelEvent (what changed,
on which device, and its description for the logs), so the caller can tell cheaply whether it
concerns anything a template manages (plumber_agent/interest.py). Coalescing many events into
one reconcile is the caller's job. Lost events (socket buffer overflow, ENOBUFS) are reported
as a change too, because the caller must then re-read everything.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import threading
from typing import Callable, Optional

from plumber_agent.host.netlink.messages import (
    CHANGE_GROUPS, NLMSG_DONE, NLMSG_ERROR, RT_TABLE_MAIN, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE,
    RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTN_UNICAST, RTN_UNREACHABLE_TYPES, iter_messages,
    parse_addr, parse_link, parse_route)
from plumber_agent.host.netlink.netns import new_rtnl_socket, open_netns_sockets
from plumber_agent.host.netlink.reader import RECV_BUFFER_BYTES, RtnlReader
from plumber_agent.models.events import EventKind, KernelEvent

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
"""How long one wait for events lasts: bounds how late run() notices stop_event."""
NAME_CACHE_MAX = 65536

UNDECODABLE_ERRORS = (struct.error, IndexError, ValueError)
LOST_EVENTS_DESCRIPTION = "netlink events were lost (receive buffer overflow): re-read everything"
LOST_EVENTS = KernelEvent(EventKind.LOST, LOST_EVENTS_DESCRIPTION)


class NetlinkMonitor:
    """Calls `callback(event)` (a KernelEvent; str() is its description) for every link/address/route change in `netns` (None: the
    caller's own namespace) until `stop_event` is set.

    The subscription starts in the constructor (raising NotAvailable for a missing namespace),
    so no change made after construction is missed; `run()` is meant for its own thread and
    returns within POLL_INTERVAL_S of `stop_event` being set. A callback that raises is logged
    and the monitor goes on.
    """

    def __init__(self, netns: Optional[str], callback: Callable[[KernelEvent], None], *,
                 stop_event: threading.Event):
        self.netns = netns
        self.callback = callback
        self.stop_event = stop_event
        self._events, lookup_sock = open_netns_sockets(
            netns, [lambda: new_rtnl_socket(CHANGE_GROUPS), new_rtnl_socket])
        self._lookup = RtnlReader(lookup_sock)
        self._names: dict[int, str] = {}
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._events.close()
            self._lookup.close()

    def run(self) -> None:
        """Deliver events until stop_event is set; closes the sockets on the way out."""
        try:
            buffer = bytearray(RECV_BUFFER_BYTES)
            poller = select.poll()  # not select(): an agent may hold more than FD_SETSIZE fds
            poller.register(self._events, select.POLLIN)
            while not self.stop_event.is_set():
                if not poller.poll(POLL_INTERVAL_S * 1000):
                    continue
                try:
                    size = self._events.recv_into(buffer, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        self._deliver(LOST_EVENTS)
                        continue
                    raise
                for event in self._describe_all(bytes(buffer[:size])):
                    self._deliver(event)
        finally:
            self.close()

    # -- internals ------------------------------------------------------------------------------

    def _deliver(self, event: KernelEvent) -> None:
        try:
            self.callback(event)
        except Exception:  # the monitor must outlive a buggy callback
            log.exception("netlink monitor callback failed for %r", str(event))

    def _describe_all(self, data: bytes) -> list[KernelEvent]:
        out = []
        for msg_type, _flags, _seq, start, end in iter_messages(data):
            if msg_type in (NLMSG_DONE, NLMSG_ERROR):
                continue
            try:
                event = self._describe(msg_type, data, start, end)
            except UNDECODABLE_ERRORS as exc:  # a malformed message: still a change
                event = KernelEvent(EventKind.UNDECODABLE,
                                    f"netlink message type {msg_type} (undecodable: {exc})")
            if event:
                out.append(event)
        return out

    def _lookup_name(self, index: Optional[int]) -> Optional[str]:
        """The name of link `index` (cached; asked of the kernel once); None when unknown."""
        if index is None:
            return None
        name = self._names.get(index)
        if name is None:
            try:
                found = self._lookup.get_link(index=index)
            except OSError:
                found = None
            if found is None:
                return None
            name = found[0].ifname
            self._remember(index, name)
        return name

    @staticmethod
    def _name_text(index: Optional[int], name: Optional[str]) -> str:
        if name:
            return name
        return "no device" if index is None else f"ifindex {index}"

    def _remember(self, index: int, name: str) -> None:
        if len(self._names) >= NAME_CACHE_MAX:
            self._names.clear()
        self._names[index] = name

    def _describe(self, msg_type: int, data: bytes, start: int, end: int) -> Optional[KernelEvent]:
        if msg_type in (RTM_NEWLINK, RTM_DELLINK):
            link, _parent, _extras = parse_link(data, start, end)
            if msg_type == RTM_DELLINK:
                self._names.pop(link.index, None)
                text = f"link {link.ifname} removed"
            else:
                self._remember(link.index, link.ifname)
                text = (f"link {link.ifname} changed ({'up' if link.admin_up else 'down'}, "
                        f"oper {link.oper_state}, mtu {link.mtu})")
            return KernelEvent(EventKind.LINK, text, removed=msg_type == RTM_DELLINK,
                               ifname=link.ifname or None, index=link.index, link_kind=link.kind)
        if msg_type in (RTM_NEWADDR, RTM_DELADDR):
            family, index, cidr = parse_addr(data, start, end)
            name = self._lookup_name(index)
            where = self._name_text(index, name)
            text = (f"address {cidr} removed from {where}" if msg_type == RTM_DELADDR
                    else f"address {cidr} added on {where}")
            return KernelEvent(EventKind.ADDRESS, text, removed=msg_type == RTM_DELADDR,
                               ifname=name, index=index, cidr=cidr or None,
                               family=6 if family == socket.AF_INET6 else 4)
        if msg_type in (RTM_NEWROUTE, RTM_DELROUTE):
            route, rtype = parse_route(data, start, end)
            if rtype != RTN_UNICAST and rtype not in RTN_UNREACHABLE_TYPES:
                return None  # local/broadcast/multicast: follow address changes, reported above
            name = self._lookup_name(route.dev)
            text = f"IPv{route.family} route {route.dst or 'default'}"
            if route.gw:
                text += f" via {route.gw}"
            text += f" dev {self._name_text(route.dev, name)}"
            if route.table != RT_TABLE_MAIN:
                text += f" table {route.table}"
            text += " removed" if msg_type == RTM_DELROUTE else " added or changed"
            return KernelEvent(EventKind.ROUTE, text, removed=msg_type == RTM_DELROUTE,
                               ifname=name, index=route.dev, family=route.family, dst=route.dst,
                               gw=route.gw, table=route.table)
        return None
