"""The reconciler: one level-triggered pass over this node, run by a single thread.

Each pass recomputes the whole desired state from every template that selects the node's
current labels (the spec of each this node may apply now: fleet/gate.py; pools turned into this
node's claimed addresses: pools/resolve.py), discovers the host, plans the difference
(pipeline.py, pure), executes it
through the host facade (the one chokepoint for host changes), re-discovers, and re-plans until
the plan is empty or MAX_ROUNDS passes (some changes only become plannable once earlier ones are
visible: VFs appear after numVfs is written). What remains after the last round is a
verification failure (`converge`, which the unit tests' simulated node drives too). The pass
then hands the status to the reporter. Durations and the rollback wait use the injected clock.

Each pass also records what the applied templates manage or depend on (`interest`, see
interest.py): the agent classifies kernel events against it, and a status whose change touches
nothing of it (pod veths and their routes) goes to `publish_unmanaged`, which publishes at most
once per interval, instead of `publish`, which writes at once.

It never reacts to its own status write: it does not watch HostNetworks at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Protocol

from plumber_agent import desired as desired_mod
from plumber_agent import rollback as rollback_mod
from plumber_agent.clock import Clock, RealClock
from plumber_agent.fleet.drain import DrainGate, DrainSpec
from plumber_agent.fleet.gate import GatePass, RolloutGate
from plumber_agent.interest import EVERYTHING, Interest, StatusFilter, interest_of, managed_view
from plumber_agent.host.executor import FENCED
from plumber_agent.models.actions import LedgerOp, Verb
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.plan import PlanResult
from plumber_agent.models.status import TemplateState, TemplateStatus, bounded_plan, to_api
from plumber_agent.ops import Metrics
from plumber_agent.pipeline import plan_templates
from plumber_agent.pools.resolve import PoolPass, PoolResolver
from plumber_agent.rollback import DEFAULT_DEADLINE_S, RolledBack
from plumber_agent.sources import TemplateSource
from plumber_agent.status_builder import build_status

log = logging.getLogger(__name__)

MAX_ROUNDS = 3
CLEANUP_ENTRY = "(cleanup)"
"""status.templates[] entry (Failed) while undoing what a deleted template (or an action no
template owns) did fails: no template entry remains to carry that failure, and it must not stay
in the logs only."""


class EventSink(Protocol):
    def emit(self, *, reason: str, message: str, warning: bool = False,
             template: Optional[str] = None) -> None: ...


class NullEvents:
    def emit(self, *, reason: str, message: str, warning: bool = False,
             template: Optional[str] = None) -> None:
        log.info("event %s: %s", reason, message, extra={"template": template})


@dataclass
class Convergence:
    """What `Reconciler.converge` ended with."""

    merged: desired_mod.MergeResult
    observed: ObservedHost
    rounds: list[tuple[PlanResult, Any]]  # (plan, ExecutionReport) per executed round
    # The plan after the last round (empty when converged); None when a failed round stopped
    # the loop early (the work queue retries with backoff).
    final: Optional[PlanResult]
    gate: Optional[GatePass] = None  # what the rollout gate decided (None: no gate)
    pools: Optional[PoolPass] = None  # the addresses pools gave this node (None: no resolver)
    # Templates with host work still planned when a failed round stopped the loop: the others
    # converged even though the pass did not (one template's failure must not hold another's
    # rollout slot).
    unsettled: frozenset = frozenset()
    # Templates with an action not started because their rollout slot was not confirmed in
    # time (fencing): they keep the slot as is for the retry (gate.finish).
    fenced: frozenset = frozenset()


@dataclass
class SyncOutcome:
    """What one pass did, for the caller's retry decision, metrics and tests."""

    ran: bool = True
    actions: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)
    drift_repaired: int = 0
    # What was put back ("add_address enp3s0f0 address=10.70.1.1/24"), for the DriftRepaired
    # Event: its note names the changes, so two different repairs are two Events rather than
    # one series that says only how many.
    drift_repairs: list[str] = field(default_factory=list)
    cleaned_up: int = 0
    status: Optional[dict] = None
    retry_after_s: Optional[float] = None  # run again then (a rollout slot may free up)

    @property
    def ok(self) -> bool:
        return not self.failures


# Event reason and whether it is a warning, for a template entering each state.
_EVENT_FOR_STATE = {TemplateState.APPLIED: ("Applied", False),
                    TemplateState.FAILED: ("Failed", True),
                    TemplateState.CONFLICT: ("Conflict", True),
                    TemplateState.INVALID: ("Invalid", True)}


class Reconciler:
    def __init__(self, *, host, source: TemplateSource, publish: Callable[[dict], None],
                 metrics: Optional[Metrics] = None, events: Optional[EventSink] = None,
                 api_server_ip: Optional[str] = None, max_rounds: int = MAX_ROUNDS,
                 api_endpoints: Optional[Callable[[], list]] = None,
                 api_probe: Optional[Callable[[], bool]] = None,
                 api_loss_deadline_s: float = DEFAULT_DEADLINE_S,
                 rolled_back: Optional[RolledBack] = None,
                 clock: Optional[Clock] = None,
                 rollout: Optional[RolloutGate] = None,
                 pools: Optional[PoolResolver] = None,
                 publish_unmanaged: Optional[Callable[[dict], None]] = None,
                 status_filter: Optional[StatusFilter] = None,
                 conditions: Optional[Callable[[], list]] = None,
                 drain: Optional[DrainGate] = None) -> None:
        """`api_endpoints()`: the ApiEndpoints the agent dials now (their paths are guarded,
        `api_server_ip` is one more). `publish_unmanaged`: where a status goes whose change is only in unmanaged objects
        (None: `publish`, every change at once). `status_filter`: interfaces the status
        leaves out unless a template manages or depends on them. `conditions()`: the node's
        status conditions (models.status.NodeCondition: a failing leader election). `drain`:
        cordon and evict before disruptive actions (fleet/drain.py; None: never)."""
        self.host = host
        self.drain = drain
        self.rollout = rollout
        self.pools = pools
        self.clock = clock or RealClock()
        self.api_probe = api_probe
        self.api_loss_deadline_s = api_loss_deadline_s
        self.rolled_back = rolled_back or RolledBack(None)
        self.source = source
        self.publish = publish
        self.publish_unmanaged = publish_unmanaged
        self.status_filter = status_filter or StatusFilter()
        self.conditions = conditions or list
        # What the last pass's templates manage or depend on (read by the event thread; one
        # reference swap per pass).
        self.interest: Interest = EVERYTHING
        self._last_view: Optional[dict] = None  # managed_view of the last status handed over
        self.metrics = metrics or Metrics()
        self.events = events or NullEvents()
        self.api_server_ip = api_server_ip
        self.api_endpoints = api_endpoints or (lambda: [])
        self.last_api_paths: list = []  # the kernel's paths to them before the latest pass
        self.max_rounds = max_rounds
        self._last_states: dict[str, str] = {}
        self._last_published: Optional[tuple] = None  # (observed, statuses) last turned to status
        self._last_status: Optional[dict] = None
        # Monotonic time the latest discovery started: kernel events older than this are
        # already reflected (the echo of our own changes needs no second pass).
        self.last_discovery_started = float("-inf")

    def assume_reported(self, states: dict[str, str]) -> None:
        """Template states an earlier agent process already reported on this node (its
        HostNetwork's status.templates): being in them again is no transition, so a restart
        (a DaemonSet upgrade) sends no Event for a template that stayed Applied."""
        self._last_states = dict(states)

    def sync(self) -> SyncOutcome:
        """One whole-node pass. Raises only on a bug or an unreadable host (caller retries)."""
        if not self.source.synced():
            return SyncOutcome(ran=False)
        started = self.clock.monotonic()
        self.metrics.inc("plumber_reconciles_total")
        try:
            outcome = self._sync()
        except Exception:
            self.metrics.inc("plumber_reconcile_errors_total")
            raise
        finally:
            self.metrics.inc("plumber_reconcile_duration_seconds_sum",
                             self.clock.monotonic() - started)
            self.metrics.inc("plumber_reconcile_duration_seconds_count")
        if outcome.failures:
            self.metrics.inc("plumber_reconcile_errors_total")
        return outcome

    def _sync(self) -> SyncOutcome:
        labels = self.source.node_labels()
        templates = self.source.templates() if labels is not None else []
        self.rolled_back.prune({t.name: t.generation for t in templates})
        outcome = SyncOutcome()
        run = self.converge(templates, labels or {}, outcome)
        merged, observed = run.merged, run.observed
        interest = interest_of(merged.desired, observed, self.host.ledger.records(),
                               settled=run.final is not None and not run.final.actions)
        self.interest = interest
        statuses = self._template_statuses(templates, merged, outcome,
                                           run.gate.verdicts if run.gate else {},
                                           run.pools.conflicts if run.pools else {})
        self._emit_transitions(statuses, outcome, run.pools.exhausted if run.pools else set())
        self.metrics.set("plumber_templates_selected",
                         sum(1 for s in statuses if s.state != TemplateState.NOT_SELECTED))
        self.metrics.set_family("plumber_template_state", (
            ({"template": s.name, "state": str(s.state)}, 1.0) for s in statuses
            if s.state != TemplateState.NOT_SELECTED))
        claims = run.pools.held if run.pools else []
        conditions = self.conditions()
        snapshot = (observed, statuses, claims, conditions)
        if snapshot == self._last_published:
            # An idle resync: nothing changed, so neither building the status (the costliest
            # step of a quiet pass) nor handing it to the reporter is needed.
            outcome.status = self._last_status
        else:
            status = build_status(observed, statuses,
                                  managed_ifnames=self.host.ledger.managed_ifnames(),
                                  address_claims=claims, conditions=conditions,
                                  exclusion=self.status_filter.exclusion(observed.links, interest))
            outcome.status = to_api(status)
            self._last_published, self._last_status = snapshot, outcome.status
            self._hand_over(outcome.status, interest)
        self._after_publish(run, outcome)
        return outcome

    def _hand_over(self, status: dict, interest: Interest) -> None:
        """To `publish` when the change touches a template result or anything a template
        manages or depends on; else to `publish_unmanaged`."""
        if self.publish_unmanaged is None:
            self.publish(status)
            return
        view = managed_view(status, interest)
        urgent, self._last_view = view != self._last_view, view
        (self.publish if urgent else self.publish_unmanaged)(status)

    def _after_publish(self, run: Convergence, outcome: SyncOutcome) -> None:
        """What the status need not wait for: the rollout slot is released (or marked failed)
        and unused pool claims are deleted once the pass is over."""
        if self.rollout is not None and run.gate is not None:
            self.rollout.finish(run.gate, outcome.failures, unsettled=run.unsettled,
                                fenced=run.fenced)
            outcome.retry_after_s = run.gate.retry_after_s
        if self.drain is not None and self.drain.retry_after_s is not None:
            outcome.retry_after_s = min(self.drain.retry_after_s,
                                        outcome.retry_after_s or self.drain.retry_after_s)
        if self.pools is not None and run.pools is not None:
            self.pools.release_unused(run.pools, run.observed)

    def converge(self, templates: list, labels: dict, outcome: SyncOutcome) -> Convergence:
        """Discover, merge, then plan and execute until the plan is empty (at most
        `max_rounds`), counting what happened into `outcome`. The unit tests' simulated node
        drives this same loop. A drain (fleet/drain.py) runs before a round's disruptive
        actions and is undone (uncordon) when the loop ends, however it ends."""
        if self.drain is None:
            return self._converge(templates, labels, outcome)
        self.drain.start_pass()
        try:
            return self._converge(templates, labels, outcome)
        finally:
            self.drain.end_pass()

    def _converge(self, templates: list, labels: dict, outcome: SyncOutcome) -> Convergence:
        observed = self._discover()
        api_ips = self._api_ips()
        api_path = self.host.api_server_paths(api_ips) if api_ips else None
        self.last_api_paths = api_path or []
        drain_specs = {} if self.drain is None else self.drain.specs_for(
            {t.name: DrainSpec(t.spec.rollout.drain, t.spec.rollout.drain_timeout_seconds,
                               t.uid, t.spec.rollout.max_unavailable)
             for t in templates if t.spec is not None},
            {name for rec in self.host.ledger.records().values() if isinstance(rec, dict)
             for name in rec.get("templates") or () if isinstance(name, str)})
        if self.rollout is not None:  # slots of deleted templates, but for their undo's drain
            self.rollout.forget_deleted({t.uid for t in templates} | {
                spec.uid for spec in drain_specs.values() if spec.uid})
        active, gate, pools = self._choose(self._active(templates, outcome), labels, observed,
                                           api_path, outcome)
        # The merge of the first plan (this discovery), planned against the host as each later
        # round finds it; merged again only after a rollback drops templates.
        merged: Optional[desired_mod.MergeResult] = None
        rounds: list[tuple[PlanResult, Any]] = []
        final: Optional[PlanResult] = None
        # Before each host action: is the rollout slot it runs under still confirmed?
        may_start = self.rollout.may_start(gate) if self.rollout is not None and gate else None
        fenced: set[str] = set()

        def plan_now() -> PlanResult:  # a fenced apply's half is kept, not undone (gate.py)
            nonlocal merged
            planned = plan_templates(active, observed, labels=labels,
                                     records=self.host.ledger.records(), api_path=api_path,
                                     undo_allowed=self._undo_allowed(),
                                     kept_partial=frozenset(gate.kept_partial if gate else ()),
                                     merged=merged,
                                     pods=self.drain.pods.get if self.drain is not None else None)
            merged = planned.merged
            return planned.plan
        for _ in range(self.max_rounds):
            result = plan_now()
            for template_name, messages in result.problems_by_template().items():
                known = outcome.failures.setdefault(template_name, [])
                known.extend(m for m in messages if m not in known)
            if self.drain is not None:  # disruptive actions wait for the drain (or are dropped)
                result = replace(result, actions=self.drain.before_round(
                    result.actions, drain_specs, outcome.failures,
                    cleanup_entry=CLEANUP_ENTRY, may_start=may_start,
                    slot_for=self._drain_slots(gate, templates, drain_specs, outcome)))
            if not result.actions:
                final = result
                break
            risky = [a for a in result.actions if a.api_risk]
            armed = bool(risky) and self.api_probe is not None and self.api_probe()
            report = self.host.execute(result.actions, may_start=may_start)
            fenced.update(name for item in report if item.error_type == FENCED
                          for name in item.action.templates)
            rounds.append((result, report))
            failed_round = self._account(report, outcome)
            if api_path is not None:
                # The plan said whether the path would move; the kernel has the last word. Its
                # answer now is the next round's "before".
                api_path, moved = self._moved(api_path, api_ips)
                if moved and not risky:
                    risky = [item.action for item in report if item.ok and item.action.templates]
                    log.warning("the path to the API server changed although no planned "
                                "change was expected to move it (%s): probing it", moved)
                    armed = bool(risky) and self.api_probe is not None
            if armed and not rollback_mod.wait_for_api(
                    self.api_probe, self.api_loss_deadline_s, clock=self.clock):
                self._roll_back(risky, templates, outcome)
                active = [t for t in active if t.name in
                          {a.name for a in self._active(templates, outcome)}]
                merged = None
                observed = self._discover()
                continue  # the next round plans the undo of the rolled-back templates
            observed = self._discover()
            if failed_round:
                break  # do not hammer a failing host change; the queue retries with backoff
        else:
            final = plan_now()
            for action in final.actions:
                for template_name in action.templates:
                    outcome.failures.setdefault(template_name, []).append(
                        f"not converged after {self.max_rounds} rounds: {action.describe()}")
        unsettled = frozenset() if final is not None else frozenset(
            name for action in plan_now().actions for name in action.templates)
        assert merged is not None  # every path above planned at least once
        return Convergence(merged=merged, observed=observed, rounds=rounds, final=final, gate=gate,
                           pools=pools, unsettled=unsettled, fenced=frozenset(fenced))

    def _drain_slots(self, gate, templates: list, drain_specs: dict, outcome: SyncOutcome):
        """The drain's `slot_for` (fleet/drain.py): a template drains only under a rollout
        slot (gate.py `drain_slot`), a deleted one under a slot of the template it was (its
        stand-in), whose wait is told in the cleanup row. None without rollouts (local mode)."""
        if self.rollout is None or gate is None:
            return None
        current = {t.name: t for t in templates if t.spec is not None}

        def slot_for(name: str) -> Optional[str]:
            template = current.get(name)
            if template is None and name in drain_specs:
                template = drain_specs[name].stand_in(name)
            if template is None:
                return None  # (cleanup) of nobody's: no rollout to count it against
            why = self.rollout.drain_slot(gate, template)
            if why is not None and name not in current:
                known = outcome.failures.setdefault(name, [])
                if why not in known:
                    known.append(why)
            return why
        return slot_for

    def _choose(self, active: list, labels: dict, observed, api_path, outcome: SyncOutcome):
        """Which spec of each template this pass applies (the rollout gate: approved, new under
        a slot, or kept while waiting), with pools turned into this node's addresses (claimed
        here, before any host change). Returns (templates, GatePass, PoolPass)."""
        avoid = frozenset(ip for ip in [*self._api_ips(), *(p.src for p in api_path or ())]
                          if ip)
        gate = pools = None
        if self.rollout is not None:
            def preview(templates):  # what a pool would give, claiming nothing
                if self.pools is None:
                    return list(templates)
                return self.pools.resolve(templates, labels, claim=False, avoid=avoid).templates
            gate = self.rollout.select(active, labels, observed, self.host.ledger.records(),
                                       api_path, prepare=preview)
            active = gate.effective
        if self.pools is not None:
            pools = self.pools.resolve(active, labels, claim=True, avoid=avoid)
            active = pools.templates
            for template_name, messages in pools.failures.items():
                outcome.failures.setdefault(template_name, []).extend(messages)
        return active, gate, pools

    def _api_ips(self) -> list[str]:
        """The addresses whose paths the guard keeps: every endpoint the agent dials."""
        ips = [endpoint.ip for endpoint in self.api_endpoints()]
        if self.api_server_ip:
            ips.append(self.api_server_ip)
        return list(dict.fromkeys(ips))

    def _undo_allowed(self) -> frozenset:
        """Templates being rolled back: their undo may move the path (it is the way back)."""
        return frozenset(self.rolled_back.entries)

    def _moved(self, before: list, api_ips: list[str]) -> tuple[list, str]:
        """(the kernel's paths now, the endpoints whose path differs from `before`: empty when
        none does)."""
        now = self.host.api_server_paths(api_ips)
        after = {p.ip: p.hop() for p in now}
        return now, "; ".join(f"{p.ip}: {p.hop()} -> {after.get(p.ip, 'unreachable')}"
                              for p in before if after.get(p.ip) != p.hop())

    def _discover(self):
        self.last_discovery_started = self.clock.monotonic()
        return self.host.discover()

    def _account(self, executed, outcome: SyncOutcome) -> bool:
        """Count what a round did; failures go to the templates the action served. True when
        any action failed."""
        failed = False
        for item in executed:
            action = item.action
            if item.ok:
                outcome.actions += 1
                self.metrics.inc("plumber_host_actions_total")
                if action.drift:
                    outcome.drift_repaired += 1
                    outcome.drift_repairs.append(action.summary(phase=False))
                    self.metrics.inc("plumber_drift_repairs_total")
                # A FORGET only drops a record (the object is gone already, e.g. VFs destroyed
                # by a numVfs change): nothing was undone on the host, so it is not a cleanup.
                if action.ledger_op == LedgerOp.RELEASE and action.verb != Verb.FORGET:
                    outcome.cleaned_up += 1
            else:
                failed = True
                for template_name in action.templates or [CLEANUP_ENTRY]:
                    outcome.failures.setdefault(template_name, []).append(
                        f"{action.verb} {action.target}: {item.error}")
        return failed

    def _active(self, templates, outcome: SyncOutcome) -> list:
        """Templates to apply: all but the generations rolled back after losing the API server
        (those are reported Failed until the template is edited)."""
        active = []
        for template in templates:
            message = self.rolled_back.blocks(template.name, template.generation)
            if message:
                outcome.failures.setdefault(template.name, []).append(message)
            else:
                active.append(template)
        return active

    def _roll_back(self, risky: list, templates, outcome: SyncOutcome) -> None:
        names = sorted({name for action in risky for name in action.templates})
        what = "; ".join(action.summary() for action in risky)
        failure = getattr(self.api_probe, "last_failure", None)
        message = (f"rolled back: the API server did not answer for {self.api_loss_deadline_s:g} s "
                   f"after a change to the node's path to it ({what})"
                   + (f"; probe {failure}" if failure else "")
                   + "; edit the template to try again")
        generations = {t.name: t.generation for t in templates}
        for name in names:
            self.rolled_back.record(name, generations.get(name, 0), message)
        log.error("%s (templates %s)", message, ", ".join(names))
        self.metrics.inc("plumber_rollbacks_total", len(names))
        self.events.emit(reason="RolledBack", warning=True, message=message)

    def _template_statuses(self, templates, merged, outcome: SyncOutcome,
                           verdicts: dict, pool_conflicts: dict) -> list[TemplateStatus]:
        statuses = []
        for template in templates:
            result = merged.results.get(template.name)
            state = result.state if result else TemplateState.NOT_SELECTED
            message = result.message if result else None
            failures = outcome.failures.get(template.name)
            verdict = verdicts.get(template.name)
            planned = None
            if verdict is not None and verdict.state and not failures:
                # Waiting or Previewed: the new generation is not applied; what it would do is.
                state, message = verdict.state, verdict.message
                planned = verdict.planned
            elif failures and state in (TemplateState.APPLIED, TemplateState.CONFLICT,
                                        TemplateState.NOT_SELECTED):
                state = TemplateState.FAILED
                message = "; ".join(failures + ([message] if message else []))
            elif failures and state == TemplateState.FAILED:
                # Failed in the merge (an SR-IOV selector matching nothing): that cause first,
                # then what the plan adds (what it holds).
                message = "; ".join(([message] if message else [])
                                    + [f for f in failures if f != message])
            elif template.name in pool_conflicts and state == TemplateState.APPLIED:
                state = TemplateState.CONFLICT  # its pool overlaps an older template's
                message = "; ".join([pool_conflicts[template.name]] + ([message] if message else []))
            statuses.append(TemplateStatus(
                name=template.name, state=state, message=message or None,
                # NotSelected carries no generation so editing a template does not make every
                # node it does not select rewrite its status.
                observed_generation=None if state == TemplateState.NOT_SELECTED
                else template.generation,
                planned_actions=bounded_plan(planned) if planned is not None else None,
                planned_action_count=len(planned) if planned is not None else None,
                interface_references=result.to_status().interface_references if result
                else None))
        known = {template.name for template in templates}
        cleanup_failures = list(outcome.failures.get(CLEANUP_ENTRY, []))
        for name, failures in sorted(outcome.failures.items()):
            if name != CLEANUP_ENTRY and name not in known:  # undoing a deleted template
                cleanup_failures.extend(f"deleted template {name}: {failure}"
                                        for failure in failures)
        if cleanup_failures:
            statuses.append(TemplateStatus(name=CLEANUP_ENTRY, state=TemplateState.FAILED,
                                           message="; ".join(cleanup_failures)))
        return statuses

    def _emit_transitions(self, statuses: list[TemplateStatus], outcome: SyncOutcome,
                          exhausted: set[str] = frozenset()) -> None:
        states = {s.name: s.state for s in statuses}
        for status in statuses:
            if self._last_states.get(status.name) == status.state:
                continue
            reason_warning = _EVENT_FOR_STATE.get(status.state)
            if reason_warning:
                reason, warning = reason_warning
                if status.state == TemplateState.FAILED and status.name in exhausted:
                    reason = "PoolExhausted"
                self.events.emit(reason=reason, warning=warning,
                                 template=None if status.name == CLEANUP_ENTRY else status.name,
                                 message=status.message or f"template {status.name} {status.state.lower()}")
        if outcome.drift_repaired:
            self.events.emit(reason="DriftRepaired",
                             message=f"{outcome.drift_repaired} host change(s) put back: "
                                     + "; ".join(outcome.drift_repairs))
        if outcome.cleaned_up:
            self.events.emit(reason="CleanupDone",
                             message=f"{outcome.cleaned_up} change(s) undone after templates went away")
        self._last_states = states
