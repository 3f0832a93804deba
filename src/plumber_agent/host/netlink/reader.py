"""Requests and dumps over one plain NETLINK_ROUTE socket, parsed by messages.py.

The reader asks the kernel to filter (NETLINK_GET_STRICT_CHK: main table only, one ifindex)
and restarts dumps the kernel marks NLM_F_DUMP_INTR (docs/pitfalls.md 18).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from functools import partial
from hashlib import blake2b as _blake2b
from typing import Optional

from plumber_agent.errors import HostError, HostTimeout
from plumber_agent.host.netlink.messages import (
    IFADDRMSG, IFINFOMSG, IFLA_EXT_MASK, IFLA_IFNAME, NLA_HEADER, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HEADER, NLMSG_NOOP,
    RT_TABLE_MAIN, RTA_DST, RTA_OIF, RTA_TABLE, RTEXT_FILTER_SKIP_STATS, RTEXT_FILTER_VF,
    RTM_GETADDR, RTM_GETLINK, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTMSG,
    RTN_UNICAST, U32, NetlinkOSError, iter_messages, parse_addr, parse_link, parse_named_route,
    parse_route)

RECV_TIMEOUT_S = 10.0
"""A kernel answer slower than this means something is badly wrong; fail instead of hanging."""
DUMP_INTR_RETRIES = 10
"""How often a dump the kernel marked inconsistent (NLM_F_DUMP_INTR) is restarted."""
RECV_BUFFER_BYTES = 256 * 1024  # a dump arrives in pages of at most 32 KiB
MEMO_KEY_BYTES = 16


def memo_key(data: bytes, start: int, end: int) -> bytes:
    """The dump memo's key for the message body data[start:end]: its 128-bit BLAKE2b digest.
    The memo lives as long as the snapshot; keyed by the bodies themselves it held a copy of
    every message of the last dump (2.1 MiB on bench B4's node: 1,000 link messages of about
    1 KiB, 12k routes), the digests take 0.6 MiB. Two different messages of one dump (~10^4)
    sharing a digest is a 2^-100 event. Cost: 6-10 ms more per full dump of that node (13k
    messages, measured beside slicing and hashing the bodies); partial re-reads use no memo."""
    return _blake2b(data[start:end], digest_size=MEMO_KEY_BYTES).digest()


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
            for msg_type, flags, msg_seq, start, end in iter_messages(data):
                if msg_seq == seq:
                    yield msg_type, flags, data, start, end

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

        With `memo` (message body digest, `memo_key` -> parse result, from the previous dump of
        the same request), a message identical to one seen last time is not parsed again: its earlier
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
                    key = memo_key(data, start, end)
                    parsed = memo.get(key)
                    if parsed is None:
                        parsed = parse(data, start, end)
                    seen[key] = parsed
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
        return NLA_HEADER.pack(length, atype) + value + b"\0" * ((4 - length % 4) % 4)

    def dump_links(self, *, with_vfs: bool = True, memo: Optional[dict] = None) -> list:
        mask = RTEXT_FILTER_SKIP_STATS | (RTEXT_FILTER_VF if with_vfs else 0)
        payload = IFINFOMSG.pack(0, 0, 0, 0, 0) + self._nla(IFLA_EXT_MASK, U32.pack(mask))
        return self.dump(RTM_GETLINK, payload, RTM_NEWLINK, parse_link, memo)

    def get_link(self, *, ifname: Optional[str] = None, index: int = 0,
                 with_vfs: bool = False):
        """(ObservedLink, parent index, extras) or None when there is no such link."""
        payload = IFINFOMSG.pack(0, 0, index, 0, 0)
        if ifname is not None:
            payload += self._nla(IFLA_IFNAME, ifname.encode() + b"\0")
        mask = RTEXT_FILTER_SKIP_STATS | (RTEXT_FILTER_VF if with_vfs else 0)
        payload += self._nla(IFLA_EXT_MASK, U32.pack(mask))
        try:
            return self.request(RTM_GETLINK, payload, parse_link)
        except NetlinkOSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    def dump_addrs(self, family: int = socket.AF_UNSPEC, index: int = 0,
                   memo: Optional[dict] = None) -> list:
        payload = IFADDRMSG.pack(family, 0, 0, 0, index)
        rows = self.dump(RTM_GETADDR, payload, RTM_NEWADDR, parse_addr, memo)
        if index:  # old kernels ignore the filter
            rows = [row for row in rows if row[1] == index]
        return rows

    def dump_routes(self, family: int, *, oif: int = 0, table: int = RT_TABLE_MAIN,
                    memo: Optional[dict] = None, names: Optional[dict] = None) -> list:
        """Unicast routes of one table (table 0: of every table): [(ObservedRoute with
        dev=ifindex, type)], or with `names` (ifindex -> name) [(ObservedRoute with dev=name,
        type, ifindex)]."""
        payload = RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        if table >= 256:
            payload += self._nla(RTA_TABLE, U32.pack(table))
        if oif:
            payload += self._nla(RTA_OIF, U32.pack(oif))
        try:
            parse = parse_route if names is None else partial(parse_named_route, names=names)
            rows = self.dump(RTM_GETROUTE, payload, RTM_NEWROUTE, parse, memo)
        except NetlinkOSError as exc:
            if exc.errno == errno.ENOENT:  # no main table at all (IPv4 kernels report this)
                return []
            raise
        return [row for row in rows if row[1] == RTN_UNICAST
                and (not table or row[0].table == table)
                and (not oif or (row[0].dev if names is None else row[2]) == oif)]

    def get_route(self, ip: str):
        """`ip route get IP`: (ObservedRoute with dev=ifindex, type), or None if unreachable."""
        addr = ipaddress.ip_address(ip)
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        payload = (RTMSG.pack(family, addr.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
                   + self._nla(RTA_DST, addr.packed))
        try:
            return self.request(RTM_GETROUTE, payload, parse_route)
        except NetlinkOSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                             errno.ESRCH, errno.EACCES, errno.EINVAL):
                return None
            raise

