"""A link's IPv4/IPv6 addresses, static or from a pool (interfaceConfig[].ipv4/ipv6)."""
from plumber_agent.kinds.base import ROUTING, Cleanup, Kind

_ADDRESS_KEYS = ("address", "pool")
_POOL_KEYS = ("cidr", "rangeStart", "rangeEnd", "exclude")

KIND = Kind(
    name="addresses",
    doc="the address list of one interface and family (final state), static or from a pool",
    spec_keys={"interfaceConfig[]": ("ipv4", "ipv6"),
               "interfaceConfig[].ipv4": _ADDRESS_KEYS, "interfaceConfig[].ipv6": _ADDRESS_KEYS,
               "interfaceConfig[].ipv4.pool": _POOL_KEYS,
               "interfaceConfig[].ipv6.pool": _POOL_KEYS},
    merged_with="link",  # DesiredLink carries the MTU and both address lists
    after=("vlan", "link"),
    observed=("links[].ipv4", "links[].ipv6"),
    plan_room="addresses",
    cleanups=(Cleanup("addr", "addresses", "cleanup", rank=60),),
    interface_keys=("addr",),
    verbs={"add_address": ROUTING, "delete_address": ROUTING},
    status=("interface_status[].ipv4", "interface_status[].ipv6"),
    # Pools came after templates existed: an absent pool stays out of the rollout identity.
    omit_when_empty=("interfaceConfig[].ipv4.pool", "interfaceConfig[].ipv6.pool"),
)
