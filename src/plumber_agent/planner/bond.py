"""Linux bonds: created (with their mode and options), their members enslaved, and on cleanup
the members released (and put back up when they were up) before a bond we created is deleted.

What the kernel requires, and how the plan follows it:
- a NIC is enslaved only while it is down (bond_enslave: "Device can not be enslaved while
  up", EPERM); the driver sets it down, enslaves it, and the kernel opens it again;
- a member's MTU follows its bond's: enslaving sets it to the bond's, a bond MTU change sets
  every member's, and releasing puts back the MTU it had. So a member has no MTU (nor
  addresses, nor VLANs) of its own in a template (spec and planner refuse it), and the undo
  restores its admin state only: releasing closes it (dev_close in __bond_release_one);
- the mode can only change on a bond without members: a bond we created whose mode differs is
  deleted and re-created (drift or a spec change); other options are set in place.

Ownership: a same-named link that is not our bond is left alone (a note); a member enslaved
elsewhere is left alone (a note); a missing member is a note, so its template HOLDS what it
applied (a typo'd member undoes nothing: planner/__init__.py `_without_held`). A member that
the plan's cleanup is about to release from another bond we created waits for the next round.
"""
from __future__ import annotations

from typing import Optional

from plumber_agent.desired.bond import DesiredBond
from plumber_agent.models.actions import LedgerOp, Phase, Verb
from plumber_agent.models.keys import LedgerKey, key_bond, key_bond_member
from plumber_agent.models.observed import ObservedLink
from plumber_agent.planner.context import PlanContext

BOND_KIND = "bond"  # IFLA_INFO_KIND


def plan(ctx: PlanContext) -> None:
    for name in sorted(ctx.desired.bonds):
        db = ctx.desired.bonds[name]
        key = key_bond(name)
        ctx.wanted.add(key)
        ctx.wanted.update(key_bond_member(m) for m in db.members)
        recreated = _plan_bond(ctx, db, key)
        if recreated is None:
            continue
        ctx.planned_links.add(name)
        for member in db.members:
            _plan_member(ctx, db, member, recreated)


def _plan_bond(ctx: PlanContext, db: DesiredBond, key: str) -> Optional[bool]:
    """Plan the bond itself: None when it is left alone, else whether it is (re-)created."""
    name, settings = db.name, db.settings()
    if settings.get("primary") not in (None, *ctx.observed.links):
        # IFLA_BOND_PRIMARY is an ifindex: a primary that does not exist yet (its own note
        # says so) is set on the pass that finds it.
        del settings["primary"]
    obs = ctx.observed.links.get(name)
    rec = ctx.records.get(key)
    sub = (ctx.depth(name), name)
    if obs is not None:
        ours = rec is not None and not (rec.get("pending") and obs.kind != BOND_KIND)
        if not ours:
            ctx.note(name, f"interface {name} already exists and was not created by "
                           "HostPlumber as a bond; it is left alone", db.templates)
            return None
        if obs.kind == BOND_KIND and obs.bond is not None and obs.bond.mode == db.mode:
            if not bond_matches(obs, settings, ctx.observed.links):
                ctx.emit(Phase.LINK_CREATE, sub + (1,), Verb.ENSURE_BOND, name, settings,
                         templates=db.templates, key=key, op=LedgerOp.CLAIM, prior=None)
            if obs.admin_up is False:
                ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, name, templates=db.templates)
            return False
        # Ours, but another mode (or no longer a bond): the mode needs a bond without members.
        ctx.emit(Phase.LINK_CREATE, sub + (0,), Verb.DELETE_LINK, name, templates=db.templates,
                 drift=rec.get("value", {}).get("mode") == db.mode)
    ctx.emit(Phase.LINK_CREATE, sub + (1,), Verb.ENSURE_BOND, name, settings,
             templates=db.templates, key=key, op=LedgerOp.CLAIM, prior=None)
    ctx.emit(Phase.LINK_UP, sub, Verb.SET_UP, name, templates=db.templates)
    return True


def _plan_member(ctx: PlanContext, db: DesiredBond, member: str, recreated: bool) -> None:
    name = db.name
    obs = ctx.observed.links.get(member)
    if obs is None:
        if not ctx.numvfs_changing:  # a VF member appears with its VFs: the next round
            ctx.note(member, f"bond {name}: member {member} does not exist on this node",
                     db.templates)
        return
    problem = _own_config(ctx, member)
    if problem:
        ctx.note(member, f"bond {name}: member {member} {problem}; a member's MTU follows its "
                         f"bond's and its traffic is the bond's: configure {name} instead",
                 db.templates)
        return
    if obs.master == name and not recreated:
        return
    if obs.master is not None and obs.master != name:
        if ctx.records.get(key_bond(obs.master)) is not None \
                and obs.master not in ctx.desired.bonds:
            return  # this plan's cleanup releases it from our old bond; enslaved next round
        ctx.note(member, f"bond {name}: member {member} is enslaved to {obs.master}, not by "
                         "HostPlumber; it is left alone", db.templates)
        return
    action = ctx.emit(Phase.LINK_CREATE, (ctx.depth(name), name, 2, member), Verb.ENSLAVE,
                      member, {"bond": name}, templates=db.templates,
                      key=key_bond_member(member), op=LedgerOp.CLAIM,
                      prior={"up": bool(obs.admin_up)})
    own = [c for c in obs.ipv4 + obs.ipv6 if not c.startswith("fe80:")]
    if own:
        action.side_effects.append(
            f"{member} goes down and comes back as a member of {name}: its own addresses "
            f"({', '.join(own)}) and the routes through it stop carrying traffic")


def _own_config(ctx: PlanContext, member: str) -> Optional[str]:
    """What another template configures on `member` that a bond member cannot have."""
    link = ctx.desired.links.get(member)
    if link is not None and link.mtu is not None:
        return "has an MTU of its own in a template"
    if link is not None and (link.ipv4 is not None or link.ipv6 is not None):
        return "has addresses of its own in a template"
    if any(vlan.parent == member for vlan in ctx.desired.vlans.values()):
        return "has VLANs of its own in a template"
    if any(member in bridge.interfaces for bridge in ctx.desired.bridges.values()):
        return "is an Open vSwitch port in a template"
    if member in ctx.desired.linux_bridge_ports:
        return "is a Linux bridge port in a template"
    return None


def bond_matches(obs: ObservedLink, settings: dict, links: dict) -> bool:
    """Does the observed bond have every setting asked for (unset ones are not compared)? A
    primary counts once it is a member: the kernel keeps the name of one not enslaved yet and
    reports none (a missing primary member would otherwise re-set it on every pass)."""
    if obs.kind != BOND_KIND or obs.bond is None:
        return False
    for key, want in settings.items():
        if key == "primary":
            member = links.get(want)
            if member is None or member.master != obs.ifname:
                continue
        if getattr(obs.bond, key, None) != want:
            return False
    return True


def cleanup_bond(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    ifname = parsed.name
    obs = ctx.observed.links.get(ifname)
    if obs is None or obs.kind != BOND_KIND:
        ctx.forget(Phase.DELETE_LINK, key, f"{ifname} is already gone")
        return
    if not rec.get("created"):
        ctx.forget(Phase.DELETE_LINK, key, f"{ifname} was not created by HostPlumber")
        return
    ctx.doomed_links.add(ifname)
    ctx.release(Phase.DELETE_LINK, (-ctx.depth(ifname), ifname), Verb.DELETE_LINK, ifname,
                None, key, rec)


def cleanup_member(ctx: PlanContext, parsed: LedgerKey, key: str, rec: dict) -> None:
    """Release a member we enslaved and put its admin state back (releasing closes it). A
    member in another master now, or gone, is forgotten: it is not ours to move."""
    member = parsed.name
    obs = ctx.observed.links.get(member)
    value, prior = rec.get("value"), rec.get("prior")
    bond = value.get("bond") if isinstance(value, dict) else None
    was_up = bool(prior.get("up")) if isinstance(prior, dict) else False
    if obs is None:
        ctx.forget(Phase.RELEASE_MEMBER, key, f"{member} is gone")
        return
    if obs.master is not None and obs.master != bond:
        ctx.forget(Phase.RELEASE_MEMBER, key, f"{member} is now in {obs.master}, not in "
                                              f"{bond}")
        return
    if obs.master is None and bool(obs.admin_up) == was_up:
        ctx.forget(Phase.RELEASE_MEMBER, key, f"{member} is out of {bond} and as it was")
        return
    ctx.release(Phase.RELEASE_MEMBER, (member,), Verb.RELEASE_MEMBER, member,
                {"bond": bond, "up": was_up}, key, rec)
