"""Routes: the gw/dev/src of the route to one (family, dst, metric) is one field."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.desired.base import MergeContext
from plumber_agent.models.spec import TemplateSpec, kernel_metric

ROUTE = "route"


@dataclass
class DesiredRoute:
    family: int
    dst: Optional[str]  # None = default route
    gw: Optional[str] = None
    dev: Optional[str] = None
    src: Optional[str] = None
    metric: Optional[int] = None  # as the kernel reads it back (kernel_metric)
    templates: list[str] = field(default_factory=list)

    def key(self) -> tuple:
        return (self.family, self.dst, kernel_metric(self.family, self.metric))


def offer(ctx: MergeContext, spec: TemplateSpec, name: str) -> None:
    if spec.routes is None:
        return
    for family, routes in ((4, spec.routes.ipv4), (6, spec.routes.ipv6)):
        for route in routes:
            # Keyed by the metric the kernel reads back: an IPv6 route without one IS the route
            # of metric 1024, so two templates naming it either way meet (and conflict) here.
            key = (family, route.dst, kernel_metric(family, route.metric))
            if ctx.offer((ROUTE,) + key, {"gw": route.gw, "dev": route.dev, "src": route.src},
                         name, f"route to {route.dst or 'default'} (IPv{family}, metric "
                               f"{key[2]})"):
                ctx.touch(ROUTE, key)


def assemble(ctx: MergeContext) -> dict[tuple, DesiredRoute]:
    out = {}
    for key in sorted(ctx.objects(ROUTE), key=lambda k: (k[0], k[1] or "", k[2])):
        owned = ctx.get((ROUTE,) + key)
        out[key] = DesiredRoute(family=key[0], dst=key[1], metric=key[2],
                                templates=owned.templates, **owned.value)
    return out
