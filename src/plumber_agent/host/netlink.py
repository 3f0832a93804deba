"""Links, addresses and routes of one network namespace: the only module that imports pyroute2.

Why it looks the way it does:

* Reads (discovery, `route_to`, visibility polls) go through a small raw rtnetlink reader in this
  module instead of pyroute2's dumps. Discovery runs on every reconcile and a node can have
  thousands of links and routes; pyroute2 decodes every attribute of every message into Python
  objects (measured 25-45x slower than `ip -j`), while we need a dozen attributes. The reader
  also asks the kernel to filter (NETLINK_GET_STRICT_CHK: main table only, one ifindex) and
  restarts dumps the kernel marks NLM_F_DUMP_INTR (pitfall 18).
* Writes go through pyroute2's IPRoute, created lazily on the first write. pyroute2 0.9 runs on a
  per-thread asyncio loop (pitfall 14), so a `Netlink` belongs to ONE thread: the first thread
  that calls a method owns it; calls from another thread raise RuntimeError. Use one instance per
  thread (they may share a namespace).
* Namespace sockets are opened without forking. pyroute2 0.9.7's `IPRoute(netns=...)` forks a
  child (`config.child_process_mode = "fork"`, and "mp" is multiprocessing's default *fork*
  start method on Linux/Python 3.11, so it forks too) to setns() and pass the socket back, and it
  *creates* a missing namespace unless flags=0 (pitfalls 15, 16). Instead a short-lived helper
  thread setns()es into the existing /var/run/netns/NAME (network namespaces are per thread) and
  opens the sockets there; the thread then ends. A missing namespace is NotAvailable and is never
  created. pyroute2's global config is left alone.
* Changes are idempotent (EEXIST means compare and set), deletes tolerate absence, and every
  change is polled until visible with a bound (pitfall 17).
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import gc
import ipaddress
import os
import socket
import struct
import threading
import time
from functools import partial
from typing import Callable, Optional

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.models.observed import ObservedLink, ObservedRoute, ObservedVfInfo
from plumber_agent.validation import (canonical_interface_address, canonical_ip,
                                      canonical_network, check_ifname, check_int_range,
                                      check_mtu, check_vlan_id, require)

NETNS_RUN_DIR = "/var/run/netns"
DEFAULT_WAIT_TIMEOUT_S = 5.0
NETNS_OPEN_TIMEOUT_S = 5.0
"""Bound on the helper thread that opens sockets inside a namespace."""
RECV_TIMEOUT_S = 10.0
"""A kernel answer slower than this means something is badly wrong; fail instead of hanging."""
DUMP_INTR_RETRIES = 10
"""How often a dump the kernel marked inconsistent (NLM_F_DUMP_INTR) is restarted."""
POLL_INTERVAL_FIRST_S = 0.005
POLL_INTERVAL_MAX_S = 0.1
ROUTE_DELETE_ROUNDS = 16
SOCKET_RCVBUF_BYTES = 4 * 1024 * 1024
RECV_BUFFER_BYTES = 256 * 1024  # a dump arrives in pages of at most 32 KiB
VLAN_MISSING_MESSAGE = "this kernel has no 802.1Q VLAN support (module 8021q)"

# --- rtnetlink ABI (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h) ---
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
CLONE_NEWNET = 0x40000000

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300

# linux/rtnetlink.h multicast group bits (the legacy RTMGRP_* bind mask): every link, address
# and main-table route change, as the monitor and the discovery snapshot listen to them.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
CHANGE_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR
                 | RTMGRP_IPV6_ROUTE)
SNAPSHOT_MAX_AGE_S = 300.0
"""The last full dump is kept up to date from notifications for at most this long, then taken
again (see Netlink.discover): a periodic re-read in case the kernel ever changes something it
does not notify. Longer than the 60 s resync, so an idle resync costs no full dump."""
DRAIN_MAX_READS = 4096
DRAIN_BUFFER_BYTES = 65536
PARTIAL_MAX_INTERFACES = 32
ALL_INTERFACES = frozenset({-1})  # 'anything may have changed'

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_VFINFO_LIST = 16, 18, 22
IFLA_EXT_MASK, IFLA_LINK_NETNSID = 29, 37
IFLA_MIN_MTU, IFLA_MAX_MTU = 50, 51
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID = 1
IFLA_VF_INFO = 1
IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_SPOOFCHK, IFLA_VF_TRUST = 1, 2, 4, 9
RTEXT_FILTER_VF, RTEXT_FILTER_SKIP_STATS = 0x1, 0x8
VF_SETTING_UNKNOWN = 0xFFFFFFFF

IFA_ADDRESS, IFA_LOCAL = 1, 2

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE = 9, 15
RT_TABLE_MAIN = 254
RTN_UNICAST, RTN_LOCAL = 1, 2
RTN_UNREACHABLE_TYPES = (6, 7, 8, 9)  # blackhole, unreachable, prohibit, throw

NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
# iproute2's built-in protocol names (lib/rt_names.c); anything else is reported as its number.
RT_PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
             9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk",
             16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel", 99: "openr", 186: "bgp",
             187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
RT_PROTO_NUMBERS = {name: number for number, name in RT_PROTOS.items()}

NLMSG_HEADER = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_U32X2 = struct.Struct("=II")
_U32X3 = struct.Struct("=III")
_RTNH = struct.Struct("=HBBi")

_TOLERATED_DELETE_ERRNOS = (errno.ENODEV, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ESRCH)


class NetlinkOSError(OSError):
    """An errno the kernel returned in an NLMSG_ERROR (raised by the raw reader)."""


_ERRNO_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP"}  # Linux aliases it to ENOTSUP; netlink says this


def errno_text(code: int) -> str:
    """'EEXIST (File exists)': the errno's name and its meaning, for messages a user can act on."""
    name = _ERRNO_NAMES.get(code) or errno.errorcode.get(code, f"errno {code}")
    return f"{name} ({os.strerror(code)})"


# ------------------------------------------------------------------------------------------------
# Opening sockets inside a namespace without forking.

def _check_netns_name(value) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a namespace name"
    if value in (".", "..") or "/" in value or len(value) > 255:
        return f"{value!r} is not a valid namespace name"
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return f"{value!r} is not a valid namespace name (printable ASCII, no whitespace)"
    if value.startswith("-"):
        return f"{value!r} is not a valid namespace name (starts with '-')"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns_net(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def open_netns_sockets(netns: Optional[str],
                       factories: list[Callable[[], socket.socket]]) -> list[socket.socket]:
    """One socket per factory, made inside namespace `netns` (None: this thread's own).

    The namespace must already exist (NotAvailable otherwise; it is never created). A helper
    thread enters it with setns(), which changes only that thread, opens the sockets and ends:
    no fork, safe in a threaded program, nothing in the caller's thread changes namespace.
    """
    if netns is None:
        return _make_all(factories)
    require(_check_netns_name, netns, "netns")
    path = os.path.join(NETNS_RUN_DIR, netns)
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotAvailable(f"network namespace {netns!r} does not exist ({path} is missing); "
                           "it is not created automatically") from None
    except OSError as exc:
        raise NotAvailable(f"network namespace {netns!r}: cannot open {path}: "
                           f"{errno_text(exc.errno or 0)}") from None
    result: dict = {}

    def enter_and_open() -> None:
        try:
            _setns_net(ns_fd)
            result["sockets"] = _make_all(factories)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    try:
        helper = threading.Thread(target=enter_and_open, name=f"netns-open:{netns}", daemon=True)
        helper.start()
        helper.join(NETNS_OPEN_TIMEOUT_S)
        if helper.is_alive():
            raise HostTimeout(f"opening sockets in network namespace {netns!r} took longer "
                              f"than {NETNS_OPEN_TIMEOUT_S} s")
    finally:
        os.close(ns_fd)
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, OSError):
            code = exc.errno or 0
            if code == errno.EINVAL:
                raise NotAvailable(f"{path} is not a network namespace") from None
            raise HostError(f"cannot enter network namespace {netns!r}: {errno_text(code)}") \
                from None
        raise exc
    return result["sockets"]


def _make_all(factories: list[Callable[[], socket.socket]]) -> list[socket.socket]:
    made: list[socket.socket] = []
    try:
        for factory in factories:
            made.append(factory())
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def new_plain_rtnl_socket() -> socket.socket:
    """An unbound NETLINK_ROUTE socket with kernel defaults, handed to pyroute2 for writes
    (SOCK_DGRAM: asyncio's datagram transport, which pyroute2 0.9 uses, insists on it)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_ROUTE)


def new_rtnl_socket(groups: int = 0) -> socket.socket:
    """A plain NETLINK_ROUTE socket (bound, strict dump checking on when the kernel has it)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)
        for option in (NETLINK_GET_STRICT_CHK, NETLINK_EXT_ACK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass  # old kernel: the reader filters in userspace as well
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


# ------------------------------------------------------------------------------------------------
# Canonical text, cached: dumps repeat the same gateways, sources and prefixes many times.

_ntop_cache: dict[bytes, str] = {}


def _ip_text(raw: bytes) -> str:
    text = _ntop_cache.get(raw)
    if text is None:
        if len(raw) == 4:
            text = socket.inet_ntop(socket.AF_INET, raw)
        elif len(raw) == 16:
            text = socket.inet_ntop(socket.AF_INET6, raw)
            if "." in text:  # glibc writes embedded IPv4; ipaddress (our canonical form) does not
                text = ipaddress.IPv6Address(raw).compressed
        else:
            text = raw.hex()
        if len(_ntop_cache) > 200_000:
            _ntop_cache.clear()
        _ntop_cache[raw] = text
    return text


def _mac_text(raw: bytes) -> Optional[str]:
    return raw.hex(":") if raw else None


def _cstr(data: bytes, start: int, end: int) -> str:
    nul = data.find(b"\0", start, end)
    return data[start:end if nul < 0 else nul].decode("utf-8", "replace")


def _proto_text(proto: int) -> str:
    return RT_PROTOS.get(proto) or str(proto)


# ------------------------------------------------------------------------------------------------
# Message parsers: only the attributes discovery needs, straight from the bytes.

def _parse_vfinfo_list(data: bytes, pos: int, end: int, mac_len: int) -> list[ObservedVfInfo]:
    vfs = []
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        if atype & NLA_TYPE_MASK == IFLA_VF_INFO:
            vf = ObservedVfInfo(id=-1)
            p, e = pos + 4, pos + alen
            while p + 4 <= e:
                blen, btype = _NLA.unpack_from(data, p)
                if blen < 4:
                    break
                btype &= NLA_TYPE_MASK
                v = p + 4
                if btype == IFLA_VF_MAC and blen >= 8:
                    vf.id = _U32.unpack_from(data, v)[0]
                    vf.mac = _mac_text(data[v + 4:v + 4 + (mac_len or 6)])
                elif btype == IFLA_VF_VLAN and blen >= 16:
                    vf.id, vf.vlan, vf.qos = _U32X3.unpack_from(data, v)
                elif btype in (IFLA_VF_SPOOFCHK, IFLA_VF_TRUST) and blen >= 12:
                    vf_id, setting = _U32X2.unpack_from(data, v)
                    vf.id = vf_id
                    value = None if setting == VF_SETTING_UNKNOWN else bool(setting)
                    if btype == IFLA_VF_SPOOFCHK:
                        vf.spoofchk = value
                    else:
                        vf.trust = value
                p += (blen + 3) & ~3
            if vf.id >= 0:
                vfs.append(vf)
        pos += (alen + 3) & ~3
    vfs.sort(key=lambda item: item.id)
    return vfs


def parse_link(data: bytes, pos: int, end: int) -> tuple[ObservedLink, Optional[int], dict]:
    """(link without parent name, IFLA_LINK index if it names a link in this namespace, extras)."""
    _family, _type, index, flags, _change = _IFINFO.unpack_from(data, pos)
    link = ObservedLink(ifname="", index=index, admin_up=bool(flags & IFF_UP))
    parent_index = None
    other_netns = False
    extras: dict = {}
    vf_span = None
    pos += 16
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        v = pos + 4
        if atype == IFLA_IFNAME:
            link.ifname = _cstr(data, v, pos + alen)
        elif atype == IFLA_MTU:
            link.mtu = _U32.unpack_from(data, v)[0]
        elif atype == IFLA_ADDRESS:
            link.mac = _mac_text(data[v:pos + alen])
        elif atype == IFLA_OPERSTATE:
            state = data[v]
            link.oper_state = OPER_STATES[state] if state < len(OPER_STATES) else str(state)
        elif atype == IFLA_LINK:
            parent_index = _U32.unpack_from(data, v)[0]
        elif atype == IFLA_LINK_NETNSID:
            other_netns = True
        elif atype == IFLA_LINKINFO:
            p, e = v, pos + alen
            while p + 4 <= e:
                blen, btype = _NLA.unpack_from(data, p)
                if blen < 4:
                    break
                btype &= NLA_TYPE_MASK
                if btype == IFLA_INFO_KIND:
                    link.kind = _cstr(data, p + 4, p + blen)
                elif btype == IFLA_INFO_DATA:
                    q, qe = p + 4, p + blen
                    while q + 4 <= qe:
                        clen, ctype = _NLA.unpack_from(data, q)
                        if clen < 4:
                            break
                        if ctype & NLA_TYPE_MASK == IFLA_VLAN_ID and clen >= 6:
                            extras["info_vlan_id"] = _U16.unpack_from(data, q + 4)[0]
                        q += (clen + 3) & ~3
                p += (blen + 3) & ~3
        elif atype == IFLA_VFINFO_LIST:
            vf_span = (v, pos + alen)
        elif atype == IFLA_MIN_MTU:
            extras["min_mtu"] = _U32.unpack_from(data, v)[0]
        elif atype == IFLA_MAX_MTU:
            extras["max_mtu"] = _U32.unpack_from(data, v)[0]
        pos += (alen + 3) & ~3
    if link.kind == "vlan":
        link.vlan_id = extras.get("info_vlan_id")
    if vf_span is not None:
        link.vfs = _parse_vfinfo_list(data, vf_span[0], vf_span[1],
                                      len(link.mac.split(":")) if link.mac else 6)
    if other_netns or parent_index == index or parent_index == 0:
        parent_index = None
    return link, parent_index, extras


def parse_addr(data: bytes, pos: int, end: int) -> tuple[int, int, str]:
    """(family AF_*, ifindex, 'ip/prefix')."""
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, pos)
    address = local = None
    pos += 8
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        if atype == IFA_LOCAL:
            local = data[pos + 4:pos + alen]
        elif atype == IFA_ADDRESS:
            address = data[pos + 4:pos + alen]
        pos += (alen + 3) & ~3
    raw = local if local is not None else address  # IFA_LOCAL is ours; IFA_ADDRESS a p2p peer
    return family, index, f"{_ip_text(raw)}/{prefixlen}" if raw else ""


def parse_route(data: bytes, pos: int, end: int):
    """(ObservedRoute with dev as an ifindex, rtm_type), or None for another table."""
    (family, dst_len, _src_len, _tos, table, proto, scope, rtype,
     _flags) = _RTMSG.unpack_from(data, pos)
    dst = gw = src = None
    oif = metric = None
    pos += 12
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        v = pos + 4
        if atype == RTA_DST:
            dst = data[v:pos + alen]
        elif atype == RTA_GATEWAY:
            gw = data[v:pos + alen]
        elif atype == RTA_OIF:
            oif = _U32.unpack_from(data, v)[0]
        elif atype == RTA_PRIORITY:
            metric = _U32.unpack_from(data, v)[0]
        elif atype == RTA_PREFSRC:
            src = data[v:pos + alen]
        elif atype == RTA_TABLE:
            table = _U32.unpack_from(data, v)[0]
        elif atype == RTA_MULTIPATH and oif is None:
            # ECMP: report the first next hop (ObservedRoute has one dev/gw).
            nh_len, _nh_flags, _hops, nh_ifindex = _RTNH.unpack_from(data, v)
            oif = nh_ifindex
            p, e = v + 8, v + nh_len
            while p + 4 <= e:
                blen, btype = _NLA.unpack_from(data, p)
                if blen < 4:
                    break
                if btype & NLA_TYPE_MASK == RTA_GATEWAY and gw is None:
                    gw = data[p + 4:p + blen]
                p += (blen + 3) & ~3
        pos += (alen + 3) & ~3
    route = ObservedRoute(
        family=4 if family == socket.AF_INET else 6,
        dst=f"{_ip_text(dst)}/{dst_len}" if dst_len else None,
        gw=_ip_text(gw) if gw else None,
        dev=oif,  # resolved to a name by the caller
        src=_ip_text(src) if src else None,
        metric=metric,
        proto=_proto_text(proto),
        scope=scope,
        table=table,
    )
    return route, rtype


def _parse_named_route(data: bytes, pos: int, end: int, names: dict):
    """(ObservedRoute with dev=name, rtype, ifindex): named at once, so a dump's rows can be
    handed out (and reused by the next dump) without a renamed copy of every route."""
    route, rtype = parse_route(data, pos, end)
    index = route.dev
    route.dev = names.get(index) if index is not None else None
    return route, rtype, index


# ------------------------------------------------------------------------------------------------
# The raw reader.

class RtnlReader:
    """Requests and dumps over one plain NETLINK_ROUTE socket (not thread-safe)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._sock.settimeout(RECV_TIMEOUT_S)
        self._seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        self._buffer = bytearray(RECV_BUFFER_BYTES)

    def close(self) -> None:
        self._sock.close()

    def _send(self, msg_type: int, flags: int, payload: bytes) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        header = NLMSG_HEADER.pack(16 + len(payload), msg_type, flags, self._seq, 0)
        self._sock.send(header + payload)
        return self._seq

    def _messages(self, seq: int):
        """Yield (type, flags, data, body_start, end) for messages answering `seq`."""
        view = memoryview(self._buffer)
        while True:
            try:
                size = self._sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
            except socket.timeout:
                raise HostTimeout(f"the kernel did not answer a netlink request within "
                                  f"{RECV_TIMEOUT_S} s") from None
            if size > len(self._buffer):
                self._buffer = bytearray(size * 2)
                raise NetlinkOSError(errno.EMSGSIZE, "netlink message larger than the buffer")
            data = bytes(view[:size])
            pos = 0
            while pos + 16 <= size:
                length, msg_type, flags, msg_seq, _pid = NLMSG_HEADER.unpack_from(data, pos)
                if length < 16:
                    break
                if msg_seq == seq:
                    yield msg_type, flags, data, pos + 16, pos + length
                pos += (length + 3) & ~3

    @staticmethod
    def _error_code(data: bytes, start: int) -> int:
        return -struct.unpack_from("=i", data, start)[0]

    def request(self, msg_type: int, payload: bytes, parse):
        """One non-dump request; returns parse(data, start, end) of the answer (or None for an
        ack). Raises NetlinkOSError with the kernel's errno."""
        seq = self._send(msg_type, NLM_F_REQUEST | NLM_F_ACK, payload)
        result = None
        for r_type, _flags, data, start, end in self._messages(seq):
            if r_type == NLMSG_ERROR:
                code = self._error_code(data, start)
                if code:
                    raise NetlinkOSError(code, os.strerror(code))
                return result
            if r_type in (NLMSG_NOOP, NLMSG_DONE):
                continue
            result = parse(data, start, end)
        return result  # pragma: no cover - _messages only ends by raising

    def dump(self, msg_type: int, payload: bytes, answer_type: int, parse,
             memo: Optional[dict] = None) -> list:
        """A dump, restarted when the kernel marks it interrupted; [parse(...)] per message.

        With `memo` (message body bytes -> parse result, from the previous dump of the same
        request), a message identical to one seen last time is not parsed again: its earlier
        result is reused, so the caller must treat results as read-only. On return `memo` holds
        exactly this dump's messages (it never grows past the host's size)."""
        for _attempt in range(DUMP_INTR_RETRIES):
            seq = self._send(msg_type, NLM_F_REQUEST | NLM_F_DUMP, payload)
            results = []
            seen: dict = {}
            interrupted = False
            for r_type, flags, data, start, end in self._messages(seq):
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if r_type == answer_type:
                    if memo is None:
                        results.append(parse(data, start, end))
                        continue
                    body = data[start:end]
                    parsed = memo.get(body)
                    if parsed is None:
                        parsed = parse(data, start, end)
                    seen[body] = parsed
                    results.append(parsed)
                elif r_type == NLMSG_DONE:
                    code = self._error_code(data, start) if end - start >= 4 else 0
                    if code:
                        raise NetlinkOSError(code, os.strerror(code))
                    break
                elif r_type == NLMSG_ERROR:
                    code = self._error_code(data, start)
                    raise NetlinkOSError(code, os.strerror(code))
            if not interrupted:
                if memo is not None:
                    memo.clear()
                    memo.update(seen)
                return results
        raise HostError(f"netlink dump kept being interrupted by concurrent changes "
                        f"(NLM_F_DUMP_INTR) {DUMP_INTR_RETRIES} times in a row")

    # -- typed helpers --------------------------------------------------------------------------

    @staticmethod
    def _nla(atype: int, value: bytes) -> bytes:
        length = 4 + len(value)
        return _NLA.pack(length, atype) + value + b"\0" * ((4 - length % 4) % 4)

    def dump_links(self, *, with_vfs: bool = True, memo: Optional[dict] = None) -> list:
        mask = RTEXT_FILTER_SKIP_STATS | (RTEXT_FILTER_VF if with_vfs else 0)
        payload = _IFINFO.pack(0, 0, 0, 0, 0) + self._nla(IFLA_EXT_MASK, _U32.pack(mask))
        return self.dump(RTM_GETLINK, payload, RTM_NEWLINK, parse_link, memo)

    def get_link(self, *, ifname: Optional[str] = None, index: int = 0,
                 with_vfs: bool = False):
        """(ObservedLink, parent index, extras) or None when there is no such link."""
        payload = _IFINFO.pack(0, 0, index, 0, 0)
        if ifname is not None:
            payload += self._nla(IFLA_IFNAME, ifname.encode() + b"\0")
        mask = RTEXT_FILTER_SKIP_STATS | (RTEXT_FILTER_VF if with_vfs else 0)
        payload += self._nla(IFLA_EXT_MASK, _U32.pack(mask))
        try:
            return self.request(RTM_GETLINK, payload, parse_link)
        except NetlinkOSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    def dump_addrs(self, family: int = socket.AF_UNSPEC, index: int = 0,
                   memo: Optional[dict] = None) -> list:
        payload = _IFADDR.pack(family, 0, 0, 0, index)
        rows = self.dump(RTM_GETADDR, payload, RTM_NEWADDR, parse_addr, memo)
        if index:  # old kernels ignore the filter
            rows = [row for row in rows if row[1] == index]
        return rows

    def dump_routes(self, family: int, *, oif: int = 0, table: int = RT_TABLE_MAIN,
                    memo: Optional[dict] = None, names: Optional[dict] = None) -> list:
        """Unicast routes of one table: [(ObservedRoute with dev=ifindex, type)], or with
        `names` (ifindex -> name) [(ObservedRoute with dev=name, type, ifindex)]."""
        payload = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        if table >= 256:
            payload += self._nla(RTA_TABLE, _U32.pack(table))
        if oif:
            payload += self._nla(RTA_OIF, _U32.pack(oif))
        try:
            parse = parse_route if names is None else partial(_parse_named_route, names=names)
            rows = self.dump(RTM_GETROUTE, payload, RTM_NEWROUTE, parse, memo)
        except NetlinkOSError as exc:
            if exc.errno == errno.ENOENT:  # no main table at all (IPv4 kernels report this)
                return []
            raise
        return [row for row in rows if row[1] == RTN_UNICAST and row[0].table == table
                and (not oif or (row[0].dev if names is None else row[2]) == oif)]

    def get_route(self, ip: str):
        """`ip route get IP`: (ObservedRoute with dev=ifindex, type), or None if unreachable."""
        addr = ipaddress.ip_address(ip)
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        payload = (_RTMSG.pack(family, addr.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
                   + self._nla(RTA_DST, addr.packed))
        try:
            return self.request(RTM_GETROUTE, payload, parse_route)
        except NetlinkOSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                             errno.ESRCH, errno.EACCES, errno.EINVAL):
                return None
            raise


@dataclasses.dataclass
class _KernelRows:
    """Parsed dump rows keyed by interface, so one interface can be re-read on its own."""

    taken_at: float  # when the last full dump started
    links: dict = dataclasses.field(default_factory=dict)   # ifindex -> parse_link row
    addrs: dict = dataclasses.field(default_factory=dict)   # ifindex -> [parse_addr rows]
    routes: dict = dataclasses.field(default_factory=dict)  # first-hop ifindex (0: none) -> rows


def _interfaces_named(data: bytes, touched: set):
    """Add the interface indexes the notifications in `data` are about to `touched`; returns
    ALL_INTERFACES for a message that names none (or is not a link/address/route message)."""
    pos = 0
    while pos + 16 <= len(data):
        length, msg_type, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(data, pos)
        if length < 16 or pos + length > len(data):
            return ALL_INTERFACES
        body, end = pos + 16, pos + length
        try:
            if msg_type in (RTM_NEWLINK, RTM_DELLINK):
                touched.add(_IFINFO.unpack_from(data, body)[2])
            elif msg_type in (RTM_NEWADDR, RTM_DELADDR):
                touched.add(_IFADDR.unpack_from(data, body)[4])
            elif msg_type in (RTM_NEWROUTE, RTM_DELROUTE):
                named = _route_interfaces(data, body + _RTMSG.size, end)
                if not named:
                    return ALL_INTERFACES
                touched.update(named)
            elif msg_type not in (NLMSG_NOOP, NLMSG_DONE):
                return ALL_INTERFACES
        except struct.error:
            return ALL_INTERFACES
        pos += (length + 3) & ~3
    return touched


def _route_interfaces(data: bytes, pos: int, end: int) -> set:
    """RTA_OIF and every next hop's interface of one route message."""
    found = set()
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        if atype == RTA_OIF:
            found.add(_U32.unpack_from(data, pos + 4)[0])
        elif atype == RTA_MULTIPATH:
            p, e = pos + 4, pos + alen
            while p + 8 <= e:
                nh_len, _nh_flags, _hops, nh_ifindex = _RTNH.unpack_from(data, p)
                if nh_len < 8:
                    break
                found.add(nh_ifindex)
                p += (nh_len + 3) & ~3
        pos += (alen + 3) & ~3
    return found


def _fresh_copy(link: ObservedLink, *, with_addresses: bool = False) -> ObservedLink:
    """A copy of a link the caller may change (address lists its own, empty unless asked)."""
    copy = ObservedLink.__new__(ObservedLink)
    copy.__dict__.update(link.__dict__)
    copy.ipv4 = list(link.ipv4) if with_addresses else []
    copy.ipv6 = list(link.ipv6) if with_addresses else []
    copy.vfs = list(link.vfs)
    return copy


# ------------------------------------------------------------------------------------------------
# The driver.

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


def _check_family(value) -> Optional[str]:
    return None if value in (4, 6) else f"{value!r} is not 4 or 6"


def _check_optional_ifname(value) -> Optional[str]:
    return None if value is None else check_ifname(value)


class Netlink:
    """NetlinkDriver for one network namespace (None: the caller's own).

    ONE INSTANCE PER THREAD: the first thread that calls a method owns the instance (pyroute2 0.9
    sockets live on a per-thread asyncio loop); other threads get RuntimeError. It may be built
    in one thread and handed to another before its first use; close it in the thread that used
    it. Several instances (one per thread) may work on the same namespace at once.
    Usable as a context manager.
    """

    def __init__(self, netns: Optional[str] = None, *,
                 wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S):
        if netns is not None:
            require(_check_netns_name, netns, "netns")
        self.netns = netns
        self.wait_timeout_s = wait_timeout_s
        self._where = f"network namespace {netns!r}" if netns else "this network namespace"
        # Three sockets opened at once: the reader's, one kept for pyroute2 (writes), and one
        # subscribed to change notifications, which tells discover() whether its last full dump
        # is still exact.
        self._reader_sock, self._writer_sock, self._changes_sock = open_netns_sockets(
            netns, [new_rtnl_socket, new_plain_rtnl_socket,
                    lambda: new_rtnl_socket(CHANGE_GROUPS)])
        self._changes_sock.setblocking(False)
        self._drain_buffer = bytearray(DRAIN_BUFFER_BYTES)
        self._rows: Optional[_KernelRows] = None  # the kernel's answer, per interface
        self._snapshot: Optional[tuple] = None  # (pristine links, routes) assembled from it
        self._reader = RtnlReader(self._reader_sock)
        # Per dump: kernel message bytes -> parse result, so an unchanged object is not parsed
        # again (bench B1/B2: a 10k-route host re-dumped with nothing changed costs the kernel's
        # dump plus a dict lookup per message instead of a full parse).
        self._dump_memos: dict[str, dict] = {"links": {}, "addrs": {}, "v4": {}, "v6": {}}
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
            from pyroute2 import IPRoute  # imported here: reads never need it
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
        from pyroute2.netlink.exceptions import NetlinkError
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
        """All links (canonical addresses, VF info) and the main table's unicast v4+v6 routes.

        With `reuse`, the last full dump is kept up to date from the kernel's change
        notifications instead of being taken again: no notification since means the previous
        answer still holds; notifications about a few interfaces mean only those interfaces'
        link, addresses and routes are re-read. The kernel queues a notification before the
        changing call returns, so an empty queue really means nothing changed; a lost
        notification (queue overflow), one that cannot be attributed to an interface, more than
        PARTIAL_MAX_INTERFACES interfaces, a dump older than SNAPSHOT_MAX_AGE_S or a call to
        forget_snapshot() all lead to a full dump. Why: the plan and verify steps of a template
        change would otherwise each dump 10k routes (bench B2).

        The cyclic garbage collector is paused meanwhile: parsing allocates tens of thousands of
        small objects and the collector's passes over them made the cost grow faster than the
        host (bench B1: 26 % faster at 5,000 links, linear again)."""
        self._enter()
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
            self.forget_snapshot()
            raise
        finally:
            if was_enabled:
                gc.enable()
        self._snapshot = ({name: _fresh_copy(link, with_addresses=True)
                           for name, link in links.items()}, list(routes))
        return links, routes

    def forget_snapshot(self) -> None:
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
                size = self._changes_sock.recv_into(buffer, 0,
                                                    socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except BlockingIOError:
                return touched
            except OSError:  # ENOBUFS: notifications were lost
                touched = ALL_INTERFACES
                continue
            if size > len(buffer):  # cut short: cannot be read whole
                touched = ALL_INTERFACES
            if touched is not ALL_INTERFACES:
                touched = _interfaces_named(bytes(buffer[:size]), touched)
        return ALL_INTERFACES  # still busy

    def _dump_all(self) -> "_KernelRows":
        reader = self._reader
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
        return rows

    def _refresh(self, rows: "_KernelRows", indexes: set) -> None:
        """Re-read the link, addresses and routes of each interface in `indexes`."""
        reader = self._reader
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

    def _assemble(self, rows: "_KernelRows") -> tuple[dict[str, ObservedLink],
                                                      list[ObservedRoute]]:
        names = {index: row[0].ifname for index, row in rows.links.items()}
        by_index: dict[int, ObservedLink] = {}
        links: dict[str, ObservedLink] = {}
        for index in sorted(rows.links):
            parsed, parent_index, _extras = rows.links[index]
            link = _fresh_copy(parsed)  # the parse result may be reused by the next dump
            if parent_index is not None:
                link.parent = names.get(parent_index)
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
        self._changes_sock.close()
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
