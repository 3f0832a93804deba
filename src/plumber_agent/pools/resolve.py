"""Per pass: turn each pool of the templates this node applies into this node's address.

`resolve` rewrites each template's spec so the rest of the agent (merge, planner, executor)
sees plain address lists: a pool becomes one more address (`<claimed>/<prefix>`) in its
interface's list for that family. With `claim=False` (previews: dry run, waiting nodes) nothing
is written: the node's own claim, or the address it would try first. With `claim=True` the
address is claimed before the host is changed (the claim is the lock; docs/address-pools.md).

A pool the node cannot get an address from leaves that interface family out of the spec (the
host keeps what it has there) and the template Failed on this node; a pool overlapping an
older template's pool on this node is not used (Conflict: the oldest template wins).
`release_unused` runs after the pass: a claim of this node that no pool uses any more is
deleted once its address is gone from the host.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from plumber_agent.models.fleet import selects
from plumber_agent.models.spec import AddressConfig, Template
from plumber_agent.pools.claims import Claim, ClaimTaken
from plumber_agent.pools.pool import (PoolUse, choose, claim_name, overlaps, pool_uses,
                                      spec_addresses)

log = logging.getLogger(__name__)

MAX_TRIES = 8  # claims attempted per pool and pass before waiting for the next pass


@dataclass
class PoolPass:
    templates: list[Template]
    failures: dict[str, list[str]] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    exhausted: set[str] = field(default_factory=set)  # templates with an exhausted pool
    held: list[Claim] = field(default_factory=list)  # this node's claims the pass uses
    # Claims whose create got no answer (connection lost, API server restarted): maybe
    # committed, so maybe ours; never released by this pass, found in the watch by the next.
    uncertain: set[str] = field(default_factory=set)


def _with_address(template: Template, use: PoolUse, address: Optional[str]) -> Template:
    """The template with the pool replaced by `address` (None: that family left out)."""
    key = "ipv4" if use.family == 4 else "ipv6"
    interfaces = []
    for iface in template.spec.interface_config:
        config = getattr(iface, key)
        if iface.name == use.interface and config is not None and config.pool is not None:
            config = None if address is None else AddressConfig(
                address=[*config.address, f"{address}/{use.pool.prefix_length}"])
            iface = replace(iface, **{key: config})
        interfaces.append(iface)
    return replace(template, spec=replace(template.spec, interface_config=interfaces))


class PoolResolver:
    def __init__(self, *, claims, node: str, node_uid: Callable[[], str],
                 ready: Callable[[str], bool] = lambda pool_id: True) -> None:
        self.claims, self.node = claims, node
        self._node_uid = node_uid
        # ready(pool_id): this node's own claims and the pool's claims are listed (else its own
        # claim is unseen and its address would be undone as a cleanup, then claimed again).
        self._ready = ready

    def _mine(self, claim: Claim) -> bool:
        return claim.node == self.node and claim.node_uid == self._node_uid()

    def resolve(self, templates: list[Template], labels: dict, *, claim: bool,
                avoid: frozenset[str] = frozenset()) -> PoolPass:
        """See the module doc. `avoid`: addresses never to hand out here (the API server's and
        the one this node reaches it from)."""
        result = PoolPass(templates=[])
        uses: list[PoolUse] = []
        for template in sorted(templates, key=lambda t: t.order_key()):
            if template.spec is None or not selects(template.spec.node_selector, labels):
                continue
            for use in pool_uses(template):
                older = next((u for u in uses if u.template.name != template.name
                              and overlaps(u.pool, use.pool)), None)
                if older is not None:
                    result.conflicts[template.name] = (
                        f"{use.describe()} overlaps {older.describe()} of template "
                        f"{older.template.name}, which is older and wins; not used on this node")
                    continue
                uses.append(use)
        if not uses:
            result.templates = list(templates)
            return result
        waiting = {id(use) for use in uses if not self._ready(use.pool_id)}
        for use in [u for u in uses if id(u) in waiting]:
            result.failures.setdefault(use.template.name, []).append(
                f"{use.describe()}: waiting for the list of address claims")
        known = self.claims.list()
        taken = {c.address for c in known}
        # In use on hosts by the templates' own word (static addresses, gateways): never handed
        # out. No other node's HostNetwork is read (docs/address-pools.md).
        in_use = spec_addresses(templates) | set(avoid)
        addresses: dict[tuple[str, str, int], Optional[str]] = {}
        for use in uses:
            key = (use.template.name, use.interface, use.family)
            if id(use) in waiting:
                addresses[key] = None
                continue
            own = next((c for c in known if self._mine(c) and c.pool_id == use.pool_id
                        and use.pool.contains(c.address)), None)
            if own is not None:
                addresses[key] = own.address
                result.held.append(own)
                taken.add(own.address)
                continue
            address = self._claim(use, taken, in_use, claim, result)
            addresses[key] = address
            if address is not None:
                taken.add(address)  # two pools over one range in this pass: never one address
        for template in templates:
            for use in [u for u in uses if u.template is template]:
                template = _with_address(template, use,
                                         addresses[(use.template.name, use.interface, use.family)])
            if template.name in result.conflicts:
                template = self._without_pools(template)  # those left are the conflicting ones
            result.templates.append(template)
        return result

    @staticmethod
    def _without_pools(template: Template) -> Template:
        """The template with every pool's interface family left out (untouched)."""
        for use in pool_uses(template):
            template = _with_address(template, use, None)
        return template

    def _claim(self, use: PoolUse, taken: set[str], avoid: set[str], claim: bool,
               result: PoolPass) -> Optional[str]:
        tried: set[str] = set()
        for _ in range(MAX_TRIES if claim else 1):
            address = choose(use.pool, node=self.node, own=None, taken=taken | tried,
                             avoid=avoid)
            if address is None:
                message = (f"{use.describe()} is exhausted: all {use.pool.size} addresses are "
                           "claimed or in use")
                result.failures.setdefault(use.template.name, []).append(message)
                result.exhausted.add(use.template.name)
                return None
            if not claim:
                return address
            wanted = Claim(name=claim_name(address), address=address,
                           prefix_length=use.pool.prefix_length, node=self.node,
                           node_uid=self._node_uid(), template=use.template.name,
                           interface=use.interface, pool=use.pool.cidr,
                           pool_id=use.pool_id)
            try:
                made = self.claims.create(wanted)
            except ClaimTaken:
                tried.add(address)
                continue
            except Exception as exc:  # noqa: BLE001 - API trouble: this pass goes without
                result.uncertain.add(wanted.name)
                result.failures.setdefault(use.template.name, []).append(
                    f"{use.describe()}: cannot claim {address}: {exc}")
                return None
            log.info("claimed %s from %s", address, use.describe(),
                     extra={"template": use.template.name, "pool": use.pool_id})
            result.held.append(made)
            return address
        result.failures.setdefault(use.template.name, []).append(
            f"{use.describe()}: {MAX_TRIES} addresses were claimed by others first; retrying")
        return None

    def release_unused(self, used: PoolPass, observed) -> None:
        """Delete this node's claims no pool uses any more, once the host no longer has the
        address (its removal may have failed: then the claim stays until it is gone)."""
        self.claims.forget_seen()
        in_use = {c.name for c in used.held} | used.uncertain
        on_host = set()
        for link in observed.links.values():
            for cidr in (*link.ipv4, *link.ipv6):
                on_host.add(str(ipaddress.ip_interface(cidr).ip))
        for claim in self.claims.list():
            if self._mine(claim) and claim.name not in in_use and claim.address not in on_host:
                try:
                    self.claims.delete(claim)
                    log.info("released %s (%s)", claim.address, claim.pool,
                             extra={"template": claim.template})
                except Exception as exc:  # noqa: BLE001 - the next pass tries again
                    log.warning("cannot release the claim of %s: %s", claim.address, exc)
