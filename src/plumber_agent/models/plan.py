"""What the planner hands to the executor and the reconciler besides the actions: the path to
the API server it guarded, and the changes it would not make."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plumber_agent.models.actions import Action


@dataclass(frozen=True)
class ApiEndpoint:
    """An address the agent dials for the API server: the kubeconfig's server (resolved), an
    address of the `kubernetes` EndpointSlice, or one given with --api-endpoint."""

    ip: str
    port: int = 443
    origin: str = "flag"  # "kubeconfig", "endpointslice" or "flag": for messages
    scheme: str = "https"


@dataclass
class ApiServerPath:
    """How this node reaches one API endpoint: the kernel's answer to `ip route get IP`
    (RTM_GETROUTE): output device, gateway, preferred source, table, and whether the address is
    the node's own (a local route)."""

    ip: str
    dev: Optional[str] = None
    src: Optional[str] = None
    gw: Optional[str] = None
    table: Optional[int] = None
    local: bool = False

    def hop(self) -> tuple:
        """What the guard compares before and after a pass."""
        return (self.dev, self.gw, self.src, self.local)


@dataclass
class PlanIssue:
    """A change the planner will not make: refused (would hurt the node) or impossible."""

    target: str
    message: str
    templates: list[str] = field(default_factory=list)


@dataclass
class PlanResult:
    actions: list[Action] = field(default_factory=list)
    refusals: list[PlanIssue] = field(default_factory=list)
    notes: list[PlanIssue] = field(default_factory=list)  # per-template failures (missing parent...)

    def problems_by_template(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for issue in self.refusals + self.notes:
            for name in issue.templates:
                out.setdefault(name, [])
                if issue.message not in out[name]:
                    out[name].append(issue.message)
        return out
