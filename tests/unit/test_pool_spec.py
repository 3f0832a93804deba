"""interfaceConfig[].ipv4/ipv6.pool (docs/address-pools.md): what the agent accepts, every
refusal of the design with its JSON path, and the round trip through the rollout state file."""
from __future__ import annotations

import json

import pytest

from plumber_agent.errors import InvalidSpec
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import AddressConfig, PoolConfig, TemplateSpec, network_spec_dict
from plumber_agent.fleet.rollout import spec_hash

IFACE = "spec.interfaceConfig[0]"


def _spec(family: str, pool, **iface) -> dict:
    return {"interfaceConfig": [{"name": "eno2", family: {"pool": pool}, **iface}]}


def _pool(family: str, pool, **iface) -> PoolConfig:
    parsed = parse_template_spec(_spec(family, pool, **iface))
    return getattr(parsed.interface_config[0], family).pool


def _problems(family: str, pool, **iface) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        parse_template_spec(_spec(family, pool, **iface))
    return info.value.problems


# ----------------------------------------------------------------------------------------------
# Accepted


@pytest.mark.parametrize("family, raw, expected", [
    ("ipv4", {"cidr": "192.168.50.0/24"}, PoolConfig(cidr="192.168.50.0/24")),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.10",
              "rangeEnd": "192.168.50.200", "exclude": ["192.168.50.100", "192.168.50.128/30"]},
     PoolConfig(cidr="192.168.50.0/24", range_start="192.168.50.10", range_end="192.168.50.200",
                exclude=["192.168.50.100", "192.168.50.128/30"])),
    ("ipv4", {"cidr": "10.0.0.0/31"}, PoolConfig(cidr="10.0.0.0/31")),      # RFC 3021: both
    ("ipv4", {"cidr": "10.0.0.7/32"}, PoolConfig(cidr="10.0.0.7/32")),      # one address
    ("ipv4", {"cidr": "10.0.0.0/16"}, PoolConfig(cidr="10.0.0.0/16")),      # 65,534 usable
    ("ipv4", {"cidr": "10.0.0.0/8", "rangeStart": "10.1.0.0", "rangeEnd": "10.1.255.255"},
     PoolConfig(cidr="10.0.0.0/8", range_start="10.1.0.0", range_end="10.1.255.255")),  # 65,536
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": []}, PoolConfig(cidr="192.168.50.0/24")),
    # IPv6: canonical (compressed, lower-case) text
    ("ipv6", {"cidr": "FD00:0050:0::/112", "rangeStart": "fd00:50::0010",
              "exclude": ["FD00:50::20/126", "fd00:50::ff"]},
     PoolConfig(cidr="fd00:50::/112", range_start="fd00:50::10",
                exclude=["fd00:50::20/126", "fd00:50::ff"])),
    ("ipv6", {"cidr": "fd00::/64", "rangeStart": "fd00::1:0", "rangeEnd": "fd00::1:ffff"},
     PoolConfig(cidr="fd00::/64", range_start="fd00::1:0", range_end="fd00::1:ffff")),
    ("ipv6", {"cidr": "fd00::a/128"}, PoolConfig(cidr="fd00::a/128")),
    ("ipv6", {"cidr": "fd00::/127"}, PoolConfig(cidr="fd00::/127")),
])
def test_pool_accepted(family, raw, expected):
    assert _pool(family, raw) == expected


def test_pool_beside_static_addresses():
    """`address` stays optional beside `pool`; both are kept."""
    spec = parse_template_spec({"interfaceConfig": [{"name": "eno2", "ipv4": {
        "address": ["10.9.0.1/24"], "pool": {"cidr": "192.168.50.0/24"}}}]})
    assert spec.interface_config[0].ipv4 == AddressConfig(
        address=["10.9.0.1/24"], pool=PoolConfig(cidr="192.168.50.0/24"))
    alone = parse_template_spec(_spec("ipv4", {"cidr": "192.168.50.0/24"}))
    assert alone.interface_config[0].ipv4.address == []


def test_no_pool_is_none():
    spec = parse_template_spec({"interfaceConfig": [{"name": "eno2", "ipv4": {
        "address": ["10.9.0.1/24"]}}]})
    assert spec.interface_config[0].ipv4.pool is None


# ----------------------------------------------------------------------------------------------
# Refused, with the path


@pytest.mark.parametrize("family, raw, expected", [
    # cidr: required, a network of the family in canonical form
    ("ipv4", {"rangeStart": "192.168.50.10"}, ["ipv4.pool.cidr: is required"]),
    ("ipv4", {"cidr": "192.168.50.7/24"},
     ["ipv4.pool.cidr: '192.168.50.7/24' has host bits set; the network is 192.168.50.0/24"]),
    ("ipv6", {"cidr": "fd00::5/64"},
     ["ipv6.pool.cidr: 'fd00::5/64' has host bits set; the network is fd00::/64"]),
    ("ipv4", {"cidr": "fd00::/64"}, ["ipv4.pool.cidr: 'fd00::/64' is not an IPv4 network"]),
    ("ipv6", {"cidr": "10.0.0.0/8"}, ["ipv6.pool.cidr: '10.0.0.0/8' is not an IPv6 network"]),
    ("ipv4", {"cidr": "192.168.50.0"},
     ["ipv4.pool.cidr: '192.168.50.0' has no prefix length (like 192.168.1.7/24)"]),
    ("ipv4", {"cidr": 24}, ["ipv4.pool.cidr: 24 is not a string"]),
    ("ipv6", {"cidr": "fe80::/64"},
     ["ipv6.pool.cidr: fe80::/64 overlaps fe80::/64, whose addresses no interface may have "
      "(each is link-local: the kernel manages link-local addresses)"]),
    ("ipv4", {"cidr": "127.0.0.0/24"},
     ["ipv4.pool.cidr: 127.0.0.0/24 overlaps 127.0.0.0/8, whose addresses no interface may "
      "have (each is a loopback address (127.0.0.0/8 belongs to lo))"]),
    # range: inside the CIDR, of the family, start not after end
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "10.0.1.5"},
     ["ipv4.pool.rangeStart: 10.0.1.5 is outside 192.168.50.0/24"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeEnd": "192.168.51.0"},
     ["ipv4.pool.rangeEnd: 192.168.51.0 is outside 192.168.50.0/24"]),
    ("ipv6", {"cidr": "fd00::/120", "rangeEnd": "fd00::1:0"},
     ["ipv6.pool.rangeEnd: fd00::1:0 is outside fd00::/120"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "fd00::1"},
     ["ipv4.pool.rangeStart: 'fd00::1' is not an IPv4 address"]),
    ("ipv6", {"cidr": "fd00::/120", "rangeStart": "fd00::1", "rangeEnd": "10.0.0.1"},
     ["ipv6.pool.rangeEnd: '10.0.0.1' is not an IPv6 address"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.200",
              "rangeEnd": "192.168.50.10"},
     ["ipv4.pool.rangeStart: 192.168.50.200 is after rangeEnd 192.168.50.10"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.255"},
     ["ipv4.pool: the range 192.168.50.255-192.168.50.254 is empty: its start is after its end"]),
    # exclude: addresses or networks of the family, at most 64
    ("ipv4", {"cidr": "192.168.50.0/24",
              "exclude": ["192.168.50.7/30", "fd00::1", "x", 5, "192.168.50.0/24"]},
     ["ipv4.pool.exclude[0]: '192.168.50.7/30': 192.168.50.7/30 has host bits set",
      "ipv4.pool.exclude[1]: 'fd00::1' is not an IPv4 address",
      "ipv4.pool.exclude[2]: 'x' does not appear to be an IPv4 or IPv6 address",
      "ipv4.pool.exclude[3]: 5 is not an IP address"]),
    ("ipv6", {"cidr": "fd00::/120", "exclude": ["10.0.0.0/8"]},
     ["ipv6.pool.exclude[0]: '10.0.0.0/8' is not an IPv6 network"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": [f"192.168.50.{i}" for i in range(65)]},
     ["ipv4.pool.exclude: has 65 entries; at most 64 are allowed"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": "192.168.50.1"},
     ["ipv4.pool.exclude: must be a list, not str"]),
    # no usable address left
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.0",
              "rangeEnd": "192.168.50.0"},
     ["ipv4.pool: no address of 192.168.50.0-192.168.50.0 can be handed out: the network and "
      "broadcast addresses and the exclude entries leave none"]),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.255",
              "rangeEnd": "192.168.50.255"},
     ["ipv4.pool: no address of 192.168.50.255-192.168.50.255 can be handed out: the network "
      "and broadcast addresses and the exclude entries leave none"]),
    ("ipv4", {"cidr": "192.168.50.0/30", "exclude": ["192.168.50.1", "192.168.50.2"]},
     ["ipv4.pool: no address of 192.168.50.1-192.168.50.2 can be handed out: the network and "
      "broadcast addresses and the exclude entries leave none"]),
    ("ipv4", {"cidr": "10.0.0.0/31", "exclude": ["10.0.0.0/31"]},
     ["ipv4.pool: no address of 10.0.0.0-10.0.0.1 can be handed out: the range and the exclude "
      "entries leave none"]),
    ("ipv6", {"cidr": "fd00::/120", "rangeStart": "fd00::", "rangeEnd": "fd00::"},
     ["ipv6.pool: no address of fd00::-fd00:: can be handed out: the subnet-router anycast "
      "address and the exclude entries leave none"]),
    # more than 65,536 addresses in the range
    ("ipv4", {"cidr": "10.0.0.0/15"},
     ["ipv4.pool: the range 10.0.0.1-10.1.255.254 has 131070 addresses; at most 65536 are "
      "allowed: narrow it with rangeStart and rangeEnd"]),
    ("ipv4", {"cidr": "10.0.0.0/8", "rangeStart": "10.1.0.0", "rangeEnd": "10.2.0.0"},
     ["ipv4.pool: the range 10.1.0.0-10.2.0.0 has 65537 addresses; at most 65536 are allowed: "
      "narrow it with rangeStart and rangeEnd"]),
    ("ipv6", {"cidr": "fd00::/64"},
     ["ipv6.pool: the range fd00::1-fd00::ffff:ffff:ffff:ffff has 18446744073709551615 "
      "addresses; at most 65536 are allowed: narrow it with rangeStart and rangeEnd"]),
    # shape
    ("ipv4", {"cidr": "192.168.50.0/24", "gateway": "192.168.50.1"},
     ["ipv4.pool.gateway: unknown field"]),
    ("ipv4", "192.168.50.0/24", ["ipv4.pool: must be an object, not str"]),
    ("ipv4", None, ["ipv4.pool: must be an object with a cidr"]),
])
def test_pool_refused_with_its_path(family, raw, expected):
    assert _problems(family, raw) == [f"{IFACE}.{line}" for line in expected]


def test_ipv6_pool_needs_an_ipv6_mtu():
    """A pool puts an IPv6 address on the interface, like a static one."""
    assert _problems("ipv6", {"cidr": "fd00::/120"}, mtu=1000) == [
        f"{IFACE}.mtu: 1000 is below 1280, the minimum for IPv6"]


def test_pool_problems_are_reported_with_the_others():
    spec = {"interfaceConfig": [
        {"name": "eno2", "ipv4": {"address": ["10.0.0.1"], "pool": {"cidr": "10.9.0.1/24"}}},
        {"name": "eno3", "ipv6": {"pool": {"cidr": "fd00::/120", "rangeStart": "fd01::1"}}}]}
    with pytest.raises(InvalidSpec) as info:
        parse_template_spec(spec)
    assert info.value.problems == [
        "spec.interfaceConfig[0].ipv4.address[0]: '10.0.0.1' has no prefix length "
        "(like 192.168.1.7/24)",
        "spec.interfaceConfig[0].ipv4.pool.cidr: '10.9.0.1/24' has host bits set; the network "
        "is 10.9.0.0/24",
        "spec.interfaceConfig[1].ipv6.pool.rangeStart: fd01::1 is outside fd00::/120"]


# ----------------------------------------------------------------------------------------------
# The rollout state file keeps specs as network_spec_dict


_WITH_POOLS = {"nodeSelector": {"role": "storage"}, "interfaceConfig": [
    {"name": "eno2", "ipv4": {"address": ["10.9.0.1/24"], "pool": {
        "cidr": "192.168.50.0/24", "rangeStart": "192.168.50.10", "rangeEnd": "192.168.50.200",
        "exclude": ["192.168.50.100", "192.168.50.128/30"]}},
     "ipv6": {"pool": {"cidr": "fd00:50::/112"}}},
    {"name": "eno3", "ipv4": {"address": ["10.8.0.1/24"]}}]}


@pytest.mark.parametrize("rollout", [None, {"maxUnavailable": 3, "dryRun": True}])
def test_pool_round_trips_through_the_network_dict(rollout):
    """Through JSON text, as the rollout state file holds it."""
    spec = parse_template_spec({**_WITH_POOLS, "rollout": rollout} if rollout else _WITH_POOLS)
    stored = json.loads(json.dumps(network_spec_dict(spec)))
    assert stored["interfaceConfig"][0]["ipv4"]["pool"] == {
        "cidr": "192.168.50.0/24", "rangeStart": "192.168.50.10", "rangeEnd": "192.168.50.200",
        "exclude": ["192.168.50.100", "192.168.50.128/30"]}
    back = TemplateSpec.from_network_dict(stored)
    assert back == spec.network_part()
    assert back.interface_config[0].ipv6.pool == PoolConfig(cidr="fd00:50::/112")
    assert network_spec_dict(back) == stored


def test_a_spec_without_pools_keeps_its_rollout_identity():
    """No `pool: null` in the dict: the identity hashed from a pool-less spec is the one an
    agent from before pools computed, so upgrading the agent starts no rollout."""
    spec = parse_template_spec(_WITH_POOLS)
    without = parse_template_spec({"interfaceConfig": [
        {"name": "eno3", "ipv4": {"address": ["10.8.0.1/24"]}, "ipv6": {"address": []}}]})
    raw = network_spec_dict(without)
    assert raw["interfaceConfig"][0]["ipv4"] == {"address": ["10.8.0.1/24"]}
    assert raw["interfaceConfig"][0]["ipv6"] == {"address": []}
    assert "pool" not in network_spec_dict(spec)["interfaceConfig"][1]["ipv4"]
    assert spec_hash(raw) == spec_hash({
        "nodeSelector": {}, "sriovConfig": [], "interfaceConfig": [
            {"name": "eno3", "mtu": None, "vlan": [], "ipv4": {"address": ["10.8.0.1/24"]},
             "ipv6": {"address": []}}],
        "ovsConfig": [], "routes": None, "allowApiServerDisruption": False})
    assert TemplateSpec.from_network_dict(raw) == without


def test_a_pool_change_is_a_new_rollout():
    a = parse_template_spec(_WITH_POOLS)
    changed = json.loads(json.dumps(_WITH_POOLS))
    changed["interfaceConfig"][0]["ipv4"]["pool"]["rangeEnd"] = "192.168.50.201"
    b = parse_template_spec(changed)
    assert a.network_part() != b.network_part()
    assert spec_hash(network_spec_dict(a)) != spec_hash(network_spec_dict(b))
