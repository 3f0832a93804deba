"""plumber_agent.models.pool and plumber_agent.pools.pool (docs/address-pools.md): which
addresses a pool hands out, which one a node takes, the claim's name and the pool's identity,
and when two pools overlap."""
from __future__ import annotations

import ipaddress
import re
import zlib

import pytest

from plumber_agent.models.spec import PoolConfig
from plumber_agent.models.pool import Pool, pool_id
from plumber_agent.pools.pool import choose, claim_name, overlaps, start_offset

# validation.py's DNS-1123 subdomain rule, as ValidateObjectMeta applies it to names
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _pool(cidr: str, family: int = 4, start=None, end=None, exclude=()) -> Pool:
    return Pool(PoolConfig(cidr=cidr, range_start=start, range_end=end, exclude=list(exclude)),
                family)


def _texts(pool: Pool) -> list[str]:
    return [str(address) for address in pool.usable()]


# ----------------------------------------------------------------------------------------------
# usable / size


@pytest.mark.parametrize("cidr, family, start, end, exclude, expected", [
    ("192.168.50.0/30", 4, None, None, (), ["192.168.50.1", "192.168.50.2"]),
    ("192.168.50.0/31", 4, None, None, (), ["192.168.50.0", "192.168.50.1"]),      # RFC 3021
    ("192.168.50.7/32", 4, None, None, (), ["192.168.50.7"]),
    ("192.168.50.0/29", 4, "192.168.50.0", "192.168.50.7", (),                     # range ends on
     ["192.168.50.1", "192.168.50.2", "192.168.50.3", "192.168.50.4", "192.168.50.5",  # reserved
      "192.168.50.6"]),
    ("192.168.50.0/29", 4, None, None, ["192.168.50.2", "192.168.50.4/31"],        # CIDR excludes
     ["192.168.50.1", "192.168.50.3", "192.168.50.6"]),
    ("192.168.50.0/29", 4, None, None, ["10.0.0.0/8"],                             # outside: none
     ["192.168.50.1", "192.168.50.2", "192.168.50.3", "192.168.50.4", "192.168.50.5",
      "192.168.50.6"]),
    ("192.168.50.0/24", 4, "192.168.50.10", "192.168.50.14", ["192.168.50.12"],
     ["192.168.50.10", "192.168.50.11", "192.168.50.13", "192.168.50.14"]),
    ("fd00::/125", 6, None, None, (),                                              # no anycast
     ["fd00::1", "fd00::2", "fd00::3", "fd00::4", "fd00::5", "fd00::6", "fd00::7"]),
    ("fd00::/125", 6, "fd00::", "fd00::2", (), ["fd00::1", "fd00::2"]),
    ("fd00::/126", 6, None, None, ["fd00::2"], ["fd00::1", "fd00::3"]),
    ("fd00::/127", 6, None, None, (), ["fd00::", "fd00::1"]),                      # RFC 6164
    ("fd00::a/128", 6, None, None, (), ["fd00::a"]),
    ("fd00::/64", 6, "fd00::fffe", "fd00::1:1", ["fd00::ffff"], ["fd00::fffe", "fd00::1:0",
                                                                  "fd00::1:1"]),
])
def test_usable_and_size(cidr, family, start, end, exclude, expected):
    pool = _pool(cidr, family, start, end, exclude)
    assert _texts(pool) == expected
    assert pool.size == len(expected)
    assert [str(pool.address_at(i)) for i in range(pool.size)] == expected
    assert all(pool.contains(text) for text in expected)


def test_size_of_a_large_pool_is_not_listed():
    """A range of 2^64 addresses has a size at once (the validator refuses it by that size)."""
    pool = _pool("fd00::/64", 6)
    assert pool.size == 2**64 - 1 and pool.range_size == 2**64 - 1
    assert str(pool.address_at(pool.size - 1)) == "fd00::ffff:ffff:ffff:ffff"
    sixteen = _pool("10.0.0.0/16", exclude=["10.0.1.0/24"])
    assert sixteen.size == 65534 - 256
    assert str(sixteen.address_at(254)) == "10.0.0.255"
    assert str(sixteen.address_at(255)) == "10.0.2.0"
    with pytest.raises(IndexError):
        sixteen.address_at(sixteen.size)


@pytest.mark.parametrize("address, inside", [
    ("192.168.50.10", True), ("192.168.50.200", True), ("192.168.50.100", False),  # excluded
    ("192.168.50.129", False), ("192.168.50.9", False), ("192.168.50.201", False),
    ("192.168.51.10", False), ("fd00::a", False), ("not an address", False), (None, False),
    (ipaddress.ip_address("192.168.50.11"), True),
])
def test_contains(address, inside):
    pool = _pool("192.168.50.0/24", start="192.168.50.10", end="192.168.50.200",
                 exclude=["192.168.50.100", "192.168.50.128/30"])
    assert pool.contains(address) is inside


def test_prefix_length_and_family():
    assert _pool("192.168.50.0/24").prefix_length == 24
    assert _pool("fd00::/120", 6).prefix_length == 120
    assert _pool("fd00::/120", "ipv6").family == "ipv6"
    with pytest.raises(ValueError):
        _pool("fd00::/120", 4)


# ----------------------------------------------------------------------------------------------
# choose


def _small() -> Pool:
    """192.168.50.10 .. .14: 5 addresses."""
    return _pool("192.168.50.0/24", start="192.168.50.10", end="192.168.50.14")


def _node_starting_at(offset: int, size: int) -> str:
    return next(f"node-{i}" for i in range(10_000) if zlib.crc32(f"node-{i}".encode()) % size
                == offset)


def test_own_address_is_kept():
    pool = _small()
    assert choose(pool, node="node-a", own="192.168.50.13", taken={"192.168.50.13"},
                  avoid=set()) == "192.168.50.13"


@pytest.mark.parametrize("own", ["192.168.50.15", "192.168.50.9", "10.0.0.1", "fd00::1"])
def test_own_address_outside_the_range_is_not_kept(own):
    pool = _small()
    node = _node_starting_at(0, pool.size)
    assert choose(pool, node=node, own=own, taken={own}, avoid=set()) == "192.168.50.10"


def test_own_address_excluded_since_is_not_kept():
    pool = _pool("192.168.50.0/24", start="192.168.50.10", end="192.168.50.14",
                 exclude=["192.168.50.10"])
    node = _node_starting_at(0, pool.size)
    assert choose(pool, node=node, own="192.168.50.10", taken=set(), avoid=set()) == \
        "192.168.50.11"


def test_taken_and_avoided_are_skipped():
    pool = _small()
    node = _node_starting_at(1, pool.size)                          # starts at .11
    assert choose(pool, node=node, own=None, taken=set(), avoid=set()) == "192.168.50.11"
    assert choose(pool, node=node, own=None, taken={"192.168.50.11"},
                  avoid={"192.168.50.12"}) == "192.168.50.13"


def test_the_walk_wraps_around():
    pool = _small()
    node = _node_starting_at(3, pool.size)                          # starts at .13
    taken = {"192.168.50.13", "192.168.50.14"}
    assert choose(pool, node=node, own=None, taken=taken, avoid=set()) == "192.168.50.10"
    assert choose(pool, node=node, own=None, taken=taken | {"192.168.50.10"},
                  avoid={"192.168.50.11"}) == "192.168.50.12"


def test_exhausted_pool_gives_none():
    pool = _small()
    everything = {f"192.168.50.{i}" for i in range(10, 15)}
    assert choose(pool, node="node-a", own=None, taken=everything, avoid=set()) is None
    assert choose(pool, node="node-a", own=None, taken={"192.168.50.10"},
                  avoid=everything - {"192.168.50.10"}) is None
    # other families' and unparsable entries never block an address
    assert choose(pool, node="node-a", own=None, taken={"fd00::1", "x"}, avoid=set()) is not None


def test_the_walk_crosses_excluded_gaps():
    pool = _pool("192.168.50.0/24", start="192.168.50.10", end="192.168.50.20",
                 exclude=["192.168.50.12/30"])                      # 10 11 16..20: 7 addresses
    node = _node_starting_at(6, pool.size)                          # starts at .20
    assert choose(pool, node=node, own=None, taken={"192.168.50.20"}, avoid=set()) == \
        "192.168.50.10"
    assert choose(pool, node=node, own=None, taken={"192.168.50.20", "192.168.50.10",
                                                    "192.168.50.11"}, avoid=set()) == \
        "192.168.50.16"


def test_choice_is_deterministic_and_nodes_start_apart():
    pool = _pool("192.168.50.0/24")
    nodes = [f"worker-{i}" for i in range(50)]
    first = [choose(pool, node=n, own=None, taken=set(), avoid=set()) for n in nodes]
    assert first == [choose(pool, node=n, own=None, taken=set(), avoid=set()) for n in nodes]
    assert len(set(first)) >= 40        # 50 nodes starting together mostly try different ones
    assert first[0] == str(pool.address_at(zlib.crc32(b"worker-0") % pool.size))
    assert start_offset("worker-0", pool.size) == zlib.crc32(b"worker-0") % 254


def test_choose_on_ipv6():
    pool = _pool("fd00::/120", 6, exclude=["fd00::80/121"])         # ::1 .. ::7f
    node = _node_starting_at(126, pool.size)                        # starts at ::7f
    assert choose(pool, node=node, own=None, taken={"fd00:0::7f"}, avoid=set()) == "fd00::1"


# ----------------------------------------------------------------------------------------------
# claim_name and pool_id


@pytest.mark.parametrize("address, name", [
    ("192.168.50.10", "ipv4-192.168.50.10"),
    ("10.0.0.0", "ipv4-10.0.0.0"),
    ("fd00::a", "ipv6-fd00-0-0-0-0-0-0-a"),
    ("FD00:0000::000A", "ipv6-fd00-0-0-0-0-0-0-a"),                 # one name per address
    ("2001:db8:0:0:1::1", "ipv6-2001-db8-0-0-1-0-0-1"),
    ("::", "ipv6-0-0-0-0-0-0-0-0"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ipv6-ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff"),
    ("::ffff:192.0.2.1", "ipv6-0-0-0-0-0-ffff-c000-201"),
    (ipaddress.ip_address("fd00::a"), "ipv6-fd00-0-0-0-0-0-0-a"),
])
def test_claim_name(address, name):
    assert claim_name(address) == name
    assert _DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253


def test_every_claim_name_of_a_pool_is_valid_and_distinct():
    for pool in (_pool("10.0.0.0/22"), _pool("fd00:ab::/118", 6)):
        names = [claim_name(address) for address in pool.usable()]
        assert len(set(names)) == pool.size
        assert all(_DNS_SUBDOMAIN.fullmatch(name) for name in names)


def test_pool_id():
    pool = Pool(PoolConfig(cidr="192.168.50.0/24"), 4, template_uid="uid-1", interface="eno2")
    ident = pool.pool_id()
    assert re.fullmatch(r"[0-9a-f]{16}", ident)
    assert ident == pool.pool_id("uid-1", "eno2", "ipv4") == pool_id("uid-1", "eno2", 4,
                                                                     "192.168.50.0/24")
    others = {pool.pool_id("uid-2", "eno2", 4), pool.pool_id("uid-1", "eno3", 4),
              pool.pool_id("uid-1", "eno2", 6), pool_id("uid-1", "eno2", 4, "192.168.51.0/24")}
    assert ident not in others and len(others) == 4
    # the fields are separated: ("ab", "c") is not ("a", "bc")
    assert pool_id("ab", "c", 4, "10.0.0.0/8") != pool_id("a", "bc", 4, "10.0.0.0/8")


# ----------------------------------------------------------------------------------------------
# overlaps


@pytest.mark.parametrize("a, b, expected", [
    (("192.168.50.0/24", 4, None, None), ("192.168.50.0/24", 4, None, None), True),
    (("192.168.50.0/24", 4, "192.168.50.10", "192.168.50.20"),
     ("192.168.50.0/24", 4, "192.168.50.21", "192.168.50.30"), False),
    (("192.168.50.0/24", 4, "192.168.50.10", "192.168.50.20"),
     ("192.168.50.0/24", 4, "192.168.50.20", "192.168.50.30"), True),
    (("192.168.50.0/24", 4, None, None), ("192.168.50.128/25", 4, None, None), True),
    (("192.168.50.0/25", 4, None, None), ("192.168.50.128/25", 4, None, None), False),
    (("10.0.0.0/8", 4, "10.1.0.0", "10.1.0.255"), ("10.1.0.0/24", 4, None, None), True),
    (("fd00::/120", 6, None, None), ("fd00::80/121", 6, None, None), True),
    (("fd00::/120", 6, None, None), ("fd00::100/120", 6, None, None), False),
    (("0.0.0.0/30", 4, None, None), ("::/126", 6, None, None), False),      # other family
])
def test_overlaps(a, b, expected):
    pool_a, pool_b = _pool(a[0], a[1], a[2], a[3]), _pool(b[0], b[1], b[2], b[3])
    assert overlaps(pool_a, pool_b) is expected
    assert overlaps(pool_b, pool_a) is expected
