"""plan(desired, observed, ledger records) -> ordered host actions. Pure: no I/O, no clock.

Why pure: every promise of architecture §3 (final-state addresses, ownership, drift repair, the
API-server guard, a converged host doing nothing) is decided here, so it is tested here, on data.

Rules, in short:
- Compare canonical forms only (sorted lists, compressed IPv6, no IPv6 link-local); keys the
  user did not set are not compared. A converged host gives an EMPTY plan.
- Ownership: every action that creates or changes a host object carries `ledger_key`,
  `ledger_op='claim'` and `ledger_prior` (None for created objects, else the value found).
  The ledger keeps the first prior it saw. Ledger records whose key the desired state no longer
  wants are undone exactly (`ledger_op='release'`) in the DELETE_*/RESTORE_* phases; a record
  whose object is already gone (or is about to vanish with its parent) becomes a ledger-only
  `forget` action. Nothing without a ledger record is ever deleted, except addresses of a
  family a template manages (the seed's final-state rule); each such removal is claimed, one
  ledger record per address, so cleanup adds it back.
- Pending records (write-ahead intents the executor wrote before a change it may not have
  made: host/ledger.py) are safe either way: cleanup compares the host with the prior (forget
  when nothing changed) and deletes a created object only when the host shows it is the one we
  were creating (same VLAN parent/id, same route gateway/dev, OVS rows tagged as ours);
  anything else is forgotten, never deleted. A same-named link that does not match a pending
  VLAN record is left alone like any link we did not create.
- Missing parents (VLAN parent, route dev, OVS port netdev neither present nor planned) and a
  VLAN MTU above its parent's give no action and a per-template note / refusal.
- A template that fails here (a note, or a merge failure such as an SR-IOV selector matching
  nothing) HOLDS what it applied: its stale records are not undone until it plans cleanly. A
  typo (`eth9` for `eth1`, `eno9` for `eno1`) is otherwise indistinguishable from moving the
  configuration, and would undo the old object while failing on the new one.

One room per kind, around a shared context (context.py, which names the facts one kind decides
and another reads): sriov.py, vlan.py, links.py (MTUs), addresses.py, routes.py, ovs.py, plus
lbridge.py (Linux bridges), apipath.py, the API-path guard run over the whole plan once the rooms are done, and
collateral.py, which names what the kernel removes by itself with a planned change and
puts back what it removed once the change is undone. Each room has a `plan` and a
cleanup per ledger key kind; PLANNERS and CLEANUPS below are derived from the kinds registry
(kinds/).
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional, Sequence

from plumber_agent.desired import DesiredState
from plumber_agent.kinds import cleanup_order, plan_order
from plumber_agent.models.keys import KeyKind, LedgerKey, parse_key
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.plan import ApiServerPath, PlanIssue, PlanResult
from plumber_agent.planner import apipath, collateral, disruption
from plumber_agent.planner.context import PlanContext

__all__ = ["ApiServerPath", "PlanIssue", "PlanResult", "plan"]


def _room(name: str):
    return importlib.import_module(f"{__name__}.{name}")


# Planning order (kinds.plan_order: each kind after those in its `after`): a room may read
# what an earlier one decided (VLANs to be created count as existing parents for MTUs,
# addresses, routes and OVS ports; numVfs changes postpone VF work).
PLANNERS: tuple[Callable[[PlanContext], None], ...] = tuple(
    _room(kind.plan_room).plan for kind in plan_order())

HELD_LISTED = 5
"""Ledger keys named in a held template's note (the rest are counted)."""

# Cleanup of ledger records the desired state no longer wants, by key kind, in rank order
# (kinds.cleanup_order): objects that vanish with this plan come first, so their dependants
# are just forgotten; collateral last: it reads the undos planned before it.
CLEANUPS: dict[KeyKind, Callable[[PlanContext, LedgerKey, str, dict], None]] = {
    KeyKind(c.key_kind): getattr(_room(c.room), c.function) for c in cleanup_order()}


def plan(desired: DesiredState, observed: ObservedHost, ledger_records: dict, *,
         api_server: Optional[ApiServerPath | Sequence[ApiServerPath]] = None,
         undo_allowed: frozenset = frozenset()) -> PlanResult:
    """The ordered actions that take `observed` to `desired`, plus refusals and notes.
    `api_server`: the kernel's path to each API endpoint, guarded over the whole plan
    (apipath.py); `undo_allowed`: templates being rolled back, whose undo may move it."""
    ctx = PlanContext(desired, observed, ledger_records, api_server, undo_allowed)
    for plan_kind in PLANNERS:
        plan_kind(ctx)
    _cleanup(ctx)
    collateral.annotate(ctx)
    result = ctx.finish()
    result.actions = apipath.guard(ctx, result.actions)
    # The VFs each action disrupts; the pods using them are added by callers that read them.
    result.actions = disruption.annotate(result.actions, observed, None)
    return result


def _cleanup(ctx: PlanContext) -> None:
    stale = _without_held(ctx, {k: r for k, r in ctx.records.items() if k not in ctx.wanted})
    by_kind: dict[KeyKind, list[str]] = {kind: [] for kind in CLEANUPS}
    for key in sorted(stale):
        kind = key.split(":", 1)[0]
        if kind in by_kind:
            by_kind[KeyKind(kind)].append(key)
    for kind, cleanup in CLEANUPS.items():
        for key in by_kind[kind]:
            rec = stale[key]
            try:
                if not isinstance(rec, dict):
                    raise TypeError(f"{type(rec).__name__} is not a record")
                cleanup(ctx, parse_key(key), key, rec)
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                # A hand-edited or foreign ledger must not stop every pass: leave the object as
                # it is and say so.
                templates = rec.get("templates") if isinstance(rec, dict) else None
                ctx.note(key, f"ledger record {key} is unreadable ({exc}); the object is left "
                              "as it is", templates if isinstance(templates, list) else [])


def _without_held(ctx: PlanContext, stale: dict) -> dict:
    """`stale` without the records of templates failing on this node (held, one note each)."""
    failing = set(ctx.desired.failing)
    for issue in ctx.result.notes:
        failing.update(issue.templates)
    held: dict[str, list[str]] = {}
    for key, rec in stale.items():
        owners = rec.get("templates") if isinstance(rec, dict) else None
        for name in sorted(failing.intersection(owners if isinstance(owners, list) else ())):
            held.setdefault(name, []).append(key)
    for name, keys in sorted(held.items()):
        ctx.note(name, f"nothing it applied before is undone while it fails here "
                       f"({len(keys)} object(s) kept: {', '.join(sorted(keys)[:HELD_LISTED])}"
                       f"{', ...' if len(keys) > HELD_LISTED else ''})", [name])
    kept = {key for keys in held.values() for key in keys}
    return {key: rec for key, rec in stale.items() if key not in kept}
