"""A pool's addresses and the choice of one, with no I/O: what the spec validator, the
allocator and the status writer agree on (docs/address-pools.md).

A pool is held as a few integer segments (its range minus the reserved and excluded addresses),
so its size and its n-th address are known without listing a /16 of addresses.
"""
from __future__ import annotations

import bisect
import hashlib
import ipaddress
import zlib
from dataclasses import dataclass
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from plumber_agent.models.spec import PoolConfig, Template

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


def claim_name(address: Union[str, IPAddress]) -> str:
    """The AddressClaim name of an address: "ipv4-192.168.50.10", "ipv6-fd00-0-0-0-0-0-0-a".
    One name per address whatever its spelling, so the API server refuses a second holder; a
    DNS-1123 subdomain (IPv6's ':' is not allowed, and '::' would make two spellings)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return f"ipv4-{ip}"
    return "ipv6-" + "-".join(format(int(group, 16), "x") for group in ip.exploded.split(":"))


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


def start_offset(node: str, size: int) -> int:
    """Where a node starts looking: crc32 of its name modulo the pool size, so nodes starting
    together mostly try different addresses (and the same node always tries the same ones)."""
    return zlib.crc32(node.encode()) % size if size else 0


def choose(pool: Pool, *, node: str, own: Optional[str], taken: set[str],
           avoid: set[str]) -> Optional[str]:
    """The address this node should hold: its own claim's address while the pool still hands
    it out; else the first usable address not taken (claimed by anyone) nor avoided (the
    templates' static addresses and gateways, the API server's), from `start_offset(node)` wrapping around; None when
    every address is taken or avoided (the pool is exhausted)."""
    if own is not None and pool.contains(own):
        return str(ipaddress.ip_address(own))
    if pool.size == 0:
        return None
    blocked = {value for text in (*taken, *avoid) if (value := pool._int_of(text)) is not None}
    for value in pool._walk_from(start_offset(node, pool.size)):
        if value not in blocked:
            return str(pool._ip(value))
    return None


def overlaps(pool_a: Pool, pool_b: Pool) -> bool:
    """True when the two pools' ranges (rangeStart..rangeEnd) share an address: two templates
    selecting the same node may not hand out the same address."""
    return pool_a.network.version == pool_b.network.version and pool_a.range_size > 0 \
        and pool_b.range_size > 0 and pool_a.range_first <= pool_b.range_last \
        and pool_b.range_first <= pool_a.range_last


FAMILIES = ((4, "ipv4"), (6, "ipv6"))


@dataclass
class PoolUse:
    """One pool of one template: an interface and a family."""

    template: Template
    interface: str
    family: int
    pool: Pool
    pool_id: str

    def describe(self) -> str:
        return (f"pool {self.pool.cidr} ({self.pool.describe_range()}) of {self.interface} "
                f"{self.pool.family}")


def spec_addresses(templates: Iterable["Template"]) -> set[str]:
    """Every address the templates themselves put on hosts or route through: static
    `interfaceConfig[].ipv4/ipv6.address` entries and route gateways (`routes.*[].gw`), of every
    template, whichever nodes it selects. A pool never hands these out: they are in use on some
    host by the spec's own word, learnt from the templates the agent already watches instead
    of from every node's HostNetwork (docs/address-pools.md, "Addresses in use elsewhere")."""
    out: set[str] = set()
    for template in templates:
        spec = template.spec
        if spec is None:
            continue
        for iface in spec.interface_config:
            for config in (iface.ipv4, iface.ipv6):
                for cidr in config.address if config is not None else ():
                    out.add(str(cidr).split("/")[0])
        routes = spec.routes
        for route in [*routes.ipv4, *routes.ipv6] if routes is not None else ():
            if route.gw:
                out.add(str(route.gw))
    return out


def pool_uses(template: Template) -> list[PoolUse]:
    uses = []
    for iface in template.spec.interface_config if template.spec else []:
        for family, key in FAMILIES:
            config = getattr(iface, key)
            if config is not None and config.pool is not None:
                pool = Pool(config.pool, family, template_uid=template.uid,
                            interface=iface.name)
                uses.append(PoolUse(template, iface.name, family, pool, pool.pool_id()))
    return uses
