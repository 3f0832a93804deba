"""IPv4/IPv6 addresses, with the seed's final-state rule: a template that manages a family of an
interface owns that family's whole list, so addresses it does not list are removed (each
removal claimed, one ledger record per address, so cleanup adds it back).

Deletions run before additions on the same interface (final state and cleanup alike): deleting
a primary IPv4 address deletes its secondaries unless promote_secondaries is set, so adding
first could lose the very address being added (seen on a real kernel). Whether a change moves
the node's path to the API server is decided for the whole plan by apipath.py.
"""
from __future__ import annotations

from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import KeyKind, LedgerKey, key_addr, parse_key
from plumber_agent.planner.context import (PlanContext, canonical_cidr, family_of,
                                           is_ipv6_link_local)


def plan(ctx: PlanContext) -> None:
    removed = _removed_earlier(ctx.records)
    for ifname, dl in ctx.desired.links.items():
        for family in (4, 6):
            owned = dl.addresses(family)
            if owned is None:
                continue
            want = set(owned.value)
            for cidr in want:
                ctx.wanted.add(key_addr(ifname, cidr))
            if not ctx.link_exists(ifname):
                ctx.note(ifname, f"interface {ifname} does not exist on this node",
                         owned.templates)
                continue
            obs = ctx.observed.links.get(ifname)
            have_raw = (obs.ipv4 if family == 4 else obs.ipv6) if obs is not None else []
            have = {canonical_cidr(c) for c in have_raw}
            for cidr in sorted(want - have):
                key = key_addr(ifname, cidr)
                rec = ctx.records.get(key)
                if rec is not None and not rec.get("created"):
                    # We removed it once (it pre-existed); now wanted again: give it back
                    # and forget, so it counts as pre-existing again.
                    ctx.emit(Phase.ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                             {"address": cidr}, templates=owned.templates, key=key,
                             op=LedgerOp.RELEASE)
                else:
                    ctx.emit(Phase.ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                             {"address": cidr}, templates=owned.templates, key=key,
                             op=LedgerOp.CLAIM, prior=None)
            for cidr in sorted(have - want):
                if family == 6 and is_ipv6_link_local(cidr):
                    continue
                key = key_addr(ifname, cidr)
                rec = ctx.records.get(key)
                if rec is not None and rec.get("created"):
                    continue  # ours and no longer wanted: cleanup removes it
                ctx.wanted.add(key)
                ctx.emit(Phase.ADDRESS, (ifname, family, 0), Verb.DELETE_ADDRESS, ifname,
                         {"address": cidr}, templates=owned.templates, key=key,
                         op=LedgerOp.CLAIM, prior=cidr)
            # Removals done earlier stay wanted while the family is managed.
            for cidr in removed.get(ifname, ()):
                if family_of(cidr) == family and cidr not in want:
                    ctx.wanted.add(key_addr(ifname, cidr))


def cleanup(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    ifname, cidr = parsed.name, parsed.cidr
    obs = ctx.observed.links.get(ifname)
    if obs is None or ifname in ctx.doomed_links:
        ctx.forget(Phase.DELETE_ADDRESS, key, f"{ifname} is gone")
        return
    family = family_of(cidr)
    have = {canonical_cidr(c) for c in (obs.ipv4 if family == 4 else obs.ipv6)}
    if rec.get("created"):
        if cidr not in have:
            ctx.forget(Phase.DELETE_ADDRESS, key, f"{cidr} is already gone")
        else:
            ctx.release(Phase.DELETE_ADDRESS, (ifname, family, 0), Verb.DELETE_ADDRESS, ifname,
                        {"address": cidr}, key, rec)
    elif cidr in have:
        ctx.forget(Phase.DELETE_ADDRESS, key, f"{cidr} is back already")
    else:
        # Re-add what the final-state rule removed, AFTER deleting ours: deleting a primary
        # IPv4 address deletes its secondaries (promote_secondaries=0, the kernel default),
        # so make-before-break would lose the address we give back.
        ctx.release(Phase.DELETE_ADDRESS, (ifname, family, 1), Verb.ADD_ADDRESS, ifname,
                    {"address": cidr}, key, rec)


def _removed_earlier(records: dict) -> dict[str, list[str]]:
    """Addresses the final-state rule removed earlier (ledger records), by ifname."""
    out: dict[str, list[str]] = {}
    for key, rec in records.items():
        if key.startswith(f"{KeyKind.ADDR}:") and isinstance(rec, dict) \
                and not rec.get("created"):
            try:
                parsed = parse_key(key)
            except ValueError:
                continue  # cleanup reports the unreadable record
            out.setdefault(parsed.name, []).append(parsed.cidr)
    return out
