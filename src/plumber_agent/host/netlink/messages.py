"""The rtnetlink ABI and a parser for its messages, straight from the bytes (no pyroute2).

Discovery runs on every reconcile and a node can have thousands of links and routes; pyroute2
decodes every attribute of every message into Python objects (measured 25-45x slower than
`ip -j`), while we need a dozen attributes. The parsers here read just those, and are shared by
the raw reader (reader.py), the discovery snapshot (snapshot.py) and the change monitor
(host/monitor.py): `iter_messages` splits a datagram into messages, `parse_link`, `parse_addr`
and `parse_route` read one, `interfaces_named` tells which interfaces notifications are about.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import Iterator, Optional

from plumber_agent.host.netlink import bond
from plumber_agent.models.observed import (ObservedLinuxBridge, ObservedLink, ObservedRoute,
                                           ObservedVfInfo)

NLMSG_HEADER_BYTES = 16

# --- rtnetlink ABI (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h) ---
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

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
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_MASTER = 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_VFINFO_LIST = 16, 18, 22
IFLA_EXT_MASK, IFLA_LINK_NETNSID = 29, 37
IFLA_MIN_MTU, IFLA_MAX_MTU = 50, 51
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID = 1
IFLA_BR_STP_STATE, IFLA_BR_VLAN_FILTERING, IFLA_BR_VLAN_DEFAULT_PVID = 5, 7, 39  # kind bridge
IFLA_VF_INFO = 1
IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_SPOOFCHK, IFLA_VF_TRUST = 1, 2, 4, 9
IFLA_VF_LINK_STATE, IFLA_VF_RATE = 5, 6
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
NLA_HEADER = struct.Struct("=HH")
IFINFOMSG = struct.Struct("=BxHiII")
IFADDRMSG = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
U32 = struct.Struct("=I")
U16 = struct.Struct("=H")
U32X2 = struct.Struct("=II")
U32X3 = struct.Struct("=III")
RTNEXTHOP = struct.Struct("=HBBi")

ALL_INTERFACES = frozenset({-1})  # 'anything may have changed'


class NetlinkOSError(OSError):
    """An errno the kernel returned in an NLMSG_ERROR (raised by the raw reader)."""


_ERRNO_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP"}  # Linux aliases it to ENOTSUP; netlink says this


def errno_text(code: int) -> str:
    """'EEXIST (File exists)': the errno's name and its meaning, for messages a user can act on."""
    name = _ERRNO_NAMES.get(code) or errno.errorcode.get(code, f"errno {code}")
    return f"{name} ({os.strerror(code)})"



def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, body start, end) of each netlink message in one datagram. Stops at a
    header too short to be one; `end` may lie past the data for a cut-short message (parsing
    it then raises struct.error)."""
    pos = 0
    size = len(data)
    while pos + NLMSG_HEADER_BYTES <= size:
        length, msg_type, flags, seq, _pid = NLMSG_HEADER.unpack_from(data, pos)
        if length < NLMSG_HEADER_BYTES:
            return
        yield msg_type, flags, seq, pos + NLMSG_HEADER_BYTES, pos + length
        pos += (length + 3) & ~3


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
        alen, atype = NLA_HEADER.unpack_from(data, pos)
        if alen < 4:
            break
        if atype & NLA_TYPE_MASK == IFLA_VF_INFO:
            vf = ObservedVfInfo(id=-1)
            p, e = pos + 4, pos + alen
            while p + 4 <= e:
                blen, btype = NLA_HEADER.unpack_from(data, p)
                if blen < 4:
                    break
                btype &= NLA_TYPE_MASK
                v = p + 4
                if btype == IFLA_VF_MAC and blen >= 8:
                    vf.id = U32.unpack_from(data, v)[0]
                    vf.mac = _mac_text(data[v + 4:v + 4 + (mac_len or 6)])
                elif btype == IFLA_VF_VLAN and blen >= 16:
                    vf.id, vf.vlan, vf.qos = U32X3.unpack_from(data, v)
                elif btype == IFLA_VF_RATE and blen >= 16:
                    vf.id, vf.min_tx_rate, vf.max_tx_rate = U32X3.unpack_from(data, v)
                elif btype == IFLA_VF_LINK_STATE and blen >= 12:
                    vf.id, vf.link_state = U32X2.unpack_from(data, v)
                elif btype in (IFLA_VF_SPOOFCHK, IFLA_VF_TRUST) and blen >= 12:
                    vf_id, setting = U32X2.unpack_from(data, v)
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
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(data, pos)
    link = ObservedLink(ifname="", index=index, admin_up=bool(flags & IFF_UP))
    parent_index = None
    other_netns = False
    extras: dict = {}
    vf_span = None
    slave_span = None
    pos += 16
    while pos + 4 <= end:
        alen, atype = NLA_HEADER.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        v = pos + 4
        if atype == IFLA_IFNAME:
            link.ifname = _cstr(data, v, pos + alen)
        elif atype == IFLA_MTU:
            link.mtu = U32.unpack_from(data, v)[0]
        elif atype == IFLA_ADDRESS:
            link.mac = _mac_text(data[v:pos + alen])
        elif atype == IFLA_OPERSTATE:
            state = data[v]
            link.oper_state = OPER_STATES[state] if state < len(OPER_STATES) else str(state)
        elif atype == IFLA_LINK:
            parent_index = U32.unpack_from(data, v)[0]
        elif atype == IFLA_LINK_NETNSID:
            other_netns = True
        elif atype == IFLA_MASTER:
            extras["master_index"] = U32.unpack_from(data, v)[0]
        elif atype == IFLA_LINKINFO:
            p, e = v, pos + alen
            while p + 4 <= e:
                blen, btype = NLA_HEADER.unpack_from(data, p)
                if blen < 4:
                    break
                btype &= NLA_TYPE_MASK
                if btype == IFLA_INFO_KIND:
                    link.kind = _cstr(data, p + 4, p + blen)
                elif btype == IFLA_INFO_DATA and link.kind == "bond":
                    link.bond, indexes = bond.parse_bond_data(data, p + 4, p + blen)
                    extras.update({f"bond_{k}": i for k, i in indexes.items()})
                elif btype == bond.IFLA_INFO_SLAVE_KIND:
                    extras["slave_kind"] = _cstr(data, p + 4, p + blen)
                elif btype == bond.IFLA_INFO_SLAVE_DATA:
                    slave_span = (p + 4, p + blen)
                elif btype == IFLA_INFO_DATA:
                    q, qe = p + 4, p + blen
                    while q + 4 <= qe:
                        clen, ctype = NLA_HEADER.unpack_from(data, q)
                        if clen < 4:
                            break
                        ctype &= NLA_TYPE_MASK
                        if ctype == IFLA_VLAN_ID and clen >= 6:
                            extras["info_vlan_id"] = U16.unpack_from(data, q + 4)[0]
                        elif ctype == IFLA_BR_STP_STATE and clen >= 8:
                            extras["br_stp"] = U32.unpack_from(data, q + 4)[0] != 0
                        elif ctype == IFLA_BR_VLAN_FILTERING and clen >= 5:
                            extras["br_vlan_filtering"] = data[q + 4] != 0
                        elif ctype == IFLA_BR_VLAN_DEFAULT_PVID and clen >= 6:
                            extras["br_default_pvid"] = U16.unpack_from(data, q + 4)[0]
                        q += (clen + 3) & ~3
                p += (blen + 3) & ~3
        elif atype == IFLA_VFINFO_LIST:
            vf_span = (v, pos + alen)
        elif atype == IFLA_MIN_MTU:
            extras["min_mtu"] = U32.unpack_from(data, v)[0]
        elif atype == IFLA_MAX_MTU:
            extras["max_mtu"] = U32.unpack_from(data, v)[0]
        pos += (alen + 3) & ~3
    if link.kind == "vlan":
        link.vlan_id = extras.get("info_vlan_id")
    elif link.kind == "bridge":  # IFLA_BR_VLAN_* are absent without CONFIG_BRIDGE_VLAN_FILTERING
        link.linux_bridge = ObservedLinuxBridge(stp=extras.get("br_stp"),
                                                vlan_filtering=extras.get("br_vlan_filtering"),
                                                default_pvid=extras.get("br_default_pvid"))
    if slave_span is not None and extras.get("slave_kind") == "bond":
        link.bond_member = bond.parse_bond_member(data, *slave_span)
    if vf_span is not None:
        link.vfs = _parse_vfinfo_list(data, vf_span[0], vf_span[1],
                                      len(link.mac.split(":")) if link.mac else 6)
    if other_netns or parent_index == index or parent_index == 0:
        parent_index = None
    return link, parent_index, extras


def parse_addr(data: bytes, pos: int, end: int) -> tuple[int, int, str]:
    """(family AF_*, ifindex, 'ip/prefix')."""
    family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack_from(data, pos)
    address = local = None
    pos += 8
    while pos + 4 <= end:
        alen, atype = NLA_HEADER.unpack_from(data, pos)
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
     _flags) = RTMSG.unpack_from(data, pos)
    dst = gw = src = None
    oif = metric = None
    pos += 12
    while pos + 4 <= end:
        alen, atype = NLA_HEADER.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        v = pos + 4
        if atype == RTA_DST:
            dst = data[v:pos + alen]
        elif atype == RTA_GATEWAY:
            gw = data[v:pos + alen]
        elif atype == RTA_OIF:
            oif = U32.unpack_from(data, v)[0]
        elif atype == RTA_PRIORITY:
            metric = U32.unpack_from(data, v)[0]
        elif atype == RTA_PREFSRC:
            src = data[v:pos + alen]
        elif atype == RTA_TABLE:
            table = U32.unpack_from(data, v)[0]
        elif atype == RTA_MULTIPATH and oif is None:
            # ECMP: report the first next hop (ObservedRoute has one dev/gw).
            nh_len, _nh_flags, _hops, nh_ifindex = RTNEXTHOP.unpack_from(data, v)
            oif = nh_ifindex
            p, e = v + 8, v + nh_len
            while p + 4 <= e:
                blen, btype = NLA_HEADER.unpack_from(data, p)
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


def parse_named_route(data: bytes, pos: int, end: int, names: dict):
    """(ObservedRoute with dev=name, rtype, ifindex): named at once, so a dump's rows can be
    handed out (and reused by the next dump) without a renamed copy of every route."""
    route, rtype = parse_route(data, pos, end)
    index = route.dev
    route.dev = names.get(index) if index is not None else None
    return route, rtype, index


# ------------------------------------------------------------------------------------------------
# Notifications: which interfaces they are about.

def interfaces_named(data: bytes, touched: set):
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
                touched.add(IFINFOMSG.unpack_from(data, body)[2])
            elif msg_type in (RTM_NEWADDR, RTM_DELADDR):
                touched.add(IFADDRMSG.unpack_from(data, body)[4])
            elif msg_type in (RTM_NEWROUTE, RTM_DELROUTE):
                named = route_interfaces(data, body + RTMSG.size, end)
                if not named:
                    return ALL_INTERFACES
                touched.update(named)
            elif msg_type not in (NLMSG_NOOP, NLMSG_DONE):
                return ALL_INTERFACES
        except struct.error:
            return ALL_INTERFACES
        pos += (length + 3) & ~3
    return touched


def route_interfaces(data: bytes, pos: int, end: int) -> set:
    """RTA_OIF and every next hop's interface of one route message."""
    found = set()
    while pos + 4 <= end:
        alen, atype = NLA_HEADER.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        if atype == RTA_OIF:
            found.add(U32.unpack_from(data, pos + 4)[0])
        elif atype == RTA_MULTIPATH:
            p, e = pos + 4, pos + alen
            while p + 8 <= e:
                nh_len, _nh_flags, _hops, nh_ifindex = RTNEXTHOP.unpack_from(data, p)
                if nh_len < 8:
                    break
                found.add(nh_ifindex)
                p += (nh_len + 3) & ~3
        pos += (alen + 3) & ~3
    return found


