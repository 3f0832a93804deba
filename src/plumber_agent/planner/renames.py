"""Ledger records follow a NIC the kernel renamed (README "Stable NIC names").

Why: ledger keys name interfaces by their kernel name (`mtu:eth0`, `addr:eth0:10.0.0.5/24`),
and a template that names the NIC by reference (pci:, mac:, altname:) follows a rename on the
next pass. Without this, the record of `eth0` would be forgotten (its name is gone), the NIC's
new name would start a record whose "prior" is OUR value, and deleting the template would leave
our MTU and address behind. Worse, when two NICs swap names (eth0 <-> eth1 after a firmware
update), the record of eth0 would restore its prior on the OTHER NIC, which now bears that name.

How: a claim about an interface with a stable identity (its PCI address, permanent MAC and
altnames) carries that identity into its record (`Action.ledger_link`, `annotate`). Each plan first looks
at every such record (`follow`): when the interface its key names is no longer that device, the
record is planned as if keyed by the device's current name (so the claims and the cleanup of
this plan see the original prior there), and a ledger-only `move_record` action re-keys it on
disk. When the device is nowhere and another device now has the name, the record is forgotten:
its device is gone, and the one named like it is not ours. Records without an identity (older
records, virtual devices) are planned as before. Pure: reads the records and the ObservedHost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plumber_agent.models.actions import Action, LedgerOp, Phase, Verb
from plumber_agent.models.keys import (KeyKind, LedgerKey, key_addr, key_bond_member,
                                       key_collateral, key_lbport, key_lbvlan, key_mtu, parse_key)
from plumber_agent.models.observed import ObservedHost, ObservedLink
from plumber_agent.planner.context import PlanContext

PCI_FIELD, PERM_MAC_FIELD, ALTNAMES_FIELD = "pciAddress", "permMac", "altnames"
STRONG_FIELDS = (PCI_FIELD, PERM_MAC_FIELD)  # never change for a device


def identity(link: Optional[ObservedLink]) -> Optional[dict]:
    """What stays with a NIC across renames (and, but for altnames, reboots); None for a
    device with none of them."""
    if link is None:
        return None
    found = {PCI_FIELD: link.pci_addr, PERM_MAC_FIELD: link.perm_mac,
             ALTNAMES_FIELD: list(link.altnames)}
    return {k: v for k, v in found.items() if v} or None


def _is(link: ObservedLink, ident: dict) -> Optional[bool]:
    """Is `link` the device of `ident`? By the PCI address and permanent MAC when recorded
    (every one must match); else by carrying one of the recorded altnames; None (not known)
    for a link without them: an altname can be removed from a device."""
    strong = {k: ident[k] for k in STRONG_FIELDS if ident.get(k)}
    if strong:
        mine = identity(link) or {}
        return all(mine.get(k) == v for k, v in strong.items())
    recorded = ident.get(ALTNAMES_FIELD)
    if isinstance(recorded, list) and set(map(str, recorded)) & set(link.altnames):
        return True
    return None


def _find(observed: ObservedHost, ident: dict) -> Optional[str]:
    names = [name for name, link in observed.links.items() if _is(link, ident)]
    return names[0] if len(names) == 1 else None


def _describe(ident: dict) -> str:
    """"pciAddress 0000:3b:00.0, altnames uplink0" (a hand-edited record as it reads)."""
    return ", ".join(f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in sorted(ident.items(), key=lambda item: str(item[0])))


@dataclass(frozen=True)
class Move:
    old: str
    new: str
    why: str
    templates: tuple[str, ...]
    record: dict  # what `new` gets (the old key's record, as this plan read it)
    drop: bool  # forget `old` (False when another record moves there: two NICs swapped names)


def _rekeyed(parsed: LedgerKey, ifname: str) -> Optional[str]:
    if parsed.kind is KeyKind.MTU:
        return key_mtu(ifname)
    if parsed.kind is KeyKind.ADDR:
        return key_addr(ifname, parsed.cidr)
    # A NIC as a bond member or a Linux bridge port: the kernel keeps its master on a rename.
    follows = {KeyKind.BOND_MEMBER: key_bond_member, KeyKind.LBPORT: key_lbport,
               KeyKind.LBVLAN: key_lbvlan}.get(parsed.kind)
    return follows(ifname) if follows else None


def _intended(records: dict, observed: ObservedHost) -> tuple[dict, list[tuple]]:
    """{old key: (new key, why)} for records whose NIC now has another name, and the (key, why)
    of records whose NIC is gone while another device has its name."""
    intended: dict[str, tuple[str, str]] = {}
    strays: list[tuple] = []
    for key, rec in records.items():
        ident = rec.get("link") if isinstance(rec, dict) else None
        if not isinstance(ident, dict) or not ident:
            continue
        try:
            parsed = parse_key(key)
        except ValueError:
            continue  # the cleanup reports an unreadable key
        if parsed is None or parsed.ifname is None:
            continue
        named = observed.links.get(parsed.ifname)
        now = _find(observed, ident)
        if now == parsed.ifname:
            continue  # not renamed
        what = _describe(ident)
        if now is None:
            if named is not None and _is(named, ident) is False:
                strays.append((key, f"{parsed.ifname} is now another device; the one this "
                                    f"record is about ({what}) is gone"))
            continue  # gone, or not known: the usual cleanup applies
        new = _rekeyed(parsed, now)
        if new is not None:
            intended[key] = (new, f"{parsed.ifname} is now {now} ({what})")
    return intended, strays


def _accepted(intended: dict, records: dict, freed: set[str]) -> dict:
    """The moves that overwrite no record staying where it is: a new key is free (or `freed`:
    its record is forgotten by this plan), or its own record moves away too (a swap); one
    record per new key."""
    accepted = {}
    targets: set[str] = set()
    for old, (new, why) in sorted(intended.items()):
        if new not in targets:
            accepted[old] = (new, why)
            targets.add(new)
    while True:  # drop a move onto a record whose own move was dropped, until none is left
        blocked = [old for old, (new, _) in accepted.items()
                   if new in records and new not in accepted and new not in freed]
        if not blocked:
            return accepted
        for old in blocked:
            del accepted[old]


def follow(records: dict, observed: ObservedHost) -> tuple[dict, list[Move], list[tuple]]:
    """(records as this plan sees them, the moves to write, (key, why) of records to forget).
    A record whose NIC is elsewhere but cannot follow it (another record holds the name) is
    forgotten too: applied where it is, it would undo on whatever device has the name now."""
    intended, strays = _intended(records, observed)
    accepted = _accepted(intended, records, {key for key, _ in strays})
    strays += [(old, f"{why}, but {new} already has a record") for old, (new, why)
               in sorted(intended.items()) if old not in accepted]
    if not accepted and not strays:
        return records, [], []
    # What the kernel removed with a moved change is the new key's collateral now.
    for old, (new, why) in list(accepted.items()):
        old_collateral, new_collateral = key_collateral(old), key_collateral(new)
        if old_collateral in records and (new_collateral not in records or new in accepted):
            accepted[old_collateral] = (new_collateral, why)
    targets = {new for new, _ in accepted.values()}
    moves = [Move(old, new, why, tuple(records[old].get("templates") or ()), records[old],
                  drop=old not in targets) for old, (new, why) in sorted(accepted.items())]
    view = {key: rec for key, rec in records.items() if key not in accepted}
    for key, _ in strays:
        view.pop(key, None)
    view.update({move.new: move.record for move in moves})
    return view, moves, strays


def emit(ctx: PlanContext, moves: list[Move], strays: list[tuple]) -> None:
    """Forgets first: a move may write the key of a record forgotten here."""
    for key, why in strays:
        ctx.emit(Phase.LEDGER_FOLLOW, ("0", key), Verb.FORGET, key, templates=[], key=key,
                 op=LedgerOp.RELEASE, reason=f"cleanup: {why}")
    for move in moves:
        ctx.emit(Phase.LEDGER_FOLLOW, ("1", move.old), Verb.MOVE_RECORD, move.old,
                 {"to": move.new, "record": move.record, "drop": move.drop},
                 templates=list(move.templates), key=move.old, op=LedgerOp.MOVE,
                 reason=f"ledger: {move.why}")


def annotate(actions: list[Action], observed: ObservedHost) -> None:
    """Give each claim about an interface with a stable identity that identity (its record
    keeps it: `follow` finds the NIC again under another name)."""
    for action in actions:
        if action.ledger_op != LedgerOp.CLAIM or not action.ledger_key:
            continue
        try:
            parsed = parse_key(action.ledger_key)
        except ValueError:
            continue
        if parsed is not None and parsed.ifname is not None:
            action.ledger_link = identity(observed.links.get(parsed.ifname))
