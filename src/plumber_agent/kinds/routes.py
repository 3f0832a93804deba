"""Routes of the main table (spec.routes.ipv4[] / ipv6[]), by destination and metric."""
from plumber_agent.kinds.base import ROUTING, Cleanup, Kind, Merge

_ROUTE_KEYS = ("dst", "gw", "dev", "src", "metric")

KIND = Kind(
    name="routes",
    doc="a route to one dst+metric: gw, dev, src",
    spec_keys={"": ("routes",), "routes": ("ipv4", "ipv6"),
               "routes.ipv4[]": _ROUTE_KEYS, "routes.ipv6[]": _ROUTE_KEYS},
    merge=Merge("routes", "routes"),
    after=("vlan", "addresses"),  # a dev to be created; a source address being added
    observed=("routes",),
    plan_room="routes",
    cleanups=(Cleanup("route", "routes", "cleanup", rank=50),),
    verbs={"add_route": ROUTING, "delete_route": ROUTING},
    status=("routes",),
)
