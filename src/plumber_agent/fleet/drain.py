"""The drain before a disruptive change: cordon, evict, (the caller changes the host), uncordon.

Why each rule, from the sriov-network-operator's drain bugs (issue 23):
- Eviction only, never DELETE: the Eviction API refuses (429) what a PodDisruptionBudget does
  not allow, so a drain never breaks a budget; it retries until `timeout_s`, then gives up and
  names the blocking pods and budgets. The caller then does NOT make the change.
- Only under a rollout slot, so the rollout limit bounds how many nodes drain at once: a
  template applied under a slot has one; a drain for anything else (drift repair, the undo of
  a deleted template) first takes a slot of that template's rollout (`slot_for`: gate.py
  `drain_slot`) or waits for one. Only from the reconciler thread, between host actions that
  the slot's fencing guards.
- Uncordon always: after success, after failure, and after a SIGKILL mid-drain. The intent is
  written to `<state-dir>/drain.json` BEFORE the cordon, so a restart finds it and `recover`
  uncordons. A cordon the agent did not make is never undone: the API side (kube/drain.py)
  records the cordon's owner in an annotation on the Node and uncordons only its own, and a
  node found unschedulable already is recorded as someone else's cordon here.
- Never evicted: DaemonSet pods (recreated at once), mirror pods (static pods), finished pods,
  and the agent's own pod.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union

from plumber_agent.clock import Clock, RealClock
from plumber_agent.models.actions import Action
from plumber_agent.models.drain_spec import DEFAULT_DRAIN, DEFAULT_DRAIN_TIMEOUT_S, DrainPolicy
from plumber_agent.models.fleet import check_max_unavailable
from plumber_agent.models.spec import DEFAULT_MAX_UNAVAILABLE, RolloutConfig, Template, TemplateSpec
from plumber_agent.models.pods import PodUse
from plumber_agent.planner.disruption import any_disruptive
from plumber_agent.statefile import load_json, save_json

log = logging.getLogger(__name__)

DRAIN_FILE = "drain.json"
DRAIN_SPECS_FILE = "drain-specs.json"
DRAIN_RETRY_S = 60.0
"""After a drain timed out, the next try of that template's disruptive change waits this long,
doubling with each failure up to DRAIN_RETRY_MAX_S (the node stays uncordoned meanwhile): a
budget may free up by itself, but a drain retried at once would keep the node cordoned nearly
all the time, and a halted rollout's node would be cordoned for a timeout of every minute."""
DRAIN_RETRY_MAX_S = 600.0
EVICT_RETRY_S = 1.0  # between eviction rounds: a budget frees when a pod elsewhere gets ready
BLOCKERS_LISTED = 5
CORDON_OURS = "ours"
CORDON_THEIRS = "theirs"  # unschedulable before we came: never undone
CORDON_PENDING = "pending"  # written before the cordon request: its answer may be lost


class Evicted:
    """kube/drain.py's eviction outcomes."""

    EVICTED = "evicted"
    GONE = "gone"  # 404: nothing to evict
    BLOCKED = "blocked"  # 429: a PodDisruptionBudget does not allow it now


class NodeDrainApi(Protocol):
    """What the drain asks of the API about this node (kube/drain.py)."""

    def node_pods(self) -> list[PodUse]: ...

    def evict(self, pod: PodUse) -> tuple[str, str]:
        """(Evicted.*, message: for BLOCKED the API's words, the budget named). Of this
        incarnation only (its uid)."""

    def cordon(self) -> bool:
        """Mark the node unschedulable with this agent as the cordon's owner: True; False when
        it was unschedulable already (someone else's cordon: left as is)."""

    def uncordon(self) -> bool:
        """Make the node schedulable again only if this agent's cordon is on it."""


@dataclass
class DrainResult:
    ok: bool
    evicted: list[str] = field(default_factory=list)
    message: str = ""  # why it failed: the blocking pods and budgets


def evictable(pods: Sequence[PodUse], *, own_pod: Optional[str]) -> list[PodUse]:
    """The pods a drain may evict: not a DaemonSet's, not a mirror pod, not finished, not the
    agent itself."""
    return [p for p in pods if not (p.daemonset or p.mirror or p.finished or p.ref == own_pod)]


class Drainer:
    def __init__(self, *, api: NodeDrainApi, state_path: Optional[str], node: str,
                 own_pod: Optional[str] = None, clock: Optional[Clock] = None,
                 retry_s: float = EVICT_RETRY_S,
                 beat: Optional[Callable[[], None]] = None) -> None:
        """`own_pod`: namespace/name of the agent's pod (never evicted); `beat()`: called at
        every eviction round (the liveness heartbeat: a drain is a long, live wait)."""
        self.beat = beat or (lambda: None)
        self.api = api
        self.state_path = state_path
        self.node = node
        self.own_pod = own_pod
        self.clock = clock or RealClock()
        self.retry_s = retry_s
        self._state: dict = load_json(state_path, {})

    @property
    def cordoned(self) -> bool:
        """A cordon of ours may be on the node (recorded, not yet undone)."""
        return self._state.get("cordon") in (CORDON_OURS, CORDON_PENDING)

    def _save(self, **state) -> None:
        self._state = dict(state)
        save_json(self.state_path, self._state)

    def recover(self) -> None:
        """After a restart: a drain interrupted by the agent's death is undone (the pass that
        needs it drains again under its slot)."""
        if self._state:
            log.warning("drain: undoing the drain of %s interrupted by a restart (%s)", self.node,
                        self._state, extra={"drain": "recovered"})
            self.release()

    def release(self) -> None:
        """Uncordon if the cordon is ours; forget the drain either way. Raises when the
        uncordon request fails (the record stays, the next pass tries again)."""
        if self.cordoned:
            self.api.uncordon()
            log.info("drain: uncordoned %s", self.node, extra={"drain": "uncordoned"})
        if self._state:
            self._save()

    def drain(self, *, policy: str, hit: Sequence[str], timeout_s: float,
              why: str) -> DrainResult:
        """Cordon, then evict (`pods`: the pods named in `hit`; `node`: every evictable pod)
        until none is left or `timeout_s` passed. The cordon stays on: `release` lifts it
        once the change is made (or given up)."""
        if not self._state:
            self._save(cordon=CORDON_PENDING, why=why)
            self._save(cordon=CORDON_OURS if self.api.cordon() else CORDON_THEIRS, why=why)
        deadline = self.clock.monotonic() + timeout_s
        wanted = set(hit)
        evicted: list[str] = []
        while True:
            self.beat()
            pods = evictable(self.api.node_pods(), own_pod=self.own_pod)
            if policy == DrainPolicy.PODS:
                pods = [p for p in pods if p.ref in wanted]
            if not pods:
                log.info("drain: %s drained (%s)", self.node, why,
                         extra={"drain": "drained", "evicted": evicted})
                return DrainResult(ok=True, evicted=evicted)
            blocked: list[str] = []
            for pod in pods:
                if pod.terminating:
                    blocked.append(f"pod {pod.ref} is still terminating")
                    continue
                outcome, message = self.api.evict(pod)
                if outcome == Evicted.EVICTED:
                    evicted.append(pod.ref)
                    log.info("drain: evicted %s", pod.ref, extra={"drain": "evicted"})
                elif outcome == Evicted.BLOCKED:
                    blocked.append(f"pod {pod.ref}: {message}")
            if self.clock.monotonic() >= deadline:
                shown = "; ".join(blocked[:BLOCKERS_LISTED]) + (
                    f"; and {len(blocked) - BLOCKERS_LISTED} more" if len(blocked) > BLOCKERS_LISTED
                    else "")
                message = (f"drain of node {self.node} timed out after {timeout_s:g} s, the "
                           f"disruptive change was not made: {shown or 'pods still present'}")
                log.warning("drain: %s", message, extra={"drain": "timed-out"})
                return DrainResult(ok=False, evicted=evicted, message=message)
            self.clock.sleep(min(self.retry_s, max(0.0, deadline - self.clock.monotonic())))


class PassPods:
    """This node's pods, listed at most once per pass and only when a plan has a disruptive
    action (a pass that disrupts nothing costs no pod LIST). `reset()` at each pass start.
    A failed LIST fails the rest of the pass alike: the plan (pipeline.py) and the drain
    decide on the same read."""

    def __init__(self, api: Optional[NodeDrainApi]) -> None:
        self.api = api
        self._pods: Optional[list[PodUse]] = None
        self._error: Optional[Exception] = None

    def reset(self) -> None:
        self._pods, self._error = None, None

    def get(self) -> Optional[list[PodUse]]:
        """None: no API to read them from (local mode)."""
        if self.api is None:
            return None
        if self._error is not None:
            raise self._error
        if self._pods is None:
            try:
                self._pods = self.api.node_pods()
            except Exception as exc:
                self._error = exc
                raise
        return self._pods


@dataclass(frozen=True)
class DrainSpec:
    """One template's drain settings (spec.rollout.drain, drainTimeoutSeconds), with what the
    undo of the template, once deleted, needs to take a rollout slot: its uid and limit."""

    policy: str = DEFAULT_DRAIN.value
    timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    uid: str = ""
    max_unavailable: Union[int, str] = DEFAULT_MAX_UNAVAILABLE

    def stand_in(self, name: str) -> Template:
        """The deleted template `name` as far as its rollout slots go (identity and limit):
        every node builds the same one, so their undo drains count against one limit."""
        return Template(name=name, generation=0, creation_timestamp="", uid=self.uid,
                        spec=TemplateSpec(rollout=RolloutConfig(
                            max_unavailable=self.max_unavailable)))


def _known_spec(value) -> Optional[DrainSpec]:
    """A drain-specs.json entry: [policy, timeout_s] (before slots), or with uid and limit."""
    if not isinstance(value, list) or len(value) not in (2, 4) or value[0] not in tuple(
            DrainPolicy) or not isinstance(value[1], (int, float)):
        return None
    if len(value) == 2:
        return DrainSpec(str(value[0]), float(value[1]))
    if not isinstance(value[2], str) or check_max_unavailable(value[3]) is not None:
        return None
    return DrainSpec(str(value[0]), float(value[1]), value[2], value[3])


class DrainGate:
    """The reconciler's side of the drain, per pass: `start_pass`, `before_round` for each
    round's plan (returns the actions that may run now), `end_pass` (uncordon).

    A template needs a drain before a round when one of its actions is disruptive and its
    policy says so: `node` always, `pods` when the action hits an evictable pod. The drain runs
    once per pass, for every template that needs it (the widest policy, the longest timeout).
    When it fails, the actions of those templates are left out of the pass (the change is not
    made) and each gets the failure; a retry waits DRAIN_RETRY_S. Without an API (local mode)
    nothing can be drained: the plan shows the disruption and the change is made, as before."""

    def __init__(self, *, drainer: Optional[Drainer], pods: PassPods,
                 clock: Optional[Clock] = None, retry_s: float = DRAIN_RETRY_S,
                 metrics=None, events=None, specs_path: Optional[str] = None) -> None:
        """`metrics` (ops.Metrics): plumber_drains_total, plumber_drain_failures_total,
        plumber_evictions_total; `events` (reconciler.EventSink): Drained / DrainFailed on
        each template drained for. `specs_path`: where the templates' drain settings are kept
        (`<state-dir>/drain-specs.json`), so the undo of a deleted template follows the
        policy it had (without it: the default)."""
        self.specs_path = specs_path
        raw = load_json(specs_path, {})
        self._known: dict[str, DrainSpec] = {
            name: spec for name, spec in ((n, _known_spec(v)) for n, v in raw.items())
            if spec is not None}
        self.metrics = metrics
        self.events = events
        self.drainer = drainer
        self.pods = pods
        self.clock = clock or RealClock()
        self.retry_s = retry_s
        self._drained: set[str] = set()  # templates drained for in this pass
        self._failed: dict[str, str] = {}  # template -> this pass's drain failure
        self._waiting: dict[str, str] = {}  # template -> why it waits for a slot to drain under
        # template -> (retry at, last failure, the wait that led there)
        self._held: dict[str, tuple[float, str, float]] = {}
        self.retry_after_s: Optional[float] = None

    def specs_for(self, current: dict[str, DrainSpec], owners: set[str]) -> dict[str, DrainSpec]:
        """The drain settings of the templates there are (`current`), plus the last known
        ones of deleted templates that still own something on the host (`owners`: the
        ledger's), whose cleanup follows the policy they had."""
        specs = {n: s for n, s in self._known.items() if n in owners and n not in current}
        specs.update(current)
        if specs != self._known:
            self._known = specs
            save_json(self.specs_path, {n: [s.policy, s.timeout_s, s.uid, s.max_unavailable]
                                        for n, s in specs.items()})
        return specs

    def start_pass(self) -> None:
        self.pods.reset()
        self._drained, self._failed, self._waiting, self.retry_after_s = set(), {}, {}, None
        if self.drainer is not None:
            try:
                self.drainer.recover()
            except Exception as exc:  # noqa: BLE001 - the API may be down: next pass retries
                log.warning("drain: could not undo an earlier drain yet: %s", exc)

    def end_pass(self) -> None:
        if self.drainer is None:
            return
        try:
            self.drainer.release()
        except Exception as exc:  # noqa: BLE001 - kept in drain.json: the next pass retries
            log.warning("drain: could not uncordon %s yet: %s", self.drainer.node, exc,
                        extra={"drain": "uncordon-failed"})
            self.retry_after_s = EVICT_RETRY_S

    def before_round(self, actions: list[Action], specs: dict[str, DrainSpec],
                     failures: dict[str, list[str]], *, cleanup_entry: str,
                     may_start=None,
                     slot_for: Optional[Callable[[str], Optional[str]]] = None) -> list[Action]:
        """`actions`: a round's plan as pipeline.py annotated it with `self.pods.get` (the pods
        each disruptive action hits). `may_start(action)`: the executor's fence
        (fleet/gate.py); a drain for an action it would not start is not begun either (the
        executor then reports the action fenced). `slot_for(template)`: None once the template
        holds a rollout slot to drain under, else why it waits (its disruptive change waits with
        it; the caller reports that)."""
        if self.drainer is None or not any_disruptive(actions):
            return actions
        try:
            pods = self.pods.get()  # the read the plan was annotated with (once per pass)
            problem = None
        except Exception as exc:  # noqa: BLE001 - unknown pods: a drain cannot be decided
            pods, problem = None, f"cannot list the pods of node {self.drainer.node}: {exc}"
        evictable_refs = {p.ref for p in evictable(pods or [], own_pod=self.drainer.own_pod)}
        needing: dict[str, DrainSpec] = {}
        hit: set[str] = set()
        for action in actions:
            if action.disruption is None:
                continue
            for name in action.templates or [cleanup_entry]:
                spec = specs.get(name, DrainSpec())
                hits = set(action.disruption.hit) & evictable_refs
                if spec.policy == DrainPolicy.NONE or (
                        spec.policy == DrainPolicy.PODS and not hits and problem is None):
                    continue
                needing[name] = spec
                hit |= hits
        now = self.clock.monotonic()
        blocked = dict(self._failed)
        for name in needing:
            held = self._held.get(name)
            if held is not None and name not in blocked and now < held[0]:
                # Worded without the time left: a message that changes every pass would be a
                # status write every pass.
                blocked[name] = (f"{held[1]} (tried again after {self.retry_s:g} s, then "
                                 f"after twice as long each time, up to {DRAIN_RETRY_MAX_S:g} s)")
                self._hint(held[0] - now)
        todo = {n: s for n, s in needing.items() if n not in blocked and n not in self._drained}
        for name in list(todo) if slot_for is not None else ():
            why = slot_for(name)
            if why is not None:  # no slot to drain under: the change waits, it did not fail
                del todo[name]
                self._waiting[name] = why
        fenced = todo and may_start is not None and any(
            may_start(a) for a in actions
            if a.disruption is not None and set(a.templates or [cleanup_entry]) & set(todo))
        if fenced:
            pass  # no drain on an unconfirmed slot; the executor fences the actions
        elif todo and problem is not None:
            blocked.update(dict.fromkeys(todo, problem))
        elif todo:
            policy = (DrainPolicy.NODE if any(s.policy == DrainPolicy.NODE for s in todo.values())
                      else DrainPolicy.PODS)
            timeout_s = max(s.timeout_s for s in todo.values())
            why = f"disruptive change of {', '.join(sorted(todo))}"
            try:
                result = self.drainer.drain(policy=policy, hit=sorted(hit), timeout_s=timeout_s,
                                            why=why)
            except Exception as exc:  # noqa: BLE001 - an API error: the change waits
                result = DrainResult(ok=False, message=f"drain of node {self.drainer.node} "
                                                       f"failed, nothing changed: {exc}")
            self._report(result, sorted(todo))
            if result.ok:
                self._drained.update(todo)
                for name in todo:
                    self._held.pop(name, None)
            else:
                for name in todo:
                    blocked[name] = result.message
                    before = self._held.get(name)
                    wait_s = (self.retry_s if before is None
                              else min(before[2] * 2, max(DRAIN_RETRY_MAX_S, self.retry_s)))
                    self._held[name] = (self.clock.monotonic() + wait_s, result.message, wait_s)
                    self._hint(wait_s)
        for name, message in blocked.items():
            self._failed[name] = message
            known = failures.setdefault(name, [])
            if message not in known:
                known.append(message)
        held = set(blocked) | set(self._waiting)
        if not held:
            return actions
        return [a for a in actions if not set(a.templates or [cleanup_entry]) & held]

    def _report(self, result: DrainResult, templates: list[str]) -> None:
        if self.metrics is not None:
            self.metrics.inc("plumber_drains_total")
            self.metrics.inc("plumber_evictions_total", len(result.evicted))
            if not result.ok:
                self.metrics.inc("plumber_drain_failures_total")
        if self.events is not None:
            for name in templates:
                if result.ok:
                    self.events.emit(reason="Drained", template=name, message=(
                        f"drained node {self.drainer.node} before a disruptive change: "
                        f"{len(result.evicted)} pod(s) evicted"))
                else:
                    self.events.emit(reason="DrainFailed", warning=True, template=name,
                                     message=result.message)

    def _hint(self, delay_s: float) -> None:
        self.retry_after_s = min(delay_s, self.retry_after_s or delay_s)
