"""The choice of a pool address, with no I/O: what the allocator and the status writer agree
on (docs/address-pools.md). The pool's arithmetic itself (`Pool`) is plumber_agent.models.pool.
"""
from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Optional, Union

from plumber_agent.models.pool import IPAddress, Pool
from plumber_agent.models.spec import Template


def claim_name(address: Union[str, IPAddress]) -> str:
    """The AddressClaim name of an address: "ipv4-192.168.50.10", "ipv6-fd00-0-0-0-0-0-0-a".
    One name per address whatever its spelling, so the API server refuses a second holder; a
    DNS-1123 subdomain (IPv6's ':' is not allowed, and '::' would make two spellings)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return f"ipv4-{ip}"
    return "ipv6-" + "-".join(format(int(group, 16), "x") for group in ip.exploded.split(":"))


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
