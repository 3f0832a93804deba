"""Routes of the main table, keyed by (family, dst, metric). Adding, replacing or deleting one
that changes the node's path to the API server is refused by apipath.py's whole-plan guard. A missing dev gives a
note, no action. A pending record's route is deleted on cleanup only when the host shows the
gateway (and dev/src, when we set them) we were adding.
"""
from __future__ import annotations

from typing import Optional

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_route
from plumber_agent.models.observed import MAIN_TABLE, ObservedRoute
from plumber_agent.planner.apipath import route_dict
from plumber_agent.planner.context import PlanContext, canonical_metric


def plan(ctx: PlanContext) -> None:
    for (family, dst, _metric), dr in ctx.desired.routes.items():
        metric = canonical_metric(family, dr.metric)
        key = key_route(family, dst, metric)
        ctx.wanted.add(key)
        target = dst or "default"
        if dr.dev and not ctx.link_exists(dr.dev):
            ctx.note(target, f"route to {target}: dev {dr.dev} does not exist on this node",
                     dr.templates)
            continue
        want = {"family": family, "dst": dst, "gw": dr.gw, "dev": dr.dev, "src": dr.src,
                "metric": metric}
        obs = observed_route(ctx, family, dst, metric)
        if obs is not None:
            same = (obs.gw == dr.gw and (dr.dev is None or obs.dev == dr.dev)
                    and (dr.src is None or obs.src == dr.src))
            if same:
                continue
        before = route_dict(obs) if obs is not None else None
        rec = ctx.records.get(key)
        stale = bool(rec and rec.get("pending")
                     and (obs is None or not _route_matches(obs, rec)))
        ctx.emit(Phase.ROUTE, (family, target, metric), Verb.ADD_ROUTE, target, want,
                 templates=dr.templates, key=key, op=LedgerOp.CLAIM,
                 prior=before if obs is not None else None, stale_intent=stale)


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    family, dst, metric = parsed.family, parsed.dst, parsed.metric
    obs = observed_route(ctx, family, dst, metric)
    target = dst or "default"
    if rec.get("created"):
        if obs is None:
            ctx.forget(Phase.DELETE_ROUTE, key, f"route to {target} is already gone")
            return
        if rec.get("pending") and not _route_matches(obs, rec):
            ctx.forget(Phase.DELETE_ROUTE, key,
                       f"route to {target} is not the one HostPlumber was adding")
            return
        before = route_dict(obs)
        ctx.release(Phase.DELETE_ROUTE, (family, target, metric), Verb.DELETE_ROUTE, target,
                    before, key, rec)
        return
    prior = rec.get("prior")
    if not isinstance(prior, dict):
        ctx.forget(Phase.DELETE_ROUTE, key, f"no prior route to {target} recorded")
        return
    if obs is not None and route_dict(obs) == prior:
        ctx.forget(Phase.DELETE_ROUTE, key, f"route to {target} is as it was")
        return
    if prior.get("dev") and not ctx.link_exists(prior["dev"]):
        ctx.forget(Phase.DELETE_ROUTE, key, f"dev {prior['dev']} is gone")
        return
    ctx.release(Phase.DELETE_ROUTE, (family, target, metric), Verb.ADD_ROUTE, target,
                dict(prior), key, rec)


def observed_route(ctx: PlanContext, family: int, dst: Optional[str],
                   metric: int) -> Optional[ObservedRoute]:
    for route in ctx.observed.routes:
        if (route.family == family and route.dst == dst and route.table == MAIN_TABLE
                and canonical_metric(family, route.metric) == metric):
            return route
    return None


def _route_matches(obs: ObservedRoute, rec: dict) -> bool:
    """Is observed route `obs` the one a (pending) record was adding (gateway, dev, src)?"""
    value = rec.get("value")
    if not isinstance(value, dict):
        return False
    return (obs.gw == value.get("gw")
            and all(value.get(k) is None or getattr(obs, k) == value[k] for k in ("dev", "src")))
