"""A kernel change as the netlink monitor decoded it (host/monitor.py).

Why structured and not just a line of text: pod churn sends a stream of link, address and route
changes that concern nothing a template manages, and each must be recognised as such cheaply,
before it costs a reconcile pass (plumber_agent/interest.py decides from these fields). The
description stays what the logs show.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from plumber_agent.models.observed import MAIN_TABLE


class EventKind(StrEnum):
    LINK = "link"
    ADDRESS = "address"
    ROUTE = "route"
    LOST = "lost"  # the socket overflowed: changes were missed, re-read everything
    UNDECODABLE = "undecodable"  # a malformed message: still a change of something


@dataclass(frozen=True)
class KernelEvent:
    kind: EventKind
    description: str
    removed: bool = False
    # The link itself (LINK), or the device of the address or route; None when unknown.
    ifname: Optional[str] = None
    index: Optional[int] = None
    link_kind: Optional[str] = None  # LINK: IFLA_INFO_KIND ('veth', 'vlan'...); None: a device
    family: int = 0  # ADDRESS, ROUTE: 4 or 6
    cidr: Optional[str] = None  # ADDRESS: 'ip/prefix'
    dst: Optional[str] = None  # ROUTE: canonical network; None = default route
    gw: Optional[str] = None  # ROUTE
    table: int = MAIN_TABLE  # ROUTE

    def __str__(self) -> str:
        return self.description
