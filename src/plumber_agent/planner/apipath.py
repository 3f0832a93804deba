"""The API-server guard, which spans two kinds: never delete the address the node uses to reach
the API server (addresses.py), nor delete/replace/add a route that changes the path to it
(routes.py), unless a template owning that field set allowApiServerDisruption. A refused change
yields no action and a `refusals` entry; an allowed risky one is marked `api_risk`.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from plumber_agent.models.observed import MAIN_TABLE, ObservedRoute
from plumber_agent.planner.context import ALLOWED, REFUSED, PlanContext, Verdict, canonical_metric


def route_dict(route: ObservedRoute) -> dict:
    return {"family": route.family, "dst": route.dst, "gw": route.gw, "dev": route.dev,
            "src": route.src, "metric": canonical_metric(route.family, route.metric)}


def guard_address(ctx: PlanContext, ifname: str, cidr: str, templates: list[str]) -> Verdict:
    """Refused when removing `cidr` would cut the node off the API server."""
    ip = cidr.split("/")[0]
    if not (ctx.api and ctx.api.src and ip == ctx.api.src):
        return ALLOWED
    return _allowed_or_refused(ctx, ifname, templates,
                               f"not removing {cidr} from {ifname}: this node reaches the API "
                               f"server {ctx.api.ip} from it (set allowApiServerDisruption "
                               "to allow)")


def guard_route(ctx: PlanContext, before: Optional[dict], after: Optional[dict],
                templates: list[str], target: str) -> Verdict:
    """Refuse a route change that changes how the node reaches the API server: compare the
    route the kernel would pick for the API server's address before and after it."""
    if ctx.api is None or not ctx.api.ip:
        return ALLOWED
    if not any(_covers_api(ctx, r) for r in (before, after) if r is not None):
        return ALLOWED  # neither the old nor the new route can carry the API traffic
    if ctx.current_routes is None:
        ctx.current_routes = [route_dict(r) for r in ctx.observed.routes
                              if r.table == MAIN_TABLE]
    current = ctx.current_routes
    ident = before or after
    ident_key = (ident["family"], ident["dst"], ident["metric"])
    changed = [r for r in current if (r["family"], r["dst"], r["metric"]) != ident_key]
    if after is not None:
        changed.append(after)
    old, new = _api_path(ctx, current), _api_path(ctx, changed)
    if old is None or (new is not None and old[1] == new[1]
                       and (old[0] == new[0] or new[0] is None)):
        return ALLOWED
    return _allowed_or_refused(ctx, target, templates,
                               f"not changing the route to {ident['dst'] or 'default'}: it would "
                               f"change how this node reaches the API server {ctx.api.ip} (set "
                               "allowApiServerDisruption to allow)")


def _allowed_or_refused(ctx: PlanContext, target: str, templates: list[str],
                        message: str) -> Verdict:
    """A change on the API path: let through (and marked risky) when one of the templates asking
    for it allows API-server disruption, else refused with `message` on those templates."""
    if ctx.allowed(templates):
        return Verdict(True, risky=True)
    ctx.refuse(target, message, templates)
    return REFUSED


def _covers_api(ctx: PlanContext, route: dict) -> bool:
    ip = ipaddress.ip_address(ctx.api.ip)
    if route["family"] != ip.version:
        return False
    return route["dst"] is None or ip in ipaddress.ip_network(route["dst"])


def _api_path(ctx: PlanContext, routes: list[dict]) -> Optional[tuple]:
    """(dev, gw) of the route the kernel would pick for the API server's address."""
    ip = ipaddress.ip_address(ctx.api.ip)
    best = None
    for r in routes:
        if r["family"] != ip.version:
            continue
        net = ipaddress.ip_network(r["dst"] or ("0.0.0.0/0" if ip.version == 4 else "::/0"))
        if ip not in net:
            continue
        rank = (-net.prefixlen, r["metric"])
        if best is None or rank < best[0]:
            best = (rank, (r["dev"], r["gw"]))
    return best[1] if best else None
