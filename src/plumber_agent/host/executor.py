"""The ONE chokepoint for every host change (after os-net-config's single side-effect path).

Why one place: every change is logged with the same line the `plan` command prints, dry-run
falls out for free (no driver call, no ledger write), and ownership is recorded consistently.

Ownership is write-ahead (see host/ledger.py): BEFORE a creating/changing action ('claim') runs,
its record is written with the prior and created flag, marked pending, and fsync'd; the host
change comes next; after it succeeded the claim is confirmed (pending removed, value recorded).
The intents of up to INTENT_GROUP_ACTIONS upcoming actions are written in one ledger batch (one
fsync) before the first of them runs; an action that then does not start (skipped, fenced)
abandons its fresh intent.
A SIGKILL anywhere in between leaves a pending record, which the planner handles safely whether
or not the change happened. If the intent cannot be written the action does not run (a change no
record owns could never be undone). A failed action whose host change certainly did not happen
abandons its fresh intent; one that may have changed the host (a timeout, a driver call with
several steps such as create-then-up or 0-then-N VFs) keeps it, still pending. When the host did
change but not as asked (the driver enabled fewer VFs, or they did not appear in time), the claim
is confirmed AND the action reported failed, so cleanup can still restore the prior. 'release'
records are removed only after the undo ran (a failed delete keeps its record, so the next round
retries). Around a change the kernel answers by removing other state (an address deletion, an
MTU below 1280, numVfs between non-zero counts) host/collateral.py records, write-ahead too,
what it removed; `restore_collateral` puts it back after the undo.

Failure policy: an action failing does not stop independent actions; actions that depend on a
failed (or skipped) one are skipped -- addresses, MTU, up and routes on a VLAN whose creation
failed, ports on a bridge that could not be created, VF binds on a PF whose numVfs write
failed. Every result carries the error's message and type so the reconciler can mark the
templates in `action.templates` Failed with a message a user can act on. Planner refusals are
logged and reported alongside.
"""
from __future__ import annotations

import errno as errno_mod
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from plumber_agent.errors import (HostError, HostTimeout, InvalidSpec, NotAvailable,
                                   PlumberError, Refused)
from plumber_agent.host.collateral import CollateralRecorder, Watch
from plumber_agent.kinds import unchanged_when
from plumber_agent.kinds.base import IF_NOT_AVAILABLE, UNLESS_DESTROYS_VFS, UNLESS_NOT_AVAILABLE
from plumber_agent.models.actions import Action, LedgerOp, Verb
from plumber_agent.models.collateral import VF_SETTINGS
from plumber_agent.models.observed import ObservedRoute
from plumber_agent.models.plan import PlanIssue, PlanResult
from plumber_agent.models.vfattrs_spec import LINK_STATES

VF_WAIT_TIMEOUT_S = 60.0  # VFs and their netdevs may take up to a minute to appear (docs/pitfalls.md 25)
INTENT_GROUP_ACTIONS = 64
"""Write-ahead intents of up to this many upcoming actions go to the ledger in one batch (one
fsync) before the first of them runs: an fsync costs the disk's flush latency (0.3-1 ms here),
so 5,000 actions paid 1.3-1.9 s for them one by one (bench B11). Bounded so that a crash
leaves at most this many pending records of changes that had not started yet (each of which
the planner settles from the host as 'did not happen', host/ledger.py)."""

logger = logging.getLogger(__name__)

OK, FAILED, SKIPPED, DRY_RUN = "ok", "failed", "skipped", "dry-run"
FENCED = "Fenced"  # ActionResult.error_type of an action `may_start` held back


@dataclass
class ActionResult:
    action: Action
    status: str  # ok | failed | skipped | dry-run
    error: Optional[str] = None
    error_type: Optional[str] = None  # exception class, e.g. 'HostError'
    errno: Optional[str] = None  # e.g. 'EBUSY' when the kernel said so

    @property
    def ok(self) -> bool:
        return self.status in (OK, DRY_RUN)


@dataclass
class ExecutionReport:
    results: list[ActionResult] = field(default_factory=list)
    refusals: list[PlanIssue] = field(default_factory=list)

    def __iter__(self):
        return iter(self.results)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if not r.ok]

    def template_failures(self) -> dict[str, list[str]]:
        """template name -> messages (failed and skipped actions, refusals)."""
        out: dict[str, list[str]] = {}
        for r in self.failed():
            for name in r.action.templates:
                out.setdefault(name, []).append(f"{r.action.verb} {r.action.target}: {r.error}")
        for issue in self.refusals:
            for name in issue.templates:
                out.setdefault(name, []).append(issue.message)
        return out


def _groupable(actions: list[Action]) -> set[int]:
    """Indexes of the claims whose intent may be written ahead (INTENT_GROUP_ACTIONS): the
    actions whose ledger key no other action of the list touches. Why: an intent written ahead
    is written before the earlier actions run; for a key touched twice (released then claimed
    again, claimed by two actions) the per-action order of intent, change and confirm or
    release is what keeps a record owning each change, so those keep it."""
    uses: dict[str, int] = {}
    for action in actions:
        if action.ledger_key:
            uses[action.ledger_key] = uses.get(action.ledger_key, 0) + 1
    return {i for i, action in enumerate(actions)
            if action.ledger_key and action.ledger_op == LedgerOp.CLAIM
            and uses[action.ledger_key] == 1}


def _requires(action: Action) -> frozenset[str]:
    spec = action.spec
    return spec.requires(action) if spec else frozenset()


def _provides(action: Action) -> frozenset[str]:
    spec = action.spec
    return spec.provides(action) if spec else frozenset()


def is_netlink_only(action: Action) -> bool:
    """Carried out over rtnetlink only: the kernel notifies every change it makes, so the
    netlink driver can re-read just what it was told about (see Netlink.discover)."""
    spec = action.spec
    return spec is not None and spec.netlink


_POLICIES: dict[str, Callable[[Action, BaseException], bool]] = {
    IF_NOT_AVAILABLE: lambda action, exc: isinstance(exc, NotAvailable),
    UNLESS_NOT_AVAILABLE: lambda action, exc: not isinstance(exc, NotAvailable),
    UNLESS_DESTROYS_VFS: lambda action, exc: not action.params.get("destroys_vfs"),
}
_UNCHANGED_WHEN = {Verb(verb): _POLICIES[policy] for verb, policy in unchanged_when().items()}


def certainly_unchanged(action: Action, exc: BaseException) -> bool:
    """After `action` raised `exc`: is the host certainly as it was before? (Then a fresh
    pending intent can be dropped; when in doubt keep it -- a pending record is safe.)"""
    if isinstance(exc, HostTimeout):
        return False  # the write may have landed, or may still land
    if isinstance(exc, (Refused, InvalidSpec)):
        return True  # checked before any write
    policy = _UNCHANGED_WHEN.get(action.verb)
    if policy is not None:  # the kind's word for this verb (kinds/<kind>.py unchanged_when)
        return policy(action, exc)
    spec = action.spec
    return spec is not None and spec.one_write  # ensure_port: several steps


def _route(p: dict) -> ObservedRoute:
    return ObservedRoute(family=p["family"], dst=p.get("dst"), gw=p.get("gw"), dev=p.get("dev"),
                         src=p.get("src"), metric=p.get("metric"))


class Executor:
    def __init__(self, netlink, sysfs, ovs, ledger, *, dry_run: bool = False,
                 log: logging.Logger = logger, vf_wait_timeout_s: float = VF_WAIT_TIMEOUT_S):
        self.netlink = netlink
        self.sysfs = sysfs
        self.ovs = ovs
        self.ledger = ledger
        self.dry_run = dry_run
        self.log = log
        self.vf_wait_timeout_s = vf_wait_timeout_s
        self.collateral = CollateralRecorder(netlink, ledger, log=log)

    def execute(self, actions: Iterable[Action] | PlanResult,
                refusals: Iterable[PlanIssue] = (), *,
                may_start: Optional[Callable[[Action], Optional[str]]] = None) -> ExecutionReport:
        """`may_start`, asked right before each host change: None to go on, else why the action
        must not start (a rollout slot not confirmed in time: fleet/gate.py `may_start`); such
        an action and those that depend on it are not run (FENCED)."""
        if isinstance(actions, PlanResult):
            refusals = list(refusals) + actions.refusals
            actions = actions.actions
        report = ExecutionReport(refusals=list(refusals))
        for issue in report.refusals:
            self.log.warning("refused %s: %s", issue.target, issue.message)
        broken: set[str] = set()  # objects whose creation failed or was skipped
        actions = list(actions)
        grouped = _groupable(actions) if not self.dry_run else set()
        ahead: dict[int, bool] = {}  # action index -> its intent, written ahead (fresh?)
        for index, action in enumerate(actions):
            line = action.describe()
            if index in grouped and index not in ahead:
                ahead.update(self._intend_ahead(actions, index, grouped))
            blocked = _requires(action) & broken
            if blocked:
                self._drop_unused(action, ahead.pop(index, False))
                broken |= _provides(action)
                why = ", ".join(sorted(blocked))
                self.log.warning("skip  %s  (depends on failed %s)", line, why)
                report.results.append(ActionResult(
                    action, SKIPPED, error=f"skipped: depends on {why}, which failed",
                    error_type="Skipped"))
                continue
            if self.dry_run:
                self.log.info("dry-run  %s", line)
                report.results.append(ActionResult(action, DRY_RUN))
                continue
            held = may_start(action) if may_start is not None else None
            if held:
                self._drop_unused(action, ahead.pop(index, False))
                broken |= _provides(action)
                self.log.warning("not started  %s  (%s)", line, held)
                report.results.append(ActionResult(action, SKIPPED, error=f"not started: {held}",
                                                   error_type=FENCED))
                continue
            self.log.info("apply  %s", line)
            try:
                fresh = ahead.pop(index) if index in ahead else self._intend(action)
                watch = self._watch_collateral(action, fresh)
            except Exception as exc:  # noqa: BLE001 - no record, no change: report it
                broken |= _provides(action)
                self.log.error("ledger intent %s failed, not applying %s: %s",
                               action.ledger_key, line, exc)
                report.results.append(self._failure(action, exc))
                continue
            try:
                changed_partly = self._apply(action)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal
                self.collateral.after(watch)
                if fresh and certainly_unchanged(action, exc):
                    self._abandon(action)
                broken |= _provides(action)
                result = self._failure(action, exc)
                self.log.error("failed %s: %s", line, result.error,
                               exc_info=not isinstance(exc, (PlumberError, OSError)))
                report.results.append(result)
                continue
            self.collateral.after(watch)
            if changed_partly is not None:
                # The host changed (so confirm the claim) but not as asked.
                self._record(action, report)
                broken |= _provides(action)
                report.results.append(self._failure(action, changed_partly))
                continue
            if self._record(action, report):
                report.results.append(ActionResult(action, OK))
        return report

    def _intend(self, action: Action) -> bool:
        """Write-ahead for a claim; True when a fresh pending record was written."""
        if not action.ledger_key or action.ledger_op != LedgerOp.CLAIM:
            return False
        return self.ledger.intend(action.ledger_key, prior=action.ledger_prior,
                                  created=action.creates, templates=action.templates,
                                  value=action.ledger_value())

    def _watch_collateral(self, action: Action, fresh: bool) -> Optional[Watch]:
        """Record, ahead of `action`, what the kernel may remove with it (host/collateral.py);
        when that fails the action does not run, and its fresh intent is dropped again."""
        try:
            return self.collateral.before(action)
        except Exception:
            if fresh:
                self._abandon(action)
            raise

    def _intend_ahead(self, actions: list[Action], start: int,
                      grouped: set[int]) -> dict[int, bool]:
        """The intents of the next INTENT_GROUP_ACTIONS groupable actions from `start`, in one
        ledger batch (one fsync, all or nothing). {} when the batch failed: each action then
        writes its own intent, and reports the failure, as without grouping."""
        group = [i for i in range(start, len(actions)) if i in grouped][:INTENT_GROUP_ACTIONS]
        written: dict[int, bool] = {}
        try:
            with self.ledger.batch():
                for i in group:
                    written[i] = self._intend(actions[i])
        except Exception as exc:  # noqa: BLE001 - rolled back; the actions try one by one
            self.log.warning("ledger: %d intents in one batch failed (%s); writing them one "
                             "by one", len(group), exc)
            return {}
        return written

    def _drop_unused(self, action: Action, fresh: bool) -> None:
        """An intent written ahead for an action that did not start: its change certainly did
        not happen."""
        if fresh:
            self._abandon(action)

    def _abandon(self, action: Action) -> None:
        try:
            self.ledger.abandon(action.ledger_key)
        except Exception as exc:  # noqa: BLE001 - a pending record left behind is safe
            self.log.warning("ledger: could not drop the intent %s (%s); it stays pending",
                             action.ledger_key, exc)

    def _failure(self, action: Action, exc: BaseException) -> ActionResult:
        code = getattr(exc, "errno", None)
        name = errno_mod.errorcode.get(code) if isinstance(code, int) else None
        message = str(exc) or type(exc).__name__
        return ActionResult(action, FAILED, error=message, error_type=type(exc).__name__,
                            errno=name)

    def _record(self, action: Action, report: ExecutionReport) -> bool:
        if not action.ledger_key or not action.ledger_op:
            return True
        try:
            if action.ledger_op == LedgerOp.CLAIM:
                self.ledger.claim(action.ledger_key, prior=action.ledger_prior,
                                  created=action.creates, templates=action.templates,
                                  value=action.ledger_value())
            elif action.ledger_op == LedgerOp.RELEASE:
                self.ledger.release(action.ledger_key)
        except Exception as exc:  # noqa: BLE001 - a ledger write failure must be visible
            self.log.error("ledger %s %s failed: %s", action.ledger_op, action.ledger_key, exc)
            report.results.append(self._failure(action, exc))
            return False
        return True

    def _apply(self, action: Action) -> Optional[Exception]:
        """Map one verb to driver calls. Returns an error for a partial change, else None."""
        handler = self._handlers.get(action.verb)
        if handler is None:
            raise HostError(f"unknown action verb {action.verb!r} (a bug in the planner)")
        return handler(action)

    def _set_num_vfs(self, action: Action) -> Optional[Exception]:
        p, t = action.params, action.target
        got = self.sysfs.set_num_vfs(t, int(p["num_vfs"]))
        # From here on the host has changed: a later problem is a partial change, so the
        # claim is still recorded (cleanup must be able to return numVfs to its prior).
        if got:
            try:
                self.sysfs.wait_for_vfs(t, got, self.vf_wait_timeout_s)
            except PlumberError as exc:
                return exc
        if got != p["num_vfs"]:
            return HostError(f"PF {t}: asked for {p['num_vfs']} VFs, the driver enabled {got}")
        return None

    def _bind_vf_driver(self, action: Action) -> Optional[Exception]:
        """Bind through driver_override. A restore then clears the override: the driver found
        before came from the kernel's own matching, and an override left behind would pin the
        VF to it on every later probe (a change on the host that nobody asked for)."""
        self.sysfs.bind_vf_driver(action.target, action.params["driver"])
        if not action.params.get("restore"):
            return None
        try:
            self.sysfs.clear_driver_override(action.target)
        except PlumberError as exc:  # bound as found: the leftover override is reported
            return exc
        return None

    def _set_vf(self, action: Action) -> None:
        """ip link set PF vf N <attribute>: the settings of one attribute (planner/vfattrs.py),
        the link state by its kernel number."""
        settings = {name: action.params.get(name) for name in VF_SETTINGS}
        state = settings.get("link_state")
        if isinstance(state, str):
            settings["link_state"] = LINK_STATES.index(state)
        self.netlink.set_vf(action.target, int(action.params["vf"]), settings)

    def _ensure_port(self, action: Action) -> None:
        p = action.params
        self.ovs.ensure_port(p["bridge"], action.target, list(p["interfaces"]),
                             bond_mode=p.get("bond_mode"), lacp=p.get("lacp"),
                             mtu_request=p.get("mtu_request"))

    @property
    def _handlers(self) -> dict[Verb, Callable[[Action], Optional[Exception]]]:
        """One driver call per verb (VERBS in models/actions.py says what each verb means)."""
        nl, ovs = self.netlink, self.ovs
        return {
            Verb.SET_NUM_VFS: self._set_num_vfs,
            Verb.BIND_VF_DRIVER: self._bind_vf_driver,
            Verb.SET_VF: self._set_vf,
            Verb.ENSURE_VLAN: lambda a: nl.ensure_vlan(a.target, a.params["parent"],
                                                       int(a.params["vlan_id"])),
            Verb.DELETE_LINK: lambda a: nl.delete_link(a.target),
            Verb.SET_MTU: lambda a: nl.set_mtu(a.target, int(a.params["mtu"])),
            Verb.SET_UP: lambda a: nl.set_up(a.target),
            Verb.ADD_ADDRESS: lambda a: nl.add_address(a.target, a.params["address"]),
            Verb.DELETE_ADDRESS: lambda a: nl.delete_address(a.target, a.params["address"]),
            Verb.ADD_ROUTE: lambda a: nl.add_route(_route(a.params)),
            Verb.DELETE_ROUTE: lambda a: nl.delete_route(_route(a.params)),
            Verb.ENSURE_BRIDGE: lambda a: ovs.ensure_bridge(a.target,
                                                            a.params.get("datapath_type")),
            Verb.DELETE_BRIDGE: lambda a: ovs.delete_bridge(a.target),
            Verb.ENSURE_PORT: self._ensure_port,
            Verb.DELETE_PORT: lambda a: ovs.delete_port(a.params["bridge"], a.target),
            Verb.ENSURE_BOND: lambda a: nl.ensure_bond(a.target, a.params),
            Verb.ENSLAVE: lambda a: nl.enslave(a.target, a.params["bond"]),
            Verb.RELEASE_MEMBER: lambda a: nl.release_member(a.target,
                                                             up=bool(a.params.get("up"))),
            Verb.ENSURE_LINUX_BRIDGE: lambda a: nl.ensure_linux_bridge(
                a.target, stp=a.params.get("stp"), vlan_filtering=a.params.get("vlan_filtering")),
            Verb.SET_LINUX_BRIDGE_PORT: lambda a: nl.set_linux_bridge_port(a.target,
                                                                           a.params.get("bridge")),
            Verb.SET_LINUX_BRIDGE_VLANS: lambda a: nl.set_linux_bridge_vlans(
                a.target, add=a.params.get("vlan_add"), delete=a.params.get("vlan_delete")),
            Verb.FORGET: lambda a: None,  # ledger only
            Verb.RESTORE_COLLATERAL: self.collateral.restore,
        }
