"""A pool's addresses, with no I/O: the arithmetic the spec validator (models/parse.py), the
allocator (plumber_agent.pools) and the status writer agree on (docs/address-pools.md).

A pool is held as a few integer segments (its range minus the reserved and excluded addresses),
so its size and its n-th address are known without listing a /16 of addresses.
"""
from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections.abc import Iterable, Iterator
from typing import Optional, Union

from plumber_agent.models.spec import PoolConfig

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Family = Union[int, str]


def family_name(family: Family) -> str:
    """4, 6, "ipv4" or "ipv6" -> "ipv4" / "ipv6" (the key of the spec and of status.pools[])."""
    name = {4: "ipv4", 6: "ipv6", "ipv4": "ipv4", "ipv6": "ipv6"}.get(family)
    if name is None:
        raise ValueError(f"{family!r} is not an address family (4, 6, ipv4 or ipv6)")
    return name


def pool_id(template_uid: str, interface: str, family: Family, cidr: str) -> str:
    """16 hex digits of sha256(template uid, interface, family, cidr): the claims' pool label.
    The uid, not the name: a template deleted and re-created under its name is another pool."""
    text = "\0".join((template_uid, interface, family_name(family), cidr))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pool:
    """The addresses one pool hands out: rangeStart..rangeEnd (default: the first and last
    usable address of the CIDR) minus the reserved addresses of the CIDR and the exclude
    entries. Reserved: an IPv4 subnet's network and broadcast addresses up to /30 (/31 and /32
    use every address, RFC 3021); an IPv6 subnet's subnet-router anycast address (all-zero
    host part) up to /126 (/127 and /128 use every address: RFC 6164, and Linux joins no
    anycast address there)."""

    def __init__(self, config: "PoolConfig", family: Family, *, template_uid: str = "",
                 interface: str = "") -> None:
        self.config = config
        self.family = family_name(family)
        self.template_uid = template_uid
        self.interface = interface
        self.network = ipaddress.ip_network(config.cidr, strict=True)
        if self.network.version != (4 if self.family == "ipv4" else 6):
            raise ValueError(f"{config.cidr} is not an {self.family} network")
        first, last = int(self.network.network_address), int(self.network.broadcast_address)
        reserved = self._reserved(first, last)
        usable_first = first + 1 if first in reserved else first
        usable_last = last - 1 if last in reserved else last
        self.range_first = int(ipaddress.ip_address(config.range_start)) \
            if config.range_start else usable_first
        self.range_last = int(ipaddress.ip_address(config.range_end)) \
            if config.range_end else usable_last
        blocked = [(address, address) for address in reserved]
        for entry in config.exclude:
            excluded = ipaddress.ip_network(entry, strict=True)
            if excluded.version == self.network.version:
                blocked.append((int(excluded.network_address), int(excluded.broadcast_address)))
        self._segments = _subtract(self.range_first, self.range_last, blocked)
        self._starts = [start for start, _ in self._segments]
        # Usable addresses before each segment: the n-th address without walking the others.
        self._before: list[int] = []
        count = 0
        for start, end in self._segments:
            self._before.append(count)
            count += end - start + 1
        self.size = count

    def _reserved(self, first: int, last: int) -> set[int]:
        if self.network.version == 4:
            return {first, last} if self.network.prefixlen <= 30 else set()
        return {first} if self.network.prefixlen <= 126 else set()

    @property
    def prefix_length(self) -> int:
        return self.network.prefixlen

    @property
    def cidr(self) -> str:
        return self.network.compressed

    @property
    def range_size(self) -> int:
        """Addresses in rangeStart..rangeEnd, reserved and excluded ones included (the bound
        of MAX_POOL_ADDRESSES)."""
        return max(0, self.range_last - self.range_first + 1)

    def describe_range(self) -> str:
        """"192.168.50.10-192.168.50.200": the range as messages show it."""
        return f"{self._ip(self.range_first)}-{self._ip(self.range_last)}"

    def reserved_description(self) -> str:
        if self.network.version == 4:
            return ("the network and broadcast addresses" if self.network.prefixlen <= 30
                    else "the range")
        return "the subnet-router anycast address" if self.network.prefixlen <= 126 else "the range"

    def pool_id(self, template_uid: Optional[str] = None, interface: Optional[str] = None,
                family: Optional[Family] = None) -> str:
        """`pool_id` of this pool's CIDR; the identity given at construction unless overridden."""
        return pool_id(self.template_uid if template_uid is None else template_uid,
                       self.interface if interface is None else interface,
                       self.family if family is None else family, self.cidr)

    def _ip(self, value: int) -> IPAddress:
        return ipaddress.ip_address(value) if self.network.version == 4 \
            else ipaddress.IPv6Address(value)

    def _int_of(self, address: Union[str, IPAddress, None]) -> Optional[int]:
        """The address as an integer when it is one of this pool's family, else None."""
        if address is None:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        return int(ip) if ip.version == self.network.version else None

    def _contains_int(self, value: int) -> bool:
        index = bisect.bisect_right(self._starts, value) - 1
        return index >= 0 and value <= self._segments[index][1]

    def contains(self, address: Union[str, IPAddress, None]) -> bool:
        """True when the pool hands this address out (in the range, not reserved, not
        excluded)."""
        value = self._int_of(address)
        return value is not None and self._contains_int(value)

    def usable(self) -> Iterator[IPAddress]:
        """Every address the pool hands out, in order."""
        for start, end in self._segments:
            for value in range(start, end + 1):
                yield self._ip(value)

    def address_at(self, index: int) -> IPAddress:
        """The index-th usable address (0-based)."""
        if not 0 <= index < self.size:
            raise IndexError(f"{index} is outside 0..{self.size - 1}")
        segment = bisect.bisect_right(self._before, index) - 1
        return self._ip(self._segments[segment][0] + index - self._before[segment])

    def _walk_from(self, index: int) -> Iterator[int]:
        """Every usable address as an integer, from the index-th, wrapping around once."""
        segment = bisect.bisect_right(self._before, index) - 1
        offset = index - self._before[segment]
        order = list(range(segment, len(self._segments))) + list(range(segment + 1))
        for n, i in enumerate(order):
            start, end = self._segments[i]
            if n == 0:
                yield from range(start + offset, end + 1)
            elif n == len(order) - 1 and i == segment:
                yield from range(start, start + offset)
            else:
                yield from range(start, end + 1)


def _subtract(first: int, last: int, blocked: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """first..last minus the blocked intervals, as sorted disjoint (start, end) segments."""
    segments: list[tuple[int, int]] = []
    cursor = first
    for start, end in sorted(blocked):
        if end < cursor:
            continue
        if start > last:
            break
        if start > cursor:
            segments.append((cursor, start - 1))
        cursor = max(cursor, end + 1)
        if cursor > last:
            break
    if cursor <= last:
        segments.append((cursor, last))
    return segments
